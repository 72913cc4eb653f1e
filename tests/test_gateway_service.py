"""The gateway service end to end over real UDP on loopback, with a real SQLite file:
enrollment with one-time tokens, credentials, uplinks, reliable downlinks, KK
reconnects, revocation, restarts, and hostile datagrams."""

import asyncio
import contextlib
import os
import socket
import time

import pytest

from sealink import crypto, wire
from sealink.session import Channel, poll_frame
from sealink_gateway.authority import Authority, CredentialError, verify
from sealink_gateway.service import STATUS_CACHE_S, Gateway, HandshakeLimiter
from sealink_gateway.store import Store
from sealink_gateway.transport.udp import UdpTransport


class UdpDevice(asyncio.DatagramProtocol):
    """A device on IP: a Channel (the same code as the firmware's) over a UDP socket."""

    def __init__(self, secret, gateway_addr, sid, rs=None, token=b"", mtu=222):
        self.channel = Channel(True, secret, rs=rs, sid=sid, mtu=mtu, handshake_payload=token,
                               retry_ms=300)
        self.gateway_addr = gateway_addr
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.received: list[bytes] = []
        self.rejects: list[int] = []
        self.sent: list[bytes] = []  # every frame, as recorded by anyone on the air

    async def open(self):
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0))
        return self

    def datagram_received(self, data, addr):
        self.inbox.put_nowait(data)

    def tx(self, frames):
        for f in frames:
            self.sent.append(f)
            self.transport.sendto(f, self.gateway_addr)

    @staticmethod
    def now():
        return int(time.monotonic() * 1000)

    async def pump(self, until, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"device: {self.channel.state} {self.channel.drops}")
            try:
                frame = await asyncio.wait_for(self.inbox.get(), min(left, 0.1))
            except TimeoutError:
                self.tx(self.channel.poll(self.now()))
                continue
            if frame[0] >> 5 == wire.KIND_REJECT:
                self.rejects.append(frame[0] & 0x1F)
            payloads, replies = self.channel.receive(frame, self.now())
            self.received += payloads
            self.tx(replies)

    async def connect(self):
        self.tx(self.channel.connect(self.now()))
        await self.pump(lambda: self.channel.state == "established" or self.rejects)
        if self.channel.pattern == "KK" and self.channel.state == "established":
            # As sealink.device.Device does: a first frame under the new keys, which
            # the gateway waits for before it trusts a KK session.
            self.tx(poll_frame(self.channel, self.now()))

    def send(self, data):
        self.tx(self.channel.send(data, self.now()))

    def close(self):
        self.transport.close()


@pytest.fixture
def env(tmp_path):
    return {"db": tmp_path / "gw.db", "authority": tmp_path / "authority.pem",
            "gw_secret": crypto.random_bytes(32)}


async def _start(env, limiter=None, **kw):
    store = Store(env["db"])
    transport = UdpTransport("127.0.0.1", 0)
    gw = Gateway(store, env["gw_secret"], Authority.load_or_create(env["authority"]),
                 [transport], limiter=limiter, **kw)
    await gw.start()
    return gw, ("127.0.0.1", transport.port)


def _first_contact_sid():
    return 0x8000 + int.from_bytes(os.urandom(2), "big") % 0x7FFF


async def _enroll(gw, addr, secret, attrs=None, token=None):
    """A device that enrolls (with a new token unless one is given) and gets its credential."""
    if token is None:
        token, _ = gw.store.create_token(attrs or {"site": "dock"}, 3600)
    dev = await UdpDevice(secret, addr, _first_contact_sid(), token=token.encode()).open()
    await dev.connect()
    await dev.pump(lambda: dev.channel.credential is not None)
    return dev


