"""The session layer under the conditions of a radio: loss, reordering, duplication,
tiny MTUs, hostile frames.  Property-based (hypothesis) on CPython."""

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealink import crypto, wire
from sealink.replay import ReplayError, ReplayWindow
from sealink.session import REKEY_SHIFT, Channel, SessionExpiredError

SI, SR = os.urandom(32), os.urandom(32)
PI, PR = crypto.x25519_base(SI), crypto.x25519_base(SR)


def _pair(mtu=51, reconnect=False, **kw):
    dev = Channel(True, SI, rs=PR if reconnect else None, sid=0x0A0B, mtu=mtu, **kw)
    gw = Channel(False, SR, sid=0x0A0B, mtu=mtu, peer_lookup=lambda sid: PI, **kw)
    return dev, gw


def _handshake(dev, gw, link=lambda frames: frames, max_rounds=200):
    """Drive both ends through a link (a function that may drop/reorder/duplicate),
    with retransmission, until both are established.  Bounded in rounds."""
    t = 0
    to_gw = dev.connect(t)
    to_dev = []
    for _ in range(max_rounds):
        t += 500
        nxt_dev, nxt_gw = [], []
        for f in link(to_gw):
            nxt_dev += gw.receive(f, t)[1]
        for f in link(to_dev):
            nxt_gw += dev.receive(f, t)[1]
        nxt_gw += dev.poll(t)
        nxt_dev += gw.poll(t)
        to_gw, to_dev = nxt_gw, nxt_dev
        if dev.state == gw.state == "established":
            return t
    raise AssertionError(f"no handshake: {dev.state} {gw.state} {dev.drops} {gw.drops}")


@pytest.mark.parametrize("mtu", [20, 51, 222])
@pytest.mark.parametrize("reconnect", [False, True], ids=["XX", "KK"])
def test_handshake_and_traffic_at_each_mtu(mtu, reconnect):
    dev, gw = _pair(mtu, reconnect)
    _handshake(dev, gw)
    assert gw.remote_static == PI and dev.remote_static == PR
    assert dev.handshake_hash == gw.handshake_hash
    for size in (0, 1, 30, 200):
        data = os.urandom(size)
        got = []
        for f in dev.send(data, 1000):
            assert len(f) <= mtu
            got += gw.receive(f, 1000)[0]
        assert got == [data]


def test_reconnect_fits_one_sf12_frame_each_way():
    dev, gw = _pair(51, reconnect=True)
    first = dev.connect(0)
    assert [len(f) for f in first] == [51]
    reply = []
    for f in first:
        reply += gw.receive(f, 0)[1]
    assert [len(f) for f in reply] == [51]


def test_per_message_overhead_is_20_bytes():
    dev, gw = _pair(222)
    _handshake(dev, gw)
    for n in (0, 10, 100):
        (frame,) = dev.send(bytes(n), 0)
        assert len(frame) - n == 20


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), loss=st.floats(0, 0.5), dup=st.floats(0, 0.3),
       mtu=st.sampled_from([20, 51, 222]))
def test_lossy_link_handshake_and_delivery(seed, loss, dup, mtu):
    rng = random.Random(seed)

    def link(frames):
        out = []
        for f in frames:
            if rng.random() < loss:
                continue
            out.append(f)
            if rng.random() < dup:
                out.append(f)
        rng.shuffle(out)
        return out

    dev, gw = _pair(mtu, max_retries=40, retry_ms=500)
    # Up to 50 % loss at MTU 20 (7 + 5 fragments for messages 2 and 3) can take minutes
    # of modeled time: allow 40 retries' worth (bounded all the same).
    _handshake(dev, gw, link, max_rounds=1000)
    sent = [b"msg %d" % i for i in range(80)]
    frames = []
    for i, m in enumerate(sent):
        frames += [(i, f) for f in dev.send(m, 100000 + i)]
    # Lose, duplicate, and reorder by up to 2 messages (fragments interleave; the
    # reassembler holds 4 partial messages, so stale partials of lost messages are
    # evicted before live ones).
    delivered = []
    kept = [(i, f) for i, f in frames if rng.random() >= loss]
    kept += [(i, f) for i, f in kept if rng.random() < dup]
    kept.sort(key=lambda x: x[0] + rng.randrange(0, 3))
    for _, f in kept:
        delivered += gw.receive(f, 200000)[0]
    # Never anything but what was sent, never twice.
    assert len(delivered) == len(set(delivered))
    # Exactly the messages all of whose frames arrived got through.
    arrived = {f for _, f in kept}
    complete = {sent[i] for i in range(len(sent))
                if all(f in arrived for j, f in frames if j == i)}
    assert set(delivered) == complete


