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


# An authority key's endorsement of its successor (`sealink keys rotate --authority`):
#     new public key (32) | grace end, unix seconds (4) | Ed25519 signature (64)
# signed by the old key over ENDORSEMENT_LABEL + the first 36 bytes.  During the grace
# period the gateway sends it after each credential, so that a device provisioned
# with the old key accepts credentials the new key signs, and keeps the new key.
ENDORSEMENT_LABEL = b"sealink authority endorsement v1"
ENDORSEMENT_SIZE = 100


def endorse(old: Ed25519PrivateKey, new_public: bytes, until: int) -> bytes:
    body = new_public + struct.pack(">I", until)
    return body + old.sign(ENDORSEMENT_LABEL + body)


def check_endorsement(old_public: bytes, endorsement: bytes) -> tuple[bytes, int]:
    """(the endorsed key, its grace end) if `old_public` signed `endorsement`."""
    if len(endorsement) != ENDORSEMENT_SIZE:
        raise CredentialError("an endorsement is 100 bytes")
    body, signature = endorsement[:36], endorsement[36:]
    try:
        Ed25519PublicKey.from_public_bytes(old_public).verify(signature,
                                                              ENDORSEMENT_LABEL + body)
    except InvalidSignature:
        raise CredentialError("the endorsement is not signed by that authority") from None
    return body[:32], struct.unpack(">I", body[32:])[0]


class Authority:
    def __init__(self, private_key: Ed25519PrivateKey, endorsement: bytes | None = None):
        self._key = private_key
        self.public_key = private_key.public_key().public_bytes_raw()
        # The previous authority key's endorsement of this one, during its grace period.
        self.endorsement = endorsement

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
    """Check a credential's signature and return its fields.  A credential followed by
    an endorsement (a rotation of the authority) verifies under the key that
    `authority_public_key` endorsed."""
    if len(credential) < _HEAD.size + 64:
        raise CredentialError("credential truncated")
    version, sid, issued_at, device_key, gateway_key, n = _HEAD.unpack_from(credential)
    size = _HEAD.size + n + 64
    if version != VERSION or len(credential) not in (size, size + ENDORSEMENT_SIZE):
        raise CredentialError("malformed credential")
    signer = authority_public_key
    if len(credential) > size:
        signer, _ = check_endorsement(authority_public_key, credential[size:])
        credential = credential[:size]
    body, signature = credential[:-64], credential[-64:]
    try:
        Ed25519PublicKey.from_public_bytes(signer).verify(signature, body)
    except InvalidSignature:
        raise CredentialError("credential signature does not verify") from None
    return {"sid": sid, "issued_at": issued_at, "device_key": device_key,
            "gateway_key": gateway_key,
            "attributes": json.loads(body[_HEAD.size:].decode())}
