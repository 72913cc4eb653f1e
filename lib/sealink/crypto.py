# sealink.crypto: the one crypto API of Sealink, identical on MicroPython and CPython.
#
#   x25519(secret, public) -> 32 bytes         (RFC 7748; LowOrderPointError on all-zero)
#   x25519_base(secret) -> 32 bytes            (public key of a secret)
#   sealink.keys.PrivateKey(secret)            (CPython: a key kept for many DHs; x25519()
#                                               takes it for `secret`; .public; .wipe())
#   aead_encrypt(key, nonce, plaintext, aad=b"") -> ciphertext || tag
#   aead_decrypt(key, nonce, ciphertext, aad=b"") -> plaintext  (AuthenticationError)
#                                              (ChaCha20-Poly1305, RFC 8439, 96-bit nonce)
#   compare(a, b) -> bool                      (constant time for equal lengths)
#   wipe(buf)                                  (zero a bytearray / memoryview in place)
#   random_bytes(n)                            (os.urandom; never a weaker source)
#   seal_n(key, n, plaintext, ad, prefix)      (internal fast path, below)
#   open_n(key, n, data, ad) -> plaintext or None
#   BACKEND                                    ("native", "cryptography" or "python")
#
# Backends: "native" is the _sealink_crypto C module (Monocypher) in Sealink firmware;
# "cryptography" is pyca/cryptography on CPython; "python" is the pure-Python fallback
# for stock MicroPython firmware (slow, correct, constant-structure).  The best one
# available is chosen at import.  To force one (tests, benchmarks):
#   crypto.use_backend("python")
# or set SEALINK_CRYPTO_BACKEND=python in the environment (CPython and the unix port).
#
# Every argument is checked here, once, for all backends: a wrong type or length raises
# CryptoError naming the argument.  Backends only ever see well-formed input.
#
# The exception, for the message path of sealink.noise and sealink.session, whose keys
# and counters are their own (checked when the key was made): seal_n and open_n take
# ChaCha20-Poly1305 with the Noise nonce of counter n (4 zero bytes, n little-endian),
# unchecked.  seal_n(key, n, plaintext, ad, prefix) -> [ad ||] ciphertext || tag (with
# prefix, a Sealink frame whose header is the associated data); open_n(key, n, data, ad)
# -> plaintext, or None when the tag does not verify; ad is bytes, or an int k: the
# first k bytes of data.  On the native backend they are the C functions themselves.
# dh_n(private, public): X25519 for sealink.noise, whose keys are its own (a private key
# it made or copied, a public key of DHLEN bytes it sliced), unchecked; ValueError for an
# all-zero result (on the native backend, the C function itself).  Each backend has its
# own seal_n and open_n.
# open_data and seal_data: a whole Sealink data frame opened (counter, replay window,
# tag) or made in one call, on the native backend (C) and on pyca (None on the pure-Python
# backend: sealink.session then takes the same steps in Python).
# aead_key(key): the key as these functions take it fastest, made once per data-phase
# key by sealink.session: pyca's ChaCha20Poly1305 object; the key itself elsewhere.

import os

from sealink.errors import AuthenticationError, CryptoError, LowOrderPointError

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16

BACKEND = None
_impl = None
seal_n = open_n = dh_n = None
open_data = seal_data = None


def _check(value, name, size=None):
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise CryptoError("%s must be bytes, not %s" % (name, type(value).__name__))
    if size is not None and len(value) != size:
        raise CryptoError("%s must be %d bytes, got %d" % (name, size, len(value)))


def keeps_key_objects():
    """True when the backend builds key objects worth keeping (sealink.keys)."""
    return getattr(_impl, "private_key", None) is not None


def x25519(secret, public):
    held = getattr(secret, "_for_backend", None)  # a sealink.keys.PrivateKey
    if held is not None:
        secret = held()
    else:
        _check(secret, "secret", KEY_SIZE)
    _check(public, "public", KEY_SIZE)
    shared = _impl.x25519(secret, public)
    if shared is None:
        raise LowOrderPointError("X25519 result is all zero (low-order public key)")
    return shared


def x25519_base(secret):
    _check(secret, "secret", KEY_SIZE)
    return _impl.x25519_base(secret)


def aead_encrypt(key, nonce, plaintext, aad=b""):
    _check(key, "key", KEY_SIZE)
    _check(nonce, "nonce", NONCE_SIZE)
    _check(plaintext, "plaintext")
    _check(aad, "aad")
    return _impl.aead_encrypt(key, nonce, plaintext, aad)


def aead_decrypt(key, nonce, ciphertext, aad=b""):
    _check(key, "key", KEY_SIZE)
    _check(nonce, "nonce", NONCE_SIZE)
    _check(ciphertext, "ciphertext")
    _check(aad, "aad")
    if len(ciphertext) < TAG_SIZE:
        raise CryptoError("ciphertext must be at least %d bytes (the tag), got %d"
                          % (TAG_SIZE, len(ciphertext)))
    plaintext = _impl.aead_decrypt(key, nonce, ciphertext, aad)
    if plaintext is None:
        raise AuthenticationError("authentication tag does not verify")
    return plaintext


def compare(a, b):
    _check(a, "a")
    _check(b, "b")
    return _impl.compare(a, b)


def wipe(buf):
    if not isinstance(buf, (bytearray, memoryview)):
        raise CryptoError("wipe needs a bytearray or memoryview, not %s" % type(buf).__name__)
    _impl.wipe(buf)


def random_bytes(n):
    if not isinstance(n, int) or n < 0:
        raise CryptoError("random_bytes needs a non-negative int")
    urandom = getattr(os, "urandom", None)
    if urandom is None:
        raise CryptoError("this firmware has no os.urandom: no entropy source")
    return urandom(n)


def _load(name):
    if name == "native":
        from sealink import _crypto_native as impl
    elif name == "cryptography":
        from sealink import _crypto_cryptography as impl
    elif name == "python":
        from sealink import _crypto_python as impl
    else:
        raise CryptoError("unknown crypto backend %r" % (name,))
    return impl


def _same(key):
    return key


def _dh_n(secret, public):
    # The CPython backends' dh_n: `secret` may be a sealink.keys.PrivateKey, whose key
    # object serves the backend it was made under (its raw secret any other).
    held = getattr(secret, "_for_backend", None)
    shared = _impl.x25519(held() if held is not None else secret, public)
    if shared is None:
        raise ValueError("X25519 result is all zero (low-order public key)")
    return shared


def use_backend(name):
    """Switch every function of this module to backend `name`."""
    global BACKEND, _impl, seal_n, open_n, dh_n, open_data, seal_data, aead_key
    try:
        impl = _load(name)
    except ImportError:
        raise CryptoError("crypto backend %r is not available here" % (name,)) from None
    _impl = impl
    BACKEND = name
    seal_n = impl.aead_seal_n
    open_n = impl.aead_open_n
    dh_n = getattr(impl, "dh_n", None) or _dh_n
    open_data = getattr(impl, "open_data", None)
    seal_data = getattr(impl, "seal_data", None)
    aead_key = getattr(impl, "aead_key", None) or _same


def _select():
    forced = None
    getenv = getattr(os, "getenv", None)
    if getenv is not None:
        forced = getenv("SEALINK_CRYPTO_BACKEND")
    if forced:
        use_backend(forced)
        return
    for name in ("native", "cryptography", "python"):
        try:
            use_backend(name)
            return
        except CryptoError:
            pass


_select()