def test_enrollment_uplinks_downlinks_reconnect_revoke(env):
    async def scenario():
        gw, addr = await _start(env)
        secret = crypto.random_bytes(32)
        dev = await _enroll(gw, addr, secret, {"site": "dock", "kind": "meter"})
        # The credential verifies with the authority's public key and says what was recorded.
        cred = verify(dev.channel.credential, gw.authority.public_key)
        assert cred["device_key"] == crypto.x25519_base(secret)
        assert cred["gateway_key"] == gw.public_key
        assert cred["attributes"] == {"site": "dock", "kind": "meter"}
        (device,) = gw.store.devices()
        assert device.sid == cred["sid"] and device.attributes["kind"] == "meter"

        # Uplinks: committed to SQLite and handed to applications.
        stream = gw.uplinks()
        reader = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0)
        dev.send(b"21.5 C")
        message = await asyncio.wait_for(reader, 5)
        assert (message.device_id, message.payload) == (device.id, b"21.5 C")
        assert message.attributes == {"site": "dock", "kind": "meter"}
        assert [u["payload"] for u in gw.store.uplinks(device.id)] == [b"21.5 C"]

        # A downlink is delivered once and acknowledged.
        downlink_id = await gw.send(device.id, b"open valve")
        await dev.pump(lambda: b"open valve" in dev.received)
        await asyncio.sleep(0.2)
        states = {d["id"]: d["state"] for d in gw.store.downlinks(states=("acked",))}
        assert states == {downlink_id: "acked"}
        dev.close()

        # Reconnect with KK under the enrolled session id: one frame each way.
        dev2 = await UdpDevice(secret, addr, cred["sid"], rs=gw.public_key).open()
        await dev2.connect()
        assert dev2.channel.state == "established" and dev2.channel.pattern == "KK"
        # KK message 1, then the first frame under the new keys (a poll here; a device
        # with an uplink waiting sends that instead): until it arrives, the gateway
        # does not trust the session (a replayed message 1 would get no further).
        assert dev2.channel.frames_out == 2
        dev2.send(b"after reconnect")
        await asyncio.sleep(0.2)
        assert gw.store.uplinks(device.id)[-1]["payload"] == b"after reconnect"

        # Revocation (as by `sealink device revoke` from another process): the gateway
        # sees it within STATUS_CACHE_S; the next frame is refused and the session closed.
        gw.store.revoke(device.id, "stolen")
        await asyncio.sleep(STATUS_CACHE_S + 0.1)
        dev2.send(b"still there?")
        await dev2.pump(lambda: dev2.rejects)
        assert dev2.rejects == [wire.REJECT_REVOKED]
        assert gw.store.uplinks(device.id)[-1]["payload"] == b"after reconnect"
        assert gw.drops["revoked"] == 1
        # The store keeps the sessions as an operator sees them (no keys): the XX one
        # superseded by the KK reconnect, which the revocation closed.
        await asyncio.sleep(0.05)
        kk, xx = gw.store.sessions(device.id)
        assert (xx["pattern"], xx["close_reason"], xx["transport"]) == ("XX", "superseded",
                                                                         "udp")
        assert (kk["pattern"], kk["sid"], kk["close_reason"]) == ("KK", cred["sid"], "revoked")
        dev2.close()
        await gw.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_refused_tokens_are_audited(env):
    async def scenario():
        gw, addr = await _start(env)
        reasons = []
        for token in (b"00" * 16, b"not even hex"):
            dev = await UdpDevice(crypto.random_bytes(32), addr, _first_contact_sid(),
                                  token=token).open()
            await dev.connect()
            await dev.pump(lambda d=dev: d.rejects)
            assert dev.rejects == [wire.REJECT_HANDSHAKE_FAILED]
            dev.close()
        token, _ = gw.store.create_token({}, 3600)
        first = await _enroll(gw, addr, crypto.random_bytes(32), token=token)
        second = await UdpDevice(crypto.random_bytes(32), addr, _first_contact_sid(),
                                 token=token.encode()).open()
        await second.connect()
        await second.pump(lambda: second.rejects)
        for row in gw.store.audit_log():
            if row["event"] == "enroll.refused":
                reasons.append(row["detail"]["reason"])
        assert sorted(reasons) == ["token already used", "unknown token", "unknown token"]
        assert len(gw.store.devices()) == 1
        first.close()
        second.close()
        await gw.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_restart_loses_no_device_uplink_or_queued_downlink(env):
    async def scenario():
        gw, addr = await _start(env)
        secret = crypto.random_bytes(32)
        dev = await _enroll(gw, addr, secret)
        cred = verify(dev.channel.credential, gw.authority.public_key)
        dev.send(b"before restart")
        await asyncio.sleep(0.2)
        device_id = gw.store.devices()[0].id
        dev.close()
        await gw.stop()
        gw.store.close()

        # Queued while the device is away, in a new gateway process's store.
        gw, addr = await _start(env)
        await gw.send(device_id, b"queued command")
        assert [u["payload"] for u in gw.store.uplinks(device_id)] == [b"before restart"]
        dev = await UdpDevice(secret, addr, cred["sid"], rs=gw.public_key).open()
        await dev.connect()
        await dev.pump(lambda: b"queued command" in dev.received)
        dev.close()
        await gw.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_undeliverable_downlink_is_marked_failed(env):
    async def scenario():
        gw, addr = await _start(env, retry_ms=50, reliable_retries=3)
        dev = await _enroll(gw, addr, crypto.random_bytes(32))
        device_id = gw.store.devices()[0].id
        dev.close()  # the device goes silent
        downlink_id = await gw.send(device_id, b"nobody listens")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            states = {d["id"]: d["state"] for d in gw.store.downlinks(states=("failed",))}
            if states:
                break
            await asyncio.sleep(0.1)
        assert states == {downlink_id: "failed"}
        assert gw.counters["downlinks_failed"] == 1
        assert any(r["event"] == "downlink.failed" for r in gw.store.audit_log())
        await gw.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_hostile_datagrams_are_dropped_and_counted(env):
    async def scenario():
        gw, addr = await _start(env, limiter=HandshakeLimiter(rate=3, per_s=60))
        secret = crypto.random_bytes(32)
        dev = await _enroll(gw, addr, secret)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        junk = [b"", b"\x00", b"\x00" + os.urandom(49), b"\xff" * 10, bytes(2000),
                wire.header(wire.KIND_DATA, 0, 0x1234) + os.urandom(30),  # unknown session
                wire.handshake_frame("KK", 0, 5, os.urandom(48)),  # unknown device
                wire.handshake_frame("XX", 0, 6, os.urandom(32))]  # XX on an enrolled sid
        for j in junk:
            sock.sendto(j, addr)
        # A handshake flood from one address: the limiter stops it after 3.
        for _ in range(10):
            sock.sendto(wire.handshake_frame("XX", 0, _first_contact_sid(), os.urandom(32)),
                        addr)
        await asyncio.sleep(0.3)
        assert gw.drops["malformed_frame"] >= 3
        assert gw.drops["unknown_session"] >= 1 and gw.drops["unknown_device"] == 1
        assert gw.drops["handshake_refused"] == 1
        assert gw.drops["handshake_flood"] >= 6
        assert gw.transports[0].drops["oversized"] == 1
        # The enrolled device is still served.
        dev.send(b"still served")
        await asyncio.sleep(0.2)
        assert gw.store.uplinks()[-1]["payload"] == b"still served"
        sock.close()
        dev.close()
        await gw.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_credentials_do_not_verify_under_another_authority(tmp_path):
    a = Authority.load_or_create(tmp_path / "a.pem")
    b = Authority.load_or_create(tmp_path / "b.pem")
    cred = a.issue(7, 0, bytes(32), bytes(32), {"x": "y"})
    assert verify(cred, a.public_key)["sid"] == 7
    with pytest.raises(CredentialError):
        verify(cred, b.public_key)
    with pytest.raises(CredentialError):
        verify(cred[:-1], a.public_key)
    assert oct((tmp_path / "a.pem").stat().st_mode & 0o777) == "0o600"


