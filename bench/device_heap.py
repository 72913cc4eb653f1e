#!/usr/bin/env python3
"""Heap the device side needs: the smallest MicroPython heap (`-X heapsize`, unix
firmware, Sealink frozen) in which a device completes a full XX handshake and 100
uplink messages at each MTU, found by bisection (1 KiB steps).  The target is 32 KiB.

Usage: .venv/bin/python bench/device_heap.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "lib"))
from device_session import DeviceChannelRun  # noqa: E402

from devices import DeviceError, UnixDevice  # noqa: E402


def completes(heap_kib: int, mtu: int) -> bool:
    device = UnixDevice("UNIX", heapsize=f"{heap_kib}k", timeout=60)
    try:
        run = DeviceChannelRun(device, mtu=mtu)
        run.handshake()
        for i in range(100):
            if run.uplink(b"reading %d" % i) != [b"reading %d" % i]:
                return False
        return True
    except (DeviceError, AssertionError, TimeoutError):
        return False
    finally:
        device.close()


def smallest_heap(mtu: int, lo: int = 2, hi: int = 32) -> int | None:
    if not completes(hi, mtu):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if completes(mid, mtu):
            hi = mid
        else:
            lo = mid
    return hi


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    table = Table(title="Smallest heap for XX + 100 messages (unix firmware, frozen stack)")
    table.add_column("link MTU")
    table.add_column("smallest -X heapsize", justify="right")
    report = {}
    for mtu in (20, 51, 222):
        kib = smallest_heap(mtu)
        report[mtu] = kib
        table.add_row(str(mtu), "over 32 KiB" if kib is None else f"{kib} KiB")
    Console(width=120).print(table)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if all(v is not None for v in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
