#!/usr/bin/env python3
"""Gateway scale: `sealink gateway` over udp:// on loopback, on one worker process and
on two (gateway/workers.py), at 100, 1,000 and 10,000 enrolled devices.

For each fleet size N and worker count, in one run:
  1. N devices are enrolled (bulk, straight into the gateway's SQLite file).
  2. Handshakes: every device's KK message 1 is prepared beforehand (untimed), then all
     are sent, at most WINDOW unanswered at once; rate = message 2s the gateway
     answered / time until the last answer (each is the responder's whole crypto: a key
     generation and four DH; the handshake is counted completed, "proven", when the
     device's first frame under the new keys arrives, in the message phase).
  3. Proof: the devices read message 2 (untimed), then each sends its first frame
     under the new keys, a reliable uplink: the gateway takes the answered handshake
     as the device's session (authorization: the device's record and key rotation
     state read, the session recorded) and commits the message.  Rate = first frames
     acknowledged / CPU time; "whole" = handshakes / CPU time of both phases.
  4. Burst: M transport frames are encrypted beforehand (untimed); then all are sent,
     paced by every PROBE-th one being a
     reliable uplink whose ack follows its commit (at most 4 probes unanswered); rate =
     uplinks the gateway accepted (decrypted, replay-checked, committed to SQLite,
     handed to subscribers) / time, read from its Prometheus counters.  With a broker
     attached (--mqtt-sizes), also the rate at which the broker acknowledged them (QoS 1),
     and the CPU time is taken until it had acknowledged the last one.
  5. Trickle: TRICKLE_RATE uplinks a second, evenly spaced, for TRICKLE_S seconds: the
     gateway's CPU use while it mostly waits, its messages per CPU second, and the time
     from sending a reliable uplink to receiving its ack (its commit included).
  6. Memory: the gateway's RSS (all its processes) growth per established idle session.

Each rate is given per wall second and per CPU second of the gateway (user + system
time of its process and its workers, from /proc via psutil, read before and after the
phase), beside the floor of the crypto it must do, measured in this process in the same
run with pyca: a KK handshake is one key generation and four X25519 (responder: ee, se,
es, ss), a message is one ChaCha20-Poly1305 open of a 26-40 byte frame.  Per CPU second
is the figure that does not depend on what else the machine is doing.  Durability as in
production (FSYNC_POLICY, printed with the tables).

The load generator runs on the same 2-core machine, in this process: its own cost is
kept out of the timed phases by preparing every frame beforehand, but it shares the
cores with the gateway's workers, so wall-clock rates on two workers understate what two
free cores give.
Usage: .venv/bin/python bench/gateway_scale.py [--sizes 100,1000,10000] [--workers 1,2]
       [--mqtt-sizes 1000] [--messages 100000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "gateway" / ".."))
from sealink import crypto  # noqa: E402
from sealink.session import Channel  # noqa: E402
from sealink_gateway.run import load_or_create_static_key  # noqa: E402
from sealink_gateway.store import Store, device_id_for  # noqa: E402

SEALINK = str(Path(sys.executable).parent / "sealink")
WINDOW = 200
PROBE = 100
UP_TOTAL = 'sealink_messages_total{direction="up"}'  # uplinks accepted (committed)
TRICKLE_RATE = 1000  # uplinks a second in the trickle phase
TRICKLE_S = 5.0
FSYNC_POLICY = ("fsync policy: SQLite WAL, synchronous=FULL (the WAL is fsynced at every "
                "commit); uplinks accepted in one turn of a worker's event loop share one "
                "transaction; an uplink is acknowledged (reliable) or handed on only after "
                "its transaction has committed.")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def wait_metric(port: int, name: str, at_least: float, timeout_s: float,
                every_s: float) -> float:
    """The metric's value once it reaches at_least, or when timeout_s has passed
    (each scrape costs the gateway CPU: every_s apart)."""
    deadline = time.monotonic() + timeout_s
    value = metric(port, name)
    while value < at_least and time.monotonic() < deadline:
        time.sleep(every_s)
        value = metric(port, name)
    return value


def start_mosquitto(workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                    "max_inflight_messages 0\nmax_queued_messages 0\n")
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


def start_gateway(workdir: Path, mqtt_port: int | None,
                  workers: int = 1) -> tuple[subprocess.Popen, int, int]:
    metrics_port = free_port()
    cfg = workdir / "gateway.toml"
    # Port 0 with one worker (the kernel picks); several need a port known beforehand.
    port = free_udp_port() if workers > 1 else 0
    cfg.write_text('[gateway]\ndatabase = "state.db"\nlog_level = "WARNING"\n'
                   f'workers = {workers}\n'
                   f'[[transport]]\nurl = "udp://127.0.0.1:{port}?mtu=222"\n'
                   f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
                   "[limits]\nhandshakes_per_source = 1000000\nhandshake_window_s = 1\n"
                   + (f'[mqtt]\nurl = "mqtt://127.0.0.1:{mqtt_port}"\n' if mqtt_port else ""))
    command = [SEALINK, "gateway", "--config", str(cfg)]
    if os.environ.get("BENCH_PROFILE"):  # cProfile output for the gateway process
        command = [sys.executable, "-m", "cProfile", "-o", os.environ["BENCH_PROFILE"],
                   *command]
    proc = subprocess.Popen(command,
                            stderr=open(workdir / "gateway.log", "wb"),  # noqa: SIM115
                            stdout=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    # log_level WARNING hides the "listening" line: find the UDP port from the process.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children()]
        ports = [c.laddr.port for p in family for c in p.net_connections("udp")]
        if len(ports) >= workers:
            return proc, ports[0], metrics_port
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("gateway did not start")


def enroll_bulk(workdir: Path, n: int) -> list[tuple[bytes, int]]:
    """N devices straight into the store: (secret, sid)."""
    Store(workdir / "state.db").close()  # create the schema
    db = sqlite3.connect(workdir / "state.db")
    devices = []
    now = time.time()
    with db:
        for i in range(n):
            secret = crypto.random_bytes(32)
            public = crypto.x25519_base(secret)
            sid = i + 1
            db.execute("INSERT INTO devices (id, sid, static_key, attributes, status,"
                       " enrolled_at) VALUES (?, ?, ?, '{}', 'active', ?)",
                       (device_id_for(public), sid, public, now))
            devices.append((secret, sid))
    db.close()
    return devices


def rss(proc: subprocess.Popen) -> int:
    """Resident bytes of the gateway: its process and its workers."""
    parent = psutil.Process(proc.pid)
    return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])


def cpu_s(proc: subprocess.Popen) -> float:
    """CPU seconds (user + system) of the gateway: its process and its workers."""
    parent = psutil.Process(proc.pid)
    total = 0.0
    for p in [parent, *parent.children(recursive=True)]:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def crypto_floor() -> dict:
    """pyca's own rates in this process, per CPU second: KK responder handshakes (one
    key generation, four DH) and AEAD opens of 26-40 byte frames."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    peer = X25519PrivateKey.generate().public_key()
    static = X25519PrivateKey.generate()
    n = 3000
    t0 = time.process_time()
    for _ in range(n):
        e = X25519PrivateKey.generate()
        e.exchange(peer), e.exchange(peer), static.exchange(peer), static.exchange(peer)
    hs = n / (time.process_time() - t0)
    aead = ChaCha20Poly1305(bytes(32))
    frames = [(i.to_bytes(12, "little"), aead.encrypt(i.to_bytes(12, "little"),
                                                      bytes(10 + i % 15), b"head"))
              for i in range(1000)]
    t0 = time.process_time()
    for _ in range(200):
        for nonce, sealed in frames:
            aead.decrypt(nonce, sealed, b"head")
    opens = 200 * len(frames) / (time.process_time() - t0)
    return {"handshakes_per_cpu_s": hs, "opens_per_cpu_s": opens}


