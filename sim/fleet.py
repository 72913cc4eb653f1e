"""The fleet launcher: a gateway, the modeled LoRa air with a concentrator speaking
Semtech UDP to it, and N devices booting the real firmware (QEMU Cortex-M3, QEMU RV32,
unix port), each with a modeled RAK3172 module on its UART.

    .venv/bin/python -m sim.fleet sim/scenarios/demo.toml [--out build/demo]

A scenario (TOML) says how many devices of each board, their spreading factor and
distance, the air's loss and corruption, and the time compression.  Every device is
enrolled with its own one-time token, handshakes, sends telemetry, receives a command
and acknowledges it.  The run ends with a summary table, `summary.json`, a PNG plot of
airtime per device over (modeled) time and a pcap of the air.  Exit status 1 when any
device did not finish.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from sealink import crypto
from sealink.lora import time_on_air_us
from sealink_gateway import attest, regions
from sealink_gateway.authority import Authority
from sealink_gateway.service import Gateway, HandshakeLimiter
from sealink_gateway.store import Store
from sealink_gateway.transport.chirpstack import ChirpStackTransport
from sealink_gateway.transport.semtech_udp import SemtechUdpTransport
from sim import qemu, scenario
from sim.attacker import Attacker
from sim.broker import Mosquitto
from sim.concentrator import EU868_CHANNELS, Concentrator, busiest_window_s
from sim.lora import Clock, LoRaAir, Params, Radio
from sim.network_server import NetworkServer, OtaaDevice
from sim.rak3172 import Rak3172Model
from sim.scenario import ScenarioError

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
COMMAND = b"led=on"
APPLICATION = "5f2c8a7e-sealink-fleet"  # the ChirpStack application of LoRaWAN devices
FPORT = 200  # the FPort that carries Sealink frames over LoRaWAN
# EU868's RX2 channel at DR3 (SF9, as The Things Network configures it): a downlink
# there takes an eighth of DR0's time on air, so the 10 % sub-band carries the fleet's
# answers with room to spare.  (Every device of the demo closes an SF9 link to the
# gateway's 14 dBm in the model.)
RX2 = (869_525_000, 9)
RX2_DR = 3


@dataclass
class DeviceSpec:
    name: str
    board: str
    sf: int
    distance: float
    angle: float
    radio: str = "lora"
    freq: int = 868_100_000


@dataclass
class Scenario:
    name: str
    time_scale: float
    loss: float
    corrupt: float
    seed: int
    messages: int
    interval_s: float
    timeout_s: float
    rx1_delay_s: float
    stagger_s: float
    devices: list[DeviceSpec]
    garbage_uart: list[str] = field(default_factory=list)  # device names
    modem_error_rate: dict[str, float] = field(default_factory=dict)
    ble_drop: list[str] = field(default_factory=list)  # BLE devices whose link drops once
    ble_interval_ms: float = 30.0
    attacker: scenario.Attack | None = None  # an attacker on the air (sim/attacker.py)
    attested: bool = False  # QEMU devices boot with a flash and a UDS (DICE)
    modified: list[str] = field(default_factory=list)  # main.py changed after provisioning
    updated: list[str] = field(default_factory=list)  # unix: application updated after its run
    without_uds: list[str] = field(default_factory=list)  # no DICE identity
    rotation: scenario.Rotation | None = None  # the gateway key rotated mid-run


def load_scenario(path: Path) -> Scenario:
    """Parse and check a fleet scenario (sim/scenario.py); ScenarioError names the file,
    the line and the key of anything wrong."""
    spec = scenario.load(path, scenario.FleetFile)
    devices: list[DeviceSpec] = []
    for g in spec.group:
        sfs = g.sf if isinstance(g.sf, list) else [g.sf]
        for i in range(g.count):
            n = len(devices)
            name = f"{g.prefix or g.board.lower().replace('qemu_', '')}-{i + 1}"
            devices.append(DeviceSpec(name, g.board, sfs[i % len(sfs)], g.distance,
                                      2 * math.pi * n / 16, g.radio,
                                      EU868_CHANNELS[n % len(EU868_CHANNELS)]))
    names = {d.name for d in devices}
    if spec.attestation is not None:
        boards = {d.name: d.board for d in devices}
        for key, listed, allowed in (
                ("modified", spec.attestation.modified, {*qemu.MACHINES, "UNIX"}),
                ("updated", spec.attestation.updated, {"UNIX"}),
                ("without_uds", spec.attestation.without_uds, {*qemu.MACHINES, "UNIX"})):
            for name in listed:
                if boards.get(name) not in allowed:
                    line = scenario.line_of(path.read_text(), ("attestation", key))
                    raise ScenarioError(f"{path}:{line}: attestation.{key}: {name!r} is not "
                                        f"a {' or '.join(sorted(allowed))} device here")
    if spec.rotation is not None:
        lora = {d.name for d in devices if d.radio == "lora"}
        for name in spec.rotation.offline:
            if name not in lora:
                line = scenario.line_of(path.read_text(), ("rotation", "offline"))
                raise ScenarioError(f"{path}:{line}: rotation.offline: {name!r} is not a "
                                    "LoRa device here")
    f = spec.faults
    for key, listed in (("uart_garbage", f.uart_garbage),
                        ("modem_error_rate", list(f.modem_error_rate)),
                        ("ble_drop", f.ble_drop)):
        for name in listed:
            if name not in names:
                line = scenario.line_of(path.read_text(), ("faults", key))
                raise ScenarioError(f"{path}:{line}: faults.{key}: fault for unknown device "
                                    f"{name!r}")
    s = spec.scenario
    return Scenario(
        name=s.name or path.stem, time_scale=s.time_scale, loss=s.loss, corrupt=s.corrupt,
        seed=s.seed, messages=s.messages, interval_s=s.interval_s, timeout_s=s.timeout_s,
        rx1_delay_s=s.rx1_delay_s, stagger_s=s.stagger_s, devices=devices,
        garbage_uart=list(f.uart_garbage), ble_drop=list(f.ble_drop),
        ble_interval_ms=s.ble_interval_ms, modem_error_rate=dict(f.modem_error_rate),
        attacker=spec.attacker, attested=spec.attestation is not None,
        modified=list(spec.attestation.modified) if spec.attestation else [],
        updated=list(spec.attestation.updated) if spec.attestation else [],
        without_uds=list(spec.attestation.without_uds) if spec.attestation else [],
        rotation=spec.rotation)


def firmware_versions(boards: set[str]) -> dict[str, str]:
    """What ran: the package versions, and a digest of each firmware image used."""
    import hashlib

    from sim.cell import versions

    out = versions()
    try:
        out["sealink_commit"] = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
            text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        out["sealink_commit"] = "unknown"
    for board in sorted(boards - {"CPYTHON"}):
        image = BUILD / board / ("micropython" if board == "UNIX" else "firmware.elf")
        if image.exists():
            out[f"firmware_{board}"] = hashlib.sha256(image.read_bytes()).hexdigest()[:16]
    return out


@dataclass
class DeviceRun:
    spec: DeviceSpec
    radio: Radio
    token: str
    gateway_key: bytes = b""  # provisioned with the token
    process: asyncio.subprocess.Process | None = None
    module: Rak3172Model | None = None
    device_id: str | None = None
    state: str = "booting"
    handshake_ms: int | None = None
    handshake_frames: int | None = None
    handshake_airtime_s: float | None = None
    uplinks: int = 0
    telemetry: int = 0
    sent: int = 0
    command_acked: bool = False
    result: str | None = None
    booted_at: float = 0.0
    finished_at: float | None = None
    stderr: bytes = b""
    task: asyncio.Task | None = None
    peripheral: object = None
    ble_drops: int = 0
    flash: Path | None = None  # QEMU with DICE: its flash image and UDS
    uds: Path | None = None
    lorawan: dict | None = None  # radio "lorawan": its ABP session, FPort, data rate
    handshake_down: int | None = None


_DEVICE_ID = ("import _sealink_crypto as c, binascii\n"
              "r = c.dice()\n"
              "print('DeviceID', binascii.hexlify(r[5]).decode() if r and r[0] == 2 else '-')\n")


async def _raw_repl(p: asyncio.subprocess.Process) -> None:
    await _read_until(p.stdout, b">>> ", 30)
    p.stdin.write(b"\r\x03\x03\x01")
    await _read_until(p.stdout, b"raw REPL; CTRL-B to exit\r\n>", 10)


async def _qemu_exec(board: str, flash: Path, uds: Path, code: str) -> bytes:
    """Boot a QEMU device, run `code` at its raw REPL, power it off: what it printed."""
    p = await asyncio.create_subprocess_exec(
        *qemu.command(board, "stdio", flash=flash, uds=uds), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        await _raw_repl(p)
        p.stdin.write(code.encode() + b"\x04")
        out = await _read_until(p.stdout, b"\x04>", 30)
    finally:
        p.kill()
        await p.wait()
    return out


async def provision_qemu(run: DeviceRun, store: Store, out: Path, modified: bool) -> None:
    """Manufacturing and provisioning, as `sealink device provision` does: a UDS and a
    blank flash, a first boot to read the DeviceID (registered with the gateway); for a
    `modified` device, a main.py written afterwards that nobody registered."""
    run.flash = qemu.make_flash(out / "keys" / f"{run.spec.name}-flash.img")
    run.uds = qemu.make_uds(out / "keys" / f"{run.spec.name}-uds.bin")
    printed = await _qemu_exec(run.spec.board, run.flash, run.uds, _DEVICE_ID)
    device_id = bytes.fromhex(printed.split(b"DeviceID ")[1].split()[0].decode())
    store.provision(device_id, attest.ueid_for(device_id), run.spec.name)
    if modified:
        await _qemu_exec(run.spec.board, run.flash, run.uds,
                         "with open('main.py', 'w') as f:\n"
                         "    f.write('# changed after provisioning\\n')\n")


WINDOW_FRAMES = 4  # frames the gateway may send in one receive window (semtech-udp)


def rx_hold_ms(scenario: Scenario) -> int:
    """Wall milliseconds a P2P device keeps listening after an uplink: until RX2 (a
    second after RX1) has carried its window's frames, each at most the largest frame
    of RX2's data rate, with half a modeled second to spare."""
    largest = regions.region("EU868").rate(RX2_DR).max_phy
    window_s = WINDOW_FRAMES * time_on_air_us(largest, RX2[1]) / 1e6
    return math.ceil((scenario.rx1_delay_s + 1 + window_s + 0.5) * 1000 / scenario.time_scale)


