"""sealink.crypto on CPython and on real firmware: RFC vectors, differential tests against
pyca/cryptography, and bad input, for every backend on every target.

Targets: CPython with pyca/cryptography and with the pure-Python fallback, the unix
firmware with the native module and with the pure-Python
fallback forced, a stock unix firmware (no C module, package loaded from files),
and the QEMU Cortex-M3 and RV32 firmware with the native module.  Each target boots
once per module; calls go over its REPL.
"""

import binascii
import hashlib
import json
import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from devices import CPythonDevice, DeviceError, QemuDevice, UnixDevice

VECTORS = Path(__file__).resolve().parent / "vectors"

# (id, factory, backend expected, fast: whether the 1,000-iteration test runs)
TARGETS = [
    ("cpython-cryptography", CPythonDevice, "cryptography", True),
    ("cpython-python", CPythonDevice, "python", False),
    ("unix-native", lambda: UnixDevice("UNIX"), "native", True),
    ("unix-python", lambda: UnixDevice("UNIX"), "python", False),
    ("stock-python", lambda: UnixDevice("UNIX_STOCK"), "python", False),
    ("qemu-m3-native", lambda: QemuDevice("QEMU_MPS2_AN385"), "native", True),
    ("qemu-rv32-native", lambda: QemuDevice("QEMU_VIRT_RV32"), "native", True),
]

_DRIVER = """
from sealink import crypto
import binascii
if crypto.BACKEND != {backend!r}:
    crypto.use_backend({backend!r})
try:
    from sealink import ed25519
except Exception as e:
    ed25519 = None
def _t(module, op, *a):
    try:
        r = getattr(module, op)(*a)
    except Exception as e:
        print('E', type(e).__name__)
        return
    if isinstance(r, (bytes, bytearray)):
        print('B', binascii.hexlify(r).decode())
    else:
        print('V', repr(r))
"""


class Target:
    def __init__(self, device, backend, fast):
        self.device = device
        self.backend = backend
        self.fast = fast

    def calls(self, calls, module="crypto", timeout=None):
        """Run [(op, args...)] of `module` (sealink.crypto, or sealink.ed25519) in one
        exchange; return [('B', bytes) | ('E', name) | ('V', repr)]."""
        code = "\n".join(f"_t({module}, {op!r}, {', '.join(repr(a) for a in args)})"
                         for op, *args in calls)
        lines = self.device.exec(code, timeout=timeout).strip().splitlines()
        assert len(lines) == len(calls), lines
        return [(kind, binascii.unhexlify(value) if kind == "B" else value)
                for kind, _, value in (line.partition(" ") for line in lines)]

    def call(self, op, *args):
        return self.calls([(op, *args)])[0]

    def signing(self, calls):
        return self.calls(calls, "ed25519", timeout=600)

    @property
    def signs(self):
        """Whether the target has Ed25519 (Sealink firmware or CPython)."""
        return self.device.exec("print(ed25519.BACKEND)").strip() != "None"


@pytest.fixture(scope="module", params=TARGETS, ids=[t[0] for t in TARGETS])
def target(request):
    _, factory, backend, fast = request.param
    device = factory()
    try:
        device.exec(_DRIVER.format(backend=backend))
        assert device.exec("print(crypto.BACKEND)").strip() == backend
        yield Target(device, backend, fast)
    finally:
        device.close()


def test_stock_firmware_selects_the_python_fallback_by_itself():
    device = UnixDevice("UNIX_STOCK")
    try:
        out = device.exec("from sealink import crypto\nprint(crypto.BACKEND)")
        assert out.strip() == "python"
        # The stock firmware has no C module: importing it must fail.
        with pytest.raises(DeviceError, match="ImportError"):
            device.exec("import _sealink_crypto")
    finally:
        device.close()


# --- RFC vectors -----------------------------------------------------------------------

def _load(name):
    return json.loads((VECTORS / name).read_text())


