"""The semtech-udp transport against a concentrator simulator speaking the Semtech UDP
packet-forwarder protocol over real UDP on loopback."""

import asyncio
import base64
import collections
import json
import os
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealink import wire
from sealink.lora import time_on_air_us, wrap
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
    """A Sealink uplink (proprietary MHDR) is delivered without it; the answers go in its
    receive windows: the first in RX1 (tmst wraps at 2^32), the next in RX2 (869.525
    MHz, SF12, a second later), a third waits for the next uplink."""
    async def scenario():
        got = []

        async def handler(up):
            got.append(up)

        t = SemtechUdpTransport("127.0.0.1", 0, rx1_delay_s=1.0)
        await t.start(handler)
        c = Concentrator(t.port)
        c.send(bytes((2,)) + b"\x12\x34" + bytes((PULL_DATA,)) + EUI)
        assert await c.recv() == bytes((2,)) + b"\x12\x34" + bytes((PULL_ACK,))
        c.send(push(b"\xab\xcd", rxpk(wrap(b"hello frame"), sf=9, tmst=4_294_000_000)))
        assert await c.recv() == bytes((2,)) + b"\xab\xcd" + bytes((PUSH_ACK,))
        await asyncio.sleep(0.1)
        (up,) = got
        assert up.frame == b"hello frame" and up.source == Address("semtech-udp", EUI.hex())
        assert up.radio["rssi"] == -57 and up.radio["datr"] == "SF9BW125"
        assert t.mtu_for(up) == 127  # EU868 DR3: a 128-byte PHYPayload, less the MHDR
        await t.send(b"A" * 40, up.source, up)
        await t.send(b"B" * 10, up.source, up)
        with pytest.raises(TransportError, match="no_window"):
            await t.send(b"C" * 10, up.source, up)
        first, second = [await txpk_of(c) for _ in range(2)]
        assert first["tmst"] == (4_294_000_000 + 1_000_000) % 2**32
        assert first["freq"] == 868.1 and first["datr"] == "SF9BW125" and first["ipol"] is True
        assert base64.b64decode(first["data"]) == wrap(b"A" * 40) and first["size"] == 41
        assert second["tmst"] == (4_294_000_000 + 2_000_000) % 2**32
        assert second["freq"] == 869.525 and second["datr"] == "SF12BW125"
        assert second["ipol"] is True
        assert t.scheduled == {"rx1": 1, "rx2": 1} and t.deferred == {"no_window": 1}
        await t.stop()

    run(scenario())


def test_frames_of_one_answer_follow_each_other_for_a_listening_device():
    async def scenario():
        t = SemtechUdpTransport("127.0.0.1", 0, window_frames=4, rx2=False)
        c, up = await _started(t, sf=9)
        await t.send(b"A" * 40, up.source, up)
        await t.send(b"B" * 10, up.source, up)
        first, second = [await txpk_of(c) for _ in range(2)]
        assert second["freq"] == 868.1 and second["tmst"] == (
            first["tmst"] + time_on_air_us(41, 9) + 20000) % 2**32
        await t.stop()

    run(scenario())


def test_payload_limit_is_the_data_rates():
    """EU868: 127 bytes after the MHDR at SF9 (RX1), 63 at SF12 (RX2): a frame too long
    for both waits; 63 bytes at SF12 fits one frame."""
    async def scenario():
        t = SemtechUdpTransport("127.0.0.1", 0)
        c, up = await _started(t, sf=9)
        with pytest.raises(TransportError, match="too_long"):
            await t.send(b"x" * 128, up.source, up)
        await t.send(b"x" * 127, up.source, up)
        # RX1 now taken: a frame too long for RX2 is not refused for good, it waits for
        # the next uplink's RX1.
        with pytest.raises(TransportError, match="no_window"):
            await t.send(b"z" * 100, up.source, up)
        c2, up12 = await _started(t, sf=12, tmst=50_000_000, concentrator=c)
        assert t.mtu_for(up12) == 63
        await t.send(b"y" * 63, up12.source, up12)
        txpk = await txpk_of(c)
        txpk = await txpk_of(c)
        assert txpk["size"] == 64 and txpk["datr"] == "SF12BW125"
        await t.stop()

    run(scenario())


