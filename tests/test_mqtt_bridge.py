"""The MQTT bridge against a real broker (mosquitto, started by the test): a backlog
larger than its publish window (gateway/mqtt.py INFLIGHT), as after a broker outage,
reaches the application whole, once and in order, and only then is marked published; a
broker restarted in the middle of a backlog loses none of it."""

import asyncio
import base64
import json

import aiomqtt
import pytest

from sealink import crypto
from sealink_gateway.authority import Authority
from sealink_gateway.mqtt import BATCH, INFLIGHT, MqttBridge
from sealink_gateway.service import Gateway
from sealink_gateway.store import Store
from sim.broker import Mosquitto


def _backlog(tmp_path, total):
    # A gateway whose store holds `total` uplinks of one device, none published yet.
    store = Store(tmp_path / "state.db")
    token, _ = store.create_token({"site": "quay"}, 3600)
    device = store.enroll(token, crypto.x25519_base(crypto.random_bytes(32)))
    ids = store.add_uplinks([(device.id, b"reading %05d" % i, {"rssi": -100 - i % 7})
                             for i in range(total)])
    gateway = Gateway(store, crypto.random_bytes(32),
                      Authority.load_or_create(tmp_path / "authority.pem"), [])
    return store, device, ids, gateway


def test_a_backlog_larger_than_the_window_is_published_once_and_in_order(tmp_path, mosquitto):
    total = BATCH + 3 * INFLIGHT + 5  # more than a batch, and many windows
    store, device, ids, gateway = _backlog(tmp_path, total)

    async def scenario():
        async with aiomqtt.Client("127.0.0.1", mosquitto) as app:
            await app.subscribe("sealink/+/up", qos=1)
            bridge = MqttBridge(gateway, "127.0.0.1", mosquitto)
            await bridge.start()
            got, raws = [], []
            try:
                try:
                    async with asyncio.timeout(60):
                        async for message in app.messages:
                            raws.append(message.payload)
                            got.append(json.loads(message.payload))
                            if len(got) == total:
                                break
                except TimeoutError:
                    raise AssertionError(
                        f"{len(got)} of {total} uplinks reached the application in 60 s; the "
                        f"bridge marked {bridge.published} published, connected: "
                        f"{bridge.connected.is_set()}") from None
                # Nothing more arrives: each uplink was published once.
                extra = []
                try:
                    async with asyncio.timeout(0.5):
                        async for message in app.messages:
                            extra.append(message)
                except TimeoutError:
                    pass
                async with asyncio.timeout(10):
                    while bridge.published < total:
                        await asyncio.sleep(0.05)
            finally:
                await bridge.stop()
            return got, raws, extra, bridge.published

    got, raws, extra, published = asyncio.run(scenario())
    assert extra == []
    assert [u["uplink_id"] for u in got] == ids
    assert [base64.b64decode(u["payload"]) for u in got] == [b"reading %05d" % i
                                                            for i in range(total)]
    assert got[7]["radio"] == {"rssi": -100}
    # The envelope: the device's fields beside each uplink's, one JSON object, keys sorted.
    assert {(u["device"], json.dumps(u["attributes"]), u["attestation"]) for u in got} == {
        (device.id, json.dumps(device.attributes), None)}
    assert all(isinstance(u["received_at"], float) for u in got)
    assert [json.dumps(u, sort_keys=True).encode() for u in got] == raws
    assert published == total
    assert store.uplinks(unpublished=True, limit=total) == []


# aiomqtt registers paho's socket for writing with call_soon_threadsafe(add_writer): when
# the broker drops the connection in between, that late add_writer fails on the closed
# socket, and asyncio logs it.  Nothing is lost by it (the test shows it).
@pytest.mark.asyncio_error_allowed("BaseSelectorEventLoop.add_writer")
def test_a_broker_restart_in_the_middle_of_a_backlog_loses_no_uplink(tmp_path):
    # The application's session outlives the restart (a persistent session, QoS 1, on a
    # broker that keeps its state across the restart): what the bridge publishes reaches
    # it, before or after.  Uplinks in flight at the restart may come twice (QoS 1: at
    # least once); none may be missing, and all end marked published.
    broker = Mosquitto(tmp_path, persistent=True)
    total = 3 * BATCH
    store, _, ids, gateway = _backlog(tmp_path, total)

    def app():
        return aiomqtt.Client("127.0.0.1", broker.port, identifier="app",
                              clean_session=False)

    async def scenario():
        async with app() as client:
            await client.subscribe("sealink/+/up", qos=1)
        bridge = MqttBridge(gateway, "127.0.0.1", broker.port)
        await bridge.start()
        try:
            async with asyncio.timeout(60):
                while bridge.published == 0:  # the first batch is in; the next in flight
                    await asyncio.sleep(0.002)
            at_restart = bridge.published
            await asyncio.to_thread(broker.restart)
            got = set()
            async with app() as client, asyncio.timeout(60):
                async for message in client.messages:
                    got.add(json.loads(message.payload)["uplink_id"])
                    if len(got) == total:
                        break
            async with asyncio.timeout(30):
                while store.uplinks(unpublished=True, limit=1):
                    await asyncio.sleep(0.05)
        finally:
            await bridge.stop()
        return at_restart, got, bridge.published

    try:
        at_restart, got, published = asyncio.run(scenario())
    finally:
        broker.stop()
    assert 0 < at_restart < total  # the restart came in the middle of the backlog
    assert got == set(ids)
    assert published >= total
