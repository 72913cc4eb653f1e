"""`ble://`: the gateway as BLE central to Sealink devices (peripherals).

A device exposes one GATT service with two characteristics:

    SERVICE  7e5ea100-5ea1-4c1a-9b5e-5ea11a1c0000
    RX       ...0001  write without response: gateway -> device, one frame per write
    TX       ...0002  notify:                 device -> gateway, one frame per notification

and advertises the service's UUID.  The gateway scans: it connects to every device that
advertises the service, or, given a list of peer addresses, to those peers only (whatever
they advertise).  A link that drops is counted ("disconnected") and the device is
connected again at its next advertisement (after a failed attempt, a peer waits out a
backoff that doubles from `reconnect_s` up to 30 s).  One connection is set up at a
time, with scanning paused meanwhile (one LE connection may be pending per controller).

The ATT MTU is negotiated on each connection (we ask for 247); a frame is at most
MTU - 3 bytes, in both directions: longer notifications are dropped ("oversized"), as
are empty ones ("empty"), and longer frames are refused on send with
`TransportError("too_long")`.  `max_frame_for(address)` gives a link's frame size, and
the gateway opens each device's session with it.  Frames from one device reach the
gateway in the order notified; a device that floods faster than the gateway handles
loses the excess ("queue_full").  Uplinks carry `radio={"mtu": ..., "rssi": ...}`
(rssi from the device's last advertisement, when the back end reports one).

Two back ends, chosen by the URL:

    ble://bumble?hci=usb:0&peers=F0:F1:F2:F3:F4:F5,...   bumble's host stack on any
                                                         HCI transport bumble opens
    ble://bleak?adapter=hci0&peers=AA:BB:CC:DD:EE:FF,... the OS stack through bleak

Tests and the simulation hand `BumbleCentral` a bumble Device on virtual controllers
(`bumble.link.LocalLink`, see `sim.ble`).  The bleak back end needs a real adapter,
which this machine lacks: it is built to the same interface and not exercised here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sealink_gateway.transport import Address, FrameHandler, TransportError, Uplink

logger = logging.getLogger(__name__)

SERVICE_UUID = "7e5ea100-5ea1-4c1a-9b5e-5ea11a1c0000"
RX_UUID = "7e5ea100-5ea1-4c1a-9b5e-5ea11a1c0001"
TX_UUID = "7e5ea100-5ea1-4c1a-9b5e-5ea11a1c0002"
REQUESTED_MTU = 247
DEFAULT_MTU = 23  # before (or without) the MTU exchange
ATT_HEADER = 3
SETUP_TIMEOUT_S = 15.0  # connect, MTU exchange, discovery, subscription
MAX_BACKOFF_S = 30.0
QUEUE = 256  # frames from one device waiting for the gateway

# on_advert(peer, rssi or None, advertises the Sealink service)
AdvertHandler = Callable[[str, "int | None", bool], None]


def normalize(address: str) -> str:
    """`aa:bb:cc:dd:ee:ff` as the transport keys it: upper case, no bumble type suffix."""
    return address.split("/")[0].upper()


class _Link:
    """One connected device, as a back end set it up (MTU exchanged, service found)."""

    def __init__(self, address: str, mtu: int,
                 write: Callable[[bytes], Awaitable[None]],
                 subscribe: Callable[[Callable[[bytes], None]], Awaitable[None]],
                 close: Callable[[], Awaitable[None]]):
        self.address, self.mtu = address, mtu
        self.write, self.subscribe, self.close = write, subscribe, close

    @property
    def max_frame(self) -> int:
        return self.mtu - ATT_HEADER


class BleTransport:
    """The transport the gateway sees; a back end (bumble or bleak) makes the links.

    `peers`: the devices to connect to; empty or None connects to any device that
    advertises the Sealink service."""

    name = "ble"
    needs_window = False
    max_frame = REQUESTED_MTU - ATT_HEADER  # the most any link carries; see max_frame_for

    def __init__(self, backend: BumbleCentral | BleakCentral,
                 peers: list[str] | None = None, reconnect_s: float = 1.0):
        self.backend = backend
        self.peers = {normalize(p) for p in peers or () if p}
        self.reconnect_s = reconnect_s
        self.links: dict[str, _Link] = {}
        self.rssi: dict[str, int] = {}  # from each device's last advertisement
        self.drops: dict[str, int] = {}
        self.connected = asyncio.Event()  # set whenever a link comes up
        self._handler: FrameHandler | None = None
        self._lock = asyncio.Lock()  # one connection set up at a time
        self._connecting: set[str] = set()
        self._retry_at: dict[str, tuple[float, float]] = {}  # peer -> (when, backoff)
        self._tasks: set[asyncio.Task] = set()  # connection attempts
        self._pending: dict[str, collections.deque[Uplink]] = {}
        self._delivering: dict[str, asyncio.Task] = {}
        self._scanning = False
        self._stopping = False

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    # --- links ---------------------------------------------------------------------------

    async def start(self, handler: FrameHandler) -> None:
        self._handler = handler
        self._stopping = False
        await self.backend.start()
        await self._scan(True)
        self._spawn(self._keep_scanning())

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _scan(self, on: bool) -> None:
        if on == self._scanning or (on and self._stopping):
            return
        if on:
            await self.backend.start_scan(self._advertised)
        else:
            await self.backend.stop_scan()
        self._scanning = on

    async def _keep_scanning(self) -> None:
        """Scanning resumes after each connection attempt; should the controller refuse
        then, try again until it takes it (devices are found by their advertisements)."""
        while True:
            await asyncio.sleep(self.reconnect_s)
            if self._scanning or self._lock.locked():
                continue
            async with self._lock:
                try:
                    await self._scan(True)
                except Exception as e:
                    logger.warning("ble: scanning does not start: %s: %s",
                                   type(e).__name__, e)

    def _advertised(self, peer: str, rssi: int | None, has_service: bool) -> None:
        """An advertisement (called by the back end; never raises)."""
        peer = normalize(peer)
        if not (peer in self.peers if self.peers else has_service):
            return
        if rssi is not None:
            self.rssi[peer] = rssi
        if self._stopping or peer in self.links or peer in self._connecting:
            return
        retry = self._retry_at.get(peer)
        if retry is not None and time.monotonic() < retry[0]:
            return
        self._connecting.add(peer)
        self._spawn(self._connect(peer))

    async def _connect(self, peer: str) -> None:
        try:
            async with self._lock:
                if self._stopping or peer in self.links:
                    return
                try:
                    await self._scan(False)
                    await asyncio.wait_for(self._set_up(peer), SETUP_TIMEOUT_S)
                except Exception as e:  # out of range, refused, not a Sealink device, ...
                    backoff = self._retry_at.get(peer, (0.0, self.reconnect_s / 2))[1] * 2
                    backoff = min(max(backoff, self.reconnect_s), MAX_BACKOFF_S)
                    self._retry_at[peer] = (time.monotonic() + backoff, backoff)
                    logger.info("ble: connecting to %s failed (%s: %s); next try in %.1f s",
                                peer, type(e).__name__, e, backoff)
                else:
                    self._retry_at.pop(peer, None)
                if not self._stopping:
                    try:
                        await self._scan(True)
                    except Exception as e:  # _keep_scanning tries again
                        logger.warning("ble: scanning does not resume: %s: %s",
                                       type(e).__name__, e)
        finally:
            self._connecting.discard(peer)

    async def _set_up(self, peer: str) -> None:
        link = await self.backend.connect(peer, self._lost)
        try:
            # Registered before subscribing: a frame notified at once has its link.
            self.links[peer] = link
            await link.subscribe(lambda value: self._received(peer, value))
        except BaseException:
            if self.links.get(peer) is link:
                del self.links[peer]
            with contextlib.suppress(Exception):
                await link.close()
            raise
        if self.links.get(peer) is not link:  # dropped while subscribing
            raise TransportError("disconnected", f"{peer} dropped during setup")
        self.connected.set()
        logger.info("ble: connected to %s, ATT MTU %d", peer, link.mtu)

    def _lost(self, peer: str) -> None:
        if self.links.pop(peer, None) is not None and not self._stopping:
            self._drop("disconnected")
            logger.info("ble: %s disconnected", peer)

    def max_frame_for(self, address: Address) -> int:
        link = self.links.get(address.key)
        return link.max_frame if link else self.max_frame

    # --- frames --------------------------------------------------------------------------

    def _received(self, peer: str, value: bytes) -> None:
        """A notification on TX (called by the back end; never raises)."""
        link = self.links.get(peer)
        if link is None:
            self._drop("no_link")
            return
        if not value:
            self._drop("empty")
            return
        if len(value) > link.max_frame:
            self._drop("oversized")
            logger.debug("ble: oversized notification (%d bytes) from %s", len(value), peer)
            return
        pending = self._pending.setdefault(peer, collections.deque())
        if len(pending) >= QUEUE:
            self._drop("queue_full")
            return
        radio: dict[str, Any] = {"mtu": link.mtu}
        if peer in self.rssi:
            radio["rssi"] = self.rssi[peer]
        pending.append(Uplink(frame=bytes(value), source=Address(self.name, peer),
                              received_at=time.time(), radio=radio))
        if peer not in self._delivering:
            self._delivering[peer] = asyncio.ensure_future(self._deliver(peer))

    async def _deliver(self, peer: str) -> None:
        """Hand one device's frames to the gateway in order, one at a time."""
        pending = self._pending[peer]
        try:
            while pending:
                up = pending.popleft()
                try:
                    await self._handler(up)
                except Exception:  # one bad frame must never stop the others
                    logger.exception("ble: handling a frame from %s failed", peer)
                    self._drop("handler_error")
        finally:
            del self._delivering[peer]
            if not pending:
                self._pending.pop(peer, None)

    async def send(self, frame: bytes, to: Address, uplink: Uplink | None = None) -> None:
        link = self.links.get(to.key)
        if link is None:
            self._drop("no_link")
            raise TransportError("no_link", f"{to.key} is not connected")
        if len(frame) > link.max_frame:
            self._drop("too_long")
            raise TransportError("too_long", f"{len(frame)} bytes > {link.max_frame} "
                                 f"(ATT MTU {link.mtu})")
        try:
            await link.write(frame)
        except Exception as e:  # the link went down under the write
            self._drop("write_failed")
            raise TransportError("write_failed", f"{to.key}: {type(e).__name__}: {e}") from e

    async def stop(self) -> None:
        self._stopping = True
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._scan(False)
        for link in list(self.links.values()):
            with contextlib.suppress(Exception):
                await link.close()
        self.links.clear()
        # Frames already accepted are handed over, not cut off.
        if self._delivering:
            await asyncio.gather(*self._delivering.values(), return_exceptions=True)
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
        self._addresses: dict[str, Any] = {}  # peer -> bumble hci.Address (with its type)
        self._listener = None

    async def start(self) -> None:
        if self.device is None:
            from bumble.device import Device
            from bumble.transport import open_transport

            self._hci_transport = await open_transport(self.hci)
            self.device = Device.with_hci("sealink-gateway", "F0:F0:F0:F0:F0:F0",
                                          self._hci_transport.source,
                                          self._hci_transport.sink)
        await self.device.power_on()

    async def start_scan(self, on_advert: AdvertHandler) -> None:
        from bumble.core import UUID, AdvertisingData

        service = UUID(SERVICE_UUID)
        lists = (AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
                 AdvertisingData.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS)

        def advertisement(adv) -> None:
            if not adv.is_connectable:
                return
            try:
                has = any(service in (uuids or ()) for t in lists
                          for uuids in adv.data.get_all(t))
            except Exception:  # noqa: BLE001 (malformed advertising data)
                has = False
            peer = normalize(adv.address.to_string(False))
            self._addresses[peer] = adv.address
            rssi = None if adv.rssi == adv.RSSI_NOT_AVAILABLE else adv.rssi
            on_advert(peer, rssi, has)

        if self._listener is None:
            self._listener = advertisement
            self.device.on("advertisement", advertisement)
        await self.device.start_scanning(filter_duplicates=False)

    async def stop_scan(self) -> None:
        if self._listener is not None:
            self.device.remove_listener("advertisement", self._listener)
            self._listener = None
        if self.device.is_scanning:
            await self.device.stop_scanning()

    async def connect(self, peer: str, on_lost: Callable[[str], None]) -> _Link:
        from bumble.device import Peer

        connection = await self.device.connect(self._addresses.get(peer, peer), timeout=5.0)
        connection.on("disconnection", lambda *_: on_lost(peer))
        try:
            gatt = Peer(connection)
            mtu = await gatt.request_mtu(REQUESTED_MTU)
            services = await gatt.discover_service(SERVICE_UUID)
            if not services:
                raise TransportError("no_service", f"{peer} has no Sealink service")
            chars = await services[0].discover_characteristics()
            by_uuid = {str(c.uuid).lower(): c for c in chars}
            rx, tx = by_uuid.get(RX_UUID), by_uuid.get(TX_UUID)
            if rx is None or tx is None:
                raise TransportError("no_service", f"{peer}: Sealink characteristics missing")
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.disconnect()
            raise

        link = _Link(peer, mtu, write=lambda frame: rx.write_value(frame, with_response=False),
                     subscribe=lambda on_value: tx.subscribe(lambda v: on_value(bytes(v))),
                     close=connection.disconnect)

        def mtu_changed() -> None:  # the device may start another exchange
            link.mtu = connection.att_mtu

        connection.on("connection_att_mtu_update", mtu_changed)
        return link

    async def stop(self) -> None:
        if self._hci_transport is not None:
            with contextlib.suppress(Exception):
                await self.device.power_off()
            await self._hci_transport.close()
            self._hci_transport = None
            self.device = None


