"""Sealink over LoRaWAN: the gateway's chirpstack-mqtt:// transport against a real
mosquitto, with messages built from the chirpstack-api package's types (JSON and
protobuf), and a device whose RAK3172 runs LoRaWAN, through the modeled network server
(sim.network_server), which carries only Sealink ciphertext."""

import asyncio
import base64
import json
import logging
import uuid

import aiomqtt
import pytest
from chirpstack_api import api, integration
from google.protobuf import json_format

from sealink import crypto
from sealink.device import Device, Keystore
from sealink.drivers.rak3172_lorawan import APP_LIMITS, Rak3172Lorawan
from sealink.session import Channel
from sealink_gateway import regions
from sealink_gateway.authority import Authority
from sealink_gateway.service import Gateway
from sealink_gateway.store import Store
from sealink_gateway.transport import Address, TransportError, Uplink
from sealink_gateway.transport.chirpstack import ChirpStackTransport, downlink_command
from sim import lorawan
from sim.broker import Mosquitto
from sim.lora import Clock, LoRaAir, Params, Radio
from sim.network_server import NetworkServer, OtaaDevice, abp_session
from sim.rak3172 import Rak3172Model
from sim.uart import pipe

APP = "9c1b5f8e-0000-4000-8000-sealink00001"
DEV_EUI = "70b3d57ed0000001"


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path)
    yield b.port
    b.stop()


def uplink_event(data: bytes, fport: int = 200, dr: int = 5, dev_eui: str = DEV_EUI):
    event = integration.UplinkEvent(
        device_info=integration.DeviceInfo(application_id=APP, dev_eui=dev_eui,
                                           device_name="sensor"),
        dr=dr, f_cnt=7, f_port=fport, data=data)
    rx = event.rx_info.add()
    rx.gateway_id, rx.rssi, rx.snr = "0016c001ff10a235", -97, 6.5
    event.tx_info.frequency = 868_300_000
    return event


@pytest.mark.parametrize("fmt", ["json", "protobuf"])
def test_uplink_events_in_and_downlink_commands_out(broker, fmt):
    """The transport takes the application's uplink events on its FPort, ignores other
    FPorts and counts malformed events, and enqueues answers as DeviceQueueItems."""
    async def scenario():
        got = []

        async def handler(up):
            got.append(up)

        t = ChirpStackTransport("127.0.0.1", broker, APP, fport=200, fmt=fmt)
        await t.start(handler)
        async with aiomqtt.Client("127.0.0.1", broker) as ns:
            await ns.subscribe(f"application/{APP}/device/+/command/down", qos=1)

            def encode(event):
                return (json_format.MessageToJson(event).encode() if fmt == "json"
                        else event.SerializeToString())

            topic = f"application/{APP}/device/{DEV_EUI}/event/up"
            await ns.publish(topic, encode(uplink_event(b"\x40\x01\x02sealink")), qos=1)
            await ns.publish(topic, encode(uplink_event(b"other app", fport=10)), qos=1)
            await ns.publish(topic, b"\x00not an event", qos=1)
            for _ in range(100):
                if got and t.drops:
                    break
                await asyncio.sleep(0.02)
            (up,) = got
            assert up.frame == b"\x40\x01\x02sealink"
            assert up.source == Address("chirpstack-mqtt", DEV_EUI)
            assert up.radio["dr"] == 5 and up.radio["rssi"] == -97
            assert t.mtu_for(up) == 222  # EU868 DR5: N
            await t.send(b"\x40\x01\x02answer", up.source, up)
            with pytest.raises(TransportError, match="too_long"):
                await t.send(bytes(223), up.source, up)
            message = await asyncio.wait_for(anext(aiter(ns.messages)), 5)
            item = api.DeviceQueueItem()
            if fmt == "json":
                json_format.Parse(message.payload, item)
                body = json.loads(message.payload)
                assert uuid.UUID(body.pop("id"))  # the queue item's id, for its txack
                assert body == {"devEui": DEV_EUI, "fPort": 200,
                                "data": base64.b64encode(b"\x40\x01\x02answer").decode()}
            else:
                item.ParseFromString(message.payload)
            assert str(message.topic) == f"application/{APP}/device/{DEV_EUI}/command/down"
            assert (item.dev_eui, item.f_port, item.data) == (DEV_EUI, 200,
                                                              b"\x40\x01\x02answer")
        await t.stop()
        return t

    t = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert t.ignored == {"other_fport": 1} and t.drops == {fmt: 1}


