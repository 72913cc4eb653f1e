"""The gateway service: terminates the Sealink channels of a fleet.

Frames arrive from any number of transports; each is demultiplexed by its session id
to a `Channel` (lib/sealink, the same code the devices run).  First contact is an XX
handshake carrying a one-time enrollment token; the gateway pins the device's static
key, records it in the store and answers with a credential signed by the authority.
Known devices reconnect with KK under the session id they were given.  Accepted
uplinks are committed to SQLite before anything else sees them; downlinks are queued
in SQLite and delivered reliably.  Bad input is dropped and counted by reason.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sealink import crypto, wire
from sealink.errors import HandshakeError, SealinkError
from sealink.keys import PrivateKey
from sealink.noise import HandshakeState, protocol_name
from sealink.reliable import DeliveryError
from sealink.session import (
    CONTROL_CREDENTIAL,
    PROLOGUE,
    Channel,
    answer_repeats_with,
    poll_frame,
)
from sealink_gateway import attest
from sealink_gateway.authority import Authority
from sealink_gateway.store import LAST_SID, Store, TokenRefused
from sealink_gateway.transport import Address, FrameTransport, TransportError, Uplink

logger = logging.getLogger(__name__)

# A half-open handshake is dropped after this long without a frame from its device.
# EU868's 1 % duty cycle spaces an SF12 device's frames by 100x their time on air (up
# to 247 s for 51 bytes), so a first contact in several fragments needs minutes.
PENDING_TIMEOUT_S = 300.0
# Reliable ids remembered per device.  Ids are 8 bits: a device (16 messages in its
# outbox at most) that reboots starts 64 to 128 past its last id
# (sealink.device.SEQ_RESERVE), so an id that far from the newest committed one starts
# a new boot, and the ids remembered from earlier boots are forgotten (Gateway._remember):
# after 256 they come round again (a third boot that sends few messages reaches the
# ids of the first), and taken for repeats they would be acknowledged and dropped.
DEDUP_IDS = 64
ANNOUNCE_REPEATS = 3  # times a session is sent the credential naming a rotated key
# Control messages of a device key rotation (sealink.session: Channel.key_control): the
# gateway asks for one; the device answers with its next public key (32 bytes follow).
CONTROL_ROTATE_KEY = b"\x04"
CONTROL_NEXT_KEY = b"\x05"
COUNTER_PROBES = 4  # counters tried per frame: the closest, then up to 3 spans ahead
MAX_PENDING = 4  # KK handshakes answered per sid and not yet proven live
REJECT_RATE = 50  # REJECTs per source per 10 s (answers to frames that prove nothing)
STATUS_CACHE_S = 1.0  # a revocation (by another process) takes effect within this
MAX_BACKLOG = 16  # frames kept per session for its device's next receive windows
# Why a class A transport may refuse a frame now and take it after the next uplink.
DEFERRED = {"no_window", "duty_cycle", "busy", "window_passed"}


@dataclass(frozen=True)
class FirstContact:
    token: str  # "" when the device comes with evidence only
    evidence: bytes | None
    wants_credential: bool


def parse_first_contact(payload: bytes | None) -> FirstContact:
    """The last first-contact message's payload: the CBOR map {1: token (bytes: hex
    token's bytes; or text), 2: evidence (COSE_Sign1 bytes), 3: true (send the
    credential)} with a token or evidence or both; or (XX, earlier devices) a plain text
    token.  ValueError on anything else."""
    payload = bytes(payload or b"")
    if payload[:1] not in (b"\xa1", b"\xa2", b"\xa3"):
        return FirstContact(payload.decode(errors="replace"), None, False)
    import cbor2

    try:
        fields = cbor2.loads(payload)
    except Exception:
        raise ValueError("first-contact payload is not CBOR") from None
    if not isinstance(fields, dict) or not set(fields) <= {1, 2, 3} or not {1, 2} & set(fields):
        raise ValueError("first-contact payload must be {1: token, 2: evidence, 3: true}")
    token, evidence, wants = fields.get(1, ""), fields.get(2), fields.get(3, False)
    if isinstance(token, bytes):
        token = token.hex()
    if not isinstance(token, str) or not isinstance(evidence, bytes | None) or \
            not isinstance(wants, bool):
        raise ValueError("first-contact token must be bytes or text, evidence bytes, and "
                         "the credential request true")
    return FirstContact(token, evidence, wants)


@dataclass
class Message:
    """An authenticated uplink, as applications receive it."""

    uplink_id: int
    device_id: str
    attributes: dict[str, str]
    payload: bytes
    radio: dict
    received_at: float


@dataclass(eq=False)  # compared by identity
class _Session:
    channel: Channel
    transport: FrameTransport
    address: Address
    created: float
    last_heard: float = 0.0  # when its device last sent a frame (loop clock)
    device_id: str | None = None
    authorized: bool = False
    attributes: dict[str, str] = field(default_factory=dict)
    last_uplink: Uplink | None = None
    inflight: dict[int, int] = field(default_factory=dict)  # reliable id -> downlink id
    # The gateway key rotated and this device may not know: the credential naming the
    # new key goes with the answers to its next frames, this many more times (a control
    # frame is not acknowledged, and a LoRa downlink can be lost).
    announce: int = 0
    ask_rotate: int = 0  # the same, for a requested rotation of the device's own key
    # Class A: frames that found no receive window (duty cycle, the windows of that
    # uplink taken), sent as they were in the windows of the device's next uplinks: the
    # fragments of one message so reach the device over several (MAX_BACKLOG at most).
    backlog: list[bytes] = field(default_factory=list)


def _read_under_other_keys(ch: Channel, statics: list[PrivateKey], peers: list[bytes],
                           pattern: str, index: int, body: bytes) -> bytes | None:
    """KK or XK message 1 that the channel's own keys did not read: under one of
    `statics` (retiring gateway keys: a device provisioned before a rotation), or (KK)
    from one of `peers` (a device's offered next key).  The keys that read it become the
    channel's; returns its payload, or None."""
    if pattern not in ("KK", "XK") or index != 0:
        return None
    first = ch._hs.rs
    for s in [ch.s, *statics]:
        for rs in [first, *peers]:
            if s is ch.s and rs is first:
                continue  # (tried already)
            hs = HandshakeState(protocol_name(pattern), False, PROLOGUE, s=s, rs=rs)
            try:
                payload = hs.read_message(body)
            except HandshakeError:
                continue
            ch._hs, ch.s = hs, s
            return payload
    return None


def _proof(ch: Channel) -> tuple:
    """What only an authenticated frame moves: the replay window (a transport frame that
    opened), or the state (a handshake completed by reading its last message)."""
    w = getattr(ch, "_window", None)
    return (ch.state, None if w is None else w.accepted)


def _proven(ch: Channel, before: tuple) -> bool:
    """Did the frame just received prove the peer holds the channel's keys?"""
    state, window = before
    if state == "established" and window is not None:
        return _proof(ch)[1] != window
    # XK / XX message 3 completes the responder's handshake and authenticates the
    # device; a KK responder is established by writing its answer, which proves nothing.
    return ch.state == "established" and ch.pattern in ("XK", "XX") and not ch.initiator


class HandshakeLimiter:
    """New handshakes per source: at most `rate` per `per_s` (token bucket).  A source's
    bucket is forgotten once it has refilled: it says nothing a new bucket would not."""

    def __init__(self, rate: int = 5, per_s: float = 10.0):
        self.rate, self.per_s = rate, per_s
        self._buckets: dict[object, list[float]] = {}
        self._pruned_at = 0.0

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: object, now: float) -> bool:
        if now - self._pruned_at >= self.per_s:
            self._prune(now)
        tokens, last = self._buckets.get(source, [float(self.rate), now])
        tokens = min(self.rate, tokens + (now - last) * self.rate / self.per_s)
        if tokens < 1:
            self._buckets[source] = [tokens, now]
            return False
        self._buckets[source] = [tokens - 1, now]
        return True

    def _prune(self, now: float) -> None:
        refill = self.rate / self.per_s
        self._buckets = {s: b for s, b in self._buckets.items()
                         if b[0] + (now - b[1]) * refill < self.rate}
        self._pruned_at = now


