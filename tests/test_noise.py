"""sealink.noise against an independent implementation (noiseprotocol on PyPI),
byte for byte, and against hostile handshake messages; then on real firmware."""

import os

import pytest
from noise.connection import Keypair, NoiseConnection

from devices import QemuDevice, UnixDevice
from sealink import crypto
from sealink.errors import HandshakeError, SealinkError
from sealink.noise import HandshakeState, protocol_name

PATTERNS = ["XX", "XK", "KK", "IK", "NN", "NK"]
# Which static keys each side needs: (initiator has s, responder has s,
# initiator knows rs before, responder knows rs before).
NEEDS = {
    "XX": (True, True, False, False),
    "XK": (True, True, True, False),
    "KK": (True, True, True, True),
    "IK": (True, True, True, False),
    "NN": (False, False, False, False),
    "NK": (False, True, True, False),
}
EMPTY_SIZES = {"XX": [32, 96, 64], "XK": [48, 48, 64], "KK": [48, 48], "IK": [96, 48],
               "NN": [32, 48], "NK": [48, 48]}


def _keys():
    si, sr = os.urandom(32), os.urandom(32)
    return si, sr, crypto.x25519_base(si), crypto.x25519_base(sr)


def _roles(pattern):
    """Fresh keys as the pattern needs them: ((s, rs) of the initiator, of the responder)."""
    si, sr, pi, pr = _keys()
    i_s, r_s, i_rs, r_rs = NEEDS[pattern]
    return ((si if i_s else None, pr if i_rs else None),
            (sr if r_s else None, pi if r_rs else None))


def _theirs(name, initiator, s, rs, e=None, prologue=b"sealink"):
    """A started noiseprotocol connection (the independent implementation)."""
    c = NoiseConnection.from_name(name.encode())
    c.set_as_initiator() if initiator else c.set_as_responder()
    if s:
        c.set_keypair_from_private_bytes(Keypair.STATIC, s)
    if rs:
        c.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, rs)
    if e:
        c.set_keypair_from_private_bytes(Keypair.EPHEMERAL, e)
    c.set_prologue(prologue)
    c.start_handshake()
    return c


def _pair(pattern, ours_initiator, prologue=b"sealink"):
    """Our HandshakeState and a noiseprotocol connection in the other role."""
    name = protocol_name(pattern)
    roles = _roles(pattern)
    mine, theirs = (roles[0], roles[1]) if ours_initiator else (roles[1], roles[0])
    them = _theirs(name, not ours_initiator, *theirs, prologue=prologue)
    us = HandshakeState(name, ours_initiator, prologue, s=mine[0], rs=mine[1])
    return us, them


def _run(us, them, payloads):
    wire = []
    turn_us = us.initiator
    i = 0
    while not us.complete:
        payload = payloads[i % len(payloads)]
        if turn_us:
            msg = us.write_message(payload)
            assert them.read_message(msg) == payload
        else:
            msg = them.write_message(payload)
            assert us.read_message(msg) == payload
        wire.append(msg)
        turn_us = not turn_us
        i += 1
    assert them.handshake_finished
    return wire


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("ours_initiator", [True, False], ids=["ours-init", "ours-resp"])
def test_interop_handshake_and_transport(pattern, ours_initiator):
    us, them = _pair(pattern, ours_initiator)
    _run(us, them, [b"", b"payload in a handshake message", os.urandom(200)])
    assert us.handshake_hash == them.get_handshake_hash()
    to_responder, to_initiator = us.split()
    send, recv = (to_responder, to_initiator) if ours_initiator else (to_initiator, to_responder)
    for n in (0, 1, 51, 1000):
        data = os.urandom(n)
        assert them.decrypt(send.encrypt_with_ad(b"", data)) == data
        assert recv.decrypt_with_ad(b"", them.encrypt(data)) == data


