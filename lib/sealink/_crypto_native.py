# The "native" backend: Monocypher through the _sealink_crypto C module.
# crypto.py has validated every argument; the module raises ValueError only for a bad
# tag (aead_open) or an all-zero shared secret (x25519), reported here as None.

import _sealink_crypto as _c

x25519_base = _c.x25519_base
dh_n = _c.x25519  # (sealink.noise's DH: ValueError for an all-zero result)
# The message path's AEAD with the Noise nonce built in C (sealink.crypto: seal_n);
# absent from firmware built before them, where crypto.py's Python version serves.
aead_seal_n = getattr(_c, "aead_seal_n", None)
aead_open_n = getattr(_c, "aead_open_n", None)
# Data frames of sealink.session in one call each (the firmware's message path).
open_data = getattr(_c, "open_data", None)
seal_data = getattr(_c, "seal_data", None)
compare = _c.compare
wipe = _c.wipe


def x25519(secret, public):
    try:
        return _c.x25519(secret, public)
    except ValueError:
        return None


def aead_encrypt(key, nonce, plaintext, aad):
    return _c.aead_seal(key, nonce, plaintext, aad)


def aead_decrypt(key, nonce, ciphertext, aad):
    try:
        return _c.aead_open(key, nonce, ciphertext, aad)
    except ValueError:
        return None
