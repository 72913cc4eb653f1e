"""The verifier (gateway/attest.py): real evidence from the DICE boot stage of both QEMU
boards, appraised against reference values; every kind of bad evidence refused with
its reason; attestation results signed by the authority and checked offline."""

import hashlib
import json

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message
from test_dice import BOARDS, _storage, _write, boot

from devices import BUILD
from evidence import Identity
from sealink_gateway import attest
from sim import qemu

MAIN = b"print('hello from the application')\n"


def _device_evidence(board, flash, uds):
    device = boot(board, flash, uds)
    try:
        out = device.exec("import _sealink_crypto as c, binascii\n"
                          "r = c.dice()\n"
                          "print(binascii.hexlify(r[2]).decode())")
    finally:
        device.close()
    return bytes.fromhex(out.strip())


def _reference(board):
    return json.loads((BUILD / board / "reference.json").read_text())


@pytest.mark.parametrize("board", BOARDS)
def test_device_evidence_is_what_an_independent_encoder_writes(board, tmp_path):
    """The firmware's C CBOR/COSE encoder, byte for byte against cbor2 + pycose."""
    flash, uds = _storage(board, tmp_path), qemu.make_uds(tmp_path / "uds")
    _write(board, flash, "main.py", MAIN.decode())
    evidence = _device_evidence(board, flash, uds)
    ref = _reference(board)
    host = Identity(uds.read_bytes(), [("firmware", bytes.fromhex(ref["firmware"])),
                                       ("main.py", hashlib.sha256(MAIN).digest())],
                    ref["version"])
    assert evidence == host.evidence()
    print(f"{board}: evidence {len(evidence)} B")


@pytest.mark.parametrize("board", BOARDS)
def test_good_modified_and_known_bad_devices_are_told_apart(board, tmp_path):
    flash, uds = _storage(board, tmp_path), qemu.make_uds(tmp_path / "uds")
    ref = _reference(board)
    host = Identity(uds.read_bytes(), [], ref["version"])
    references = {("firmware", bytes.fromhex(ref["firmware"])): "good"}

    def appraise(evidence, static):
        ev = attest.verify_evidence(evidence, static, {host.ueid: host.device_id}.get)
        return ev, attest.appraise(ev, lambda n, d: references.get((n, d)))

    first = Identity(uds.read_bytes(), [("firmware", bytes.fromhex(ref["firmware"]))],
                     ref["version"])
    ev, verdict = appraise(_device_evidence(board, flash, uds), first.static_public)
    assert verdict.decision == "trusted" and ev.version == ref["version"]
    _write(board, flash, "main.py", MAIN.decode())  # main.py changed after provisioning
    changed = Identity(uds.read_bytes(), [("firmware", bytes.fromhex(ref["firmware"])),
                                          ("main.py", hashlib.sha256(MAIN).digest())],
                       ref["version"])
    evidence = _device_evidence(board, flash, uds)
    ev, verdict = appraise(evidence, changed.static_public)
    assert (verdict.decision, verdict.unknown) == ("quarantine", ["main.py"])
    references[("main.py", hashlib.sha256(MAIN).digest())] = "good"  # operator approves
    assert appraise(evidence, changed.static_public)[1].decision == "trusted"
    references[("main.py", hashlib.sha256(MAIN).digest())] = "bad"  # ... or bans it
    assert appraise(evidence, changed.static_public)[1].decision == "refused"


@pytest.fixture
def identity():
    return Identity(bytes(range(32)), [("firmware", hashlib.sha256(b"fw").digest()),
                                       ("main.py", hashlib.sha256(b"app").digest())],
                    "sealink-0.1.0+micropython-1.25.0")


def _verify(identity, evidence, static=None):
    return attest.verify_evidence(evidence, static or identity.static_public,
                                  {identity.ueid: identity.device_id}.get)


def _reason(identity, evidence, static=None):
    with pytest.raises(attest.EvidenceError) as e:
        _verify(identity, evidence, static)
    return e.value.reason