def test_replays_and_tampering_are_dropped_and_counted():
    dev, gw = _pair()
    _handshake(dev, gw)
    (frame,) = dev.send(b"open valve", 0)
    assert gw.receive(frame, 0)[0] == [b"open valve"]
    assert gw.receive(frame, 0)[0] == []  # replay
    bad = bytearray(dev.send(b"close valve", 0)[0])
    bad[-1] ^= 1
    assert gw.receive(bytes(bad), 0)[0] == []
    assert gw.drops == {"ReplayError": 1, "AuthenticationError": 1}
    (frame,) = dev.send(b"still works", 0)
    assert gw.receive(frame, 0)[0] == [b"still works"]


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_garbage_never_raises_and_never_breaks_the_session(garbage):
    dev, gw = _pair(222)
    _handshake(dev, gw)
    payloads, replies = gw.receive(garbage, 0)
    assert payloads == []
    (frame,) = dev.send(b"after garbage", 0)
    assert gw.receive(frame, 0)[0] == [b"after garbage"]


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=80))
def test_open_frame_raises_only_sealink_errors(garbage):
    from sealink.errors import SealinkError

    dev, gw = _pair(222)
    _handshake(dev, gw)
    try:
        gw.open_frame(wire.header(wire.KIND_DATA, 0, 0x0A0B) + garbage, 0)
    except SealinkError:
        pass


def test_reordering_beyond_the_window_is_refused():
    dev, gw = _pair(222)
    _handshake(dev, gw)
    old = dev.send(b"old", 0)[0]
    for _ in range(70):
        gw.receive(dev.send(b"new", 0)[0], 0)
    assert gw.receive(old, 0)[0] == []
    assert gw.drops["ReplayError"] == 1


def test_rekey_epochs_and_time_based_rekey():
    dev, gw = _pair(222, rekey_after_ms=1000)
    _handshake(dev, gw)
    n = (1 << REKEY_SHIFT) * 2 + 5
    for i in range(n):
        assert gw.receive(dev.send(b"%d" % i, 0)[0], 0)[0] == [b"%d" % i]
    assert dev._send_keys.epoch == 2 and gw._recv_keys.epoch == 2
    # Time passes: the sender moves to a fresh epoch without any extra message.
    assert gw.receive(dev.send(b"later", 5000)[0], 5000)[0] == [b"later"]
    assert dev._send_keys.epoch == 3 and gw._recv_keys.epoch == 3


def test_session_expires_after_its_age_limit():
    dev, gw = _pair(222, max_age_ms=10000)
    t = _handshake(dev, gw)
    dev.send(b"ok", t)
    with pytest.raises(SessionExpiredError):
        dev.send(b"too late", t + 10001)


def test_handshake_gives_up_after_retries():
    dev, gw = _pair(51, max_retries=3, retry_ms=100)
    dev.connect(0)
    for t in range(0, 100000, 100):
        dev.poll(t)
    assert dev.state == "failed"


def test_unknown_peer_cannot_reconnect():
    dev = Channel(True, SI, rs=PR, sid=7)
    gw = Channel(False, SR, sid=7, peer_lookup=lambda sid: None)
    for f in dev.connect(0):
        assert gw.receive(f, 0) == ([], [])
    assert gw.drops == {"HandshakeError": 1}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 500), min_size=1, max_size=200))
def test_replay_window_accepts_each_counter_once(counters):
    w = ReplayWindow(64)
    accepted = []
    for n in counters:
        try:
            w.update(n)
            accepted.append(n)
        except ReplayError:
            pass
    assert len(accepted) == len(set(accepted))
    for n in set(counters):
        if n not in accepted:
            assert counters.count(n) > 1 or n < max(accepted) - 63


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([8, 32, 64, 128]),
       st.lists(st.integers(0, 400), min_size=1, max_size=300))
def test_replay_window_matches_the_set_model(size, counters):
    # The ring of bits against its definition: a counter is accepted iff it was never
    # accepted and is within `size` of the highest accepted so far.
    w = ReplayWindow(size)
    seen, highest = set(), -1
    for n in counters:
        expected = n not in seen and n > highest - size
        try:
            w.update(n)
            got = True
        except ReplayError:
            got = False
        assert got == expected, (n, sorted(seen)[-5:], highest)
        if got:
            seen.add(n)
            highest = max(highest, n)
    assert (w.highest, w.accepted) == (highest, len(seen))


