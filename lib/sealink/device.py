# The application-facing device API, frozen into the firmware:
#
#     device = Device(radio, Keystore("/sealink.key"), {"token": b"..."})
#     await device.connect()              # XK + token the first time, KK afterwards
#     await device.send(b"21.5 C")        # stored, then forwarded until acknowledged
#     async for command in device.commands():
#         ...
#
# `radio` is any driver in sealink.drivers (RAK3172 UART module, a micropython-lib
# LoRa modem, BLE peripheral, UDP).  Uplinks are kept in a bounded outbox until the
# gateway acknowledges them: across lost frames, lost sessions and reconnects.  When
# the outbox is full the oldest uplink is dropped and counted.

import asyncio
import json
import os
import time

from sealink import crypto, fragment, wire
from sealink.errors import SealinkError
from sealink.session import (
    Channel,
    delivery_report,
    last_reliable_id,
    next_poll_ms,
    poll_frame,
    restamp,
)

try:  # Sealink firmware (the handshake in C keeps the same two keys' public halves)
    from _sealink_crypto import static_public
except ImportError:
    from sealink.noise import static_public

try:
    _ticks = time.ticks_ms  # MicroPython

    def now_ms():
        return _ticks()
except AttributeError:

    def now_ms():
        # CPython: the event loop's clock (monotonic time, or a simulation's virtual time).
        try:
            return int(asyncio.get_running_loop().time() * 1000)
        except RuntimeError:
            return int(time.monotonic() * 1000)


REJECT_REVOKED = 3
FIRST_CONTACT_SID = 0x8000  # first-contact session ids are 0x8000..0xFFFE
IDLE_POLL_MS = 30000  # the poll task's longest sleep when no timer is due
POLL_BACKOFF_MS = 100  # after a radio error on receive
# Message numbers reserved ahead in the keystore: after a reboot a device starts 64 to
# 128 past the last number it used, so its 8-bit ids are clear of the 64 the gateway
# remembers (sealink_gateway.service.DEDUP_IDS) for at least 128 messages.
SEQ_RESERVE = 128


class DeviceError(SealinkError):
    pass


class Keystore:
    """The device's static key and what enrollment taught it (the gateway's static key,
    the session id assigned to it, the signed credential).  Saved atomically to `path`
    (replace-by-rename) when given; kept in memory otherwise."""

    # A measured key (DICE: derived at boot from the UDS and what runs) is never written
    # to storage: code that changed must not find the key of the code it replaced.
    measured = False
    # (Set only when there is one; read with getattr: a class default costs heap.)
    # - authority_key: the authority's key learned through an endorsement by the
    #   provisioned one (a rotation of the authority).
    # - next_secret: the next static key, made when the gateway asked for a rotation
    #   and offered on a session under the current one; it replaces `secret` once a
    #   handshake under it succeeds.

    def __init__(self, path=None, measured_secret=None):
        self.path = path
        self.secret = None
        self.gateway_key = None
        self.sid = None
        self.credential = None
        self.next_seq = 0  # message numbers from here on are unused (see Device)
        public = None
        if path is not None:
            try:
                with open(path) as f:
                    public = self._load(json.load(f))
            except OSError:
                pass
        if measured_secret is not None:
            self.measured = True
            if public is not None and public != crypto.x25519_base(measured_secret):
                # Another key than the one enrolled: the measured code changed.  The
                # gateway knows this device by its DeviceID: first contact again, with
                # evidence (no token needed), then KK with the new key.
                self.sid = self.credential = None
            self.secret = measured_secret
            self.save()
        elif self.secret is None:
            self.secret = crypto.random_bytes(32)
            self.save()

    def _load(self, d):
        h = bytes.fromhex
        if d.get("secret"):
            self.secret = h(d["secret"])
        self.gateway_key = h(d["gateway_key"]) if d.get("gateway_key") else None
        self.sid = d.get("sid")
        self.credential = h(d["credential"]) if d.get("credential") else None
        self.next_seq = d.get("next_seq", 0)
        if d.get("authority_key"):
            self.authority_key = h(d["authority_key"])
        if d.get("next_secret"):
            self.next_secret = h(d["next_secret"])
        return h(d["public"]) if d.get("public") else None

    @property
    def enrolled(self):
        return self.sid is not None and self.gateway_key is not None

    @property
    def public_key(self):
        return static_public(self.secret)

    def save(self):
        if self.path is None:
            return
        d = {"secret": None if self.measured else self.secret.hex(),
             "public": static_public(self.secret).hex(), "sid": self.sid,
             "gateway_key": self.gateway_key.hex() if self.gateway_key else None,
             "credential": self.credential.hex() if self.credential else None,
             "next_seq": self.next_seq}
        for name in ("authority_key", "next_secret"):
            value = getattr(self, name, None)
            if value is not None:
                d[name] = value.hex()
        tmp = self.path + ".new"
        try:
            os.remove(tmp)  # a leftover keeps its old mode through O_TRUNC
        except OSError:
            pass
        try:  # CPython: the file holds the private key, so only its owner may read it
            f = os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w")
        except AttributeError:  # MicroPython: no file modes on its filesystems
            f = open(tmp, "w")
        with f:
            json.dump(d, f)
        os.rename(tmp, self.path)


