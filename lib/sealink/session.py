# A Sealink channel: a Noise handshake, then an encrypted session, carried in small
# radio frames (sealink.wire) that may be lost, reordered or duplicated.
#
# - First contact uses XK: the device is provisioned with the gateway's static key, so
#   message 1 (51 bytes with the header) and message 2 (53, with the session id the
#   gateway assigns) each fit one LoRa SF12 frame, and message 3 carries the device's
#   key and its enrollment token under forward-secret keys (docs/protocol.md; XX is
#   still answered, for devices that do not know the gateway's key).  A reconnect with
#   both static keys known uses KK (two messages of 51 bytes with the header).
# - Transport frames carry the low 13 bits of the 64-bit Noise nonce; the receiver
#   rebuilds the full counter and keeps a sliding replay window (sealink.replay), so
#   loss and reordering never desynchronise the session and replays are refused.
# - Keys move to a new epoch every 2^REKEY_SHIFT counters with Noise Rekey(); a sender
#   whose epoch is older than rekey_after_ms jumps to the next epoch, so time-based
#   rekeying needs no extra message.  After MAX_COUNTER messages or max_age_ms the
#   session expires and a new handshake is required.
# - Frames larger than the link MTU travel as fragments (sealink.fragment); handshake
#   messages are retransmitted with backoff until answered.
# - send_reliable() adds acknowledgements, retransmission and duplicate suppression
#   (sealink.reliable) for messages the application must see exactly once.
#
# Bad input never raises out of Channel.receive(): each rejected frame is counted by
# reason in Channel.drops.  Channel.open_frame() is the same with the typed error.

from sealink import crypto, fragment, reliable, wire
from sealink.errors import AuthenticationError, CryptoError, HandshakeError, SealinkError
from sealink.replay import ReplayError, ReplayWindow

try:  # Sealink firmware: the Noise handshake in C (firmware/usermod/.../noise.c)
    from _sealink_crypto import Handshake as HandshakeState
except ImportError:  # CPython, stock firmware: the same protocol in Python
    from sealink.noise import HandshakeState

CONTROL_CREDENTIAL = b"\x02"  # control message: the authority's credential follows
CONTROL_POLL = b"\x03"  # control message: nothing; opens a receive window (LoRa class A)
REKEY_SHIFT = 10
MAX_COUNTER = 1 << 24
PROLOGUE = b"sealink/1"
NOISE = "Noise_%s_25519_ChaChaPoly_SHA256"  # the protocol name of a pattern


class SessionError(SealinkError):
    # A frame for a session that is not established, or a channel used wrongly.
    pass


class SessionExpiredError(SessionError):
    # The session reached its message or age limit: handshake again.
    pass


class _Key:
    """One direction's key for one epoch: a Noise CipherState's k (the nonce is the
    frame's counter), and the same key as the backend's AEAD takes it (crypto.aead_key:
    on CPython, pyca's object, built once for the many frames under this key)."""

    def __init__(self, k):
        self.k = k
        self.aead = crypto.aead_key(k)

    def wipe(self):
        self.k = self.aead = None


def _rekey(k):
    # Noise's Rekey() (section 4.2, the default): ENCRYPT(k, maxnonce, zerolen, zeros)[:32].
    return crypto.seal_n(k, 0xFFFFFFFFFFFFFFFF, bytes(32), b"", False)[:32]


class _EpochKeys:
    """One direction's keys: epoch e = counter >> REKEY_SHIFT, each epoch Rekey()ed
    from the one before.  Keeps the current and the previous epoch, for late frames.

    Receiving: for_counter() only looks (a later epoch's key is derived into a
    candidate); advance() moves to it once a frame under that key has authenticated.
    A forged counter therefore changes nothing."""

    def __init__(self, k):
        self.epoch = 0
        self.current = _Key(k)
        self.previous = None
        self._candidate = None  # (epoch, _Key) derived by for_counter(), unused

    def for_counter(self, n):
        epoch = n >> REKEY_SHIFT
        if epoch == self.epoch:
            return self.current
        if epoch == self.epoch - 1 and self.previous is not None:
            return self.previous
        if epoch < self.epoch:
            raise ReplayError("counter %d belongs to a retired key epoch" % n)
        cand = self._candidate
        if cand is not None and cand[0] == epoch:
            return cand[1]
        if cand is not None:
            cand[1].wipe()
        k = self.current.k
        for _ in range(epoch - self.epoch):
            k = _rekey(k)
        nxt = _Key(k)
        self._candidate = (epoch, nxt)
        return nxt

    def advance(self, n):
        """A frame with counter n authenticated: make its epoch the current one."""
        epoch = n >> REKEY_SHIFT
        if epoch <= self.epoch:
            return
        cipher = self._candidate[1]
        self._candidate = None
        if self.previous is not None:
            self.previous.wipe()
        if epoch == self.epoch + 1:
            self.previous = self.current
        else:  # epochs skipped: the one just before the new epoch is not kept
            self.current.wipe()
            self.previous = None
        self.current = cipher
        self.epoch = epoch


