"""The semtech-udp transport against a concentrator simulator speaking the Semtech UDP
packet-forwarder protocol over real UDP on loopback."""

import asyncio
import base64
import json
import os
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealink.lora import time_on_air_us
from sealink_gateway.transport import Address, TransportError
from sealink_gateway.transport.semtech_udp import (
    PULL_ACK,
    PULL_DATA,
    PULL_RESP,
    PUSH_ACK,
    PUSH_DATA,
    TX_ACK,
    SemtechUdpTransport,
    parse_datagram,
)

EUI = bytes.fromhex("b827ebfffe001122")


def rxpk(frame, sf=7, tmst=1_000_000, stat=1, **extra):
    return {"tmst": tmst, "freq": 868.1, "chan": 0, "rfch": 0, "stat": stat, "modu": "LORA",
            "datr": f"SF{sf}BW125", "codr": "4/5", "rssi": -57, "lsnr": 9.5,
            "size": len(frame), "data": base64.b64encode(frame).decode(), **extra}


def push(token, *packets):
    return bytes((2,)) + token + bytes((PUSH_DATA,)) + EUI + json.dumps(
        {"rxpk": list(packets)}).encode()


class Concentrator:
    def __init__(self, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.addr = ("127.0.0.1", port)

    def send(self, data):
        self.sock.sendto(data, self.addr)

    async def recv(self, timeout=5.0):
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.sock_recv(self.sock, 4096), timeout)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_uplinks_acks_and_class_a_downlinks():
    async def scenario():
        got = []

        async def handler(up):
            got.append(up)

        t = SemtechUdpTransport("127.0.0.1", 0, rx1_delay_s=1.0)
        await t.start(handler)
        c = Concentrator(t.port)
        c.send(bytes((2,)) + b"\x12\x34" + bytes((PULL_DATA,)) + EUI)
        assert await c.recv() == bytes((2,)) + b"\x12\x34" + bytes((PULL_ACK,))
        c.send(push(b"\xab\xcd", rxpk(b"hello frame", sf=9, tmst=4_294_000_000)))
        assert await c.recv() == bytes((2,)) + b"\xab\xcd" + bytes((PUSH_ACK,))
        await asyncio.sleep(0.1)
        (up,) = got
        assert up.frame == b"hello frame" and up.source == Address("semtech-udp", EUI.hex())
        assert up.radio["rssi"] == -57 and up.radio["datr"] == "SF9BW125"
        # Two frames answer one uplink: RX1 (tmst wraps at 2^32), then the next after
        # the first one's time on air and a guard.
        await t.send(b"A" * 40, up.source, up)
        await t.send(b"B" * 10, up.source, up)
        txpks = []
        for _ in range(2):
            d = await c.recv()
            assert d[0] == 2 and d[3] == PULL_RESP
            txpks.append(json.loads(d[4:])["txpk"])
        first, second = txpks
        assert first["tmst"] == (4_294_000_000 + 1_000_000) % 2**32
        assert first["freq"] == 868.1 and first["datr"] == "SF9BW125" and first["ipol"] is True
        assert base64.b64decode(first["data"]) == b"A" * 40 and first["size"] == 40
        assert second["tmst"] == (first["tmst"] + time_on_air_us(40, 9) + 20000) % 2**32
        # Payload limits per data rate (EU868): 51 bytes at SF12, 115 at SF9.
        with pytest.raises(TransportError, match="too_long"):
            await t.send(b"x" * 116, up.source, up)
        c.send(bytes((2,)) + b"\x00\x01" + bytes((TX_ACK,)) + EUI
               + json.dumps({"txpk_ack": {"error": "TOO_LATE"}}).encode())
        await asyncio.sleep(0.1)
        assert t.tx_errors == {"TOO_LATE": 1}
        await t.stop()

    run(scenario())


def test_downlink_needs_a_pull_and_an_uplink():
    async def scenario():
        t = SemtechUdpTransport("127.0.0.1", 0)
        await t.start(lambda up: asyncio.sleep(0))
        with pytest.raises(TransportError, match="no_window"):
            await t.send(b"x", Address("semtech-udp", EUI.hex()), None)
        from sealink_gateway.transport import Uplink

        up = Uplink(b"", Address("semtech-udp", EUI.hex()), 0.0,
                    {"tmst": 1, "freq": 868.1, "datr": "SF12BW125"})
        with pytest.raises(TransportError, match="no_pull"):
            await t.send(b"x", up.source, up)
        await t.stop()

    run(scenario())


def test_garbage_is_counted_and_good_packets_still_pass():
    async def scenario():
        got = []

        async def handler(up):
            got.append(up.frame)

        t = SemtechUdpTransport("127.0.0.1", 0)
        await t.start(handler)
        c = Concentrator(t.port)
        garbage = [
            b"\x02",                                                   # short
            bytes((1,)) + b"\x00\x00" + bytes((PUSH_DATA,)) + EUI,     # version
            bytes((2,)) + b"\x00\x00" + bytes((9,)) + EUI,             # identifier
            bytes((2,)) + b"\x00\x00" + bytes((PUSH_DATA,)) + EUI + b"{not json",
            push(b"\x00\x02", {"data": "!!!not base64", "tmst": 1, "freq": 868.1,
                               "datr": "SF7BW125"}),
            push(b"\x00\x03", rxpk(b"bad crc", stat=-1)),
            bytes((2,)) + b"\x00\x04" + bytes((PUSH_DATA,)) + EUI + b'{"rxpk": 5}',
        ]
        for g in garbage:
            c.send(g)
        c.send(push(b"\x00\x05", rxpk(b"good one")))
        await asyncio.sleep(0.3)
        assert got == [b"good one"]
        assert t.drops == {"short": 1, "version": 1, "identifier": 1, "json": 1,
                           "base64": 1, "crc": 1, "rxpk": 1}
        await t.stop()

    run(scenario())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_parser_raises_only_transport_errors(data):
    try:
        parse_datagram(data)
    except TransportError:
        pass


