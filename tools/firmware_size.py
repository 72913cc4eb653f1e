#!/usr/bin/env python3
"""Print the flash cost of the _sealink_crypto module and of the frozen Python per board.

Each board is built twice by the Makefile: build/<BOARD> (with the module) and
build/baseline/<BOARD> (same firmware without it).  Sizes are Berkeley `size` figures
(text = code + read-only data, data = initialised RAM, bss = zeroed RAM) read from the
ELF with pyelftools.

The frozen Python (bytecode, constants and qstrs in frozen_content.o) is split by
package: every symbol of frozen_content.o names the module it belongs to, each string
constant is counted to the module whose constant table holds it, and each qstr (its
text and NUL, its pool pointer, its length and hash as the board configures them) to
the package whose modules use it; a qstr both packages use is "shared".  `--modules`
lists lib/sealink module by module.  `--json` prints the same as JSON.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
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


def _c_string_length(literal: str) -> int:
    """Bytes of a C string literal's body (escapes decoded), with its NUL."""
    return len(re.sub(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", "_", literal)) + 1


def qstr_entry_bytes(build: Path, board: str) -> int:
    """Bytes of a qstr's length and hash in the pool (MICROPY_QSTR_BYTES_IN_LEN and
    _IN_HASH, as the build's qstr generator saw them)."""
    header = build / board / "genhdr" / "qstrdefs.preprocessed.h"
    text = header.read_text(errors="replace") if header.exists() else ""
    config = dict(re.findall(r"QCFG\(BYTES_IN_(LEN|HASH), \((\d+)\)\)", text))
    return int(config.get("LEN", 1)) + int(config.get("HASH", 2))


def frozen_breakdown(build: Path, board: str) -> dict[str, int]:
    """Flash of the frozen Python by module ("sealink/session.py": bytes, ...), plus
    "qstr:<package>" for the qstrs only that package uses and "qstr:shared".  What is
    left (the table of module names, alignment) is "other"."""
    obj, source = build / board / "frozen_content.o", build / board / "frozen_content.c"
    if not obj.exists() or not source.exists():
        return {}
    c = source.read_text()
    modules = sorted(re.findall(r"mp_frozen_module_t frozen_module_(\w+) ", c),
                     key=len, reverse=True)
    names = {m: m.replace("___init__", "/__init__") for m in modules}

    def module_of(symbol: str) -> str | None:
        for m in modules:  # longest first: sealink_drivers_rak3172_lorawan before ..._rak3172
            if re.search(rf"(^|_){m}(_|$)", symbol):
                return m
        return None

    sizes: collections.Counter = collections.Counter()
    with obj.open("rb") as f:
        elf = ELFFile(f)
        pointer = elf.elfclass // 8
        for sym in elf.get_section_by_name(".symtab").iter_symbols():
            m = module_of(sym.name) if sym["st_size"] else None
            if m:
                sizes[m] += sym["st_size"]
    for name, literal in re.findall(r"mp_obj_str_t const_obj_(\w+) = \{\{&mp_type_\w+\}, "
                                    r"\d+, \d+, \(const byte\*\)\"((?:[^\"\\\\]|\\\\.)*)\"", c):
        m = module_of(name)
        if m:
            sizes[m] += _c_string_length(literal)
    # qstrs: the pool's entries in the order of the enum that names them.
    enum = c[c.index("enum {"):]
    enum = enum[:enum.index("};")]
    qnames = re.findall(r"^\s*(MP_QSTR_\w+)", enum, re.M)
    pool = c[c.index("mp_qstr_frozen_const_pool = {"):]
    texts = re.findall(r'^\s*"((?:[^"\\\\]|\\\\.)*)",$', pool[:pool.index("};")], re.M)
    entry = qstr_entry_bytes(build, board)
    users: dict[str, set] = collections.defaultdict(set)
    for m, body in re.findall(r"const_qstr_table_data_(\w+)\[\d+\] = \{(.*?)\};", c, re.S):
        for q in re.findall(r"MP_QSTR_\w+", body):
            users[q].add(m.split("_")[0].lstrip("u"))  # sealink, asyncio (uasyncio)
    for q, text in zip(qnames, texts, strict=False):
        package = users.get(q, set())
        key = "qstr:" + (package.pop() if len(package) == 1 else "shared")
        # text and NUL, the pool's pointer to it, its length and hash
        sizes[key] += _c_string_length(text) + pointer + entry
    sizes["other"] = max(0, frozen_size(build, board) - sum(sizes.values()))
    out = {}
    for key, n in sizes.items():
        name = names.get(key, key)
        if not name.startswith("qstr:") and name != "other":
            parts = name.split("_", 1)
            name = parts[0] + "/" + parts[1].replace("drivers_", "drivers/") + ".py" \
                if len(parts) == 2 and parts[0] in ("sealink", "asyncio") else name + ".py"
        out[name] = n
    return dict(sorted(out.items()))


def package_total(breakdown: dict[str, int], package: str) -> int:
    """A package's frozen flash: its modules and the qstrs only it uses."""
    return sum(n for k, n in breakdown.items()
               if k.startswith(package + "/") or k == "qstr:" + package)


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
        "frozen_sealink": package_total(frozen := frozen_breakdown(build, board), "sealink"),
        "frozen_asyncio": package_total(frozen, "asyncio"),
        "frozen_modules": frozen,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("boards", nargs="+")
    parser.add_argument("--build", type=Path, default=ROOT / "build")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--modules", action="store_true",
                        help="also list the frozen flash module by module")
    args = parser.parse_args()
    rows = [board_sizes(b, args.build) for b in args.boards]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("flash of the _sealink_crypto C module (X25519, ChaCha20-Poly1305, Ed25519, SHA-512,"
          " the Noise handshake, bindings; against the board built without it) and of the"
          " frozen Python, by package")
    print(f"{'board':<18}{'text':>10}{'baseline':>10}{'C module':>10}{'data':>7}{'bss':>7}"
          f"{'frozen':>9}{'sealink':>9}{'asyncio':>9}")
    for r in rows:
        print(f"{r['board']:<18}{r['text']:>10}{r['text_baseline']:>10}{r['module_text']:>10}"
              f"{r['module_data']:>7}{r['module_bss']:>7}{r['frozen']:>9}"
              f"{r['frozen_sealink']:>9}{r['frozen_asyncio']:>9}")
    if args.modules:
        names = sorted({k for r in rows for k in r["frozen_modules"]})
        print(f"\n{'frozen, bytes':<32}" + "".join(f"{r['board'][:16]:>17}" for r in rows))
        for name in names:
            print(f"{name:<32}" + "".join(
                f"{r['frozen_modules'].get(name, '-'):>17}" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
