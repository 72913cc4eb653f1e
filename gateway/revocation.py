"""The revocation list: every device the gateway revoked, in order, with a sequence
number, signed by the authority (a COSE_Sign1 over deterministic CBOR, as attestation
results are).  A second gateway, or anyone holding the authority's public key, checks
it offline (`sealink revocations verify`) and can apply it (`sealink revocations
import`); a list older than one already seen (a lower sequence number) is refused, so
that an old list cannot un-revoke a device.

    {1: "sealink-revocations", 2: seq, 3: issued at (unix s), 4: gateway static key,
     5: [[device id, device static key, revoked at, reason], ...]}
"""

from __future__ import annotations

import time
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pycose.messages import Sign1Message

from sealink_gateway.attest import _signed_by, sign_by_authority
from sealink_gateway.store import Store, StoreError

PROFILE = "sealink-revocations"


class RevocationError(Exception):
    """A revocation list that does not verify, is malformed or is older than one seen."""


def build(store: Store, authority: Ed25519PrivateKey, gateway_key: bytes,
          now: float | None = None) -> bytes:
    rows = store.revocations()
    return sign_by_authority(authority, {
        1: PROFILE, 2: rows[-1]["seq"] if rows else 0, 3: int(now or time.time()),
        4: gateway_key,
        5: [[r["device_id"], r["static_key"], int(r["at"]), r["reason"]] for r in rows]})


def verify(data: bytes, authority_public: bytes, min_seq: int = 0) -> dict[str, Any]:
    try:
        message = Sign1Message.decode(data)
        claims = cbor2.loads(message.payload)
    except Exception as e:
        raise RevocationError(f"not a COSE_Sign1 revocation list ({e})") from None
    if not _signed_by(message, authority_public):
        raise RevocationError("the authority's signature does not verify")
    try:
        if claims[1] != PROFILE:
            raise ValueError("not a Sealink revocation list")
        seq, issued, gateway, entries = claims[2], claims[3], claims[4], claims[5]
        if not (isinstance(seq, int) and isinstance(issued, int)
                and isinstance(gateway, bytes) and isinstance(entries, list)):
            raise ValueError("fields of the wrong type")
        revoked = [{"device_id": str(d), "static_key": bytes(k).hex(), "at": int(a),
                    "reason": str(r)} for d, k, a, r in entries]
        if any(len(bytes.fromhex(r["static_key"])) != 32 for r in revoked):
            raise ValueError("a device key is not 32 bytes")
    except (KeyError, TypeError, ValueError) as e:
        raise RevocationError(f"malformed revocation list: {e}") from None
    if seq < min_seq:
        raise RevocationError(f"revocation list {seq} is not newer than the last one seen "
                              f"({min_seq - 1}): an old list cannot undo a revocation")
    return {"seq": seq, "issued_at": issued, "gateway_key": gateway.hex(),
            "revoked": revoked}


def apply(store: Store, doc: dict[str, Any]) -> list[str]:
    """Revoke, in `store`, every active device whose static key the list names.
    Returns their ids."""
    done = []
    for r in doc["revoked"]:
        device = store.device_by_key(bytes.fromhex(r["static_key"]))
        if device is None or device.status != "active":
            continue
        try:
            store.revoke(device.id, f"revocation list {doc['seq']}: {r['reason']}")
        except StoreError:
            continue
        done.append(device.id)
    return done
