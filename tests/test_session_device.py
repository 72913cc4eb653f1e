"""The session layer on real firmware: the device side runs frozen in MicroPython (unix
port, including a 32 KiB heap, and the QEMU boards) against the gateway side here."""

import pytest
from device_session import DEVICE_HANDSHAKE, DeviceChannelRun

from devices import QemuDevice, UnixDevice

TARGETS = [
    ("unix", lambda: UnixDevice("UNIX")),
    ("unix-32k-heap", lambda: UnixDevice("UNIX", heapsize="32k")),
    ("qemu-m3", lambda: QemuDevice("QEMU_MPS2_AN385")),
    ("qemu-rv32", lambda: QemuDevice("QEMU_VIRT_RV32")),
]


@pytest.fixture(params=TARGETS, ids=[t[0] for t in TARGETS])
def device(request):
    dev = request.param[1]()
    yield dev
    dev.close()


@pytest.mark.parametrize("mtu", [20, 51, 222])
def test_xx_handshake_and_100_messages(device, mtu):
    run = DeviceChannelRun(device, mtu=mtu)
    run.handshake()
    for i in range(100):
        assert run.uplink(b"reading %d" % i) == [b"reading %d" % i]
    for i in range(5):
        assert run.downlink(b"set %d" % i) == [b"set %d" % i]


def test_kk_reconnect_is_one_frame_each_way(device):
    run = DeviceChannelRun(device, mtu=51, rs_known=True)
    run.handshake()
    assert run.air_frames == 2
    assert run.uplink(b"back") == [b"back"]


def test_lossy_link(device):
    run = DeviceChannelRun(device, mtu=51, loss=0.3, seed=7)
    run.handshake(max_rounds=200)
    delivered = sum(len(run.uplink(b"m%d" % i)) for i in range(40))
    assert 15 <= delivered <= 40
    assert device.exec("print(ch.state)").strip() == "established"


def test_garbage_from_the_radio_is_counted_not_fatal(device):
    run = DeviceChannelRun(device, mtu=51)
    run.handshake()
    for junk in (b"", b"\x00", b"\xff" * 60, bytes(range(40)), b"\x40\x00\x2a" + bytes(30)):
        device.exec(f"step([{junk.hex()!r}], 0)")
    drops = device.exec("print(sorted(ch.drops.items()))").strip()
    assert "FrameError" in drops
    assert run.downlink(b"still here") == [b"still here"]


def test_reliable_downlink_is_acknowledged(device):
    import binascii

    from device_session import parse

    run = DeviceChannelRun(device, mtu=51)
    run.handshake()
    frames = run.gateway.send_reliable(b"open valve 3", run.now)
    arg = [binascii.hexlify(f).decode() for f in frames]
    acks, payloads = parse(device.exec(f"step({arg!r}, {run.now})"))
    assert payloads == [b"open valve 3"]
    # A retransmission (the ack was lost) is acknowledged again but not delivered twice.
    run.now += 5000
    again = [binascii.hexlify(f).decode() for f in run.gateway.poll(run.now)]
    acks2, payloads2 = parse(device.exec(f"step({again!r}, {run.now})"))
    assert payloads2 == [] and len(acks2) == 1
    for f in acks2:
        run.gateway.receive(f, run.now)
    assert run.gateway._reliable_out.in_flight == 0


_COUNT_X25519 = """
from sealink import crypto, session
from _sealink_crypto import x25519_ops  # every X25519 the firmware computes, in C or not
SI = bytes(range(1, 33)); SR = bytes(range(33, 65))
PR = b''.join(bytes([b]) for b in {pr!r})
PI = b''.join(bytes([b]) for b in {pi!r})
def handshake(pattern):
    # The X25519s of the device's own calls only.
    spent = [0]
    def counted(fn, *a):
        before = x25519_ops()
        r = fn(*a)
        spent[0] += x25519_ops() - before
        return r
    dev, gw = handshake_pair(pattern)
    run_handshake(dev, gw, pattern, counted)
    dev = gw = None
    return spent[0]
"""