def _cbor_head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    if n < 256:
        return bytes([major << 5 | 24, n])
    return bytes([major << 5 | 25, n >> 8, n & 0xFF])


def first_contact_payload(token, evidence=None, credential=False):
    """XK message 3's payload: the CBOR map {1: token, 2: evidence (bytes), 3: true (send
    me my credential)}, each when there is one.  A token in hex travels as its bytes
    (16 instead of 32), else as text."""
    import binascii

    token = bytes(token or b"")
    try:
        raw, major = binascii.unhexlify(token), 2
    except ValueError:
        raw, major = token, 3
    out = _cbor_head(5, (1 if token else 0) + (1 if evidence else 0) + (1 if credential else 0))
    if token:
        out += b"\x01" + _cbor_head(major, len(raw)) + raw
    if evidence:
        out += b"\x02" + _cbor_head(2, len(evidence)) + bytes(evidence)
    if credential:
        out += b"\x03\xf5"
    return out


def credential_fields(credential):
    """(session id, gateway static key) from a credential (the gateway's format:
    version 1 | sid (2) | issued at (4) | device key (32) | gateway key (32) | ...)."""
    if credential is None or len(credential) < 72 or credential[0] != 1:
        raise DeviceError("malformed credential")
    return (credential[1] << 8) | credential[2], bytes(credential[39:71])


