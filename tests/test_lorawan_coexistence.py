"""Good neighbours on a shared band: a Sealink gateway and LoRaWAN devices behind the
same concentrator.  The LoRaWAN frames come from an independent implementation
(lora-mote-emulator builds real PHYPayloads: join requests, unconfirmed and confirmed
data uplinks, with their MICs), and are told apart from Sealink's by the first byte:
Sealink frames are LoRaWAN proprietary frames (MType 111, `sealink.lora.MHDR`)."""

import asyncio
import base64
import json
import os
from pathlib import Path

import pytest
from src.mac import Mote  # lora-mote-emulator (its package is named "src")
from test_semtech_udp import EUI, PULL_DATA, PULL_RESP, Concentrator, push, rxpk

from sealink import crypto
from sealink.device import first_contact_payload
from sealink.lora import MHDR, unwrap, wrap
from sealink.session import Channel
from sealink_gateway.authority import Authority
from sealink_gateway.service import Gateway, HandshakeLimiter
from sealink_gateway.store import Store
from sealink_gateway.transport.semtech_udp import SemtechUdpTransport

KEYS = {"joineui": "0000000000000000", "deveui": "70b3d57ed0000001",
        "appkey": "2b7e151628aed2a6abf7158809cf4f3c",
        "nwkkey": "2b7e151628aed2a6abf7158809cf4f3c"}


def lorawan_frames(tmp_path: Path) -> list[bytes]:
    """A join request, an unconfirmed and a confirmed data uplink, as a LoRaWAN device
    sends them."""
    otaa = Mote(dbpath=tmp_path / "otaa", **KEYS)
    abp = Mote.abp(dbpath=tmp_path / "abp", devaddr="26011bda", nwksenckey="00" * 16,
                   snwksintkey="11" * 16, fnwksintkey="22" * 16, appskey="33" * 16,
                   fcntup=0, version="1.0.2", **KEYS)
    frames = [otaa.form_join(), abp.form_phypld(10, b"temp=21", unconfirmed=True),
              abp.form_phypld(10, b"\x01\x02" * 20, unconfirmed=False)]
    assert [f[0] >> 5 for f in frames] == [0b000, 0b010, 0b100]
    return frames


def test_the_mhdr_tells_sealink_from_lorawan(tmp_path):
    assert MHDR >> 5 == 0b111  # LoRaWAN "proprietary": network servers ignore it
    for phy in lorawan_frames(tmp_path):
        assert unwrap(phy) is None
    assert unwrap(wrap(b"\x20\x80\x01abc")) == b"\x20\x80\x01abc"
    assert unwrap(bytes((0xE0,)) + b"\x20\x80\x01") is None  # another vendor's proprietary
    assert unwrap(bytes((MHDR,))) is None


def test_lorawan_frames_are_never_answered_nor_start_handshakes(tmp_path):
    """Before: a LoRaWAN confirmed uplink (0x80) parsed as a Sealink fragment and
    started a handshake, and enough of them used up the forwarder's handshake limit so
    that a Sealink device behind the same concentrator was refused; an unconfirmed one
    (0x40) was answered with a REJECT.  Now each is counted and dropped unread, and the
    Sealink device enrolls."""
    lorawan = lorawan_frames(tmp_path)

    async def scenario():
        store = Store(tmp_path / "gw.db")
        t = SemtechUdpTransport("127.0.0.1", 0)
        gw = Gateway(store, crypto.random_bytes(32), Authority.load_or_create(tmp_path / "a"),
                     [t], limiter=HandshakeLimiter(rate=3, per_s=600))
        await gw.start()
        token, _ = store.create_token({"site": "shared band"}, 3600)
        c = Concentrator(t.port)
        c.send(bytes((2,)) + b"\x00\x00" + bytes((PULL_DATA,)) + EUI)
        await c.recv()
        tmst = 1_000_000
        for i in range(30):  # ten of each, more than the handshake limit
            tmst += 2_000_000
            c.send(push(os.urandom(2), rxpk(lorawan[i % 3], sf=9, tmst=tmst)))
        answers = 0
        try:
            while True:
                d = await c.recv(timeout=1.0)
                answers += d[3] == PULL_RESP
        except TimeoutError:
            pass
        # A Sealink device behind the same concentrator.
        dev = Channel(True, crypto.random_bytes(32), sid=0x8765, mtu=127, rs=gw.public_key,
                      handshake_payload=first_contact_payload(token.encode()))
        tmst += 2_000_000
        c.send(push(os.urandom(2), rxpk(wrap(dev.connect(0, "XK")[0]), sf=9, tmst=tmst)))
        while True:
            d = await c.recv(timeout=5.0)
            if d[3] == PULL_RESP:
                break
        (msg3,) = dev.receive(unwrap(base64.b64decode(json.loads(d[4:])["txpk"]["data"])),
                              0)[1]
        tmst += 2_000_000
        c.send(push(os.urandom(2), rxpk(wrap(msg3), sf=9, tmst=tmst)))
        for _ in range(100):
            if gw.counters["enrolled"]:
                break
            await asyncio.sleep(0.02)
        await gw.stop()
        return answers, dict(gw.counters), dict(gw.drops), dict(t.drops), t.ignored

    answers, counters, drops, medium, ignored = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert answers == 0  # no REJECT, no handshake message: the LoRaWAN frames got nothing
    assert ignored == {"lorawan": 30} and medium == {"lorawan": 30}
    assert counters["handshakes_started"] == 1 and counters["enrolled"] == 1
    assert "handshake_flood" not in drops and "unknown_session" not in drops


@pytest.mark.parametrize("first_byte", [0x00, 0x40, 0x60, 0x80, 0xA0, 0xE0])
def test_device_drivers_ignore_lorawan_downlinks(first_byte):
    """A RAK3172 driver in P2P mode (the device's and the gateway's serial-at) hears a
    LoRaWAN frame on its channel: counted as foreign, never handed up."""
    from sealink.drivers.rak3172 import Rak3172

    radio = Rak3172(None, None, sf=9)
    radio._heard("-80:7:" + (bytes((first_byte,)) + b"\x01\x02\x03\x04").hex())
    radio._heard("-80:7:" + wrap(b"\x40\x12\x34ok").hex())
    assert radio.stats["foreign"] == 1 and radio._rx == [(b"\x40\x12\x34ok", -80, 7)]
