# The "cryptography" backend (CPython): pyca/cryptography (OpenSSL).

import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305


def private_key(secret):
    return X25519PrivateKey.from_private_bytes(bytes(secret))


def _private(secret):
    if isinstance(secret, X25519PrivateKey):
        return secret
    return X25519PrivateKey.from_private_bytes(bytes(secret))


def x25519(secret, public):
    private = _private(secret)
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(bytes(public)))
    except ValueError:
        # OpenSSL refuses the all-zero shared secret itself.
        return None


def x25519_base(secret):
    return _private(secret).public_key().public_bytes_raw()


def aead_encrypt(key, nonce, plaintext, aad):
    return ChaCha20Poly1305(bytes(key)).encrypt(bytes(nonce), bytes(plaintext), bytes(aad))


def aead_decrypt(key, nonce, ciphertext, aad):
    try:
        return ChaCha20Poly1305(bytes(key)).decrypt(bytes(nonce), bytes(ciphertext), bytes(aad))
    except InvalidTag:
        return None


def compare(a, b):
    return hmac.compare_digest(bytes(a), bytes(b))


def wipe(buf):
    view = memoryview(buf).cast("B")
    view[:] = bytes(len(view))