def pump(sock: socket.socket, frames: list[bytes], addr, on_reply=None,
         expect_replies: int | None = None, timeout: float = 120.0,
         window: int = WINDOW, probe_every: int = 1) -> float:
    """Send frames, at most `window` unanswered; every `probe_every`-th frame is answered
    (a handshake message, or a reliable uplink whose ack follows its commit).  Returns
    seconds until the last answer."""
    start = time.perf_counter()
    sent = received = 0
    total = len(frames)
    want = total // probe_every if expect_replies is None else expect_replies
    deadline = time.monotonic() + timeout
    last_reply = time.perf_counter()
    while (sent < total or received < want) and time.monotonic() < deadline:
        while sent < total and sent // probe_every - received < window:
            sock.sendto(frames[sent], addr)
            sent += 1
        ready, _, _ = select.select([sock], [], [], 0.02)
        if not ready:
            if time.perf_counter() - last_reply > 2.0:
                break  # the rest were lost (UDP): stop the clock at the last answer
            continue
        last_reply = time.perf_counter()
        while True:
            try:
                data = sock.recv(2048)
            except BlockingIOError:
                break
            received += 1
            if on_reply:
                on_reply(data)
    if os.environ.get("BENCH_DEBUG"):
        print("pump: sent", sent, "of", total, "answers", received, "of", want)
    return last_reply - start