@pytest.mark.parametrize("fmt", ["json", "protobuf"])
def test_a_frame_still_queued_is_not_enqueued_again(broker, fmt):
    """The network server sends one queued item per uplink: a device that asks again
    for an answer still in its queue (a handshake message repeated) must not get a
    second copy queued behind the first, or its queue grows by a frame per uplink.
    Once the network server reports the item sent (txack), the frame may go again."""
    async def scenario():
        t = ChirpStackTransport("127.0.0.1", broker, APP, fport=200, fmt=fmt)
        await t.start(lambda up: None)
        to = Address("chirpstack-mqtt", DEV_EUI)
        async with aiomqtt.Client("127.0.0.1", broker) as ns:
            await ns.subscribe(f"application/{APP}/device/+/command/down", qos=1)
            messages = aiter(ns.messages)

            async def enqueued():
                message = await asyncio.wait_for(anext(messages), 5)
                item = api.DeviceQueueItem()
                if fmt == "json":
                    json_format.Parse(message.payload, item)
                else:
                    item.ParseFromString(message.payload)
                return item

            await t.send(b"\x20\x01\x02message 2, part 1", to)
            await t.send(b"\x20\x01\x02message 2, part 2", to)
            first, second = await enqueued(), await enqueued()
            await t.send(b"\x20\x01\x02message 2, part 1", to)  # asked again: queued
            assert (t.enqueued, t.already_queued) == (2, 1)
            # A malformed txack, and one for an item nobody queued: counted, nothing
            # taken off the queue.
            txack = f"application/{APP}/device/{DEV_EUI}/event/txack"
            await ns.publish(txack, b"\x00not an event" if fmt == "protobuf"
                             else b"{not json", qos=1)
            stray = integration.TxAckEvent(queue_item_id=str(uuid.uuid4()))
            await ns.publish(txack, json_format.MessageToJson(stray).encode()
                             if fmt == "json" else stray.SerializeToString(), qos=1)
            for _ in range(100):
                if t.drops:
                    break
                await asyncio.sleep(0.02)
            assert t.drops == {fmt: 1} and t.tx_acked == 0
            await t.send(b"\x20\x01\x02message 2, part 1", to)  # still queued
            assert (t.enqueued, t.already_queued) == (2, 2)
            ack = integration.TxAckEvent(queue_item_id=first.id, f_cnt_down=0)
            ack.device_info.dev_eui = DEV_EUI
            await ns.publish(f"application/{APP}/device/{DEV_EUI}/event/txack",
                             json_format.MessageToJson(ack).encode() if fmt == "json"
                             else ack.SerializeToString(), qos=1)
            for _ in range(100):
                if t.tx_acked:
                    break
                await asyncio.sleep(0.02)
            assert t.tx_acked == 1
            await t.send(b"\x20\x01\x02message 2, part 1", to)  # sent: may go again
            again = await enqueued()
            assert again.data == first.data and again.id not in (first.id, second.id)
            await t.send(b"\x20\x01\x02message 2, part 2", to)  # still queued
            assert (t.enqueued, t.already_queued) == (3, 3)
        await t.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_lorawan_codec_agrees_with_an_independent_implementation(tmp_path):
    """sim.lorawan against lora-mote-emulator's uplinks: the same frame header, FPort
    and encrypted FRMPayload, and its MIC's second half (LoRaWAN 1.1 keeps the 1.0 MIC
    over B0 there, under FNwkSIntKey) is the 1.0 MIC's first half."""
    from src.mac import Mote

    nwk, app = bytes(range(16)), bytes(range(16, 32))
    mote = Mote.abp(dbpath=tmp_path, devaddr="26011bda", nwksenckey=nwk.hex(),
                    snwksintkey=nwk.hex(), fnwksintkey=nwk.hex(), appskey=app.hex(),
                    fcntup=41, version="1.0.2", joineui="00" * 8, deveui=DEV_EUI,
                    appkey="00" * 16, nwkkey="00" * 16)
    payload = b"a Sealink frame, encrypted twice over"
    theirs = mote.form_phypld(200, payload, unconfirmed=True)
    ours = lorawan.encode(lorawan.UNCONFIRMED_UP, 0x26011BDA, 41, 200, payload, nwk, app)
    assert ours[:-4] == theirs[:-4] and ours[-4:-2] == theirs[-2:]
    frame = lorawan.decode(ours, nwk, app)
    assert (frame.dev_addr, frame.fcnt, frame.fport, frame.payload) == (
        0x26011BDA, 41, 200, payload)
    with pytest.raises(lorawan.FrameError, match="MIC"):
        lorawan.decode(ours[:-1] + bytes((ours[-1] ^ 1,)), nwk, app)


