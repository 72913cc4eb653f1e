"""The modeled BLE link: a Sealink peripheral on a bumble virtual controller, linked to
the gateway's central (another virtual controller on the same `LocalLink`).

The peripheral runs the device side of the GATT service of `sealink_gateway.transport.
ble`: frames the central writes to RX come out of `recv()`, frames given to `send()`
are notified on TX.  The model adds what a radio link has: an advertising interval
(the central finds the device, and finds it again after a lost link, by its
advertisements), the negotiated ATT MTU (frames over MTU - 3 are refused; `max_mtu`
models a device stack that takes less than the central asks for), a connection interval
(each frame waits for the next connection event) and loss of the connection
(`drop_connection()`).  A frame is notified only once the central has subscribed to
TX: a send before that waits for the subscription (up to `subscribe_timeout_s`), and is
then refused, never lost silently.

`BlePeripheralRadio` gives it the device-driver interface (`mtu`, `start`, `send`,
`recv`), so `sealink.device.Device` runs over it unchanged.
"""

from __future__ import annotations

import asyncio

from bumble.controller import Controller
from bumble.core import UUID, AdvertisingData
from bumble.device import Device
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

from sealink.drivers.rak3172 import ModemError
from sealink_gateway.transport.ble import ATT_HEADER, RX_UUID, SERVICE_UUID, TX_UUID


def virtual_device(link: LocalLink, name: str, address: str,
                   adv_interval_ms: int = 100) -> Device:
    """A bumble Device on its own virtual controller attached to `link` (the virtual
    controller advertises every `adv_interval_ms`; its own default is 2 s)."""
    controller = Controller(name, link=link, public_address=address)
    controller.advertising_interval = adv_interval_ms
    device = Device(address=Address(address), host=Host(controller,
                                                         AsyncPipeSink(controller)))
    device.name = name
    return device


class SealinkPeripheral:
    def __init__(self, device: Device, interval_ms: float = 30.0, queue: int = 16,
                 max_mtu: int | None = None, subscribe_timeout_s: float = 2.0):
        self.device = device
        self.interval_ms = interval_ms
        self.subscribe_timeout_s = subscribe_timeout_s
        if max_mtu is not None:
            device.gatt_server.max_mtu = max_mtu
        self.connection = None
        self.mtu = 23
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue)
        self.stats = {"written": 0, "notified": 0, "refused": 0, "inbox_full": 0,
                      "disconnections": 0}
        self.tx = Characteristic(TX_UUID, Characteristic.Properties.NOTIFY,
                                 Characteristic.READABLE, b"")
        self.rx = Characteristic(RX_UUID, Characteristic.Properties.WRITE_WITHOUT_RESPONSE
                                 | Characteristic.Properties.WRITE,
                                 Characteristic.WRITEABLE,
                                 CharacteristicValue(write=self._written))
        device.add_service(Service(SERVICE_UUID, [self.rx, self.tx]))
        device.on("connection", self._connected)
        self.tx.on("subscription", self._subscription)
        self.connected = asyncio.Event()  # a central is connected and subscribed to TX

    async def start(self) -> None:
        await self.device.power_on()
        await self._advertise()

    async def _advertise(self) -> None:
        data = bytes(AdvertisingData([
            (AdvertisingData.COMPLETE_LOCAL_NAME, self.device.name.encode()[:20]),
            (AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
             bytes(UUID(SERVICE_UUID)))]))
        await self.device.start_advertising(advertising_data=data, auto_restart=True)

    def _connected(self, connection) -> None:
        self.connection = connection
        self.mtu = connection.att_mtu
        connection.on("connection_att_mtu_update", self._mtu_changed)
        connection.on("disconnection", self._disconnected)

    def _subscription(self, connection, notify: bool, _indicate: bool) -> None:
        if connection is self.connection:
            if notify:
                self.connected.set()
            else:
                self.connected.clear()

    def _mtu_changed(self) -> None:
        if self.connection is not None:
            self.mtu = self.connection.att_mtu

    def _disconnected(self, *_):
        self.stats["disconnections"] += 1
        self.connection = None
        self.mtu = 23
        self.connected.clear()

    def _written(self, connection, value) -> None:
        self.stats["written"] += 1
        try:
            self._inbox.put_nowait(bytes(value))
        except asyncio.QueueFull:
            self.stats["inbox_full"] += 1

    @property
    def max_frame(self) -> int:
        return self.mtu - ATT_HEADER

    async def send(self, frame: bytes) -> None:
        if self.connection is not None and not self.connected.is_set():
            try:  # connected, the central not subscribed yet
                await asyncio.wait_for(self.connected.wait(), self.subscribe_timeout_s)
            except TimeoutError:
                pass
        if self.connection is None or not self.connected.is_set():
            self.stats["refused"] += 1
            raise ModemError("notify", "not connected" if self.connection is None
                             else "central not subscribed to TX")
        if len(frame) > self.max_frame:
            self.stats["refused"] += 1
            raise ModemError("notify", f"frame of {len(frame)} bytes over the link's "
                             f"{self.max_frame} (ATT MTU {self.mtu})")
        connection = self.connection
        await asyncio.sleep(self.interval_ms / 1000)  # the next connection event
        if connection is not self.connection:
            self.stats["refused"] += 1
            raise ModemError("notify", "link lost")
        await self.device.notify_subscriber(connection, self.tx, frame)
        self.stats["notified"] += 1

    async def recv(self) -> bytes:
        frame = await self._inbox.get()
        await asyncio.sleep(self.interval_ms / 1000)
        return frame

    async def drop_connection(self) -> None:
        """The link is lost (out of range, interference): the central must reconnect."""
        if self.connection is not None:
            await self.connection.disconnect()


class BlePeripheralRadio:
    """The device-driver interface over the modeled peripheral (for Device)."""

    def __init__(self, peripheral: SealinkPeripheral, mtu: int | None = None, counters=None):
        self.peripheral = peripheral
        self._mtu = mtu
        self.counters = counters  # a sim.lora.Radio whose frame counters to keep

    @property
    def mtu(self) -> int:
        return self._mtu or self.peripheral.max_frame

    async def start(self) -> None:
        await self.peripheral.start()

    async def send(self, frame: bytes) -> None:
        await self.peripheral.send(frame)
        if self.counters is not None:
            self.counters.frames_sent += 1
            self.counters.bytes_sent += len(frame)

    async def recv(self):
        return (await self.peripheral.recv(), 0, 0)
