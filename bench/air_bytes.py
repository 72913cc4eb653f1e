#!/usr/bin/env python3
"""Bytes on the air for Sealink's protocol, measured by running the real Channel code.

Prints: handshake message sizes (Noise only, and Sealink frames with headers), the
number of link frames per handshake at MTU 20 / 51 / 222 (first contact also with an
enrollment token, and with DICE evidence: docs/attestation.md), and per-message
overhead.
Usage: .venv/bin/python bench/air_bytes.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "tests"))
from evidence import Identity  # noqa: E402
from sealink import crypto, fragment  # noqa: E402
from sealink.device import first_contact_payload  # noqa: E402
from sealink.errors import SealinkError  # noqa: E402
from sealink.noise import HandshakeState, protocol_name  # noqa: E402
from sealink.session import Channel  # noqa: E402


def noise_sizes(pattern):
    si, sr = crypto.random_bytes(32), crypto.random_bytes(32)
    pi, pr = crypto.x25519_base(si), crypto.x25519_base(sr)
    rs_i = pr if pattern in ("KK", "IK") else None
    init = HandshakeState(protocol_name(pattern), True, s=si, rs=rs_i)
    resp = HandshakeState(protocol_name(pattern), False, s=sr,
                          rs=pi if pattern == "KK" else None)
    sizes, writer, reader = [], init, resp
    while not init.complete:
        m = writer.write_message(b"")
        reader.read_message(m)
        sizes.append(len(m))
        writer, reader = reader, writer
    return sizes


def channel_handshake(mtu, reconnect, payload=b""):
    si, sr = crypto.random_bytes(32), crypto.random_bytes(32)
    pi, pr = crypto.x25519_base(si), crypto.x25519_base(sr)
    dev = Channel(True, si, rs=pr if reconnect else None, sid=1, mtu=mtu,
                  handshake_payload=payload)
    gw = Channel(False, sr, sid=1, mtu=mtu, peer_lookup=lambda sid: pi)
    messages = []  # (direction, frames, bytes)
    frames = dev.connect(0)
    sender = "device"
    while frames:
        messages.append((sender, len(frames), sum(len(f) for f in frames)))
        target = gw if sender == "device" else dev
        reply = []
        for f in frames:
            reply += target.receive(f, 0)[1]
        frames, sender = reply, ("gateway" if sender == "device" else "device")
    assert dev.state == gw.state == "established"
    return dev, gw, messages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    console = Console(width=120)
    report: dict = {"noise": {}, "handshakes": {}, "overhead": {}}

    t = Table(title="Noise handshake messages, empty payloads (bytes)")
    t.add_column("pattern")
    t.add_column("messages")
    t.add_column("total", justify="right")
    for pattern in ("XX", "KK", "IK"):
        sizes = noise_sizes(pattern)
        report["noise"][pattern] = sizes
        t.add_row(pattern, " / ".join(map(str, sizes)), str(sum(sizes)))
    console.print(t)

    t = Table(title="Sealink handshakes on the air: frames (bytes) per message")
    t.add_column("handshake")
    for mtu in (20, 51, 222):
        t.add_column(f"MTU {mtu}")
    token = b"0" * 32  # `sealink enroll create`: 16 random bytes in hex
    digest = bytes(32)
    firmware = Identity(bytes(32), [("firmware", digest)], "sealink-0.1.0+micropython-1.25.0")
    with_app = Identity(bytes(32), [("firmware", digest), ("main.py", digest)],
                        firmware.version)
    cases = [("XX (first contact)", False, b""), ("XX + token", False, token),
             (f"XX + token + evidence ({len(firmware.evidence())} B: firmware)", False,
              first_contact_payload(token, firmware.evidence())),
             (f"XX + token + evidence ({len(with_app.evidence())} B: + main.py)", False,
              first_contact_payload(token, with_app.evidence())),
             ("KK (reconnect)", True, b"")]
    for name, reconnect, payload in cases:
        row, rep = [name], {}
        for mtu in (20, 51, 222):
            try:
                _, _, msgs = channel_handshake(mtu, reconnect, payload)
            except (SealinkError, AssertionError):
                # More than fragment.MAX_FRAGMENTS frames: it cannot travel at this MTU.
                rep[mtu] = None
                row.append(f"does not fit ({fragment.MAX_FRAGMENTS} fragments max)")
                continue
            rep[mtu] = msgs
            row.append(" / ".join(f"{n} ({b} B)" for _, n, b in msgs))
        report["handshakes"][name] = rep
        t.add_row(*row)
    console.print(t)

    t = Table(title="Per-message overhead on the air (bytes)")
    t.add_column("payload")
    for mtu in (20, 51, 222):
        t.add_column(f"MTU {mtu}", justify="right")
    for n in (0, 10, 31, 100):
        row = [f"{n} B"]
        for mtu in (20, 51, 222):
            dev, gw, _ = channel_handshake(mtu, True)
            frames = dev.send(bytes(n), 0)
            total = sum(len(f) for f in frames)
            report["overhead"].setdefault(mtu, {})[n] = {"frames": len(frames), "bytes": total}
            row.append(f"{total - n} ({len(frames)} fr)")
        t.add_row(*row)
    console.print(t)
    console.print("Overhead: 4-byte header (kind, 16-bit session id, 13-bit counter) + "
                  "16-byte tag; fragments add 5 bytes per extra frame.")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
