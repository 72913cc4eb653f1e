#!/usr/bin/env python3
"""Crypto cost on the devices, measured in one run.

- QEMU Cortex-M3 and RV32 under `-icount shift=0`: guest time advances 1 ns per
  instruction and `time.ticks_us()` is a hardware timer, so a ticks_us delta x 1000 is
  the instruction count of the guest code between the two reads (deterministic; the
  call overhead of the Python wrapper is included, as an application sees it).
- The unix firmware: native module vs pure-Python fallback, wall time per operation
  on this machine, and their ratio (both measured in the same process).

Usage: .venv/bin/python bench/crypto_speed.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from devices import QemuDevice, UnixDevice  # noqa: E402

# Runs on the device: repeat each operation `reps` times between two ticks_us reads.
_MEASURE = """
import time
from sealink import crypto
crypto.use_backend({backend!r})
k = bytes(range(32)); pk = crypto.x25519_base(bytes(range(1, 33)))
key = bytes(32); nonce = bytes(12); msg = bytes(1024)
sealed = crypto.aead_encrypt(key, nonce, msg)
def run(name, fn, reps):
    fn()
    t0 = time.ticks_us()
    for _ in range(reps):
        fn()
    dt = time.ticks_diff(time.ticks_us(), t0)
    print(name, dt, reps)
run('x25519', lambda: crypto.x25519(k, pk), {reps_x})
run('x25519_base', lambda: crypto.x25519_base(k), {reps_x})
run('aead_encrypt_1k', lambda: crypto.aead_encrypt(key, nonce, msg), {reps_a})
run('aead_decrypt_1k', lambda: crypto.aead_decrypt(key, nonce, sealed), {reps_a})
if {signing!r}:
    from sealink import ed25519
    sk = bytes(range(32)); pub = ed25519.public_key(sk); m = bytes(100)
    sig = ed25519.sign(sk, m, pub)
    run('ed25519_sign_100', lambda: ed25519.sign(sk, m, pub), {reps_x})
    run('ed25519_verify_100', lambda: ed25519.verify(pub, sig, m), {reps_x})
    run('sha512_1k', lambda: ed25519.sha512(msg), {reps_a})
"""


def measure(device, backend: str, reps_x: int, reps_a: int,
            signing: bool = False) -> dict[str, float]:
    out = device.exec(_MEASURE.format(backend=backend, reps_x=reps_x, reps_a=reps_a,
                                      signing=signing), timeout=900)
    result = {}
    for line in out.strip().splitlines():
        name, dt, reps = line.split()
        result[name] = int(dt) / int(reps)  # microseconds per operation
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    console = Console(width=120)
    report: dict[str, dict] = {}

    table = Table(title="Instructions per operation on QEMU (-icount shift=0), native module")
    table.add_column("board")
    columns = {"x25519": "X25519", "x25519_base": "X25519 key generation",
               "aead_encrypt_1k": "ChaCha20-Poly1305 seal 1 KiB",
               "aead_decrypt_1k": "open 1 KiB", "ed25519_sign_100": "Ed25519 sign 100 B",
               "ed25519_verify_100": "verify 100 B", "sha512_1k": "SHA-512 1 KiB"}
    for col in columns.values():
        table.add_column(col, justify="right")
    for board in ("QEMU_MPS2_AN385", "QEMU_VIRT_RV32"):
        device = QemuDevice(board, icount=0)
        try:
            # 1 tick = 1 us = 1000 instructions at shift=0.
            r = {k: v * 1000 for k, v in measure(device, "native", 20, 20, True).items()}
        finally:
            device.close()
        report[board] = {"instructions": r}
        table.add_row(board, *(f"{r[k]:,.0f}" for k in columns))
    console.print(table)

    table = Table(title="unix firmware: microseconds per operation (wall time, this machine)")
    table.add_column("backend")
    for col in ("X25519", "seal 1 KiB", "open 1 KiB"):
        table.add_column(col, justify="right")
    device = UnixDevice("UNIX")
    try:
        native = measure(device, "native", 200, 500)
        python = measure(device, "python", 3, 5)
    finally:
        device.close()
    for name, r in (("native", native), ("python", python)):
        table.add_row(name, f"{r['x25519']:,.1f}", f"{r['aead_encrypt_1k']:,.1f}",
                      f"{r['aead_decrypt_1k']:,.1f}")
    ratio = {k: python[k] / native[k] for k in native}
    table.add_row("ratio python/native", *(f"{ratio[k]:,.0f}x" for k in
                                           ("x25519", "aead_encrypt_1k", "aead_decrypt_1k")))
    console.print(table)
    report["UNIX"] = {"native_us": native, "python_us": python, "ratio": ratio}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
