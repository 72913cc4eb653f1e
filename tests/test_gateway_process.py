"""`sealink gateway` as operators run it: a real process with a config file, a real
mosquitto broker started by the test, Prometheus metrics over HTTP, JSON logs, and a
graceful stop on SIGTERM."""

import asyncio
import base64
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiomqtt
import pytest
from test_gateway_service import UdpDevice, _first_contact_sid

from sealink import crypto
from sealink_gateway.authority import verify

SEALINK = str(Path(sys.executable).parent / "sealink")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mosquitto(tmp_path):
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("mosquitto did not start")
    yield port
    proc.terminate()
    proc.wait(10)


class GatewayProcess:
    def __init__(self, tmp_path, mqtt_port):
        self.metrics_port = _free_port()
        self.config = tmp_path / "gateway.toml"
        self.config.write_text(
            '[gateway]\ndatabase = "state.db"\nlog_level = "DEBUG"\n'
            '[[transport]]\nurl = "udp://127.0.0.1:0?mtu=51"\n'
            f'[mqtt]\nurl = "mqtt://127.0.0.1:{mqtt_port}"\n'
            f'[metrics]\nlisten = "127.0.0.1:{self.metrics_port}"\n')
        self.db = tmp_path / "state.db"
        self.proc = subprocess.Popen([SEALINK, "gateway", "--config", str(self.config)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.log = []
        line = self._line_matching("listening", 20)
        self.port = json.loads(line["message"].split(" ", 1)[1].split(";")[0])["udp"]

    def _line_matching(self, text, timeout):
        deadline = time.monotonic() + timeout
        buf = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stderr], [], [], 0.2)
            if not ready:
                continue
            chunk = os.read(self.proc.stderr.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                entry = json.loads(raw)
                self.log.append(entry)
                if text in entry["message"]:
                    return entry
        raise TimeoutError(f"no log line with {text!r}: {self.log}")

    def cli(self, *args):
        out = subprocess.run([SEALINK, "--db", str(self.db), *args], capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(15)
        rest = self.proc.stderr.read().decode()
        self.log += [json.loads(x) for x in rest.splitlines() if x.strip()]
        return rc


def test_gateway_process_with_mqtt_and_metrics(tmp_path, mosquitto):
    gw = GatewayProcess(tmp_path, mosquitto)
    try:
        token = json.loads(gw.cli("enroll", "create", "--attr", "site=pier", "--json"))["token"]
        secret = crypto.random_bytes(32)

        async def scenario():
            async with aiomqtt.Client("127.0.0.1", mosquitto) as app:
                await app.subscribe("sealink/+/up", qos=1)
                dev = await UdpDevice(secret, ("127.0.0.1", gw.port), _first_contact_sid(),
                                      token=token.encode(), mtu=51).open()
                await dev.connect()
                await dev.pump(lambda: dev.channel.credential is not None)
                dev.send(b"\x01\x02 telemetry")
                msg = await asyncio.wait_for(anext(aiter(app.messages)), 10)
                up = json.loads(msg.payload)
                assert base64.b64decode(up["payload"]) == b"\x01\x02 telemetry"
                assert up["attributes"] == {"site": "pier"}
                device_id = up["device"]
                assert str(msg.topic) == f"sealink/{device_id}/up"
                # An application sends a command back through MQTT.
                await app.publish(f"sealink/{device_id}/down",
                                  json.dumps({"payload": base64.b64encode(b"reboot").decode()}),
                                  qos=1)
                await app.publish(f"sealink/{device_id}/down", b"not json", qos=1)
                await dev.pump(lambda: b"reboot" in dev.received)
                await asyncio.sleep(0.3)
                dev.close()
                return device_id, dev.channel.credential

        device_id, credential = asyncio.run(asyncio.wait_for(scenario(), 60))
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics",
                                         timeout=10).read().decode()
        assert 'sealink_messages_total{direction="up"} 1.0' in metrics
        assert 'sealink_handshakes_total{outcome="completed"} 1.0' in metrics
        assert 'sealink_drops_total{reason="bad_downlink"} 1.0' in metrics
        assert "sealink_sessions_active 1.0" in metrics
        listed = json.loads(gw.cli("device", "list", "--json"))
        assert [d["id"] for d in listed] == [device_id]
    finally:
        rc = gw.stop()
    assert rc == 0
    assert any("stopped" == e["message"] for e in gw.log)
    # Logs are JSON lines and never carry a key, a token or a payload.
    text = json.dumps(gw.log)
    assert token not in text and "telemetry" not in text and "reboot" not in text
    assert secret.hex() not in text and credential.hex() not in text
    assert verify(credential, _authority_key(tmp_path))["attributes"] == {"site": "pier"}


def _authority_key(tmp_path):
    from sealink_gateway.authority import Authority

    return Authority.load_or_create(tmp_path / "authority.pem").public_key


def test_gateway_refuses_a_bad_config(tmp_path):
    bad = tmp_path / "bad.toml"
    for text, message in [
        ("[gateway]\n", "at least one [[transport]]"),
        ('[[transport]]\nurl = "carrier-pigeon://loft"\n', "not available"),
        ('[[transport]]\nurl = "serial-at:///dev/ttyUSB0?module=hc12"\n', "not one of"),
        ('[[transport]]\nurl = "serial-at:///dev/ttyUSB0?sf=13"\n', "sf must be"),
        ('[[transport]]\nurl = "serial-at://?sf=7"\n', "no serial device"),
        ('[[transport]]\nurl = "ble://bluez?peers=F5:F4:F3:F2:F1:F0"\n', "not one of"),
        ('[[transport]]\nurl = "ble://bumble?peers=F5:F4:F3:F2:F1:F0"\n', "needs hci="),
        ('[[transport]]\nurl = "ble://bleak?peers=F5:F4"\n', "not a BLE address"),
        ('[[transport]]\nurl = "udp://nowhere"\n', "not HOST:PORT"),
        ('[[transport]]\nurl = "udp://127.0.0.1:1700?mtu=5"\n', "mtu must be"),
        ('[[transport]]\nurl = "udp://127.0.0.1:1"\n[mqtt]\nurl = "http://x:1"\n', "mqtt://"),
        ("this is = = not toml", "bad.toml"),
        ('[surprise]\n[[transport]]\nurl = "udp://127.0.0.1:1"\n', "unknown section"),
    ]:
        bad.write_text(text)
        for args in (["gateway", "--config", str(bad), "check"],
                     ["gateway", "--config", str(bad)]):
            r = subprocess.run([SEALINK, *args], capture_output=True, text=True, timeout=30)
            assert r.returncode != 0 and message in r.stderr, (text, r.stderr)
