"""The MQTT bridge against a real broker (mosquitto, started by the test): a backlog
larger than its publish window (gateway/mqtt.py INFLIGHT), as after a broker outage,
reaches the application whole, once and in order, and only then is marked published."""

import asyncio
import base64
import json

import aiomqtt

from sealink import crypto
from sealink_gateway.authority import Authority
from sealink_gateway.mqtt import BATCH, INFLIGHT, MqttBridge
from sealink_gateway.service import Gateway
from sealink_gateway.store import Store


def test_a_backlog_larger_than_the_window_is_published_once_and_in_order(tmp_path, mosquitto):
    store = Store(tmp_path / "state.db")
    token, _ = store.create_token({"site": "quay"}, 3600)
    device = store.enroll(token, crypto.x25519_base(crypto.random_bytes(32)))
    total = BATCH + 3 * INFLIGHT + 5  # more than a batch, and many windows
    ids = store.add_uplinks([(device.id, b"reading %05d" % i, {"rssi": -100 - i % 7})
                             for i in range(total)])
    gateway = Gateway(store, crypto.random_bytes(32),
                      Authority.load_or_create(tmp_path / "authority.pem"), [])

    async def scenario():
        async with aiomqtt.Client("127.0.0.1", mosquitto) as app:
            await app.subscribe("sealink/+/up", qos=1)
            bridge = MqttBridge(gateway, "127.0.0.1", mosquitto)
            await bridge.start()
            got = []
            try:
                async with asyncio.timeout(60):
                    async for message in app.messages:
                        got.append(json.loads(message.payload))
                        if len(got) == total:
                            break
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
            return got, extra, bridge.published

    got, extra, published = asyncio.run(scenario())
    assert extra == []
    assert [u["uplink_id"] for u in got] == ids
    assert [base64.b64decode(u["payload"]) for u in got] == [b"reading %05d" % i
                                                            for i in range(total)]
    assert got[7]["radio"] == {"rssi": -100}
    assert published == total
    assert store.uplinks(unpublished=True, limit=total) == []
