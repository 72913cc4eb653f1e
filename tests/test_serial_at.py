"""The serial-at:// transport: the gateway drives a (modeled) RAK3172 on a real
pseudo-terminal through pyserial-asyncio, with the device driver the firmware freezes.
A device (the Device API over the same driver and another modeled module) enrolls,
sends, and takes a downlink over the modeled LoRa air; garbage on the serial line and
module errors are counted and survived."""

import asyncio
import contextlib

import pytest

from sealink import crypto
from sealink.device import Device, Keystore
from sealink.drivers.rak3172 import ModemError, Rak3172
from sealink_gateway.authority import Authority
from sealink_gateway.service import Gateway
from sealink_gateway.store import Store
from sealink_gateway.transport import TransportError
from sealink_gateway.transport.serial_at import SerialAtTransport
from sim.lora import Clock, LoRaAir, Params, Radio
from sim.rak3172 import Rak3172Model
from sim.uart import Pty, pipe

SCALE = 50.0  # modeled seconds per wall second: duty-cycle waits pass 50x faster


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@contextlib.asynccontextmanager
async def lora_site(tmp_path, sf=7, device_error_rate=0.0):
    air = LoRaAir(Clock(SCALE), seed=1, pcap=tmp_path / "air.pcap")
    pty = Pty()
    gw_module = Rak3172Model(air, air.attach(Radio("gateway-module", (0, 0))), pty.reader,
                             pty.writer)
    gw_module.start()
    transport = SerialAtTransport(pty.path, "rak3172", sf=sf)
    gw = Gateway(Store(tmp_path / "gw.db"), crypto.random_bytes(32),
                 Authority.load_or_create(tmp_path / "authority.pem"), [transport])
    await gw.start()
    (dev_side, module_side) = pipe()
    dev_module = Rak3172Model(air, air.attach(Radio("device-module", (300, 0))),
                              *module_side, error_rate=device_error_rate, seed=7)
    dev_module.start()
    radio = Rak3172(*dev_side, sf=sf)
    await radio.start()
    try:
        yield gw, transport, gw_module, radio, dev_module, air
    finally:
        await gw.stop()
        for m in (gw_module, dev_module):
            m.stop()
        radio.close()
        pty.close()
        air.close()


def test_enroll_uplink_downlink_over_a_serial_module(tmp_path):
    async def scenario():
        async with lora_site(tmp_path) as (gw, transport, gw_module, radio, _, air):
            assert transport.max_frame == 234  # SF7: EU868 DR5, 235 bytes less the MHDR
            token, _ = gw.store.create_token({"site": "pier"}, 3600)
            device = Device(radio, Keystore(str(tmp_path / "dev.key")),
                            {"token": token.encode(), "gateway_key": gw.public_key,
                             "retry_ms": 500})
            await device.connect(20000)
            await device.send(b"t=0")  # its acknowledgement confirms the enrollment
            assert await device.flush(20000)
            (row,) = gw.store.devices()
            assert device.keystore.sid == row.sid and row.attributes == {"site": "pier"}
            # The keystore file keeps what enrollment taught the device.
            again = Keystore(str(tmp_path / "dev.key"))
            assert (again.sid, again.gateway_key) == (row.sid, gw.public_key)

            for i in range(1, 3):
                await device.send(b"t=%d" % i)
            assert await device.flush(20000)
            assert [u["payload"] for u in gw.store.uplinks(row.id)] == [b"t=0", b"t=1", b"t=2"]
            up = gw.store.uplinks(row.id)[0]
            assert up["radio"]["datr"] == "SF7BW125" and up["radio"]["rssi"] < 0

            await gw.send(row.id, b"valve=open")
            command = await asyncio.wait_for(device.commands().__anext__(), 20)
            assert command == b"valve=open"

            # Garbage on the gateway's serial line: counted, and service goes on.
            gw_module.garbage(b"\x00\xff\xfe noise\r\n+EVT:RXP2P:-40:zz:GG\r\n" + b"x" * 900
                              + b"\r\n")
            await device.send(b"after noise")
            assert await device.flush(20000)
            assert gw.store.uplinks(row.id)[-1]["payload"] == b"after noise"
            drops = transport.drops
            assert drops["garbage"] >= 2 and drops["rx_bad"] == 1
            # Every frame went over the modeled air, and into the pcap.
            assert air.frames >= 8
            device.close()
        assert (tmp_path / "air.pcap").stat().st_size > 24 + air.frames * (16 + 15)

    run(scenario())