def test_rfc7748_x25519(target):
    for v in _load("rfc7748_x25519.json")["scalar_mult"]:
        assert target.call("x25519", bytes.fromhex(v["scalar"]), bytes.fromhex(v["u"])) == (
            "B", bytes.fromhex(v["output"])), v


def test_rfc7748_diffie_hellman(target):
    dh = _load("rfc7748_x25519.json")["diffie_hellman"]
    a, b = bytes.fromhex(dh["alice_private"]), bytes.fromhex(dh["bob_private"])
    assert target.call("x25519_base", a) == ("B", bytes.fromhex(dh["alice_public"]))
    assert target.call("x25519_base", b) == ("B", bytes.fromhex(dh["bob_public"]))
    shared = ("B", bytes.fromhex(dh["shared"]))
    assert target.call("x25519", a, bytes.fromhex(dh["bob_public"])) == shared
    assert target.call("x25519", b, bytes.fromhex(dh["alice_public"])) == shared


def test_rfc7748_iterated(target):
    it = _load("rfc7748_x25519.json")["iterated"]
    iterations = 1000 if target.fast else 1
    code = (
        "k = b'\\x09' + bytes(31)\n"
        "u = k\n"
        f"for _ in range({iterations}):\n"
        "    k, u = crypto.x25519(k, u), k\n"
        "print(binascii.hexlify(k).decode())"
    )
    expected = it["after_1000"] if target.fast else it["after_1"]
    assert target.device.exec(code, timeout=600).strip() == expected


def test_rfc8439_aead(target):
    for v in _load("rfc8439_chacha20poly1305.json")["vectors"]:
        key, nonce = bytes.fromhex(v["key"]), bytes.fromhex(v["nonce"])
        aad, pt = bytes.fromhex(v["aad"]), bytes.fromhex(v["plaintext"])
        sealed = bytes.fromhex(v["ciphertext"]) + bytes.fromhex(v["tag"])
        assert target.call("aead_encrypt", key, nonce, pt, aad) == ("B", sealed), v.get("name")
        assert target.call("aead_decrypt", key, nonce, sealed, aad) == ("B", pt), v.get("name")


# --- Differential against pyca/cryptography ----------------------------------------------

def _lengths(rng, count):
    edge = [0, 1, 15, 16, 17, 63, 64, 65, 1000]
    return edge + [rng.randrange(0, 1001) for _ in range(count - len(edge))]


def test_differential_aead(target):
    rng = random.Random(0x5EA1 ^ hash(target.backend))
    count = 40 if target.fast else 14
    cases = []
    for n in _lengths(rng, count):
        key, nonce = rng.randbytes(32), rng.randbytes(12)
        pt, aad = rng.randbytes(n), rng.randbytes(rng.randrange(0, 64))
        cases.append((key, nonce, pt, aad, ChaCha20Poly1305(key).encrypt(nonce, pt, aad)))
    for chunk in range(0, len(cases), 8):
        batch = cases[chunk:chunk + 8]
        enc = target.calls([("aead_encrypt", k, n, p, a) for k, n, p, a, _ in batch])
        dec = target.calls([("aead_decrypt", k, n, s, a) for k, n, _, a, s in batch])
        for (_, _, p, _, s), e, d in zip(batch, enc, dec, strict=True):
            assert e == ("B", s)
            assert d == ("B", p)


def test_differential_x25519(target):
    rng = random.Random(25519)
    count = 24 if target.fast else 6
    calls, expected = [], []
    for _ in range(count):
        a, b = rng.randbytes(32), rng.randbytes(32)
        pub_b = X25519PrivateKey.from_private_bytes(b).public_key()
        shared = X25519PrivateKey.from_private_bytes(a).exchange(pub_b)
        calls += [("x25519_base", b), ("x25519", a, pub_b.public_bytes_raw())]
        expected += [("B", pub_b.public_bytes_raw()), ("B", shared)]
    assert target.calls(calls) == expected


def _noise_nonce(n):
    return bytes(4) + n.to_bytes(8, "little")


