#!/usr/bin/env python3
"""Collect what `make bench` measured into build/bench/results.md and results.json.

Reads the JSON each benchmark wrote into build/bench/ (device_paths.json, heap.json,
gateway.json, sizes.json) and the console output of every benchmark
(build/bench/<name>.txt).  The first table puts each line against its floor and its
target; the sections after it give each benchmark's own table, and under it the method,
taken from the benchmark's documentation.  A benchmark that did not run is named as
missing, not left out.

Usage: .venv/bin/python bench/report.py [--dir build/bench]
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    "device_paths": ".venv/bin/python bench/device_paths.py",
    "heap": ".venv/bin/python bench/device_heap.py",
    "gateway": ".venv/bin/python bench/gateway_scale.py",
    "sizes": ".venv/bin/python tools/firmware_size.py --modules UNIX QEMU_MPS2_AN385 "
             "QEMU_VIRT_RV32",
}
SOURCES = {"device_paths": "bench/device_paths.py", "heap": "bench/device_heap.py",
           "gateway": "bench/gateway_scale.py", "sizes": "tools/firmware_size.py",
           "gateway_path": "bench/gateway_path.py", "crypto": "bench/crypto_speed.py",
           "air": "bench/air_bytes.py",
           "first_contact": "bench/first_contact.py", "aloha": "bench/aloha.py",
           "cell": "bench/cell_scale.py"}
DEVICE_PATHS = [("handshake_XX", "XX first contact, initiator", 1.1),
                ("handshake_XK", "XK first contact, initiator", 1.1),
                ("handshake_KK", "KK reconnect, initiator", 1.1),
                ("send_32", "send one 32-B message", 2.0),
                ("receive_32_mtu255", "receive one frame", 2.0),
                ("receive_32_mtu51", "receive it at MTU 51 (fragments)", None),
                ("receive_32_mtu20", "receive it at MTU 20 (fragments)", None)]
FLASH_TARGET = 24 * 1024  # frozen Sealink on a Cortex-M3 LoRa node


def method(source: str) -> str:
    """A benchmark's documentation: its module docstring, without the usage line."""
    doc = ast.get_docstring(ast.parse((ROOT / source).read_text())) or ""
    return doc.split("\nUsage:")[0].strip()


def load(directory: Path, name: str):
    path = directory / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def verdict(ratio: float, target: float | None, higher_is_better: bool = False) -> str:
    if target is None:
        return "-"
    met = ratio >= target if higher_is_better else ratio <= target
    return "met" if met else "not met"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def summary(data: dict) -> tuple[list[list[str]], list[dict]]:
    rows, records = [], []

    def add(line, value, floor, ratio, target, verdict_text, command, unit=""):
        rows.append([line, value, floor, ratio, target, verdict_text, f"`{command}`"])
        records.append({"line": line, "value": value, "floor": floor, "ratio": ratio,
                        "target": target, "verdict": verdict_text, "command": command,
                        "unit": unit})

    paths = data.get("device_paths") or {}
    for board, label in (("QEMU_MPS2_AN385", "Cortex-M3"), ("QEMU_VIRT_RV32", "RV32")):
        for key, what, target in DEVICE_PATHS:
            x = (paths.get(board) or {}).get(key)
            if x is None:
                continue
            ratio = x["instructions"] / x["floor"]
            add(f"{what}, {label}", f"{x['instructions']:,} instr", f"{x['floor']:,} instr",
                f"{ratio:.2f}", "-" if target is None else f"≤ {target}x",
                verdict(ratio, target), COMMANDS["device_paths"])
    gateway = data.get("gateway")
    if gateway:
        floor = gateway["floor"]
        for r in gateway["rows"]:
            if r.get("published_per_s") is not None:
                continue
            tag = f"{r['devices']:,} devices, {r['workers']} worker" + \
                  ("s" if r["workers"] > 1 else "")
            ratio = r["handshakes_per_cpu_s"] / floor["handshakes_per_cpu_s"]
            add(f"gateway KK handshakes per CPU-s, {tag}", f"{r['handshakes_per_cpu_s']:,.0f}",
                f"{floor['handshakes_per_cpu_s']:,.0f}", f"{ratio:.2f}", "≥ 0.8x",
                verdict(ratio, 0.8, True), COMMANDS["gateway"])
            ratio = r["messages_per_cpu_s"] / floor["opens_per_cpu_s"]
            add(f"gateway messages committed per CPU-s, {tag}",
                f"{r['messages_per_cpu_s']:,.0f}", f"{floor['opens_per_cpu_s']:,.0f}",
                f"{ratio:.3f}", "≥ 100,000",
                "met" if r["messages_per_cpu_s"] >= 100_000 else "not met", COMMANDS["gateway"])
    sizes = data.get("sizes")
    if sizes:
        for r in sizes:
            if r["board"] != "QEMU_MPS2_AN385":
                continue
            n = r["frozen_sealink"]
            add("frozen Sealink, Cortex-M3 LoRa node", f"{n:,} B",
                f"C module: {r['module_text']:,} B", "-", f"< {FLASH_TARGET:,} B",
                "met" if n < FLASH_TARGET else "not met", COMMANDS["sizes"])
    return rows, records


def device_paths_section(paths: dict) -> str:
    out = []
    for board, by_path in paths.items():
        rows = []
        for key, what, _ in DEVICE_PATHS:
            x = by_path.get(key)
            if x is None:
                continue
            rows.append([what, f"{x['instructions']:,}", f"{x['floor']:,}",
                         f"{x['instructions'] / x['floor']:.2f}", str(x["crypto_calls"]),
                         str(x["x25519"]), f"{x['heap_bytes']:,}"])
        out.append(f"**{board}**\n\n" + md_table(
            ["path", "instructions", "crypto floor", "ratio", "crypto calls", "X25519",
             "heap bytes"], rows))
    return "\n\n".join(out)