def test_unauthenticated_frame_does_not_move_the_return_address(env):
    """Stage 6, finding 5: one forged frame with a live session id (sent in clear) from
    another address must not redirect the device's downlinks there."""

    async def scenario():
        gw, addr = await _start(env)
        secret = crypto.random_bytes(32)
        dev = await _enroll(gw, addr, secret)
        (device,) = gw.store.devices()
        attacker = await UdpDevice(crypto.random_bytes(32), addr, dev.channel.sid).open()
        sid = dev.channel.sid
        for kind in (wire.KIND_DATA, wire.KIND_RELIABLE, wire.KIND_CONTROL):
            attacker.tx([wire.data_header(kind, sid, 77) + bytes(20)])
        await asyncio.sleep(0.3)
        await gw.send(device.id, b"for the device only")
        await dev.pump(lambda: b"for the device only" in dev.received)
        await asyncio.sleep(0.3)
        assert attacker.inbox.empty()
        forged = {k: n for k, n in gw.drops.items() if k.endswith("Error")}
        assert sum(forged.values()) == 3, gw.drops  # each forged frame dropped, counted
        dev.close()
        attacker.close()
        await gw.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_no_other_socket_can_bind_the_gateways_port(env):
    """Stage 6, finding 13: with SO_REUSEADDR on its UDP socket, another local process
    could bind the same port and receive devices' frames."""

    async def scenario():
        gw, addr = await _start(env)
        for reuse in (False, True):
            thief = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            if reuse:
                thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with pytest.raises(OSError) as e:
                thief.bind(addr)
            assert e.value.errno == 98  # EADDRINUSE
            thief.close()
        await gw.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))


