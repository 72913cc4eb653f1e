"""The authority: the gateway operator's Ed25519 key, which signs device credentials.

A credential tells a device, verifiably, what the gateway recorded at enrollment:

    version (1) | session id (2) | issued at, unix seconds (4) | device static key (32)
    | gateway static key (32) | attributes length (1) | attributes (JSON) | Ed25519 signature (64)

The signature covers every byte before it.  Devices keep the credential and the
authority's public key; anyone with the public key can check it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sealink_gateway.keyfile import require_private, write_private

VERSION = 1
_HEAD = struct.Struct(">BHI32s32sB")


class CredentialError(ValueError):
    pass


class Authority:
    def __init__(self, private_key: Ed25519PrivateKey):
        self._key = private_key
        self.public_key = private_key.public_key().public_bytes_raw()

    @classmethod
    def load_or_create(cls, path: str | Path) -> Authority:
        """Load the PEM key at `path`, creating it (mode 0600) if it does not exist."""
        path = Path(path)
        if path.exists():
            require_private(path)
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise CredentialError(f"{path} is not an Ed25519 private key")
            return cls(key)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        write_private(path, pem)
        return cls(key)

    def seed(self) -> bytes:
        """The private key's 32-byte seed (for custody: `sealink keys`)."""
        return self._key.private_bytes_raw()

    def issue(self, sid: int, issued_at: int, device_key: bytes, gateway_key: bytes,
              attributes: dict[str, str]) -> bytes:
        attrs = json.dumps(attributes, separators=(",", ":"), sort_keys=True).encode()
        if len(attrs) > 255:
            raise CredentialError("attributes longer than 255 bytes")
        body = _HEAD.pack(VERSION, sid, issued_at, device_key, gateway_key, len(attrs)) + attrs
        return body + self._key.sign(body)


def verify(credential: bytes, authority_public_key: bytes) -> dict:
    """Check a credential's signature and return its fields."""
    if len(credential) < _HEAD.size + 64:
        raise CredentialError("credential truncated")
    version, sid, issued_at, device_key, gateway_key, n = _HEAD.unpack_from(credential)
    if version != VERSION or len(credential) != _HEAD.size + n + 64:
        raise CredentialError("malformed credential")
    body, signature = credential[:-64], credential[-64:]
    try:
        Ed25519PublicKey.from_public_bytes(authority_public_key).verify(signature, body)
    except InvalidSignature:
        raise CredentialError("credential signature does not verify") from None
    return {"sid": sid, "issued_at": issued_at, "device_key": device_key,
            "gateway_key": gateway_key,
            "attributes": json.loads(body[_HEAD.size:].decode())}
