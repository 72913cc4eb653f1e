#!/usr/bin/env python3
"""What Sealink's own code costs on a device, against the crypto it must do.

For each path (handshakes as the device does them, sending and receiving one message)
the device runs the real code of `lib/sealink` (frozen into the firmware) and reports:

- instructions, on QEMU Cortex-M3 and RV32 under `-icount shift=0` (guest time
  advances 1 ns per instruction, so a `ticks_us` delta x 1000 is the instruction
  count of the code between the two reads; deterministic, whatever the host's load);
- the floor: the same path's cryptographic calls (X25519, ChaCha20-Poly1305, HKDF,
  SHA-256), recorded while the path ran and replayed on the device straight into the
  C module with arguments of the same sizes, so the floor is what any code on this
  firmware must spend on the crypto alone.  The handshake runs inside the C module
  (_sealink_crypto.Handshake), out of the tracer's sight: its calls are those Noise
  defines for each message the device wrote or read (each token's X25519, HKDF,
  SHA-256 and AEAD, sized by the message), written into the trace as it goes;
- their ratio, and the heap the path allocated (bytes, `gc.mem_alloc()` with the
  collector off).

Usage: .venv/bin/python bench/device_paths.py [--boards ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from device_session import DEVICE_HANDSHAKE  # noqa: E402

from devices import QemuDevice  # noqa: E402

# Runs on the device.  Both ends of each channel run there; only the device's side of
# each path is timed (and its heap counted with the collector off).  Prints one line
# per path: name, instructions, floor, heap bytes, crypto calls, X25519s.
_MEASURE = r"""
import gc, time
from hashlib import sha256
from sealink import crypto, session, wire
import _sealink_crypto as C

SI = bytes(range(1, 33)); SR = bytes(range(33, 65))
PI = crypto.x25519_base(SI); PR = crypto.x25519_base(SR)
trace = None

spent = [0, 0]  # ticks, heap bytes spent on the device's side
recording = [False]  # record crypto calls only while the device's side runs

def _rec(name, fn, sizes):
    def wrapped(*a):
        r = fn(*a)
        # (open_data answers an int for a frame it leaves to Python: no crypto done.)
        if trace is not None and recording[0] and (name != "open_data" or type(r) is bytes):
            trace.append((name, sizes(a)))
        return r
    return wrapped

def mine(fn, *a):
    # Run fn as the device's side of the path: timed, its heap counted, its crypto
    # calls recorded.
    recording[0] = True
    m0 = gc.mem_alloc()
    t0 = time.ticks_us()
    r = fn(*a)
    spent[0] += time.ticks_diff(time.ticks_us(), t0)
    spent[1] += gc.mem_alloc() - m0
    recording[0] = False
    return r

def _ad_len(ad):
    return ad if isinstance(ad, int) else len(ad)

# (module, function, argument sizes) of each crypto call a path makes: the AEAD as
# (plaintext or ciphertext length, associated data length).
_TRACED = (
    (crypto, "x25519", lambda a: ()),
    (crypto, "x25519_base", lambda a: ()),
    (crypto, "aead_encrypt", lambda a: (len(a[2]), len(a[3]) if len(a) > 3 else 0)),
    (crypto, "aead_decrypt", lambda a: (len(a[2]), len(a[3]) if len(a) > 3 else 0)),
    (crypto, "seal_n", lambda a: (len(a[2]), len(a[3]))),
    (crypto, "open_n", lambda a: (len(a[2]) - (a[3] if isinstance(a[3], int) else 0),
                                  _ad_len(a[3]))),
    (crypto, "seal_data", lambda a: (len(a[4]), 4)),
    (crypto, "open_data", lambda a: (len(a[2]) - 4, 4)),
)
_sha_orig = sha256
_orig = {}
def tracing(on):
    for mod, name, sizes in _TRACED:
        if not hasattr(mod, name) or getattr(mod, name) is None:
            continue  # firmware from before the function
        key = (id(mod), name)
        if on:
            _orig[key] = getattr(mod, name)
            setattr(mod, name, _rec(name, _orig[key], sizes))
        else:
            setattr(mod, name, _orig.pop(key))
    session.HandshakeState = _TracedHandshake if on else _HS

