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


def test_device_keeps_receiving_through_a_gateway_outage():
    """Stage 6, finding 7: while nothing listens on the gateway's port, the UDP driver's
    socket reports ICMP port-unreachable as ConnectionRefusedError; it escaped the
    device's receive task, which then never received again."""
    import socket

    from sealink.drivers.udp import Udp

    async def scenario():
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()  # the gateway is down: nothing on this port
        radio = Udp("127.0.0.1", port, mtu=222)
        await radio.start()
        device = Device(radio, Keystore(), {"token": b"t", "retry_ms": 100})
        device.start()
        for _ in range(5):  # each answered by ICMP port unreachable
            await device._tx([b"\x20" + bytes(40)])
            await asyncio.sleep(0.05)
        rx_task = device._tasks[0]
        assert not rx_task.done(), rx_task.exception()
        # The gateway comes back on that port; what it sends reaches the device.
        gateway = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        gateway.bind(("127.0.0.1", port))
        gateway.sendto(b"\xa0\x01\x23" + bytes(10), radio._sock.getsockname())
        for _ in range(100):
            if device.stats["frames_in"]:
                break
            await asyncio.sleep(0.01)
        gateway.close()
        device.close()
        radio.close()
        return device.stats

    stats = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert stats["frames_in"] == 1
    assert stats["radio_errors"] >= 1


def test_forged_reject_never_makes_a_device_give_up():
    """Stage 6, finding 3: a REJECT is unauthenticated (anyone can send one for a live
    session id).  A forged REJECT(3) "revoked" during the handshake set
    device.revoked = True forever; now it only makes the device try again."""
    from sealink import wire

    class ForgingLink(AckLosingLink):
        """The first handshake message is answered by a forged REJECT(3), not the
        gateway; later ones reach the gateway."""

        def __init__(self, gateway):
            super().__init__(gateway, lose=0)
            self.forged = 0

        async def send(self, frame):
            if frame[0] >> 5 == wire.KIND_HANDSHAKE and not self.forged:
                self.forged += 1
                self._down.put_nowait((wire.header(wire.KIND_REJECT, 3, SID), 0, 0))
                return
            await super().send(frame)

    from sealink import app

    async def scenario():
        device, link = _enrolled_device(ForgingLink)
        # The reference application's connect loop: it stopped once revoked was set.
        connected = await asyncio.wait_for(app._connect(device, 1000), 600)
        assert connected and device.connected, device.stats
        await device.send(b"still here")
        assert await device.flush(60_000)
        device.close()
        return link, device

    link, device = vtime.run(scenario())
    assert link.forged == 1 and device.stats["rejects"] == 1 and device.stats["handshakes"] == 1
    assert link.delivered == [b"still here"]


def test_device_never_sends_token_to_unauthenticated_peer():
    """Stage 6, finding 2: on first contact the device took any responder's static key,
    and its enrollment token (in XX message 3) went to a rogue gateway, which spent it at
    the real one.  First contact is now XK under the provisioned gateway key: a rogue
    responder cannot even answer message 1 (it lacks the key es needs), so the device
    only repeats message 1 and gives up; without that key it does not start at all."""
    from sealink.device import DeviceError

    rogue_secret = bytes(range(100, 132))
    real_gateway_key = crypto.x25519_base(GATEWAY_SECRET)

    class RogueLink(AckLosingLink):
        def __init__(self):
            super().__init__(Channel(False, rogue_secret, sid=0x8123, mtu=51), lose=0)
            self.payloads_heard = []
            self.up_kinds = []

        async def send(self, frame):
            self.up_kinds.append((frame[0] >> 5, frame[0] & 0x1F))
            await super().send(frame)
            if self.gateway.peer_payload:
                self.payloads_heard.append(self.gateway.peer_payload)

    async def scenario():
        link = RogueLink()
        device = Device(link, Keystore(), {"token": b"secret-token", "retry_ms": 1000,
                                           "gateway_key": real_gateway_key,
                                           "first_contact_sid": 0x8123})
        try:
            await device.connect(60_000)
        except DeviceError as e:
            error = str(e)
        without_key = Device(RogueLink(), Keystore(), {"token": b"secret-token"})
        try:
            await without_key.connect(60_000)
        except DeviceError as e:
            refused = str(e)
        device.close()
        without_key.close()
        return link, error, refused

    link, error, refused = vtime.run(scenario())
    assert "handshake did not complete (failed)" in error
    # XK message 1 and its repeats only: no message 3, no token.
    assert link.frames_up == len(link.up_kinds) and set(link.up_kinds) == {(1, 3 << 3)}
    assert link.payloads_heard == [] and link.gateway.state == "idle"
    assert "needs the gateway's public key" in refused


def test_message_ids_clear_the_gateways_memory_after_a_reboot(tmp_path):
    """A message's reliable id is the low 8 bits of its number, kept on every session.
    After a reboot (RAM lost, the keystore file kept) the device's next numbers are
    64 to 128 past its last: clear of the ids the gateway still remembers."""
    from sealink_gateway.service import DEDUP_IDS

    path = str(tmp_path / "device.json")

    async def boot(messages):
        ks = Keystore(path)  # what the file says, as after a reset
        device = Device(AckLosingLink(Channel(False, GATEWAY_SECRET), 0), ks,
                        {"outbox": 1000})
        for n in range(messages):
            await device.send(b"m%d" % n)  # not connected: stored in the outbox
        numbers = [seq for seq, _ in device._outbox]
        device.close()
        return numbers

    runs = [vtime.run(boot(n)) for n in (70, 3, 200, 1)]
    for before, after in zip(runs, runs[1:], strict=False):
        remembered = {n & 0xFF for n in before[-DEDUP_IDS:]}
        assert 64 <= after[0] - before[-1] <= 129
        assert not remembered & {n & 0xFF for n in after[:DEDUP_IDS]}


def test_reject_storm_during_handshakes_does_not_keep_a_device_out():
    """A REJECT arriving while a handshake is under way proves nothing (anyone can send
    one): it must not abort that handshake.  Every handshake message here is answered
    first by a forged REJECT, then by the gateway."""
    from sealink import app, wire

    class RejectStorm(AckLosingLink):
        def __init__(self, gateway):
            super().__init__(gateway, lose=0)
            self.forged = 0

        async def send(self, frame):
            if frame[0] >> 5 == wire.KIND_HANDSHAKE:
                self.forged += 1
                self._down.put_nowait((wire.header(wire.KIND_REJECT, 1, SID), 0, 0))
                await asyncio.sleep(0.5)  # the gateway's answer comes a little later
            await super().send(frame)

    async def scenario():
        device, link = _enrolled_device(RejectStorm)
        await asyncio.wait_for(app._connect(device, 1000), 600)
        await device.send(b"through the storm")
        assert await device.flush(60_000)
        device.close()
        return link, device

    link, device = vtime.run(scenario())
    assert link.forged >= 1 and device.stats["handshakes"] == 1
    assert link.delivered == [b"through the storm"]