async def _enrolled_site(env):
    """A gateway with one device enrolled (XX): (gateway, its address, the device's
    secret, the enrolling device, its session id, its store record)."""
    gw, addr = await _start(env)
    secret = crypto.random_bytes(32)
    enrolled = await _enroll(gw, addr, secret)
    sid = verify(enrolled.channel.credential, gw.authority.public_key)["sid"]
    (device,) = gw.store.devices()
    return gw, addr, secret, enrolled, sid, device


async def _kk(gw, addr, secret, sid):
    dev = await UdpDevice(secret, addr, sid, rs=gw.public_key).open()
    await dev.connect()
    return dev


async def _delivered(gw, device_id, payload, timeout=5.0):
    for _ in range(int(timeout / 0.05)):
        if any(u["payload"] == payload for u in gw.store.uplinks(device_id, limit=1000)):
            return True
        await asyncio.sleep(0.05)
    return False


def test_device_comes_back_while_its_old_session_is_established(env):
    """Stage 6, finding 3: a KK message 1 for a session id whose session was still
    established at the gateway was dropped as stale: a rebooted device, or one whose
    session had expired, could never reconnect."""

    async def scenario():
        gw, addr, secret, enrolled, sid, device = await _enrolled_site(env)
        before = await _kk(gw, addr, secret, sid)
        before.send(b"before the reboot")
        assert await _delivered(gw, device.id, b"before the reboot")
        # The device reboots: a new channel, the same keys and session id.
        after = await _kk(gw, addr, secret, sid)
        assert after.channel.state == "established"
        after.send(b"after the reboot")
        assert await _delivered(gw, device.id, b"after the reboot")
        # The old session is gone: its keys open nothing any more.
        before.send(b"from the old session")
        await asyncio.sleep(0.3)
        assert not await _delivered(gw, device.id, b"from the old session", 0.2)
        for d in (enrolled, before, after):
            d.close()
        await gw.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_replayed_kk_message_creates_no_session(env):
    """Stage 6, finding 4: a recorded KK message 1, replayed after a gateway restart,
    created a session (session.established in the audit log) and left the real device
    stuck.  A replay may make the gateway answer; it must not open a session, and the
    real device must get back in."""

    async def scenario():
        gw, addr, secret, enrolled, sid, device = await _enrolled_site(env)
        dev = await _kk(gw, addr, secret, sid)
        recorded = list(dev.sent)  # KK message 1, as an eavesdropper heard it
        dev.send(b"one")
        assert await _delivered(gw, device.id, b"one")
        await gw.stop()
        gw, addr2 = await _start(env)  # a restart: the sessions are gone
        dev.gateway_addr = enrolled.gateway_addr = addr2
        last = gw.store.audit_log(limit=1)[0]["id"]
        attacker = await UdpDevice(crypto.random_bytes(32), addr2, sid).open()
        attacker.tx(recorded)
        await asyncio.sleep(0.3)
        new = [a["event"] for a in gw.store.audit_log(limit=1000) if a["id"] > last]
        assert "session.established" not in new
        assert not any(s.authorized for s in gw.sessions.values())
        # The real device, still on its old keys, is told its session is unknown, and
        # comes back with KK.
        dev.send(b"two")
        await dev.pump(lambda: dev.rejects)
        assert dev.rejects == [wire.REJECT_UNKNOWN_SESSION]
        again = await _kk(gw, addr2, secret, sid)
        again.send(b"three")
        assert await _delivered(gw, device.id, b"three")
        for d in (enrolled, dev, again, attacker):
            d.close()
        await gw.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_handshake_on_an_enrolled_sid_blocks_nothing(env):
    """Stage 6, finding 9: an unauthenticated XX message 1 on an enrolled device's sid
    blocked that device's KK for a minute, repeatably."""

    async def scenario():
        gw, addr, secret, enrolled, sid, device = await _enrolled_site(env)
        squatter = await UdpDevice(crypto.random_bytes(32), addr, sid).open()
        squatter.tx(squatter.channel.connect(squatter.now()))  # XX message 1 on that sid
        await asyncio.sleep(0.2)
        dev = await _kk(gw, addr, secret, sid)
        dev.send(b"not blocked")
        assert await _delivered(gw, device.id, b"not blocked")
        assert gw.drops["handshake_refused"] >= 1
        for d in (enrolled, squatter, dev):
            d.close()
        await gw.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_enrolled_device_cannot_take_another_devices_sid(env):
    """Stage 6, finding 9: another enrolled device completing XX on a victim's sid was
    authorized there indefinitely."""

    async def scenario():
        gw, addr = await _start(env)
        victim_secret, thief_secret = crypto.random_bytes(32), crypto.random_bytes(32)
        victim = await _enroll(gw, addr, victim_secret)
        thief = await _enroll(gw, addr, thief_secret)
        victim_sid = verify(victim.channel.credential, gw.authority.public_key)["sid"]
        # The thief, enrolled, runs KK (it knows the gateway key) on the victim's sid.
        fake = await UdpDevice(thief_secret, addr, victim_sid, rs=gw.public_key).open()
        fake.tx(fake.channel.connect(fake.now()))
        await asyncio.sleep(0.3)
        assert fake.channel.state != "established"
        # ... and XX on it, to the end, then data.
        squat = await UdpDevice(thief_secret, addr, victim_sid).open()
        with contextlib.suppress(TimeoutError):
            await squat.connect()
        if squat.channel.state == "established":
            squat.send(b"in the victim's place")
        await asyncio.sleep(0.3)
        assert not any(s.authorized for sid, s in gw.sessions.items() if sid == victim_sid)
        assert all(u["payload"] != b"in the victim's place"
                   for u in gw.store.uplinks(limit=1000))
        for d in (victim, thief, fake, squat):
            d.close()
        await gw.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_first_contact_completes_at_mtu_20(env):
    """Stage 6, finding 11: at MTU 20 (BLE's default ATT MTU) every handshake message is
    fragmented; the half-open session was deleted after the first fragment, and each
    fragment spent a handshake-limiter token, so first contact never completed."""

    async def scenario():
        store = Store(env["db"])
        transport = UdpTransport("127.0.0.1", 0, mtu=20)
        gw = Gateway(store, env["gw_secret"], Authority.load_or_create(env["authority"]),
                     [transport], limiter=HandshakeLimiter(rate=3, per_s=60))
        await gw.start()
        addr = ("127.0.0.1", transport.port)
        token, _ = store.create_token({"site": "ble"}, 3600)
        dev = await UdpDevice(crypto.random_bytes(32), addr, _first_contact_sid(),
                              token=token.encode(), mtu=20).open()
        await dev.connect()
        await dev.pump(lambda: dev.channel.credential is not None)
        assert len(store.devices()) == 1 and gw.drops["handshake_flood"] == 0
        assert max(len(f) for f in dev.sent) == 20
        dev.close()
        await gw.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_the_configured_handshake_limit_is_the_one_in_force(env):
    """[limits] handshakes_per_source: a new limiter has no buckets, so len() 0, and the
    gateway once took it for none (`limiter or HandshakeLimiter()`) and enforced the
    default 5 per 10 s whatever the configuration said."""
    gw = Gateway(Store(env["db"]), env["gw_secret"], Authority.load_or_create(env["authority"]),
                 [], limiter=HandshakeLimiter(rate=50, per_s=1))
    assert all(gw.limiter.allow("forwarder", 0.0) for _ in range(50))
    assert not gw.limiter.allow("forwarder", 0.0)