@pytest.mark.parametrize("pattern", PATTERNS)
def test_message_sizes_with_empty_payloads(pattern):
    us, them = _pair(pattern, True)
    assert [len(m) for m in _run(us, them, [b""])] == EMPTY_SIZES[pattern]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_same_keys_same_bytes(pattern):
    """Both sides ours vs both sides noiseprotocol, with the same static and injected
    ephemeral keys: every handshake and transport message is identical, byte for byte."""
    (i_s, i_rs), (r_s, r_rs) = _roles(pattern)
    ei, er = os.urandom(32), os.urandom(32)
    name = protocol_name(pattern)
    ours = [HandshakeState(name, True, b"p", s=i_s, e=ei, rs=i_rs),
            HandshakeState(name, False, b"p", s=r_s, e=er, rs=r_rs)]
    theirs = [_theirs(name, True, i_s, i_rs, ei, b"p"), _theirs(name, False, r_s, r_rs, er, b"p")]
    side = 0
    while not ours[0].complete:
        payload = b"message from side %d" % side
        mine = ours[side].write_message(payload)
        assert mine == theirs[side].write_message(payload)
        assert ours[1 - side].read_message(mine) == payload
        assert theirs[1 - side].read_message(mine) == payload
        side = 1 - side
    to_responder, _ = ours[0].split()
    for n in (0, 5, 300):
        assert to_responder.encrypt_with_ad(b"", bytes(n)) == theirs[0].encrypt(bytes(n))


# --- Hostile input ----------------------------------------------------------------------------

def _fresh_xx():
    si, sr, _, _ = _keys()
    name = protocol_name("XX")
    return HandshakeState(name, True, s=si), HandshakeState(name, False, s=sr)


def _advance(init, resp, steps):
    """Run `steps` messages; return the next message and its reader."""
    writer, reader = init, resp
    for _ in range(steps):
        reader.read_message(writer.write_message(b"p"))
        writer, reader = reader, writer
    return writer.write_message(b"p"), reader


@pytest.mark.parametrize("step", [0, 1, 2])
def test_truncated_messages_raise_and_poison(step):
    # XX message 1 is e plus a payload no key protects yet: cutting into that payload
    # leaves a valid message, so only cuts into e count there (Noise gives no more).
    for cut in range(0, 32 if step == 0 else 64):
        init, resp = _fresh_xx()
        msg, reader = _advance(init, resp, step)
        if cut >= len(msg):
            break
        with pytest.raises(HandshakeError):
            reader.read_message(msg[:cut])
        with pytest.raises(HandshakeError, match="already failed"):
            reader.read_message(msg)


@pytest.mark.parametrize("step", [1, 2])
def test_every_tampered_byte_is_rejected(step):
    init, resp = _fresh_xx()
    msg, reader = _advance(init, resp, step)
    for i in range(len(msg)):
        init, resp = _fresh_xx()
        msg, reader = _advance(init, resp, step)
        bad = bytearray(msg)
        bad[i] ^= 0x80
        with pytest.raises(HandshakeError):
            reader.read_message(bytes(bad))


def test_first_xx_message_tamper_detected_later():
    # XX message 1 is a bare ephemeral key: a change is only caught when message 2's
    # tag fails to verify at the initiator.
    init, resp = _fresh_xx()
    m1 = bytearray(init.write_message(b""))
    m1[5] ^= 1
    resp.read_message(bytes(m1))
    with pytest.raises(HandshakeError):
        init.read_message(resp.write_message(b""))


def test_oversized_and_wrong_type():
    init, resp = _fresh_xx()
    with pytest.raises(HandshakeError, match="over"):
        resp.read_message(bytes(70000))
    init, resp = _fresh_xx()
    with pytest.raises(HandshakeError):
        resp.read_message("not bytes")


def test_out_of_turn_and_after_completion():
    init, resp = _fresh_xx()
    with pytest.raises(HandshakeError, match="out of turn"):
        init.read_message(bytes(32))
    init, resp = _fresh_xx()
    _advance(init, resp, 0)
    with pytest.raises(HandshakeError, match="not complete"):
        init.split()


@pytest.mark.parametrize("pattern", ["KK", "IK"])
def test_wrong_remote_static_key_fails(pattern):
    si, sr, pi, pr = _keys()
    stranger = crypto.x25519_base(os.urandom(32))
    name = protocol_name(pattern)
    init = HandshakeState(name, True, s=si, rs=stranger)
    resp = HandshakeState(name, False, s=sr, rs=pi if pattern == "KK" else None)
    with pytest.raises(HandshakeError):
        resp.read_message(init.write_message(b""))


