"""`[gateway] workers = N`: the gateway on N processes, one per core, sharded by
session id.

Every worker is a whole gateway (gateway/service.py) with its own event loop, sessions
and SQLite connection, over the one database file: the store serializes their commits
(BEGIN IMMEDIATE, WAL, synchronous=FULL, as with one process), and each worker
acknowledges an uplink only after its own transaction holding it has committed, so an
acknowledged uplink survives kill -9 exactly as before.

Frames reach the worker that holds their session without passing through another
process.  For each udp:// transport this parent process binds N sockets to the port
with SO_REUSEPORT, in order, and attaches a classic BPF program to the group
(SO_ATTACH_REUSEPORT_CBPF) that the kernel runs on every datagram: it reads the
session id (bytes 1-2 of the frame) and picks socket sid % N.  Worker i reads socket
i.  A device's frames therefore always reach the same worker: its first contact
(under the random first-contact id), and its reconnections under the session id the
worker gives it, which is one of its own (Store.shard: sid % N == i).  Datagrams too
short to hold a session id go to worker 0, which drops them as malformed.

The other transports (semtech-udp, serial-at, ble, chirpstack-mqtt) carry frames inside
their own framing, out of the kernel's reach: they run in worker 0, as does the MQTT
bridge (it publishes every worker's uplinks from the store, polling it).  Downlinks are
queued in the store; each worker delivers those of the devices whose sessions it holds
(it looks every poll, 50 ms).

This process keeps no session: it unlocks the keys once (the workers inherit them),
serves the metrics (the sum of the workers', each reporting its counters every
REPORT_S), forwards SIGTERM / SIGINT (stop) and SIGHUP (reload the keys) to the workers,
and stops them all if one dies.  Workers die with it (PR_SET_PDEATHSIG), so kill -9 of
this process stops the gateway as it stops a single-process one.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from sealink_gateway.config import Config

logger = logging.getLogger("sealink_gateway")

SO_ATTACH_REUSEPORT_CBPF = 51  # linux/asm-generic/socket.h
PR_SET_PDEATHSIG = 1  # linux/prctl.h
REPORT_S = 0.25  # how often a worker sends its metrics to the parent
STOP_S = 20.0  # a worker still running this long after it was asked to stop is killed
# Gauges every worker reads from the shared store: the parent shows one worker's value
# (the largest), not the sum.
SHARED_GAUGES = {"sealink_downlink_queue_depth"}


class _SockFilter(ctypes.Structure):  # struct sock_filter (linux/filter.h)
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):  # struct sock_fprog
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def steering_program(count: int) -> list[tuple[int, int, int, int]]:
    """Classic BPF, run by the kernel on each datagram of a SO_REUSEPORT group (the
    packet starts at the UDP payload): the index of the socket to take it."""
    return [
        (0x28, 0, 0, 1),      # BPF_LD | BPF_H | BPF_ABS: A = frame[1] << 8 | frame[2]
        (0x94, 0, 0, count),  # BPF_ALU | BPF_MOD | BPF_K: A %= count
        (0x16, 0, 0, 0),      # BPF_RET | BPF_A: socket A of the group
    ]


def shard_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` UDP sockets bound to host:port in one SO_REUSEPORT group, in order (the
    kernel numbers a group's sockets in the order they joined), steered by session id."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            address = sock.getsockname()  # port 0: the others join the one it got
        program = (_SockFilter * 3)(*(_SockFilter(*i) for i in steering_program(count)))
        fprog = _SockFprog(len(program), program)
        sockets[0].setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF,
                              bytes(memoryview(fprog).cast("B")))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _die_with_parent() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _snapshot(collector) -> list[tuple[str, str, str, list[tuple[str, dict, float]]]]:
    return [(m.name, m.type, m.documentation,
             [(s.name, dict(s.labels), s.value) for s in m.samples])
            for m in collector.collect()]


def send_metrics(gateway, conn: Connection) -> bool:
    """In a worker: its metrics, now, to the parent (False: the parent is gone)."""
    from sealink_gateway.metrics import GatewayCollector

    try:
        conn.send(_snapshot(GatewayCollector(gateway)))
    except (BrokenPipeError, OSError):
        return False
    return True


async def report_metrics(gateway, conn: Connection) -> None:
    """In a worker: its metrics to the parent, every REPORT_S, until cancelled."""
    while send_metrics(gateway, conn):
        await asyncio.sleep(REPORT_S)


class WorkersCollector:
    """The parent's metrics: every worker's, summed (SHARED_GAUGES: the largest), and
    sealink_worker_messages{worker} beside them."""

    def __init__(self):
        self.latest: dict[int, list] = {}
        self.lock = threading.Lock()

    def collect(self):
        with self.lock:
            latest = dict(self.latest)
        families: dict[str, Metric] = {}
        totals: dict[tuple, float] = {}
        for snapshot in latest.values():
            for name, kind, doc, samples in snapshot:
                families.setdefault(name, Metric(name, doc, kind))
                for sample, labels, value in samples:
                    key = (name, sample, tuple(sorted(labels.items())))
                    if name in SHARED_GAUGES:
                        totals[key] = max(totals.get(key, value), value)
                    else:
                        totals[key] = totals.get(key, 0.0) + value
        for (name, sample, labels), value in sorted(totals.items()):
            families[name].add_sample(sample, dict(labels), value)
        yield from families.values()
        per_worker = CounterMetricFamily("sealink_worker_messages",
                                         "Uplinks committed, by worker", labels=["worker"])
        up = GaugeMetricFamily("sealink_worker_up", "Workers reporting", value=len(latest))
        for index, snapshot in sorted(latest.items()):
            value = sum(v for name, _, _, samples in snapshot if name == "sealink_messages"
                        for s, labels, v in samples
                        if s == "sealink_messages_total" and labels.get("direction") == "up")
            per_worker.add_metric([str(index)], value)
        yield per_worker
        yield up

    def receive(self, conns: dict[Connection, int], stop: threading.Event) -> None:
        while not stop.is_set() and conns:
            for conn in wait(list(conns), timeout=0.2):
                try:
                    snapshot = conn.recv()
                except (EOFError, OSError):
                    conns.pop(conn, None)
                    continue
                with self.lock:
                    self.latest[conns[conn]] = snapshot


def _worker(cfg: Config, index: int, count: int, keys, sockets: dict[int, socket.socket],
            conn: Connection, passphrase: Callable[[], bytes] | None) -> None:
    _die_with_parent()
    from sealink_gateway.run import serve, setup_logging

    setup_logging(cfg.log_level, worker=index)
    try:
        asyncio.run(serve(cfg, passphrase=passphrase, keys=keys, shard=(index, count),
                          bound=sockets, report=conn))
    except KeyboardInterrupt:
        pass


def serve_workers(cfg: Config, count: int,
                  passphrase: Callable[[], bytes] | None = None) -> int:
    """Run the gateway on `count` worker processes until SIGTERM / SIGINT; returns the
    exit status (0: stopped as asked; 1: a worker died)."""
    from sealink_gateway.run import load_keys
    from sealink_gateway.store import Store

    store = Store(cfg.database)  # closed before the workers start: each opens its own
    try:
        keys = load_keys(cfg, store, passphrase)
    finally:
        store.close()
    groups = {j: shard_sockets(t.host, t.port, count)
              for j, t in enumerate(cfg.transports) if t.scheme == "udp"}
    context = multiprocessing.get_context("fork")  # the workers inherit keys and sockets
    workers, conns = [], {}
    for i in range(count):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_worker, name=f"sealink-worker-{i}",
            args=(cfg, i, count, keys, {j: g[i] for j, g in groups.items()}, sender,
                  passphrase))
        process.start()
        sender.close()
        workers.append(process)
        conns[receiver] = i
    for group in groups.values():
        for sock in group:
            sock.close()  # the workers hold them
    collector = WorkersCollector()
    stopping = threading.Event()
    receiver_thread = threading.Thread(target=collector.receive, args=(conns, stopping),
                                       name="metrics-receiver", daemon=True)
    receiver_thread.start()
    metrics_server = None
    if cfg.metrics_host:
        from prometheus_client import start_http_server
        from prometheus_client.registry import CollectorRegistry

        registry = CollectorRegistry()
        registry.register(collector)
        metrics_server, _ = start_http_server(cfg.metrics_port, addr=cfg.metrics_host,
                                              registry=registry)
    logger.info("workers %s started: udp:// sharded by session id over %d processes",
                [w.pid for w in workers], count)

    asked = threading.Event()

    def forward(signum, _frame):
        if signum != signal.SIGHUP:
            asked.set()
        for w in workers:
            if w.is_alive():
                os.kill(w.pid, signal.SIGTERM if signum == signal.SIGINT else signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    status = 0
    asked_at = None
    while any(w.is_alive() for w in workers):
        # (Only the live ones: a dead worker's sentinel stays ready, and would make this
        # loop spin while the others stop.)
        wait([w.sentinel for w in workers if w.is_alive()], timeout=0.5)
        dead = [w for w in workers if not w.is_alive() and w.exitcode != 0]
        if dead and not asked.is_set():
            logger.error("worker %s exited with %s: stopping the gateway",
                         dead[0].name, dead[0].exitcode)
            status = 1
            asked.set()
            for w in workers:
                if w.is_alive():
                    os.kill(w.pid, signal.SIGTERM)
        if asked.is_set():
            asked_at = asked_at or time.monotonic()
            if time.monotonic() - asked_at > STOP_S:
                for w in workers:
                    if w.is_alive():
                        logger.error("worker %s did not stop in %.0f s: killed", w.name,
                                     STOP_S)
                        w.kill()
                status = 1
    for w in workers:
        w.join(5)
    stopping.set()
    if metrics_server is not None:
        metrics_server.shutdown()
    logger.info("stopped")
    return status
