"""An attacker on the modeled LoRa air (Dolev-Yao, as far as a radio allows): it hears
every frame, uplink and downlink, and transmits whatever it likes, whenever it likes
(no duty cycle), at the rates a scenario sets:

- replay: a recorded frame sent again, in its own direction (uplinks to the gateway,
  downlinks, with inverted IQ, to the devices);
- forge: a DATA, RELIABLE or CONTROL frame with a live session id (they travel in
  clear) and a counter ahead of the one heard, with random ciphertext and tag;
- reject: a REJECT to a device for its live session id (reason 1 "unknown session"
  or 3 "revoked"), as downlink;
- squat: a handshake message 1 (XX or KK, random bytes) on a live session id;
- flood: first-contact XK (or XX) message 1 on random session ids.

Its frames are Sealink's (the LoRaWAN proprietary MHDR in front): anything else the
gateway would ignore unread.

It cannot do what no radio can: read ciphertext, or stop a frame that was sent (it can
collide with it, and its frames do take the air).  Every frame it sends goes through
the same model (time on air, collisions, the concentrator) as any other.
"""

from __future__ import annotations

import asyncio
import collections
import random
from dataclasses import dataclass, field

from sealink import wire
from sealink.lora import max_payload, unwrap, wrap
from sim.lora import LoRaAir, Params, Radio

KINDS = ("replay", "forge", "reject", "squat", "flood")
RX2_FREQ = 869_525_000  # EU868's RX2 channel


@dataclass
class AttackRates:
    """Frames per modeled hour, by kind (0: off)."""

    replay: float = 0.0
    forge: float = 0.0
    reject: float = 0.0
    squat: float = 0.0
    flood: float = 0.0


@dataclass
class _Heard:
    frame: bytes
    params: Params


@dataclass
class Attacker:
    air: LoRaAir
    rates: AttackRates
    seed: int
    channels: tuple[int, ...]
    position: tuple[float, float] = (50.0, 0.0)
    memory: int = 5000  # frames recorded (the most recent)
    tried: collections.Counter = field(default_factory=collections.Counter)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        # It listens on the uplink channels and on RX2's (869.525 MHz), downlinks too.
        self.radio = self.air.attach(Radio("attacker", self.position, Params(sf=7),
                                           any_sf=True,
                                           channels=(*self.channels, RX2_FREQ),
                                           rx_iq_inverted=None, regulated=False,
                                           on_receive=self._heard))
        self.recorded: collections.deque[_Heard] = collections.deque(maxlen=self.memory)
        self.live: dict[int, tuple[int, Params]] = {}  # sid -> (counter heard, uplink params)
        self._tasks: list[asyncio.Task] = []
        self._lock = asyncio.Lock()  # one transmitter

    @classmethod
    def started(cls, air: LoRaAir, spec, seed: int, channels: tuple[int, ...]) -> Attacker:
        """An attacker from a scenario's [attacker] table (sim.scenario.Attack), running."""
        attacker = cls(air, AttackRates(spec.replay, spec.forge, spec.reject, spec.squat,
                                        spec.flood), seed, channels, (spec.distance_m, 0.0))
        attacker.start()
        return attacker

    def _heard(self, frame: bytes, rssi: float, snr: float, crc_ok: bool, p: Params) -> None:
        if not crc_ok:
            return
        self.recorded.append(_Heard(frame, p))  # (replayed as heard, MHDR and all)
        frame = unwrap(frame)
        if frame is None:
            return
        try:
            kind, bits, sid, body = wire.parse(frame)
        except wire.FrameError:
            return
        if kind in (wire.KIND_DATA, wire.KIND_RELIABLE, wire.KIND_CONTROL) and not p.iq_inverted:
            self.live[sid] = (wire.truncated_counter(bits, body), p)

    def start(self) -> None:
        for kind in KINDS:
            rate = getattr(self.rates, kind)
            if rate > 0:
                self._tasks.append(asyncio.ensure_future(self._run(kind, rate)))

    def stop(self) -> None:
        for t in self._tasks:
            t.cancel()

    async def _run(self, kind: str, per_hour: float) -> None:
        rng = random.Random(f"{self.seed}:{kind}")
        while True:
            # Modeled time: the air's clock (compressed in a firmware fleet).
            await self.air.clock.sleep(rng.expovariate(per_hour / 3600))
            made = getattr(self, "_" + kind)(rng)
            if made is None:
                continue
            frame, params = made
            if kind != "replay":
                frame = wrap(frame)
            if not 0 < len(frame) <= max_payload(params.sf) + 1:
                continue
            async with self._lock:
                await self.air.transmit(self.radio, frame, params)
            self.tried[kind] += 1

    # --- what it sends -------------------------------------------------------------------

    def _live(self, rng: random.Random):
        if not self.live:
            return None
        sid = rng.choice(sorted(self.live))
        return sid, *self.live[sid]

    def _replay(self, rng: random.Random):
        if not self.recorded:
            return None
        heard = self.recorded[rng.randrange(len(self.recorded))]
        return heard.frame, heard.params

    def _forge(self, rng: random.Random):
        live = self._live(rng)
        if live is None:
            return None
        sid, counter, params = live
        kind = rng.choice((wire.KIND_DATA, wire.KIND_RELIABLE, wire.KIND_CONTROL))
        ahead = counter + rng.choice((1, 5, 1100, 4100, 9000, 20000))
        return (wire.data_header(kind, sid, ahead) + rng.randbytes(rng.randrange(17, 30)),
                params)

    def _reject(self, rng: random.Random):
        live = self._live(rng)
        if live is None:
            return None
        sid, _, p = live
        reason = rng.choice((wire.REJECT_UNKNOWN_SESSION, wire.REJECT_REVOKED))
        # Where the device may listen: its uplink channel (RX1), or RX2's.
        freq, sf = (p.freq, p.sf) if rng.random() < 0.5 else (RX2_FREQ, rng.choice((9, 12)))
        return (wire.header(wire.KIND_REJECT, reason, sid),
                Params(freq, sf, p.bw, p.cr, p.preamble, p.power, iq_inverted=True))

    def _squat(self, rng: random.Random):
        live = self._live(rng)
        if live is None:
            return None
        sid, _, params = live
        if rng.random() < 0.5:
            return wire.handshake_frame("XX", 0, sid, rng.randbytes(32)), params
        return wire.handshake_frame("KK", 0, sid, rng.randbytes(48)), params

    def _flood(self, rng: random.Random):
        sid = 0x8000 + rng.randrange(0x7FFF)
        params = Params(rng.choice(self.channels), rng.choice((7, 8, 9)))
        if rng.random() < 0.5:
            return wire.handshake_frame("XX", 0, sid, rng.randbytes(32)), params
        return wire.handshake_frame("XK", 0, sid, rng.randbytes(48)), params