# The crypto of Noise's tokens (revision 34): what a handshake message costs whoever
# computes it.  e: a key pair when writing, MixHash; s: EncryptAndHash or DecryptAndHash
# of 32 bytes; ee/es/se/ss: an X25519 and MixKey (HKDF, 2 outputs); then the payload's
# EncryptAndHash or DecryptAndHash; Split (HKDF of nothing) after the last message.
# Before the first message, a MixHash per static key the pattern pre-shares.
_TOKENS = {"XX": ("e", "e ee s es", "s se"), "XK": ("e es", "e ee", "s se"),
           "KK": ("e es ss", "e ee se")}
_PRE_SHARED = {"XX": 0, "XK": 1, "KK": 2}
_HS = session.HandshakeState

class _TracedHandshake:
    def __init__(self, name, initiator, *a, **kw):
        self.hs = _HS(name, initiator, *a, **kw)
        pattern = name.split("_")[1]
        self.tokens = _TOKENS[pattern]
        self.keyed = False
        if recording[0]:
            for _ in range(_PRE_SHARED[pattern]):
                trace.append(("sha256", (64,)))
    def _noise(self, index, length, writing):
        if not recording[0]:
            return
        self.keyed = _message_trace(self.tokens[index], length, writing, self.keyed)
        if self.hs.complete:
            trace.append(("hkdf", (0, 2)))
    def write_message(self, payload=b""):
        index = self.hs._index
        m = self.hs.write_message(payload)
        self._noise(index, len(m), True)
        return m
    def read_message(self, m):
        index = self.hs._index
        p = self.hs.read_message(m)
        self._noise(index, len(m), False)
        return p
    def __getattr__(self, name):  # the rest as the handshake has it
        return getattr(self.hs, name)

def _message_trace(tokens, length, writing, keyed):
    aead = "seal_n" if writing else "open_n"
    for t in tokens.split():
        if t == "e":
            if writing:
                trace.append(("x25519_base", ()))
            trace.append(("sha256", (64,)))
            length -= 32
        elif t == "s":
            n = 48 if keyed else 32
            if keyed:
                trace.append((aead, (32 if writing else 48, 32)))
            trace.append(("sha256", (32 + n,)))
            length -= n
        else:
            trace.append(("x25519", ()))
            trace.append(("hkdf", (32, 2)))
            keyed = True
    if keyed:  # the payload (length: its ciphertext and tag)
        trace.append((aead, (length - 16 if writing else length, 32)))
    trace.append(("sha256", (32 + length,)))
    return keyed

def _sha_digest(d):
    return _sha_orig(d).digest()

def floor(tr):
    # The recorded calls, straight into the C module with same-sized arguments.
    k = bytes(range(32)); n12 = bytes(12)
    calls = []
    for name, sz in tr:
        if name == "x25519":
            calls.append((C.x25519, (k, PR)))
        elif name == "x25519_base":
            calls.append((C.x25519_base, (k,)))
        elif name in ("aead_encrypt", "seal_n", "seal_data"):
            calls.append((C.aead_seal, (k, n12, bytes(sz[0]), bytes(sz[1]))))
        elif name in ("aead_decrypt", "open_n", "open_data"):
            sealed = C.aead_seal(k, n12, bytes(sz[0] - 16), bytes(sz[1]))
            calls.append((C.aead_open, (k, n12, sealed, bytes(sz[1]))))
        elif name == "hkdf":
            # HKDF with n outputs is n + 1 HMACs, each two SHA-256 runs (over a 64-byte
            # padded key and the message, then over the pad and the inner hash): the
            # same hashing, done by the firmware's SHA-256.
            sizes = [64 + sz[0], 96, 65, 96] + [97, 96] * (sz[1] - 1)
            for n in sizes:
                calls.append((_sha_digest, (bytes(n),)))
        elif name == "sha256":
            calls.append((_sha_digest, (bytes(sz[0]),)))
    # The loop's own cost (the same loop, calling nothing) is taken out: the floor is
    # the crypto, each operation one call from Python into the C module.
    reps = 1 if len(calls) > 10 else 50  # the short paths: many runs, for resolution
    t0 = time.ticks_us()
    for _ in range(reps):
        for fn, args in calls:
            fn(*args)
    spent = time.ticks_diff(time.ticks_us(), t0)
    t0 = time.ticks_us()
    for _ in range(reps):
        for fn, args in calls:
            pass
    spent -= time.ticks_diff(time.ticks_us(), t0)
    return spent * 1000 // reps