def _app_call(run: DeviceRun, scenario: Scenario, keystore: str | None) -> str:
    args = (f"token={run.token.encode()!r}, gateway_key={run.gateway_key!r}, "
            f"sf={run.spec.sf}, freq={run.spec.freq}, "
            f"board={run.spec.board!r}, "
            f"messages={scenario.messages}, interval_ms={int(scenario.interval_s * 1000)}")
    if keystore:
        args += f", keystore={keystore!r}"
    if run.lorawan:
        args += f", lorawan={run.lorawan!r}"
    elif run.spec.radio == "lora":
        # Between its uplinks the module listens on the gateway's RX2 channel
        # (869.525 MHz, SF9, the 10 % sub-band), where every downlink comes, and stays
        # there through the receive windows after each uplink (rx_hold_ms, on the
        # device's wall clock).
        args += f", rx={RX2!r}, rx_hold_ms={rx_hold_ms(scenario)}"
    return f"import sealink.app\nsealink.app.run({args})\n"


UNIX_EXE = BUILD / "UNIX" / "micropython"


def _unix_args(run: DeviceRun) -> list[str]:
    if not UNIX_EXE.exists():
        raise FileNotFoundError(f"{UNIX_EXE} is missing: run `make firmware`")
    return [str(UNIX_EXE), *(["-X", f"uds={run.uds}"] if run.uds else [])]


