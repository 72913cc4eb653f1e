#!/usr/bin/env python3
"""The gateway's paths without the network: where a message's and a handshake's CPU go.

One Gateway (gateway/service.py) in this process, over its real udp:// transport
attached to an in-memory endpoint (no socket: the datagrams are handed to the
transport as its socket reader would), a real SQLite file (WAL, synchronous=FULL), and
N devices with KK sessions.  M data frames, prepared beforehand, are fed in batches of
256 (what one readiness event reads), each batch committed by the gateway as in
production.  Reported: CPU time per message (time.process_time, this process), and
beside it the parts measured alone in the same run: the AEAD open of one frame with
pyca (the crypto floor) and the multi-row INSERT the store makes, per row.  What is
left is Python.  `bench/gateway_scale.py` measures the same path over loopback
sockets; the difference is the kernel's receive.

Handshakes: the responder's Channel alone (sealink.session, what the gateway runs for
each KK message 1) against pyca's floor (one key generation and four X25519), both per
CPU second in this process: the Noise code's own cost, before the gateway's (store
lookups, sessions, sending), which bench/gateway_scale.py includes.

Usage: .venv/bin/python bench/gateway_path.py [--devices 1000] [--messages 100000]
       [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "lib"), str(ROOT)]

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305  # noqa: E402

from sealink import crypto  # noqa: E402
from sealink.session import Channel, poll_frame  # noqa: E402
from sealink_gateway.authority import Authority  # noqa: E402
from sealink_gateway.service import Gateway, HandshakeLimiter  # noqa: E402
from sealink_gateway.store import Store, device_id_for  # noqa: E402
from sealink_gateway.transport.udp import UdpTransport  # noqa: E402

BATCH = 256


class Endpoint:
    """Where the gateway's frames go: kept, for the devices to read."""

    def __init__(self):
        self.out: list[tuple[bytes, tuple]] = []

    def sendto(self, data: bytes, addr) -> None:
        self.out.append((data, addr))


async def settle(loop_turns: int = 50, seconds: float = 0.3) -> None:
    for _ in range(loop_turns):
        await asyncio.sleep(0)
    await asyncio.sleep(seconds)