def uplinks(ready: list[Channel], count: int, label: bytes) -> list[tuple[bool, bytes]]:
    """`count` uplink frames over the devices in turn, (reliable, frame): every PROBE-th
    a reliable one, its ack paced by the gateway's commit (probes rotate over the
    devices too)."""
    frames = []
    for i in range(count):
        text = b"%s=%05d" % (label, i)
        if i % PROBE == PROBE - 1:
            probe = ready[(i // PROBE) % len(ready)]
            frames += [(True, f) for f in probe.send_reliable(text, 0)]
            # (The generator reads no acks back: the pump only counts them.)
            probe._reliable_out._pending.clear()
        else:
            frames += [(False, f) for f in ready[i % len(ready)].send(text, 0)]
    return frames


def pump_paced(sock: socket.socket, frames: list[tuple[bool, bytes]], addr,
               rate: float) -> tuple[list[float], float]:
    """Send frames evenly spaced at `rate` a second; (seconds from each reliable frame
    to its ack, in order, and the phase's length)."""
    start = time.perf_counter()
    sent_at: list[float] = []
    latencies: list[float] = []
    for i, (reliable, frame) in enumerate(frames):
        due = start + i / rate
        while True:
            now = time.perf_counter()
            wait = due - now
            ready, _, _ = select.select([sock], [], [], max(0.0, wait))
            if ready:
                while True:
                    try:
                        sock.recv(2048)
                    except BlockingIOError:
                        break
                    if len(latencies) < len(sent_at):
                        latencies.append(time.perf_counter() - sent_at[len(latencies)])
            if time.perf_counter() >= due:
                break
        sock.sendto(frame, addr)
        if reliable:
            sent_at.append(time.perf_counter())
    deadline = time.perf_counter() + 5
    while len(latencies) < len(sent_at) and time.perf_counter() < deadline:
        if select.select([sock], [], [], 0.05)[0]:
            sock.recv(2048)
            latencies.append(time.perf_counter() - sent_at[len(latencies)])
    return latencies or [float("nan")], time.perf_counter() - start


def run_size(n: int, messages: int, mqtt: bool, workers: int = 1) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        gw_key = load_or_create_static_key(workdir / "gateway.key")
        gw_pub = crypto.x25519_base(gw_key)
        devices = enroll_bulk(workdir, n)
        broker, mqtt_port = start_mosquitto(workdir) if mqtt else (None, None)
        proc, port, metrics_port = start_gateway(workdir, mqtt_port, workers)
        addr = ("127.0.0.1", port)
        try:
            rss_before = rss(proc)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.setblocking(False)
            # Handshakes: prepare every KK message 1.
            channels = {}
            first = []
            for secret, sid in devices:
                ch = Channel(True, secret, rs=gw_pub, sid=sid, mtu=222)
                channels[sid] = ch
                first += ch.connect(0)
            answers: list[bytes] = []
            c0 = cpu_s(proc)
            hs_time = pump(sock, first, addr, on_reply=answers.append)
            hs_cpu = cpu_s(proc) - c0
            # A KK responder's work is done when it answers (key generation and four DH);
            # the handshake counts as completed once the device's first frame under the
            # new keys proves it (the proof phase, below).
            answered = len(answers)
            # Devices read message 2 (untimed).
            for frame in answers:
                sid = (frame[1] << 8) | frame[2]
                channels[sid].receive(frame, 0)
            ready = [ch for ch in channels.values() if ch.state == "established"]
            # Proof: each device's first frame under the new keys, a reliable uplink (its
            # ack follows the commit).  The gateway makes the answered handshake the
            # device's session: authorization (the device's record and key rotation
            # state read, the session recorded), then the message committed like any.
            proofs = []
            for ch in ready:
                proofs += ch.send_reliable(b"first", 0)
                ch._reliable_out._pending.clear()
            c0 = cpu_s(proc)
            proof_time = pump(sock, proofs, addr)
            proof_cpu = cpu_s(proc) - c0
            rss_sessions = rss(proc)
            # Uplinks: plain transport frames, every PROBE-th one reliable, so its ack
            # (sent after the gateway commits it, and in order after the frames before
            # it) paces the load: at most WINDOW x PROBE frames outstanding.
            frames = [f for _, f in uplinks(ready, messages, b"temp")]
            # (Workers report their counters to the parent now and then: wait until the
            # first frames are counted, or they would be counted in the burst.)
            before = wait_metric(metrics_port, UP_TOTAL, len(proofs), 10, 0.05)
            start = time.perf_counter()
            c0 = cpu_s(proc)
            msg_time = pump(sock, frames, addr, window=4, probe_every=PROBE)
            time.sleep(0.5)
            msg_cpu = cpu_s(proc) - c0
            accepted = metric(metrics_port, UP_TOTAL)
            completed = metric(metrics_port, 'sealink_handshakes_total{outcome="completed"}')
            published_per_s = None
            if mqtt:  # until the broker has acknowledged every accepted uplink
                done = wait_metric(metrics_port,
                                   'sealink_messages_total{direction="up_published"}',
                                   accepted, 120, 0.2)
                published_per_s = (done - before) / (time.perf_counter() - start)
                # Per CPU second with a broker: until the last publish was acknowledged
                # (the bridge's work goes on after the burst).
                msg_cpu = cpu_s(proc) - c0
            # Trickle: TRICKLE_RATE uplinks a second, evenly spaced, for TRICKLE_S; the
            # same mix (every PROBE-th reliable).  What it costs per second and per
            # message when the gateway mostly waits, and how long a commit takes to be
            # acknowledged (send to ack, at the generator).
            paced = uplinks(ready, int(TRICKLE_RATE * TRICKLE_S), b"trickle")
            time.sleep(1.0)  # the burst's commits and reports settle
            before_t = metric(metrics_port, UP_TOTAL)
            c0 = cpu_s(proc)
            latencies, trickle_s = pump_paced(sock, paced, addr, TRICKLE_RATE)
            time.sleep(0.5)
            trickle_cpu = cpu_s(proc) - c0
            trickle_ok = metric(metrics_port, UP_TOTAL) - before_t
            latencies.sort()
            if os.environ.get("BENCH_DEBUG"):
                text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read()
                print([ln for ln in text.decode().splitlines() if "drops" in ln
                       and not ln.startswith("#")])
            return {
                "devices": n,
                "workers": workers,
                "handshakes_answered": answered,
                "handshakes_completed": int(completed),
                "handshakes_per_s": answered / hs_time,
                "handshakes_per_cpu_s": answered / hs_cpu,
                "handshake_phase_s": hs_time,
                "proofs_per_s": len(proofs) / proof_time,
                "proofs_per_cpu_s": len(proofs) / proof_cpu,
                "handshakes_whole_per_cpu_s": answered / (hs_cpu + proof_cpu),
                "proof_phase_s": proof_time,
                "messages_sent": len(frames),
                "messages_accepted": int(accepted - before),
                "messages_per_s": (accepted - before) / msg_time,
                "messages_per_cpu_s": (accepted - before) / msg_cpu,
                "message_phase_s": msg_time,
                "published_per_s": published_per_s,
                "trickle_rate": TRICKLE_RATE,
                "trickle_accepted": int(trickle_ok),
                "trickle_sent": len(paced),
                "trickle_cpu_per_s": trickle_cpu / trickle_s,
                "trickle_messages_per_cpu_s": trickle_ok / trickle_cpu,
                "trickle_ack_p50_ms": 1000 * latencies[len(latencies) // 2],
                "trickle_ack_p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
                "rss_per_session_bytes": (rss_sessions - rss_before) / max(1, len(ready)),
                "rss_mib": rss(proc) / 2**20,
            }
        finally:
            if broker is not None:
                broker.terminate()
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGUSR1)  # its stacks, for the report
                time.sleep(1)
                proc.kill()
                print((workdir / "gateway.log").read_text()[-3000:], file=sys.stderr)
                raise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--messages", type=int, default=100000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--workers", default="1,2", help="gateway processes, one run each")
    parser.add_argument("--mqtt-sizes", default="1000",
                        help="sizes run again with a mosquitto broker ('' for none)")
    args = parser.parse_args()
    floor = crypto_floor()
    rows = [run_size(int(n), args.messages, False, int(w))
            for w in args.workers.split(",") for n in args.sizes.split(",") if n]
    rows += [run_size(int(n), args.messages, True) for n in args.mqtt_sizes.split(",") if n]
    console = Console(width=200)
    table = Table(title="Gateway over udp:// on loopback (2-core machine): burst")
    for col in ("workers", "devices", "MQTT", "handshakes answered/proven", "handshakes/s",
                "per CPU-s", "of floor", "first frames per CPU-s", "whole handshakes per CPU-s",
                "messages accepted", "messages/s", "per CPU-s",
                "of floor", "published to MQTT/s", "bytes/idle session", "gateway RSS"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["workers"]), f"{r['devices']:,}",
                      "-" if r["published_per_s"] is None else "yes",
                      f"{r['handshakes_answered']:,}/{r['handshakes_completed']:,}",
                      f"{r['handshakes_per_s']:,.0f}",
                      f"{r['handshakes_per_cpu_s']:,.0f}",
                      f"{r['handshakes_per_cpu_s'] / floor['handshakes_per_cpu_s']:.2f}",
                      f"{r['proofs_per_cpu_s']:,.0f}",
                      f"{r['handshakes_whole_per_cpu_s']:,.0f}",
                      f"{r['messages_accepted']:,}/{r['messages_sent']:,}",
                      f"{r['messages_per_s']:,.0f}",
                      f"{r['messages_per_cpu_s']:,.0f}",
                      f"{r['messages_per_cpu_s'] / floor['opens_per_cpu_s']:.3f}",
                      "-" if r["published_per_s"] is None else f"{r['published_per_s']:,.0f}",
                      f"{r['rss_per_session_bytes']:,.0f}",
                      f"{r['rss_mib']:,.0f} MiB")
    console.print(table)
    trickle = Table(title=f"... and a trickle: {TRICKLE_RATE:,} uplinks/s for {TRICKLE_S:.0f} s")
    for col in ("workers", "devices", "MQTT", "accepted", "gateway CPU", "messages per CPU-s",
                "ack after commit, p50", "p99"):
        trickle.add_column(col, justify="right")
    for r in rows:
        trickle.add_row(str(r["workers"]), f"{r['devices']:,}",
                        "-" if r["published_per_s"] is None else "yes",
                        f"{r['trickle_accepted']:,}/{r['trickle_sent']:,}",
                        f"{100 * r['trickle_cpu_per_s']:.0f} %",
                        f"{r['trickle_messages_per_cpu_s']:,.0f}",
                        f"{r['trickle_ack_p50_ms']:.1f} ms", f"{r['trickle_ack_p99_ms']:.1f} ms")
    console.print(trickle)
    print(f"floor (pyca, this process, per CPU second): "
          f"{floor['handshakes_per_cpu_s']:,.0f} KK responder handshakes "
          f"(1 key generation + 4 X25519), {floor['opens_per_cpu_s']:,.0f} AEAD opens of "
          f"26-40 B; phases (handshakes / first frames / burst): " + ", ".join(
              f"{r['workers']}x{r['devices']:,}: {r['handshake_phase_s']:.2f} s / "
              f"{r['proof_phase_s']:.2f} s / {r['message_phase_s']:.2f} s" for r in rows))
    print(FSYNC_POLICY)
    if args.json:
        args.json.write_text(json.dumps({"floor": floor, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