async def _start_unix(run: DeviceRun, scenario: Scenario, out: Path) -> None:
    keystore = str(out / "keys" / f"{run.spec.name}.json")
    run.process = await asyncio.create_subprocess_exec(
        *_unix_args(run), "-c", _app_call(run, scenario, keystore),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=run.flash)


async def provision_unix(run: DeviceRun, store: Store, out: Path, modified: bool) -> None:
    """As provision_qemu for a unix device: its UDS file, a working directory for its
    boot files, its DeviceID read at a first run and registered."""
    run.flash = out / "keys" / f"{run.spec.name}-fs"
    run.flash.mkdir(exist_ok=True)
    run.uds = qemu.make_uds(out / "keys" / f"{run.spec.name}-uds.bin")
    p = await asyncio.create_subprocess_exec(
        *_unix_args(run), "-c", _DEVICE_ID, stdout=asyncio.subprocess.PIPE, cwd=run.flash)
    printed, _ = await asyncio.wait_for(p.communicate(), 30)
    device_id = bytes.fromhex(printed.split(b"DeviceID ")[1].split()[0].decode())
    store.provision(device_id, attest.ueid_for(device_id), run.spec.name)
    if modified:
        (run.flash / "main.py").write_text("# changed after provisioning\n")


async def _read_until(stream: asyncio.StreamReader, marker: bytes, timeout: float) -> bytes:
    return await asyncio.wait_for(stream.readuntil(marker), timeout)


async def _start_qemu(run: DeviceRun, scenario: Scenario) -> None:
    cmd = qemu.command(run.spec.board, "stdio", flash=run.flash, uds=run.uds)
    run.process = p = await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    # The console is the UART: boot to the REPL, enter raw REPL, start the application;
    # from "OK" on, the UART carries AT commands to the module.
    await _raw_repl(p)
    keystore = "keystore.json" if run.flash else None  # on its own flash
    p.stdin.write(_app_call(run, scenario, keystore).encode() + b"\x04")
    await _read_until(p.stdout, b"OK", 10)


