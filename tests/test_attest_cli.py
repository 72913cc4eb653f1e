"""The operator's attestation commands, as they run them: `sealink device provision`
over an emulated board's serial line (a QEMU pty, through mpremote's API), `sealink
firmware register/list`, `sealink attest verify`, `sealink gateway check`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devices import BUILD, QemuDevice
from sealink_gateway import attest
from sealink_gateway.authority import Authority
from sealink_gateway.run import load_or_create_static_key
from sealink_gateway.store import Store
from sim import qemu

SEALINK = str(Path(sys.executable).parent / "sealink")


def _cli(db, *args, ok=True):
    out = subprocess.run([SEALINK, "--db", str(db), *args], capture_output=True, text=True,
                         timeout=120)
    assert (out.returncode == 0) == ok, (args, out.stdout, out.stderr)
    return out


def _on_console(pty: str, code: str) -> str:
    from mpremote.transport_serial import SerialTransport

    link = SerialTransport(pty, baudrate=115200, timeout=30)
    try:
        link.enter_raw_repl(soft_reset=False)
        return link.exec(code).decode()
    finally:
        link.close()


@pytest.mark.parametrize("board", ["QEMU_MPS2_AN385", "QEMU_VIRT_RV32"])
def test_provision_over_the_serial_line_programs_the_uds_and_registers_the_device_id(
        board, tmp_path):
    db = tmp_path / "gw.db"
    key, authority = tmp_path / "gateway.key", tmp_path / "authority.pem"
    flash, uds = qemu.make_flash(tmp_path / "flash.img"), tmp_path / "uds"  # blank
    device = QemuDevice(board, flash=flash, uds=uds)
    try:
        pty = device.release_console()
        load_or_create_static_key(key)  # as the gateway creates it
        Authority.load_or_create(authority)
        out = _cli(db, "device", "provision", "--port", pty, "--label", "unit 7",
                   "--gateway-key", str(key), "--authority-key", str(authority)).stdout
        programmed = uds.read_bytes()
        again = _cli(db, "device", "provision", "--port", pty, "--gateway-key", str(key),
                     "--authority-key", str(authority), ok=False)
        # What a second provisioning cannot do: write the one-time storage again.
        rewrite = _on_console(pty, "import _board\ntry:\n    _board.program_uds()\n"
                                   "except OSError as e:\n    print('refused', e.errno)\n")
    finally:
        device.close()
    assert "UDS programmed on the device" in out and len(programmed) == 32
    assert "UDS programmed" not in again.stdout and "already provisioned" in again.stderr
    assert rewrite.strip() == "refused 17" and uds.read_bytes() == programmed
    ueid = bytes.fromhex(out.split("ueid ")[1].split()[0])
    device_id = bytes.fromhex(out.split("DeviceID ")[1].split(")")[0])
    assert attest.ueid_for(device_id) == ueid
    assert Store(db).device_id_key(ueid) == device_id
    # The DeviceID registered is the one the programmed UDS gives, boot after boot.
    device = QemuDevice(board, flash=flash, uds=uds)
    try:
        assert device.exec("import _sealink_crypto as c\nprint(c.dice()[5].hex())").strip() \
            == device_id.hex()
    finally:
        device.close()
    # What provisioning wrote to the device's flash: the keys it enrolls with.
    device = QemuDevice(board, flash=flash)
    try:
        config = json.loads(device.exec("print(open('config.json').read())"))
    finally:
        device.close()
    assert config["authority_key"] == Authority.load_or_create(authority).public_key.hex()
    assert len(bytes.fromhex(config["gateway_key"])) == 32


def test_provision_refuses_a_device_without_a_uds(tmp_path):
    db, key, authority = tmp_path / "gw.db", tmp_path / "gateway.key", tmp_path / "a.pem"
    load_or_create_static_key(key)
    Authority.load_or_create(authority)
    device = QemuDevice("QEMU_MPS2_AN385", flash=qemu.make_flash(tmp_path / "f.img"))
    try:
        out = _cli(db, "device", "provision", "--port", device.release_console(),
                   "--gateway-key", str(key), "--authority-key", str(authority), ok=False)
    finally:
        device.close()
    assert "no DICE identity" in out.stderr


def test_firmware_reference_values_are_registered_and_listed(tmp_path):
    db = tmp_path / "gw.db"
    ref = BUILD / "QEMU_MPS2_AN385" / "reference.json"
    app = tmp_path / "main.py"
    app.write_text("print('app')\n")
    _cli(db, "firmware", "register", str(ref))
    _cli(db, "firmware", "register", "--app", "main.py", "--bad", str(app))
    listed = json.loads(_cli(db, "firmware", "list", "--json").stdout)
    assert [(r["name"], r["status"]) for r in listed] == [("firmware", "good"),
                                                          ("main.py", "bad")]
    assert listed[0]["digest"] == json.loads(ref.read_text())["firmware"]
    bad = tmp_path / "bad.json"
    for text in ("{not json", '{"firmware": "00"}', '{"board": "x"}', "[]"):
        bad.write_text(text)
        assert "not a reference.json" in _cli(db, "firmware", "register", str(bad),
                                              ok=False).stderr
    assert "NAME must be" in _cli(db, "firmware", "register", "--app", "x.py", str(app),
                                  ok=False).stderr
    assert len(json.loads(_cli(db, "firmware", "list", "--json").stdout)) == 2  # kept


def test_attest_verify_checks_a_result_offline(tmp_path):
    from evidence import Identity

    authority = Authority.load_or_create(tmp_path / "authority.pem")
    ident = Identity(bytes(32), [("firmware", bytes(32))], "v1")
    ev = attest.verify_evidence(ident.evidence(), ident.static_public,
                                {ident.ueid: ident.device_id}.get)
    store = Store(tmp_path / "x.db")
    token, _ = store.create_token({}, 60)
    device = store.enroll(token, ident.static_public)
    verdict = attest.appraise(ev, lambda n, d: "good")
    result = attest.issue_result(authority._key, device.id, ev, verdict)
    store.record_attestation(device.id, verdict.decision, verdict.reason, {}, result)
    store.close()
    # The operator exports the stored result; a third party checks it offline.
    path = tmp_path / "result.cose"
    out = _cli(tmp_path / "x.db", "attest", "export", device.id, str(path)).stdout
    assert path.read_bytes() == result and "trusted (reference_values_match)" in out
    key = authority.public_key.hex()
    out = _cli(tmp_path / "x.db", "attest", "verify", str(path), "--authority-key", key).stdout
    assert out.startswith(f"valid: {device.id} trusted")
    assert "no attestation result" in _cli(tmp_path / "x.db", "attest", "export", "dev-none",
                                           str(path), ok=False).stderr
    path.write_bytes(result.replace(device.id.encode(), b"dev-000000000000"))
    out = _cli(tmp_path / "x.db", "attest", "verify", str(path), "--authority-key", key,
               ok=False)
    assert "signature does not verify" in out.stderr
    path.write_bytes(b"\x00" * 10)
    assert "not a COSE_Sign1" in _cli(tmp_path / "x.db", "attest", "verify", str(path),
                                      "--authority-key", key, ok=False).stderr
