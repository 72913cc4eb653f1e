"""A software TPM 2.0 for the tests: swtpm (Debian package swtpm) on loopback, started
with its own state directory and stopped afterwards.  tpm2-tools reach it through the
TCTI string `swtpm:host=127.0.0.1,port=N` (docs/key-custody.md)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


def _free_ports() -> tuple[int, int]:
    # swtpm takes the server port and the control port; look for two adjacent free ones.
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port, port + 1
    raise RuntimeError("no two adjacent free ports on loopback")


class SwTpm:
    def __init__(self, state: Path):
        state.mkdir(parents=True, exist_ok=True)
        self.state = state
        self.port, self.ctrl = _free_ports()
        self._launch()

    def _launch(self) -> None:
        exe = shutil.which("swtpm") or "/usr/bin/swtpm"
        self.proc = subprocess.Popen(
            [exe, "socket", "--tpm2", "--tpmstate", f"dir={self.state}",
             "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
             "--ctrl", f"type=tcp,port={self.ctrl},bindaddr=127.0.0.1",
             "--flags", "not-need-init,startup-clear"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"swtpm exited: {self.proc.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError("swtpm did not start")

    def reboot(self) -> None:
        """Stop and start again on the same state and ports (the machine rebooted: the
        owner seed persists, the PCRs start over)."""
        self.stop()
        self._launch()

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def tool(self, *args: str) -> str:
        """Run a tpm2-tools command against this TPM."""
        import os

        out = subprocess.run(list(args), capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, TPM2TOOLS_TCTI=self.tcti))
        if out.returncode != 0:
            raise RuntimeError(f"{args[0]}: {out.stderr}")
        return out.stdout

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