def test_us915_dr0_frames_fragment_to_eleven_bytes():
    """US915 DR0 carries 11 bytes of application payload: the channel fragments every
    handshake message and message to it, and XK first contact still completes."""
    assert APP_LIMITS["US915"][0] == 11 == regions.region("US915").rate(0).max_application
    gs, ds = crypto.random_bytes(32), crypto.random_bytes(32)
    from sealink.device import first_contact_payload

    dev = Channel(True, ds, rs=crypto.x25519_base(gs), sid=0x9001, mtu=11,
                  handshake_payload=first_contact_payload(b"00112233445566778899aabbccddeeff"))
    gw = Channel(False, gs, sid=0x9001, mtu=11)
    gw.handshake_payload = b"\x01\x23"
    frames, sizes = dev.connect(0, "XK"), []
    while frames:
        sizes += [len(f) for f in frames]
        replies = [r for f in frames for r in gw.receive(f, 0)[1]]
        sizes += [len(f) for f in replies]
        frames = [r for f in replies for r in dev.receive(f, 0)[1]]
    assert dev.state == gw.state == "established" and max(sizes) == 11
    data = dev.send(b"soil moisture 31 %", 0)
    assert len(data) > 1 and all(len(f) <= 11 for f in data)
    assert [p for f in data for p in gw.receive(f, 0)[0]] == [b"soil moisture 31 %"]


