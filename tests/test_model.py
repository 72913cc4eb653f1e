"""The reconnect state machines, model-checked with spin (model/reconnect.pml): no
deadlock, and a device with a valid key always gets a session back, whatever an
attacker with a finite budget does on the radio (losses, replays of KK message 1 and of
data, forged frames and REJECTs, gateway restarts).  The model of the gateway before
Stage 6 (it trusted KK message 1 at once) must fail the same check: that is what shows
the check can fail."""

import shutil
import subprocess
from pathlib import Path

import pytest

MODEL = Path(__file__).resolve().parent.parent / "model" / "reconnect.pml"


@pytest.fixture(autouse=True)
def _spin_is_there():
    # `make setup` installs spin (Debian); without it these tests fail, never skip.
    assert shutil.which("spin"), "spin is missing: run `make setup`"


def _pan(tmp_path: Path, *defines: str, claim: bool = True) -> str:
    shutil.copy(MODEL, tmp_path / "reconnect.pml")
    subprocess.run(["spin", "-a", *defines, "reconnect.pml"], cwd=tmp_path, check=True,
                   capture_output=True, timeout=120)
    flags = [] if claim else ["-DNOCLAIM"]
    subprocess.run(["gcc", "-O2", *flags, "-o", "pan", "pan.c"], cwd=tmp_path, check=True,
                   capture_output=True, timeout=300)
    args = ["./pan", "-a", "-f", "-N", "live"] if claim else ["./pan"]
    out = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    return out.stdout


def test_no_deadlock_in_the_reconnect_state_machines(tmp_path):
    out = _pan(tmp_path, claim=False)
    assert "errors: 0" in out and "invalid end states\t+" in out, out


@pytest.mark.slow
def test_device_with_a_valid_key_always_gets_a_session_back(tmp_path):
    out = _pan(tmp_path)
    assert "errors: 0" in out and "acceptance   cycles \t+ (fairness enabled)" in out, out


def test_model_of_the_old_gateway_fails_the_same_check(tmp_path):
    out = _pan(tmp_path, "-DTRUST_KK1")
    assert "acceptance cycle" in out and "errors: 1" in out, out
