#!/usr/bin/env python3
"""Print the flash cost of the _sealink_crypto module per board.

Each board is built twice by the Makefile: build/<BOARD> (with the module) and
build/baseline/<BOARD> (same firmware without it).  Sizes are Berkeley `size` figures
(text = code + read-only data, data = initialised RAM, bss = zeroed RAM) read from the
ELF with pyelftools.  `--json` prints the same table as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile

ROOT = Path(__file__).resolve().parent.parent
ELF_NAMES = {"UNIX": "micropython"}


def firmware_path(build: Path, board: str) -> Path:
    return build / board / ELF_NAMES.get(board, "firmware.elf")


def berkeley_size(path: Path) -> dict[str, int]:
    text = data = bss = 0
    with path.open("rb") as f:
        for section in ELFFile(f).iter_sections():
            flags = section["sh_flags"]
            if not flags & SH_FLAGS.SHF_ALLOC:
                continue
            if section["sh_type"] == "SHT_NOBITS":
                bss += section["sh_size"]
            elif flags & SH_FLAGS.SHF_WRITE:
                data += section["sh_size"]
            else:
                text += section["sh_size"]
    return {"text": text, "data": data, "bss": bss}


def frozen_size(build: Path, board: str) -> int:
    """Flash of the frozen Python (asyncio and lib/sealink as bytecode, with their
    qstrs and constants): the allocated sections of the build's frozen_content.o.
    The baseline freezes the same manifest, so the module's figure leaves it out."""
    obj = build / board / "frozen_content.o"
    if not obj.exists():
        return 0
    size = berkeley_size(obj)
    return size["text"] + size["data"]


def board_sizes(board: str, build: Path) -> dict[str, object]:
    with_module = berkeley_size(firmware_path(build, board))
    baseline = berkeley_size(firmware_path(build / "baseline", board))
    return {
        "board": board,
        "text": with_module["text"],
        "text_baseline": baseline["text"],
        "module_text": with_module["text"] - baseline["text"],
        "module_data": with_module["data"] - baseline["data"],
        "module_bss": with_module["bss"] - baseline["bss"],
        "frozen": frozen_size(build, board),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("boards", nargs="+")
    parser.add_argument("--build", type=Path, default=ROOT / "build")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    rows = [board_sizes(b, args.build) for b in args.boards]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("flash cost of _sealink_crypto (X25519, ChaCha20-Poly1305, Ed25519, SHA-512, bindings)"
          " and of the frozen Python (asyncio, lib/sealink)")
    print(f"{'board':<18}{'text':>10}{'baseline':>10}{'module':>10}{'data':>7}{'bss':>7}"
          f"{'frozen':>9}")
    for r in rows:
        print(f"{r['board']:<18}{r['text']:>10}{r['text_baseline']:>10}{r['module_text']:>10}"
              f"{r['module_data']:>7}{r['module_bss']:>7}{r['frozen']:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
