#!/usr/bin/env python3
"""First contact on LoRa, before and after Stage 9, measured by running the real Channel
code both ways and counting the link frames and their time on air (EU868, 125 kHz).

- before: XX, then the credential download (Stage 8's first contact); the device's
  frames limited to the FRMPayload limit N of its data rate (51 at SF12, 222 at SF7),
  the gateway splitting every downlink at 51 bytes; no MHDR;
- after: XK with the provisioned gateway key, the session id in message 2, the token
  in message 3 (as 16 bytes), no credential unless asked; every frame a LoRaWAN
  proprietary frame (MHDR + Sealink frame) up to the data rate's PHYPayload limit.

Without DICE evidence (the token only), and with the 315-byte evidence of a device
with a DICE identity (firmware only).
Usage: .venv/bin/python bench/first_contact.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from evidence import Identity  # noqa: E402
from sealink import crypto, wire  # noqa: E402
from sealink.device import first_contact_payload  # noqa: E402
from sealink.lora import max_payload, time_on_air_us  # noqa: E402
from sealink.session import CONTROL_CREDENTIAL, Channel  # noqa: E402
from sealink_gateway.authority import Authority  # noqa: E402

TOKEN = b"00112233445566778899aabbccddeeff"  # a token as `sealink token` makes them
OLD_N = {7: 222, 8: 222, 9: 115, 10: 51, 11: 51, 12: 51}  # Stage 8's limits


def run(sf: int, scheme: str, evidence: bytes | None) -> dict:
    gs, ds = crypto.random_bytes(32), crypto.random_bytes(32)
    gw_pub = crypto.x25519_base(gs)
    if scheme == "before":
        up_mtu, down_mtu, mhdr = OLD_N[sf], 51, 0
        payload = first_contact_payload(TOKEN, evidence) if evidence else TOKEN
        dev = Channel(True, ds, sid=0x9000, mtu=up_mtu, handshake_payload=payload)
        dev.expected_rs = gw_pub
        gw = Channel(False, gs, sid=0x9000, mtu=down_mtu)
        frames_up = dev.connect(0, "XX")
    else:
        up_mtu = down_mtu = max_payload(sf)
        mhdr = 1
        dev = Channel(True, ds, rs=gw_pub, sid=0x9000, mtu=up_mtu,
                      handshake_payload=first_contact_payload(TOKEN, evidence))
        gw = Channel(False, gs, sid=0x9000, mtu=down_mtu)
        gw.handshake_payload = (0x0123).to_bytes(2, "big")
        frames_up = dev.connect(0, "XK")
    up, down = [], []
    while frames_up:
        up += frames_up
        replies = []
        for f in frames_up:
            replies += gw.receive(f, 0)[1]
        down += replies
        frames_up = []
        for f in replies:
            frames_up += dev.receive(f, 0)[1]
    assert dev.state == gw.state == "established", (scheme, sf, dev.drops, gw.drops)
    if scheme == "before":
        # The gateway's credential, signed by its authority (Stage 8: always sent).
        credential = Authority(Ed25519PrivateKey.generate()).issue(
            0x0123, 1_800_000_000, crypto.x25519_base(ds), gw_pub, {"name": "sensor-17"})
        cred = gw.send(CONTROL_CREDENTIAL + credential, 0, wire.KIND_CONTROL)
        down += cred
        for f in cred:
            dev.receive(f, 0)
        assert dev.credential == credential
    return {"sf": sf, "scheme": scheme, "evidence": evidence is not None,
            "up_frames": len(up), "down_frames": len(down),
            "up_bytes": sum(len(f) + mhdr for f in up),
            "down_bytes": sum(len(f) + mhdr for f in down),
            "up_airtime_s": round(sum(time_on_air_us(len(f) + mhdr, sf) for f in up) / 1e6, 3),
            "down_airtime_s": round(sum(time_on_air_us(len(f) + mhdr, sf)
                                        for f in down) / 1e6, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    evidence = Identity(bytes(32), [("firmware", bytes(32))], "sealink-0.1.0").evidence()
    rows = [run(sf, scheme, ev) for ev in (None, evidence) for sf in (7, 12)
            for scheme in ("before", "after")]
    t = Table(title="First contact on LoRa (EU868): before (XX + credential) and after (XK)")
    for col in ("SF", "evidence", "scheme", "uplink frames", "downlink frames", "uplink B",
                "downlink B", "uplink airtime s", "downlink airtime s"):
        t.add_column(col, justify="right" if col not in ("scheme", "evidence") else "left")
    for r in rows:
        t.add_row(str(r["sf"]), f"{len(evidence)} B" if r["evidence"] else "no", r["scheme"],
                  str(r["up_frames"]), str(r["down_frames"]), str(r["up_bytes"]),
                  str(r["down_bytes"]), f"{r['up_airtime_s']:.3f}",
                  f"{r['down_airtime_s']:.3f}")
    Console(width=140).print(t)
    print("Method: the real sealink.session.Channel on both sides, frames counted as they "
          "leave; time on air from the Semtech formula (125 kHz, CR 4/5, 8-symbol "
          "preamble, CRC on), each frame with its MHDR after Stage 9.")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
