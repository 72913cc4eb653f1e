"""A real MQTT broker (mosquitto, from Debian) on a free loopback port, for the runs
and the tests that need one: the ChirpStack integration's broker in the fleet, the
application bridge in the tests."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path


class BrokerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """mosquitto on a free loopback port.  persistent: its state (sessions, queued
    messages) is saved in workdir when it stops, and restart() finds it again, as a
    broker restarted for maintenance does."""

    def __init__(self, workdir: Path, persistent: bool = False):
        self.exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(self.exe).exists():
            raise BrokerError("mosquitto is not installed (make installs it)")
        self.port = free_port()
        self.conf = Path(workdir) / "mosquitto.conf"
        # Unbounded queues: by default mosquitto drops QoS 1 messages beyond 1,000 queued
        # for a client that is offline or slow to acknowledge, and the runs and tests
        # count every message (an application in the test's own, loaded, process is slow).
        conf = f"listener {self.port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
        if persistent:
            # (Run as root, mosquitto becomes the user named here: the one who owns workdir.)
            conf += (f"persistence true\npersistence_location {Path(workdir).resolve()}/\n"
                     f"user {getpass.getuser()}\n")
        self.conf.write_text(conf)
        self._start()

    def _start(self) -> None:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError("mosquitto did not start")

    def restart(self) -> None:
        """Stop (SIGTERM: a persistent broker saves its state) and start on the same port."""
        self.stop()
        self._start()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