def measure(name, setup, step, reps):
    # setup() -> state (untimed); step(state) runs the path, the device's part of it
    # through mine().  One run first records the crypto calls of one step.
    global trace
    step(setup())  # once untraced: what the firmware computes once (the static key)
    st = setup()
    trace = []
    tracing(True)
    step(st)
    tracing(False)
    tr, trace = trace, None
    states = [setup() for _ in range(reps)]
    gc.collect()
    gc.disable()
    spent[0] = spent[1] = 0
    for st in states:
        step(st)
    gc.enable()
    states = None
    gc.collect()
    dh = len([c for c in tr if c[0].startswith("x25519")])
    print(name, spent[0] * 1000 // reps, floor(tr), spent[1] // reps, len(tr), dh)

def pair(mtu=255):
    dev = session.Channel(True, SI, rs=PR, sid=7, mtu=mtu)
    gw = session.Channel(False, SR, sid=7, mtu=mtu, peer_lookup=lambda sid: PI)
    return dev, gw

def hs_setup(pattern):
    return lambda: handshake_pair(pattern)

def hs_step(pattern):
    # The device's side of a whole handshake: connect, read each answer, write the next.
    return lambda st: run_handshake(st[0], st[1], pattern, mine)

def established(mtu):
    dev, gw = pair(mtu)
    frames = dev.connect(0, "KK")
    for f in frames:
        for g in gw.receive(f, 0)[1]:
            dev.receive(g, 0)
    return dev, gw

MSG = bytes(32)
if HANDSHAKES:
    for pattern, reps in (("XX", 2), ("XK", 2), ("KK", 2)):
        measure("handshake_" + pattern, hs_setup(pattern), hs_step(pattern), reps)

# Send: one 32-byte message, single frame.
_send = established(255)
measure("send_32", lambda: _send[0], lambda dev: mine(dev.send, MSG, 0), 20)

# Receive: a 32-byte message from the gateway (single frame, MTU 255; fragments at
# MTU 51 and 20), frames prepared in advance (each counter is accepted once).
for mtu in (255, 51, 20):
    dev, gw = established(mtu)
    def setup(gw=gw):
        return gw.send(MSG, 0)
    def step(frames, dev=dev):
        out = None
        for f in frames:
            out = mine(dev.receive, f, 0)
        assert out[0] == [MSG], (out, dev.drops)
    measure("receive_32_mtu%d" % mtu, setup, step, 20)
"""

PATHS = {
    "handshake_XX": "XX first contact (initiator)",
    "handshake_XK": "XK first contact (initiator)",
    "handshake_KK": "KK reconnect (initiator)",
    "send_32": "send a 32-B message",
    "receive_32_mtu255": "receive it, one frame",
    "receive_32_mtu51": "receive it at MTU 51",
    "receive_32_mtu20": "receive it at MTU 20",
}


def measure(board: str, handshakes: bool = True) -> dict[str, dict]:
    device = QemuDevice(board, icount=0)
    try:
        out = device.exec(f"HANDSHAKES = {handshakes!r}\n" + DEVICE_HANDSHAKE
                          + _MEASURE, timeout=1800)
    finally:
        device.close()
    result = {}
    for line in out.strip().splitlines():
        name, instr, floor, heap, calls, dh = line.split()
        result[name] = {"instructions": int(instr), "floor": int(floor),
                        "heap_bytes": int(heap), "crypto_calls": int(calls),
                        "x25519": int(dh)}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", nargs="+", default=["QEMU_MPS2_AN385", "QEMU_VIRT_RV32"])
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    console = Console(width=140)
    report = {}
    for board in args.boards:
        r = measure(board)
        report[board] = r
        table = Table(title=f"{board}: instructions per path (QEMU -icount shift=0)")
        for col in ("path", "instructions", "crypto floor", "ratio", "crypto calls",
                    "of them X25519", "heap bytes"):
            table.add_column(col, justify="left" if col == "path" else "right")
        for name, label in PATHS.items():
            if name not in r:
                continue
            x = r[name]
            table.add_row(label, f"{x['instructions']:,}", f"{x['floor']:,}",
                          f"{x['instructions'] / x['floor']:.2f}", str(x["crypto_calls"]),
                          str(x["x25519"]), f"{x['heap_bytes']:,}")
        console.print(table)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
