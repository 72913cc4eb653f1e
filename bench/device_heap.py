#!/usr/bin/env python3
"""Heap a device needs for a session: the smallest free heap in which the device side
of an XX handshake and 100 uplink messages completes in every one of RUNS runs, per
board (unix, Cortex-M3 and RV32 under QEMU) and link MTU.

Method.  The device's side is precompiled: bench/device/heap_probe.py, compiled with
the firmware's mpy-cross and imported from the device's filesystem (a littlefs flash
image on the QEMU boards, a directory on unix), so nothing of the harness is compiled
on the device except the one-line call the host sends per step (`P.step([...], now)`,
a few hundred bytes at most, freed at once).  After the Sealink stack and the probe are
imported, the probe takes all but `limit` free bytes in one block that it never frees:
`limit` is then the heap the session has, whatever the board's heap size.  The host
plays the gateway (the same Channel code, on CPython) over a lossless link.  A run
fails when the device raises (MemoryError).  The smallest limit is found by bisection
in 256-byte steps, one run per probe; then RUNS fresh runs (a new device process or a
rebooted QEMU each time, new keys each run) must all pass at that limit, or it is
raised by 256 bytes and tried again.

Usage: .venv/bin/python bench/device_heap.py [--boards ...] [--mtus 20,51,222]
       [--runs 20] [--json FILE]
"""

from __future__ import annotations

import argparse
import binascii
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT))
from devices import DeviceError, QemuDevice, UnixDevice  # noqa: E402
from sealink import crypto  # noqa: E402
from sealink.session import Channel  # noqa: E402

MPY_CROSS = ROOT / "deps" / "micropython" / "mpy-cross" / "build" / "mpy-cross"
PROBE = ROOT / "bench" / "device" / "heap_probe.py"
STEP = 256
MESSAGES = 100


def compile_probe(out_dir: Path) -> bytes:
    subprocess.run([str(MPY_CROSS), "-o", str(out_dir / "heap_probe.mpy"), str(PROBE)],
                   check=True)
    return (out_dir / "heap_probe.mpy").read_bytes()


class Board:
    """Boots a fresh device for each run, with the probe importable."""

    def __init__(self, board: str, workdir: Path, mpy: bytes):
        self.board, self.workdir = board, workdir
        if board == "UNIX":
            (workdir / "heap_probe.mpy").write_bytes(mpy)
        else:
            from sim import qemu

            self.flash = qemu.make_flash(workdir / f"{board}.img")
            device = QemuDevice(board, flash=self.flash)
            try:
                device.exec("f = open('heap_probe.mpy', 'wb')")
                for i in range(0, len(mpy), 512):
                    device.exec(f"f.write({mpy[i:i + 512]!r})")
                device.exec("f.close()")
            finally:
                device.close()

    def boot(self):
        if self.board == "UNIX":
            device = UnixDevice("UNIX", timeout=60)
            device.exec(f"import sys\nsys.path.insert(0, {str(self.workdir)!r})")
        else:
            device = QemuDevice(self.board, flash=self.flash, timeout=60)
        device.exec("import heap_probe as P")
        return device


def parse(out: str) -> tuple[list[bytes], list[bytes], str | None]:
    frames, payloads, state = [], [], None
    for line in out.splitlines():
        kind, _, value = line.strip().partition(" ")
        if kind == "F":
            frames.append(binascii.unhexlify(value))
        elif kind == "P":
            payloads.append(binascii.unhexlify(value))
        elif kind == "S":
            state = value
    return frames, payloads, state


def run_once(board: Board, mtu: int, limit: int) -> bool:
    """One session in `limit` free bytes: True if it completed."""
    device = board.boot()
    try:
        s_dev, s_gw = crypto.random_bytes(32), crypto.random_bytes(32)
        p_dev = crypto.x25519_base(s_dev)
        gateway = Channel(False, s_gw, sid=0x2A, mtu=mtu, peer_lookup=lambda sid: p_dev)
        device.exec(f"P.setup({s_dev!r}, None, {mtu}, {limit})")
        now = 0
        frames, _, _ = parse(device.exec(f"P.connect({now})"))
        for _ in range(50):
            answers = []
            for f in frames:
                answers += gateway.receive(f, now)[1]
            now += 500
            hexed = [binascii.hexlify(f).decode() for f in answers]
            frames, _, state = parse(device.exec(f"P.step({hexed!r}, {now})"))
            if state == "established":
                for f in frames:
                    gateway.receive(f, now)
                break
        if gateway.state != "established":
            return False
        for i in range(MESSAGES):
            data = b"reading %d" % i
            frames, _, _ = parse(device.exec(f"P.send({data!r}, {now})"))
            got = []
            for f in frames:
                got += gateway.receive(f, now)[0]
            if got != [data]:
                return False
        return True
    except (DeviceError, TimeoutError):
        return False
    finally:
        device.close()


def smallest_limit(board: Board, mtu: int, runs: int, lo: int = 1024,
                   hi: int = 32768) -> tuple[int | None, int]:
    """(the smallest limit that passed `runs` runs, the runs made in all)."""
    made = 1
    if not run_once(board, mtu, hi):
        return None, made
    while hi - lo > STEP:
        mid = (lo + hi) // 2 // STEP * STEP
        made += 1
        if run_once(board, mtu, mid):
            hi = mid
        else:
            lo = mid
    while hi <= 32768:
        results = []
        for _ in range(runs):
            made += 1
            results.append(run_once(board, mtu, hi))
            if not results[-1]:
                break
        if all(results):
            return hi, made
        hi += STEP
    return None, made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", default="UNIX,QEMU_MPS2_AN385,QEMU_VIRT_RV32")
    parser.add_argument("--mtus", default="20,51,222")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    mtus = [int(m) for m in args.mtus.split(",")]
    report: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        mpy = compile_probe(workdir)
        for name in args.boards.split(","):
            board = Board(name, workdir, mpy)
            report[name] = {}
            for mtu in mtus:
                limit, made = smallest_limit(board, mtu, args.runs)
                report[name][str(mtu)] = {"bytes": limit, "runs": made}
    table = Table(title=f"Smallest free heap for XX + {MESSAGES} messages, passing "
                        f"{args.runs} of {args.runs} runs (precompiled probe)")
    table.add_column("board")
    for mtu in mtus:
        table.add_column(f"MTU {mtu}", justify="right")
    for name, row in report.items():
        table.add_row(name, *("over 32 KiB" if row[str(m)]["bytes"] is None
                              else f"{row[str(m)]['bytes']:,} B" for m in mtus))
    Console(width=120).print(table)
    print(__doc__.split("Method.")[1].split("Usage:")[0].strip().replace("\n", " "))
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "step": STEP,
                                         "boards": report}, indent=2))
    return 0 if all(v["bytes"] is not None for r in report.values() for v in r.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
