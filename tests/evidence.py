"""DICE evidence built on the host, independently of the firmware's C encoder: the
derivations of docs/attestation.md with hmac/hashlib, the EAT with cbor2 and the
COSE_Sign1 with pycose.  The tests check that a device produces the same bytes, and
use it to forge the bad evidence the verifier must refuse."""

from __future__ import annotations

import hashlib
import hmac

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pycose.algorithms import EdDSA
from pycose.headers import KID, Algorithm
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

PROFILE = "tag:sealink,2026:dice-v1"


class Identity:
    def __init__(self, uds: bytes, components: list[tuple[str, bytes]], version: str):
        self.uds, self.components, self.version = uds, components, version
        self.seed = hmac.new(uds, b"sealink DeviceID v1", hashlib.sha256).digest()
        self.device_id = Ed25519PrivateKey.from_private_bytes(
            self.seed).public_key().public_bytes_raw()
        self.register = bytes(32)
        for _, digest in components:
            self.register = hashlib.sha256(self.register + digest).digest()
        cdi = hmac.new(uds, self.register, hashlib.sha256).digest()
        self.static_key = hmac.new(cdi, b"sealink Noise static v1", hashlib.sha256).digest()
        self.static_public = X25519PrivateKey.from_private_bytes(
            self.static_key).public_key().public_bytes_raw()
        self.ueid = b"\x01" + hashlib.sha256(self.device_id).digest()[:16]

    def claims(self) -> dict:
        return {8: {1: {1: 1, -1: 4, -2: self.static_public}}, 256: self.ueid,
                265: PROFILE, 271: [self.version],
                2399: [{1: n, 2: d} for n, d in self.components], -70001: self.register}

    def evidence(self, claims: dict | None = None, seed: bytes | None = None,
                 kid: bytes | None = None) -> bytes:
        seed = seed or self.seed
        public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
        message = Sign1Message(phdr={Algorithm: EdDSA}, uhdr={KID: kid or self.ueid},
                               payload=cbor2.dumps(claims or self.claims(), canonical=True))
        message.key = OKPKey(crv=Ed25519, x=public, d=seed)
        return message.encode()
