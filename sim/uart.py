"""Byte streams that stand in for UART wires: an in-process pair, and a pseudo-terminal
whose other end any serial program (pyserial, the gateway's serial-at transport) opens
as a device path."""

from __future__ import annotations

import asyncio
import os
import tty


class Writer:
    """The write half: write() plus awaitable drain(), as asyncio streams have."""

    def __init__(self, sink):
        self._sink = sink
        self.closed = False

    def write(self, data: bytes) -> None:
        if not self.closed:
            self._sink(bytes(data))

    async def drain(self) -> None:
        await asyncio.sleep(0)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def pipe() -> tuple[tuple[asyncio.StreamReader, Writer], tuple[asyncio.StreamReader, Writer]]:
    """Two connected ends of a wire: what one writes, the other reads."""
    a, b = asyncio.StreamReader(), asyncio.StreamReader()
    return (a, Writer(b.feed_data)), (b, Writer(a.feed_data))


class Pty:
    """A pseudo-terminal in raw mode: `path` is the device a serial program opens; the
    model reads and writes through `reader` / `writer` on the controlling side."""

    def __init__(self):
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self.reader = asyncio.StreamReader()
        self.writer = Writer(self._write)
        asyncio.get_running_loop().add_reader(self._master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the other side closed: keep the pty, wait for a reopen
            return
        if data:
            self.reader.feed_data(data)

    def _write(self, data: bytes) -> None:
        while data:
            try:
                n = os.write(self._master, data)
            except BlockingIOError:
                return  # nobody reading and the buffer is full: a UART would drop too
            data = data[n:]

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self._master)
        self.writer.close()
        os.close(self._master)
        os.close(self._slave)