def test_message_path_aead_is_chachapoly_under_the_noise_nonce(target):
    # seal_n / open_n (the message path: the C functions themselves on the native
    # backend) against pyca with the nonce of Noise section 12.3, for counters that are
    # small integers on a device and ones that are not (2^64-1: Rekey()'s).
    rng = random.Random(0xA11CE)
    key = rng.randbytes(32)
    calls, expected = [], []
    for n in (0, 1, 0x3FF, 1 << 24, (1 << 31) + 3, (1 << 32) + 5, (1 << 64) - 1):
        pt, ad = rng.randbytes(rng.randrange(0, 60)), rng.randbytes(4)
        sealed = ChaCha20Poly1305(key).encrypt(_noise_nonce(n), pt, ad)
        calls += [("seal_n", key, n, pt, ad, False), ("seal_n", key, n, pt, ad, True),
                  ("open_n", key, n, sealed, ad), ("open_n", key, n, ad + sealed, 4)]
        expected += [("B", sealed), ("B", ad + sealed), ("B", pt), ("B", pt)]
    assert target.calls(calls) == expected


def test_message_path_open_refuses_what_does_not_authenticate(target):
    sealed = ChaCha20Poly1305(K32).encrypt(_noise_nonce(7), b"reading 21.5", b"head")
    frame = b"head" + sealed
    got = target.calls([
        ("open_n", K32, 8, frame, 4),                                   # other counter
        ("open_n", K32, 7, frame[:5] + bytes([frame[5] ^ 1]) + frame[6:], 4),  # ciphertext
        ("open_n", K32, 7, b"heaD" + sealed, 4),                        # header (AD)
        ("open_n", K32, 7, frame, 3),                                   # AD boundary
        ("open_n", K32, 7, frame[:19], 4),                              # shorter than a tag
        ("open_n", K32, 7, frame, 4),                                   # the real one
    ])
    assert got[:5] == [("V", "None")] * 5
    assert got[5] == ("B", b"reading 21.5")


_HKDF_DRIVER = """
try:
    from sealink import hkdf as H
except ImportError:  # the boards: the C module's, which their Noise handshake runs
    import _sealink_crypto as H
try:
    from sealink import _hkdf_python as P
except ImportError:
    P = None
def _hx(t):
    print(' '.join(binascii.hexlify(x).decode() for x in t))
"""


def test_hkdf_and_hmac_match_the_standard_library(target):
    # sealink.hkdf on each target (in C on the native firmware, Python elsewhere) and,
    # where the target carries it, the pure-Python reference beside it, against
    # CPython's hmac (RFC 2104) and Noise's HKDF.  The boards' firmware does not carry
    # the Python one (boards/sealink_manifest.py): its C module has both.
    import hmac as std

    from reference import noise_hkdf

    rng = random.Random(0x4B0F)
    target.device.exec(_HKDF_DRIVER)
    python = target.device.exec("print(P is not None)").strip() == "True"
    assert python == (not isinstance(target.device, QemuDevice))
    if isinstance(target.device, QemuDevice):
        assert target.device.exec("print(H.__name__)").strip() == "_sealink_crypto"
    copies = 2 if python else 1
    lines, expected = [], []
    for klen in (0, 1, 32, 63, 64, 65, 100):
        key, msg = rng.randbytes(klen), rng.randbytes(rng.randrange(0, 120))
        ref = f" + (P.python_hmac_sha256({key!r}, {msg!r}),)" if python else ""
        lines.append(f"_hx((H.hmac_sha256({key!r}, {msg!r}),){ref})")
        expected.append(std.digest(key, msg, "sha256").hex() * copies)
    for ikm_len in (0, 32, 64):
        for n in (2, 3):
            ck, ikm = rng.randbytes(32), rng.randbytes(ikm_len)
            ref = f" + P.hkdf({ck!r}, {ikm!r}, {n}, P.python_hmac_sha256)" if python else ""
            lines.append(f"_hx(H.hkdf({ck!r}, {ikm!r}, {n}){ref})")
            expected.append(" ".join(x.hex() for x in noise_hkdf(ck, ikm, n) * copies))
    out = target.device.exec("\n".join(lines), timeout=120).strip().splitlines()
    assert [line.replace(" ", "") for line in out] == [e.replace(" ", "") for e in expected]