def test_module_errors_are_retried_and_nothing_is_lost(tmp_path):
    """A device module answering AT_ERROR to a third of its sends: the device's
    handshake and reliable retransmission carry every uplink through."""

    async def scenario():
        async with lora_site(tmp_path, device_error_rate=0.33) as (gw, _, _, radio, dm, _):
            token, _ = gw.store.create_token({}, 3600)
            device = Device(radio, Keystore(), {"token": token.encode(), "retry_ms": 400,
                                                "gateway_key": gw.public_key,
                                                "max_retries": 12})
            await device.connect(30000)
            for i in range(6):
                await device.send(b"m%d" % i)
            assert await device.flush(30000)
            (row,) = gw.store.devices()
            assert sorted(u["payload"] for u in gw.store.uplinks(row.id)) == [
                b"m%d" % i for i in range(6)]
            assert dm.stats["errors"] > 0 and device.stats["radio_errors"] > 0
            device.close()

    run(scenario(), 90)


def test_driver_reports_module_errors_and_silence():
    async def scenario():
        air = LoRaAir(Clock(SCALE), seed=2)
        a, b = pipe()
        model = Rak3172Model(air, air.attach(Radio("m", (0, 0))), *b)
        model.start()
        radio = Rak3172(*a, sf=12, timeout_ms=200, retries=1)
        # Not yet in P2P mode: P2P commands are refused with the module's status code.
        radio._task = asyncio.ensure_future(radio._read_loop())
        with pytest.raises(ModemError) as e:
            await radio.command("AT+PRECV=65533")
        assert e.value.status == "AT_MODE_NO_SUPPORT"
        await radio.start()
        # A device listens for downlinks: IQ inverted (its transmissions turn it off).
        assert model.mode == 0 and model.radio.params == Params(868_100_000, 12, 125, 1, 8, 14,
                                                                iq_inverted=True)
        assert model.radio.rx_iq_inverted is True
        with pytest.raises(ModemError, match="limit 63 at SF12"):
            await radio.send(bytes(64))
        with pytest.raises(ModemError) as e:
            await radio.command("AT+P2P=1:2:3")
        assert e.value.status == "AT_PARAM_ERROR"
        # Garbage from the device's side of the UART: the module answers it as the
        # real one does, and the next command works.
        await asyncio.sleep(0.2)  # the restart banner after AT+NWM=0 has come and gone
        before, noise = model.stats["errors"], radio.stats["garbage"]
        a[1].write(b"\x00\xff\xfegarbage\r\n+++\r\n")
        await asyncio.sleep(0.05)
        assert model.stats["errors"] == before + 2
        assert await radio.command("AT+NWM=?") == ["AT+NWM=0"]
        assert radio.stats["garbage"] == noise + 2  # the two replies nobody asked for
        model.silent = True
        with pytest.raises(ModemError) as e:
            await radio.command("AT")
        # Tried, then a resynchronising "AT" and one retry: three timeouts.
        assert e.value.status == "no answer" and radio.stats["timeouts"] == 3
        model.stop()
        radio.close()

    run(scenario())


def test_a_send_cut_short_by_stop_ends_as_stopped():
    """The gateway stops while a downlink waits on a module that has gone silent: the
    send ends as a TransportError("stopped"), which the gateway counts, not as an error
    about a module that is already gone."""

    async def scenario():
        air = LoRaAir(Clock(SCALE), seed=3)
        pty = Pty()
        model = Rak3172Model(air, air.attach(Radio("gateway-module", (0, 0))), pty.reader,
                             pty.writer)
        model.start()
        transport = SerialAtTransport(pty.path, "rak3172", sf=7)

        async def handler(uplink):
            pass

        try:
            await transport.start(handler)
            transport.modem.timeout_ms = 200
            model.silent = True
            send = asyncio.ensure_future(transport.send(b"x" * 20, transport.address))
            await asyncio.sleep(0.1)  # the send waits for the module's answer
            assert not send.done()
            await transport.stop()
            with pytest.raises(TransportError) as e:
                await send
            assert e.value.reason == "stopped"
        finally:
            model.stop()
            pty.close()
            air.close()

    run(scenario())