class Fleet:
    def __init__(self, scenario: Scenario, out: Path, console: Console | None = None):
        self.scenario = scenario
        self.out = out
        self.console = console or Console()
        self.runs: list[DeviceRun] = []
        self.started = 0.0
        self.clock = Clock(scenario.time_scale)
        self.rotated_at: float | None = None  # modeled time of the key rotation
        self.broker: Mosquitto | None = None
        self.network_server: NetworkServer | None = None
        self.air = LoRaAir(self.clock, loss=scenario.loss, corrupt=scenario.corrupt,
                           seed=scenario.seed, pcap=out / "air.pcap")

    # --- the run ---------------------------------------------------------------------------

    async def run(self) -> dict:
        # `kill -USR1 <pid>`: where every task of the run is waiting, on stderr.
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump_tasks)
        out = self.out
        (out / "keys").mkdir(parents=True, exist_ok=True)
        for stale in ("gateway.db", "gateway.db-wal", "gateway.db-shm", "authority.pem"):
            (out / stale).unlink(missing_ok=True)
        for pattern in ("*.json", "*-flash.img", "*-uds.bin"):
            for stale in (out / "keys").glob(pattern):
                stale.unlink()
        for stale in (out / "keys").glob("*-fs"):
            shutil.rmtree(stale)
        self.store = Store(out / "gateway.db")
        # The P2P modules listen on the RX2 channel between their uplinks (they cannot
        # retune for a window on the fleet's compressed clock), so every downlink goes in
        # RX2, in the 10 % sub-band, and the frames of one answer may follow each other
        # (window_frames).  Strict class A, RX1 and RX2, is the cell's (sim/cell.py).
        transport = SemtechUdpTransport("127.0.0.1", 0, rx1_delay_s=self.scenario.rx1_delay_s,
                                        window_frames=WINDOW_FRAMES, rx1=False,
                                        rx2_dr=RX2_DR)
        transports = [transport]
        ble_specs = [d for d in self.scenario.devices if d.radio == "ble"]
        if ble_specs:
            from bumble.link import LocalLink

            from sealink_gateway.transport.ble import BleTransport, BumbleCentral
            from sim.ble import virtual_device

            # The gateway's BLE central on a bumble virtual controller; each BLE
            # device gets its own controller on the same virtual link.
            self.ble_link = LocalLink()
            self.ble_addresses = {d.name: f"F5:F4:F3:F2:F1:{i:02X}"
                                  for i, d in enumerate(ble_specs)}
            self.ble = BleTransport(BumbleCentral(virtual_device(
                self.ble_link, "gateway", "F0:F1:F2:F3:F4:F5")),
                list(self.ble_addresses.values()), reconnect_s=0.5)
            transports.append(self.ble)
        if any(d.radio == "lorawan" for d in self.scenario.devices):
            # A LoRaWAN network beside Sealink's own: its gateway hears the same air, its
            # network server publishes to a real broker, the Sealink gateway takes
            # application APPLICATION's events (chirpstack-mqtt://).
            self.broker = Mosquitto(out)
            transports.append(ChirpStackTransport("127.0.0.1", self.broker.port,
                                                  APPLICATION, fport=FPORT))
            self.network_server = NetworkServer(
                self.air, self.air.attach(Radio("lorawan-gateway", (30.0, 0.0), Params(sf=7))),
                ("127.0.0.1", self.broker.port), APPLICATION,
                rx1_delay_s=self.scenario.rx1_delay_s, join_delay_s=self.scenario.rx1_delay_s)
        self.gateway = Gateway(self.store, crypto.random_bytes(32),
                               Authority.load_or_create(out / "authority.pem"), transports,
                               HandshakeLimiter(rate=100, per_s=10.0), retry_ms=4000)
        await self.gateway.start()
        if self.scenario.attested:
            # The operator registers the firmware the build made (its reference values).
            for board in sorted({d.board for d in self.scenario.devices}
                                & {*qemu.MACHINES, "UNIX"}):
                ref = json.loads((BUILD / board / "reference.json").read_text())
                self.store.add_reference("firmware", bytes.fromhex(ref["firmware"]), "good",
                                         ref["version"], board)
        self.concentrator = Concentrator(self.air, self.air.attach(
            Radio("concentrator", (0.0, 0.0), Params(sf=7))), ("127.0.0.1", transport.port))
        await self.concentrator.start()
        if self.network_server is not None:
            await self.network_server.start()
        self.attacker = None
        if self.scenario.attacker is not None:
            self.attacker = Attacker.started(self.air, self.scenario.attacker,
                                             self.scenario.seed, EU868_CHANNELS)
        self.started = time.monotonic()
        self.clock.now()  # modeled time starts now
        watcher = asyncio.ensure_future(self._watch_uplinks())
        try:
            await asyncio.gather(*(self._launch(spec, i * self.scenario.stagger_s)
                                   for i, spec in enumerate(self.scenario.devices)))
            with Live(self._progress(), console=self.console, refresh_per_second=4,
                      transient=False) as live:
                deadline = time.monotonic() + self.scenario.timeout_s
                while time.monotonic() < deadline:
                    live.update(self._progress())
                    self._maybe_rotate()
                    if all(self._complete(r) for r in self.runs):
                        break
                    await asyncio.sleep(0.25)
                for r in self.runs:
                    if r.result is None:
                        r.result = "timeout"
                live.update(self._progress())
            summary = self._summary()
            # The run proper (what the modeled time covers); wall_s below adds the
            # rotation rounds and the updates.
            summary["run_wall_s"] = round(time.monotonic() - self.started, 2)
            if self.scenario.rotation is not None:
                summary["rotation"] = await self._follow_rotation()
                summary["ok"] = summary["ok"] and summary["rotation"]["ok"]
            summary["updates"] = [await self._update(r) for r in self.runs
                                  if r.spec.name in self.scenario.updated]
            summary["ok"] = summary["ok"] and all(u["ok"] for u in summary["updates"])
        finally:
            watcher.cancel()
            await self._shutdown()
        summary["wall_s"] = round(time.monotonic() - self.started, 2)
        summary["air"]["pcap_frames"] = self.air.pcap_frames
        return summary

    async def _launch(self, spec: DeviceSpec, delay_s: float) -> None:
        await asyncio.sleep(delay_s)  # devices power up one after another
        token, _ = self.store.create_token({"name": spec.name, "board": spec.board,
                                            "sf": str(spec.sf)}, 3600)
        pos = (spec.distance * math.cos(spec.angle), spec.distance * math.sin(spec.angle))
        radio = self.air.attach(Radio(spec.name, pos, Params(freq=spec.freq, sf=spec.sf)))
        run = DeviceRun(spec, radio, token, self.gateway.public_key)
        self.runs.append(run)
        if spec.radio == "lorawan":
            # Registered with the network server for over-the-air activation (AT+JOIN).
            device = OtaaDevice(crypto.random_bytes(8).hex(), bytes(8),
                                crypto.random_bytes(16), spec.name)
            self.network_server.add_otaa_device(device)
            run.lorawan = {"deveui": device.dev_eui.upper(), "appeui": "00" * 8,
                           "appkey": device.app_key.hex().upper(), "fport": FPORT,
                           "dr": regions.region("EU868").rate_of(spec.sf, 125).dr}
        if spec.radio == "ble":
            self.air.detach(radio)  # not on the LoRa air: its frames are counted
            run.task = asyncio.ensure_future(self._run_ble(run))
            return
        try:
            attested = self.scenario.attested and spec.name not in self.scenario.without_uds
            if spec.board == "UNIX":
                if attested:
                    await provision_unix(run, self.store, self.out,
                                         spec.name in self.scenario.modified)
                await _start_unix(run, self.scenario, self.out)
            else:
                if attested:
                    await provision_qemu(run, self.store, self.out,
                                         spec.name in self.scenario.modified)
                await _start_qemu(run, self.scenario)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as e:
            run.result = f"boot failed: {e.__class__.__name__}"
            run.state = "failed"
            return
        run.booted_at = time.monotonic()
        run.state = "handshaking"
        p = run.process
        run.module = Rak3172Model(self.air, radio, p.stdout, p.stdin,
                                  error_rate=self.scenario.modem_error_rate.get(spec.name, 0.0),
                                  seed=self.scenario.seed + len(self.runs),
                                  rx1_delay_s=self.scenario.rx1_delay_s,
                                  join_delay_s=self.scenario.rx1_delay_s,
                                  rx_margin_s=0.5)  # (10 ms of wall time at x50)
        run.module.start()
        if spec.name in self.scenario.garbage_uart:
            # Line noise towards the device: its driver counts and ignores it.
            run.module.garbage(b"\x00\xffnoise\r\n+EVT:RXP2P:-1:2:ZZ\r\nAT_MAYBE\r\n")
        asyncio.ensure_future(self._wait_exit(run))

    # --- rotation of the gateway key --------------------------------------------------------

    def _lora_runs(self) -> list[DeviceRun]:
        """The LoRa devices that keep what they learn across a power cycle: unix ones
        (their keystore is a file) and QEMU boards with a flash.  A board without one
        forgets its enrollment when powered off, rotation or not."""
        return [r for r in self.runs if r.spec.radio == "lora" and r.process is not None
                and (r.spec.board == "UNIX" or r.flash is not None)]

    def _maybe_rotate(self) -> None:
        """Rotate once every LoRa device has enrolled and the `offline` ones are off the
        air (their run finished): what `sealink keys rotate` and a SIGHUP do."""
        rot = self.scenario.rotation
        if rot is None or self.rotated_at is not None:
            return
        lora = [r for r in self.runs if r.spec.radio == "lora"]
        if len(lora) < sum(1 for d in self.scenario.devices if d.radio == "lora"):
            return
        if not all(r.device_id for r in lora) or any(
                r.result is None for r in lora if r.spec.name in rot.offline):
            return
        old = self.gateway.public_key
        self.store.adopt_gateway_keys(old, self.gateway.authority.public_key)
        until = time.time() + rot.grace_s
        self.gateway.rotate_static(crypto.random_bytes(32), until)
        self.store.rotate_gateway_key("static", old, self.gateway.public_key, until)
        self.store.audit("keys.rotate", role="static", old=old.hex(),
                         new=self.gateway.public_key.hex(), grace_until=until)
        for r in self.runs:
            r.gateway_key = self.gateway.public_key  # what provisioning gives from now on
        self.rotated_at = self.clock.now()
        self.console.print(f"[bold]gateway key rotated[/bold] at modeled "
                           f"{self.rotated_at:.0f} s; offline: {', '.join(rot.offline)}")

    def _followed(self) -> set[str]:
        """Devices whose latest authorized session is under the current gateway key (the
        gateway's own view: its store records sessions at the next group commit)."""
        gw, followed = self.gateway, set()
        for r in self._lora_runs():
            session = gw.sessions.get(gw._by_device.get(r.device_id, -1))
            if session is not None and session.channel.s.public == gw.public_key:
                followed.add(r.spec.name)
        return followed

    async def _follow_rotation(self) -> dict:
        """After the run: every LoRa device not yet seen under the new key is started
        again (a device that was told the new key reconnects under it; one that was
        offline reconnects under the old key, is told, and uses it at the next start)."""
        rot = self.scenario.rotation
        assert rot is not None
        self._maybe_rotate()  # (the run may have ended before the loop saw the moment)
        if self.rotated_at is None:
            return {"ok": False, "why": "the rotation never happened"}
        told_live = len({e["device_id"] for e in self.store.audit_log(100_000)
                         if e["event"] == "keys.announced"})
        rounds = 0
        while rounds < rot.rounds and self._followed() != {r.spec.name
                                                            for r in self._lora_runs()}:
            rounds += 1
            late = [r for r in self._lora_runs() if r.spec.name not in self._followed()]
            await asyncio.gather(*(self._again(r) for r in late))
        announced = [e["device_id"] for e in self.store.audit_log(100_000)
                     if e["event"] == "keys.announced"]
        names = {r.device_id: r.spec.name for r in self.runs}
        followed = self._followed()
        devices = [r.spec.name for r in self._lora_runs()]
        # The grace period ends: the old key is no longer held.
        self.gateway._retiring.clear()
        self.store.audit("keys.retire", role="static", devices_not_followed=sorted(
            set(devices) - followed))
        without_storage = sorted(r.spec.name for r in self.runs if r.spec.radio == "lora"
                                 and r not in self._lora_runs())
        return {"at_modeled_s": round(self.rotated_at, 1), "devices": len(devices),
                "without_storage": without_storage,
                "told_in_session": told_live, "told": sorted({names.get(d, d)
                                                              for d in announced}),
                "offline": list(rot.offline), "rounds": rounds,
                "followed": len(followed), "lost": sorted(set(devices) - followed),
                "same_devices": len(self.store.devices()) == len(self.runs),
                "ok": followed == set(devices)
                and len(self.store.devices()) == len(self.runs)}

    async def _again(self, run: DeviceRun) -> None:
        """Power a LoRa device off (a QEMU board idles in its REPL after its run) and on
        again, its storage kept, and let it run to the end: hello, telemetry, the
        command acknowledged."""
        if run.process is not None and run.process.returncode is None:
            run.process.kill()
            await run.process.wait()
        if run.module is not None:
            run.module.stop()
        run.token = ""  # spent: the device reconnects with what it kept (KK)
        run.telemetry, run.command_acked = 0, False
        if run.spec.board == "UNIX":
            await _start_unix(run, self.scenario, self.out)
        else:
            await _start_qemu(run, self.scenario)
        p = run.process
        run.module = Rak3172Model(self.air, run.radio, p.stdout, p.stdin,
                                  seed=self.scenario.seed + 2000 + len(self.runs))
        run.module.start()
        deadline = time.monotonic() + self.scenario.timeout_s
        while not run.command_acked and p.returncode is None and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
        if p.returncode is None:
            p.kill()
        await p.wait()
        run.module.stop()

    async def _update(self, run: DeviceRun) -> dict:
        """An application update after the device's run: a new main.py (the application
        it runs from then on), which the operator registers; the device restarts with it
        (another measurement, so another static key) and no token; it must come back as
        the same device, trusted, with KK reconnects from then on."""
        if run.process is not None and run.process.returncode is None:
            await asyncio.wait_for(run.process.wait(), 30)
        if run.module is not None:
            run.module.stop()
        run.token = ""  # spent: an update must not need a new one
        keystore = str(self.out / "keys" / f"{run.spec.name}.json")
        app = ("# Sealink field application, release 2\n"
               + _app_call(run, self.scenario, keystore)).encode()
        (run.flash / "main.py").write_bytes(app)
        self.store.add_reference("main.py", hashlib.sha256(app).digest(), "good")
        devices_before = len(self.store.devices())
        uplinks_before = len(self.store.uplinks(run.device_id, limit=1000))
        run.telemetry, run.command_acked = 0, False  # the watcher commands it again
        p = await asyncio.create_subprocess_exec(
            *_unix_args(run), "main.py",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=run.flash)
        run.module = Rak3172Model(self.air, run.radio, p.stdout, p.stdin,
                                  seed=self.scenario.seed + 1000)
        run.module.start()
        try:
            await asyncio.wait_for(p.wait(), self.scenario.timeout_s)
        except TimeoutError:
            p.kill()
            await p.wait()
        att = self.store.attestation(run.device_id) or {}
        components = [n for n, _ in att.get("claims", {}).get("components", [])]
        rekeyed = any(e["event"] == "device.rekeyed" and e["device_id"] == run.device_id
                      for e in self.store.audit_log(limit=10_000))
        result = {"device": run.spec.name, "exit": p.returncode,
                  "same_device": len(self.store.devices()) == devices_before,
                  "rekeyed": rekeyed, "attestation": att.get("decision"),
                  "components": components,
                  "uplinks_after": len(self.store.uplinks(run.device_id, limit=1000))
                  - uplinks_before}
        result["ok"] = (p.returncode == 0 and result["same_device"] and rekeyed
                        and result["attestation"] == "trusted"
                        and "main.py" in components and result["uplinks_after"] > 0)
        return result

    async def _run_ble(self, run: DeviceRun) -> None:
        from sealink import app
        from sealink.device import Device, Keystore
        from sim.ble import BlePeripheralRadio, SealinkPeripheral, virtual_device

        peripheral = SealinkPeripheral(virtual_device(
            self.ble_link, run.spec.name, self.ble_addresses[run.spec.name]),
            interval_ms=self.scenario.ble_interval_ms)
        run.peripheral = peripheral
        await peripheral.start()
        while peripheral.mtu <= 23:  # the central connects and negotiates the MTU
            await asyncio.sleep(0.05)
        run.booted_at = time.monotonic()
        run.state = "handshaking"
        device = Device(BlePeripheralRadio(peripheral, counters=run.radio), Keystore(),
                        {"token": run.token.encode(), "gateway_key": self.gateway.public_key,
                         "retry_ms": 1000, "max_retries": 8})
        if run.spec.name in self.scenario.ble_drop:
            asyncio.ensure_future(self._drop_ble_once(run, device))
        result = await app.session(device, run.spec.board, self.scenario.messages,
                                   int(self.scenario.interval_s * 1000), None, 1000, 2000)
        if run.result is None:
            run.result = result
            run.state = "done" if result == "ok" else "failed"
        run.finished_at = run.finished_at or time.monotonic()

    async def _drop_ble_once(self, run: DeviceRun, device) -> None:
        """The BLE link is lost once, after the handshake: the central reconnects and
        the session carries on."""
        while not device.connected:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        await run.peripheral.drop_connection()
        run.ble_drops += 1

    async def _wait_exit(self, run: DeviceRun) -> None:
        # (This boot's process and module: a device started again has others.)
        process, module = run.process, run.module
        run.stderr = await process.stderr.read()
        await process.wait()
        if module is not None:
            module.silent = True  # nobody on its UART any more
        if run.result is None:
            run.result = "ok" if run.command_acked else f"exited {process.returncode}"
            run.state = "done" if run.command_acked else "failed"
        run.finished_at = run.finished_at or time.monotonic()
        if run.result != "ok" and run.stderr:
            self.console.print(f"[red]{run.spec.name}[/red]: "
                               + run.stderr.decode(errors="replace")[-800:])

    async def _watch_uplinks(self) -> None:
        async for message in self.gateway.uplinks():
            # (Runs are added as devices power up: looked up afresh each time.)
            run = next((r for r in self.runs if r.spec.name == message.attributes.get("name")),
                       None)
            if run is None:
                continue
            run.device_id = message.device_id
            run.uplinks += 1
            text = message.payload.decode(errors="replace")
            if text.startswith("hello "):
                fields = dict(kv.split("=", 1) for kv in text.split()[1:] if "=" in kv)
                run.handshake_ms = int(fields.get("hs_ms", 0))
                run.handshake_frames = int(fields.get("frames", 0))
                run.handshake_down = int(fields.get("down", 0))
                # The device's handshake frames are its first ones on the air.
                run.handshake_airtime_s = round(sum(
                    toa for _, toa in run.radio.airtime_log[:run.handshake_frames]), 4)
                run.state = "telemetry"
            if text.startswith("t="):
                run.telemetry += 1
                if run.telemetry == self.scenario.messages:  # (uplinks may be reordered)
                    await self.gateway.send(message.device_id, COMMAND)
                    run.state = "commanded"
            if text == "done " + COMMAND.decode():
                # The device received the command and acknowledged it: its run is
                # complete (a QEMU board then idles in its REPL; a unix process exits).
                run.command_acked = True
                run.state = "acknowledged"
                run.result = run.result or "ok"
                run.finished_at = time.monotonic()

    async def _shutdown(self) -> None:
        if self.attacker is not None:
            self.attacker.stop()
        for r in self.runs:
            if r.task is not None and not r.task.done():
                r.task.cancel()
            if r.process is not None and r.process.returncode is None:
                # Give a finishing device a moment, then stop it.
                try:
                    await asyncio.wait_for(r.process.wait(), 5)
                except TimeoutError:
                    r.process.kill()
                    await r.process.wait()
            if r.module is not None:
                r.module.stop()
        for r in self.runs:
            if r.peripheral is not None:
                try:  # quiet the BLE controllers before the loop ends
                    await r.peripheral.device.stop_advertising()
                except Exception:  # noqa: BLE001 (not advertising)
                    pass
        self.concentrator.stop()
        if self.network_server is not None:
            self.network_server.stop()
        await self.gateway.stop()
        if self.broker is not None:
            self.broker.stop()
        await asyncio.sleep(0.3)  # let bumble's pending HCI commands complete
        self.store.close()
        self.air.close()

    # --- reporting -------------------------------------------------------------------------

    def _progress(self) -> Table:
        wall = time.monotonic() - self.started if self.started else 0.0
        table = Table(title=f"Sealink fleet '{self.scenario.name}': wall {wall:5.1f} s, "
                            f"modeled {self.clock.now() if self.started else 0:7.1f} s "
                            f"(x{self.scenario.time_scale:g})")
        for col in ("device", "board", "SF", "state", "frames", "airtime s", "uplinks"):
            table.add_column(col, justify="left" if col in ("device", "board", "state")
                             else "right")
        for r in self.runs:
            table.add_row(r.spec.name, r.spec.board,
                          str(r.spec.sf) if r.spec.radio != "ble" else "BLE",
                          r.result or r.state,
                          str(r.radio.frames_sent), f"{r.radio.airtime_s:.2f}", str(r.uplinks))
        return table

    def _complete(self, run: DeviceRun) -> bool:
        """Finished, and (when it finished well) everything it sent is committed: its
        "done" can overtake an earlier uplink whose frame was lost and sent again."""
        if run.result is None:
            return False
        if run.result != "ok" or not run.device_id:
            return True
        stored = {u["payload"] for u in self.store.uplinks(run.device_id, limit=1000)}
        return len(stored) >= 2 + self.scenario.messages

    def _attestation(self, run: DeviceRun) -> str | None:
        att = self.store.attestation(run.device_id) if run.device_id else None
        return att["decision"] if att else None

    def _expected_attestation(self, device: dict) -> str | None:
        if (not self.scenario.attested or device["board"] not in {*qemu.MACHINES, "UNIX"}
                or device["name"] in self.scenario.without_uds):
            return None
        return "quarantine" if device["name"] in self.scenario.modified else "trusted"

    def _summary(self) -> dict:
        wall = time.monotonic() - self.started
        modeled = self.clock.now()
        devices = []
        for r in self.runs:
            sent = 2 + self.scenario.messages  # hello, telemetry, done
            delivered = duplicates = 0
            if r.device_id:
                payloads = [u["payload"] for u in self.store.uplinks(r.device_id, limit=1000)]
                delivered, duplicates = len(payloads), len(payloads) - len(set(payloads))
            devices.append({
                "name": r.spec.name, "board": r.spec.board, "radio": r.spec.radio,
                "sf": r.spec.sf, "distance_m": r.spec.distance, "result": r.result,
                "handshake_ms": r.handshake_ms, "handshake_frames": r.handshake_frames,
                "handshake_airtime_s": r.handshake_airtime_s,
                "frames_sent": r.radio.frames_sent, "bytes_sent": r.radio.bytes_sent,
                "airtime_s": round(r.radio.airtime_s, 4),
                "duty_cycle_wait_s": round(r.radio.duty_wait_s, 2),
                # Its busiest hour on the air, against the 1 % of an hour (36 s) its
                # sub-band (g1) allows.
                "duty_cycle_used_of_hourly_budget": round(
                    busiest_window_s(r.radio.airtime_log, 3600) / 36.0, 4),
                "handshake_down": r.handshake_down,
                "messages_sent": sent if r.command_acked else r.uplinks,
                "messages_delivered": delivered,
                "messages_lost": max(0, (sent if r.command_acked else r.uplinks) - delivered),
                "messages_duplicated": duplicates,
                "command_acknowledged": r.command_acked,
                "attestation": self._attestation(r),
                "lost_frames": dict(r.radio.lost),
                "ble": ({"mtu": r.peripheral.mtu, "link_drops": r.ble_drops,
                         **r.peripheral.stats} if r.peripheral is not None else None),
                "modem": dict(r.module.stats) if r.module else {},
                "modem_last_commands": list(r.module.history)[-12:] if r.module else [],
                "stderr": r.stderr.decode(errors="replace")[-600:],
                # (start, time on air), to the microsecond: times on air are whole
                # microseconds, so the duty-cycle spacing can be checked exactly.
                "airtime_log": [(round(a, 6), round(b, 6)) for a, b in r.radio.airtime_log],
            })
        c = self.concentrator.radio
        return {
            "scenario": self.scenario.name, "seed": self.scenario.seed,
            "versions": firmware_versions({d.board for d in self.scenario.devices}),
            "time_scale": self.scenario.time_scale,
            "wall_s": round(wall, 2), "modeled_s": round(modeled, 2),
            "ok": all(d["result"] == "ok" and d["messages_duplicated"] == 0
                      and d["attestation"] == self._expected_attestation(d) for d in devices),
            "devices": devices,
            "attacker": (None if self.attacker is None else {
                "tried": dict(sorted(self.attacker.tried.items())),
                "frames_recorded": len(self.attacker.recorded)}),
            "gateway": {"drops": dict(self.gateway.drops),
                        "transport_drops": {t.name: dict(t.drops)
                                            for t in self.gateway.transports},
                        "counters": dict(self.gateway.counters)},
            "concentrator": {"tx_errors": dict(self.concentrator.tx_errors),
                             "tx_kinds": dict(self.concentrator.tx_kinds),
                             "frames_sent": c.frames_sent, "airtime_s": round(c.airtime_s, 3),
                             # Per sub-band: its busiest hour against the hourly budget.
                             "duty_cycle": self.concentrator.duty_cycle_used(),
                             "scheduler": {t.name: {"scheduled": dict(t.scheduled),
                                                    "deferred": dict(t.deferred),
                                                    "ignored": dict(t.ignored)}
                                           for t in self.gateway.transports
                                           if hasattr(t, "scheduled")},
                             **self.concentrator.stats},
            "network_server": (None if self.network_server is None else {
                **dict(self.network_server.stats),
                "devices": {s.name: dict(s.stats)
                            for s in self.network_server.sessions.values()}}),
            "first_contact": first_contact_by_sf(devices),
            "air": {"frames": self.air.frames, "lost": dict(self.air.lost)},
        }


