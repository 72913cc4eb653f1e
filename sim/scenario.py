"""Scenario files (TOML), checked before anything starts.

Two kinds share this module: a firmware fleet (`sim.fleet`: QEMU and unix-port devices,
wall time) and a modeled LoRa cell (`sim.cell`: the device stack in-process, virtual
time).  Each file is parsed with tomllib and validated by a pydantic model that forbids
unknown keys; a refusal names the key, the line it is on and what is wrong:

    sim/scenarios/bad.toml:7: group[1].sf: Input should be less than or equal to 12

Nothing is started for a file that is refused.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sealink.lora import max_payload

SF = Annotated[int, Field(ge=7, le=12)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
RELIABLE_OVERHEAD = 21
BOARDS = ("CPYTHON", "UNIX", "QEMU_MPS2_AN385", "QEMU_VIRT_RV32")


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the file, line and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ScenarioHeader(_Strict):
    name: str | None = None
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 1
    # firmware fleet only:
    time_scale: Positive = 1.0
    loss: Probability = 0.0
    corrupt: Probability = 0.0
    messages: Annotated[int, Field(ge=1, le=1000)] = 3
    interval_s: NonNegative = 1.0
    timeout_s: Positive = 300.0
    rx1_delay_s: Annotated[float, Field(gt=0, le=15)] = 1.0
    stagger_s: NonNegative = 0.0
    ble_interval_ms: Annotated[float, Field(ge=7.5, le=4000)] = 30.0


class Group(_Strict):
    board: Literal[BOARDS]  # type: ignore[valid-type]
    count: Annotated[int, Field(ge=1, le=64)] = 1
    sf: SF | list[SF] = 7
    distance: Positive = 500.0
    # lora: Sealink's own frames through the concentrator (P2P module); lorawan: a
    # LoRaWAN device (module in LoRaWAN mode) through a network server and its MQTT
    # integration (ChirpStack); ble: a BLE peripheral
    radio: Literal["lora", "lorawan", "ble"] = "lora"
    prefix: str | None = None

    @model_validator(mode="after")
    def _ble_on_cpython(self) -> Group:
        if (self.radio == "ble") != (self.board == "CPYTHON"):
            raise ValueError("BLE devices run the stack on CPython (board CPYTHON; no BLE "
                             "host stack builds for the firmware here)")
        if isinstance(self.sf, list) and not self.sf:
            raise ValueError("sf: an empty list")
        return self


class Faults(_Strict):
    uart_garbage: list[str] = []
    modem_error_rate: dict[str, Probability] = {}
    ble_drop: list[str] = []


class Attestation(_Strict):
    """Every QEMU and unix device boots with a UDS (and a QEMU one with a flash), and is
    provisioned (its DeviceID registered) before it runs; `modified` devices get a
    main.py after provisioning that nobody registered (they end in quarantine);
    `updated` unix devices, once their run is done, get an application update the
    operator registered, and must come back under their DeviceID without a token."""

    modified: list[str] = []
    updated: list[str] = []
    without_uds: list[str] = []  # QEMU/unix devices that boot with no DICE identity


class Attack(_Strict):
    """An attacker on the air (sim.attacker): frames per modeled hour of each kind."""

    replay: NonNegative = 0.0
    forge: NonNegative = 0.0
    reject: NonNegative = 0.0
    squat: NonNegative = 0.0
    flood: NonNegative = 0.0
    distance_m: Positive = 50.0  # from the concentrator


class Rotation(_Strict):
    """The gateway's static key is rotated mid-run, once every LoRa device has enrolled
    and every `offline` device has finished its run (it is off the air during the
    rotation); the old key stays accepted for `grace_s`.  Devices with a session learn
    the new key at their next frame; afterwards every LoRa device is started again until
    it has reconnected under the new key (at most `rounds` times)."""

    grace_s: Positive = 3600.0
    offline: list[str] = []
    rounds: Annotated[int, Field(ge=1, le=4)] = 2


class FleetFile(_Strict):
    scenario: ScenarioHeader = ScenarioHeader()
    group: Annotated[list[Group], Field(min_length=1)]
    faults: Faults = Faults()
    attacker: Attack | None = None
    attestation: Attestation | None = None
    rotation: Rotation | None = None


class Air(_Strict):
    """The modeled air of a cell (sim.lora.LoRaAir)."""

    loss: Probability = 0.0
    corrupt: Probability = 0.0
    capture_db: Annotated[float, Field(ge=0, le=30)] | None = 6.0
    critical_section: bool = True
    path_loss_exponent: Annotated[float, Field(ge=1.5, le=6)] = 2.7
    reference_loss_db: Annotated[float, Field(ge=0, le=200)] = 40.0
    reference_m: Annotated[float, Field(gt=0, le=1000)] = 1.0
    link_margin_db: Annotated[float, Field(ge=0, le=30)] = 3.0


class Cell(_Strict):
    devices: Annotated[int, Field(ge=1, le=20000)]
    duration_s: Annotated[float, Field(gt=0, le=7 * 86400)]
    interval_s: Annotated[float, Field(ge=10, le=86400)]
    payload_bytes: Annotated[int, Field(ge=1, le=222)] = 12
    # Share of the devices on each spreading factor (normalized); keys "7".."12".
    sf_mix: dict[str, Annotated[float, Field(ge=0)]] = {"7": 1.0}
    join_spread_s: NonNegative = 600.0  # devices power up uniformly over this time
    channels: Annotated[list[int], Field(min_length=1, max_length=16)] = [
        868_100_000, 868_300_000, 868_500_000]
    rx1_delay_s: Annotated[float, Field(gt=0, le=15)] = 1.0
    # The device's handshake and uplink retransmission timer: longer than the answer
    # takes on the air (at SF12, XK message 2 is one 2.5 s frame, after a 1 s RX1 delay).
    retry_ms: Annotated[int, Field(ge=100, le=600_000)] = 20000
    max_retries: Annotated[int, Field(ge=1, le=50)] = 8
    gateway_retry_ms: Annotated[int, Field(ge=100, le=600_000)] = 20000

    @model_validator(mode="after")
    def _check(self) -> Cell:
        for key in self.sf_mix:
            if not key.isdigit() or int(key) not in range(7, 13):
                raise ValueError(f"sf_mix: {key!r} is not a spreading factor (7..12)")
        if not any(self.sf_mix.values()):
            raise ValueError("sf_mix: every share is 0")
        # A reliable uplink is one frame: 4-byte header, 1 id byte, payload, 16-byte tag.
        for key, share in self.sf_mix.items():
            frame = self.payload_bytes + RELIABLE_OVERHEAD
            if share and frame > max_payload(int(key)):
                raise ValueError(f"payload_bytes: a {self.payload_bytes}-byte payload makes "
                                 f"{frame}-byte frames, over the SF{key} limit of "
                                 f"{max_payload(int(key))}")
        return self


class CellFile(_Strict):
    scenario: ScenarioHeader = ScenarioHeader()
    cell: Cell
    air: Air = Air()
    attacker: Attack | None = None


def line_of(text: str, loc: tuple) -> int | None:
    """The line of the key a validation error points at: `loc` is pydantic's path, e.g.
    ("group", 1, "sf") for the second [[group]] table's sf.  Found by walking the
    file's table headers and assignments (TOML keeps one key per line)."""
    table: list = []
    counts: dict[str, int] = {}
    want_table, key = list(loc[:-1]), loc[-1] if loc else None
    first_line = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        m = re.fullmatch(r"\[\[\s*([\w.]+)\s*\]\]", line)
        if m:
            name = m.group(1)
            counts[name] = counts.get(name, -1) + 1
            table = [*name.split("."), counts[name]]
        elif m := re.fullmatch(r"\[\s*([\w.\"]+)\s*\]", line):
            table = [p.strip('"') for p in m.group(1).split(".")]
        elif m := re.match(r"\"?([\w-]+)\"?\s*=", line):
            if table == want_table and m.group(1) == str(key):
                return n
            # A key inside an inline table or a list: point at the assignment.
            if table + [m.group(1)] == list(loc[:len(table) + 1]) and first_line is None:
                first_line = n
            continue
        else:
            continue
        if table == list(loc) and first_line is None:
            first_line = n  # the table itself (a missing key, a bad table)
    return first_line


def _loc_text(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load(path: Path, model: type[BaseModel]):
    """Parse and validate a scenario file; ScenarioError names file, line and key."""
    try:
        text = path.read_text()
        data = tomllib.loads(text)
    except OSError as e:
        raise ScenarioError(f"{path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path}: {e}") from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems, seen = [], set()
        for err in e.errors():
            # Drop pydantic's union branch tags ("constrained-int", "list[...]") from the
            # path; of a union's failed branches, report the first.
            loc = tuple(p for p in err["loc"] if isinstance(p, int) or (
                re.fullmatch(r"\w+", p) and p not in ("int", "float", "str", "bool", "list")))
            msg = err["msg"].removeprefix("Value error, ")
            # A check across keys says which key it blames: "payload_bytes: ...".
            blamed = re.match(r"(\w+): (.*)", msg, re.S)
            if err["type"] == "value_error" and blamed:
                loc, msg = (*loc, blamed.group(1)), blamed.group(2)
            if loc in seen:
                continue
            seen.add(loc)
            line = line_of(text, loc)
            where = f"{path}:{line}" if line else str(path)
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            problems.append(f"{where}: {_loc_text(loc)}: {msg}")
        raise ScenarioError("\n".join(dict.fromkeys(problems))) from None
