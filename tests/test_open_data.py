"""The message path's one-call open (crypto.open_data) on CPython: the same answers and
the same replay window as the step-by-step path (sealink.replay, then the AEAD), frame
for frame, over a stream with losses, reordering, replays, forgeries, other sessions
and other key epochs.  The firmware's C function is checked against the same steps in
tests/test_crypto_devices.py and by the device benchmarks."""

import random

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from sealink import _crypto_cryptography as backend
from sealink.replay import ReplayError, ReplayWindow

KEY = bytes(range(32))
SID = 0x1234


def nonce(n: int) -> bytes:
    return bytes(4) + n.to_bytes(8, "little")


def frame(n: int, kind: int = 2, sid: int = SID, payload: bytes = b"x" * 12) -> bytes:
    header = bytes(((kind << 5) | ((n >> 8) & 0x1F), sid >> 8, sid & 0xFF, n & 0xFF))
    return header + ChaCha20Poly1305(KEY).encrypt(nonce(n), payload, header)


def reference(epoch: int, f: bytes, window: ReplayWindow, sid: int):
    """open_data's contract, written with the Python steps."""
    if len(f) < 20 or f[0] >> 5 not in (2, 3, 6) or (f[1] << 8 | f[2]) != sid:
        return backend.OPEN_OTHER
    n = window.expand(((f[0] & 0x1F) << 8) | f[3], 13)
    try:
        window.check(n)
    except ReplayError as e:
        return backend.OPEN_REPLAYED if "replayed" in str(e) else backend.OPEN_OLD
    if n >> 10 != epoch:
        return n
    try:
        plain = ChaCha20Poly1305(KEY).decrypt(nonce(n), f[4:], f[:4])
    except InvalidTag:
        return backend.OPEN_FORGED
    window.update(n)
    return plain


def test_one_call_open_matches_the_step_by_step_path():
    rng = random.Random(7)
    ours, ref = ReplayWindow(64), ReplayWindow(64)
    sent: list[bytes] = []
    n = 0
    outcomes = set()
    for _ in range(4000):
        roll = rng.random()
        if roll < 0.55:
            n += rng.choice((1, 1, 1, 2, 5, 70))  # in order, a loss, a long gap
            f = frame(n, kind=rng.choice((2, 3, 6)))
            sent.append(f)
        elif roll < 0.7 and sent:
            f = rng.choice(sent[-100:])  # a replay, or a late frame
        elif roll < 0.8:
            f = bytearray(frame(n + 1))
            f[rng.randrange(4, len(f))] ^= 1 << rng.randrange(8)  # forged
            f = bytes(f)
        elif roll < 0.85:
            f = frame(n + 1, sid=SID ^ 1)  # another session's
        elif roll < 0.9:
            f = frame(n + 1, kind=rng.choice((0, 1, 4, 5, 7)))  # not a data frame
        elif roll < 0.95:
            f = frame(n + 1)[: rng.randrange(0, 20)]  # truncated
        else:
            f = frame(n + 1 + 1024)  # the next key epoch's counter
        epoch = n >> 10
        got = backend.open_data(KEY, epoch, f, ours.state, SID)
        want = reference(epoch, f, ref, SID)
        assert got == want
        assert ours.state == ref.state
        outcomes.add(got if isinstance(got, int) and got < 0 else type(got).__name__)
    # Every kind of answer came up.
    assert outcomes == {"bytes", "int", backend.OPEN_OLD, backend.OPEN_REPLAYED,
                        backend.OPEN_FORGED, backend.OPEN_OTHER}


def test_seal_data_makes_the_frame_open_data_takes():
    window = ReplayWindow(64)
    for n in (0, 1, 255, 256, 1023):
        f = backend.seal_data(KEY, n, 6, SID, b"payload %d" % n)
        assert f == frame(n, kind=6, payload=b"payload %d" % n)
        assert backend.open_data(KEY, n >> 10, f, window.state, SID) == b"payload %d" % n