def test_low_order_ephemeral_is_refused():
    init, resp = _fresh_xx()
    init.write_message(b"")
    resp.read_message(bytes(32))  # XX message 1 is only e: the DH comes next
    with pytest.raises(HandshakeError, match="low-order"):
        resp.write_message(b"")
    assert issubclass(HandshakeError, SealinkError)


# --- On firmware: a device completes handshakes with this CPython peer ----------------------

DEVICES = [
    # (id, device, the handshake its session runs: "c", _sealink_crypto.Handshake, the
    # firmware's; "python", sealink.noise on MicroPython, for firmware without the module)
    ("unix", lambda: UnixDevice("UNIX"), "c"),
    ("unix-32k-heap", lambda: UnixDevice("UNIX", heapsize="32k"), "c"),
    ("qemu-m3", lambda: QemuDevice("QEMU_MPS2_AN385"), "c"),
    ("qemu-rv32", lambda: QemuDevice("QEMU_VIRT_RV32"), "c"),
    ("stock-python", lambda: UnixDevice("UNIX_STOCK"), "python"),
]


_SETUP = ("from sealink.session import HandshakeState as HS\n"  # what the session runs
          "from sealink import crypto\nimport binascii\n"
          "h = binascii.hexlify\nu = binascii.unhexlify\n"
          "def err(f, *a):\n"
          "    try:\n"
          "        f(*a)\n"
          "    except Exception as x:\n"
          "        return type(x).__name__ + ': ' + str(x)\n"
          "    return 'no error'\n")


def _start(param):
    dev = param[1]()
    dev.exec(_SETUP)
    dev.kind = param[2]
    dev.small_heap = "32k" in param[0]
    return dev


@pytest.fixture(scope="module", params=DEVICES, ids=[d[0] for d in DEVICES])
def device(request):
    dev = _start(request.param)
    yield dev
    dev.close()


C_DEVICES = [d for d in DEVICES if d[2] == "c"]


@pytest.fixture(scope="module", params=C_DEVICES, ids=[d[0] for d in C_DEVICES])
def c_device(request):
    """A device whose session runs the handshake in C (the tests above hold sealink.noise,
    which stock firmware runs, to noiseprotocol on CPython)."""
    dev = _start(request.param)
    yield dev
    dev.close()


def test_the_firmware_runs_the_handshake_in_c(device):
    """Boards with the C module run the C handshake (and so carry no noise.py, see
    test_firmware_build.py); stock firmware runs sealink.noise."""
    name = device.exec("print(HS.__name__)").strip()
    assert name == {"c": "Handshake", "python": "HandshakeState"}[device.kind]


@pytest.mark.parametrize("pattern", ["XX", "XK", "KK", "IK"])
def test_device_handshakes_with_cpython(device, pattern):
    """The device is the initiator (as in the field); this CPython process responds."""
    si, sr, pi, pr = _keys()
    name = protocol_name(pattern)
    rs = pr if pattern in ("KK", "IK", "XK") else None
    device.exec(f"hs = HS({name!r}, True, b'sealink', s={si!r}, rs={rs!r})")
    gateway = HandshakeState(name, False, b"sealink", s=sr, rs=pi if pattern == "KK" else None)
    turn_device = True
    while not gateway.complete:
        if turn_device:
            msg = bytes.fromhex(device.exec("print(h(hs.write_message(b'up')).decode())").strip())
            assert gateway.read_message(msg) == b"up"
        else:
            msg = gateway.write_message(b"down")
            out = device.exec(f"print(hs.read_message(u({msg.hex()!r})))").strip()
            assert out == "b'down'"
        turn_device = not turn_device
    assert device.exec("print(hs.complete)").strip() == "True"
    assert device.exec("print(h(hs.handshake_hash).decode())").strip() == \
        gateway.handshake_hash.hex()
    assert device.exec("print(h(hs.rs).decode())").strip() == pr.hex()
    to_gateway, to_device = gateway.split()
    device.exec("tx, rx = hs.split_keys()")
    for i in range(5):
        ct = bytes.fromhex(device.exec(
            f"print(h(crypto.seal_n(tx, {i}, b'reading {i}', b'', False)).decode())").strip())
        assert to_gateway.decrypt_with_ad(b"", ct) == b"reading %d" % i
        ct = to_device.encrypt_with_ad(b"", b"command %d" % i)
        assert device.exec(f"print(crypto.open_n(rx, {i}, u({ct.hex()!r}), b''))").strip() == \
            f"b'command {i}'"


