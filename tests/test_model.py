"""The handshake state machines, model-checked with spin, against an attacker with a
finite budget on the radio (losses, replays, forged frames and REJECTs, a rogue
responder, squatted session ids, expired handshakes, gateway restarts):

- model/first_contact.pml (XX enrollment): no deadlock; the enrollment token goes only
  to the gateway the device was provisioned for; first contact always completes;
- model/reconnect.pml (KK): no deadlock; a device with a valid key always gets a
  session back, and keeps it.

Each liveness or safety check is paired with a model of the code before Stage 6, which
must fail it: that is what shows the check can fail."""

import shutil
import subprocess
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parent.parent / "model"


@pytest.fixture(autouse=True)
def _spin_is_there():
    # `make setup` installs spin (Debian); without it these tests fail, never skip.
    assert shutil.which("spin"), "spin is missing: run `make setup`"


def _pan(tmp_path: Path, model: str, *defines: str, claim: bool = True) -> str:
    shutil.copy(MODELS / model, tmp_path / model)
    subprocess.run(["spin", "-a", *defines, model], cwd=tmp_path, check=True,
                   capture_output=True, timeout=120)
    flags = [] if claim else ["-DNOCLAIM"]
    subprocess.run(["gcc", "-O2", *flags, "-o", "pan", "pan.c"], cwd=tmp_path, check=True,
                   capture_output=True, timeout=300)
    args = ["./pan", "-a", "-f"] if claim else ["./pan"]
    out = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    return out.stdout


def _passes(out: str) -> bool:
    return "errors: 0" in out and "acceptance   cycles \t+ (fairness enabled)" in out


def test_no_deadlock_in_the_reconnect_state_machines(tmp_path):
    out = _pan(tmp_path, "reconnect.pml", claim=False)
    assert "errors: 0" in out and "invalid end states\t+" in out, out


def test_device_with_a_valid_key_always_gets_a_session_back(tmp_path):
    out = _pan(tmp_path, "reconnect.pml")
    assert _passes(out), out


def test_model_of_the_old_gateway_fails_the_same_check(tmp_path):
    out = _pan(tmp_path, "reconnect.pml", "-DTRUST_KK1")
    assert "acceptance cycle" in out and "errors: 1" in out, out


def test_no_deadlock_in_the_first_contact_state_machines(tmp_path):
    out = _pan(tmp_path, "first_contact.pml", claim=False)
    assert "errors: 0" in out and "invalid end states\t+" in out, out


def test_first_contact_always_completes_and_the_token_reaches_only_the_gateway(tmp_path):
    out = _pan(tmp_path, "first_contact.pml")
    assert _passes(out), out


def test_model_of_the_old_device_gives_the_token_to_a_rogue_responder(tmp_path):
    out = _pan(tmp_path, "first_contact.pml", "-DTRUST_ANY_RESPONDER")
    assert "assertion violated  !( !( !(token_leaked)))" in out and "errors: 1" in out, out


def test_model_of_the_old_gateway_strands_a_device_whose_credential_was_lost(tmp_path):
    out = _pan(tmp_path, "first_contact.pml", "-DREFUSE_SPENT_TOKEN")
    assert "acceptance cycle" in out and "errors: 1" in out, out
