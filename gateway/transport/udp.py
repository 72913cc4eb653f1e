"""`udp://HOST:PORT`: one Sealink frame per UDP datagram (devices on IP, the simulation)."""

from __future__ import annotations

import asyncio
import logging
import time

from sealink_gateway.transport import Address, FrameHandler, Uplink

logger = logging.getLogger(__name__)

MAX_DATAGRAM = 1024


class UdpTransport(asyncio.DatagramProtocol):
    name = "udp"

    def __init__(self, host: str, port: int, mtu: int = 222):
        self.host = host
        self.port = port
        self.max_frame = mtu
        self.drops: dict[str, int] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._handler: FrameHandler | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self, handler: FrameHandler) -> None:
        self._handler = handler
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.host, self.port))
        self.port = self._transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) > min(MAX_DATAGRAM, self.max_frame):
            self.drops["oversized"] = self.drops.get("oversized", 0) + 1
            logger.debug("udp: oversized datagram (%d bytes) from %s", len(data), addr)
            return
        up = Uplink(frame=bytes(data), source=Address(self.name, addr), received_at=time.time())
        task = asyncio.ensure_future(self._handler(up))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def send(self, frame: bytes, to: Address, uplink: Uplink | None = None) -> None:
        if self._transport is not None:
            self._transport.sendto(frame, to.key)

    async def stop(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()
            self._transport = None
