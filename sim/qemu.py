"""How Sealink's QEMU boards are started: one command line for the tests, the fleet and
the benchmarks.

The board support (boards/qemu_common) reads its semihosting arguments: `flash=PATH`
names a host file that becomes the board's flash (littlefs, mounted at /, formatted on
first boot; boot.py and main.py run from it); `uds=PATH` names the device's Unique
Device Secret, which the DICE boot stage reads before any Python code runs.  Without
them the board boots with no filesystem, or no DICE identity.  Semihosting also gives
the guest the host's /dev/urandom."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"

MACHINES = {
    "QEMU_MPS2_AN385": ["qemu-system-arm", "-machine", "mps2-an385"],
    "QEMU_VIRT_RV32": ["qemu-system-riscv32", "-machine", "virt", "-bios", "none"],
}

FLASH_BLOCK = 4096
FLASH_SIZE = 512 * 1024  # 128 blocks of 4 KiB


def firmware(board: str) -> Path:
    elf = BUILD / board / "firmware.elf"
    if not elf.exists():
        raise FileNotFoundError(f"{elf} is missing: run `make firmware`")
    return elf


def make_flash(path: Path, size: int = FLASH_SIZE) -> Path:
    """A blank flash image (the board formats it on first boot); an existing one is
    kept as it is."""
    if size % FLASH_BLOCK or size < 2 * FLASH_BLOCK:
        raise ValueError(f"flash size must be a multiple of {FLASH_BLOCK} B, 8 KiB or more")
    if not path.exists():
        with path.open("wb") as f:
            f.truncate(size)
    return path


def make_uds(path: Path) -> Path:
    """A fresh Unique Device Secret (32 random bytes, mode 0600): what manufacturing
    writes once into a device's one-time storage.  An existing one is kept."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
    return path


def command(board: str, serial: str = "pty", icount: int | None = None,
            flash: Path | None = None, uds: Path | None = None,
            monitor: Path | None = None) -> list[str]:
    """The command line for `board`, its console on `serial` ("pty" or "stdio");
    `monitor` puts QEMU's human monitor on that Unix socket (tests read guest memory
    with it, from outside the guest)."""
    if any("," in str(p) or " " in str(p) for p in (flash, uds) if p is not None):
        raise ValueError("semihosting arguments cannot hold spaces or commas")
    semihosting = "enable=on,target=native,arg=sealink"
    if flash is not None:
        semihosting += f",arg=flash={flash}"
    if uds is not None:
        semihosting += f",arg=uds={uds}"
    cmd = MACHINES[board] + ["-display", "none", "-monitor",
                             f"unix:{monitor},server,nowait" if monitor else "none",
                             "-semihosting-config", semihosting,
                             "-serial", serial, "-kernel", str(firmware(board))]
    if icount is not None:
        cmd += ["-icount", f"shift={icount}"]
    return cmd
