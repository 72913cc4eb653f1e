# sealink.ed25519: Ed25519 signatures (RFC 8032) and SHA-512, identical on MicroPython
# and CPython.
#
#   public_key(private) -> 32 bytes       (private: the 32-byte RFC 8032 private key)
#   sign(private, message, public=None) -> 64 bytes
#   verify(public, signature, message) -> bool   (never raises on a bad signature)
#   sha512(data) -> 64 bytes
#   BACKEND                               ("native", "cryptography" or None)
#
# "native" is the _sealink_crypto C module of Sealink firmware (Monocypher's EdDSA over
# libsodium's SHA-512); "cryptography" is pyca/cryptography on CPython
# (sealink._ed25519_cryptography, which firmware does not carry).  Stock
# MicroPython firmware has neither: the calls raise CryptoError (there is no pure-Python
# Ed25519; a device that attests or checks signatures runs Sealink firmware).
# A module of its own, apart from sealink.crypto: a device that never signs never pays
# its heap.

from sealink.errors import CryptoError

BACKEND = None
_c = None  # the functions: the C module's, or sealink._ed25519_cryptography's

try:
    import _sealink_crypto as _c

    if not hasattr(_c, "ed25519_sign"):
        _c = None
    else:
        BACKEND = "native"
except ImportError:
    pass

if _c is None:
    try:
        from sealink import _ed25519_cryptography as _c

        BACKEND = "cryptography"
    except ImportError:
        _c = None


def _check(value, name, size=None):
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise CryptoError("%s must be bytes, not %s" % (name, type(value).__name__))
    if size is not None and len(value) != size:
        raise CryptoError("%s must be %d bytes, got %d" % (name, size, len(value)))
    if BACKEND is None:
        raise CryptoError("Ed25519 needs Sealink firmware (the native module) or CPython")


def sha512(data):
    _check(data, "data")
    return _c.sha512(data)


def public_key(private):
    _check(private, "private key", 32)
    return _c.ed25519_public(private)


def sign(private, message, public=None):
    _check(private, "private key", 32)
    _check(message, "message")
    if public is None:
        public = _c.ed25519_public(private)
    else:
        _check(public, "public key", 32)
    return _c.ed25519_sign(private, public, message)


def verify(public, signature, message):
    _check(public, "public key", 32)
    _check(signature, "signature")
    _check(message, "message")
    if len(signature) != 64:
        return False
    return _c.ed25519_verify(public, signature, message)