def _dump_tasks() -> None:
    for task in asyncio.all_tasks():
        task.print_stack(limit=6, file=sys.stderr)


def first_contact_by_sf(devices: list[dict]) -> list[dict]:
    """The frames each device's first contact took (up: sent; down: heard), by SF: what
    the device reported in its hello message."""
    rows = []
    for d in devices:
        if d["radio"] == "ble" or d["handshake_frames"] is None:
            continue
        rows.append({"sf": d["sf"], "device": d["name"], "radio": d["radio"],
                     "evidence": d["attestation"] is not None,
                     "up": d["handshake_frames"], "down": d["handshake_down"],
                     "airtime_s": d["handshake_airtime_s"]})
    return sorted(rows, key=lambda r: (r["sf"], r["device"]))


def summary_table(summary: dict) -> Table:
    t = Table(title=f"Summary: wall {summary['wall_s']:.1f} s, modeled "
                    f"{summary['modeled_s']:.1f} s (x{summary['time_scale']:g})")
    for col in ("device", "board", "radio", "SF", "handshake", "hs frames", "hs airtime s",
                "bytes", "airtime s", "duty wait s", "sent", "delivered", "lost", "attested",
                "result"):
        t.add_column(col, justify="left" if col in ("device", "board", "radio", "attested",
                                                    "result") else "right")
    for d in summary["devices"]:
        t.add_row(d["name"], d["board"], d["radio"], str(d["sf"]) if d["radio"] != "ble"
                  else "-",
                  "-" if d["handshake_ms"] is None else f"{d['handshake_ms']} ms",
                  str(d["handshake_frames"] or "-"),
                  "-" if d["handshake_airtime_s"] is None else f"{d['handshake_airtime_s']:.3f}",
                  str(d["bytes_sent"]),
                  f"{d['airtime_s']:.2f}", f"{d['duty_cycle_wait_s']:.1f}",
                  str(d["messages_sent"]), str(d["messages_delivered"]),
                  str(d["messages_lost"]), d.get("attestation") or "-", d["result"])
    return t


