"""A LoRa cell at fleet scale, in discrete-event time.

    .venv/bin/python -m sim.cell sim/scenarios/cell-1000.toml [--seed N] [--out DIR]

N devices run the real device stack in this process (`sealink.device.Device` over
`sealink.session.Channel`, the code the firmware freezes) against the modeled air
(sim.lora), a modeled concentrator speaking Semtech UDP, and the real gateway
(`semtech-udp://` transport, SQLite store).  Everything runs on one event loop whose
clock is virtual (sim.vtime): a modeled day takes minutes, and the same seed gives the
same figures, bit for bit, on any host.

Each device powers up at a random moment within `join_spread_s`, enrolls (Noise XK with
its one-time token), then stores a reading every `interval_s` (random phase, +-10 %
jitter) with `Device.send()`, which forwards it reliably: the gateway acknowledges each
uplink in the device's receive window.  Devices sit at a distance where their
spreading factor closes the link with `link_margin_db` to spare (as ADR would choose);
each keeps one of the cell's channels.

The summary reports, per spreading factor: delivery ratio (messages committed by the
gateway / messages the application stored), frames and their fate at the concentrator
(received, collided, lost to its half duplex), duty-cycle waits, handshake and rekey
cost; and the concentrator's downlink airtime against its own 1 % budget.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sealink import crypto
from sealink.device import Device, DeviceError, Keystore
from sealink.lora import max_payload, unwrap, wrap
from sealink_gateway.authority import Authority
from sealink_gateway.service import Gateway, HandshakeLimiter
from sealink_gateway.store import Store
from sealink_gateway.transport.semtech_udp import SemtechUdpTransport
from sim import scenario, vtime
from sim.attacker import Attacker
from sim.concentrator import Concentrator, busiest_window_s
from sim.datagram import MemoryDatagramLink
from sim.lora import DUTY_CYCLE, SNR_FLOOR, Clock, LoRaAir, Params, Radio

ROOT = Path(__file__).resolve().parent.parent
SFS = (7, 8, 9, 10, 11, 12)
KINDS = {1: "handshake", 2: "data", 3: "control", 4: "fragment", 5: "reject", 6: "reliable"}


class AirRadio:
    """A Sealink radio driver over the modeled air, as a class A device's LoRa modem:
    send() holds a frame for the EU868 duty cycle (like a RAK3172 in P2P mode), puts it
    on the air, and returns after its receive windows: RX1 rx1_delay_s after the frame
    on its channel, and RX2 a second later on `rx2` (frequency, SF), each open for the
    preamble of a frame (8 symbols) and, when one starts, until it ends.  Outside them
    the radio hears nothing.  recv() returns the downlinks heard (inverted IQ), good CRC,
    Sealink's only."""

    def __init__(self, air: LoRaAir, radio: Radio, rx1_delay_s: float = 1.0,
                 rx2: tuple[int, int] | None = (869_525_000, 12)):
        self.air, self.radio = air, radio
        self.mtu = max_payload(radio.params.sf)
        self.rx1_delay_s, self.rx2 = rx1_delay_s, rx2
        self._heard: collections.deque = collections.deque()
        self._event = asyncio.Event()
        self._lock = asyncio.Lock()  # one frame on the air at a time
        self.phase = lambda: "?"  # what the device was doing (set by the cell)
        self.stats = collections.Counter()
        radio.rx_iq_inverted = True
        radio.listening = False  # class A: only in its receive windows
        radio.on_receive = self._on_receive

    def _on_receive(self, frame, rssi, snr, crc_ok, params) -> None:
        if not crc_ok:
            self.stats["crc_dropped"] += 1
            return
        frame = unwrap(frame)
        if frame is None:
            self.stats["foreign"] += 1
            return
        self.stats[f"heard_{self._window}"] += 1
        self._heard.append((frame, rssi, snr))
        self._event.set()

    _window = "rx1"

    async def send(self, frame: bytes) -> None:
        async with self._lock:
            phase = self.phase()
            before = self.radio.airtime_s
            await self.air.transmit(self.radio, wrap(frame))
            self.stats[f"frames_{phase}"] += 1
            self.stats[f"airtime_{phase}"] += self.radio.airtime_s - before
            # (Still holding the lock: a class A device does not transmit in its own
            # receive windows.)
            await self._receive_windows()

    async def _receive_windows(self) -> None:
        clock = self.air.clock
        sent_at = clock.now()
        await clock.sleep(self.rx1_delay_s)
        self._window = "rx1"
        await self.air.receive_window(self.radio)
        if self.rx2 is None:
            return
        rx2_at = sent_at + self.rx1_delay_s + 1.0
        if clock.now() > rx2_at:
            return  # an RX1 frame ran past RX2's opening
        await clock.sleep(rx2_at - clock.now())
        uplink = self.radio.params
        self.radio.params = Params(freq=self.rx2[0], sf=self.rx2[1], bw=uplink.bw,
                                   power=uplink.power)
        self._window = "rx2"
        try:
            await self.air.receive_window(self.radio)
        finally:
            self.radio.params = uplink

    async def recv(self):
        while not self._heard:
            self._event.clear()
            await self._event.wait()
        return self._heard.popleft()


