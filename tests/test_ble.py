"""The ble:// transport over bumble's virtual controllers (no hardware): the gateway as
central, Sealink peripherals (sim.ble) as devices, all on one `LocalLink`.  Devices are
found by their advertisements (by address or by the Sealink service), the ATT MTU is
negotiated and held to both ways, bad notifications are counted and dropped, a lost link
is counted and reconnected, and a device (the Device API over the peripheral) enrolls
with a token, sends and takes a downlink through the real gateway.  The bleak back end
runs against a stand-in for bleak whose calls are checked against bleak's signatures."""

import asyncio
import contextlib
import inspect
import sys
import types

import pytest
from bumble.core import AdvertisingData
from bumble.link import LocalLink

from sealink import crypto
from sealink.device import Device, Keystore
from sealink.drivers.rak3172 import ModemError
from sealink_gateway.authority import Authority
from sealink_gateway.service import Gateway
from sealink_gateway.store import Store
from sealink_gateway.transport import Address, TransportError
from sealink_gateway.transport.ble import (
    QUEUE,
    RX_UUID,
    SERVICE_UUID,
    TX_UUID,
    BleakCentral,
    BleTransport,
    BumbleCentral,
)
from sim import vtime
from sim.ble import BlePeripheralRadio, SealinkPeripheral, virtual_device

pytestmark = pytest.mark.timeout(60)

DEVICE_ADDR = "F5:F4:F3:F2:F1:F0"
GATEWAY_ADDR = "F0:F1:F2:F3:F4:F5"


def run(coro, timeout=30):
    """Each scenario runs in discrete-event time (sim.vtime): bumble's virtual
    controllers, the link model and the gateway all wait on the loop's clock, so the
    link's timing is exact whatever the host is doing; `timeout` is modeled time."""
    return vtime.run(asyncio.wait_for(coro, timeout))


