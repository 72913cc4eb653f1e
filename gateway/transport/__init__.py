"""Transports carry Sealink frames between the gateway and devices.

Each transport family is a module here, chosen by the scheme of a URL in the
gateway's configuration (`udp://`, `semtech-udp://`, `serial-at://`, `ble://`).
Every transport implements `FrameTransport`: it delivers each received frame with its
`Uplink` metadata to the gateway's callback, and sends a frame back to a device
`Address` (for LoRa, into the device's receive window).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Address:
    """Where a device was heard: transport name plus a transport-specific key
    (an IP address and port, a concentrator EUI, a BLE connection handle)."""

    transport: str
    key: Any


@dataclass
class Uplink:
    frame: bytes
    source: Address
    received_at: float  # time.time() on the gateway
    radio: dict[str, Any] = field(default_factory=dict)  # rssi, snr, datr, freq, ...


FrameHandler = Callable[[Uplink], Awaitable[None]]


class TransportError(Exception):
    """Bad input from a transport's medium (counted and dropped by the gateway)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class FrameTransport(Protocol):
    name: str
    max_frame: int  # largest frame the link carries

    async def start(self, handler: FrameHandler) -> None: ...

    async def send(self, frame: bytes, to: Address, uplink: Uplink | None = None) -> None:
        """Send a frame to a device; `uplink` is the frame being answered, when the
        medium schedules replies relative to it (LoRa class A receive windows)."""
        ...

    async def stop(self) -> None: ...


class DatagramTransportBase(asyncio.DatagramProtocol):
    """What the UDP-based transports share: the socket, the handler, one task per
    received frame (awaited on stop, so nothing accepted is cut off), drop counters."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.drops: dict[str, int] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._handler: FrameHandler | None = None
        self._tasks: set[asyncio.Task] = set()

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    async def start(self, handler: FrameHandler) -> None:
        self._handler = handler
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.host, self.port))
        self.port = self._transport.get_extra_info("sockname")[1]

    def _deliver(self, up: Uplink) -> None:
        task = asyncio.ensure_future(self._handler(up))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()
            self._transport = None
