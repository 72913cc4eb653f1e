"""The ble:// transport over bumble's virtual controllers (no hardware): the gateway as
central, a Sealink peripheral as device.  The ATT MTU is negotiated and held to, bad
notifications are counted and dropped, a lost link is counted and reconnected, and a
device (the Device API over the peripheral) enrolls, sends and takes a downlink."""

import asyncio
import contextlib

import pytest
from bumble.link import LocalLink

from sealink import crypto
from sealink.device import Device, Keystore
from sealink.drivers.rak3172 import ModemError
from sealink_gateway.authority import Authority
from sealink_gateway.service import Gateway
from sealink_gateway.store import Store
from sealink_gateway.transport import Address, TransportError
from sealink_gateway.transport.ble import BleTransport, BumbleCentral
from sim.ble import BlePeripheralRadio, SealinkPeripheral, virtual_device

DEVICE_ADDR = "F5:F4:F3:F2:F1:F0"


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def _until(predicate, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def ble_link(handler):
    link = LocalLink()
    peripheral = SealinkPeripheral(virtual_device(link, "sealink-dev", DEVICE_ADDR))
    await peripheral.start()
    transport = BleTransport(BumbleCentral(virtual_device(link, "gateway",
                                                          "F0:F1:F2:F3:F4:F5")),
                             [DEVICE_ADDR], reconnect_s=0.2)
    await transport.start(handler)
    await asyncio.wait_for(transport.connected.wait(), 10)
    await _until(lambda: peripheral.mtu > 23)
    try:
        yield transport, peripheral
    finally:
        await transport.stop()


def test_frames_both_ways_at_the_negotiated_mtu():
    async def scenario():
        got = []

        async def handler(up):
            got.append(up)

        async with ble_link(handler) as (transport, peripheral):
            link = transport.links[DEVICE_ADDR]
            assert link.mtu == peripheral.mtu == 247 and link.max_frame == 244
            to = Address("ble", DEVICE_ADDR)
            assert transport.max_frame_for(to) == 244
            # Central -> device, at the largest frame the link carries.
            await transport.send(b"\x40" * 244, to)
            assert await asyncio.wait_for(peripheral.recv(), 5) == b"\x40" * 244
            with pytest.raises(TransportError, match="245 bytes > 244"):
                await transport.send(bytes(245), to)
            # Device -> central.
            await peripheral.send(b"\x41hello")
            await _until(lambda: got)
            assert got[0].frame == b"\x41hello" and got[0].source == to
            assert got[0].radio == {"mtu": 247}
            with pytest.raises(ModemError, match="over the link's 244"):
                await peripheral.send(bytes(245))
            # A notification over the MTU and an empty one (a misbehaving peer stack;
            # bumble's server truncates to the MTU, so they are fed to the transport's
            # notification callback directly): dropped, counted; good frames still arrive.
            transport._received(DEVICE_ADDR, bytes(300))
            transport._received(DEVICE_ADDR, b"")
            await peripheral.send(b"\x41again")
            await _until(lambda: len(got) == 2)
            assert transport.drops == {"too_long": 1, "oversized": 1, "empty": 1}

    run(scenario())


def test_a_lost_link_is_counted_and_reconnected():
    async def scenario():
        async def handler(up):
            pass

        async with ble_link(handler) as (transport, peripheral):
            transport.connected.clear()
            await peripheral.drop_connection()
            await _until(lambda: transport.drops.get("disconnected") == 1)
            with pytest.raises(TransportError):
                await transport.send(b"x", Address("ble", DEVICE_ADDR))
            await asyncio.wait_for(transport.connected.wait(), 10)
            await _until(lambda: DEVICE_ADDR in transport.links)
            await transport.send(b"\x40back", Address("ble", DEVICE_ADDR))
            assert await asyncio.wait_for(peripheral.recv(), 5) == b"\x40back"
            assert peripheral.stats["disconnections"] == 1

    run(scenario())


def test_device_enrolls_sends_and_takes_a_downlink_over_ble(tmp_path):
    async def scenario():
        link = LocalLink()
        peripheral = SealinkPeripheral(virtual_device(link, "sealink-dev", DEVICE_ADDR))
        await peripheral.start()
        transport = BleTransport(BumbleCentral(virtual_device(link, "gateway",
                                                              "F0:F1:F2:F3:F4:F5")),
                                 [DEVICE_ADDR], reconnect_s=0.2)
        gw = Gateway(Store(tmp_path / "gw.db"), crypto.random_bytes(32),
                     Authority.load_or_create(tmp_path / "authority.pem"), [transport])
        await gw.start()
        try:
            await asyncio.wait_for(transport.connected.wait(), 10)
            await _until(lambda: peripheral.mtu == 247)
            token, _ = gw.store.create_token({"radio": "ble"}, 3600)
            device = Device(BlePeripheralRadio(peripheral), Keystore(),
                            {"token": token.encode(), "retry_ms": 500})
            assert device.mtu == 244
            await device.connect(15000)
            (row,) = gw.store.devices()
            assert row.attributes == {"radio": "ble"}
            # The gateway's session uses the link's frame size: one frame per message.
            assert gw.sessions[device.channel.sid].channel.mtu == 244
            await device.send(b"x" * 200)
            assert await device.flush(10000)
            assert gw.store.uplinks(row.id)[0]["payload"] == b"x" * 200
            await gw.send(row.id, b"blink")
            assert await asyncio.wait_for(device.commands().__anext__(), 10) == b"blink"
            device.close()
        finally:
            await gw.stop()

    run(scenario())