class BleakCentral:
    """Links through the operating system's BLE stack (BlueZ on Linux, CoreBluetooth,
    WinRT) with bleak.  Not exercised here (no adapter on this machine).

    The OS negotiates the ATT MTU itself; the link's MTU is read from the RX
    characteristic's largest write without response (+ 3), which BlueZ reports from
    5.62 on (older BlueZ: 23, so frames of 20 bytes: correct, only small)."""

    def __init__(self, adapter: str | None = None):
        self.adapter = adapter
        self._scanner = None
        self._devices: dict[str, Any] = {}  # peer -> BLEDevice from the scan

    def _bluez(self) -> dict:
        return {"bluez": {"adapter": self.adapter}} if self.adapter else {}

    async def start(self) -> None:
        import bleak  # noqa: F401  (fail early when bleak is not installed)

    async def start_scan(self, on_advert: AdvertHandler) -> None:
        from bleak import BleakScanner

        def detected(device, adv) -> None:
            peer = normalize(device.address)
            self._devices[peer] = device
            has = SERVICE_UUID in {u.lower() for u in adv.service_uuids}
            on_advert(peer, adv.rssi, has)

        self._scanner = BleakScanner(detected, **self._bluez())
        await self._scanner.start()

    async def stop_scan(self) -> None:
        if self._scanner is not None:
            scanner, self._scanner = self._scanner, None
            await scanner.stop()

    async def connect(self, peer: str, on_lost: Callable[[str], None]) -> _Link:
        from bleak import BleakClient

        client = BleakClient(self._devices.get(peer, peer),
                             disconnected_callback=lambda _client: on_lost(peer),
                             timeout=10.0, **self._bluez())
        await client.connect()
        try:
            rx = client.services.get_characteristic(RX_UUID)
            tx = client.services.get_characteristic(TX_UUID)
            if rx is None or tx is None:
                raise TransportError("no_service", f"{peer} has no Sealink service")
            mtu = rx.max_write_without_response_size + ATT_HEADER
        except BaseException:
            with contextlib.suppress(Exception):
                await client.disconnect()
            raise

        async def write(frame: bytes) -> None:
            await client.write_gatt_char(rx, frame, response=False)

        async def subscribe(on_value: Callable[[bytes], None]) -> None:
            await client.start_notify(tx, lambda _char, data: on_value(bytes(data)))

        return _Link(peer, mtu, write, subscribe, client.disconnect)

    async def stop(self) -> None:
        await self.stop_scan()