@pytest.mark.parametrize("activation", ["otaa", "abp"])
def test_device_enrolls_over_lorawan_through_the_network_server(tmp_path, broker, caplog,
                                                                activation):
    """A device with a RAK3172 in LoRaWAN mode (joined over the air with AT+JOIN, or
    activated by personalization; EU868 DR3) enrolls, sends telemetry and takes a
    command: its frames cross the modeled network server and the MQTT broker in both
    directions, and the network server sees only ciphertext."""
    caplog.set_level(logging.WARNING)

    async def scenario():
        clock = Clock(50)
        air = LoRaAir(clock, seed=3)
        store = Store(tmp_path / "gw.db")
        t = ChirpStackTransport("127.0.0.1", broker, APP)
        gw = Gateway(store, crypto.random_bytes(32), Authority.load_or_create(tmp_path / "a"),
                     [t], retry_ms=4000)
        await gw.start()
        ns = NetworkServer(air, air.attach(Radio("ns-gateway", (0, 0), Params(sf=9))),
                           ("127.0.0.1", broker), APP, rx1_delay_s=5.0, join_delay_s=5.0)
        await ns.start()
        if activation == "abp":
            session = abp_session("sensor", 0x26001234)
            ns.add_device(session)
            keys = {"devaddr": "26001234", "nwkskey": session.nwk_s_key.hex(),
                    "appskey": session.app_s_key.hex()}
        else:
            app_key = crypto.random_bytes(16)
            ns.add_otaa_device(OtaaDevice(DEV_EUI, bytes(8), app_key, "sensor"))
            keys = {"deveui": DEV_EUI, "appeui": "00" * 8, "appkey": app_key.hex()}
        device_side, module_side = pipe()
        model = Rak3172Model(air, air.attach(Radio("module", (800, 0))), *module_side,
                             rx1_delay_s=5.0, rx_margin_s=0.5, join_delay_s=5.0)
        model.start()
        radio = Rak3172Lorawan(*device_side, keys, fport=200, dr=3)
        await radio.start()
        assert radio.mtu == 115 and model.mode == 1
        token, _ = store.create_token({"site": "orchard"}, 3600)
        device = Device(radio, Keystore(), {"token": token.encode(),
                                            "gateway_key": gw.public_key, "retry_ms": 4000})
        heard = []
        original = ns._publish

        async def spy(s, frame, *a):
            heard.append(frame.payload)
            await original(s, frame, *a)

        ns._publish = spy
        await device.connect(60000)
        await device.send(b"t=21.5")
        assert await device.flush(60000)
        (row,) = store.devices()
        await gw.send(row.id, b"valve=open")
        while True:  # a class A device asks for its downlinks by transmitting
            try:
                command = await asyncio.wait_for(device.commands().__anext__(), 2)
                break
            except TimeoutError:
                await device.ping()
        await device.send(b"done")
        assert await device.flush(60000)
        device.close()
        radio.close()
        model.stop()
        ns.stop()
        await gw.stop()
        return command, row, store.uplinks(row.id), heard, ns, device

    command, row, uplinks, heard, ns, device = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert command == b"valve=open" and row.attributes == {"site": "orchard"}
    assert [u["payload"] for u in uplinks] == [b"t=21.5", b"done"]
    assert uplinks[0]["radio"]["network_server"] == "chirpstack"
    # What the network server decrypted is Sealink's frames: no plaintext in it.
    assert heard and not any(b"t=21.5" in h or b"done" in h for h in heard)
    assert ns.stats["downlinks"] > 0 and ns.stats["mic_failed"] == 0
    # OTAA joins at least once (again when a join accept missed the module's window:
    # the module retries, as RUI3 does; whether it misses depends on the host's timing
    # on the compressed clock); ABP never does.
    if activation == "otaa":
        assert ns.stats["joins"] >= 1
    else:
        assert ns.stats["joins"] == 0
    assert device.keystore.enrolled


def test_downlink_command_is_a_device_queue_item():
    body = downlink_command(DEV_EUI, 200, b"\x01\x02", "json")
    assert json.loads(body) == {"devEui": DEV_EUI, "fPort": 200, "data": "AQI="}
    item = api.DeviceQueueItem.FromString(downlink_command(DEV_EUI, 200, b"\x01", "protobuf"))
    assert (item.dev_eui, item.f_port, item.data, item.confirmed) == (DEV_EUI, 200, b"\x01",
                                                                      False)
    up = Uplink(b"", Address("chirpstack-mqtt", DEV_EUI), 0.0, {"dr": 0})
    assert ChirpStackTransport("h", 1, APP, region="US915").mtu_for(up) == 11


def test_join_codec_agrees_with_an_independent_implementation(tmp_path):
    """OTAA (LoRaWAN 1.0.x): sim.lorawan's join request is lora-mote-emulator's byte for
    byte; its join accept is one lora-mote-emulator reads, deriving the same session
    keys."""
    from src.mac import Mote

    app_key = bytes(range(16))
    mote = Mote(joineui="0102030405060708", deveui=DEV_EUI, appkey=app_key.hex(),
                nwkkey=app_key.hex(), dbpath=tmp_path)
    request = mote.form_join()
    assert request == lorawan.join_request(bytes.fromhex("0102030405060708"),
                                           bytes.fromhex(DEV_EUI), mote.devnonce, app_key)
    lorawan.check_join_request(request, app_key)
    accept = lorawan.join_accept(app_key, 0x123456, 0x13, 0x26012345)
    mote.parse_phypld(memoryview(accept))
    nwk, app = lorawan.session_keys(app_key, 0x123456, 0x13, mote.devnonce)
    assert (mote.devaddr.hex(), mote.appskey, mote.fnwksintkey) == ("26012345", app, nwk)
    assert lorawan.read_join_accept(accept, app_key) == (0x123456, 0x13, 0x26012345)
    with pytest.raises(lorawan.FrameError):
        lorawan.read_join_accept(accept, bytes(16))