class Device:
    # (Set only when used, read with getattr: class defaults cost heap on a device.)
    # - authority_key: the authority's Ed25519 public key, when provisioned (config
    #   "authority_key"): credentials naming a new gateway key must carry its signature.
    # - _next_key_failures: handshakes under the next key (a rotation of our own key)
    #   that failed; after two, the current key again (the offer may not have arrived).

    def __init__(self, radio, keystore, config=None):
        cfg = config or {}
        self.radio = radio
        self.keystore = keystore
        self.token = cfg.get("token", b"")
        # DICE evidence (sealink.attestation): sent with first contact, so that the
        # gateway knows what runs here, and knows this device again after an update.
        self.evidence = cfg.get("evidence")
        # The gateway's X25519 public key, provisioned with the token: first contact (XK)
        # sends the token only to the holder of this key, under forward-secret keys.
        self.gateway_key = cfg.get("gateway_key")
        if cfg.get("credential"):
            # Ask for the authority's credential at first contact (it costs the gateway
            # several downlinks at SF12; nothing here needs it to work).
            self.want_credential = True
        if cfg.get("authority_key"):
            self.authority_key = cfg["authority_key"]
        self.mtu = min(cfg.get("mtu", radio.mtu), radio.mtu)
        # A reliable uplink: 1-byte id + payload + 16-byte tag + 2 header bytes, split
        # into at most MAX_FRAGMENTS fragments of (mtu - 5) bytes.
        self.max_payload = fragment.MAX_FRAGMENTS * (self.mtu - 5) - 19
        self.retry_ms = cfg.get("retry_ms", 2000)
        self.max_retries = cfg.get("max_retries", 5)
        self.outbox_limit = cfg.get("outbox", 16)
        # First contact picks a random session id; a simulation may fix it (seeded runs).
        self.first_contact_sid = cfg.get("first_contact_sid")
        self.channel = None
        self._outbox = []  # [seq, payload] not yet acknowledged, oldest first
        # Each uplink gets the next message number; its low 8 bits are its reliable id on
        # every session it is sent on, so the gateway, which remembers the ids it
        # committed, takes a repeat of it only once.  Numbers are reserved in the
        # keystore (one write per boot and per SEQ_RESERVE / 2 messages): after a reboot
        # the device starts past every id the gateway may still remember.
        self._seq = keystore.next_seq
        keystore.next_seq = self._seq + SEQ_RESERVE
        keystore.save()
        self._in_flight = {}  # reliable message id -> seq of the outbox entry
        self._reconnecting = False
        self.revoked = False
        self._commands = []
        self._command_event = asyncio.Event()
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()  # the poll task: something changed, look again
        self._tx_busy = 0  # _tx calls with frames still waiting for the radio
        self._reject_seen_at_ping = False
        self._tasks = []
        self.stats = {"handshakes": 0, "handshake_ms": None, "sent": 0, "acked": 0,
                      "retried": 0, "outbox_dropped": 0, "commands": 0, "frames_in": 0,
                      "frames_out": 0, "rejects": 0, "radio_errors": 0}

    # --- radio -------------------------------------------------------------------------

    async def _tx(self, frames):
        if not frames:
            return
        made = now_ms()
        self._tx_busy += 1
        try:
            for f in frames:
                try:
                    await self.radio.send(f)
                    self.stats["frames_out"] += 1
                except SealinkError:
                    # The modem refused or timed out: the frame is lost like any on the
                    # air; handshake and reliable retransmission recover.
                    self.stats["radio_errors"] += 1
        finally:
            self._tx_busy -= 1
        ch = self.channel
        if ch is not None:
            # A duty-cycle wait can hold frames for minutes (SF12): an answer can only
            # come after they are sent, so their retransmission timers start now.
            restamp(ch, made, now_ms())
        self._wake.set()

    async def _rx_loop(self):
        while True:
            try:
                frame = (await self.radio.recv())[0]
            except (OSError, SealinkError):
                # A driver's error must never end the receive task: count, go on.
                self.stats["radio_errors"] += 1
                await asyncio.sleep(POLL_BACKOFF_MS / 1000)
                continue
            self.stats["frames_in"] += 1
            ch = self.channel
            if ch is None:
                continue
            payloads, replies = ch.receive(frame, now_ms())
            if not ch.unconfirmed and getattr(self, "_enrolling", None) is not None and \
                    ch.state == "established":
                self._enrolled()
            if ch.credential is not None and self.keystore.enrolled:
                # (Asked for at first contact, or naming a rotated gateway key.)
                self._learn_gateway_key(ch)
            if getattr(ch, "key_control", None) is not None:
                replies = replies + self._rotate_own_key(ch)
            if frame and frame[0] >> 5 == wire.KIND_REJECT:
                self.stats["rejects"] += 1
            for p in payloads:
                self._commands.append(p)
                self.stats["commands"] += 1
                self._command_event.set()
            self._collect()
            self._kick()
            if replies:
                await self._tx(replies)

    def _enrolled(self):
        # The gateway's first frame under the first-contact keys: it accepted us.
        ks = self.keystore
        ks.sid, ks.gateway_key = self._enrolling
        ks.credential = None
        self._enrolling = None
        ks.save()
        self.token = b""  # one-time: spent
        self.stats["enrolled"] = 1

    def _rotate_own_key(self, ch):
        # The gateway asks this device to rotate its static key (sealink device
        # rotate-key): make the next key (once), keep it, and offer its public half on
        # this session, which the current key authenticates.  A measured key (DICE)
        # changes only with what runs: nothing to offer.
        control, ch.key_control = ch.key_control, None
        ks = self.keystore
        if control[:1] != b"\x04" or ks.measured or not ks.enrolled or ch.pattern != "KK":
            return []
        if getattr(ks, "next_secret", None) is None:
            ks.next_secret = crypto.random_bytes(32)
            ks.save()
        self._next_key_failures = 0  # asked again: the offer may not have arrived
        return ch.send(b"\x05" + crypto.x25519_base(ks.next_secret), now_ms(),
                       wire.KIND_CONTROL)

    def _learn_gateway_key(self, ch):
        # A credential on a KK session: the gateway is rotating its static key and names
        # the new one (sealink keys rotate).  The session was authenticated by the key
        # we hold; the credential must be ours, and signed by the authority when we were
        # provisioned with its key.  From the next handshake on, KK uses the new key.
        cred, ch.credential = bytes(ch.credential), None
        ks = self.keystore
        provisioned = getattr(self, "authority_key", None)
        authority = getattr(ks, "authority_key", None) or provisioned
        try:
            sid, key = credential_fields(cred)
            n = 72 + cred[71]
            if sid != ks.sid or cred[7:39] != bytes(ks.public_key) or \
                    len(cred) not in (n + 64, n + 164):
                raise DeviceError("not this device's credential")
            if authority is not None:
                from sealink import ed25519

                e = cred[n + 64:]
                if e and e[:32] != authority:
                    # The authority rotated: our key endorses the one that signed.
                    if not ed25519.verify(authority, e[36:],
                                          b"sealink authority endorsement v1" + e[:36]):
                        raise DeviceError("endorsement not signed by the authority")
                    authority = e[:32]
                if not ed25519.verify(authority, cred[n:n + 64], cred[:n]):
                    raise DeviceError("credential not signed by the authority")
        except (DeviceError, SealinkError, IndexError):
            self.stats["credentials_refused"] = self.stats.get("credentials_refused", 0) + 1
            return
        if key != ks.gateway_key or ks.credential is None or (
                authority is not None
                and authority != (getattr(ks, "authority_key", None) or provisioned)):
            ks.gateway_key, ks.credential = key, cred[:n + 64]
            if authority != provisioned:
                ks.authority_key = authority
            ks.save()
            self.stats["gateway_key_updates"] = self.stats.get("gateway_key_updates", 0) + 1

    def _kick(self):
        self._changed.set()
        self._wake.set()

    async def _poll_loop(self):
        # Sleeps until the channel's next retransmission is due or something changes
        # (a frame in, a message out, a new session): no periodic wake-ups while idle.
        while True:
            ch = self.channel
            # While frames wait for the radio, nothing is due: the peer cannot have
            # answered what it has not received.  (_tx wakes us when they are out.)
            due = None if ch is None or self._tx_busy else next_poll_ms(ch, now_ms())
            if due is None or due > 0:
                wait = IDLE_POLL_MS if due is None else min(due, IDLE_POLL_MS)
                try:
                    await asyncio.wait_for(self._wake.wait(), wait / 1000)
                except asyncio.TimeoutError:
                    pass
                self._wake.clear()
            ch = self.channel
            if ch is None or self._tx_busy:
                continue
            state = ch.state
            frames = ch.poll(now_ms())
            self._collect()
            if frames or ch.state != state:
                self._changed.set()
            if frames:
                await self._tx(frames)
            if ch.state == "established" and self._outbox:
                await self._flush()
            elif ch.state in ("rejected", "expired") and not self._reconnecting:
                # The gateway lost our session (restart, revocation) or it ran out:
                # handshake again in the background; the outbox waits.
                self._reconnecting = True
                asyncio.create_task(self._reconnect())

    async def _reconnect(self):
        # Until it works: nothing a radio says (a REJECT is unauthenticated) may make a
        # device give up on its gateway, only slow it down.
        delay = self.retry_ms
        try:
            while True:
                try:
                    await self.connect()
                    return
                except DeviceError:
                    await asyncio.sleep(delay / 1000)
                    delay = min(delay * 2, 60000)
        finally:
            self._reconnecting = False

    def _collect(self):
        ch = self.channel
        if ch is None or ch.state != "established":
            return
        acked, failed = delivery_report(ch)
        for i in acked:
            seq = self._in_flight.pop(i, None)
            if seq is not None:
                self._outbox = [e for e in self._outbox if e[0] != seq]
                self.stats["acked"] += 1
        for i in failed:
            if self._in_flight.pop(i, None) is not None:
                self.stats["retried"] += 1  # stays in the outbox: sent again

    def start(self):
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._rx_loop()),
                           asyncio.create_task(self._poll_loop())]

    def close(self):
        for t in self._tasks:
            t.cancel()
        self._tasks = []

    async def _until(self, predicate, timeout_ms):
        start = now_ms()
        while not predicate():
            left = timeout_ms - (now_ms() - start)
            if left <= 0:
                return False
            # Every change a predicate can see sets _changed (frames in, retransmissions,
            # state changes in poll): no need to wake before then.
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left / 1000)
            except asyncio.TimeoutError:
                pass
        return True

    # --- the API -----------------------------------------------------------------------

    @property
    def connected(self):
        return self.channel is not None and self.channel.state == "established"

    async def connect(self, timeout_ms=60000):
        """Handshake with the gateway: XK with the enrollment token the first time, KK
        with the pinned gateway key afterwards.  Raises DeviceError on failure."""
        self.start()
        ks = self.keystore
        secret = ks.secret
        if ks.enrolled:
            sid, rs, token, pattern = ks.sid, ks.gateway_key, b"", "KK"
            nxt = getattr(ks, "next_secret", None)
            if nxt is not None and getattr(self, "_next_key_failures", 0) < 2:
                secret = nxt  # offered: prove it (the old one after failures)
        else:
            if not self.token and not self.evidence:
                raise DeviceError("not enrolled and no enrollment token")
            if self.gateway_key is None:
                # The token may go only to the gateway: its key comes with the token.
                raise DeviceError("first contact needs the gateway's public key")
            sid = self.first_contact_sid
            if sid is None:
                sid = FIRST_CONTACT_SID + int.from_bytes(crypto.random_bytes(2), "big") % 0x7FFF
            rs, pattern = self.gateway_key, "XK"
            token = first_contact_payload(self.token, self.evidence,
                                          getattr(self, "want_credential", False))
        # Unacknowledged uplinks of an old session are sent again on the new one.
        self._in_flight = {}
        self._enrolling = None
        started = now_ms()
        # Uplinks are never given up on within a session: each keeps its reliable id
        # until acknowledged, so the gateway recognizes every repeat (a new id would
        # make a repeat of a message it committed, whose ack was lost, a new message).
        ch = Channel(True, secret, rs=rs, sid=sid, mtu=self.mtu, handshake_payload=token,
                     retry_ms=self.retry_ms, max_retries=self.max_retries,
                     reliable_retries=None)
        self.channel = ch
        await self._tx(ch.connect(started, pattern))
        self._wake.set()

        def done():
            # A REJECT heard meanwhile ends nothing: anyone can send one, and the
            # handshake's own retries decide (a gateway that refuses us does not answer).
            return ch.state in ("failed", "rejected", "established")

        await self._until(done, timeout_ms)
        ok = ch.state == "established" and (pattern == "KK" or len(ch.peer_payload) == 2)
        if not ok and ch.reject_reason == REJECT_REVOKED:
            # Unauthenticated (anyone can send it): kept as information, never a reason
            # to stop or to wait longer; a successful handshake clears it.
            self.revoked = True
            self.channel = None
            raise DeviceError("a REJECT says this device is revoked")
        if not ok:
            state = ch.state if ch.reject_reason is None else "rejected %d" % ch.reject_reason
            self.channel = None
            if secret is not ks.secret:  # the gateway may not have the offer
                self._next_key_failures = getattr(self, "_next_key_failures", 0) + 1
            raise DeviceError("handshake did not complete (%s)" % state)
        if secret is not ks.secret:
            # The gateway took the next key: it is this device's key from now on.
            ks.secret, ks.next_secret = secret, None
            ks.save()
            self._next_key_failures = 0
            self.stats["key_rotations"] = self.stats.get("key_rotations", 0) + 1
        if pattern == "XK":
            # XK message 2, which only the holder of the gateway's key could write, names
            # the session id this device reconnects under.  Enrolled once the gateway
            # answers under the new keys (it may still refuse the token or the
            # evidence): until then nothing is saved, and the token is kept.
            p = ch.peer_payload
            self._enrolling = ((p[0] << 8) | p[1], rs)
        self.revoked = False
        self.stats["handshakes"] += 1
        self.stats["handshake_ms"] = now_ms() - started
        await self._flush()
        if not self._outbox:
            # The gateway trusts a KK session once a frame under its keys arrives (a
            # replayed KK message 1 must not open one): with nothing to send, a poll.
            await self._tx(poll_frame(ch, now_ms()))

    async def _flush(self):
        ch = self.channel
        for seq, p in list(self._outbox):
            if ch is None or ch.state != "established":
                return
            if seq in self._in_flight.values():
                continue
            if len(self._in_flight) >= 4:  # leave room in the peer's duplicate memory
                return
            frames = ch.send_reliable(p, now_ms(), seq & 0xFF)
            self._in_flight[last_reliable_id(ch)] = seq
            self.stats["sent"] += 1
            self._wake.set()
            await self._tx(frames)

    async def send(self, payload):
        """Store an uplink and forward it as soon as the session allows; it stays
        stored until the gateway acknowledges it."""
        payload = bytes(payload)
        if len(payload) > self.max_payload:
            raise DeviceError("uplink of %d bytes (limit %d at MTU %d)"
                              % (len(payload), self.max_payload, self.mtu))
        if len(self._outbox) >= self.outbox_limit:
            seq = self._outbox.pop(0)[0]
            for i in [i for i, s in self._in_flight.items() if s == seq]:
                del self._in_flight[i]
            self.stats["outbox_dropped"] += 1
        self._seq += 1
        ks = self.keystore
        if self._seq + SEQ_RESERVE // 2 > ks.next_seq:
            ks.next_seq = self._seq + SEQ_RESERVE
            ks.save()
        self._outbox.append([self._seq, payload])
        await self._flush()

    async def ping(self):
        """Send an empty authenticated frame: on LoRa (class A) the gateway can answer
        only right after the device transmits, so a device waiting for commands pings.
        A REJECT heard since the last authenticated frame from the gateway, and not
        contradicted by one since the last ping: the session is given up."""
        ch = self.channel
        if not self.connected:
            return
        if ch.reject_reason is not None and self._reject_seen_at_ping:
            ch.state = "rejected"
            self._kick()
            return
        self._reject_seen_at_ping = ch.reject_reason is not None
        await self._tx(poll_frame(ch, now_ms()))

    @property
    def pending(self):
        """Uplinks stored and not yet acknowledged."""
        return len(self._outbox)

    async def flush(self, timeout_ms=30000):
        """Wait until every stored uplink is acknowledged; False on timeout."""
        return await self._until(lambda: not self._outbox, timeout_ms)

    def commands(self):
        """async for command in device.commands(): downlinks from the gateway."""
        return _Commands(self)


class _Commands:
    # An async iterator object (MicroPython has no async generators).
    def __init__(self, device):
        self._d = device

    def __aiter__(self):
        return self

    async def __anext__(self):
        d = self._d
        while not d._commands:
            d._command_event.clear()
            await d._command_event.wait()
        return d._commands.pop(0)
