# The "native" backend: Monocypher through the _sealink_crypto C module.
# crypto.py has validated every argument; the module raises ValueError only for a bad
# tag (aead_open) or an all-zero shared secret (x25519), reported here as None.

import _sealink_crypto as _c

x25519_base = _c.x25519_base
dh_n = _c.x25519  # (sealink.noise's DH: ValueError for an all-zero result)
# The message path's AEAD with the Noise nonce built in C (sealink.crypto: seal_n), and
# data frames of sealink.session in one call each.  (Frozen with the module it calls:
# the firmware that carries this file has them all.)
aead_seal_n = _c.aead_seal_n
aead_open_n = _c.aead_open_n
open_data = _c.open_data
seal_data = _c.seal_data
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
