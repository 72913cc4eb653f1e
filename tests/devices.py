"""Run code on real MicroPython firmware from pytest.

Three kinds of target, one interface (`exec(code) -> stdout`):

- `CPythonDevice`: this interpreter, in process (the gateway's side).
- `UnixDevice`: a unix-port MicroPython process (build/UNIX or build/UNIX_STOCK) running
  a small line-oriented runner on stdin/stdout; the process lives for the whole test
  module, so state (imported modules, defined helpers) persists between calls.
- `QemuDevice`: a QEMU guest (build/QEMU_*/firmware.elf) booted with the qemu port's
  standard command line and `-serial pty`, driven over the raw REPL with mpremote's
  serial transport, exactly as a user drives a board.

Every wait is bounded: boot, each exec and shutdown have timeouts.
"""

from __future__ import annotations

import base64
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
LIB = ROOT / "lib"
if str(ROOT) not in sys.path:  # sim/ (the benchmarks import this module too)
    sys.path.insert(0, str(ROOT))

from sim import qemu as sim_qemu  # noqa: E402


class DeviceError(Exception):
    """The code raised on the device; `output` holds its traceback."""

    def __init__(self, output: str):
        super().__init__(output)
        self.output = output


# Read lines from stdin, each a base64-encoded block of Python, run each, and finish
# every reply with a sentinel line so the host knows where the output ends.
_UNIX_RUNNER = r"""
import sys, binascii, gc
def _run():
    g = {"__name__": "__device__"}
    while True:
        line = sys.stdin.readline()
        if not line:
            break
        code = binascii.a2b_base64(line.strip()).decode()
        line = None
        gc.collect()  # the runner's own garbage must not fragment a small heap
        try:
            exec(code, g)
            sys.stdout.write("\x04OK\n")
        except BaseException as e:
            sys.print_exception(e)
            sys.stdout.write("\x04ERR\n")
_run()
"""


class CPythonDevice:
    """The same interface in this process: the protocol core under CPython."""

    name = "cpython"

    def __init__(self):
        from sealink import crypto

        self.namespace: dict = {"__name__": "__device__"}
        # The crypto backend is this process's: what the device switches to, close()
        # switches back (the tests after it run on the backend they expect).
        self._backend = crypto.BACKEND

    def exec(self, code: str, timeout: float | None = None) -> str:
        import contextlib
        import io
        import traceback

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                exec(code, self.namespace)
            except BaseException:
                traceback.print_exc(file=out)
                raise DeviceError(out.getvalue()) from None
        return out.getvalue()

    def close(self) -> None:
        from sealink import crypto

        self.namespace.clear()
        if crypto.BACKEND != self._backend:
            crypto.use_backend(self._backend)


class UnixDevice:
    name = "unix"

    def __init__(self, board: str = "UNIX", heapsize: str | None = None,
                 env: dict[str, str] | None = None, timeout: float = 120.0,
                 uds: Path | None = None, cwd: Path | None = None):
        self.board = board
        self.binary = BUILD / board / "micropython"
        if not self.binary.exists():
            raise FileNotFoundError(f"{self.binary} is missing: run `make firmware`")
        args = [str(self.binary)]
        if heapsize:
            args += ["-X", f"heapsize={heapsize}"]
        if uds:  # the DICE boot stage: measures the executable and cwd's boot files
            args += ["-X", f"uds={uds}"]
        args += ["-c", _UNIX_RUNNER]
        child_env = dict(os.environ)
        # Frozen modules come first on sys.path (".frozen"); MICROPYPATH adds lib/ so a
        # stock firmware (nothing frozen) finds the package the way a user's board would.
        child_env["MICROPYPATH"] = f".frozen:{LIB}"
        child_env.update(env or {})
        self.timeout = timeout
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=child_env, bufsize=0,
                                     cwd=cwd)

    def exec(self, code: str, timeout: float | None = None) -> str:
        self.proc.stdin.write(base64.b64encode(code.encode()) + b"\n")
        self.proc.stdin.flush()
        out = bytearray()
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            end = out.find(b"\x04")
            if end >= 0 and out.endswith(b"\n") and out[end:].count(b"\n") >= 1:
                status = out[end + 1:].strip()
                text = out[:end].decode(errors="replace")
                if status == b"OK":
                    return text
                raise DeviceError(text)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.board}: no reply in time; got {bytes(out)!r}")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise DeviceError(f"{self.board} exited: {out.decode(errors='replace')}")
                out += chunk

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def qemu_command(board: str, icount: int | None = None, flash: Path | None = None,
                 uds: Path | None = None, monitor: Path | None = None) -> list[str]:
    """The qemu port's standard command line for `board`, serial on a pty."""
    return sim_qemu.command(board, "pty", icount, flash, uds, monitor)


