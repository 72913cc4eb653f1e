#!/usr/bin/env python3
"""Reference values for a board's firmware (RATS: the endorser's side).

Reads build/<BOARD>/firmware.elf, takes the bytes the DICE boot stage measures (the
code and read-only data between _sealink_image_start and _sealink_image_end, frozen
modules included; for UNIX the whole build/UNIX/micropython executable) and writes
build/<BOARD>/reference.json:

    {"board": ..., "version": ..., "firmware": "<sha-256 hex>", "image": [start, size]}

`sealink firmware register build/<BOARD>/reference.json` loads it into the gateway.

Usage: tools/reference.py BOARD [BOARD ...]
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

from elftools.elf.elffile import ELFFile

ROOT = Path(__file__).resolve().parent.parent


def version() -> str:
    init = (ROOT / "lib" / "sealink" / "__init__.py").read_text()
    sealink = re.search(r'^__version__ = "(.+)"$', init, re.M).group(1)
    mpy = (ROOT / "deps" / "micropython" / "py" / "mpconfig.h").read_text()
    parts = [re.search(rf"#define MICROPY_VERSION_{k} (\d+)", mpy).group(1)
             for k in ("MAJOR", "MINOR", "MICRO")]
    return f"sealink-{sealink}+micropython-{'.'.join(parts)}"


def measure(elf_path: Path) -> tuple[str, int, int]:
    if elf_path.name == "micropython":  # the unix port measures its whole executable
        data = elf_path.read_bytes()
        return hashlib.sha256(data).hexdigest(), 0, len(data)
    with elf_path.open("rb") as f:
        elf = ELFFile(f)
        symbols = {s.name: s["st_value"] for s in elf.get_section_by_name(".symtab").iter_symbols()
                   if s.name in ("_sealink_image_start", "_sealink_image_end")}
        start, end = symbols["_sealink_image_start"], symbols["_sealink_image_end"]
        image = bytearray(end - start)
        for seg in elf.iter_segments():
            if seg["p_type"] != "PT_LOAD":
                continue
            lo, hi = seg["p_vaddr"], seg["p_vaddr"] + seg["p_filesz"]
            a, b = max(lo, start), min(hi, end)
            if a < b:
                data = seg.data()
                image[a - start:b - start] = data[a - lo:b - lo]
    return hashlib.sha256(image).hexdigest(), start, end - start


def main() -> int:
    boards = sys.argv[1:]
    if not boards:
        print(__doc__, file=sys.stderr)
        return 2
    for board in boards:
        elf = ROOT / "build" / board / ("micropython" if board == "UNIX" else "firmware.elf")
        digest, start, size = measure(elf)
        out = ROOT / "build" / board / "reference.json"
        out.write_text(json.dumps({"board": board, "version": version(), "firmware": digest,
                                   "image": [start, size]}, indent=2) + "\n")
        print(f"{board}: firmware {digest[:16]}... ({size:,} bytes) -> {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
