"""The session layer on real firmware: the device side runs frozen in MicroPython (unix
port, including a 32 KiB heap, and the QEMU boards) against the gateway side here."""

import pytest
from device_session import DeviceChannelRun

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