@dataclass
class CellDevice:
    name: str
    sf: int
    freq: int
    distance: float
    start_s: float
    phase_s: float
    first_contact_sid: int
    radio: Radio
    driver: AirRadio
    token: str = ""
    device: Device | None = None
    device_id: str | None = None
    stored: list[bytes] = field(default_factory=list)  # accepted by Device.send()
    enrolled_at: float | None = None
    first_contact_frames: int = 0
    first_contact_airtime_s: float = 0.0
    connect_attempts: int = 0
    connecting: bool = False


def sf_ranges(air: LoRaAir, power_dbm: int, margin_db: float) -> dict[int, float]:
    """The farthest distance (m) at which each SF closes the link with `margin_db`."""
    out = {}
    for sf in SFS:
        budget = power_dbm - (air.noise_floor(125) + SNR_FLOOR[sf]) - margin_db
        out[sf] = air.ref_m * 10 ** ((budget - air.ref_loss) / (10 * air.exponent))
    return out


def allocate(shares: dict[int, float], n: int) -> list[int]:
    """n spreading factors in proportion to `shares` (largest remainder)."""
    total = sum(shares.values())
    exact = {sf: n * s / total for sf, s in shares.items()}
    counts = {sf: int(v) for sf, v in exact.items()}
    for sf in sorted(exact, key=lambda s: (counts[s] - exact[s], s))[:n - sum(counts.values())]:
        counts[sf] += 1
    return [sf for sf in sorted(counts) for _ in range(counts[sf])]


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("sealink", "cryptography", "looptime", "pydantic"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    out["crypto_backend"] = crypto.BACKEND
    return out


class Cell:
    def __init__(self, spec: scenario.CellFile, out: Path, name: str,
                 progress: Callable[[float, dict], None] | None = None):
        self.spec, self.out, self.name = spec, out, name
        self.progress = progress  # called each modeled 10 minutes: (seconds, totals)
        self.cell = spec.cell
        self.seed = spec.scenario.seed
        self.rng = random.Random(self.seed)
        a = spec.air
        self.clock = Clock()
        self.air = LoRaAir(self.clock, loss=a.loss, corrupt=a.corrupt,
                           path_loss_exponent=a.path_loss_exponent,
                           reference_loss_db=a.reference_loss_db, reference_m=a.reference_m,
                           capture_db=a.capture_db, critical_section=a.critical_section,
                           seed=self.rng.getrandbits(64))
        self.air.on_outcome = self._outcome
        self.outcomes: collections.Counter = collections.Counter()  # (sf, outcome)
        self.devices: list[CellDevice] = []
        self.delivered: dict[str, list[bytes]] = {}

    def _outcome(self, sender: Radio, rx: Radio, params: Params, outcome: str) -> None:
        if rx is self.gateway_radio and sender.name.startswith("d"):  # devices only
            self.outcomes[(params.sf, outcome)] += 1

    # --- set-up ----------------------------------------------------------------------------

    def _place(self) -> None:
        c = self.cell
        ranges = sf_ranges(self.air, 14, self.spec.air.link_margin_db)
        sfs = allocate({int(k): v for k, v in c.sf_mix.items() if v}, c.devices)
        self.rng.shuffle(sfs)
        sids = self.rng.sample(range(0x8000, 0xFFFF), c.devices)
        for i, sf in enumerate(sfs):
            inner = ranges[sf - 1] if sf > 7 else 20.0
            # Uniform over the annulus where this SF is the lowest that reaches.
            d = math.sqrt(self.rng.uniform(inner ** 2, ranges[sf] ** 2))
            angle = self.rng.uniform(0, 2 * math.pi)
            freq = c.channels[i % len(c.channels)]
            radio = self.air.attach(Radio(f"d{i + 1:04d}", (d * math.cos(angle),
                                                            d * math.sin(angle)),
                                          Params(freq=freq, sf=sf)))
            self.devices.append(CellDevice(
                radio.name, sf, freq, round(d, 1), self.rng.uniform(0, c.join_spread_s),
                self.rng.uniform(0, c.interval_s), sids[i], radio,
                AirRadio(self.air, radio, c.rx1_delay_s)))

    async def _start_gateway(self) -> None:
        c = self.cell
        (self.out / "keys").mkdir(parents=True, exist_ok=True)
        for stale in ("gateway.db", "gateway.db-wal", "gateway.db-shm", "authority.pem"):
            (self.out / stale).unlink(missing_ok=True)
        self.store = Store(self.out / "gateway.db")
        # One SQLite transaction per batch is the gateway's design; here fsync per commit
        # would only measure the disk (the file is real, its durability not under test).
        self.store.db.execute("PRAGMA synchronous=OFF")
        self.transport = SemtechUdpTransport("127.0.0.1", 0, rx1_delay_s=c.rx1_delay_s)
        self.link = MemoryDatagramLink(self.transport)
        # Every device of the cell is behind one concentrator: the per-source handshake
        # limit is sized for the cell (see docs/simulation.md).
        self.gateway = Gateway(self.store, crypto.random_bytes(32),
                               Authority.load_or_create(self.out / "authority.pem"),
                               [self.transport], HandshakeLimiter(rate=200, per_s=10.0),
                               retry_ms=c.gateway_retry_ms, poll_s=1.0)
        await self.gateway.start()
        self.gateway_radio = self.air.attach(Radio("concentrator", (0.0, 0.0), Params(sf=7)))
        self.gateway_radio.channels = tuple(c.channels)
        self.concentrator = Concentrator(self.air, self.gateway_radio,
                                         endpoint=self.link.gateway_end)
        self.link.connect(self.concentrator)
        await self.concentrator.start()
        self.attacker = None
        if self.spec.attacker is not None:
            self.attacker = Attacker.started(self.air, self.spec.attacker,
                                             self.rng.getrandbits(64), tuple(c.channels))
        for d in self.devices:
            d.token, _ = self.store.create_token({"name": d.name, "sf": str(d.sf)}, 30 * 86400)

    # --- devices ---------------------------------------------------------------------------

    async def _run_device(self, d: CellDevice) -> None:
        c = self.cell
        await asyncio.sleep(d.start_s)
        device = Device(d.driver, Keystore(), {
            "token": d.token.encode(), "gateway_key": self.gateway.public_key,
            "retry_ms": c.retry_ms, "max_retries": c.max_retries,
            "first_contact_sid": d.first_contact_sid, "outbox": 64})
        d.device = device
        d.driver.phase = lambda: ("handshake" if d.connecting or device._reconnecting
                                  or device.channel is None
                                  or device.channel.state != "established" else "session")
        backoff = c.retry_ms / 1000
        rng = random.Random(f"{self.seed}:{d.name}")
        while True:  # first contact: try until enrolled (a device never gives up)
            d.connect_attempts += 1
            frames, airtime = d.radio.frames_sent, d.radio.airtime_s
            d.connecting = True
            try:
                await device.connect(timeout_ms=3_600_000)
            except DeviceError:
                d.connecting = False
                await asyncio.sleep(backoff * (1 + rng.random()))
                backoff = min(backoff * 2, 3600)
                continue
            d.connecting = False
            d.first_contact_frames += d.radio.frames_sent - frames
            d.first_contact_airtime_s += d.radio.airtime_s - airtime
            d.enrolled_at = self.clock.now()
            break
        await asyncio.sleep(d.phase_s)
        seq = 0
        while True:
            seq += 1
            payload = f"{d.name}:{seq}:".encode().ljust(c.payload_bytes, b".")
            d.stored.append(payload)
            await device.send(payload)
            await asyncio.sleep(c.interval_s * rng.uniform(0.9, 1.1))

    # --- the run ---------------------------------------------------------------------------

    async def run(self) -> dict:
        wall0 = time.perf_counter()
        self._place()
        await self._start_gateway()
        self.clock.now()  # modeled time starts now
        tasks = [asyncio.ensure_future(self._run_device(d)) for d in self.devices]
        try:
            end = self.cell.duration_s
            while self.clock.now() < end:
                await asyncio.sleep(min(600.0, end - self.clock.now()))
                if self.progress is not None:
                    self.progress(self.clock.now(), {
                        "enrolled": sum(d.enrolled_at is not None for d in self.devices),
                        "stored": sum(len(d.stored) for d in self.devices),
                        "uplinks": self.gateway.counters["uplinks"]})
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for d in self.devices:
                if d.device is not None:
                    d.device.close()
            modeled = self.clock.now()
            if self.attacker is not None:
                self.attacker.stop()
            self.concentrator.stop()
            await self.gateway.stop()
        summary = self._summary(modeled)
        self.store.close()
        self.air.close()
        summary["wall_s"] = round(time.perf_counter() - wall0, 2)
        return summary

    # --- figures ---------------------------------------------------------------------------

    def _summary(self, modeled: float) -> dict:
        c = self.cell
        ids = {dev.attributes.get("name"): dev.id for dev in self.store.devices()}
        per_device = []
        for d in self.devices:
            d.device_id = ids.get(d.name)
            rows = self.store.uplinks(d.device_id, limit=10**7) if d.device_id else []
            delivered = [r["payload"] for r in rows]
            self.delivered[d.name] = delivered
            dev = d.device
            queued = [p for _, p in dev._outbox] if dev else []
            ch = dev.channel if dev else None
            per_device.append({
                "name": d.name, "sf": d.sf, "freq": d.freq, "distance_m": d.distance,
                "stored": len(d.stored), "delivered": len(delivered),
                "duplicates": len(delivered) - len(set(delivered)),
                "unknown_delivered": len(set(delivered) - set(d.stored)),
                # Still in the outbox: not committed yet, or committed with the ack on its
                # way (counted apart, so stored = delivered + still queued).
                "still_queued": len(set(queued) - set(delivered)),
                "committed_awaiting_ack": len(set(queued) & set(delivered)),
                "lost": len(set(d.stored) - set(delivered) - set(queued)),
                "enrolled_at_s": None if d.enrolled_at is None else round(d.enrolled_at, 3),
                "first_contact_frames": d.first_contact_frames,
                "first_contact_airtime_s": round(d.first_contact_airtime_s, 4),
                "connect_attempts": d.connect_attempts,
                "handshakes": dev.stats["handshakes"] if dev else 0,
                "key_epochs": (ch._send_keys.epoch if ch is not None
                               and ch.state == "established" else None),
                "frames_sent": d.radio.frames_sent,
                "airtime_s": round(d.radio.airtime_s, 4),
                "busiest_hour_airtime_s": round(busiest_window_s(d.radio.airtime_log, 3600), 4),
                "duty_cycle_wait_s": round(d.radio.duty_wait_s, 3),
                "handshake_frames": d.driver.stats["frames_handshake"],
                "handshake_airtime_s": round(d.driver.stats["airtime_handshake"], 4),
                "device_stats": dict(dev.stats) if dev else {},
            })
        by_sf = {}
        for sf in SFS:
            ds = [p for p in per_device if p["sf"] == sf]
            if not ds:
                continue
            stored = sum(p["stored"] for p in ds)
            delivered = sum(p["delivered"] - p["duplicates"] for p in ds)
            frames = sum(p["frames_sent"] for p in ds)
            heard = {o: n for (s, o), n in self.outcomes.items() if s == sf}
            toa = Params(sf=sf).time_on_air_s(c.payload_bytes + scenario.RELIABLE_OVERHEAD)
            per_channel = len(ds) / len(c.channels)
            offered = per_channel * (frames / len(ds)) * toa / modeled
            by_sf[sf] = {
                "devices": len(ds), "stored": stored, "delivered": delivered,
                "delivery_ratio": round(delivered / stored, 4) if stored else None,
                "frames_sent": frames,
                "frames_received": heard.get("ok", 0),
                "frame_outcomes": dict(sorted(heard.items())),
                "frame_success": round(heard.get("ok", 0) / frames, 4) if frames else None,
                "offered_load_per_channel": round(offered, 5),
                "aloha_expected": round(math.exp(-2 * offered), 4),
                "duty_cycle_wait_s_mean": round(sum(p["duty_cycle_wait_s"] for p in ds)
                                                / len(ds), 2),
                "handshake_frames_mean": round(sum(p["handshake_frames"] for p in ds)
                                               / len(ds), 2),
                "handshake_airtime_s_mean": round(sum(p["handshake_airtime_s"] for p in ds)
                                                  / len(ds), 3),
                "first_contact_frames_mean": round(sum(p["first_contact_frames"] for p in ds)
                                                   / len(ds), 2),
                "handshakes_mean": round(sum(p["handshakes"] for p in ds) / len(ds), 3),
                "key_epochs_mean": round(sum(p["key_epochs"] or 0 for p in ds) / len(ds), 2),
                "enrolled": sum(p["enrolled_at_s"] is not None for p in ds),
            }
        g = self.gateway_radio
        busiest = busiest_window_s(g.airtime_log, 3600)
        hours = max(modeled / 3600, 1e-9)
        summary = {
            "scenario": self.name, "kind": "cell", "seed": self.seed,
            "versions": versions(),
            "modeled_s": round(modeled, 3),
            "devices": c.devices, "interval_s": c.interval_s, "payload_bytes": c.payload_bytes,
            "air": {"capture_db": self.spec.air.capture_db,
                    "critical_section": self.spec.air.critical_section,
                    "frames": self.air.frames, "lost": dict(sorted(self.air.lost.items()))},
            "by_sf": by_sf,
            "totals": {
                "stored": sum(p["stored"] for p in per_device),
                "delivered": sum(p["delivered"] - p["duplicates"] for p in per_device),
                "still_queued": sum(p["still_queued"] for p in per_device),
                "committed_awaiting_ack": sum(p["committed_awaiting_ack"] for p in per_device),
                "lost": sum(p["lost"] for p in per_device),
                "duplicates": sum(p["duplicates"] for p in per_device),
                "unknown_delivered": sum(p["unknown_delivered"] for p in per_device),
                "enrolled": sum(p["enrolled_at_s"] is not None for p in per_device),
            },
            "gateway": {
                "downlink_frames": g.frames_sent, "downlink_airtime_s": round(g.airtime_s, 3),
                "downlink_airtime_per_hour_s": round(g.airtime_s / hours, 3),
                "busiest_hour_airtime_s": round(busiest, 3),
                "duty_cycle_budget_per_hour_s": 3600 * DUTY_CYCLE,
                "busiest_hour_share_of_budget": round(busiest / (3600 * DUTY_CYCLE), 4),
                "tx_errors": dict(sorted(self.concentrator.tx_errors.items())),
                "tx_kinds": dict(sorted(self.concentrator.tx_kinds.items())),
                "drops": dict(sorted(self.gateway.drops.items())),
                "transport_drops": dict(sorted(self.transport.drops.items())),
                "transport_tx_errors": dict(sorted(self.transport.tx_errors.items())),
                "counters": dict(sorted(self.gateway.counters.items())),
            },
            "attacker": (None if self.attacker is None else {
                "tried": dict(sorted(self.attacker.tried.items())),
                "frames_recorded": len(self.attacker.recorded),
                "live_sids_seen": len(self.attacker.live)}),
            "per_device": per_device,
        }
        summary["invariants"] = invariants(summary, self)
        return summary


def invariants(summary: dict, cell: Cell | None = None) -> dict[str, bool]:
    """What must hold whatever the air did: each message the application stored is
    delivered exactly once or still queued on its device; nothing is delivered that
    was not stored; no device transmits before its duty-cycle wait is over (after a
    frame of T s its sub-band stays off for 99 T: the Ton/Toff rule LoRaWAN stacks
    use for ETSI's 1 %)."""
    per = summary["per_device"]
    out = {
        "delivered_exactly_once_or_queued": all(p["duplicates"] == 0 and p["lost"] == 0
                                                for p in per),
        "nothing_delivered_that_was_not_sent": all(p["unknown_delivered"] == 0 for p in per),
    }
    if cell is not None:
        ok = True
        for d in cell.devices:
            log = d.radio.airtime_log
            ok &= all(b[0] + 1e-9 >= a[0] + a[1] / DUTY_CYCLE
                      for a, b in zip(log, log[1:], strict=False))
        out["no_device_over_its_duty_cycle"] = ok
    return out


def summary_table(summary: dict):
    from rich.table import Table

    t = Table(title=f"Cell '{summary['scenario']}': {summary['devices']} devices, "
                    f"{summary['modeled_s'] / 3600:.1f} modeled h, seed {summary['seed']} "
                    f"(wall {summary.get('wall_s', 0):.0f} s)")
    cols = ("SF", "devices", "stored", "delivered", "delivery", "frames", "frame ok",
            "collided", "gw half-duplex", "G/channel", "ALOHA e^-2G", "duty wait s",
            "hs frames", "hs airtime s", "handshakes", "key epochs")
    for col in cols:
        t.add_column(col, justify="right")
    for sf, s in summary["by_sf"].items():
        o = s["frame_outcomes"]
        t.add_row(str(sf), str(s["devices"]), str(s["stored"]), str(s["delivered"]),
                  "-" if s["delivery_ratio"] is None else f"{s['delivery_ratio']:.3f}",
                  str(s["frames_sent"]),
                  f"{s['frame_success']:.3f}", str(o.get("collision", 0)),
                  str(o.get("half_duplex", 0)), f"{s['offered_load_per_channel']:.4f}",
                  f"{s['aloha_expected']:.3f}", f"{s['duty_cycle_wait_s_mean']:.1f}",
                  f"{s['handshake_frames_mean']:.1f}", f"{s['handshake_airtime_s_mean']:.2f}",
                  f"{s['handshakes_mean']:.2f}", f"{s['key_epochs_mean']:.1f}")
    return t


def gateway_line(summary: dict) -> str:
    g = summary["gateway"]
    return (f"gateway downlinks: {g['downlink_frames']} frames, {g['downlink_airtime_s']:.1f} s "
            f"on air; busiest hour {g['busiest_hour_airtime_s']:.1f} s = "
            f"{100 * g['busiest_hour_share_of_budget']:.0f} % of its 1 % budget "
            f"({g['duty_cycle_budget_per_hour_s']:.0f} s/h; accounted, not held); "
            f"forwarder refusals {g['tx_errors'] or 'none'}")


def run_cell(path: Path, out: Path, seed: int | None = None,
             progress: Callable[[float, dict], None] | None = None) -> dict:
    spec = scenario.load(path, scenario.CellFile)
    if seed is not None:
        spec.scenario.seed = seed
    out.mkdir(parents=True, exist_ok=True)
    name = spec.scenario.name or path.stem
    return vtime.run(Cell(spec, out, name, progress).run())


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    parser = argparse.ArgumentParser(description="Run a modeled LoRa cell in virtual time.")
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=None, help="overrides the file's seed")
    args = parser.parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=170)
    out = args.out or ROOT / "build" / "cell" / args.scenario.stem
    try:
        spec = scenario.load(args.scenario, scenario.CellFile)
    except scenario.ScenarioError as e:
        console.print(f"[red]{e}[/red]")
        return 2
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("modeled {task.completed:.0f} / {task.total:.0f} s"),
                  BarColumn(), TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("cell", total=spec.cell.duration_s, status="")

        def progress(now: float, totals: dict) -> None:
            bar.update(task, completed=now, status=(
                f"{totals['enrolled']} enrolled, {totals['uplinks']}/{totals['stored']} "
                "messages committed"))

        summary = run_cell(args.scenario, out, args.seed, progress)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    console.print(summary_table(summary))
    console.print(gateway_line(summary))
    tot = summary["totals"]
    console.print(f"messages: {tot['stored']} stored, {tot['delivered']} delivered once, "
                  f"{tot['still_queued']} still queued, {tot['lost']} lost, "
                  f"{tot['duplicates']} duplicates; invariants: {summary['invariants']}")
    console.print(f"wrote {out / 'summary.json'}")
    return 0 if all(summary["invariants"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