def plot_airtime(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for d in summary["devices"]:
        if d["radio"] != "lora":
            continue  # BLE has no duty-cycled airtime to plot
        xs, ys, total = [0.0], [0.0], 0.0
        for start, toa in d["airtime_log"]:
            xs += [start, start + toa]
            ys += [total, total + toa]
            total += toa
        ax.plot(xs, ys, label=f"{d['name']} (SF{d['sf']})")
    ax.set_xlabel("modeled time (s)")
    ax.set_ylabel("cumulative airtime (s)")
    ax.set_title(f"Airtime per device: {summary['scenario']}")
    ax.legend(fontsize="small", ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run an emulated Sealink fleet.")
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--out", type=Path, default=BUILD / "demo")
    parser.add_argument("--seed", type=int, default=None, help="overrides the file's seed")
    args = parser.parse_args(argv)
    # A log or CI has no terminal width: lay the tables out for a wide page.
    console = Console() if sys.stdout.isatty() else Console(width=170)
    try:
        spec = load_scenario(args.scenario)
    except ScenarioError as e:
        console.print(f"[red]{e}[/red]")
        return 2
    if args.seed is not None:
        spec.seed = args.seed
    args.out.mkdir(parents=True, exist_ok=True)
    summary = asyncio.run(Fleet(spec, args.out, console).run())
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_airtime(summary, args.out / "airtime.png")
    console.print()
    console.print(summary_table(summary))
    c = summary["concentrator"]
    bands = ", ".join(f"{name} {100 * b['used']:.0f} % ({b['busiest_hour_s']:.1f} s of "
                      f"{b['budget_s']:.0f} s)" for name, b in c["duty_cycle"].items())
    console.print(f"concentrator: {c['frames_sent']} downlink frames, {c['airtime_s']:.1f} s "
                  f"on air; busiest hour per sub-band: {bands}; scheduler "
                  f"{c['scheduler']}")
    worst = max((d for d in summary["devices"] if d["radio"] != "ble"),
                key=lambda d: d["duty_cycle_used_of_hourly_budget"], default=None)
    if worst is not None:
        used = [d["duty_cycle_used_of_hourly_budget"] for d in summary["devices"]]
        console.print(f"devices: busiest hour "
                      f"{100 * worst['duty_cycle_used_of_hourly_budget']:.0f} % of the 1 % "
                      f"budget ({worst['name']}); every device within: "
                      f"{all(u <= 1.0 for u in used)}")
    fc = Table(title="First contact (XK with the token; evidence where the device has a UDS)")
    for col in ("SF", "device", "radio", "evidence", "uplink frames", "downlink frames",
                "uplink airtime s"):
        fc.add_column(col, justify="right" if col not in ("device", "radio") else "left")
    for r in summary["first_contact"]:
        fc.add_row(str(r["sf"]), r["device"], r["radio"], "yes" if r["evidence"] else "no",
                   str(r["up"]), str(r["down"]), f"{r['airtime_s'] or 0:.3f}")
    console.print(fc)
    ns = summary.get("network_server")
    if ns:
        console.print(f"LoRaWAN network server (ChirpStack integration over MQTT): "
                      f"{ns.get('uplinks', 0)} uplinks published, {ns.get('downlinks', 0)} "
                      f"downlinks sent of {ns.get('enqueued', 0)} enqueued; per device "
                      f"{ns['devices']}")
    if summary["attacker"]:
        drops = summary["gateway"]["drops"]
        console.print(f"attacker on the air: tried {summary['attacker']['tried']}; the gateway "
                      f"dropped and counted {sum(drops.values())} frames ({dict(drops)}); "
                      f"duplicates delivered: "
                      f"{sum(d['messages_duplicated'] for d in summary['devices'])}")
    rot = summary.get("rotation")
    if rot and "followed" in rot:
        console.print(f"rotation: gateway key rotated at modeled {rot['at_modeled_s']} s with "
                      f"{', '.join(rot['offline']) or 'no device'} off the air; told "
                      f"{len(rot['told'])} device(s) ({rot['told_in_session']} in a live "
                      f"session); {rot['followed']} of {rot['devices']} LoRa devices now "
                      f"connect under the new key after {rot['rounds']} restart round(s); "
                      f"lost: {', '.join(rot['lost']) or 'none'}"
                      + (f"; not restarted (no flash: a power cycle loses their "
                         f"enrollment): {', '.join(rot['without_storage'])}"
                         if rot["without_storage"] else ""))
    elif rot:
        console.print(f"[red]rotation: {rot.get('why')}[/red]")
    for u in summary.get("updates", []):
        console.print(f"update: {u['device']} restarted with a registered application update "
                      f"and no token: {'the same device' if u['same_device'] else 'A NEW DEVICE'}"
                      f"{', rekeyed' if u['rekeyed'] else ''}, {u['attestation']} "
                      f"({', '.join(u['components'])}), {u['uplinks_after']} uplinks after")
    console.print(f"wrote {args.out / 'summary.json'}, {args.out / 'airtime.png'}, "
                  f"{args.out / 'air.pcap'}")
    if not summary["ok"]:
        console.print("[red]some devices did not finish[/red]")
        for d in summary["devices"]:
            if d["result"] != "ok":
                console.print(f"  {d['name']}: {d['result']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