def test_handshake_limiter_forgets_idle_sources():
    """Stage 6, finding 12: a bucket per source, never pruned: 20,000 sources that each
    sent one handshake kept 20,000 buckets."""
    limiter = HandshakeLimiter(rate=5, per_s=10.0)
    for i in range(20000):
        assert limiter.allow(("10.0.0.1", i), now=i * 0.001)
    # Long after, a bucket that has refilled says nothing a new one would not: gone.
    assert limiter.allow(("10.0.0.1", 1), now=100.0)
    assert len(limiter) <= 2


def test_unauthenticated_probes_learn_little_and_slowly(env):
    """Stage 6, finding 15: REJECT reasons told revoked sids from unknown ones, and
    nothing limited the REJECTs: all 32,767 sids were probed in 3.4 s."""

    async def scenario():
        gw, addr = await _start(env)
        revoked_secret = crypto.random_bytes(32)
        revoked = await _enroll(gw, addr, revoked_secret)
        revoked_sid = verify(revoked.channel.credential, gw.authority.public_key)["sid"]
        gw.store.revoke(gw.store.devices()[0].id, "lost")
        prober = await UdpDevice(crypto.random_bytes(32), addr, 1).open()
        for sid in (revoked_sid, revoked_sid % 0x7FFF + 1):  # revoked, never enrolled
            prober.tx([wire.handshake_frame("KK", 0, sid, os.urandom(48)),
                       wire.data_header(wire.KIND_DATA, sid, 1) + os.urandom(20)])
        await asyncio.sleep(0.3)
        reasons = []
        while not prober.inbox.empty():
            reasons.append(prober.inbox.get_nowait()[0] & 0x1F)
        assert reasons == [wire.REJECT_UNKNOWN_SESSION] * 4
        # A sweep from one source: REJECTs are rationed.
        for sid in range(0x0100, 0x0300):
            prober.tx([wire.data_header(wire.KIND_DATA, sid, 1) + os.urandom(20)])
        await asyncio.sleep(0.5)
        assert prober.inbox.qsize() <= 50 and gw.drops["reject_limited"] >= 400
        for d in (revoked, prober):
            d.close()
        await gw.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_enrolled_device_that_lost_its_credential_gets_it_again(env):
    """A device enrolled (its token spent) whose credential never arrived starts XX
    again: the gateway knew its key and authorized it, but sent no credential, and the
    device waited for one forever (found by the 1,000-device cell)."""

    async def scenario():
        gw, addr = await _start(env)
        secret = crypto.random_bytes(32)
        first = await _enroll(gw, addr, secret)
        cred = verify(first.channel.credential, gw.authority.public_key)
        first.close()
        # Its credential lost, the device tries first contact again with the same key.
        again = await UdpDevice(secret, addr, _first_contact_sid(), token=b"spent").open()
        await again.connect()
        await again.pump(lambda: again.channel.credential is not None)
        cred2 = verify(again.channel.credential, gw.authority.public_key)
        assert (cred2["sid"], cred2["device_key"]) == (cred["sid"], cred["device_key"])
        assert len(gw.store.devices()) == 1
        again.close()
        await gw.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_uplink_committed_once_across_sessions_and_restarts(env):
    """Stage 6, finding 6: an uplink whose ack was lost, sent again by the device on its
    next session (after a gateway restart here), was committed twice.  A device's
    message keeps its id across sessions; the gateway remembers the ids it committed."""

    async def scenario():
        gw, addr, secret, enrolled, sid, device = await _enrolled_site(env)
        dev = await _kk(gw, addr, secret, sid)
        dev.tx(dev.channel.send_reliable(b"reading 7", dev.now(), msg_id=7))
        assert await _delivered(gw, device.id, b"reading 7")  # its ack: never read
        await gw.stop()
        gw.store.close()
        gw, addr = await _start(env)  # restarted (its memory of ids is in SQLite)
        again = await _kk(gw, addr, secret, sid)
        again.tx(again.channel.send_reliable(b"reading 7", again.now(), msg_id=7))
        again.tx(again.channel.send_reliable(b"reading 8", again.now(), msg_id=8))
        await again.pump(lambda: again.channel._reliable_out.in_flight == 0)  # both acked
        assert await _delivered(gw, device.id, b"reading 8")
        payloads = [u["payload"] for u in gw.store.uplinks(device.id)]
        assert payloads.count(b"reading 7") == 1 and payloads.count(b"reading 8") == 1
        assert gw.counters["duplicates"] == 1
        for d in (enrolled, dev, again):
            d.close()
        await gw.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_half_open_handshake_is_answered_once(env):
    """Stage 6, finding 12: the gateway repeated XX message 2 on a timer, 198 bytes
    answering a 35-byte message 1 (to an address the sender may have forged), and polled
    every half-open handshake 20 times a second.  The answer goes once; a repeated
    message 1 gets it again."""

    async def scenario():
        gw, addr = await _start(env, retry_ms=200)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        msg1 = wire.handshake_frame("XX", 0, _first_contact_sid(), os.urandom(32))
        sock.sendto(msg1, addr)
        await asyncio.sleep(2.0)  # 10 retry intervals
        answers = []
        with contextlib.suppress(BlockingIOError):
            while True:
                answers.append(sock.recv(2048))
        assert len(answers) == 1 and len(answers[0]) < 3 * len(msg1)
        sock.sendto(msg1, addr)  # repeated: answered again, the same bytes
        await asyncio.sleep(0.3)
        assert sock.recv(2048) == answers[0]
        sock.close()
        await gw.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_downlink_sent_on_a_replaced_session_is_sent_again(env):
    """A command sent on a session the device then replaced (a REJECT it believed, a
    reboot) before acknowledging it was left 'sent' for good: the new session never
    carried it, and the device waited for it forever (found by the attacked fleet).  It
    is queued again and delivered on the new session; so are commands left 'sent' by a
    gateway restart."""

    def _downlinks(gw, device_id):
        return gw.store.downlinks(device_id, states=("queued", "sent", "acked", "failed"))

    async def scenario():
        gw, addr, secret, enrolled, sid, device = await _enrolled_site(env)
        old = await _kk(gw, addr, secret, sid)
        old.transport.close()  # the device stops listening on this session: never acks
        await gw.send(device.id, b"led=on")
        for _ in range(100):
            if _downlinks(gw, device.id)[0]["state"] == "sent":
                break
            await asyncio.sleep(0.05)
        assert _downlinks(gw, device.id)[0]["state"] == "sent"
        new = await _kk(gw, addr, secret, sid)  # a new session replaces the old one
        new.send(b"poll")  # proves the new keys: the gateway switches to this session
        await new.pump(lambda: b"led=on" in new.received)
        for _ in range(100):
            if _downlinks(gw, device.id)[0]["state"] == "acked":
                break
            await asyncio.sleep(0.05)
        assert _downlinks(gw, device.id)[0]["state"] == "acked"
        # A gateway restart: a command left 'sent' goes out again on the next session.
        await gw.send(device.id, b"led=off")
        for _ in range(100):
            if _downlinks(gw, device.id)[-1]["state"] == "sent":
                break
            await asyncio.sleep(0.05)
        new.transport.close()
        await gw.stop()
        gw.store.close()
        gw, addr = await _start(env)
        again = await _kk(gw, addr, secret, sid)
        again.send(b"poll")
        await again.pump(lambda: b"led=off" in again.received)
        for d in (enrolled, again):
            d.close()
        await gw.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_third_boot_is_not_taken_for_a_repeat_of_the_first(env):
    """Reliable ids are 8 bits and each boot starts 128 further on: a device that sends
    one message per boot reaches, at its third boot, the id of its first message.  The
    gateway must commit it (it once acknowledged and dropped it as a repeat), and still
    take a real repeat within a boot only once.  (End to end on the firmware, across
    three boots: tests/test_device_drivers.py::test_gateway_key_rotation_on_firmware.)"""
    gw = Gateway(Store(env["db"]), env["gw_secret"], Authority.load_or_create(env["authority"]),
                 [])
    device_id = "dev-boots"
    for msg_id, expect in ((1, False), (129, False), (1, False), (2, False), (1, True),
                           (130, False), (131, False), (130, True), (2, False)):
        assert gw._is_repeat(device_id, msg_id) is expect, (msg_id, gw._msg_ids[device_id])
        if not expect:
            gw._remember(device_id, msg_id)