def test_good_evidence_verifies(identity):
    ev = _verify(identity, identity.evidence())
    assert ev.components == identity.components and ev.register == identity.register


def test_evidence_from_another_session_is_refused(identity):
    other = Identity(bytes(32), identity.components, identity.version)
    assert _reason(identity, identity.evidence(), other.static_public) == "wrong_key"


def test_evidence_from_another_device_is_refused(identity):
    other = Identity(bytes(32), identity.components, identity.version)
    # Another provisioned device's evidence, replayed in this device's name (its kid).
    assert _reason(identity, other.evidence(kid=identity.ueid)) == "bad_signature"
    # A device nobody provisioned.
    assert _reason(identity, other.evidence()) == "unknown_device"


def test_signature_over_other_measurements_is_refused(identity):
    evidence = bytearray(identity.evidence())
    at = bytes(evidence).index(identity.components[1][1])
    evidence[at] ^= 1  # one bit of main.py's measurement
    assert _reason(identity, bytes(evidence)) == "bad_signature"


def test_truncated_or_reordered_event_log_is_refused(identity):
    claims = identity.claims()
    claims[2399] = claims[2399][:1]  # truncated: the register no longer replays
    assert _reason(identity, identity.evidence(claims)) == "broken_log"
    claims = identity.claims()
    claims[2399] = claims[2399][::-1]  # reordered
    assert _reason(identity, identity.evidence(claims)) == "broken_log"


@pytest.mark.parametrize("damage", [
    lambda e: e[:-1], lambda e: e[:10], lambda e: b"", lambda e: b"\xff" * 40,
    lambda e: cbor2.dumps(cbor2.loads(e).value),  # untagged
    lambda e: e.replace(b"\xa1\x01\x27", b"\xa1\x01\x26", 1),  # protected: ES256
    lambda e: bytes(2000),
])
def test_malformed_evidence_is_refused(identity, damage):
    assert _reason(identity, damage(identity.evidence())) in ("malformed", "bad_signature")


def test_claims_of_the_wrong_type_are_refused_after_the_signature(identity):
    for key, value in ((271, "not a list"), (2399, []), (-70001, b"short"),
                       (8, {1: {1: 1, -1: 6, -2: bytes(32)}}), (265, "another profile")):
        claims = identity.claims()
        claims[key] = value
        assert _reason(identity, identity.evidence(claims)) == "malformed", key
    claims = identity.claims()
    claims[999] = "an unknown claim"
    assert _reason(identity, identity.evidence(claims)) == "malformed"


def test_attestation_result_verifies_offline_and_detects_tampering(identity):
    authority = Ed25519PrivateKey.generate()
    public = authority.public_key().public_bytes_raw()
    ev = _verify(identity, identity.evidence())
    verdict = attest.appraise(ev, lambda n, d: "good")
    result = attest.issue_result(authority, "dev-0123", ev, verdict, lifetime_s=3600,
                                 now=1_800_000_000)
    claims = attest.verify_result(result, public, now=1_800_000_100)
    assert claims["decision"] == "trusted" and claims["device"] == "dev-0123"
    assert claims["components"] == [[n, d.hex()] for n, d in identity.components]
    # Any standard COSE verifier: pycose on its own.
    message = Sign1Message.decode(result)
    message.key = OKPKey(crv=Ed25519, x=public)
    assert message.verify_signature()
    with pytest.raises(attest.ResultError, match="expired"):
        attest.verify_result(result, public, now=1_800_003_601)
    tampered = result.replace(b"trusted", b"trustee")
    with pytest.raises(attest.ResultError, match="signature"):
        attest.verify_result(tampered, public, now=1_800_000_100)
    with pytest.raises(attest.ResultError, match="signature"):
        attest.verify_result(result, Ed25519PrivateKey.generate().public_key()
                             .public_bytes_raw(), now=1_800_000_100)
