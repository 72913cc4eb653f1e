"""Remote attestation, the verifier's side (RATS, RFC 9334).

A device's evidence (docs/attestation.md) is an EAT (RFC 9711) in a COSE_Sign1
(RFC 9052) that its DICE boot stage signed with the DeviceID key.  The gateway:

1. verify_evidence(): checks the structure and every type, that the signer is a
   DeviceID it provisioned (kid = ueid), the signature (pycose, EdDSA), that the key
   the evidence endorses (cnf) is the static key that just completed this session's
   Noise handshake (the binding to the session: evidence from another session or
   device does not carry this key), and replays the measurement log against the
   register the evidence states.
2. appraise(): compares the measurements with the reference values operators
   registered (`sealink firmware register`): every component known good -> trusted;
   a component known bad -> refused; anything unknown -> quarantine.
3. issue_result() / verify_result(): the appraisal as an attestation result signed by
   the authority (a COSE_Sign1 EAT with an expiry), which a third party checks offline
   (`sealink attest verify`).

Every refusal is an EvidenceError with a `reason` (counted, audited).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pycose.algorithms import EdDSA
from pycose.headers import KID, Algorithm
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

PROFILE = "tag:sealink,2026:dice-v1"
RESULT_PROFILE = "tag:sealink,2026:attestation-result-v1"
MAX_EVIDENCE = 1024

# CWT / EAT claim keys (RFC 8392, RFC 9711, RFC 9783) and Sealink's private ones.
ISS, SUB, EXP, IAT, CNF = 1, 2, 4, 6, 8
UEID, EAT_PROFILE, SWVERSION, SW_COMPONENTS = 256, 265, 271, 2399
REGISTER = -70001
DECISION, REASON, DEVICE, COMPONENTS = -70010, -70011, -70012, -70013
EVIDENCE_KEYS = {CNF, UEID, EAT_PROFILE, SWVERSION, SW_COMPONENTS, REGISTER}
COMPONENT_ORDER = ("firmware", "boot.py", "main.py", "config.json")
PROTECTED = b"\xa1\x01\x27"  # {1 (alg): -8 (EdDSA)}, as the boot stage writes it


class EvidenceError(Exception):
    """Evidence refused; `reason` is one of: malformed, unknown_device, bad_signature,
    wrong_key, broken_log."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass
class Evidence:
    device_id: bytes  # the DeviceID public key that signed it
    ueid: bytes
    version: str
    components: list[tuple[str, bytes]]
    register: bytes
    static_key: bytes  # the Noise static key it endorses

    def as_json(self) -> dict[str, Any]:
        return {"ueid": self.ueid.hex(), "device_id": self.device_id.hex(),
                "version": self.version, "register": self.register.hex(),
                "components": [[n, d.hex()] for n, d in self.components]}


@dataclass
class Verdict:
    decision: str  # trusted | quarantine | refused
    reason: str
    unknown: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)


def ueid_for(device_id: bytes) -> bytes:
    """EAT UEID of type RAND (0x01) from the DeviceID public key."""
    return b"\x01" + hashlib.sha256(device_id).digest()[:16]


def replay(components: list[tuple[str, bytes]]) -> bytes:
    register = bytes(32)
    for _, digest in components:
        register = hashlib.sha256(register + digest).digest()
    return register


def _signed_by(message: Sign1Message, public_key: bytes) -> bool:
    """Whether an EdDSA COSE_Sign1 verifies under an Ed25519 public key (a key or
    signature pycose cannot even parse is a signature that does not verify)."""
    message.key = OKPKey(crv=Ed25519, x=public_key)
    try:
        return bool(message.verify_signature())
    except Exception:
        return False


def _malformed(message: str) -> EvidenceError:
    return EvidenceError("malformed", message)


def _bytes(value: Any, size: int | None, what: str) -> bytes:
    if not isinstance(value, bytes) or (size is not None and len(value) != size):
        raise _malformed(f"{what} must be {size or 'some'} bytes")
    return value


