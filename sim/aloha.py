"""The collision model against theory: pure ALOHA.

With capture off, one spreading factor and one channel, a frame survives only if no
other frame starts within one frame time before or after it.  For Poisson arrivals at
G frames per frame time, the chance is exp(-2G) (Abramson, 1970).  `measure()` puts
Poisson traffic from many transmitters on the modeled air (sim.lora.LoRaAir, the model
every other simulation uses) in discrete-event time and counts what the receiver gets.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass

from sim import vtime
from sim.lora import Clock, LoRaAir, Params, Radio

FRAME_BYTES = 20  # SF7: 56.576 ms on air


@dataclass
class AlohaPoint:
    offered_load: float  # G, frames per frame time (what was actually sent)
    frames: int
    received: int

    @property
    def delivery(self) -> float:
        return self.received / self.frames

    @property
    def theory(self) -> float:
        return math.exp(-2 * self.offered_load)

    @property
    def sigma(self) -> float:
        """Binomial standard error of `delivery` (frames are nearly independent)."""
        p = self.theory
        return math.sqrt(p * (1 - p) / self.frames)


async def _measure(g: float, frames: int, seed: int, transmitters: int,
                   capture_db: float | None, sf: int) -> AlohaPoint:
    rng = random.Random(seed)
    air = LoRaAir(Clock(), capture_db=capture_db)
    params = Params(sf=sf)
    toa = params.time_on_air_s(FRAME_BYTES)
    got = []
    air.attach(Radio("rx", (0.0, 0.0), params, on_receive=lambda f, *a: got.append(f)))
    # Transmitters on a ring (equal strength), exempt from the duty cycle: the theory
    # assumes each frame is sent when it arises.
    radios = [air.attach(Radio(f"t{i}", (100 * math.cos(i), 100 * math.sin(i)), params,
                               regulated=False)) for i in range(transmitters)]
    rate = g / toa  # frames per second, all transmitters together
    tasks = []
    t = 0.0
    for n in range(frames):
        t += rng.expovariate(rate)
        await asyncio.sleep(t - air.clock.now())
        # Each frame from a transmitter that is idle (a busy one cannot start another).
        radio = rng.choice(radios)
        while radio._tx_until > air.clock.now():
            radio = rng.choice(radios)
        tasks.append(asyncio.ensure_future(air.transmit(radio, n.to_bytes(4, "big")
                                                        + bytes(FRAME_BYTES - 4))))
    await asyncio.gather(*tasks)
    sent_g = len(tasks) * toa / air.clock.now() if air.clock.now() else 0.0
    return AlohaPoint(round(sent_g, 5), len(tasks), len(got))


def measure(g: float, frames: int = 4000, seed: int = 1, transmitters: int = 200,
            capture_db: float | None = None, sf: int = 7) -> AlohaPoint:
    """Delivery ratio at offered load `g` on the modeled air (capture off by default)."""
    return vtime.run(_measure(g, frames, seed, transmitters, capture_db, sf))
