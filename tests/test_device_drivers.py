"""The device radio drivers, frozen into the unix firmware and run there: the BLE
peripheral on a fake of MicroPython's `bluetooth` module, the micropython-lib LoRa modem
wrapper on a fake modem, and the UDP driver against the real gateway over loopback."""

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from devices import BUILD, UnixDevice
from sealink import crypto
from sealink_gateway.authority import Authority
from sealink_gateway.service import Gateway
from sealink_gateway.store import Store
from sealink_gateway.transport.udp import UdpTransport

FAKES = Path(__file__).resolve().parent / "fake_bluetooth"


@pytest.fixture
def device():
    d = UnixDevice(env={"MICROPYPATH": f".frozen:{FAKES}"})
    yield d
    d.close()


BLE_SCRIPT = """
import asyncio, bluetooth
from sealink.drivers.ble import BlePeripheral, SERVICE_UUID
from sealink.drivers.rak3172 import ModemError
ble = bluetooth.BLE()
p = BlePeripheral(ble, name="node-7")

async def main():
    out = {}
    await p.start()
    (svc_uuid, chars), = ble.services
    out["service"] = svc_uuid == bluetooth.UUID(SERVICE_UUID)
    out["flags"] = [c[1] for c in chars]
    out["adverts"] = len(ble.adverts)
    out["mtu_before"] = p.mtu
    try:
        await p.send(b"x")
    except ModemError as e:
        out["unconnected"] = str(e)
    ble.central_connect(64)
    ble.central_mtu(247)
    out["mtu"] = p.mtu
    rx, tx = 12, 14
    ble.central_write(rx, b"\\x40" * 244)
    frame, _, _ = await p.recv()
    out["rx_len"] = len(frame)
    await p.send(b"\\x41" * 244)
    try:
        await p.send(b"\\x41" * 245)
    except ModemError as e:
        out["oversized"] = str(e)
    out["notified"] = [(c, h, len(d)) for c, h, d in ble.notified]
    for i in range(10):  # more than the driver queues: the oldest are dropped, counted
        ble.central_write(rx, bytes((0x40, i)))
    got = []
    while p._rx:
        got.append((await p.recv())[0][1])
    out["kept"] = got
    ble.central_disconnect()
    out["readvertised"] = len(ble.adverts)
    out["stats"] = p.stats
    print(repr(out))

asyncio.run(main())
"""


def test_ble_peripheral_driver_on_firmware(device):
    out = eval(device.exec(BLE_SCRIPT))  # the device printed a repr of plain data
    assert out["service"] and out["flags"] == [0x0008 | 0x0004, 0x0010]
    assert out["adverts"] == 1 and out["mtu_before"] == 20
    assert "no central connected" in out["unconnected"]
    assert out["mtu"] == 244 and out["rx_len"] == 244
    assert "245 bytes (link carries 244)" in out["oversized"]
    assert out["notified"] == [(64, 14, 244)]
    assert out["kept"] == [2, 3, 4, 5, 6, 7, 8, 9]  # queue of 8
    assert out["readvertised"] == 2  # advertising again after the central left
    assert out["stats"]["rx_overflow"] == 2 and out["stats"]["disconnects"] == 1


MODEM_SCRIPT = """
import asyncio, time
from sealink.drivers.lora_modem import LoRaModem
from sealink.drivers.rak3172 import ModemError

class RxPacket(bytes):  # as micropython-lib's lora returns them
    pass

class FakeAsyncModem:  # the micropython-lib AsyncModem API the driver uses
    def __init__(self):
        self.sent = []
        self.queue = []
        self.cfg = {}
    def configure(self, cfg):
        self.cfg.update(cfg)
    def get_time_on_air_us(self, n):
        return 2000 * n  # 2 ms per byte: easy to check
    async def send(self, buf):
        self.sent.append((time.ticks_ms(), bytes(buf)))
    async def recv(self, timeout_ms=None):
        while not self.queue:
            await asyncio.sleep_ms(5)
        return self.queue.pop(0)

async def main():
    m = FakeAsyncModem()
    radio = LoRaModem(m, sf=12, duty_cycle=0.1)
    await radio.start()
    out = {"mtu": radio.mtu, "cfg": m.cfg}
    try:
        await radio.send(bytes(64))
    except ModemError as e:
        out["too_long"] = str(e)
    await radio.send(bytes(9))   # 10 bytes with the MHDR, 20 ms: at 10 %, 180 ms off
    await radio.send(bytes(9))
    out["gap_ms"] = time.ticks_diff(m.sent[1][0], m.sent[0][0])
    out["first_byte"] = m.sent[0][1][0]
    out["airtime_us"] = radio.airtime_us
    bad = RxPacket(b"\\xf4junk"); bad.valid_crc = False; bad.rssi = -90; bad.snr = 3
    lorawan = RxPacket(b"\\x60\\x01\\x02\\x03\\x04"); lorawan.valid_crc = True
    good = RxPacket(b"\\xf4\\x40ok"); good.valid_crc = True; good.rssi = -71; good.snr = 8
    m.queue += [None, bad, lorawan, good]
    out["rx"] = await radio.recv()
    out["stats"] = radio.stats
    print(repr(out))

asyncio.run(main())
"""