def test_downlinks_never_exceed_the_sub_band_duty_cycle():
    """The concentrator's own budget: 1 % of any hour in g1 (868.0-868.6 MHz, RX1 of
    the default channels), 10 % in g3 (869.525 MHz, RX2).  Once RX1's sub-band is used
    up the answers take RX2; without RX2 they wait (never sent over budget); an hour
    later RX1 is free again."""
    from sealink_gateway.transport import Uplink

    async def scenario(rx2):
        t = SemtechUdpTransport("127.0.0.1", 0, rx2=rx2)
        c, _ = await _started(t, sf=12)
        source = Address("semtech-udp", EUI.hex())
        windows, refused = [], 0
        for i in range(60):  # an uplink every 30 s, each answered with 63 bytes
            tmst = (5_000_000 + i * 30_000_000) % 2**32
            up = Uplink(b"", source, 0.0, {"tmst": tmst, "freq": 868.1, "datr": "SF12BW125"})
            t._latest_tmst[EUI.hex()] = tmst
            try:
                await t.send(bytes(63), source, up)
                windows.append((await txpk_of(c))["freq"])
            except TransportError as e:
                assert e.reason == "duty_cycle"
                refused += 1
        usage = t.duty_cycle_usage()[EUI.hex()]
        # An hour later (the counter wrapped on the way), RX1 takes frames again.
        tmst = (5_000_000 + 59 * 30_000_000 + 3_700_000_000) % 2**32
        for step in range(1, 3700 // 30):  # the uplinks of that hour, unanswered
            t._latest_tmst[EUI.hex()] = (5_000_000 + 59 * 30_000_000
                                         + step * 30_000_000) % 2**32
        t._latest_tmst[EUI.hex()] = tmst
        up = Uplink(b"", source, 0.0, {"tmst": tmst, "freq": 868.1, "datr": "SF12BW125"})
        await t.send(bytes(63), source, up)
        later = (await txpk_of(c))["freq"]
        await t.stop()
        return windows, refused, usage, later

    toa = time_on_air_us(64, 12) / 1e6  # 2.63 s
    fit = int(36 / toa)  # frames g1 takes in an hour
    windows, refused, usage, later = run(scenario(rx2=True))
    assert windows[:fit] == [868.1] * fit and set(windows[fit:]) == {869.525}
    assert refused == 0 and usage["g1"] <= 1.0 and usage["g3"] <= 1.0
    assert later == 868.1
    windows, refused, usage, later = run(scenario(rx2=False))
    assert windows == [868.1] * fit and refused == 60 - fit and usage["g1"] <= 1.0
    assert later == 868.1


def test_tx_ack_errors_are_counted_logged_and_reported(caplog):
    """TOO_LATE, TOO_EARLY, COLLISION_PACKET: the transport matches the TX_ACK to the
    frame by its token, counts and logs the error, and tells the gateway (which keeps
    the downlink queued); an unknown token is counted too."""
    async def scenario():
        t = SemtechUdpTransport("127.0.0.1", 0)
        results = []
        t.on_tx_result = lambda frame, error: results.append((frame, error))
        c, up = await _started(t, sf=7)
        frame = wire.header(wire.KIND_DATA, 0, 0x1234) + bytes(30)
        await t.send(frame, up.source, up)
        d = await pull_resp(c)
        token = d[1:3]
        c.send(bytes((2,)) + token + bytes((TX_ACK,)) + EUI
               + json.dumps({"txpk_ack": {"error": "TOO_LATE"}}).encode())
        c.send(bytes((2,)) + b"\xff\xff" + bytes((TX_ACK,)) + EUI
               + json.dumps({"txpk_ack": {"error": "COLLISION_PACKET"}}).encode())
        for _ in range(50):
            if len(t.tx_errors) == 2:
                break
            await asyncio.sleep(0.02)
        await t.stop()
        return t.tx_errors, results

    with caplog.at_level("WARNING"):
        errors, results = run(scenario())
    assert errors == {"TOO_LATE": 1, "COLLISION_PACKET": 1}
    assert results == [(wire.header(wire.KIND_DATA, 0, 0x1234) + bytes(30), "TOO_LATE")]
    assert "for session 4660: TOO_LATE" in caplog.text


def test_us915_windows_and_limits():
    """US915 as data: an uplink on 902.3 MHz at DR0 (SF10, 125 kHz: 23 bytes after the
    MHDR) is answered in RX1 on 923.3 MHz at DR10 (SF10, 500 kHz), else in RX2 at DR8
    (SF12, 500 kHz); no duty cycle."""
    from sealink_gateway.transport import Uplink

    async def scenario():
        t = SemtechUdpTransport("127.0.0.1", 0, region="US915")
        c, _ = await _started(t, sf=7)
        source = Address("semtech-udp", EUI.hex())
        up = Uplink(b"", source, 0.0, {"tmst": 9_000_000, "freq": 902.3,
                                        "datr": "SF10BW125"})
        t._latest_tmst[EUI.hex()] = 9_000_000
        assert t.mtu_for(up) == 254
        await t.send(bytes(100), source, up)
        await t.send(bytes(20), source, up)
        rx1, rx2 = await txpk_of(c), await txpk_of(c)
        up2 = Uplink(b"", source, 0.0, {"tmst": 9_000_000, "freq": 903.9,
                                         "datr": "SF10BW125"})  # channel 8: RX1 channel 0
        await t.stop()
        return rx1, rx2, t.region.rx1(903_900_000, t.region.rate(0))[0], up2

    rx1, rx2, ch8, _ = run(scenario())
    assert (rx1["freq"], rx1["datr"]) == (923.3, "SF10BW500")
    assert (rx2["freq"], rx2["datr"]) == (923.3, "SF12BW500")
    assert ch8 == 923_300_000


async def pull_resp(c):
    while True:
        d = await c.recv()
        if d[3] == PULL_RESP:
            return d


async def txpk_of(c):
    return json.loads((await pull_resp(c))[4:])["txpk"]


async def _started(t, sf, tmst=1_000_000, concentrator=None):
    """A started transport with a forwarder that has pulled, and one uplink heard."""
    got = []

    async def handler(up):
        got.append(up)

    if concentrator is None:
        await t.start(handler)
        concentrator = Concentrator(t.port)
        concentrator.send(bytes((2,)) + b"\x00\x01" + bytes((PULL_DATA,)) + EUI)
        await concentrator.recv()
    else:
        t._handler = handler
    concentrator.send(push(os.urandom(2), rxpk(wrap(b"\x40\x00\x01up"), sf=sf, tmst=tmst)))
    for _ in range(100):
        if got:
            break
        await asyncio.sleep(0.01)
    return concentrator, got[0]


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
        c.send(push(b"\x00\x05", rxpk(wrap(b"good one"))))
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
    """The gateway's production LoRa path: a device at SF12 (63-byte frames after the
    MHDR) enrolls with XK through a concentrator speaking the Semtech protocol, in one
    downlink frame and three uplink frames, then sends telemetry."""
    from sealink import crypto
    from sealink.device import first_contact_payload
    from sealink.lora import unwrap
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
        dev = Channel(True, crypto.random_bytes(32), sid=0x9ABC, mtu=63, rs=gw.public_key,
                      handshake_payload=first_contact_payload(token.encode(),
                                                              credential=True))
        tmst = 1_000_000
        counts = collections.Counter()

        async def uplink(frames, phase):
            nonlocal tmst
            replies = []
            for f in frames:
                assert len(f) <= 63
                tmst += 3_000_000
                counts[phase + "_up"] += 1
                c.send(push(os.urandom(2), rxpk(wrap(f), sf=12, tmst=tmst)))
            deadline = asyncio.get_running_loop().time() + 3
            while asyncio.get_running_loop().time() < deadline:
                try:
                    d = await c.recv(timeout=0.3)
                except TimeoutError:
                    if replies or phase != "msg1":
                        break
                    continue
                if d[3] == PULL_RESP:
                    txpk = json.loads(d[4:])["txpk"]
                    assert txpk["size"] <= 64 and txpk["ipol"] is True
                    counts[phase + "_down"] += 1
                    replies += dev.receive(unwrap(base64.b64decode(txpk["data"])), 0)[1]
            return replies

        msg3 = await uplink(dev.connect(0, "XK"), "msg1")
        assert dev.state == "established" and len(dev.peer_payload) == 2
        await uplink(msg3, "msg3")  # (answered with the credential the device asked for)
        for _ in range(6):  # the rest of the credential: in the windows of its uplinks
            if dev.credential is not None:
                break
            await uplink(dev.send(b"soil=31%", 0), "data")
        for _ in range(20):
            if store.uplinks():
                break
            await asyncio.sleep(0.1)
        assert verify(dev.credential, gw.authority.public_key)["attributes"] == {
            "site": "field 7"}
        device = store.device_by_key(crypto.x25519_base(dev.s))
        assert device.sid == int.from_bytes(dev.peer_payload, "big")
        u = store.uplinks()[0]
        assert u["payload"] == b"soil=31%" and u["radio"]["datr"] == "SF12BW125"
        assert u["radio"]["gateway"] == EUI.hex()
        await gw.stop()
        return counts

    counts = run(scenario())
    # First contact: XK message 1 (1 frame), message 2 (1 frame), message 3 (2 frames).
    assert (counts["msg1_up"], counts["msg1_down"], counts["msg3_up"]) == (1, 1, 2)


def test_handshake_limit_holds_whatever_gateway_eui_the_sender_writes(tmp_path):
    """Stage 6, finding 10: the handshake limiter was keyed by the concentrator EUI,
    which the sender writes: a random EUI per datagram bypassed it.  It is keyed by
    the forwarder's host now."""
    import os

    from sealink import crypto
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
            frame = wrap(wire.handshake_frame("XX", 0, 0x8000 + i, os.urandom(32)))
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


def test_a_downlink_the_forwarder_did_not_send_stays_queued_and_goes_at_the_next_uplink(
        tmp_path, caplog):
    """Before: the forwarder answered TOO_LATE, the store said `sent`, and no metric or
    log showed it.  Now a downlink is `sent` only when the TX_ACK says so; TOO_LATE is
    counted, logged and exported, and the downlink goes again in the windows of the
    device's next uplink, then is acknowledged."""
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from sealink import crypto
    from sealink.device import first_contact_payload
    from sealink.lora import unwrap
    from sealink.session import Channel, poll_frame
    from sealink_gateway.authority import Authority
    from sealink_gateway.metrics import GatewayCollector
    from sealink_gateway.service import Gateway
    from sealink_gateway.store import Store

    async def scenario():
        store = Store(tmp_path / "gw.db")
        t = SemtechUdpTransport("127.0.0.1", 0)
        gw = Gateway(store, crypto.random_bytes(32), Authority.load_or_create(tmp_path / "a"),
                     [t])
        await gw.start()
        token, _ = store.create_token({}, 3600)
        c = Concentrator(t.port)
        c.send(bytes((2,)) + b"\x00\x00" + bytes((PULL_DATA,)) + EUI)
        await c.recv()
        dev = Channel(True, crypto.random_bytes(32), sid=0x9ABD, mtu=234, rs=gw.public_key,
                      handshake_payload=first_contact_payload(token.encode()))
        tmst = [1_000_000]
        payloads = []

        async def uplink(frames, verdict="NONE", expect=1):
            """Send frames; answer each PULL_RESP's TX_ACK with `verdict`; the device
            hears the downlinks that were sent."""
            for f in frames:
                tmst[0] += 5_000_000
                c.send(push(os.urandom(2), rxpk(wrap(f), sf=7, tmst=tmst[0])))
            heard = []
            for _ in range(expect):
                d = await pull_resp(c)
                c.send(bytes((2,)) + d[1:3] + bytes((TX_ACK,)) + EUI
                       + json.dumps({"txpk_ack": {"error": verdict}}).encode())
                if verdict == "NONE":
                    frame = unwrap(base64.b64decode(json.loads(d[4:])["txpk"]["data"]))
                    got, replies = dev.receive(frame, 0)
                    payloads.extend(got)
                    heard += replies
            await asyncio.sleep(0.2)
            return heard

        msg3 = await uplink(dev.connect(0, "XK"))
        await uplink(msg3, expect=0)
        await uplink(dev.send_reliable(b"t=1", 0))  # its ack confirms the enrollment
        (row,) = store.devices()
        downlink_id = await gw.send(row.id, b"valve=open")  # RX2 of that uplink ...
        d = await pull_resp(c)  # ... which the forwarder reports too late
        c.send(bytes((2,)) + d[1:3] + bytes((TX_ACK,)) + EUI
               + json.dumps({"txpk_ack": {"error": "TOO_LATE"}}).encode())
        await asyncio.sleep(0.2)
        state_after_too_late = store.downlinks(states=("queued", "sent", "acked"))[0]["state"]
        registry = CollectorRegistry()
        registry.register(GatewayCollector(gw))
        metrics = generate_latest(registry).decode()
        # The device's next uplink (a poll): the downlink goes again, and is sent.
        await uplink(poll_frame(dev, 0))
        state_after_resend = [d for d in store.downlinks(states=("queued", "sent", "acked"))
                              if d["id"] == downlink_id][0]["state"]
        await gw.stop()
        return (state_after_too_late, state_after_resend, dict(gw.counters), metrics,
                t.tx_errors, payloads)

    with caplog.at_level("WARNING"):
        before, after, counters, metrics, tx_errors, payloads = run(scenario())
    assert before == "queued" and after == "sent" and payloads == [b"valve=open"]
    assert counters["downlink_tx_too_late"] == 1 and tx_errors == {"TOO_LATE": 1}
    assert 'sealink_downlink_tx_errors_total{error="TOO_LATE",transport="semtech-udp"} 1.0' \
        in metrics
    assert "did not send a downlink for session" in caplog.text


def test_a_region_with_a_downlink_dwell_time_holds_the_frames_to_it():
    """Regions are data: with a 400 ms dwell time on the gateway's transmissions, a frame
    longer than that on the air at the window's data rate is refused there."""
    import dataclasses

    from sealink_gateway.transport import Uplink

    async def scenario():
        t = SemtechUdpTransport("127.0.0.1", 0, rx2=False)
        t.region = dataclasses.replace(t.region, downlink_dwell_time_ms=400)
        c, _ = await _started(t, sf=9)
        source = Address("semtech-udp", EUI.hex())
        up = Uplink(b"", source, 0.0, {"tmst": 2_000_000, "freq": 868.1, "datr": "SF9BW125"})
        t._latest_tmst[EUI.hex()] = 2_000_000
        assert time_on_air_us(81, 9) > 400_000 > time_on_air_us(41, 9)
        with pytest.raises(TransportError, match="too_long"):
            await t.send(bytes(80), source, up)
        await t.send(bytes(40), source, up)
        txpk = await txpk_of(c)
        await t.stop()
        return txpk

    assert run(scenario())["size"] == 41