class Gateway:
    def __init__(self, store: Store, static_key: bytes, authority: Authority,
                 transports: list[FrameTransport], limiter: HandshakeLimiter | None = None,
                 retry_ms: int = 2000, reliable_retries: int = 6, poll_s: float = 0.05,
                 pending_timeout_s: float = PENDING_TIMEOUT_S,
                 retiring: list[tuple[bytes, float]] = ()):
        self.store = store
        self.poll_s = poll_s  # retransmission and downlink-queue poll period
        self.pending_timeout_s = pending_timeout_s
        self.static_key = static_key
        self.authority = authority
        self.transports = transports
        # (Not `limiter or ...`: an empty limiter has len() 0, and is false.)
        self.limiter = limiter if limiter is not None else HandshakeLimiter()
        self.retry_ms = retry_ms
        self.reliable_retries = reliable_retries
        self.sessions: dict[int, _Session] = {}
        self._by_device: dict[str, int] = {}  # device id -> sid of its authorized session
        # sids with a handshake or downlinks in flight, polled in the order they came
        # (a dict: the order does not depend on the sid values)
        self._needs_poll: dict[int, None] = {}
        # KK handshakes answered but not yet proven live (no frame under the new keys):
        # a replayed message 1 gets no further than here.
        self.pending: dict[int, list[_Session]] = {}
        self._half_open: dict[int, None] = {}  # sids of sessions not yet authorized
        self._expired_at = 0.0
        self.reject_limiter = HandshakeLimiter(rate=REJECT_RATE, per_s=10.0)
        self._msg_ids: dict[str, collections.deque] = {}  # device -> ids committed last
        self.counters: collections.Counter[str] = collections.Counter()
        self.drops: collections.Counter[str] = collections.Counter()
        self._subscribers: list[asyncio.Queue[Message]] = []
        self.uplink_event = asyncio.Event()  # set when uplinks are committed
        self._poller: asyncio.Task | None = None
        # Group commit: uplinks accepted in one turn of the event loop share a
        # transaction; their acknowledgements go out only after it commits.
        self._batch: list[tuple[_Session, bytes, Uplink, list[bytes], int | None]] = []
        self._audits: list = []  # deferred writes (callables) for the next group commit
        self._commit_scheduled = False
        self._revoked: set[str] = set()  # revoked device ids, read at _revoked_read_at
        self._revoked_read_at = float("-inf")
        self._queued_hint = True  # downlinks may be queued (cleared when none are)
        # Devices with downlinks queued, as the last look at the store found (each
        # _flush_downlinks: on send(), and every poll_s): their uplinks take the long way.
        self._queued_devices: set[str] = set()
        # Frames carrying a downlink through a transport that confirms transmission
        # (semtech-udp's TX_ACK): frame -> downlink id, until the verdict arrives.
        self._awaiting_tx: dict[bytes, int] = {}

        # Loaded once: every handshake uses it twice or more (es, ss / se).
        self._static = PrivateKey(static_key)
        self.public_key = self._static.public
        # Static keys being rotated out (`sealink keys rotate`), each with the end of its
        # grace period: a device not yet told the new key reaches us under one of them
        # (KK), and is sent a credential naming the new one.
        self._retiring = [(PrivateKey(k), until) for k, until in retiring]

    def _grace_statics(self) -> list[PrivateKey]:
        now = time.time()
        return [k for k, until in self._retiring if until > now]

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        # Sessions live in memory only: what was sent on one before a restart and not
        # acknowledged goes out again on the device's next session.
        for downlink in self.store.downlinks(states=("sent",)):
            self.store.set_downlink_state(downlink["id"], "queued")
            self._queued_hint = True
        for t in self.transports:
            if hasattr(t, "on_tx_result"):
                t.on_tx_result = self._tx_result
            if hasattr(t, "fast_path"):
                t.fast_path = self._fast_uplink
            await t.start(self._on_uplink)
        self._poller = asyncio.create_task(self._poll_loop())
        logger.info("gateway started: %d transports", len(self.transports))

    async def stop(self) -> None:
        if self._poller:
            self._poller.cancel()
            try:
                await self._poller
            except asyncio.CancelledError:
                pass
        for t in self.transports:
            await t.stop()
        if self._batch or self._audits:
            self._commit_batch()  # what was accepted is committed before we go
        logger.info("gateway stopped")

    @staticmethod
    def _clock() -> float:
        """Seconds on the event loop's clock: monotonic time, or the simulation's
        discrete-event time when the gateway runs in one (sim/vtime.py).  Every timer
        and timeout of the gateway reads this clock; wall time (time.time()) is used
        only for records (audit, uplink and credential timestamps)."""
        return asyncio.get_running_loop().time()

    @classmethod
    def _now_ms(cls) -> int:
        return int(cls._clock() * 1000)

    def _drop(self, reason: str, detail: str = "") -> None:
        self.drops[reason] += 1
        logger.debug("drop %s %s", reason, detail)

    # --- applications ---------------------------------------------------------------------

    async def uplinks(self) -> AsyncIterator[Message]:
        """Every authenticated uplink from now on, in arrival order."""
        queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=10000)
        self._subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)

    async def send(self, device_id: str, payload: bytes) -> int:
        """Queue a downlink (committed first) and deliver it when the device is reachable.
        Returns the downlink id; its state is in the store (queued, sent, acked, failed)."""
        device = self.store.device(device_id)
        if device is None or device.status != "active":
            raise KeyError(f"no active device {device_id}")
        downlink_id = self.store.queue_downlink(device_id, payload)
        self._queued_hint = True
        await self._flush_downlinks()
        return downlink_id

    # --- frames in ------------------------------------------------------------------------

    def _fast_uplink(self, up: Uplink) -> bool:
        """The message path: a DATA frame on an authorized session with nothing else to
        do (no handshake pending on its sid, no downlink in flight or waiting, no key
        rotation or announcement due) is opened in one call (crypto.open_data: counter,
        replay window, tag) and joins the group commit, with the steps _on_uplink would
        take for it.  Returns False, having changed nothing, for any other frame, or one
        that does not open at once (a replay, a forgery, another key epoch): _on_uplink
        takes those the long way, and counts what it drops."""
        frame = up.frame
        if len(frame) < 20 or frame[0] >> 5 != wire.KIND_DATA or crypto.open_data is None:
            return False
        sid = (frame[1] << 8) | frame[2]
        session = self.sessions.get(sid)
        if session is None or not session.authorized or session.inflight or \
                session.backlog or session.announce or session.ask_rotate or \
                sid in self.pending or session.transport.needs_window or \
                session.device_id in self._queued_devices:
            return False
        ch = session.channel
        if ch.state != "established" or ch.restart_message is not None or \
                getattr(ch, "key_control", None):
            return False
        now = self._clock()
        if self._device_status(session.device_id, now) != "active":
            return False
        payload = ch._open_in_c(frame)  # None: left to the long way, nothing changed
        if payload is None:
            return False
        ch.frames_in += 1
        session.last_heard = now
        session.address = up.source  # authentic: the device's address now
        session.last_uplink = up
        self._batch.append((session, payload, up, (), None))
        self._schedule_commit()
        return True

    async def _on_uplink(self, up: Uplink) -> None:
        try:
            kind, bits, sid = wire.peek(up.frame)
        except wire.FrameError as e:
            self._drop("malformed_frame", str(e))
            return
        now = self._clock()
        session = self.sessions.get(sid)
        pendings = self.pending.get(sid)
        if pendings:
            # KK handshakes answered on this sid, not yet proven live: a frame that
            # authenticates under the keys of one makes it the device's session.
            session = await self._try_pending(pendings, session, sid, kind, up, now)
            if session is None:
                return
        elif session is None:
            session = await self._new_session(kind, bits, sid, up, now)
            if session is None:
                return
            if sid <= LAST_SID:  # an enrolled device's KK: answered, not trusted yet
                self.sessions.pop(sid, None)
                self._needs_poll.pop(sid, None)
                self._add_pending(sid, session)
        drops_before = dict(session.channel.drops)
        proof_before = _proof(session.channel)
        session.channel._reliable_in.last_id = None  # set by a RELIABLE frame it opens
        payloads, replies = session.channel.receive(up.frame, self._now_ms())
        # Did this frame prove the device's keys?  Only then may it move the session's
        # return address (where later downlinks go); anything else is answered where it
        # came from, and changes nothing.
        authentic = _proven(session.channel, proof_before)
        dropped = False
        for reason, n in session.channel.drops.items():
            if n > drops_before.get(reason, 0):
                self._drop(reason, f"session {sid}")
                dropped = True
        if not dropped:
            session.last_heard = now  # a frame its channel took: the handshake goes on
        if session.channel.restart_message is not None:
            # A new KK message 1 while this session is established: answer it on a
            # new channel beside this one (see _try_pending).
            restart, session.channel.restart_message = session.channel.restart_message, None
            await self._restart(session, sid, restart, up, now)
            return
        ch = session.channel
        if not session.authorized and (ch.state == "failed" or (
                ch.state == "idle" and not ch._reassembler._partial)):
            # (An idle channel holding fragments is waiting for the rest of message 1.)
            if self.sessions.get(sid) is session:
                del self.sessions[sid]
            if session in self.pending.get(sid, ()):
                self.pending[sid].remove(session)
            self._needs_poll.pop(sid, None)
            return
        if session in self.pending.get(sid, ()):
            # The KK message 1 of a pending session (or its repeat): answered, nothing
            # more until the device proves it holds the new keys.
            for f in replies:
                await self._send_frame(session.transport, f, up.source, up)
            return
        if authentic or (session.last_uplink is None and not dropped):
            session.address = up.source  # the device's address (and receive window) now
            session.last_uplink = up
            # The device's data rate may have changed: answers use this one's limit.
            session.channel.mtu = self._mtu(session.transport, up)
            if authentic and session.backlog:
                # The device just transmitted: what waited for its windows goes first.
                await self._send_backlog(session)
        if session.channel.state == "established" and not session.authorized and authentic:
            if not await self._authorize(session, sid):
                return
        if payloads:
            if not await self._accept(session, sid, payloads, up, replies):
                return
        else:
            for f in replies:  # answers go where the question came from
                await self._send_frame(session.transport, f, up.source, up)
        self._collect_acks(session)
        if session.authorized and authentic and (
                session.ask_rotate or getattr(session.channel, "key_control", None)):
            await self._key_rotation(session)
        if session.announce and session.authorized and authentic:
            session.announce -= 1
            device = self.store.device(session.device_id)
            if device is not None:
                await self._announce(session, device)
        windowed = getattr(session.transport, "needs_window", False)
        if session.inflight and windowed and authentic and not session.backlog:
            # The device just transmitted: its receive window is open for what it has
            # not acknowledged yet.
            await self._resend(session)
        if self.store_has_queued:
            await self._flush_downlinks()

    @staticmethod
    def _source_key(up: Uplink) -> object:
        """Who sent a frame, as far as the medium tells without trusting what the frame
        says: a host (not its port), a packet forwarder's host (not the gateway EUI it
        writes), a BLE peer."""
        if "forwarder" in up.radio:
            return ("forwarder", up.radio["forwarder"])
        return up.source.key[0] if isinstance(up.source.key, tuple) else up.source.key

    async def _try_pending(self, pendings: list[_Session], session: _Session | None,
                           sid: int, kind: int, up: Uplink, now: float) -> _Session | None:
        """Route a frame for a sid with pending KK handshakes.  Returns the session that
        should process it (None: done with it)."""
        bits = up.frame[0] & 0x1F
        if kind == wire.KIND_HANDSHAKE and bits & 0x07 == 0:
            for p in pendings:
                if up.frame[3:] == (p.channel._hs_last_in or b""):
                    return p  # its message 1 again: answered again
            # Another message 1 (the device started over; or a replay of an old one):
            # answered beside the others, none of which had a frame under its keys yet.
            if session is None:
                fresh = await self._new_session(kind, bits, sid, up, now, register=False)
                if fresh is not None:
                    self._add_pending(sid, fresh)
                return fresh
            await self._restart(session, sid, (bits, up.frame[3:]), up, now)
            return None
        if kind == wire.KIND_HANDSHAKE or (kind == wire.KIND_FRAGMENT and session is None):
            return pendings[-1]  # its fragments, or a later handshake message
        # Try the frame under each pending handshake's keys (newest first), without
        # counting a failure: the frame may well belong to the session still in force.
        for pending in reversed(pendings):
            ch = pending.channel
            drops, proof = dict(ch.drops), _proof(ch)
            ch._reliable_in.last_id = None
            payloads, replies = ch.receive(up.frame, self._now_ms())
            if _proven(ch, proof):
                # Proven live: it replaces whatever session the sid had, and the other
                # pending ones (the store marks the old session superseded).
                del self.pending[sid]
                self._requeue(session)
                self.sessions[sid] = pending
                pending.address, pending.last_uplink, pending.last_heard = up.source, up, now
                if not await self._authorize(pending, sid):
                    return None
                if payloads:
                    await self._accept(pending, sid, payloads, up, replies)
                else:
                    for f in replies:
                        await self._send_frame(pending.transport, f, up.source, up)
                self._collect_acks(pending)
                return None
            ch.drops = drops
        if session is not None:
            return session
        # No session in force on this sid (say, after a restart, with a replayed message 1
        # pending): the device holds keys we do not have.  Tell it to handshake again.
        if kind != wire.KIND_FRAGMENT:
            self._drop("unknown_session")
            await self._reject(up, sid, wire.REJECT_UNKNOWN_SESSION)
        return None

    def _add_pending(self, sid: int, pending: _Session) -> None:
        """Keep the MAX_PENDING newest handshakes of a sid: a replayed message 1 takes a
        slot, so an attacker must replay that many, in the moment between a device's
        message 1 and its next frame, to push the device's own handshake out."""
        pendings = self.pending.setdefault(sid, [])
        pendings.append(pending)
        del pendings[:-MAX_PENDING]

    async def _restart(self, session: _Session, sid: int, message: tuple[int, bytes],
                       up: Uplink, now: float) -> None:
        """A new KK message 1 for an established session: a pending session answers it;
        the established one stays in force until the new one is proven live."""
        bits, body = message
        if wire.PATTERN_NAMES[bits >> 3] != "KK" or sid > LAST_SID:
            self._drop("handshake_refused", f"session {sid}")
            return
        pending = await self._new_session(wire.KIND_HANDSHAKE, bits, sid, up, now,
                                          register=False)
        if pending is None:
            return
        payloads, replies = pending.channel.receive(
            wire.handshake_frame("KK", bits & 0x07, sid, body), self._now_ms())
        if pending.channel.state != "established":
            self._drop("handshake_failed", f"session {sid}")
            return
        self._add_pending(sid, pending)
        for f in replies:
            await self._send_frame(pending.transport, f, up.source, up)

    async def _new_session(self, kind, bits, sid, up: Uplink, now: float,
                           register: bool = True) -> _Session | None:
        if kind not in (wire.KIND_HANDSHAKE, wire.KIND_FRAGMENT):
            self._drop("unknown_session")
            await self._reject(up, sid, wire.REJECT_UNKNOWN_SESSION)
            return None
        if not self.limiter.allow(self._source_key(up), now):
            self._drop("handshake_flood")
            return None
        lookup = rotation = next_key = None
        if sid <= LAST_SID and kind == wire.KIND_HANDSHAKE and (
                wire.PATTERN_NAMES[bits >> 3] != "KK" or bits & 0x07):
            # An enrolled session id takes KK only: XX is first contact, on 0x8000-0xFFFE.
            self._drop("handshake_refused", f"session {sid}")
            return None
        if sid <= LAST_SID:
            device, rotation, next_key = self.store.device_by_sid_with_rotation(sid)
            if device is None:
                self._drop("unknown_device")
                await self._reject(up, sid, wire.REJECT_UNKNOWN_SESSION)
                return None
            if device.status != "active":
                self._drop("revoked")
                self.store.audit("session.refused", device.id, reason="revoked")
                # The same answer as for a sid nobody holds: this frame proves nothing
                # of its sender, who must not learn which sids are revoked.
                await self._reject(up, sid, wire.REJECT_UNKNOWN_SESSION)
                return None
            key = device.static_key
            lookup = lambda _sid: key  # noqa: E731
        transport = self._transport(up.source)
        mtu = self._mtu(transport, up)
        channel = Channel(False, self._static, sid=sid, mtu=mtu,
                          peer_lookup=lookup, retry_ms=self.retry_ms,
                          reliable_retries=self.reliable_retries)
        channel.counter_probes = COUNTER_PROBES  # sparse reporters jump epochs
        if sid > LAST_SID:
            # First contact: XK message 2 names the session id the device will reconnect
            # under (encrypted, and written only by the holder of our key).  Offered, not
            # reserved in the store: enrollment takes it (or another, should two first
            # contacts race for it, and the device is told to start over).
            offered = self.store.free_sid(exclude=self._offered_sids())
            channel.handshake_payload = offered.to_bytes(2, "big")
        statics = self._grace_statics() if self._retiring else []
        # The device proves the next key it offered with KK.
        peers = [next_key] if lookup is not None and rotation == "offered" and next_key else []
        if statics or peers:
            channel.read_under_other_keys = functools.partial(
                _read_under_other_keys, channel, statics, peers)
        session = _Session(channel, transport, up.source, now)
        if register:
            self.sessions[sid] = session
            self._half_open[sid] = None
        self.counters["handshakes_started"] += 1
        return session

    @staticmethod
    def _mtu(transport: FrameTransport, up: Uplink) -> int:
        """The largest frame an answer to `up` may use: a LoRa transport knows it from the
        uplink's data rate; a BLE link from its negotiated ATT MTU."""
        per_uplink = getattr(transport, "mtu_for", None)
        if per_uplink is not None:
            return per_uplink(up)
        per_link = getattr(transport, "max_frame_for", None)
        return per_link(up.source) if per_link else transport.max_frame

    def _offered_sids(self) -> set[int]:
        return {int.from_bytes(s.channel.handshake_payload, "big")
                for sid, s in self.sessions.items() if sid > LAST_SID and not s.authorized
                and len(s.channel.handshake_payload) == 2}

    async def _authorize(self, session: _Session, sid: int) -> bool:
        channel = session.channel
        static = channel.remote_static
        device = self.store.device_by_key(static)
        if device is None and sid <= LAST_SID and channel.pattern == "KK":
            # KK under the next key a device offered: it holds it; the rotation is done.
            holder = self.store.device_by_sid(sid)
            if holder is not None and self.store.key_rotation(holder.id) == ("offered", static):
                self.store.complete_key_rotation(holder.id, static)
                self.counters["device_keys_rotated"] += 1
                device = self.store.device(holder.id)
        if sid <= LAST_SID and (device is None or device.sid != sid):
            # An enrolled session id belongs to one device: nobody else's key may hold it
            # (KK's lookup already binds the key; this also covers any other way in).
            self._drop("sid_mismatch", f"session {sid}")
            self.sessions.pop(sid, None) if self.sessions.get(sid) is session else None
            return False
        evidence = verdict = None
        token = ""
        first = channel.pattern in ("XK", "XX")
        # XK: the session id message 2 named; XX: the credential names one.
        offered = (int.from_bytes(channel.handshake_payload, "big")
                   if channel.pattern == "XK" else None)
        wants_credential = channel.pattern == "XX"
        if first:
            try:
                contact = parse_first_contact(channel.peer_payload)
            except ValueError as e:
                self._drop("bad_first_contact", str(e))
                await self._close(sid, wire.REJECT_HANDSHAKE_FAILED)
                return False
            token, raw_evidence = contact.token, contact.evidence
            wants_credential = wants_credential or contact.wants_credential
            if raw_evidence is not None:
                evidence, verdict = await self._appraise(raw_evidence, static, sid)
                if verdict is None:
                    return False
                if device is None:
                    # The same device (its DeviceID says so) with another static key:
                    # its measured firmware or application changed.  No token needed.
                    known = self.store.device_for_ueid(evidence.ueid)
                    if known is not None:
                        self.store.rekey(known.id, static, "measurements changed")
                        device = self.store.device(known.id)
        if device is None:
            try:
                device = self.store.enroll(token, static, offered)
            except TokenRefused as e:
                self._drop("enroll_refused", e.reason)
                await self._close(sid, wire.REJECT_HANDSHAKE_FAILED)
                return False
            self.counters["enrolled"] += 1
            if evidence is not None:
                self.store.bind_device_id(evidence.ueid, device.id)
        elif device.status != "active":
            self._drop("revoked")
            self.store.audit("session.refused", device.id, reason="revoked")
            await self._close(sid, wire.REJECT_REVOKED)
            return False
        elif first:
            # An enrolled key on first contact again: it lost what enrollment taught it
            # (XK: message 2 never arrived; XX: its credential).  Message 3 just proved
            # the key: it reconnects under the session id it was given now.
            self.counters["credentials_reissued"] += 1
        if offered is not None and device.sid != offered:
            if not self.store.move_sid(device.id, offered):
                self._drop("sid_taken", f"session {sid}")
                await self._close(sid, wire.REJECT_HANDSHAKE_FAILED)
                return False
            device = self.store.device(device.id)
        if channel.pattern == "XK" and not wants_credential:
            # Nothing to send: the device's first uplink gets the first answer.  Should it
            # repeat message 3 (it heard nothing from us), an authenticated frame answers.
            answer_repeats_with(channel, poll_frame(channel, self._now_ms()))
        if wants_credential:
            credential = self._credential(device, static)
            frames = channel.send(CONTROL_CREDENTIAL + credential, self._now_ms(),
                                  wire.KIND_CONTROL)
            # Should the credential be lost, the device repeats XX message 3: it gets the
            # same frames again (the channel answers the repeat with them).
            answer_repeats_with(channel, frames)
            await self._send(session, frames)
        elif channel.s.public != self.public_key:
            # KK under a retiring key: the device has not learned the new one yet.  A
            # credential (signed by the authority) names it, now and with the answers
            # to the device's next frames; until the device uses it, every session
            # under the old key carries it again.
            await self._announce(session, device)
            session.announce = ANNOUNCE_REPEATS - 1
        if evidence is not None:
            result = attest.issue_result(self.authority._key, device.id, evidence, verdict)
            self.store.record_attestation(device.id, verdict.decision, verdict.reason,
                                          evidence.as_json() | {"unknown": verdict.unknown},
                                          result)
            self.counters[f"attestation_{verdict.decision}"] += 1
        session.device_id = device.id
        session.authorized = True
        if channel.pattern == "KK" and self.store.key_rotation(device.id)[0] == "requested":
            session.ask_rotate = ANNOUNCE_REPEATS

        self.counters["handshakes_completed"] += 1
        session.attributes = device.attributes
        # Routine: written with the next group commit rather than an fsync of its own.
        self._defer_audit("session.established", device.id, sid=sid, pattern=channel.pattern)
        transport_name = session.transport.name
        under = channel.s.public
        self._defer(lambda: self.store.session_opened(device.id, sid, channel.pattern,
                                                      transport_name, under))
        # One session per device: an older one under another id is closed.
        old_sid = self._by_device.get(device.id)
        if old_sid is not None and old_sid != sid:
            self._requeue(self.sessions.pop(old_sid, None))
        self._by_device[device.id] = sid
        return True

    async def _key_rotation(self, session: _Session) -> None:
        """A requested rotation of the device's own key: ask (with the answers to its
        next frames), and record the next key it offers on this session, which its key
        authenticates (the proof that the offer comes from the holder of the old key)."""
        control = getattr(session.channel, "key_control", None)
        session.channel.key_control = None
        device_id = session.device_id
        state, _ = self.store.key_rotation(device_id)
        if control is not None and control[:1] == CONTROL_NEXT_KEY and len(control) == 33 \
                and state in ("requested", "offered"):
            self.store.offer_next_key(device_id, bytes(control[1:]))
            session.ask_rotate = 0
            self.counters["device_keys_offered"] += 1
            return
        if session.ask_rotate and state == "requested":
            session.ask_rotate -= 1
            await self._send(session, session.channel.send(
                CONTROL_ROTATE_KEY, self._now_ms(), wire.KIND_CONTROL))

    async def _announce(self, session: _Session, device) -> None:
        """Send the device a credential naming the gateway's current static key."""
        if session.backlog:
            return  # the last announcement still waits for the device's windows
        channel = session.channel
        credential = self._credential(device, channel.remote_static)
        await self._send(session, channel.send(CONTROL_CREDENTIAL + credential,
                                               self._now_ms(), wire.KIND_CONTROL))
        self.counters["gateway_key_announced"] += 1
        self._defer_audit("keys.announced", device.id, gateway_key=self.public_key.hex(),
                          under=channel.s.public.hex())

    def rotate_static(self, static_key: bytes, grace_until: float) -> None:
        """Make `static_key` the gateway's static key now (`sealink keys rotate` and a
        SIGHUP): the old one is accepted until `grace_until`, and every device with a
        session is told the new one at its next authenticated frame (in its receive
        window, on a class A link)."""
        self._retiring.insert(0, (self._static, grace_until))
        self.static_key = static_key
        self._static = PrivateKey(static_key)
        self.public_key = self._static.public
        for session in self.sessions.values():
            session.announce = ANNOUNCE_REPEATS if session.authorized else 0
        self.counters["gateway_key_rotations"] += 1

    def _credential(self, device, static: bytes) -> bytes:
        """The device's credential; during an authority rotation's grace period followed
        by the old authority's endorsement of the new one (a device provisioned with
        the old key checks the chain)."""
        credential = self.authority.issue(device.sid, int(time.time()), static,
                                          self.public_key, device.attributes)
        return credential + (self.authority.endorsement or b"")

    async def _appraise(self, raw: bytes, static: bytes, sid: int):
        """Verify and appraise first-contact evidence: (evidence, verdict), or
        (None, None) once the session is refused (counted, audited, REJECTed)."""
        try:
            evidence = attest.verify_evidence(raw, static, self.store.device_id_key)
        except attest.EvidenceError as e:
            self._drop(f"evidence_{e.reason}", f"session {sid}")
            self.store.audit("attestation.refused", None, reason=e.reason, sid=sid)
            await self._close(sid, wire.REJECT_HANDSHAKE_FAILED)
            return None, None
        verdict = attest.appraise(evidence, self.store.reference_status)
        if verdict.decision == "refused":
            self._drop("attestation_refused", f"session {sid}: {verdict.bad}")
            device = self.store.device_for_ueid(evidence.ueid)
            if device is not None:
                self.store.record_attestation(device.id, verdict.decision, verdict.reason,
                                              evidence.as_json() | {"bad": verdict.bad}, None)
            else:
                self.store.audit("attestation.refused", None, reason=verdict.reason,
                                 ueid=evidence.ueid.hex(), bad=verdict.bad)
            await self._close(sid, wire.REJECT_HANDSHAKE_FAILED)
            return None, None
        return evidence, verdict

    def _device_status(self, device_id: str, now: float | None = None) -> str:
        """"active" or "revoked", as the store says: the set of revoked devices is read
        again at most once per STATUS_CACHE_S (a revocation by another process, `sealink
        devices revoke`, takes effect within that), in one query for the whole fleet.
        `now`: the loop clock, when the caller has read it."""
        if now is None:
            now = self._clock()
        if now - self._revoked_read_at > STATUS_CACHE_S:
            self._revoked = self.store.revoked_ids()
            self._revoked_read_at = now
        return "revoked" if device_id in self._revoked else "active"

    async def _accept(self, session: _Session, sid: int, payloads: list[bytes],
                      up: Uplink, replies: list[bytes]) -> bool:
        if not session.authorized or self._device_status(session.device_id) != "active":
            self._drop("revoked" if session.authorized else "not_authorized")
            if session.authorized:
                self.store.audit("session.closed", session.device_id, reason="revoked")
            await self._close(sid, wire.REJECT_REVOKED)
            return False
        msg_id = session.channel._reliable_in.last_id
        if msg_id is not None:
            # A device keeps a message's id across its sessions: one committed already
            # (its ack lost, the message sent again on a new session, perhaps after a
            # restart of this gateway) is acknowledged, not committed again.
            if self._is_repeat(session.device_id, msg_id):
                self.counters["duplicates"] += 1
                for f in replies:
                    await self._send_frame(session.transport, f, up.source, up)
                return True
            if any(s.device_id == session.device_id and m == msg_id
                   for s, _, _, _, m in self._batch):
                self.counters["duplicates"] += 1
                return True  # its first copy commits now; the next copy gets the ack
        for payload in payloads:
            self._batch.append((session, payload, up, replies, msg_id))
            replies = []  # sent once, with the last payload of this frame
        self._schedule_commit()
        return True

    def _committed_ids(self, device_id: str) -> collections.deque:
        """The reliable ids of a device's last DEDUP_IDS committed uplinks (from the
        store after a restart)."""
        ids = self._msg_ids.get(device_id)
        if ids is None:
            ids = self._msg_ids[device_id] = collections.deque(maxlen=DEDUP_IDS)
            for msg_id in self.store.recent_msg_ids(device_id, DEDUP_IDS):
                if msg_id is not None:
                    self._remember(device_id, msg_id)
        return ids

    def _is_repeat(self, device_id: str, msg_id: int) -> bool:
        """Whether `msg_id` is a message of this device committed already (see
        DEDUP_IDS)."""
        return msg_id in self._committed_ids(device_id)

    def _remember(self, device_id: str, msg_id: int) -> None:
        """Remember a committed id.  One far from the newest (DEDUP_IDS or more either
        way, ids being 8 bits) starts a new boot of the device: the ids of its earlier
        boots are forgotten, since it holds none of their messages any more (and after
        256 they come round again as new ones)."""
        ids = self._committed_ids(device_id)
        if ids:
            d = (msg_id - ids[-1]) % 256
            if min(d, 256 - d) >= DEDUP_IDS:
                ids.clear()
        ids.append(msg_id)

    def _defer(self, action) -> None:
        """A routine write, committed with the next group commit (no fsync of its own)."""
        self._audits.append(action)
        self._schedule_commit()

    def _defer_audit(self, event: str, device_id: str | None, **detail) -> None:
        self._defer(lambda: self.store.audit(event, device_id, **detail))

    def _schedule_commit(self) -> None:
        """Group commit: everything accepted before the event loop's next turn (a whole
        batch of datagrams) shares one transaction and one fsync."""
        if not self._commit_scheduled:
            self._commit_scheduled = True
            asyncio.get_running_loop().call_soon(self._commit_batch)

    def _commit_batch(self) -> None:
        self._commit_scheduled = False
        batch, self._batch = self._batch, []
        audits, self._audits = self._audits, []
        try:
            ids = self.store.add_uplinks([(s.device_id, p, up.radio, m)
                                          for s, p, up, _, m in batch], audits)
        except Exception as e:  # the disk failed: nothing is acknowledged
            logger.error("committing %d uplinks failed: %s", len(batch), e)
            self.drops["store_failed"] += len(batch)
            return
        self.counters["uplinks"] += len(batch)
        if batch:
            self.uplink_event.set()
        subscribers = self._subscribers
        for uplink_id, (session, payload, up, replies, msg_id) in zip(ids, batch, strict=True):
            if msg_id is not None:
                self._remember(session.device_id, msg_id)
            if subscribers:
                message = Message(uplink_id, session.device_id, session.attributes,
                                  payload, up.radio, up.received_at)
                for queue in subscribers:
                    try:
                        queue.put_nowait(message)
                    except asyncio.QueueFull:
                        self._drop("subscriber_full")
            for f in replies:  # acknowledgements only after the commit
                asyncio.ensure_future(self._send_frame(session.transport, f, session.address,
                                                       session.last_uplink))

    @property
    def store_has_queued(self) -> bool:
        # Downlinks are queued through send() in this process; the poll loop rechecks
        # the store every 50 ms anyway.
        return self._queued_hint

    # --- frames out ------------------------------------------------------------------------

    def _transport(self, address: Address) -> FrameTransport:
        for t in self.transports:
            if t.name == address.transport:
                return t
        raise LookupError(address.transport)

    async def _send_frame(self, transport: FrameTransport, frame: bytes, to: Address,
                          uplink: Uplink | None) -> None:
        """Send one frame; a medium that cannot take it now (no receive window, a frame
        over its payload limit) is counted, and retransmission takes over."""
        try:
            await transport.send(frame, to, uplink)
        except TransportError as e:
            self._drop(f"send_{e.reason}", str(e))

    async def _send(self, session: _Session, frames: list[bytes]) -> bool:
        """Send frames to a session's device; True if the medium took every one.  On a
        class A medium, a frame that finds no window now waits in the session's backlog
        for the device's next uplink."""
        ok = True
        for f in frames:
            # (Frames may reach the device out of order: fragments carry their index,
            # and the channel takes counters out of order.)
            try:
                await session.transport.send(f, session.address, session.last_uplink)
            except TransportError as e:
                self._drop(f"send_{e.reason}", str(e))
                if e.reason in DEFERRED:
                    self._backlog(session, f)
                ok = False
        return ok

    def _backlog(self, session: _Session, frame: bytes) -> None:
        session.backlog.append(frame)
        if len(session.backlog) > MAX_BACKLOG:
            del session.backlog[0]
            self._drop("backlog_full")

    async def _send_backlog(self, session: _Session) -> None:
        """The device just transmitted: what waited for its windows goes first, in order,
        as far as the windows take it."""
        while session.backlog:
            frame = session.backlog[0]
            try:
                await session.transport.send(frame, session.address, session.last_uplink)
            except TransportError as e:
                if e.reason not in DEFERRED:
                    session.backlog.pop(0)  # it will never fit (too long for the link)
                    self._drop(f"send_{e.reason}", str(e))
                    continue
                return
            session.backlog.pop(0)
            downlink_id = self._awaiting_tx.get(frame)
            if downlink_id is not None and not getattr(session.transport, "confirms_tx",
                                                       False):
                self.store.set_downlink_state(downlink_id, "sent")

    async def _reject(self, up: Uplink, sid: int, reason: int) -> None:
        """An unauthenticated answer to an unauthenticated frame: rationed per source
        (REJECT_RATE per 10 s), so a sweep of session ids learns slowly."""
        if not self.reject_limiter.allow(self._source_key(up), self._clock()):
            self._drop("reject_limited")
            return
        frame = wire.header(wire.KIND_REJECT, reason, sid)
        await self._send_frame(self._transport(up.source), frame, up.source, up)

    async def _close(self, sid: int, reason: int) -> None:
        session = self.sessions.pop(sid, None)
        if session is not None:
            if session.device_id and self._by_device.get(session.device_id) == sid:
                del self._by_device[session.device_id]
            if session.authorized:
                why = {wire.REJECT_REVOKED: "revoked"}.get(reason, f"reject {reason}")
                device_id = session.device_id
                self._defer(lambda: self.store.session_closed(device_id, why))
            await self._send_frame(session.transport, wire.header(wire.KIND_REJECT, reason,
                                                                  sid),
                                   session.address, session.last_uplink)

    def _requeue(self, session: _Session | None) -> None:
        """A session the device left (replaced by a newer one): what it carried and the
        device did not acknowledge goes out again on the next session."""
        if session is None or not session.inflight:
            return
        for downlink_id in session.inflight.values():
            self.store.set_downlink_state(downlink_id, "queued")
        session.inflight.clear()
        self._queued_hint = True

    def _collect_acks(self, session: _Session) -> None:
        acked = session.channel._reliable_out.acked
        while acked:
            downlink_id = session.inflight.pop(acked.pop(0), None)
            if downlink_id is not None:
                self.store.set_downlink_state(downlink_id, "acked")
                self.counters["downlinks_acked"] += 1

    async def _flush_downlinks(self) -> None:
        if not self._by_device:
            return
        queued = self.store.downlinks(states=("queued",))
        if not queued:  # (the poll loop asks 20 times a second: no walk of every session)
            self._queued_hint = False
            self._queued_devices = set()
            return
        in_flight = {i for s in self.sessions.values() for i in s.inflight.values()}
        queued = [d for d in queued if d["id"] not in in_flight]
        self._queued_hint = bool(queued)
        self._queued_devices = {d["device_id"] for d in queued}
        for downlink in queued:
            session = self.sessions.get(self._by_device.get(downlink["device_id"], -1))
            if session is None or session.channel.state != "established":
                continue
            try:
                frames = session.channel.send_reliable(downlink["payload"], self._now_ms())
            except DeliveryError:
                continue  # window full: the next poll tries again
            except SealinkError as e:
                self._drop("downlink_failed", str(e))
                continue
            session.inflight[session.channel._reliable_out.last_id] = downlink["id"]
            self._needs_poll[self._by_device[downlink["device_id"]]] = None
            await self._send_downlink(session, frames, downlink["id"])

    async def _resend(self, session: _Session) -> None:
        """Every downlink the device has not acknowledged, again (class A: right after
        the device transmitted)."""
        ch = session.channel
        now_ms = self._now_ms()
        for body in ch._reliable_out.pending(now_ms):
            frames = ch.send(body, now_ms, wire.KIND_RELIABLE)
            await self._send_downlink(session, frames, session.inflight.get(body[0]))

    async def _send_downlink(self, session: _Session, frames: list[bytes],
                             downlink_id: int | None) -> None:
        """Send the frames of a downlink; it is `sent` once the medium has sent every
        frame (at once, or when a transport that confirms transmission says so)."""
        confirms = getattr(session.transport, "confirms_tx", False)
        if confirms and downlink_id is not None:
            for f in frames:
                self._awaiting_tx[f] = downlink_id
            while len(self._awaiting_tx) > 4096:
                del self._awaiting_tx[next(iter(self._awaiting_tx))]
        # (A frame that finds no window now stays queued: the device's next uplink.)
        ok = await self._send(session, frames)
        if ok and not confirms and downlink_id is not None:
            self.store.set_downlink_state(downlink_id, "sent")

    def _tx_result(self, frame: bytes, error: str) -> None:
        """A transport's verdict on a frame it was given (semtech-udp: the TX_ACK)."""
        downlink_id = self._awaiting_tx.pop(frame, None)
        if error == "NONE":
            if downlink_id is not None:
                self.store.set_downlink_state(downlink_id, "sent")
            return
        # TOO_LATE, TOO_EARLY, COLLISION_PACKET, ...: not sent.  The downlink stays
        # queued (and in flight on its session): the device's next uplink opens the
        # next window for it.
        self.counters[f"downlink_tx_{error.lower()}"] += 1
        self.counters["downlink_tx_errors"] += 1

    def _expire_half_open(self, now: float) -> None:
        """Drop the handshakes (XX in progress, or not yet authorized; KK answered and
        not yet proven) idle for longer than pending_timeout_s.  Run once a second, not
        per poll: a sweep of every half-open handshake, 20 times a second, cost a fleet
        reconnecting at once more than the handshakes' own crypto."""
        self._expired_at = now
        for sid, pendings in list(self.pending.items()):
            alive = [p for p in pendings
                     if now - max(p.created, p.last_heard) <= self.pending_timeout_s]
            for _ in range(len(pendings) - len(alive)):
                self._drop("handshake_timeout")
            if alive:
                self.pending[sid] = alive
            else:
                del self.pending[sid]
        for sid in list(self._half_open):
            session = self.sessions.get(sid)
            if session is None or session.authorized:
                del self._half_open[sid]
            elif now - max(session.created, session.last_heard) > self.pending_timeout_s:
                del self.sessions[sid]
                del self._half_open[sid]
                self._drop("handshake_timeout")

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            now = self._clock()
            if now - self._expired_at >= 1.0:
                self._expire_half_open(now)
            for sid in list(self._needs_poll):
                session = self.sessions.get(sid)
                if session is None or not session.authorized:
                    self._needs_poll.pop(sid, None)
                    continue
                windowed = getattr(session.transport, "needs_window", False)
                if not windowed:
                    # Downlinks only: a handshake answer is never sent again on a timer
                    # (the device repeats its message and gets the cached answer), so a
                    # half-open handshake costs no work until it expires.  Through a
                    # class A medium nothing goes out on a timer at all: an established
                    # session's downlinks ride on the device's next frame (_on_uplink).
                    try:
                        await self._send(session, session.channel.poll(self._now_ms()))
                    except SealinkError as e:
                        self._drop("poll_failed", str(e))
                reliable = session.channel._reliable_out
                reliable.failed.clear()  # the store keeps the payloads
                while reliable.failed_ids:
                    downlink_id = session.inflight.pop(reliable.failed_ids.pop(0), None)
                    if downlink_id is not None:
                        self.store.set_downlink_state(downlink_id, "failed")
                        self.store.audit("downlink.failed", session.device_id,
                                         downlink_id=downlink_id)
                        self.counters["downlinks_failed"] += 1
                if session.authorized and reliable.in_flight == 0:
                    self._needs_poll.pop(sid, None)
            await self._flush_downlinks()
