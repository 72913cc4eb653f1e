"""`[gateway] workers = N` (gateway/workers.py): the gateway on several processes,
udp:// sharded by session id in the kernel (SO_REUSEPORT with a BPF program), one
SQLite file, the metrics summed by the parent.  Real processes, a real mosquitto, real
sockets on loopback."""

import asyncio
import base64
import json
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request

import aiomqtt
import psutil
from test_gateway_process import SEALINK, GatewayProcess, _free_port
from test_gateway_service import UdpDevice

from sealink import crypto
from sealink.device import credential_fields
from sealink_gateway.workers import shard_sockets


def _frame(sid: int, body: bytes = b"x" * 20) -> bytes:
    return bytes((0x40, sid >> 8, sid & 0xFF)) + body


def test_the_kernel_steers_each_datagram_to_the_socket_of_its_session_id():
    group = shard_sockets("127.0.0.1", 0, 3)
    port = group[0].getsockname()[1]
    try:
        assert {s.getsockname()[1] for s in group} == {port}
        for s in group:
            s.settimeout(0.05)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            sids = [1, 2, 3, 0x7FFF, 0x8000, 0xFFFF, *range(100, 130)]
            for sid in sids:
                client.sendto(_frame(sid), ("127.0.0.1", port))
            client.sendto(b"\x40", ("127.0.0.1", port))  # too short to name a session
            got: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
            deadline = time.monotonic() + 10
            while sum(map(len, got.values())) < len(sids) + 1 and time.monotonic() < deadline:
                for i, s in enumerate(group):
                    try:
                        got[i].append(s.recv(64))
                    except TimeoutError:
                        pass
        for i in range(3):
            want = [_frame(sid) for sid in sids if sid % 3 == i] + ([b"\x40"] if i == 0 else [])
            assert got[i] == want, i
    finally:
        for s in group:
            s.close()