def test_random_bytes(target):
    got = target.calls([("random_bytes", 32), ("random_bytes", 32), ("random_bytes", 0)])
    assert got[0][0] == "B" and len(got[0][1]) == 32
    assert got[0] != got[1]
    assert got[2] == ("B", b"")


# --- Bad input: each gets its specific error -----------------------------------------------

K32, N12 = bytes(range(32)), bytes(range(12))


def test_tampering_raises_authentication_error(target):
    sealed = ChaCha20Poly1305(K32).encrypt(N12, b"attack at dawn", b"hdr")
    flip = lambda b, i: b[:i] + bytes([b[i] ^ 1]) + b[i + 1:]  # noqa: E731
    got = target.calls([
        ("aead_decrypt", K32, N12, flip(sealed, 0), b"hdr"),          # ciphertext
        ("aead_decrypt", K32, N12, flip(sealed, len(sealed) - 1), b"hdr"),  # tag
        ("aead_decrypt", K32, N12, sealed, b"hdx"),                   # AAD
        ("aead_decrypt", K32, flip(N12, 11), sealed, b"hdr"),         # nonce
        ("aead_decrypt", flip(K32, 31), N12, sealed, b"hdr"),         # key
        ("aead_decrypt", K32, N12, sealed[:-1], b"hdr"),              # truncated tag
        ("aead_decrypt", K32, N12, sealed, b"hdr"),                   # the real one
    ])
    assert got[:6] == [("E", "AuthenticationError")] * 6
    assert got[6] == ("B", b"attack at dawn")


def test_wrong_lengths_raise_crypto_error(target):
    got = target.calls([
        ("x25519", bytes(31), K32),
        ("x25519", K32, bytes(33)),
        ("x25519_base", bytes(16)),
        ("aead_encrypt", bytes(31), N12, b"x"),
        ("aead_encrypt", K32, bytes(8), b"x"),
        ("aead_encrypt", K32, bytes(24), b"x"),
        ("aead_decrypt", K32, N12, bytes(15)),
        ("aead_decrypt", bytes(33), N12, bytes(16)),
    ])
    assert got == [("E", "CryptoError")] * len(got)


def test_wrong_types_raise_crypto_error(target):
    got = target.calls([
        ("x25519", "a" * 32, K32),
        ("x25519_base", 5),
        ("aead_encrypt", K32, N12, "text"),
        ("aead_encrypt", K32, N12, b"x", None),
        ("aead_decrypt", K32, N12, [0] * 32),
    ])
    assert got == [("E", "CryptoError")] * len(got)


def test_low_order_points_raise(target):
    points = _load("rfc7748_x25519.json")["low_order_points"]
    got = target.calls([("x25519", K32, bytes.fromhex(p["u"])) for p in points])
    assert got == [("E", "LowOrderPointError")] * len(points)


def test_errors_are_one_hierarchy(target):
    out = target.device.exec(
        "from sealink import errors\n"
        "print(issubclass(errors.AuthenticationError, errors.SealinkError),"
        " issubclass(errors.LowOrderPointError, ValueError),"
        " issubclass(errors.CryptoError, errors.SealinkError))")
    assert out.strip() == "True True True"


def test_compare_and_wipe(target):
    out = target.device.exec(
        "b = bytearray(b'secret key material')\n"
        "crypto.wipe(b)\n"
        "print(b == bytearray(19), crypto.compare(b'abc', b'abc'), crypto.compare(b'abc', b'abd'),"
        " crypto.compare(b'ab', b'abc'))")
    assert out.strip() == "True True False False"


# --- Ed25519 and SHA-512 (attestation, credentials) -----------------------------------