@pytest.mark.parametrize("length,sf,expected_us", [
    (20, 7, 56_576),      # the datasheet check value (BRIEF.md)
    (51, 12, 2_465_792),  # 75.25 symbols of 32.768 ms, low data rate optimisation on
    (51, 10, 616_448),
    (222, 7, 348_416),
    (0, 7, 25_856),       # empty payload: 12.25 + 13 symbols
])
def test_time_on_air_matches_hand_computed(length, sf, expected_us):
    assert time_on_air_us(length, sf) == expected_us


def test_random_tokens_are_echoed():
    async def scenario():
        t = SemtechUdpTransport("127.0.0.1", 0)
        await t.start(lambda up: asyncio.sleep(0))
        c = Concentrator(t.port)
        for _ in range(5):
            token = os.urandom(2)
            c.send(bytes((2,)) + token + bytes((PULL_DATA,)) + EUI)
            assert (await c.recv())[1:3] == token
        await t.stop()

    run(scenario())


def test_gateway_enrolls_a_lora_device_through_a_packet_forwarder(tmp_path):
    """The gateway's production LoRa path: a device at SF12 (51-byte frames) enrolls with
    XX through a concentrator speaking the Semtech protocol, then sends telemetry."""
    from sealink import crypto
    from sealink.session import Channel
    from sealink_gateway.authority import Authority, verify
    from sealink_gateway.service import Gateway
    from sealink_gateway.store import Store

    async def scenario():
        store = Store(tmp_path / "gw.db")
        t = SemtechUdpTransport("127.0.0.1", 0)
        gw = Gateway(store, crypto.random_bytes(32), Authority.load_or_create(tmp_path / "a"),
                     [t])
        await gw.start()
        token, _ = store.create_token({"site": "field 7"}, 3600)
        c = Concentrator(t.port)
        c.send(bytes((2,)) + b"\x00\x00" + bytes((PULL_DATA,)) + EUI)
        await c.recv()
        dev = Channel(True, crypto.random_bytes(32), sid=0x9ABC, mtu=51,
                      handshake_payload=token.encode())
        tmst = 1_000_000

        async def uplink(frames):
            nonlocal tmst
            replies = []
            for f in frames:
                assert len(f) <= 51
                tmst += 3_000_000
                c.send(push(os.urandom(2), rxpk(f, sf=12, tmst=tmst)))
            deadline = asyncio.get_running_loop().time() + 3
            while asyncio.get_running_loop().time() < deadline:
                try:
                    d = await c.recv(timeout=0.3)
                except TimeoutError:
                    if replies:
                        break
                    continue
                if d[3] == PULL_RESP:
                    txpk = json.loads(d[4:])["txpk"]
                    assert txpk["datr"] == "SF12BW125" and txpk["size"] <= 51
                    replies += dev.receive(base64.b64decode(txpk["data"]), 0)[1]
            return replies

        frames = dev.connect(0)
        for _ in range(6):
            if dev.state == "established" and dev.credential is not None:
                break
            frames = await uplink(frames) or dev.poll(10**9)
        assert dev.state == "established"
        await uplink(dev.send(b"soil=31%", 0))
        for _ in range(20):
            if dev.credential is not None and store.uplinks():
                break
            await asyncio.sleep(0.1)
        assert verify(dev.credential, gw.authority.public_key)["attributes"] == {
            "site": "field 7"}
        (u,) = store.uplinks()
        assert u["payload"] == b"soil=31%" and u["radio"]["datr"] == "SF12BW125"
        assert u["radio"]["gateway"] == EUI.hex()
        await gw.stop()

    run(scenario())


def test_handshake_limit_holds_whatever_gateway_eui_the_sender_writes(tmp_path):
    """Stage 6, finding 10: the handshake limiter was keyed by the concentrator EUI,
    which the sender writes: a random EUI per datagram bypassed it.  It is keyed by
    the forwarder's host now."""
    import os

    from sealink import crypto, wire
    from sealink_gateway.authority import Authority
    from sealink_gateway.service import Gateway, HandshakeLimiter
    from sealink_gateway.store import Store

    async def scenario():
        t = SemtechUdpTransport("127.0.0.1", 0)
        gw = Gateway(Store(tmp_path / "gw.db"), crypto.random_bytes(32),
                     Authority.load_or_create(tmp_path / "a"), [t],
                     limiter=HandshakeLimiter(rate=5, per_s=60))
        await gw.start()
        c = Concentrator(t.port)
        for i in range(40):
            frame = wire.handshake_frame("XX", 0, 0x8000 + i, os.urandom(32))
            eui = os.urandom(8)  # a new "concentrator" each time
            c.send(bytes((2,)) + os.urandom(2) + bytes((PUSH_DATA,)) + eui
                   + json.dumps({"rxpk": [rxpk(frame, tmst=1_000_000 + i)]}).encode())
        await asyncio.sleep(0.5)
        started = gw.counters["handshakes_started"]
        flood = gw.drops["handshake_flood"]
        c.sock.close()
        await gw.stop()
        return started, flood

    started, flood = run(scenario())
    assert started == 5 and flood == 35
