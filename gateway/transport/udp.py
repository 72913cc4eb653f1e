"""`udp://HOST:PORT`: one Sealink frame per UDP datagram (devices on IP, the simulation)."""

from __future__ import annotations

import logging
import time

from sealink_gateway.transport import Address, DatagramTransportBase, Uplink

logger = logging.getLogger(__name__)

MAX_DATAGRAM = 1024
ADDRESSES = 65536  # source Address objects kept for reuse (the cache is cleared when full)


class UdpTransport(DatagramTransportBase):
    name = "udp"

    def __init__(self, host: str, port: int, mtu: int = 222):
        super().__init__(host, port)
        self.max_frame = mtu
        self._addresses: dict = {}

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) > min(MAX_DATAGRAM, self.max_frame):
            self._drop("oversized")
            logger.debug("udp: oversized datagram (%d bytes) from %s", len(data), addr)
            return
        source = self._addresses.get(addr)
        if source is None:
            if len(self._addresses) >= ADDRESSES:
                self._addresses.clear()
            source = self._addresses[addr] = Address(self.name, addr)
        self._pending.append(Uplink(bytes(data), source, time.time()))

    async def send(self, frame: bytes, to: Address, uplink: Uplink | None = None) -> None:
        if self._transport is not None:
            self._transport.sendto(frame, to.key)