def test_lora_modem_wrapper_on_firmware(device):
    out = eval(device.exec(MODEM_SCRIPT))
    # EU868 DR0: a 64-byte PHYPayload, 63 bytes of Sealink frame after the MHDR.
    assert out["mtu"] == 63 and "64 bytes (limit 63 at SF12)" in out["too_long"]
    assert out["cfg"] == {"invert_iq_rx": True, "invert_iq_tx": False}
    assert out["first_byte"] == 0xF4  # a LoRaWAN proprietary frame
    assert 175 <= out["gap_ms"] <= 400  # the duty-cycle wait, then the second frame
    assert out["airtime_us"] == 40000
    assert out["rx"] == (b"\x40ok", -71, 8)  # the downlink for a LoRaWAN device skipped
    assert out["stats"]["crc_errors"] == 1 and out["stats"]["duty_wait_ms"] >= 170
    assert out["stats"]["foreign"] == 1


UDP_DEVICE = """
import asyncio
from sealink.device import Device, Keystore
from sealink.drivers.udp import Udp

async def main():
    radio = Udp("127.0.0.1", {port})
    await radio.start()
    device = Device(radio, Keystore({keystore!r}),
                    {{"token": {token!r}, "gateway_key": {gateway_key!r}, "retry_ms": 500}})
    await device.connect(20000)
    await device.send(b"over ip")
    command = await asyncio.wait_for(device.commands().__anext__(), 20)
    await device.send(b"done " + command)
    ok = await device.flush(20000)
    print("RESULT", ok, device.keystore.sid)

asyncio.run(main())
"""


def test_udp_driver_on_firmware_against_the_gateway(tmp_path):
    binary = BUILD / "UNIX" / "micropython"

    async def scenario():
        transport = UdpTransport("127.0.0.1", 0)
        gw = Gateway(Store(tmp_path / "gw.db"), crypto.random_bytes(32),
                     Authority.load_or_create(tmp_path / "authority.pem"), [transport])
        await gw.start()
        token, _ = gw.store.create_token({"net": "ip"}, 3600)
        code = UDP_DEVICE.format(port=transport.port, token=token.encode(),
                                 gateway_key=gw.public_key,
                                 keystore=str(tmp_path / "device.json"))
        proc = await asyncio.create_subprocess_exec(
            str(binary), "-c", code, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=dict(os.environ, MICROPYPATH=".frozen"))
        try:
            deadline = time.monotonic() + 30
            while not gw.store.uplinks() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            (row,) = gw.store.devices()
            await gw.send(row.id, b"reboot")
            out, _ = await asyncio.wait_for(proc.communicate(), 40)
        finally:
            if proc.returncode is None:
                proc.kill()
            await gw.stop()
        return out.decode(), row, [u["payload"] for u in gw.store.uplinks(row.id)]

    out, row, payloads = asyncio.run(asyncio.wait_for(scenario(), 90))
    assert f"RESULT True {row.sid}" in out, out
    assert payloads == [b"over ip", b"done reboot"]
    assert json.loads((tmp_path / "device.json").read_text())["sid"] == row.sid


ROTATION_DEVICE = """
import asyncio
from sealink.device import Device, Keystore
from sealink.drivers.udp import Udp

async def main():
    radio = Udp("127.0.0.1", {port})
    await radio.start()
    device = Device(radio, Keystore({keystore!r}),
                    {{"token": {token!r}, "gateway_key": {gateway_key!r}, "retry_ms": 500}})
    await device.connect(20000)
    await device.send({text!r})
    ok = await device.flush(20000)
    for _ in range({wait}):  # a credential, when one is expected (the gateway repeats it)
        if device.stats.get("gateway_key_updates"):
            break
        if _ % 20 == 19:
            await device.send(b"still here")  # its answer carries the credential again
            await device.flush(20000)
        await asyncio.sleep(0.05)
    print("RESULT", ok, device.stats.get("gateway_key_updates", 0),
          device.keystore.gateway_key.hex())

asyncio.run(main())
"""