def heap_section(heap: dict) -> str:
    mtus = sorted({int(m) for row in heap["boards"].values() for m in row})
    rows = [[board] + [("over 32 KiB" if row.get(str(m), {}).get("bytes") is None
                        else f"{row[str(m)]['bytes']:,} B") for m in mtus]
            for board, row in heap["boards"].items()]
    return (f"Smallest free heap that passed {heap['runs']} of {heap['runs']} runs "
            f"(step {heap['step']} B):\n\n" + md_table(["board", *(f"MTU {m}" for m in mtus)],
                                                       rows))


def gateway_section(gateway: dict) -> str:
    floor = gateway["floor"]
    burst = [[str(r["workers"]), f"{r['devices']:,}",
              "yes" if r.get("published_per_s") is not None else "-",
              f"{r['handshakes_per_s']:,.0f}", f"{r['handshakes_per_cpu_s']:,.0f}",
              f"{r['handshakes_per_cpu_s'] / floor['handshakes_per_cpu_s']:.2f}",
              f"{r['proofs_per_cpu_s']:,.0f}" if "proofs_per_cpu_s" in r else "-",
              f"{r['messages_accepted']:,}/{r['messages_sent']:,}",
              f"{r['messages_per_s']:,.0f}", f"{r['messages_per_cpu_s']:,.0f}",
              f"{r['messages_per_cpu_s'] / floor['opens_per_cpu_s']:.3f}",
              "-" if r.get("published_per_s") is None else f"{r['published_per_s']:,.0f}",
              f"{r['rss_mib']:,.0f} MiB"]
             for r in gateway["rows"]]
    trickle = [[str(r["workers"]), f"{r['devices']:,}",
                "yes" if r.get("published_per_s") is not None else "-",
                f"{r['trickle_rate']:,}/s", f"{r['trickle_accepted']:,}/{r['trickle_sent']:,}",
                f"{100 * r['trickle_cpu_per_s']:.0f} %",
                f"{r['trickle_messages_per_cpu_s']:,.0f}",
                f"{r['trickle_ack_p50_ms']:.1f} ms", f"{r['trickle_ack_p99_ms']:.1f} ms"]
               for r in gateway["rows"] if "trickle_rate" in r]
    return ("Burst:\n\n" + md_table(
        ["workers", "devices", "MQTT", "handshakes/s", "per CPU-s", "of floor",
         "first frames per CPU-s", "messages accepted", "messages/s", "per CPU-s", "of floor",
         "to MQTT/s", "RSS"],
        burst) + "\n\nTrickle:\n\n" + md_table(
        ["workers", "devices", "MQTT", "offered", "accepted", "gateway CPU",
         "messages per CPU-s", "ack p50", "ack p99"], trickle)
        + f"\n\nFloor, per CPU second (pyca, same run): "
          f"{floor['handshakes_per_cpu_s']:,.0f} KK responder handshakes, "
          f"{floor['opens_per_cpu_s']:,.0f} AEAD opens.")


def sizes_section(sizes: list) -> str:
    rows = [[r["board"], f"{r['module_text']:,}", f"{r['frozen']:,}",
             f"{r['frozen_sealink']:,}", f"{r['frozen_asyncio']:,}"] for r in sizes]
    return md_table(["board", "C module (text)", "frozen, all", "frozen Sealink",
                     "frozen asyncio"], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "build" / "bench")
    args = parser.parse_args()
    data = {name: load(args.dir, name) for name in ("device_paths", "heap", "gateway", "sizes")}
    # The commit the benches in --dir ran (`make bench` writes it before the first);
    # HEAD where no `make bench` wrote one.  A commit landing during a long run must not
    # be named for it.
    started = args.dir / "commit"
    commit = started.read_text().strip() if started.exists() else ""
    commit = commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                      capture_output=True, text=True).stdout.strip() or "unknown"
    rows, records = summary(data)
    md = [f"# Sealink benchmarks\n\nCommit {commit}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, written by `make bench`.\n",
          "## Against the floor\n",
          md_table(["line", "measured", "floor", "ratio", "target", "", "command"], rows),
          "\nDevice lines: instructions on QEMU with `-icount shift=0`; the floor is the "
          "path's own crypto calls replayed into the C module (for a handshake, which runs "
          "inside the module, the calls Noise defines for each of its messages).  Gateway "
          "lines: per CPU "
          "second of the gateway's processes; the floor is pyca's own rate in the same run."]
    sections = [("Device cost per path", "device_paths", device_paths_section),
                ("Device heap", "heap", heap_section),
                ("Gateway", "gateway", gateway_section),
                ("Flash", "sizes", sizes_section)]
    for title, name, render in sections:
        md.append(f"\n## {title}\n")
        md.append(render(data[name]) if data[name] else
                  f"(missing: {args.dir / (name + '.json')} was not written)")
        md.append(f"\nCommand: `{COMMANDS[name]}`\n\nMethod. {method(SOURCES[name])}")
    for name in ("gateway_path", "crypto", "air", "first_contact", "aloha", "cell"):
        text = args.dir / f"{name}.txt"
        md.append(f"\n## {SOURCES[name]}\n")
        md.append("```\n" + text.read_text().rstrip() + "\n```" if text.exists()
                  else f"(missing: {text} was not written)")
        md.append(f"\nMethod. {method(SOURCES[name])}")
    (args.dir / "results.md").write_text("\n".join(md) + "\n")
    (args.dir / "results.json").write_text(json.dumps(
        {"commit": commit, "summary": records, **data}, indent=2))
    print(f"wrote {args.dir / 'results.md'} and {args.dir / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
