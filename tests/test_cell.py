"""The modeled LoRa cell (sim.cell) and the collision model under it, in discrete-event
time: the device stack and the gateway in one process, exact on any host."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from sim import aloha, cell, scenario

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "sim" / "scenarios"


@pytest.mark.parametrize("g", [0.1, 0.5, 1.0])
def test_collision_model_follows_pure_aloha(g):
    """Capture off, one SF, one channel, Poisson arrivals: delivery = exp(-2G).  The
    bound is 4 binomial standard errors (about 0.03); slotted ALOHA's exp(-G), or a
    model that misses overlaps from either side, is off by 10 or more."""
    point = aloha.measure(g, frames=4000, seed=11)
    assert point.offered_load == pytest.approx(g, rel=0.05)
    assert abs(point.delivery - point.theory) < 4 * point.sigma
    assert abs(point.delivery - math.exp(-point.offered_load)) > 10 * point.sigma


@pytest.fixture(scope="module")
def cell50(tmp_path_factory):
    out = tmp_path_factory.mktemp("cell50")
    return cell.run_cell(SCENARIOS / "cell-50.toml", out), out


def test_cell_of_50_devices_keeps_its_invariants(cell50):
    summary, _ = cell50
    assert summary["invariants"] == {"delivered_exactly_once_or_queued": True,
                                     "nothing_delivered_that_was_not_sent": True,
                                     "no_device_over_its_duty_cycle": True}
    t = summary["totals"]
    assert t["duplicates"] == 0 and t["lost"] == 0 and t["unknown_delivered"] == 0
    assert t["stored"] == t["delivered"] + t["still_queued"]
    assert summary["modeled_s"] == 3600.0
    # Every spreading factor of the mix is there, and the near ones all enrolled and
    # delivered: an SF7 first contact is two frames.
    assert sorted(summary["by_sf"]) == [7, 8, 9, 10, 11, 12]
    for sf in (7, 8, 9):
        s = summary["by_sf"][sf]
        assert s["enrolled"] == s["devices"] and s["delivered"] > 0
    # The report says what the gateway spent on the air, against its budget.
    g = summary["gateway"]
    assert g["downlink_frames"] > 0 and g["duty_cycle_budget_per_hour_s"] == 36.0
    assert g["busiest_hour_share_of_budget"] == pytest.approx(
        g["busiest_hour_airtime_s"] / 36.0, abs=1e-3)


def test_cell_messages_the_gateway_committed_are_the_ones_devices_stored(cell50):
    """Cross-check against the real SQLite file the gateway wrote."""
    import sqlite3

    summary, out = cell50
    db = sqlite3.connect(out / "gateway.db")
    rows = db.execute("SELECT d.attributes, u.payload FROM uplinks u "
                      "JOIN devices d ON d.id = u.device_id").fetchall()
    assert len(rows) == summary["totals"]["delivered"]
    for attributes, payload in rows:
        assert bytes(payload).startswith(json.loads(attributes)["name"].encode() + b":")


def _small(tmp_path, seed):
    text = (SCENARIOS / "cell-50.toml").read_text()
    text = text.replace("devices = 50", "devices = 12").replace("duration_s = 3600",
                                                                "duration_s = 1800")
    path = tmp_path / f"small-{seed}.toml"
    path.write_text(text.replace("seed = 5", f"seed = {seed}"))
    return path


def _figures(summary):
    return {k: v for k, v in summary.items() if k != "wall_s"}


def _run_cli(path, out, *extra, hashseed="0"):
    r = subprocess.run([sys.executable, "-m", "sim.cell", str(path), "--out", str(out),
                        *extra], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={"PYTHONHASHSEED": hashseed, "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads((out / "summary.json").read_text())


def test_same_seed_gives_identical_figures(tmp_path):
    """Two processes (with different string hashing), one seeded scenario: the same
    summary, bit for bit, but for the wall time it took."""
    path = _small(tmp_path, 21)
    a = _run_cli(path, tmp_path / "a", hashseed="1")
    b = _run_cli(path, tmp_path / "b", hashseed="2")
    assert json.dumps(_figures(a), sort_keys=True) == json.dumps(_figures(b), sort_keys=True)
    assert a["totals"]["stored"] > 0 and a["air"]["frames"] > 0
    assert a["seed"] == 21 and a["versions"]["looptime"] and a["versions"]["sealink"]
    # The command line's --seed overrides the file's: another seed, other figures.
    c = _run_cli(path, tmp_path / "c", "--seed", "22")
    assert c["seed"] == 22 and _figures(c)["per_device"] != _figures(a)["per_device"]


BAD = [
    ("[cell]\ndevices = 10\nduration_s = 60\ninterval_s = 60\nsf_mix = { \"13\" = 1.0 }\n",
     ":5: cell.sf_mix: '13' is not a spreading factor (7..12)"),
    ("[cell]\ndevices = 10\nduration_s = 60\ninterval_s = 60\npayload_bytes = 300\n",
     ":5: cell.payload_bytes: Input should be less than or equal to 222"),
    ("[cell]\ndevices = 10\nduration_s = 60\ninterval_s = 60\npayload_bytes = 50\n"
     "sf_mix = { \"12\" = 1.0 }\n",
     ":5: cell.payload_bytes: a 50-byte payload makes 71-byte frames, over the SF12"),
    ("[cell]\ndevices = 10\nduration_s = 60\ninterval_s = -5\n",
     ":4: cell.interval_s: Input should be greater than or equal to 10"),
    ("[scenario]\nseed = 1\ncolour = \"red\"\n[cell]\ndevices = 1\nduration_s = 60\n"
     "interval_s = 60\n", ":3: scenario.colour: unknown key"),
    ("[cell]\ndevices = \"many\"\nduration_s = 60\ninterval_s = 60\n",
     ":2: cell.devices: Input should be a valid integer"),
    ("[cell]\ndevices = 10\n", "cell.duration_s: Field required"),
]


@pytest.mark.parametrize("text,expected", BAD)
def test_bad_cell_scenario_is_refused_naming_key_and_line(tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(scenario.ScenarioError) as e:
        scenario.load(path, scenario.CellFile)
    assert expected in str(e.value)
    assert str(path) in str(e.value)


FLEET_BAD = [
    ("[[group]]\nboard = \"UNIX\"\nsf = 13\n",
     ":3: group[0].sf: Input should be less than or equal to 12"),
    ("[[group]]\nboard = \"UNIX\"\n\n[[group]]\nboard = \"QEMU_MPS2_AN385\"\ncount = \"two\"\n",
     ":6: group[1].count: Input should be a valid integer"),
    ("[scenario]\ninterval_s = -1\n[[group]]\nboard = \"UNIX\"\n",
     ":2: scenario.interval_s: Input should be greater than or equal to 0"),
    ("[[group]]\nboard = \"ESP32\"\n", ":2: group[0].board: Input should be"),
    ("[[group]]\nboard = \"UNIX\"\nradio = \"ble\"\n", "group[0]: BLE devices run the stack"),
    ("[[group]]\nboard = \"UNIX\"\n[faults]\nuart_garbage = [\"nobody\"]\n",
     ":4: faults.uart_garbage: fault for unknown device 'nobody'"),
]


@pytest.mark.parametrize("text,expected", FLEET_BAD)
def test_bad_fleet_scenario_is_refused_naming_key_and_line(tmp_path, text, expected):
    from sim import fleet

    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(scenario.ScenarioError) as e:
        fleet.load_scenario(path)
    assert expected in str(e.value)


def test_refused_scenario_starts_nothing(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(BAD[0][0])
    out = tmp_path / "out"
    for module in ("sim.cell", "sim.fleet"):
        r = subprocess.run([sys.executable, "-m", module, str(path), "--out", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "bad.toml:" in r.stdout
        assert not out.exists()  # no gateway database, no keys, no processes


def test_attacked_cell_keeps_its_invariants(tmp_path):
    """Stage 6: an attacker on the air (sim/attacker.py) replays every kind of frame it
    recorded, forges frames and REJECTs for live session ids, squats session ids with
    handshake messages and floods first contacts.  Nothing it sends is delivered,
    nothing is delivered twice, nothing accepted is lost, and the near devices all
    enroll and deliver."""
    summary = cell.run_cell(SCENARIOS / "cell-attacked.toml", tmp_path)
    tried = summary["attacker"]["tried"]
    assert set(tried) == {"replay", "forge", "reject", "squat", "flood"}
    assert min(tried.values()) >= 100
    assert summary["invariants"] == {"delivered_exactly_once_or_queued": True,
                                     "nothing_delivered_that_was_not_sent": True,
                                     "no_device_over_its_duty_cycle": True}
    t = summary["totals"]
    assert t["duplicates"] == 0 and t["lost"] == 0 and t["unknown_delivered"] == 0
    for sf in (7, 8):
        s = summary["by_sf"][sf]
        assert s["enrolled"] == s["devices"] and s["delivered"] > 0
    # What the gateway did with the attacker's frames: dropped and counted.
    drops = summary["gateway"]["drops"]
    assert drops["AuthenticationError"] > 0 and drops["handshake_refused"] > 0
