"""Drive a Channel that runs on a device (MicroPython over the REPL) against a Channel in
this process, through a modeled link.  Shared by the tests and bench/device_heap.py."""

import binascii
import random

from sealink import crypto
from sealink.session import Channel

# Runs on the device: the initiator side.  step() feeds frames in and prints the frames
# to send and the payloads delivered, hex-encoded, one item per line.
DEVICE_SETUP = """
import binascii, gc
from sealink.session import Channel
h = binascii.hexlify
u = binascii.unhexlify
def emit(frames, payloads):
    for f in frames:
        print('F', h(f).decode())
    for p in payloads:
        print('P', h(p).decode())
def step(frames_hex, now):
    out, got = [], []
    for x in frames_hex:
        p, r = ch.receive(u(x), now)
        got += p
        out += r
    out += ch.poll(now)
    emit(out, got)
def send(data_hex, now):
    emit(ch.send(u(data_hex), now), [])
"""

# Runs on the device: both ends of a handshake there, the device (initiator) with static
# key SI and the gateway (responder) with SR; PI and PR are their public keys, defined
# before this.  `mine(fn, *args)` runs each of the device's own calls (to time it, or to
# count what it computes).
DEVICE_HANDSHAKE = """
from sealink import session
def handshake_pair(pattern):
    dev = session.Channel(True, SI, rs=None if pattern == 'XX' else PR, sid=7)
    gw = session.Channel(False, SR, sid=7, peer_lookup=lambda sid: PI)
    return dev, gw
def run_handshake(dev, gw, pattern, mine):
    frames = mine(dev.connect, 0, pattern)
    while frames:
        answers = []
        for f in frames:
            answers += gw.receive(f, 0)[1]
        frames = []
        for f in answers:
            frames += mine(dev.receive, f, 0)[1]
    assert dev.state == 'established' and gw.state == 'established', (dev.state, gw.state)
"""


def parse(out):
    frames, payloads = [], []
    for line in out.split("\n"):
        kind, _, value = line.strip().partition(" ")
        if kind == "F":
            frames.append(binascii.unhexlify(value))
        elif kind == "P":
            payloads.append(binascii.unhexlify(value))
    return frames, payloads


class DeviceChannelRun:
    """A device (initiator) and a CPython gateway (responder) over a lossy link."""

    def __init__(self, device, mtu=51, loss=0.0, seed=1, rs_known=False):
        self.device = device
        self.rng = random.Random(seed)
        self.loss = loss
        self.s_dev = crypto.random_bytes(32)
        self.s_gw = crypto.random_bytes(32)
        self.p_dev = crypto.x25519_base(self.s_dev)
        self.p_gw = crypto.x25519_base(self.s_gw)
        self.gateway = Channel(False, self.s_gw, sid=0x2A, mtu=mtu,
                               peer_lookup=lambda sid: self.p_dev)
        rs = repr(self.p_gw) if rs_known else "None"
        device.exec(DEVICE_SETUP + f"ch = Channel(True, {self.s_dev!r}, rs={rs}, sid=0x2A, "
                    f"mtu={mtu}, retry_ms=1000, max_retries=30)")
        self.now = 0
        self.air_frames = 0

    def link(self, frames):
        self.air_frames += len(frames)
        return [f for f in frames if self.rng.random() >= self.loss]

    def handshake(self, max_rounds=100):
        frames, _ = parse(self.device.exec(f"emit(ch.connect({self.now}), [])"))
        for _ in range(max_rounds):
            to_dev = []
            for f in self.link(frames):
                to_dev += self.gateway.receive(f, self.now)[1]
            to_dev += self.gateway.poll(self.now)
            self.now += 500
            arg = [binascii.hexlify(f).decode() for f in self.link(to_dev)]
            frames, _ = parse(self.device.exec(f"step({arg!r}, {self.now})"))
            state = self.device.exec("print(ch.state)").strip()
            if state == "established" and self.gateway.state == "established":
                # The device's last message may still be in flight.
                for f in self.link(frames):
                    self.gateway.receive(f, self.now)
                if self.gateway.state == "established":
                    return
        raise AssertionError(f"handshake did not finish: {state} {self.gateway.state}")

    def uplink(self, data):
        frames, _ = parse(self.device.exec(f"send({binascii.hexlify(data).decode()!r}, "
                                           f"{self.now})"))
        got = []
        for f in self.link(frames):
            got += self.gateway.receive(f, self.now)[0]
        return got

    def downlink(self, data):
        frames = self.link(self.gateway.send(data, self.now))
        arg = [binascii.hexlify(f).decode() for f in frames]
        return parse(self.device.exec(f"step({arg!r}, {self.now})"))[1]
