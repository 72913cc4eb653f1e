"""`ble://`: the gateway as BLE central to Sealink devices (peripherals).

A device exposes one GATT service with two characteristics:

    SERVICE  7e5ea100-5ea1-4c1a-9b5e-5ea11a1c0000
    RX       ...0001  write without response: gateway -> device, one frame per write
    TX       ...0002  notify:                 device -> gateway, one frame per notification

The ATT MTU is negotiated on each connection (we ask for 247); a frame is at most
MTU - 3 bytes, in both directions: longer notifications are dropped ("oversized") and
longer frames are refused on send.  The gateway opens each device's session with its
link's frame size.

Two back ends, chosen by the URL:

    ble://bumble?hci=usb:0&peers=F0:F1:F2:F3:F4:F5,...   bumble's host stack on any
                                                         HCI transport bumble opens
    ble://bleak?peers=AA:BB:CC:DD:EE:FF,...              the OS stack through bleak

Tests and the simulation hand `BumbleCentral` a bumble Device on virtual controllers
(`bumble.link.LocalLink`).  The bleak back end needs a real adapter, which this machine
lacks: it is built to the same interface and not exercised here.

Links that drop are counted ("disconnected") and reconnected with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from sealink_gateway.transport import Address, FrameHandler, TransportError, Uplink

logger = logging.getLogger(__name__)

SERVICE_UUID = "7e5ea100-5ea1-4c1a-9b5e-5ea11a1c0000"
RX_UUID = "7e5ea100-5ea1-4c1a-9b5e-5ea11a1c0001"
TX_UUID = "7e5ea100-5ea1-4c1a-9b5e-5ea11a1c0002"
REQUESTED_MTU = 247
ATT_HEADER = 3


@dataclass
class _Link:
    address: str
    mtu: int
    write: Any  # async (frame) -> None
    close: Any  # async () -> None

    @property
    def max_frame(self) -> int:
        return self.mtu - ATT_HEADER


class BleTransport:
    """The transport the gateway sees; a back end (bumble or bleak) makes the links."""

    name = "ble"
    needs_window = False
    max_frame = REQUESTED_MTU - ATT_HEADER  # the most any link carries

    def __init__(self, backend: BumbleCentral | BleakCentral, peers: list[str],
                 reconnect_s: float = 1.0):
        self.backend = backend
        self.peers = [p.upper() for p in peers]
        self.reconnect_s = reconnect_s
        self.links: dict[str, _Link] = {}
        self.drops: dict[str, int] = {}
        self._handler: FrameHandler | None = None
        self._tasks: set[asyncio.Task] = set()
        self.connected = asyncio.Event()

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self, handler: FrameHandler) -> None:
        self._handler = handler
        await self.backend.start()
        for peer in self.peers:
            self._spawn(self._keep_connected(peer))

    async def _keep_connected(self, peer: str) -> None:
        delay = self.reconnect_s
        while True:
            if peer not in self.links:
                try:
                    link = await self.backend.connect(peer, self._received, self._lost)
                except (TimeoutError, OSError, TransportError, Exception) as e:  # noqa: BLE001
                    # Out of range, not advertising yet, refused: try again later.
                    logger.debug("ble: connecting to %s failed: %s", peer, e)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
                    continue
                self.links[peer] = link
                self.connected.set()
                delay = self.reconnect_s
                logger.info("ble: connected to %s, MTU %d", peer, link.mtu)
            await asyncio.sleep(self.reconnect_s)

    def _lost(self, peer: str) -> None:
        if self.links.pop(peer, None) is not None:
            self._drop("disconnected")
            logger.info("ble: %s disconnected", peer)

    def _received(self, peer: str, value: bytes) -> None:
        link = self.links.get(peer)
        if link is None:
            self._drop("no_link")
            return
        if not value:
            self._drop("empty")
            return
        if len(value) > link.max_frame:
            self._drop("oversized")
            return
        up = Uplink(frame=bytes(value), source=Address(self.name, peer),
                    received_at=time.time(), radio={"mtu": link.mtu})
        self._spawn(self._handler(up))

    def max_frame_for(self, address: Address) -> int:
        link = self.links.get(address.key)
        return link.max_frame if link else self.max_frame

    async def send(self, frame: bytes, to: Address, uplink: Uplink | None = None) -> None:
        link = self.links.get(to.key)
        if link is None:
            self._drop("no_link")
            raise TransportError("no_link", f"{to.key} is not connected")
        if len(frame) > link.max_frame:
            self._drop("too_long")
            raise TransportError("too_long", f"{len(frame)} bytes > {link.max_frame} "
                                 f"(ATT MTU {link.mtu})")
        await link.write(frame)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for link in list(self.links.values()):
            try:
                await link.close()
            except Exception:  # noqa: BLE001 (already gone)
                pass
        self.links.clear()
        await self.backend.stop()


class BumbleCentral:
    """Links through bumble's host stack: a bumble Device given (virtual controllers in
    tests), or one opened on an HCI transport spec (`usb:0`, `serial:/dev/ttyACM0`,
    `tcp-client:host:port`, ...)."""

    def __init__(self, device=None, hci: str | None = None):
        if (device is None) == (hci is None):
            raise ValueError("give a bumble Device or an HCI transport spec")
        self.device = device
        self.hci = hci
        self._hci_transport = None

    async def start(self) -> None:
        if self.device is None:
            from bumble.device import Device
            from bumble.transport import open_transport

            self._hci_transport = await open_transport(self.hci)
            self.device = Device.with_hci("sealink-gateway", "F0:F0:F0:F0:F0:F0",
                                          self._hci_transport.source,
                                          self._hci_transport.sink)
        await self.device.power_on()

    async def connect(self, peer: str, on_value, on_lost) -> _Link:
        from bumble.device import Peer

        connection = await self.device.connect(peer, timeout=5.0)
        connection.on("disconnection", lambda *_: on_lost(peer))
        gatt = Peer(connection)
        mtu = await gatt.request_mtu(REQUESTED_MTU)
        services = await gatt.discover_service(SERVICE_UUID)
        if not services:
            await connection.disconnect()
            raise TransportError("no_service", f"{peer} has no Sealink service")
        chars = await services[0].discover_characteristics()
        by_uuid = {str(c.uuid).lower(): c for c in chars}
        rx, tx = by_uuid.get(RX_UUID), by_uuid.get(TX_UUID)
        if rx is None or tx is None:
            await connection.disconnect()
            raise TransportError("no_service", f"{peer}: Sealink characteristics missing")
        await tx.subscribe(lambda value: on_value(peer, bytes(value)))

        async def write(frame: bytes) -> None:
            await rx.write_value(frame, with_response=False)

        async def close() -> None:
            await connection.disconnect()

        return _Link(peer, mtu, write, close)

    async def stop(self) -> None:
        if self._hci_transport is not None:
            await self._hci_transport.close()


class BleakCentral:
    """Links through the operating system's BLE stack (BlueZ on Linux) with bleak."""

    def __init__(self, adapter: str | None = None):
        self.adapter = adapter

    async def start(self) -> None:
        import bleak  # noqa: F401  (fail early when bleak is not installed)

    async def connect(self, peer: str, on_value, on_lost) -> _Link:
        from bleak import BleakClient

        kw = {"adapter": self.adapter} if self.adapter else {}
        client = BleakClient(peer, disconnected_callback=lambda _c: on_lost(peer), **kw)
        await client.connect(timeout=10.0)
        await client.start_notify(TX_UUID, lambda _char, data: on_value(peer, bytes(data)))

        async def write(frame: bytes) -> None:
            await client.write_gatt_char(RX_UUID, frame, response=False)

        async def close() -> None:
            await client.disconnect()

        return _Link(peer, client.mtu_size, write, close)

    async def stop(self) -> None:
        pass
