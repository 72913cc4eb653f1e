"""A datagram path through the event loop, for discrete-event runs.

The modeled concentrator and the gateway's `semtech-udp://` transport exchange the
real Semtech UDP datagrams (the same bytes, parsed by the same code), but not through
kernel sockets: a datagram waiting in a kernel buffer is invisible to a loop that
advances its clock when every task waits, so the clock could jump past its arrival.
Here each datagram is handed over on the next turn of the loop, in order, never lost.
Runs in wall time (sim.fleet) use loopback UDP instead.
"""

from __future__ import annotations

import asyncio

from sealink_gateway.transport import DatagramTransportBase

FORWARDER_ADDR = ("127.0.0.2", 41700)  # how the gateway sees the modeled forwarder
GATEWAY_ADDR = ("127.0.0.1", 1700)


class _ToGateway:
    def __init__(self, transport: DatagramTransportBase):
        self._transport = transport
        self.datagrams = 0

    def sendto(self, data: bytes, addr=None) -> None:
        if self._transport is None:
            return  # closed
        self.datagrams += 1
        asyncio.get_running_loop().call_soon(self._transport.feed, bytes(data), FORWARDER_ADDR)

    def close(self) -> None:
        self._transport = None


class _ToForwarder:
    def __init__(self):
        self.protocol: asyncio.DatagramProtocol | None = None
        self.datagrams = 0

    def sendto(self, data: bytes, addr=None) -> None:
        self.datagrams += 1
        if self.protocol is not None:
            asyncio.get_running_loop().call_soon(self.protocol.datagram_received, bytes(data),
                                                 GATEWAY_ADDR)


class MemoryDatagramLink:
    """Joins a gateway datagram transport (before the gateway starts it) and a forwarder
    model: give the forwarder `gateway_end` as its endpoint, then `connect()` it."""

    def __init__(self, transport: DatagramTransportBase):
        self.transport = transport
        self.gateway_end = _ToGateway(transport)
        self.forwarder_end = _ToForwarder()
        transport.endpoint = self.forwarder_end

    def connect(self, forwarder: asyncio.DatagramProtocol) -> None:
        self.forwarder_end.protocol = forwarder