@pytest.mark.parametrize("pattern", PATTERNS)
def test_device_handshake_is_byte_for_byte_noiseprotocol(c_device, pattern):
    """The firmware's handshake in C, both sides on the device, against noiseprotocol
    with the same static and ephemeral keys: every message identical, the same handshake
    hash, and transport keys that interoperate."""
    device = c_device
    (i_s, i_rs), (r_s, r_rs) = _roles(pattern)
    ei, er = os.urandom(32), os.urandom(32)
    name = protocol_name(pattern)
    device.exec(f"sides = [HS({name!r}, True, b'p', s={i_s!r}, e={ei!r}, rs={i_rs!r}), "
                f"HS({name!r}, False, b'p', s={r_s!r}, e={er!r}, rs={r_rs!r})]")
    theirs = [_theirs(name, True, i_s, i_rs, ei, b"p"), _theirs(name, False, r_s, r_rs, er, b"p")]
    side = 0
    while not theirs[0].handshake_finished:
        payload = b"message from side %d" % side
        mine = bytes.fromhex(device.exec(
            f"m = sides[{side}].write_message({payload!r})\n"
            f"assert sides[{1 - side}].read_message(m) == {payload!r}\n"
            "print(h(m).decode())").strip())
        assert mine == theirs[side].write_message(payload)
        assert theirs[1 - side].read_message(mine) == payload
        side = 1 - side
    out = device.exec("print(sides[0].complete, sides[1].complete)\n"
                      "print(h(sides[0].handshake_hash).decode())\n"
                      "k = sides[0].split_keys()\nassert k == sides[1].split_keys()\n"
                      "print(h(crypto.seal_n(k[0], 0, b'transport', b'', False)).decode())\n"
                      "print(err(sides[0].split_keys))").split("\n")
    assert out[0] == "True True"
    assert out[1] == theirs[0].get_handshake_hash().hex()
    assert bytes.fromhex(out[2]) == theirs[0].encrypt(b"transport")
    assert out[3] == "HandshakeError: handshake keys already split"


# The hostile-input tests above, for the firmware's handshake in C, run on the device:
# every line printed is one case, "<case> <what happened>".  Sent in parts ("#--"), each
# small enough to compile on a 32 KiB heap.
_HOSTILE = """
import os
def keys():
    a, b = os.urandom(32), os.urandom(32)
    return a, b, crypto.x25519_base(a), crypto.x25519_base(b)
XX = 'Noise_XX_25519_ChaChaPoly_SHA256'
def fresh():
    si, sr, _, _ = keys()
    return HS(XX, True, s=si), HS(XX, False, s=sr)
def advance(init, resp, steps):
    w, r = init, resp
    for _ in range(steps):
        r.read_message(w.write_message(b'p'))
        w, r = r, w
    return w.write_message(b'p'), r
#--
for step in (0, 1, 2):
    for cut in range(0, 32 if step == 0 else 64):
        i, r = fresh()
        m, reader = advance(i, r, step)
        if cut >= len(m):
            break
        print('truncated', step, cut, err(reader.read_message, m[:cut]), '|',
              err(reader.read_message, m))
#--
for step in (1, 2):
    i, r = fresh()
    m, reader = advance(i, r, step)
    for k in range(len(m)):
        i, r = fresh()
        m, reader = advance(i, r, step)
        bad = bytearray(m)
        bad[k] ^= 0x80
        print('tampered', step, k, err(reader.read_message, bytes(bad)))
#--
i, r = fresh()
m1 = bytearray(i.write_message(b''))
m1[5] ^= 1
r.read_message(bytes(m1))
print('tampered-xx1', err(i.read_message, r.write_message(b'')))
i, r = fresh()
try:
    big = bytes(70000)
except MemoryError:  # (a 32 KiB heap cannot hold a message that size: it cannot arrive)
    print('oversized no-heap')
else:
    print('oversized', err(r.read_message, big))
    big = None
i, r = fresh()
print('wrong-type', err(r.read_message, 'not bytes'))
i, r = fresh()
print('out-of-turn', err(i.read_message, bytes(32)))
i, r = fresh()
advance(i, r, 0)
print('not-complete', err(i.split_keys))
#--
for p in ('KK', 'IK'):
    si, sr, pi, pr = keys()
    name = 'Noise_%s_25519_ChaChaPoly_SHA256' % p
    i = HS(name, True, s=si, rs=crypto.x25519_base(os.urandom(32)))
    r = HS(name, False, s=sr, rs=pi if p == 'KK' else None)
    print('wrong-rs', p, err(r.read_message, i.write_message(b'')))
i, r = fresh()
i.write_message(b'')
r.read_message(bytes(32))
print('low-order', err(r.write_message, b''), '|', err(r.write_message, b''))
print('no-s', err(HS, XX, True))
i, r = fresh()
i.__del__()  # the finaliser: what the collector runs on an abandoned handshake
print('finalised', err(i.write_message, b''))
print('no-rs', err(lambda: HS('Noise_KK_25519_ChaChaPoly_SHA256', True, s=bytes(32))))
print('bad-rs', err(lambda: HS('Noise_KK_25519_ChaChaPoly_SHA256', True, s=bytes(32),
                            rs=bytes(31))))
print('bad-pattern', err(HS, 'Noise_ZZ_25519_ChaChaPoly_SHA256', True))
print('bad-suite', err(HS, 'Noise_XX_448_ChaChaPoly_BLAKE2b', True))
"""


