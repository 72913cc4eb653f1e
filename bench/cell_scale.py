"""A LoRa cell at fleet scale: the 1,000-device modeled day, and delivery against the
number of devices per spreading factor beside the ALOHA curve.

    .venv/bin/python bench/cell_scale.py [--out build/bench] [--sweep 100,300,1000]
                                         [--sweep-hours 3]

1. Runs sim/scenarios/cell-1000.toml (1,000 devices, SF7-SF12, a report every 15
   minutes each, one modeled day) and prints its per-SF table (sim.cell).
2. Runs the same cell with fewer and more devices for `--sweep-hours` modeled hours
   each, and plots each SF's delivery ratio and frame success against the number of
   devices on it, with exp(-2G) for that SF's measured offered load per channel.
Writes cell_scale.png and cell_scale.json.  Discrete-event time: the same figures on
any host; the wall time of each run is printed for scale only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "lib")]

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from sim import cell  # noqa: E402

SCENARIO = ROOT / "sim" / "scenarios" / "cell-1000.toml"


def sweep_file(devices: int, hours: float, workdir: Path) -> Path:
    text = SCENARIO.read_text()
    text = text.replace("devices = 1000", f"devices = {devices}")
    text = text.replace("duration_s = 86400", f"duration_s = {int(hours * 3600)}")
    text = text.replace('name = "cell-1000"', f'name = "sweep-{devices}"')
    path = workdir / f"sweep-{devices}.toml"
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    parser.add_argument("--sweep", default="100,300,1000,2000")
    parser.add_argument("--sweep-hours", type=float, default=3.0)
    parser.add_argument("--skip-day", action="store_true", help="the sweep only")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    console = Console(width=190)
    result: dict = {"day": None, "sweep": []}
    if not args.skip_day:
        day = cell.run_cell(SCENARIO, args.out / "cell-1000")
        (args.out / "cell-1000" / "summary.json").write_text(json.dumps(day, indent=1))
        console.print(cell.summary_table(day))
        console.print(cell.gateway_line(day))
        t = day["totals"]
        console.print(f"messages: {t['stored']} stored, {t['delivered']} delivered once, "
                      f"{t['still_queued']} still queued, {t['lost']} lost, "
                      f"{t['duplicates']} duplicates; {t['enrolled']} of {day['devices']} "
                      f"devices enrolled; invariants {day['invariants']}")
        result["day"] = {k: v for k, v in day.items() if k != "per_device"}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.sweep.split(",") if x):
            s = cell.run_cell(sweep_file(n, args.sweep_hours, Path(tmp)), Path(tmp) / str(n))
            console.print(f"sweep: {n} devices, {args.sweep_hours:g} modeled h: "
                          f"wall {s['wall_s']:.0f} s, delivery "
                          f"{s['totals']['delivered']}/{s['totals']['stored']}")
            result["sweep"].append({k: v for k, v in s.items() if k != "per_device"})
    sweep_table(result["sweep"], console)
    (args.out / "cell_scale.json").write_text(json.dumps(result, indent=1))
    plot(result["sweep"], args.out / "cell_scale.png")
    console.print(f"wrote {args.out / 'cell_scale.png'}, {args.out / 'cell_scale.json'}")
    return 0


def sweep_table(runs: list[dict], console: Console) -> None:
    table = Table(title="Delivery against devices per SF (uplink frames at the "
                        "concentrator; messages after retries)")
    for col in ("devices", "SF", "on SF", "G/channel", "ALOHA e^-2G", "frame ok",
                "collided", "lost to gw TX", "message delivery", "gw downlink % of budget"):
        table.add_column(col, justify="right")
    for r in runs:
        for sf, s in r["by_sf"].items():
            o = s["frame_outcomes"]
            table.add_row(str(r["devices"]), str(sf), str(s["devices"]),
                          f"{s['offered_load_per_channel']:.4f}", f"{s['aloha_expected']:.3f}",
                          f"{s['frame_success']:.3f}", str(o.get("collision", 0)),
                          str(o.get("half_duplex", 0)),
                          "-" if s["delivery_ratio"] is None else f"{s['delivery_ratio']:.3f}",
                          f"{100 * r['gateway']['busiest_hour_share_of_budget']:.0f}")
    console.print(table)


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    colors = plt.cm.viridis([i / 5 for i in range(6)])
    for i, sf in enumerate(range(7, 13)):
        pts = sorted((r["by_sf"][sf]["devices"], r["by_sf"][sf]) for r in runs
                     if sf in r["by_sf"])
        if not pts:
            continue
        xs = [n for n, _ in pts]
        axes[0].plot(xs, [s["frame_success"] for _, s in pts], "o-", color=colors[i],
                     label=f"SF{sf} received")
        axes[0].plot(xs, [1 - s["frame_outcomes"].get("collision", 0) / s["frames_sent"]
                          for _, s in pts], "s:", color=colors[i], mfc="none",
                     label=f"SF{sf} not collided")
        axes[0].plot(xs, [math.exp(-2 * s["offered_load_per_channel"]) for _, s in pts], "--",
                     color=colors[i], alpha=0.7)
        axes[1].plot(xs, [s["delivery_ratio"] or 0 for _, s in pts], "o-", color=colors[i],
                     label=f"SF{sf}")
    axes[0].set_title("Uplink frames at the concentrator: received (solid), not lost to a "
                      "collision (dotted);\ndashed: pure ALOHA exp(-2G) at that SF's offered "
                      "load per channel.  The gap between\nsolid and dotted: frames lost "
                      "while the concentrator transmitted (half duplex)", fontsize="small")
    axes[1].set_title("Messages delivered (reliable: retried until acknowledged)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("devices on this spreading factor")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ratio")
    axes[0].legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
