"""Discrete-event time for the models: an asyncio event loop whose clock advances only
when every task waits.

The loop is looptime's (PyPI `looptime`): `loop.time()` is virtual; when no callback
is ready and no I/O is pending, the clock jumps to the next timer instead of sleeping.
Code under test needs no change as long as it reads time from the loop (asyncio's
timers, `loop.time()`): the models, the gateway (`Gateway._clock`) and the device stack
on CPython (`sealink.device.now_ms`) all do.

What must not run in such a loop: anything whose progress happens outside it, such as
firmware processes, kernel sockets between two parties of the model, or threads.  The
clock would jump ahead while they work.  Those runs use a wall-time loop (sim.fleet).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

import looptime

T = TypeVar("T")


class _ModelSelector(selectors.DefaultSelector):
    """looptime polls the selector without waiting on every turn of the loop.  In a
    model-only run the one file descriptor is the loop's own wake-up pipe (signals,
    call_soon_threadsafe), so most of those polls are skipped: one in POLL_EVERY goes
    to the kernel, and any poll that may wait always does.  (A loop with sockets or
    subprocesses registered is polled every time.)"""

    POLL_EVERY = 64

    def __init__(self):
        super().__init__()
        self._skipped = 0

    def select(self, timeout=None):
        if timeout is not None and timeout <= 0 and len(self.get_map()) <= 1:
            self._skipped += 1
            if self._skipped < self.POLL_EVERY:
                return []
            self._skipped = 0
        return super().select(timeout)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A loop whose clock starts at 0 and moves only from timer to timer.  One idle turn
    (no ready callback, no I/O) before each jump: nothing in the model arrives from
    outside the loop, so a longer grace would only cost time."""
    loop = asyncio.SelectorEventLoop(_ModelSelector())
    return looptime.patch_event_loop(loop, start=0.0, noop_cycles=1)


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run() in discrete-event time."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
