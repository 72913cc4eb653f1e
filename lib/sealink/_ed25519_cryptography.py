# sealink.ed25519 on CPython: pyca/cryptography behind the functions the firmware's C
# module has (same names, same arguments, checked by sealink.ed25519).  Not frozen into
# firmware.

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def sha512(data):
    return hashlib.sha512(bytes(data)).digest()


def ed25519_public(private):
    return Ed25519PrivateKey.from_private_bytes(bytes(private)).public_key().public_bytes_raw()


def ed25519_sign(private, public, message):
    # (pyca derives the public key itself: `public` is the C module's argument.)
    return Ed25519PrivateKey.from_private_bytes(bytes(private)).sign(bytes(message))


def ed25519_verify(public, signature, message):
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public)).verify(bytes(signature), bytes(message))
        return True
    except (InvalidSignature, ValueError):
        return False