class WorkersProcess(GatewayProcess):
    """`sealink gateway` with workers = 2 on a fixed udp:// port."""

    def __init__(self, tmp_path, mqtt_port, workers=2):
        self.metrics_port = _free_port()
        self.port = _free_port()
        self.config = tmp_path / "gateway.toml"
        self.config.write_text(
            f'[gateway]\ndatabase = "state.db"\nlog_level = "INFO"\nworkers = {workers}\n'
            f'[[transport]]\nurl = "udp://127.0.0.1:{self.port}?mtu=222"\n'
            f'[mqtt]\nurl = "mqtt://127.0.0.1:{mqtt_port}"\n'
            f'[metrics]\nlisten = "127.0.0.1:{self.metrics_port}"\n')
        self.db = tmp_path / "state.db"
        self.cpu_s = 0.0
        self.proc = subprocess.Popen([SEALINK, "gateway", "--config", str(self.config)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.log = []
        self._buf = b""
        for _ in range(workers):
            self._line_matching("listening", 30)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(60)

    def wait(self, timeout):
        """The exit status, reading the logs meanwhile (a full pipe would block it)."""
        parent = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + timeout
        while True:
            try:  # the parent's own CPU time (not its children's), last seen alive
                self.cpu_s = sum(parent.cpu_times()[:2])
            except psutil.Error:
                pass
            try:
                _, err = self.proc.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    raise
        self.log += [json.loads(x) for x in (self._buf + err).decode().splitlines()
                     if x.strip()]
        return self.proc.returncode

    def metrics(self) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                      timeout=10).read().decode()

    def metric(self, line_start: str) -> float:
        for line in self.metrics().splitlines():
            if line.startswith(line_start + " "):
                return float(line.split()[1])
        return 0.0


def test_gateway_on_two_workers_enrolls_reconnects_and_delivers(tmp_path, mosquitto):
    gw = WorkersProcess(tmp_path, mosquitto)
    try:
        workers = psutil.Process(gw.proc.pid).children()
        assert len(workers) == 2
        made = gw.cli("enroll", "create", "--json", "--gateway-key", str(tmp_path / "gateway.key"))
        gw_pub = bytes.fromhex(json.loads(made)["gateway_key"])
        # First contacts under ids of both parities: each lands on one worker, which
        # gives the device a session id of its own shard.
        first_sids = [0x8000 + 2 * i + (i % 2) for i in range(6)]

        async def scenario():
            async with aiomqtt.Client("127.0.0.1", mosquitto) as app:
                await app.subscribe("sealink/+/up", qos=1)
                devices = []
                for first in first_sids:
                    token = json.loads(gw.cli("enroll", "create", "--json"))["token"]
                    secret = crypto.random_bytes(32)
                    dev = await UdpDevice(secret, ("127.0.0.1", gw.port), first,
                                          token=token.encode()).open()
                    await dev.connect()
                    await dev.pump(lambda d=dev: d.channel.credential is not None)
                    sid, _ = credential_fields(dev.channel.credential)
                    assert sid % 2 == first % 2, (hex(first), sid)
                    dev.close()
                    # Reconnect under the session id it was given (KK), on its shard.
                    kk = await UdpDevice(secret, ("127.0.0.1", gw.port), sid, rs=gw_pub).open()
                    await kk.connect()
                    assert kk.channel.state == "established", kk.rejects
                    devices.append(kk)
                for n in range(5):
                    for i, dev in enumerate(devices):
                        dev.send(b"reading %d of %d" % (n, i))
                got = set()
                async with asyncio.timeout(30):
                    async for msg in app.messages:
                        got.add(base64.b64decode(json.loads(msg.payload)["payload"]))
                        if len(got) == 5 * len(devices):
                            break
                assert got == {b"reading %d of %d" % (n, i) for n in range(5)
                               for i in range(len(devices))}
                # A command through MQTT (worker 0) reaches a device held by worker 1.
                odd = next(d for d in devices if d.channel.sid % 2 == 1)
                device_id = json.loads(gw.cli("device", "list", "--json"))
                device_id = next(d["id"] for d in device_id if d["sid"] == odd.channel.sid)
                await app.publish(f"sealink/{device_id}/down",
                                  json.dumps({"payload": base64.b64encode(b"blink").decode()}),
                                  qos=1)
                await odd.pump(lambda: b"blink" in odd.received, timeout=15)
                await asyncio.sleep(0.5)  # its ack, and the workers' next report
                for dev in devices:
                    dev.close()

        asyncio.run(asyncio.wait_for(scenario(), 120))
        # The parent's metrics: the workers' summed, and each one's share.
        assert gw.metric('sealink_messages_total{direction="up"}') == 30
        assert gw.metric('sealink_messages_total{direction="down_acked"}') == 1
        assert gw.metric("sealink_worker_up") == 2
        shares = [gw.metric(f'sealink_worker_messages_total{{worker="{i}"}}') for i in (0, 1)]
        assert sum(shares) == 30 and all(shares), shares
        with sqlite3.connect(gw.db) as db:
            assert db.execute("SELECT count(*) FROM uplinks").fetchone()[0] == 30
    finally:
        rc = gw.stop()
    assert rc == 0
    assert {e.get("worker") for e in gw.log if e["message"].startswith("listening")} == {0, 1}
    assert not any(w.is_running() for w in workers)


def test_a_worker_that_dies_stops_the_gateway(tmp_path, mosquitto):
    gw = WorkersProcess(tmp_path, mosquitto)
    workers = psutil.Process(gw.proc.pid).children()
    workers[1].send_signal(signal.SIGKILL)
    try:
        assert gw.wait(60) == 1
    finally:
        gw.proc.kill()  # (nothing left running should this fail)
    # While the other worker stopped, the parent waited, and did not spin.
    assert gw.cpu_s < 2.0, gw.cpu_s
    assert any("exited with -9: stopping the gateway" in e["message"] for e in gw.log)
    assert not any("did not stop" in e["message"] for e in gw.log), gw.log
    assert not any(w.is_running() for w in workers)


def test_killing_the_parent_kills_its_workers(tmp_path, mosquitto):
    gw = WorkersProcess(tmp_path, mosquitto)
    workers = psutil.Process(gw.proc.pid).children()
    gw.proc.send_signal(signal.SIGKILL)
    gw.wait(10)
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive


def test_workers_must_be_a_small_whole_number(tmp_path):
    for bad in ("0", "65", "1.5", '"2"', "true"):
        config = tmp_path / "gateway.toml"
        config.write_text(f'[gateway]\nworkers = {bad}\n'
                          '[[transport]]\nurl = "udp://127.0.0.1:0"\n')
        out = subprocess.run([SEALINK, "gateway", "--config", str(config), "check"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode != 0 and "workers must be a whole number" in out.stderr, bad