@given(st.integers(0, 2**40), st.integers(-2000, 2000))
def test_counter_reconstruction(highest, delta):
    w = ReplayWindow()
    w.highest = highest
    n = highest + 1 + delta
    if n >= 0:
        assert w.expand(n & 0x1FFF, 13) == n


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), loss=st.floats(0, 0.4), dup=st.floats(0, 0.3))
def test_reliable_delivery_exactly_once(seed, loss, dup):
    rng = random.Random(seed)

    def link(frames):
        out = [f for f in frames if rng.random() >= loss]
        out += [f for f in out if rng.random() < dup]
        rng.shuffle(out)
        return out

    dev, gw = _pair(51, retry_ms=1000, reliable_retries=25)
    t = _handshake(dev, gw)
    messages = [b"command %d" % i for i in range(30)]
    queue = list(messages)
    delivered = []
    to_gw, to_dev = [], []
    for _ in range(2000):  # bounded: each round is 100 ms of modeled time
        t += 100
        while queue and dev._reliable_out.in_flight < 8:
            to_gw += dev.send_reliable(queue.pop(0), t)
        nxt_dev = []
        for f in link(to_gw):
            payloads, replies = gw.receive(f, t)
            delivered += payloads
            nxt_dev += replies
        for f in link(to_dev):
            dev.receive(f, t)
        to_gw, to_dev = dev.poll(t), nxt_dev
        if not queue and dev._reliable_out.in_flight == 0:
            break
    assert dev.undelivered == []
    assert sorted(delivered) == sorted(messages)  # each exactly once


def test_reliable_gives_up_and_reports():
    dev, gw = _pair(51, retry_ms=100, reliable_retries=2)
    _handshake(dev, gw)
    for f in gw.send(b"hello", 0):  # the gateway's first frame confirms the session
        dev.receive(f, 0)
    dev.send_reliable(b"into the void", 0)  # never delivered: the link is down
    for t in range(0, 10000, 100):
        dev.poll(t)
    assert dev.undelivered == [b"into the void"]


def test_reliable_in_flight_limit():
    from sealink.reliable import DeliveryError

    dev, gw = _pair(51)
    _handshake(dev, gw)
    for i in range(8):
        dev.send_reliable(b"%d" % i, 0)
    with pytest.raises(DeliveryError):
        dev.send_reliable(b"one too many", 0)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=40), max_size=20))
def test_reassembler_raises_only_fragment_errors(fragments):
    from sealink.fragment import FragmentError, Reassembler

    r = Reassembler(max_messages=2, max_message_size=64)
    for f in fragments:
        try:
            whole = r.feed(f, 0)
        except FragmentError:
            continue
        assert whole is None or len(whole) <= 64 + 40
    assert len(r._partial) <= 2


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=60))
def test_wire_parser_raises_only_frame_errors(frame):
    try:
        kind, bits, sid, body = wire.parse(frame)
    except wire.FrameError:
        return
    assert 0 <= sid < 65536 and 0 <= bits < 32 and body == frame[3:]


def test_lost_final_handshake_message_is_repeated_until_the_responder_answers():
    """XX message 3 completes the handshake at the initiator; when it is lost the
    responder never answers.  The initiator repeats it (with backoff) until the first
    authenticated frame from the responder arrives, and the responder answers a repeat
    with what it sent first (the gateway's credential)."""
    from sealink.session import answer_repeats_with, next_poll_ms

    dev, gw = _pair(51, retry_ms=1000)
    msg1 = dev.connect(0)
    msg2 = [r for f in msg1 for r in gw.receive(f, 0)[1]]
    msg3 = [r for f in msg2 for r in dev.receive(f, 0)[1]]
    assert dev.state == "established" and gw.state == "handshaking"
    # Message 3 is lost.  Nothing comes back; the device repeats it when due.
    assert next_poll_ms(dev, 0) == 1000 and dev.poll(999) == []
    repeat = dev.poll(1000)
    assert repeat == msg3
    for f in repeat:
        assert gw.receive(f, 1000) == ([], [])
    assert gw.state == "established"
    first = gw.send(b"credential", 1000)
    answer_repeats_with(gw, first)
    # That answer is lost too: the next repeat of message 3 gets it again.
    repeat = dev.poll(1000 + 2000)
    assert repeat == msg3
    again = [r for f in repeat for r in gw.receive(f, 3000)[1]]
    assert again == first
    payloads = [p for f in again for p in dev.receive(f, 3000)[0]]
    assert payloads == [b"credential"] and not dev.unconfirmed
    assert dev.poll(100000) == [] and next_poll_ms(dev, 100000) is None


def test_unconfirmed_handshake_fails_after_its_retries():
    dev, gw = _pair(51, retry_ms=100)
    for f in dev.connect(0):
        for r in gw.receive(f, 0)[1]:
            dev.receive(r, 0)  # message 3 goes nowhere
    for t in range(0, 100000, 100):
        dev.poll(t)
    assert dev.state == "failed"


