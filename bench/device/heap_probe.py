# Runs on the device, precompiled (mpy-cross) and imported from its filesystem by
# bench/device_heap.py: the device's side of a session (the initiator), in a heap cut
# down to `limit` free bytes.  The host drives it one call per step and plays the
# gateway; each call prints the frames to send ('F <hex>') and the payloads delivered
# ('P <hex>').
import gc
from binascii import hexlify, unhexlify

from sealink.session import Channel

ch = None
_ballast = None


def setup(secret, rs, mtu, limit):
    # Leave `limit` bytes free for what follows (the session and its traffic, and the
    # one-line calls the host sends), whatever this firmware's heap size: the rest is
    # taken by one block that is never freed.
    global ch, _ballast
    gc.collect()
    spare = gc.mem_free() - limit
    if spare > 64:
        _ballast = bytearray(spare - 32)  # (its header, and the allocator's rounding)
    gc.collect()
    ch = Channel(True, secret, rs=rs, sid=0x2A, mtu=mtu, retry_ms=1000, max_retries=30)


def _emit(frames, payloads):
    for f in frames:
        print('F', hexlify(f).decode())
    for p in payloads:
        print('P', hexlify(p).decode())


def connect(now):
    _emit(ch.connect(now), [])


def step(frames, now):
    out, got = [], []
    for f in frames:
        p, r = ch.receive(unhexlify(f), now)
        got += p
        out += r
    out += ch.poll(now)
    _emit(out, got)
    print('S', ch.state)


def send(data, now):
    _emit(ch.send(data, now), [])


def free():
    gc.collect()
    print('M', gc.mem_free())