def verify_evidence(data: bytes, session_static: bytes,
                    device_id_for: Callable[[bytes], bytes | None]) -> Evidence:
    """Check evidence as received in a handshake whose peer proved `session_static`.
    `device_id_for(ueid)` returns the provisioned DeviceID public key, or None."""
    if not isinstance(data, bytes) or not 0 < len(data) <= MAX_EVIDENCE:
        raise _malformed(f"evidence must be 1..{MAX_EVIDENCE} bytes")
    try:
        token = cbor2.loads(data)
    except Exception as e:  # cbor2 raises several types on bad input
        raise _malformed(f"not CBOR ({e})") from None
    if not isinstance(token, cbor2.CBORTag) or token.tag != 18:
        raise _malformed("not a tagged COSE_Sign1")
    body = token.value
    if not isinstance(body, list) or len(body) != 4:
        raise _malformed("COSE_Sign1 must be a 4-element array")
    protected, unprotected, payload, signature = body
    if protected != PROTECTED:
        raise _malformed("protected header must be exactly {alg: EdDSA}")
    if not isinstance(unprotected, dict) or set(unprotected) != {4}:
        raise _malformed("unprotected header must be exactly {kid}")
    kid = _bytes(unprotected[4], 17, "kid")
    _bytes(payload, None, "payload")
    _bytes(signature, 64, "signature")
    device_id = device_id_for(kid)
    if device_id is None:
        raise EvidenceError("unknown_device", f"no DeviceID provisioned for ueid {kid.hex()}")
    if ueid_for(device_id) != kid:
        raise EvidenceError("unknown_device", "kid does not match the provisioned DeviceID")
    if not _signed_by(Sign1Message.decode(data), device_id):
        raise EvidenceError("bad_signature", "the DeviceID signature does not verify")
    # Signed by a known device: now read what it says.
    try:
        claims = cbor2.loads(payload)
    except Exception as e:
        raise _malformed(f"payload is not CBOR ({e})") from None
    if not isinstance(claims, dict) or set(claims) != EVIDENCE_KEYS:
        raise _malformed("claims must be exactly cnf, ueid, eat_profile, swversion, "
                         "sw-components and register")
    if claims[EAT_PROFILE] != PROFILE:
        raise _malformed(f"eat_profile must be {PROFILE!r}")
    if claims[UEID] != kid:
        raise _malformed("ueid claim differs from kid")
    cnf = claims[CNF]
    if not (isinstance(cnf, dict) and set(cnf) == {1} and isinstance(cnf[1], dict)
            and cnf[1].get(1) == 1 and cnf[1].get(-1) == 4 and set(cnf[1]) == {1, -1, -2}):
        raise _malformed("cnf must hold an X25519 COSE_Key")
    static = _bytes(cnf[1][-2], 32, "cnf key")
    version = claims[SWVERSION]
    if not (isinstance(version, list) and len(version) == 1 and isinstance(version[0], str)):
        raise _malformed("swversion must be [text]")
    raw = claims[SW_COMPONENTS]
    if not isinstance(raw, list) or not 1 <= len(raw) <= len(COMPONENT_ORDER):
        raise _malformed("sw-components must list 1..4 components")
    components = []
    for c in raw:
        if not isinstance(c, dict) or set(c) != {1, 2} or not isinstance(c[1], str):
            raise _malformed("a sw-component must be {1: name, 2: digest}")
        components.append((c[1], _bytes(c[2], 32, "measurement")))
    register = _bytes(claims[REGISTER], 32, "register")
    if static != bytes(session_static):
        raise EvidenceError("wrong_key", "the evidence endorses another key than the one "
                                         "this session authenticated")
    names = [n for n, _ in components]
    expected = [n for n in COMPONENT_ORDER if n in names]
    if names[0] != "firmware" or names != expected:
        raise EvidenceError("broken_log", f"components out of order or unknown: {names}")
    if replay(components) != register:
        raise EvidenceError("broken_log", "the log does not replay to the stated register")
    return Evidence(device_id, kid, version[0], components, register, static)


def appraise(evidence: Evidence, status_of: Callable[[str, bytes], str | None]) -> Verdict:
    """`status_of(name, digest)` gives a registered reference value's status ("good",
    "bad") or None."""
    unknown, bad = [], []
    for name, digest in evidence.components:
        status = status_of(name, digest)
        if status == "bad":
            bad.append(name)
        elif status != "good":
            unknown.append(name)
    if bad:
        return Verdict("refused", "known_bad", unknown, bad)
    if unknown:
        return Verdict("quarantine", "unknown_measurement", unknown, bad)
    return Verdict("trusted", "reference_values_match")


def issue_result(authority: Ed25519PrivateKey, device: str, evidence: Evidence,
                 verdict: Verdict, lifetime_s: int = 86400, now: float | None = None) -> bytes:
    """The appraisal as an attestation result: a COSE_Sign1 EAT the authority signs."""
    now = int(time.time() if now is None else now)
    claims = {ISS: "sealink-gateway", SUB: device, IAT: now, EXP: now + lifetime_s,
              UEID: evidence.ueid, EAT_PROFILE: RESULT_PROFILE,
              SWVERSION: [evidence.version], DECISION: verdict.decision,
              REASON: verdict.reason,
              COMPONENTS: [[n, d] for n, d in evidence.components]}
    return sign_by_authority(authority, claims)


def sign_by_authority(authority: Ed25519PrivateKey, claims: dict) -> bytes:
    """`claims` (deterministic CBOR) in a COSE_Sign1 the authority signs with EdDSA."""
    message = Sign1Message(phdr={Algorithm: EdDSA}, uhdr={KID: b"authority"},
                           payload=cbor2.dumps(claims, canonical=True))
    message.key = OKPKey(crv=Ed25519, x=authority.public_key().public_bytes_raw(),
                         d=authority.private_bytes_raw())
    return message.encode()


class ResultError(Exception):
    """An attestation result that does not verify, or has expired."""


def verify_result(data: bytes, authority_public: bytes, now: float | None = None) -> dict:
    """Check an attestation result offline: structure, the authority's signature, the
    profile and the expiry.  Returns its claims by name."""
    try:
        message = Sign1Message.decode(data)
    except Exception as e:
        raise ResultError(f"not a COSE_Sign1 attestation result ({e})") from None
    if message.phdr.get(Algorithm) is not EdDSA and message.phdr.get(1) != -8:
        raise ResultError("the result is not signed with EdDSA")
    if not _signed_by(message, authority_public):
        raise ResultError("the authority's signature does not verify")
    claims = cbor2.loads(message.payload)
    if not isinstance(claims, dict) or claims.get(EAT_PROFILE) != RESULT_PROFILE:
        raise ResultError("not a Sealink attestation result")
    now = time.time() if now is None else now
    if not isinstance(claims.get(EXP), int) or claims[EXP] < now:
        raise ResultError("the attestation result has expired")
    return {"issuer": claims[ISS], "device": claims[SUB], "issued_at": claims[IAT],
            "expires_at": claims[EXP], "ueid": claims[UEID].hex(),
            "version": claims[SWVERSION][0], "decision": claims[DECISION],
            "reason": claims[REASON],
            "components": [[n, d.hex()] for n, d in claims[COMPONENTS]]}