class Channel:
    """One end of a channel.  Feed it frames with receive(), send with send(), and call
    poll() now and then for retransmissions.  Times are milliseconds from any clock."""

    # Responder: (bits, body) of a new first handshake message that arrived while this
    # session was established (see _read_handshake); the application takes it.
    restart_message = None
    # The gateway authority's credential, once received (a class default: a device asks
    # for it only at first contact, if at all).
    credential = None
    # Full counters tried for a frame's 13 bits: the closest, then (with more probes) one
    # and more spans (8,192) later.  The gateway sets 4: it receives from sparse
    # reporters, whose counters jump an epoch per report.  A device keeps 1: each probe
    # derives keys, and a burst of garbage frames would churn a 32 KiB heap.
    counter_probes = 1
    # Initiator of XX: the responder's static key it must find in message 2 (provisioned
    # with the device); anything else fails before message 3, and its payload (the
    # enrollment token), goes out.  None: any responder (tests only).
    expected_rs = None
    # (Set only where used, never as class defaults: a device's 32 KiB heap has no room
    # for a larger class dict.)
    # - read_under_other_keys (responder): (pattern, index, body) -> payload or None,
    #   for a first message the channel's own keys do not read (the gateway's key
    #   rotations; it sets the channel's _hs and s to the keys that read it).
    # - key_control: the last key-rotation control message received (0x04: rotate your
    #   key; 0x05: my next key follows), for the application to take.

    def __init__(self, initiator, s, rs=None, sid=0, mtu=51, peer_lookup=None,
                 rekey_after_ms=3600000, max_age_ms=86400000, retry_ms=2000, max_retries=5,
                 window=64, reliable_retries=6, handshake_payload=b""):
        self.initiator = initiator
        self.s = s
        self.rs = rs
        self.sid = sid
        self.mtu = mtu
        self.peer_lookup = peer_lookup
        self.rekey_after_ms = rekey_after_ms
        self.max_age_ms = max_age_ms
        self.retry_ms = retry_ms
        self.max_retries = max_retries
        # The replay window (its size; reset when a session is established).  The
        # instance's attributes stay at 37, what a MicroPython dict of that size holds
        # without growing on a 32 KiB heap, in the middle of a handshake.
        self._window = ReplayWindow(window)
        # Sent encrypted in the initiator's last handshake message (XX: after both
        # static keys; e.g. an enrollment token).  peer_payload: what the peer sent so.
        self.handshake_payload = handshake_payload
        self.peer_payload = b""
        # The reason code of a REJECT frame heard (initiator), until an authenticated
        # frame from the peer shows it still has our session.
        self.reject_reason = None
        # Initiator whose own message completed the handshake (XX and XK message 3): it
        # repeats that message until the first authenticated frame from the responder
        # shows it arrived.  (Both are read on every frame received: instance
        # attributes, which MicroPython finds faster than class defaults.)
        self.unconfirmed = False
        self.state = "idle"
        self.pattern = None
        self.handshake_hash = None
        self.remote_static = rs
        self.drops = {}
        self.frames_in = 0
        self.frames_out = 0
        self.bytes_out = 0
        self._hs = None
        self._hs_last = None  # frames of our last handshake message, for retransmission
        self._hs_last_in = None  # the handshake message we answered last
        self._hs_sent_ms = 0
        self._hs_tries = 0
        self._frag_id = 0
        self._reassembler = fragment.Reassembler(max_messages=4, max_message_size=4096)
        self._reliable_out = reliable.ReliableSender(retry_ms=retry_ms,
                                                     max_retries=reliable_retries)
        self._reliable_in = reliable.ReliableReceiver()

    # --- framing ---------------------------------------------------------------------

    def _out(self, frame):
        """Split a logical frame into link frames of at most mtu bytes."""
        if len(frame) <= self.mtu:
            frames = [frame]
        else:
            chunk = self.mtu - wire.HEADER - fragment.FRAGMENT_HEADER
            inner = frame[:1] + frame[wire.HEADER:]
            self._frag_id = (self._frag_id + 1) & 0xFF
            head = wire.header(wire.KIND_FRAGMENT, 0, self.sid)
            frames = [head + f for f in fragment.split(inner, self._frag_id, chunk)]
        self.frames_out += len(frames)
        for f in frames:
            self.bytes_out += len(f)
        return frames

    # --- handshake -------------------------------------------------------------------

    def connect(self, now_ms, pattern=None):
        """Initiator: start a handshake (`pattern`; by default KK when the peer's static
        key is known, else XX).  Returns the frames to send."""
        if not self.initiator:
            raise SessionError("only the initiator connects")
        self.pattern = pattern or ("KK" if self.rs is not None else "XX")
        self._hs = HandshakeState(NOISE % self.pattern, True, PROLOGUE, s=self.s,
                                  rs=self.rs)
        self.state = "handshaking"
        return self._write_handshake(now_ms)

    def _write_handshake(self, now_ms):
        index = self._hs._index
        last = index == self._hs.message_count - 1
        # The initiator's payload goes in its last message (after both static keys); a
        # responder's in XK message 2 (the session id it assigns the device).
        if self.initiator:
            payload = self.handshake_payload if last else b""
        else:
            payload = self.handshake_payload if self.pattern == "XK" else b""
        message = self._hs.write_message(payload)
        frames = self._out(wire.handshake_frame(self.pattern, index, self.sid, message))
        self._hs_last = frames
        self._hs_sent_ms = now_ms
        self._hs_tries = 0
        if self._hs.complete:
            self._establish(now_ms)
            if self.initiator:
                self.unconfirmed = True
        return frames

    def _read_handshake(self, bits, body, now_ms):
        pattern = wire.PATTERN_NAMES[bits >> 3]
        index = bits & 0x07
        if self.state == "established" or (self._hs is not None and index < self._hs._index):
            # (Once established, _hs is released; this branch needs only the caches.)
            # A retransmission of a message we have already answered: answer again.
            if body == self._hs_last_in and self._hs_last is not None:
                return self._hs_last
            if not self.initiator and index == 0 and self.state == "established":
                # Another first message: the initiator lost its session (a reboot, an
                # expiry) or someone replays an old one.  This session goes on; the
                # application decides (the gateway runs it as a new handshake beside
                # this one, which replaces this one only once proven live).
                self.restart_message = (bits, body)
                return []
            raise HandshakeError("stale handshake message %d" % index)
        if self._hs is None:
            if self.initiator or index != 0:
                raise HandshakeError("unexpected handshake message %d" % index)
            rs = None
            if pattern == "KK":
                rs = self.peer_lookup(self.sid) if self.peer_lookup else None
                if rs is None:
                    raise HandshakeError("KK from an unknown peer")
            elif pattern not in ("XX", "XK"):
                raise HandshakeError("pattern %s is not accepted here" % pattern)
            self.pattern = pattern
            self._hs = HandshakeState(NOISE % pattern, False, PROLOGUE, s=self.s, rs=rs)
            self.state = "handshaking"
        if pattern != self.pattern or index != self._hs._index:
            raise HandshakeError("handshake message out of order")
        try:
            payload = self._hs.read_message(body)
        except HandshakeError:
            # A responder may read message 1 under other keys (a gateway's key rotations:
            # sealink_gateway.service sets the hook; a device never does).
            other = getattr(self, "read_under_other_keys", None)
            payload = other(pattern, index, body) if other is not None else None
            if payload is None:
                self._hs = None
                self.state = "idle" if not self.initiator else "failed"
                raise
        if self.initiator and self.expected_rs is not None and self._hs.rs is not None \
                and bytes(self._hs.rs) != bytes(self.expected_rs):
            # Not the gateway we were provisioned for: say nothing more to it.
            self._hs = None
            self.state = "failed"
            raise HandshakeError("the responder's static key is not the gateway's")
        if payload:
            self.peer_payload = payload
        if self._hs.complete:
            # The message that completed the handshake asks for no answer of the channel;
            # a repeat of it (our first frame to the peer was lost) is answered with
            # whatever the application sent first (answer_repeats_with()).
            self._hs_last_in = body
            self._hs_last = []
            self._establish(now_ms)
            return []
        self._hs_last_in = body
        return self._write_handshake(now_ms)

    def _establish(self, now_ms):
        to_responder, to_initiator = self._hs.split_keys()
        send, recv = (to_responder, to_initiator) if self.initiator else (to_initiator,
                                                                          to_responder)
        self.handshake_hash = self._hs.handshake_hash
        self.remote_static = self._hs.rs
        self._send_keys = _EpochKeys(send)
        self._recv_keys = _EpochKeys(recv)
        self._send_n = 0
        self._rekey_ms = now_ms + self.rekey_after_ms  # time-based rekey from then on
        self._expires_ms = now_ms + self.max_age_ms
        self._window = ReplayWindow(self._window.size)
        self._hs = None  # release the handshake state: a device's heap is small
        self.state = "established"

    # --- transport ---------------------------------------------------------------------

    def send(self, payload, now_ms, kind=wire.KIND_DATA):
        """Encrypt one payload; returns its link frames."""
        if self.state != "established":
            raise SessionError("no established session")
        n = self._send_n
        if now_ms > self._expires_ms or n >= 0x1000000:  # MAX_COUNTER
            self.state = "expired"
            raise SessionExpiredError("session limit reached: handshake again")
        if now_ms > self._rekey_ms:
            # Time-based rekey: skip to the next key epoch (explicit counters allow it).
            n = ((n >> REKEY_SHIFT) + 1) << REKEY_SHIFT
        self._send_n = n + 1
        keys = self._send_keys
        if n >> 10 != keys.epoch:  # the first counter of a key epoch (REKEY_SHIFT)
            self._rekey_ms = now_ms + self.rekey_after_ms
            keys.for_counter(n)
            keys.advance(n)
        # The frame in one allocation: the 4-byte header (wire.data_header) is the
        # associated data and goes in front of the ciphertext.
        seal = crypto.seal_data
        if seal is not None:  # the firmware: header, nonce and AEAD in one C call
            try:
                frame = seal(keys.current.aead, n, kind, self.sid, payload)
            except TypeError:
                raise CryptoError("payload must be bytes, not %s"
                                  % type(payload).__name__) from None
        else:
            if not isinstance(payload, (bytes, bytearray, memoryview)):
                raise CryptoError("payload must be bytes, not %s" % type(payload).__name__)
            t = n & 0x1FFF  # wire.COUNTER_BITS
            sid = self.sid
            frame = crypto.seal_n(keys.current.aead, n, payload,
                                  bytes(((kind << 5) | (t >> 8), sid >> 8, sid & 0xFF,
                                         t & 0xFF)), True)
        if len(frame) <= self.mtu:
            self.frames_out += 1
            self.bytes_out += len(frame)
            return [frame]
        return self._out(frame)

    def send_reliable(self, payload, now_ms, msg_id=None):
        """Send a payload the peer must see exactly once: retransmitted by poll() until
        acknowledged.  Raises DeliveryError when MAX_IN_FLIGHT are outstanding.
        `msg_id` (0..255): an id the message keeps across sessions, so that a peer that
        remembers ids beyond a session can tell a repeat (the device does this)."""
        if self.state != "established":
            raise SessionError("no established session")
        body = self._reliable_out.submit(payload, now_ms, msg_id)
        return self.send(body, now_ms, wire.KIND_RELIABLE)

    @property
    def undelivered(self):
        """Reliable payloads given up on after all retries (the application decides)."""
        return self._reliable_out.failed

    def _read_data(self, frame):
        # A DATA, CONTROL or RELIABLE frame of this session (the caller checked its kind,
        # session id and length), opened where it lies: its 4-byte header
        # (wire.data_header) is the associated data.
        if self.state != "established":
            raise SessionError("data before the session is established")
        if crypto.open_data is not None:
            got = self._open_in_c(frame)
            if got is not None:
                return got
        window = self._window
        keys = self._recv_keys
        n = window.expand(((frame[0] & 0x1F) << 8) | frame[3], 13)  # wire.COUNTER_BITS
        # The frame carries the counter's low 13 bits; the closest full counter is tried
        # first.  A sender can be further ahead (each time-based rekey skips to the
        # next 1,024-counter epoch, and frames get lost): then the counters one, two and
        # three spans later are tried too.  Each try is a tag check under that counter's
        # key; nothing changes until one authenticates.
        err = None
        for _ in range(self.counter_probes):
            try:
                window.check(n)
                cipher = keys.current if n >> 10 == keys.epoch else keys.for_counter(n)
                plaintext = crypto.open_n(cipher.aead, n, frame, 4)
                if plaintext is not None:
                    break
                raise AuthenticationError("authentication tag does not verify")
            except SealinkError as e:
                err = err or e
                n += 0x2000  # 1 << wire.COUNTER_BITS
        else:
            raise err
        if n >> 10 != keys.epoch:  # REKEY_SHIFT
            keys.advance(n)
        window.update(n)
        self._confirmed()
        return plaintext

    def _open_in_c(self, frame):
        # The firmware: counter, replay window and tag in one C call (the steps of
        # _read_data), which moves the window only for an authentic frame.  Returns the
        # plaintext, or None for a frame left to those steps in Python (not a data frame
        # of this session, another key epoch, more counters to try); raises for a replay
        # or a forgery.
        window = self._window
        keys = self._recv_keys
        got = crypto.open_data(keys.current.aead, keys.epoch, frame, window.state, self.sid)
        if type(got) is bytes:
            window.accepted += 1
            if self.reject_reason is not None or self.unconfirmed:
                self._confirmed()
            return got
        if -4 < got < 0 and self.counter_probes == 1:
            if got == -3:
                raise AuthenticationError("authentication tag does not verify")
            raise ReplayError("counter replayed or older than the replay window")
        return None

    def _confirmed(self):
        # An authenticated frame from the peer: it has our session (a REJECT heard was
        # not its), and our last handshake message arrived.
        if self.reject_reason is not None:
            self.reject_reason = None
        if self.unconfirmed:
            self.unconfirmed = False

    # --- receiving -----------------------------------------------------------------------

    def open_frame(self, frame, now_ms, _nested=False):
        """Process one link frame.  Returns (payloads delivered, frames to send back).
        Raises a SealinkError subclass for anything rejected."""
        if isinstance(frame, (bytes, bytearray, memoryview)) and len(frame) >= 3:
            kind = frame[0] >> 5
            if kind == wire.KIND_DATA or kind == wire.KIND_RELIABLE or kind == wire.KIND_CONTROL:
                # The message path: no parsing into parts, no copies.
                if len(frame) < wire.DATA_HEADER + 16:
                    raise wire.FrameError("data frame truncated")
                if (frame[1] << 8) | frame[2] != self.sid:
                    raise SessionError("frame for session %d, this is %d"
                                       % ((frame[1] << 8) | frame[2], self.sid))
                return self._deliver(kind, self._read_data(frame), now_ms)
        kind, bits, sid, body = wire.parse(frame)
        if sid != self.sid:
            raise SessionError("frame for session %d, this is %d" % (sid, self.sid))
        if kind == wire.KIND_FRAGMENT:
            if _nested:
                raise wire.FrameError("fragment inside a fragment")
            whole = self._reassembler.feed(body, now_ms)
            if whole is None:
                return [], []
            return self.open_frame(whole[:1] + frame[1:wire.HEADER] + whole[1:], now_ms, True)
        if kind == wire.KIND_HANDSHAKE:
            return [], self._read_handshake(bits, body, now_ms)
        # KIND_REJECT: the peer says it lost our session.  Unauthenticated (anyone can
        # send one), so on an established session it is only a reason to check: the next
        # authenticated frame from the peer clears it (_read_data); if none has come when
        # a retransmission is due, the session is given up (poll) and the initiator
        # handshakes again.  It never stops anything else.
        if self.initiator:
            self.reject_reason = bits
        return [], []

    def _deliver(self, kind, plaintext, now_ms):
        # An authenticated DATA, RELIABLE or CONTROL frame's plaintext.
        if kind == wire.KIND_DATA:
            return [plaintext], []
        if kind == wire.KIND_RELIABLE:
            payload, ack = self._reliable_in.accept(plaintext)
            return ([] if payload is None else [payload]), self.send(
                ack, now_ms, wire.KIND_CONTROL)
        return self._read_control(plaintext)

    def _read_control(self, control):
        if control[:1] == CONTROL_CREDENTIAL:
            self.credential = control[1:]
        elif control[:1] == CONTROL_POLL:
            pass
        elif control[:1] in (b"\x04", b"\x05"):  # a key rotation (see above)
            self.key_control = control
        else:
            self._reliable_out.acknowledge(control)
        return [], []

    def receive(self, frame, now_ms):
        """open_frame() that never raises: rejected frames are counted in self.drops."""
        self.frames_in += 1
        try:
            if crypto.open_data is not None and self.state == "established":
                # The firmware's message path: a data frame of this session opened in
                # one C call, without open_frame's parsing.  Anything else goes the
                # long way.
                got = self._open_in_c(frame)
                if got is not None:
                    kind = frame[0] >> 5
                    if kind == 2:  # wire.KIND_DATA
                        return [got], []
                    return self._deliver(kind, got, now_ms)
            return self.open_frame(frame, now_ms)
        except SealinkError as e:
            return self._dropped(e)

    def _dropped(self, e):
        reason = type(e).__name__
        self.drops[reason] = self.drops.get(reason, 0) + 1
        return [], []

    def poll(self, now_ms):
        """Frames to retransmit now: an unanswered handshake message (or, unconfirmed,
        our final one), and reliable messages not yet acknowledged, with backoff."""
        frames = []
        if self.state == "established":
            if self.unconfirmed:
                frames += self._repeat_handshake(now_ms)
            if self.state == "established":
                bodies = self._reliable_out.poll(now_ms)
                if bodies and self.reject_reason is not None and self.initiator:
                    # A REJECT, and no authenticated frame since: the peer has lost us.
                    self.state = "rejected"
                    return frames
                for body in bodies:
                    frames += self.send(body, now_ms, wire.KIND_RELIABLE)
            return frames
        if (self.state == "handshaking" and self._hs is not None
                and self._hs.is_my_turn() is False and self._hs_last is not None):
            return self._repeat_handshake(now_ms)
        return frames

    def _repeat_handshake(self, now_ms):
        # Exponential backoff, capped at 8x: the receiver keeps the fragments of every
        # copy, so each retransmission fills more of the gaps.
        if now_ms - self._hs_sent_ms < self.retry_ms << min(self._hs_tries, 3):
            return []
        if self._hs_tries >= self.max_retries:
            self.state = "failed"
            return []
        self._hs_tries += 1
        self._hs_sent_ms = now_ms
        self.frames_out += len(self._hs_last)
        return list(self._hs_last)