def test_forged_frame_changes_no_state():
    """Stage 6, finding 1: a forged DATA frame (the session id is in clear) with a
    counter several key epochs ahead must not move the receiver's key epoch, replay
    window or anything else: later genuine frames still open, in both directions."""
    from sealink import wire

    dev, gw = _pair(51)
    _handshake(dev, gw)
    for f in gw.send(b"hello", 0):
        dev.receive(f, 0)
    for ch in (gw, dev):
        epoch, top = ch._recv_keys.epoch, ch._window.highest
        forged = wire.data_header(wire.KIND_DATA, ch.sid, 4100) + bytes(21)
        assert ch.receive(forged, 10) == ([], [])
        assert sum(ch.drops.values()) >= 1
        assert (ch._recv_keys.epoch, ch._window.highest) == (epoch, top)
    for i in range(3):
        (f,) = dev.send(b"up %d" % i, 20)
        assert gw.receive(f, 20) == ([b"up %d" % i], [])
        (f,) = gw.send(b"down %d" % i, 20)
        assert dev.receive(f, 20) == ([b"down %d" % i], [])


def test_sparse_reporter_survives_lost_messages_across_rekeys():
    """Stage 6, finding 8: a device reporting less often than rekey_after_ms jumps a
    key epoch (1,024 counters) per message.  After 10 lost messages its next one must
    still open at the gateway, and the session goes on."""
    hour = 3_600_000
    dev, gw = _pair(51)
    gw.counter_probes = 4  # as the gateway sets it (sealink_gateway.service)
    _handshake(dev, gw)
    (f,) = dev.send(b"first", 0)
    assert gw.receive(f, 0)[0] == [b"first"]
    for i in range(10):  # lost on the air
        dev.send(b"lost %d" % i, (i + 1) * (hour + 1000))
    (f,) = dev.send(b"eleventh hour", 11 * (hour + 1000))
    assert gw.receive(f, 11 * (hour + 1000)) == ([b"eleventh hour"], [])
    # And a replay of it, or of the first, is still refused.
    assert gw.receive(f, 11 * (hour + 1000)) == ([], [])
    assert gw.drops == {"ReplayError": 1}


def test_reject_on_a_live_session_is_checked_before_it_ends_it():
    """A REJECT is unauthenticated: a forged one on an established session must not end
    a session the gateway still honors.  Only if no authenticated frame follows before a
    retransmission is due does the device start over; a genuine REJECT (the gateway lost
    the session) gets there after one retransmission interval."""
    from sealink import wire

    dev, gw = _pair(51, retry_ms=1000)
    _handshake(dev, gw)
    for f in gw.send(b"hello", 0):
        dev.receive(f, 0)
    # A forged REJECT, then the gateway's ack of an uplink: the session goes on.
    (f,) = dev.send_reliable(b"m1", 100)
    dev.receive(wire.header(wire.KIND_REJECT, 1, dev.sid), 150)
    assert dev.state == "established"
    for ack in gw.receive(f, 200)[1]:
        dev.receive(ack, 200)
    assert dev.poll(5000) == [] and dev.state == "established"
    # A REJECT that nothing authenticated contradicts: at the next retransmission, the
    # device starts over.
    dev.send_reliable(b"m2", 6000)  # lost: the gateway restarted
    dev.receive(wire.header(wire.KIND_REJECT, 1, dev.sid), 6100)
    assert dev.state == "established"
    assert dev.poll(7000) == [] and dev.state == "rejected"


def test_no_cache_keeps_the_keys_of_ended_sessions():
    """Each data-phase key's AEAD object lives on that key's CipherState (aead_key) and
    goes with it: nothing in the backend holds a key once its session has ended."""
    import gc
    import sys
    import weakref

    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    from sealink import _crypto_cryptography as backend

    crypto.use_backend("cryptography")
    dev, gw = _pair(reconnect=True)
    _handshake(dev, gw)
    for i in range(3):
        for f in dev.send(b"up %d" % i, 1000):
            assert gw.receive(f, 1000)[0] == [b"up %d" % i]
    handle = gw._recv_keys.current.aead
    assert type(handle) is ChaCha20Poly1305  # the message path's handle, not the key bytes
    held = [weakref.ref(ch._recv_keys.current) for ch in (dev, gw)]
    del dev, gw, f
    gc.collect()
    assert all(r() is None for r in held)
    # No module-level container of the backend (or of crypto) still refers to the handle.
    for module in (backend, crypto):
        for name, value in vars(module).items():
            if isinstance(value, dict):
                assert handle not in value.values(), name
            elif isinstance(value, (list, tuple, set)):
                assert all(x is not handle for x in value), name
    assert sys.getrefcount(handle) == 2  # ours here, and getrefcount's argument