class QemuDevice:
    def __init__(self, board: str, icount: int | None = None, boot_timeout: float = 30.0,
                 timeout: float = 300.0, flash: Path | None = None,
                 uds: Path | None = None, monitor: Path | None = None):
        from mpremote.transport_serial import SerialTransport

        self.board = board
        self.name = board
        self.timeout = timeout
        self.flash = flash
        self.monitor = monitor
        self.proc = subprocess.Popen(qemu_command(board, icount, flash, uds, monitor),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        pty = self._wait_for_pty(boot_timeout)
        self.pty = pty
        self.transport = SerialTransport(pty, baudrate=115200, timeout=timeout)
        self._settle(boot_timeout)
        self.transport.enter_raw_repl(soft_reset=False, timeout_overall=boot_timeout)

    def _settle(self, timeout: float) -> None:
        """Wait for the boot banner, then for a quiet line.

        Until pyserial puts the pty in raw mode, the pty's default line discipline
        echoes the guest's banner back into the guest's UART as input.  Interrupt
        whatever that typed and wait until the guest has been quiet for a moment.
        """
        serial = self.transport.serial
        deadline = time.monotonic() + timeout
        serial.write(b"\r\x03")
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            waiting = serial.in_waiting
            if waiting:
                serial.read(waiting)
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 0.3:
                return
        raise TimeoutError(f"{self.board}: the guest never went quiet")

    def _wait_for_pty(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        seen = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                seen += chunk
                m = re.search(rb"char device redirected to (/dev/pts/\d+)", seen)
                if m:
                    return m.group(1).decode()
        self.close()
        raise TimeoutError(f"{self.board}: QEMU printed no pty: {seen!r}")

    def release_console(self) -> str:
        """Close our end of the console (QEMU runs on) so another tool can open the pty;
        returns its path."""
        self.transport.close()
        return self.pty

    def guest_memory(self, address: int, size: int, into: Path) -> bytes:
        """`size` bytes of guest memory from `address`, read by QEMU's monitor (the
        guest does nothing and sees nothing)."""
        import socket

        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.monitor))
            s.settimeout(30)

            def prompt():
                seen = b""
                while not seen.endswith(b"(qemu) "):
                    chunk = s.recv(4096)
                    if not chunk:
                        raise ConnectionError(f"QEMU monitor closed: {seen!r}")
                    seen += chunk
                return seen

            prompt()
            s.sendall(f'pmemsave {address} {size} "{into}"\n'.encode())
            answer = prompt()
            if not into.exists():
                raise RuntimeError(f"pmemsave failed: {answer[-300:]!r}")
        return into.read_bytes()

    def power_cut(self) -> None:
        """Kill QEMU at once: whatever the guest was writing stops mid-way."""
        self.proc.kill()
        self.proc.wait(10)
        self.close()

    def exec(self, code: str, timeout: float | None = None) -> str:
        from mpremote.transport import TransportExecError

        try:
            out, err = self.transport.exec_raw(code, timeout=timeout or 10)
            if err:
                raise TransportExecError(out, err.decode(errors="replace"))
        except TransportExecError as e:
            raise DeviceError(e.error_output) from None
        return out.decode(errors="replace").replace("\r\n", "\n")

    def close(self) -> None:
        try:
            self.transport.close()
        except Exception:
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