# Helpers for devices and class A gateways, kept out of the Channel class: each entry in
# a class's dict costs heap on a device (the dict grows in steps).


def answer_repeats_with(ch, frames):
    """Responder: the frames to send again when the initiator repeats the message that
    completed the handshake (it has not heard from us yet), e.g. the credential."""
    if ch._hs_last is not None and not ch._hs_last:
        ch._hs_last = list(frames)


def next_poll_ms(ch, now_ms):
    """Milliseconds until ch.poll() has a retransmission to make (0: now), or None when
    nothing is waiting for an answer: a device sleeps until then."""
    due = None
    if ch.unconfirmed and ch.state == "established" or (
            ch.state == "handshaking" and ch._hs is not None
            and ch._hs.is_my_turn() is False and ch._hs_last is not None):
        due = ch._hs_sent_ms + (ch.retry_ms << min(ch._hs_tries, 3)) - now_ms
    if ch.state == "established":
        out = ch._reliable_out
        for entry in out._pending.values():
            d = entry[1] + (out.retry_ms << min(entry[2], 3)) - now_ms
            if due is None or d < due:
                due = d
    return None if due is None else (due if due > 0 else 0)


def restamp(ch, since_ms, now_ms):
    """Frames made at or after since_ms went on the air only now (a radio held them for
    its duty cycle): their retransmission timers start from now_ms."""
    if ch._hs_sent_ms >= since_ms:
        ch._hs_sent_ms = now_ms
    for entry in ch._reliable_out._pending.values():
        if entry[1] >= since_ms:
            entry[1] = now_ms


def poll_frame(ch, now_ms):
    """An authenticated frame that carries nothing: it gives the peer a receive window
    to answer in."""
    return ch.send(CONTROL_POLL, now_ms, wire.KIND_CONTROL)


def last_reliable_id(ch):
    """The message id send_reliable() gave its last payload."""
    return ch._reliable_out.last_id


def delivery_report(ch):
    """(ids acknowledged, ids given up on) since the last call."""
    out = ch._reliable_out
    acked, failed = out.acked, out.failed_ids
    out.acked, out.failed_ids, out.failed = [], [], []
    return acked, failed