@pytest.mark.parametrize("make", [t[1] for t in TARGETS if t[0] != "unix-32k-heap"],
                         ids=[t[0] for t in TARGETS if t[0] != "unix-32k-heap"])
def test_device_handshake_computes_only_the_patterns_x25519(make):
    # The device's static public key does not change: it is computed once, not in every
    # handshake.  After the first, a handshake costs exactly its pattern's X25519s: the
    # ephemeral key, then one per DH token the initiator computes (XX and XK: ee, es, se;
    # KK: es, ss, ee, se).
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    def pub(secret):
        return list(X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw())

    # (Both ends of each handshake run on the device: not in a 32 KiB heap.)
    device = make()
    try:
        device.exec(_COUNT_X25519.format(pr=pub(bytes(range(33, 65))),
                                         pi=pub(bytes(range(1, 33))))
                    + DEVICE_HANDSHAKE, timeout=120)
        got = [device.exec(f"print(handshake({p!r}))", timeout=300).strip()
               for p in ("XX", "XX", "XK", "KK", "KK")]
    finally:
        device.close()
    assert got == ["5", "4", "4", "5", "5"]


def _step(run, frames, now=0):
    import binascii

    from device_session import parse

    arg = [binascii.hexlify(f).decode() for f in frames]
    return parse(run.device.exec(f"step({arg!r}, {now})"))


def _window(run):
    return run.device.exec("print(ch._window.accepted, bytes(ch._window.state).hex(), "
                           "sorted(ch.drops.items()))").strip()


def test_message_path_refuses_replays_and_forgeries_and_nothing_moves(device):
    # The device's message path (one C call on Sealink firmware, the same steps in
    # Python elsewhere): a replayed frame, one with a flipped bit in its ciphertext, tag
    # or header, one older than the window: each refused and counted, the window as it
    # was; then the real next frame still opens.
    run = DeviceChannelRun(device, mtu=222, rs_known=True)
    run.handshake()
    gw = run.gateway
    frames = [gw.send(b"m%d" % i, 0)[0] for i in range(80)]
    assert _step(run, frames[70:71])[1] == [b"m70"]
    before = _window(run)
    flip = lambda f, i, b=1: f[:i] + bytes([f[i] ^ b]) + f[i + 1:]  # noqa: E731
    # (Counter byte 71 ^ 2: counter 69, unseen and in the window, under the wrong nonce.)
    bad = [frames[70], flip(frames[71], 3, 2), flip(frames[71], 6), flip(frames[71], -1),
           frames[1]]
    assert _step(run, bad) == ([], [])
    after = _window(run)
    assert after.split(" ", 2)[:2] == before.split(" ", 2)[:2]
    assert "('AuthenticationError', 3)" in after and "('ReplayError', 2)" in after
    assert _step(run, frames[71:72])[1] == [b"m71"]
    # Late frames within the window still open, once each.
    assert _step(run, frames[40:41] + frames[40:41])[1] == [b"m40"]


def test_message_path_crosses_key_epochs(device):
    # Counters past a key epoch (every 1,024) and a jump of several epochs (a sender's
    # time-based rekey): the device derives the epoch's key and goes on.
    run = DeviceChannelRun(device, mtu=222, rs_known=True)
    run.handshake()
    gw = run.gateway
    gw._send_n = 1020
    got = []
    for i in range(8):
        got += _step(run, gw.send(b"e%d" % i, 0))[1]
    # Time-based rekeys, an hour apart, whose frames are lost: the one that arrives is
    # four epochs on.
    for hour in (1, 2, 3):
        gw.send(b"lost", hour * 3_600_001)
    got += _step(run, gw.send(b"far", 4 * 3_600_001))[1]
    assert got == [b"e%d" % i for i in range(8)] + [b"far"]
    assert run.uplink(b"still") == [b"still"]
