"""The modeled air's collision model against pure ALOHA theory, exp(-2G).

    .venv/bin/python bench/aloha.py [--frames 4000] [--out build/bench]

One SF (SF7, 20-byte frames, 56.6 ms), one channel, Poisson arrivals from 200
transmitters, offered load G from 0.05 to 1 frame per frame time.  Three models:
capture off (must follow exp(-2G)); capture on with every transmitter at the same
distance (a 6 dB margin never happens: still exp(-2G)); capture on with transmitters
spread over distance (the stronger frame of a collision survives: above the curve).
Prints a table and writes aloha.png and aloha.json.  Runs in discrete-event time:
the figures are the same on any host.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "lib")]

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from sim import aloha  # noqa: E402

LOADS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def spread_capture(g: float, frames: int, seed: int) -> aloha.AlohaPoint:
    """Capture on, transmitters from 100 m to 3 km: signal strengths differ."""
    import asyncio
    import random

    from sim import vtime
    from sim.lora import Clock, LoRaAir, Params, Radio

    async def run() -> aloha.AlohaPoint:
        rng = random.Random(seed)
        air = LoRaAir(Clock(), capture_db=6.0)
        params = Params(sf=7)
        toa = params.time_on_air_s(aloha.FRAME_BYTES)
        got = []
        air.attach(Radio("rx", (0.0, 0.0), params, on_receive=lambda f, *a: got.append(f)))
        radios = []
        for i in range(200):
            d = math.sqrt(rng.uniform(100 ** 2, 3000 ** 2))
            radios.append(air.attach(Radio(f"t{i}", (d * math.cos(i), d * math.sin(i)),
                                           params, regulated=False)))
        tasks, t = [], 0.0
        for n in range(frames):
            t += rng.expovariate(g / toa)
            await asyncio.sleep(t - air.clock.now())
            radio = rng.choice(radios)
            while radio._tx_until > air.clock.now():
                radio = rng.choice(radios)
            tasks.append(asyncio.ensure_future(air.transmit(
                radio, n.to_bytes(4, "big") + bytes(aloha.FRAME_BYTES - 4))))
        await asyncio.gather(*tasks)
        return aloha.AlohaPoint(round(len(tasks) * toa / air.clock.now(), 5), len(tasks),
                                len(got))

    return vtime.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, g in enumerate(LOADS):
        off = aloha.measure(g, args.frames, args.seed + i)
        same = aloha.measure(g, args.frames, args.seed + i, capture_db=6.0)
        spread = spread_capture(g, args.frames, args.seed + i)
        rows.append({"G": g, "G_sent": off.offered_load, "frames": off.frames,
                     "theory": round(off.theory, 4), "capture_off": round(off.delivery, 4),
                     "sigma": round(off.sigma, 4),
                     "z": round((off.delivery - off.theory) / off.sigma, 2),
                     "capture_equal_distance": round(same.delivery, 4),
                     "capture_spread_distance": round(spread.delivery, 4)})
    table = Table(title=f"Pure ALOHA check of the modeled air: SF7, one channel, "
                        f"{args.frames} frames per point, seed {args.seed}")
    for col in ("G", "exp(-2G)", "capture off", "(off - theory)/sigma",
                "capture, equal distance", "capture, 0.1-3 km"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(f"{r['G_sent']:.3f}", f"{r['theory']:.4f}", f"{r['capture_off']:.4f}",
                      f"{r['z']:+.2f}", f"{r['capture_equal_distance']:.4f}",
                      f"{r['capture_spread_distance']:.4f}")
    console = Console(width=150)
    console.print(table)
    worst = max(abs(r["z"]) for r in rows)
    console.print(f"capture off: largest deviation from exp(-2G) is {worst:.2f} standard "
                  "errors")
    (args.out / "aloha.json").write_text(json.dumps(rows, indent=1))
    plot(rows, args.out / "aloha.png")
    console.print(f"wrote {args.out / 'aloha.png'}, {args.out / 'aloha.json'}")
    return 0


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    gs = [i / 100 for i in range(1, 121)]
    ax.plot(gs, [math.exp(-2 * g) for g in gs], "k-", label="pure ALOHA, exp(-2G)")
    ax.plot(gs, [math.exp(-g) for g in gs], "k:", label="slotted ALOHA, exp(-G)")
    ax.errorbar([r["G_sent"] for r in rows], [r["capture_off"] for r in rows],
                yerr=[2 * r["sigma"] for r in rows], fmt="o", color="tab:blue",
                label="model, capture off (±2σ)")
    ax.plot([r["G_sent"] for r in rows], [r["capture_equal_distance"] for r in rows], "x",
            color="tab:orange", label="model, 6 dB capture, equal distance")
    ax.plot([r["G_sent"] for r in rows], [r["capture_spread_distance"] for r in rows], "s",
            color="tab:green", mfc="none", label="model, 6 dB capture, 0.1-3 km")
    ax.set_xlabel("offered load G (frames per frame time)")
    ax.set_ylabel("delivery ratio")
    ax.set_title("Modeled LoRa air vs ALOHA (SF7, one channel, Poisson)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
