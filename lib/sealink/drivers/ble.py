# BLE peripheral driver on MicroPython's `bluetooth` module: the device side of the
# Sealink GATT service (see sealink_gateway/transport/ble.py for the central).
#
#   SERVICE 7e5ea100-5ea1-4c1a-9b5e-5ea11a1c0000
#   RX      ...0001  write (without response): one frame from the gateway per write
#   TX      ...0002  notify: one frame to the gateway per notification
#
# The ATT MTU the central negotiates sets the frame size (MTU - 3; 20 until then).  The
# driver advertises until a central connects and again after it disconnects.

import asyncio
import binascii

SERVICE_UUID = "7e5ea100-5ea1-4c1a-9b5e-5ea11a1c0000"
RX_UUID = "7e5ea100-5ea1-4c1a-9b5e-5ea11a1c0001"
TX_UUID = "7e5ea100-5ea1-4c1a-9b5e-5ea11a1c0002"

_IRQ_CENTRAL_CONNECT = 1
_IRQ_CENTRAL_DISCONNECT = 2
_IRQ_GATTS_WRITE = 3
_IRQ_MTU_EXCHANGED = 21
_FLAG_WRITE_NO_RESPONSE = 0x0004
_FLAG_WRITE = 0x0008
_FLAG_NOTIFY = 0x0010
_ATT_HEADER = 3
_RX_QUEUE = 8

from sealink.drivers.rak3172 import ModemError  # noqa: E402  (the drivers' one error)


def _advertising_payload(name, service_uuid_bytes):
    name = name.encode()[:20]
    return (bytes((2, 0x01, 0x06)) + bytes((len(name) + 1, 0x09)) + name
            + bytes((len(service_uuid_bytes) + 1, 0x07)) + service_uuid_bytes)


class BlePeripheral:
    def __init__(self, ble=None, name="sealink", interval_us=100000, requested_mtu=247):
        if ble is None:
            import bluetooth

            ble = bluetooth.BLE()
        self._ble = ble
        self.name = name
        self.interval_us = interval_us
        self.requested_mtu = requested_mtu
        self._conn = None
        self._mtu = 23
        self._rx = []
        flag = getattr(asyncio, "ThreadSafeFlag", None)
        self._rx_flag = flag() if flag else asyncio.Event()
        self.stats = {"rx": 0, "tx": 0, "rx_overflow": 0, "connects": 0, "disconnects": 0}

    @property
    def mtu(self):
        return self._mtu - _ATT_HEADER

    @property
    def connected(self):
        return self._conn is not None

    async def start(self):
        import bluetooth

        ble = self._ble
        ble.active(True)
        ble.config(gap_name=self.name, mtu=self.requested_mtu)
        ble.irq(self._irq)
        service = (bluetooth.UUID(SERVICE_UUID), (
            (bluetooth.UUID(RX_UUID), _FLAG_WRITE | _FLAG_WRITE_NO_RESPONSE),
            (bluetooth.UUID(TX_UUID), _FLAG_NOTIFY)))
        ((self._rx_handle, self._tx_handle),) = ble.gatts_register_services((service,))
        # Room for the largest frame a 247-byte MTU carries.
        ble.gatts_set_buffer(self._rx_handle, self.requested_mtu - _ATT_HEADER)
        self._advertise()

    def _advertise(self):
        # 128-bit UUIDs go on the air little-endian.
        uuid = bytes(reversed(binascii.unhexlify(SERVICE_UUID.replace("-", ""))))
        self._ble.gap_advertise(self.interval_us, adv_data=_advertising_payload(self.name,
                                                                                uuid))

    def _irq(self, event, data):
        if event == _IRQ_CENTRAL_CONNECT:
            self._conn = data[0]
            self._mtu = 23
            self.stats["connects"] += 1
        elif event == _IRQ_CENTRAL_DISCONNECT:
            self._conn = None
            self._mtu = 23
            self.stats["disconnects"] += 1
            self._advertise()
        elif event == _IRQ_MTU_EXCHANGED:
            if data[0] == self._conn:
                self._mtu = data[1]
        elif event == _IRQ_GATTS_WRITE:
            conn, handle = data[0], data[1]
            if conn == self._conn and handle == self._rx_handle:
                frame = bytes(self._ble.gatts_read(self._rx_handle))
                if len(self._rx) >= _RX_QUEUE:
                    self._rx.pop(0)
                    self.stats["rx_overflow"] += 1
                self._rx.append(frame)
                self.stats["rx"] += 1
                self._rx_flag.set()

    async def send(self, frame):
        if self._conn is None:
            raise ModemError("notify", "no central connected")
        if not 0 < len(frame) <= self.mtu:
            raise ModemError("notify", "frame of %d bytes (link carries %d)"
                             % (len(frame), self.mtu))
        self._ble.gatts_notify(self._conn, self._tx_handle, frame)
        self.stats["tx"] += 1

    async def recv(self):
        while not self._rx:
            if not isinstance(self._rx_flag, asyncio.Event):
                await self._rx_flag.wait()
            else:
                self._rx_flag.clear()
                await self._rx_flag.wait()
        return (self._rx.pop(0), 0, 0)