def test_device_handshake_refuses_hostile_messages(c_device):
    """Truncated, tampered, oversized, out-of-turn and low-order messages, wrong keys
    and unknown protocols: each a HandshakeError, and a handshake that failed stays
    failed (its secrets wiped)."""
    device = c_device
    out = "".join(device.exec(part, timeout=600) for part in _HOSTILE.split("#--"))
    lines = out.strip().split("\n")
    cases = {}
    for line in lines:
        cases.setdefault(line.split()[0], []).append(line)
    assert len(cases["truncated"]) == 32 + 64 + 64  # every cut tried (messages of 97, 65 B)
    for line in cases["truncated"]:
        first, second = line.split(" | ")
        assert "HandshakeError: handshake message" in first, line
        assert second == "HandshakeError: handshake already failed", line
    assert len(cases["tampered"]) == 97 + 65  # every byte of XX messages 2 and 3
    for line in cases["tampered"] + cases["tampered-xx1"]:
        assert line.endswith("HandshakeError: handshake message does not authenticate"), line
    assert cases["oversized"] == ["oversized no-heap" if device.small_heap else
                                  "oversized HandshakeError: handshake message over 65535 bytes"]
    assert cases["wrong-type"] == ["wrong-type HandshakeError: handshake message must be bytes"]
    assert cases["out-of-turn"] == ["out-of-turn HandshakeError: out of turn: expected to write"]
    assert cases["not-complete"] == ["not-complete HandshakeError: handshake not complete"]
    assert cases["wrong-rs"] == [
        f"wrong-rs {p} HandshakeError: handshake message does not authenticate"
        for p in ("KK", "IK")]
    assert cases["low-order"] == [
        "low-order HandshakeError: DH with the peer's key failed (low-order or malformed key)"
        " | HandshakeError: handshake already failed"]
    assert cases["finalised"] == ["finalised HandshakeError: handshake already failed"]
    assert cases["no-s"] == ["no-s HandshakeError: pattern XX sends a static key: s is required"]
    assert cases["no-rs"] == ["no-rs HandshakeError: pattern KK needs the remote static key "
                              "before the handshake"]
    assert cases["bad-rs"] == ["bad-rs HandshakeError: a remote key must be 32 bytes"]
    assert cases["bad-pattern"] == ["bad-pattern HandshakeError: unsupported handshake "
                                    "pattern 'ZZ'"]
    assert cases["bad-suite"] == ["bad-suite HandshakeError: unsupported protocol "
                                  "'Noise_XX_448_ChaChaPoly_BLAKE2b'"]
