"""The device API's store-and-forward promise on CPython, in discrete-event time: an
uplink the application stored reaches the gateway exactly once, however many of the
gateway's acknowledgements are lost."""

import asyncio

from sealink import crypto, wire
from sealink.device import Device, Keystore
from sealink.session import Channel
from sim import vtime

GATEWAY_SECRET = bytes(range(32))
SID = 0x0123


class AckLosingLink:
    """A device radio driver wired to a gateway-side Channel; the first `lose` frames
    the gateway sends back (its acknowledgements) are lost."""

    mtu = 51

    def __init__(self, gateway: Channel, lose: int):
        self.gateway, self.lose = gateway, lose
        self.delivered: list[bytes] = []
        self.frames_up = 0
        self._down: asyncio.Queue = asyncio.Queue()

    async def send(self, frame: bytes) -> None:
        self.frames_up += 1
        now = int(asyncio.get_running_loop().time() * 1000)
        payloads, replies = self.gateway.receive(frame, now)
        self.delivered += payloads
        for r in replies:
            if r[0] >> 5 == wire.KIND_CONTROL and self.lose > 0:
                self.lose -= 1
                continue
            self._down.put_nowait((r, 0, 0))

    async def recv(self):
        return await self._down.get()


def _enrolled_device(link_factory, **config):
    ks = Keystore()
    ks.sid, ks.gateway_key = SID, crypto.x25519_base(GATEWAY_SECRET)
    gateway = Channel(False, GATEWAY_SECRET, sid=SID, mtu=51,
                      peer_lookup=lambda sid: crypto.x25519_base(ks.secret))
    link = link_factory(gateway)
    return Device(link, ks, {"retry_ms": 1000, "max_retries": 5, **config}), link


def test_uplink_is_delivered_once_however_many_acks_are_lost():
    async def scenario():
        device, link = _enrolled_device(lambda gw: AckLosingLink(gw, lose=40))
        await device.connect()
        await device.send(b"reading 1")
        await device.send(b"reading 2")
        acked = await device.flush(timeout_ms=3_600_000)
        device.close()
        return acked, link, device

    acked, link, device = vtime.run(scenario())
    assert acked and device.pending == 0
    assert sorted(link.delivered) == [b"reading 1", b"reading 2"]
    assert device.stats["acked"] == 2