async def _until(predicate, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


async def _collector():
    got: list = []

    async def handler(up):
        got.append(up)

    return got, handler


@contextlib.asynccontextmanager
async def ble_link(handler, peers=(DEVICE_ADDR,), **peripheral_kw):
    """One Sealink peripheral and the gateway's central, connected and subscribed."""
    link = LocalLink()
    peripheral = SealinkPeripheral(virtual_device(link, "sealink-dev", DEVICE_ADDR),
                                   **peripheral_kw)
    await peripheral.start()
    transport = BleTransport(BumbleCentral(virtual_device(link, "gateway", GATEWAY_ADDR)),
                             list(peers), reconnect_s=0.2)
    await transport.start(handler)
    try:
        await asyncio.wait_for(transport.connected.wait(), 10)
        await asyncio.wait_for(peripheral.connected.wait(), 10)
        yield transport, peripheral
    finally:
        await transport.stop()


def test_frames_both_ways_at_the_negotiated_mtu():
    async def scenario():
        got, handler = await _collector()
        async with ble_link(handler) as (transport, peripheral):
            link = transport.links[DEVICE_ADDR]
            assert link.mtu == peripheral.mtu == 247 and link.max_frame == 244
            to = Address("ble", DEVICE_ADDR)
            assert transport.max_frame_for(to) == 244
            # Central -> device, at the largest frame the link carries.
            await transport.send(b"\x40" * 244, to)
            assert await asyncio.wait_for(peripheral.recv(), 5) == b"\x40" * 244
            with pytest.raises(TransportError, match="245 bytes > 244") as refused:
                await transport.send(bytes(245), to)
            assert refused.value.reason == "too_long"
            # Device -> central, with the link's metadata.
            await peripheral.send(b"\x41" * 244)
            await _until(lambda: got)
            assert got[0].frame == b"\x41" * 244 and got[0].source == to
            assert got[0].radio == {"mtu": 247, "rssi": -50}  # rssi: the virtual radio's
            with pytest.raises(ModemError, match="over the link's 244"):
                await peripheral.send(bytes(245))
            # A burst arrives whole and in order.
            for i in range(20):
                await peripheral.send(bytes([0x42, i]))
            await _until(lambda: len(got) == 21)
            assert [up.frame[1] for up in got[1:]] == list(range(20))
            assert transport.drops == {"too_long": 1}

    run(scenario())


def test_the_mtu_is_what_both_sides_accept():
    """A device stack that takes a smaller MTU than the central asks for: both sides
    hold to what was negotiated."""
    async def scenario():
        got, handler = await _collector()
        async with ble_link(handler, max_mtu=100) as (transport, peripheral):
            to = Address("ble", DEVICE_ADDR)
            assert transport.links[DEVICE_ADDR].mtu == peripheral.mtu == 100
            assert transport.max_frame_for(to) == peripheral.max_frame == 97
            assert BlePeripheralRadio(peripheral).mtu == 97
            await transport.send(b"\x40" * 97, to)
            assert await asyncio.wait_for(peripheral.recv(), 5) == b"\x40" * 97
            with pytest.raises(TransportError, match="98 bytes > 97 \\(ATT MTU 100\\)"):
                await transport.send(bytes(98), to)
            with pytest.raises(ModemError, match="over the link's 97"):
                await peripheral.send(bytes(98))
            await peripheral.send(b"\x41" * 97)
            await _until(lambda: got)
            assert got[0].frame == b"\x41" * 97 and got[0].radio["mtu"] == 100

    run(scenario())


def test_devices_are_found_by_the_sealink_service_or_by_address():
    async def scenario():
        link = LocalLink()
        addrs = ["F5:F4:F3:F2:F1:01", "F5:F4:F3:F2:F1:02"]
        peripherals = [SealinkPeripheral(virtual_device(link, f"dev-{i}", a))
                       for i, a in enumerate(addrs)]
        for p in peripherals:
            await p.start()
        # A connectable advertiser that is no Sealink device.
        other = virtual_device(link, "kettle", "F5:F4:F3:F2:F1:03")
        await other.power_on()
        await other.start_advertising(auto_restart=True, advertising_data=bytes(
            AdvertisingData([(AdvertisingData.COMPLETE_LOCAL_NAME, b"kettle")])))

        got, handler = await _collector()
        # Any device advertising the service.
        transport = BleTransport(BumbleCentral(virtual_device(link, "gw", GATEWAY_ADDR)),
                                 reconnect_s=0.2)
        await transport.start(handler)
        try:
            await _until(lambda: set(transport.links) == set(addrs))
            for p in peripherals:
                await asyncio.wait_for(p.connected.wait(), 10)
            await asyncio.sleep(0.5)  # the kettle keeps advertising: never connected
            assert set(transport.links) == set(addrs)
            for i, p in enumerate(peripherals):
                await p.send(bytes([0x41, i]))
            await _until(lambda: len(got) == 2)
            assert {(up.source.key, up.frame[1]) for up in got} == {(addrs[0], 0),
                                                                   (addrs[1], 1)}
            for i, a in enumerate(addrs):
                await transport.send(bytes([0x40, i]), Address("ble", a))
                assert await asyncio.wait_for(peripherals[i].recv(), 5) == bytes([0x40, i])
        finally:
            await transport.stop()
        assert transport.drops == {}  # our own stop is no lost link
        for p in peripherals:
            await asyncio.wait_for(_until(lambda p=p: p.connection is None), 5)

        # By address: only the peers named (lower case is fine), whatever they advertise.
        only = BleTransport(BumbleCentral(virtual_device(link, "gw2", "F0:F1:F2:F3:F4:F6")),
                            [addrs[1].lower()], reconnect_s=0.2)
        await only.start(handler)
        try:
            await asyncio.wait_for(only.connected.wait(), 10)
            await asyncio.sleep(0.5)
            assert list(only.links) == [addrs[1]]
        finally:
            await only.stop()

    run(scenario())


def test_bad_notifications_and_failing_handlers_are_counted_and_dropped():
    async def scenario():
        got = []
        release = asyncio.Event()

        async def handler(up):
            if up.frame == b"\x41boom":
                raise RuntimeError("the gateway failed on this frame")
            await release.wait()
            got.append(up.frame)

        async with ble_link(handler) as (transport, peripheral):
            release.set()
            # Over the MTU and empty (a misbehaving peer stack; bumble's server truncates
            # to the MTU, so they are fed to the notification callback directly),
            # and a frame the gateway's handler fails on: dropped, counted.
            transport._received(DEVICE_ADDR, bytes(300))
            transport._received(DEVICE_ADDR, b"")
            transport._received("00:11:22:33:44:55", b"\x41who")  # no such link
            await peripheral.send(b"\x41boom")
            await peripheral.send(b"\x41good")
            await _until(lambda: got == [b"\x41good"])
            assert transport.drops == {"oversized": 1, "empty": 1, "no_link": 1,
                                       "handler_error": 1}
            # A flood faster than the gateway handles: the excess is dropped, counted.
            release.clear()
            for i in range(QUEUE + 6):
                transport._received(DEVICE_ADDR, b"\x41" + i.to_bytes(2, "big"))
            release.set()
            await _until(lambda: len(got) == 1 + QUEUE)
            assert transport.drops["queue_full"] == 6
            assert got[1:] == [b"\x41" + i.to_bytes(2, "big") for i in range(QUEUE)]
            # And the link still carries frames.
            await peripheral.send(b"\x41after")
            await _until(lambda: got[-1] == b"\x41after")

    run(scenario())


def test_a_lost_link_is_counted_and_reconnected():
    async def scenario():
        got, handler = await _collector()
        async with ble_link(handler) as (transport, peripheral):
            to = Address("ble", DEVICE_ADDR)
            transport.connected.clear()
            await peripheral.drop_connection()
            await _until(lambda: transport.drops.get("disconnected") == 1)
            with pytest.raises(TransportError) as no_link:
                await transport.send(b"x", to)
            assert no_link.value.reason == "no_link"
            with pytest.raises(ModemError, match="not connected"):
                await peripheral.send(b"\x41lost")
            # The device advertises again; the central connects at the advertisement.
            await asyncio.wait_for(transport.connected.wait(), 10)
            await asyncio.wait_for(peripheral.connected.wait(), 10)
            assert transport.links[DEVICE_ADDR].mtu == 247
            await transport.send(b"\x40back", to)
            assert await asyncio.wait_for(peripheral.recv(), 5) == b"\x40back"
            await peripheral.send(b"\x41back")
            await _until(lambda: got and got[-1].frame == b"\x41back")
            assert peripheral.stats["disconnections"] == 1

            # A write the link fails under: a typed error, counted.
            async def broken(frame):
                raise ConnectionResetError("gone")

            transport.links[DEVICE_ADDR].write = broken
            with pytest.raises(TransportError, match="ConnectionResetError") as failed:
                await transport.send(b"\x40x", to)
            assert failed.value.reason == "write_failed"
            assert transport.drops == {"disconnected": 1, "no_link": 1, "write_failed": 1}

    run(scenario())


def test_a_device_that_is_no_sealink_device_is_left_alone():
    """Named by address, but without the Sealink service: connecting fails, the central
    backs off, and nothing is counted as a dropped frame."""
    async def scenario():
        link = LocalLink()
        stranger = virtual_device(link, "stranger", DEVICE_ADDR)
        await stranger.power_on()
        await stranger.start_advertising(auto_restart=True)
        transport = BleTransport(BumbleCentral(virtual_device(link, "gw", GATEWAY_ADDR)),
                                 [DEVICE_ADDR], reconnect_s=0.2)
        got, handler = await _collector()
        await transport.start(handler)
        try:
            await _until(lambda: DEVICE_ADDR in transport._retry_at)
            assert not transport.links and not transport.drops
            await _until(lambda: not stranger.connections)  # disconnected by the central
        finally:
            await transport.stop()

    run(scenario())


@pytest.mark.parametrize("max_mtu", [None, 100])
def test_device_enrolls_sends_and_takes_a_downlink_over_ble(tmp_path, max_mtu):
    """Through the real gateway: garbage first, then a device enrolls with a one-time
    token (XK), sends an uplink the gateway stores, and takes a downlink; its session
    uses the link's frame size on both sides (with max_mtu=100, a message is larger
    than a frame)."""
    async def scenario():
        link = LocalLink()
        peripheral = SealinkPeripheral(virtual_device(link, "sealink-dev", DEVICE_ADDR),
                                       max_mtu=max_mtu)
        await peripheral.start()
        transport = BleTransport(BumbleCentral(virtual_device(link, "gateway",
                                                              GATEWAY_ADDR)),
                                 reconnect_s=0.2)  # found by the service it advertises
        gw = Gateway(Store(tmp_path / "gw.db"), crypto.random_bytes(32),
                     Authority.load_or_create(tmp_path / "authority.pem"), [transport])
        await gw.start()
        try:
            await asyncio.wait_for(peripheral.connected.wait(), 10)
            frame = (max_mtu or 247) - 3
            await peripheral.send(b"\x00\xff")  # no Sealink frame
            await _until(lambda: gw.drops.get("malformed_frame") == 1)

            token, _ = gw.store.create_token({"radio": "ble"}, 3600)
            device = Device(BlePeripheralRadio(peripheral), Keystore(),
                            {"token": token.encode(), "gateway_key": gw.public_key,
                             "retry_ms": 500})
            assert device.mtu == frame
            await device.connect(15000)
            await _until(lambda: gw.store.devices())  # (message 3 is on its way)
            (row,) = gw.store.devices()
            assert row.attributes == {"radio": "ble"}
            assert gw.sessions[device.channel.sid].channel.mtu == frame
            await device.send(b"x" * 200)
            assert await device.flush(10000)
            assert gw.store.uplinks(row.id)[0]["payload"] == b"x" * 200
            await gw.send(row.id, b"blink")
            assert await asyncio.wait_for(device.commands().__anext__(), 10) == b"blink"
            device.close()
            assert transport.drops == {}
            assert dict(gw.drops) == {"malformed_frame": 1}
        finally:
            await gw.stop()

    run(scenario(), timeout=45)


# --- bleak ------------------------------------------------------------------------------


def _fake_bleak(monkeypatch):
    """A stand-in for bleak (no adapter here): one Sealink device.  Every call the back
    end makes is bound against the real bleak's signature, so a wrong name or argument
    fails here."""
    import bleak
    from bleak.backends.characteristic import BleakGATTCharacteristic

    assert isinstance(BleakGATTCharacteristic.max_write_without_response_size, property)
    log = {"written": [], "notify": None, "disconnected": None, "scanner": None}

    def check(real, *args, **kwargs):
        inspect.signature(real).bind(None, *args, **kwargs)

    class Char:
        def __init__(self, uuid):
            self.uuid = uuid
            self.max_write_without_response_size = 182  # MTU 185

    class Services:
        def get_characteristic(self, spec):
            check(bleak.BleakGATTServiceCollection.get_characteristic, spec)
            return {RX_UUID: Char(RX_UUID), TX_UUID: Char(TX_UUID)}.get(spec)

    class Client:
        def __init__(self, *args, **kwargs):
            check(bleak.BleakClient.__init__, *args, **kwargs)
            self.kwargs = kwargs
            self.services = Services()
            log["disconnected"] = lambda: kwargs["disconnected_callback"](self)

        async def connect(self, *args, **kwargs):
            check(bleak.BleakClient.connect, *args, **kwargs)

        async def start_notify(self, char, callback, *args, **kwargs):
            check(bleak.BleakClient.start_notify, char, callback, *args, **kwargs)
            log["notify"] = callback

        async def write_gatt_char(self, char, data, *args, **kwargs):
            check(bleak.BleakClient.write_gatt_char, char, data, *args, **kwargs)
            log["written"].append((char.uuid, bytes(data), kwargs))

        async def disconnect(self):
            pass

    class Scanner:
        def __init__(self, *args, **kwargs):
            check(bleak.BleakScanner.__init__, *args, **kwargs)
            self.callback = args[0] if args else kwargs["detection_callback"]
            log["scanner"] = self

        async def start(self):
            pass

        async def stop(self):
            pass

    fake = types.SimpleNamespace(BleakClient=Client, BleakScanner=Scanner)
    monkeypatch.setitem(sys.modules, "bleak", fake)
    return log


def test_the_bleak_back_end_against_bleaks_interface(monkeypatch):
    log = _fake_bleak(monkeypatch)

    async def scenario():
        got, handler = await _collector()
        transport = BleTransport(BleakCentral("hci1"), reconnect_s=0.2)
        await transport.start(handler)
        try:
            device = types.SimpleNamespace(address="aa:bb:cc:dd:ee:ff")
            adv = types.SimpleNamespace(rssi=-61, service_uuids=[SERVICE_UUID.upper()])
            log["scanner"].callback(device, adv)
            await asyncio.wait_for(transport.connected.wait(), 5)
            peer = "AA:BB:CC:DD:EE:FF"
            to = Address("ble", peer)
            assert transport.max_frame_for(to) == 182
            await transport.send(b"\x40hi", to)
            assert log["written"] == [(RX_UUID, b"\x40hi", {"response": False})]
            with pytest.raises(TransportError, match="183 bytes > 182"):
                await transport.send(bytes(183), to)
            log["notify"](None, bytearray(b"\x41up"))
            await _until(lambda: got)
            assert got[0].frame == b"\x41up" and got[0].source == to
            assert got[0].radio == {"mtu": 185, "rssi": -61}
            log["disconnected"]()
            assert transport.drops == {"too_long": 1, "disconnected": 1}
            assert not transport.links
        finally:
            await transport.stop()

    run(scenario())