WYCHEPROOF = VECTORS / "wycheproof"  # a copy of ../shared/vectors/wycheproof (README.md)


def test_ed25519_exists_wherever_sealink_firmware_or_cpython_runs(target):
    backend = target.device.exec("print(ed25519.BACKEND)").strip()
    if isinstance(target.device, CPythonDevice):
        assert backend == "cryptography"
    elif target.device.board.endswith("_STOCK"):
        # No C module, no pure-Python Ed25519: a clear error, not a wrong answer.
        assert backend == "None"
        assert target.signing([("sign", bytes(32), b"m")]) == [("E", "CryptoError")]
    else:
        assert backend == "native"


def test_rfc8032_ed25519_and_fips180_sha512(target):
    if not target.signs:
        return  # the stock firmware: see the test above
    vectors = _load("rfc8032_ed25519.json")
    calls, expected = [], []
    for v in vectors["ed25519"]:
        secret, public = bytes.fromhex(v["secret"]), bytes.fromhex(v["public"])
        message, signature = bytes.fromhex(v["message"]), bytes.fromhex(v["signature"])
        calls += [("public_key", secret), ("sign", secret, message),
                  ("sign", secret, message, public), ("verify", public, signature, message),
                  ("verify", public, signature, message + b"x")]
        expected += [("B", public), ("B", signature), ("B", signature), ("V", "True"),
                     ("V", "False")]
    for v in vectors["sha512"]:
        calls.append(("sha512", bytes.fromhex(v["message"])))
        expected.append(("B", bytes.fromhex(v["digest"])))
    assert target.signing(calls) == expected


def test_wycheproof_ed25519(target):
    """All 151 cases of Wycheproof's Ed25519 verification set: every valid signature
    verifies, every invalid one (non-canonical S, bad encodings, wrong lengths,
    malleated signatures) is refused."""
    if not target.signs:
        return
    data = json.loads((WYCHEPROOF / "ed25519_test.json").read_text())
    cases = [(bytes.fromhex(g["publicKey"]["pk"]), t) for g in data["testGroups"]
             for t in g["tests"]]
    assert len(cases) == data["numberOfTests"] == 151
    for start in range(0, len(cases), 25):
        batch = cases[start:start + 25]
        got = target.signing([("verify", pk, bytes.fromhex(t["sig"]), bytes.fromhex(t["msg"]))
                              for pk, t in batch])
        for (_, t), result in zip(batch, got, strict=True):
            assert result == ("V", str(t["result"] == "valid")), t


def test_ed25519_differential_and_bad_input(target):
    if not target.signs:
        return
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    rng = random.Random(8032)
    calls, expected = [], []
    for size in (0, 1, 31, 64, 127, 128, 129, 255, 1000):
        secret, message = rng.randbytes(32), rng.randbytes(size)
        key = Ed25519PrivateKey.from_private_bytes(secret)
        public = key.public_key().public_bytes_raw()
        calls += [("sign", secret, message), ("sha512", message),
                  ("verify", public, key.sign(message), message)]
        expected += [("B", key.sign(message)), ("B", hashlib.sha512(message).digest()),
                     ("V", "True")]
    calls += [("sign", bytes(31), b"m"), ("public_key", "not bytes"),
              ("verify", bytes(32), bytes(63), b"m"), ("verify", bytes(31), bytes(64), b"m")]
    expected += [("E", "CryptoError"), ("E", "CryptoError"), ("V", "False"),
                 ("E", "CryptoError")]
    assert target.signing(calls) == expected


def test_cpython_reference_matches_vectors():
    # The reference the differential tests trust, checked against the RFC once.
    dh = _load("rfc7748_x25519.json")["diffie_hellman"]
    a = X25519PrivateKey.from_private_bytes(bytes.fromhex(dh["alice_private"]))
    bob = X25519PublicKey.from_public_bytes(bytes.fromhex(dh["bob_public"]))
    assert a.exchange(bob).hex() == dh["shared"]