async def measure(n: int, messages: int, workdir: Path) -> dict:
    store = Store(workdir / "state.db")
    gw_secret = crypto.random_bytes(32)
    gw_public = crypto.x25519_base(gw_secret)
    devices = []
    with store.transaction():
        for i in range(n):
            secret = crypto.random_bytes(32)
            public = crypto.x25519_base(secret)
            store.db.execute("INSERT INTO devices (id, sid, static_key, attributes, status,"
                             " enrolled_at) VALUES (?, ?, ?, '{}', 'active', 0)",
                             (device_id_for(public), i + 1, public))
            devices.append(Channel(True, secret, rs=gw_public, sid=i + 1, mtu=222))
    transport = UdpTransport("127.0.0.1", 0)
    endpoint = transport.endpoint = Endpoint()
    gateway = Gateway(store, gw_secret, Authority.load_or_create(workdir / "authority.pem"),
                      [transport], limiter=HandshakeLimiter(10**9, 1.0))
    await gateway.start()
    address = [("127.0.0.1", 10000 + i) for i in range(n)]
    for i, ch in enumerate(devices):  # KK, then the first frame that proves it
        for f in ch.connect(0):
            transport.datagram_received(f, address[i])
    transport._dispatch()
    await settle()
    for data, addr in endpoint.out:
        devices[addr[1] - 10000].receive(data, 0)
    for i, ch in enumerate(devices):
        transport.datagram_received(poll_frame(ch, 0)[0], address[i])
    transport._dispatch()
    await settle()
    frames = [(devices[k % n].send(b"temp=%05d" % k, 0)[0], address[k % n])
              for k in range(messages)]
    before = gateway.counters["uplinks"]
    start = time.process_time()
    for j in range(0, messages, BATCH):
        for f, a in frames[j:j + BATCH]:
            transport.datagram_received(f, a)
        transport._dispatch()
        await asyncio.sleep(0)  # the batch's task runs
        await asyncio.sleep(0)  # its commit (call_soon) runs
    await settle(seconds=0.1)
    cpu = time.process_time() - start
    accepted = gateway.counters["uplinks"] - before
    await gateway.stop()
    # The parts alone: one AEAD open (pyca), and the store's insert per row.
    aead = ChaCha20Poly1305(bytes(32))
    sealed = aead.encrypt(bytes(12), b"temp=00000", b"head")
    t0 = time.process_time()
    for _ in range(messages):
        aead.decrypt(bytes(12), sealed, b"head")
    open_us = 1e6 * (time.process_time() - t0) / messages
    ids = [store.db.execute("SELECT id FROM devices WHERE sid = ?", (i + 1,)).fetchone()[0]
           for i in range(min(n, BATCH))]
    rows = [(ids[i % len(ids)], b"temp=00000", {}) for i in range(BATCH)]
    t0 = time.process_time()
    for _ in range(max(1, messages // BATCH)):
        store.add_uplinks(rows)
    insert_us = 1e6 * (time.process_time() - t0) / (max(1, messages // BATCH) * BATCH)
    store.close()
    per = 1e6 * cpu / max(1, accepted)
    return {"devices": n, "messages": messages, "accepted": accepted,
            "cpu_us_per_message": per, "messages_per_cpu_s": accepted / cpu,
            "aead_open_us": open_us, "store_insert_us": insert_us,
            "python_us": per - open_us - insert_us}


def handshakes(n: int = 2000) -> dict:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from sealink.keys import PrivateKey

    gw_secret = crypto.random_bytes(32)
    gw_public = crypto.x25519_base(gw_secret)
    static = PrivateKey(gw_secret)
    firsts = []
    for i in range(n):
        secret = crypto.random_bytes(32)
        public = crypto.x25519_base(secret)
        firsts.append((public, Channel(True, secret, rs=gw_public, sid=i + 1).connect(0)[0]))
    start = time.process_time()
    for public, first in firsts:
        ch = Channel(False, static, sid=(first[1] << 8) | first[2],
                     peer_lookup=lambda _sid, key=public: key)
        if not ch.receive(first, 0)[1]:
            raise RuntimeError("KK message 1 not answered")
    channel = n / (time.process_time() - start)
    peer = X25519PrivateKey.generate().public_key()
    own = X25519PrivateKey.generate()
    start = time.process_time()
    for _ in range(n):
        e = X25519PrivateKey.generate()
        e.exchange(peer), e.exchange(peer), own.exchange(peer), own.exchange(peer)
    floor = n / (time.process_time() - start)
    return {"channel_per_cpu_s": channel, "floor_per_cpu_s": floor,
            "ratio": channel / floor, "overhead_us": 1e6 / channel - 1e6 / floor}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=100000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = asyncio.run(measure(args.devices, args.messages, Path(tmp)))
    print(f"{r['accepted']:,} of {r['messages']:,} uplinks from {r['devices']:,} devices: "
          f"{r['cpu_us_per_message']:.1f} µs of CPU each ({r['messages_per_cpu_s']:,.0f} "
          f"per CPU-s); of that, AEAD open {r['aead_open_us']:.1f} µs, store insert "
          f"{r['store_insert_us']:.1f} µs, the rest (Python) {r['python_us']:.1f} µs")
    h = handshakes()
    print(f"KK responder Channel: {h['channel_per_cpu_s']:,.0f} per CPU-s against pyca's floor "
          f"of {h['floor_per_cpu_s']:,.0f} ({h['ratio']:.2f}; {h['overhead_us']:.0f} µs of "
          f"Python per handshake)")
    if args.json:
        args.json.write_text(json.dumps(r | {"handshake": h}, indent=2))
    return 0 if r["accepted"] == r["messages"] else 1


if __name__ == "__main__":
    sys.exit(main())
