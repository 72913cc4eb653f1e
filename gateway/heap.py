"""The gateway process's cyclic garbage collector, kept off the long-lived sessions.

CPython's collector walks every object it tracks at each full (generation 2)
collection, and a gateway holds its sessions for hours.  At 10,000 sessions a full
collection took 40-220 ms and found nothing: `bench/gateway_scale.py --sizes 10000
--workers 1`, timed with gc.callbacks, counted eight in one run, 606 ms in all.  The
gateway makes no reference cycles in operation: `bench/gateway_path.py`'s run under
gc.DEBUG_SAVEALL left none.  Each of those pauses stalls the event loop, so every
acknowledgement waiting behind it.

So every FREEZE_S, whatever has lived that long is moved to the permanent generation
(gc.freeze()): collections then walk only what is newer.  Reference counting still frees
frozen objects when they are dropped; only a frozen object caught in a reference cycle
waits.  In case something does make cycles (a library, a rare path), every SWEEP_S
everything is unfrozen and collected once (one full pause, at 10,000 sessions about the
size of the ones above), then frozen again.

One per process, owned by `serve()`: the collector is the process's, not a Gateway
object's (tests and benchmarks run gateways inside processes that are not theirs).
"""

from __future__ import annotations

import asyncio
import gc
import logging

FREEZE_S = 1.0
SWEEP_S = 600.0

logger = logging.getLogger("sealink_gateway")


class HeapKeeper:
    def __init__(self, freeze_s: float = FREEZE_S, sweep_s: float = SWEEP_S):
        self.freeze_s = freeze_s
        self.sweep_s = sweep_s
        self._frozen_at: float | None = None
        self._swept_at: float | None = None
        self.sweeps = 0
        self.swept = 0  # objects the sweeps found unreachable (cycles)

    def tick(self, now: float) -> None:
        """Freeze or sweep, as due at `now` (seconds on any monotonic clock)."""
        if self._swept_at is None:
            self._swept_at = now
        elif now - self._swept_at >= self.sweep_s:
            self._swept_at = now
            gc.unfreeze()
            found = gc.collect()
            self.sweeps += 1
            self.swept += found
            logger.debug("gc sweep: %d unreachable objects collected", found)
            self._frozen_at = None  # freeze again now
        if self._frozen_at is None or now - self._frozen_at >= self.freeze_s:
            self._frozen_at = now
            gc.freeze()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.tick(loop.time())
            await asyncio.sleep(self.freeze_s)

    @staticmethod
    def release() -> None:
        """Hand everything back to the collector (the gateway is stopping)."""
        gc.unfreeze()