async def _boot_rotation_device(keystore, port, token, gateway_key, text, wait=0):
    """One boot of the unix firmware running ROTATION_DEVICE: its output."""
    code = ROTATION_DEVICE.format(port=port, token=token, gateway_key=gateway_key,
                                  keystore=str(keystore), text=text, wait=wait)
    proc = await asyncio.create_subprocess_exec(
        str(BUILD / "UNIX" / "micropython"), "-c", code, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=dict(os.environ, MICROPYPATH=".frozen"))
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 40)
    finally:
        if proc.returncode is None:
            proc.kill()
    return out.decode()


def test_gateway_key_rotation_on_firmware(tmp_path):
    """The unix firmware (frozen device stack) follows a rotation of the gateway key:
    enrolled under the first key, told the new one in a session under the old key,
    then reconnecting under the new one, across three boots."""
    keystore = tmp_path / "device.json"

    def boot(*args, **kw):
        return _boot_rotation_device(keystore, *args, **kw)

    async def scenario():
        transport = UdpTransport("127.0.0.1", 0)
        gw = Gateway(Store(tmp_path / "gw.db"), crypto.random_bytes(32),
                     Authority.load_or_create(tmp_path / "authority.pem"), [transport])
        await gw.start()
        try:
            token, _ = gw.store.create_token({"net": "ip"}, 3600)
            old = gw.public_key
            outs = [await boot(transport.port, token.encode(), old, b"enrolled")]
            gw.rotate_static(crypto.random_bytes(32), time.time() + 3600)
            outs.append(await boot(transport.port, b"", old, b"told", wait=200))
            outs.append(await boot(transport.port, b"", old, b"followed"))
            (row,) = gw.store.devices()
            await asyncio.sleep(0.2)  # the group commit
            sessions = gw.store.sessions(row.id)
            return outs, old, gw.public_key, sessions, [
                u["payload"] for u in gw.store.uplinks(row.id)]
        finally:
            await gw.stop()

    outs, old, new, sessions, payloads = asyncio.run(asyncio.wait_for(scenario(), 150))
    assert f"RESULT True 0 {old.hex()}" in outs[0], outs[0]
    assert f"RESULT True 1 {new.hex()}" in outs[1], outs[1]
    assert f"RESULT True 0 {new.hex()}" in outs[2], outs[2]
    assert [p for p in payloads if p != b"still here"] == [b"enrolled", b"told", b"followed"]
    assert [s["pattern"] for s in sessions] == ["KK", "KK", "XK"]


def test_device_key_rotation_on_firmware(tmp_path):
    """The unix firmware rotates its own static key on request: enrolled at the first
    boot, asked and offering its next key at the second, under the new key from the
    third on (the gateway's record follows)."""
    keystore = tmp_path / "device.json"

    def boot(*args, **kw):
        return _boot_rotation_device(keystore, *args, **kw)

    async def scenario():
        transport = UdpTransport("127.0.0.1", 0)
        gw = Gateway(Store(tmp_path / "gw.db"), crypto.random_bytes(32),
                     Authority.load_or_create(tmp_path / "authority.pem"), [transport])
        await gw.start()
        try:
            token, _ = gw.store.create_token({"net": "ip"}, 3600)
            outs = [await boot(transport.port, token.encode(), gw.public_key, b"enrolled")]
            (row,) = gw.store.devices()
            first = json.loads(keystore.read_text())
            gw.store.request_key_rotation(row.id)
            outs.append(await boot(transport.port, b"", gw.public_key, b"asked"))
            offered = json.loads(keystore.read_text())
            outs.append(await boot(transport.port, b"", gw.public_key, b"rotated"))
            await asyncio.sleep(0.2)  # the group commit
            return (outs, first, offered, json.loads(keystore.read_text()),
                    gw.store.device(row.id), gw.store.key_rotation(row.id),
                    [u["payload"] for u in gw.store.uplinks(row.id)])
        finally:
            await gw.stop()

    outs, first, offered, after, device, rotation, payloads = asyncio.run(
        asyncio.wait_for(scenario(), 150))
    assert all("RESULT True" in o for o in outs), outs
    assert offered["secret"] == first["secret"] and offered["next_secret"]
    assert after["secret"] == offered["next_secret"] and "next_secret" not in after
    assert device.static_key == crypto.x25519_base(bytes.fromhex(after["secret"]))
    assert rotation == (None, None)
    assert payloads == [b"enrolled", b"asked", b"rotated"]
