"""The DICE boot stage on the QEMU boards (boards/qemu_common/board_dice.c,
firmware/usermod/sealink_crypto/dice.c): before any Python code runs it measures the
firmware and the boot files, derives the Noise static key from the UDS and those
measurements, has the DeviceID key (from the UDS alone) sign the evidence, and forgets
the UDS and the DeviceID secret."""

import hashlib
import hmac
import json

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from devices import BUILD, ROOT, QemuDevice, UnixDevice
from sim import qemu

# The unix firmware's boot stage (`-X uds=PATH`) measures the executable and the boot
# files in its working directory, which stands for its flash here.
BOARDS = ["QEMU_MPS2_AN385", "QEMU_VIRT_RV32", "UNIX"]


def boot(board, flash, uds=None, **kw):
    if board == "UNIX":
        return UnixDevice(uds=uds, cwd=flash)
    return QemuDevice(board, flash=flash, uds=uds, **kw)

_READ = """
import _sealink_crypto as c, binascii, json
h = lambda b: binascii.hexlify(b).decode() if b is not None else None
r = c.dice()
print(json.dumps(None if r is None else [r[0], h(r[1]), h(r[2]), h(r[3]),
                                         [[n, h(d)] for n, d in r[4]], h(r[5])]))
"""


def _identity(board, flash, uds):
    device = boot(board, flash, uds)
    try:
        out = device.exec(_READ).strip()
    finally:
        device.close()
    got = json.loads(out)
    if got is None:
        return None
    state, key, evidence, register, log, device_id = got
    return {"state": state, "static_key": key and bytes.fromhex(key),
            "evidence": bytes.fromhex(evidence), "register": bytes.fromhex(register),
            "log": [(n, bytes.fromhex(d)) for n, d in log],
            "device_id": bytes.fromhex(device_id)}


def _write(board, flash, name, text):
    if board == "UNIX":
        (flash / name).write_text(text)
        return
    device = QemuDevice(board, flash=flash)
    try:
        device.exec(f"with open({name!r}, 'w') as f:\n    f.write({text!r})\n")
    finally:
        device.close()


def _storage(board, tmp_path):
    """A QEMU board's flash image, or the unix device's working directory."""
    if board == "UNIX":
        (tmp_path / "fs").mkdir(exist_ok=True)
        return tmp_path / "fs"
    return qemu.make_flash(tmp_path / "flash.img")


@pytest.fixture
def provisioned(tmp_path, board):
    return _storage(board, tmp_path), qemu.make_uds(tmp_path / "uds.bin")


@pytest.mark.parametrize("board", BOARDS)
def test_boot_stage_measures_the_firmware_the_build_references(board, provisioned):
    flash, uds = provisioned
    ident = _identity(board, flash, uds)
    reference = json.loads((BUILD / board / "reference.json").read_text())
    assert ident["state"] == 2
    assert ident["log"][0] == ("firmware", bytes.fromhex(reference["firmware"]))
    # The register is the chain of the log, from 32 zero bytes.
    register = bytes(32)
    for _, digest in ident["log"]:
        register = hashlib.sha256(register + digest).digest()
    assert register == ident["register"]


@pytest.mark.parametrize("board", BOARDS)
def test_changed_main_py_gives_another_static_key_from_the_same_device(board, provisioned):
    flash, uds = provisioned
    first = _identity(board, flash, uds)
    again = _identity(board, flash, uds)
    assert again["static_key"] == first["static_key"]  # same code, same key
    _write(board, flash, "main.py", "print('changed after provisioning')\n")
    changed = _identity(board, flash, uds)
    assert changed["static_key"] != first["static_key"]
    assert changed["device_id"] == first["device_id"]  # the same device says so
    main = hashlib.sha256(b"print('changed after provisioning')\n").digest()
    assert changed["log"][1:] == [("main.py", main)]


@pytest.mark.parametrize("board", BOARDS)
def test_keys_follow_from_the_uds_and_the_measurements_only(board, provisioned):
    """The derivations of docs/attestation.md, recomputed on the host from the UDS."""
    flash, uds = provisioned
    ident = _identity(board, flash, uds)
    secret = uds.read_bytes()
    seed = hmac.new(secret, b"sealink DeviceID v1", hashlib.sha256).digest()
    device_id = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    cdi = hmac.new(secret, ident["register"], hashlib.sha256).digest()
    static = hmac.new(cdi, b"sealink Noise static v1", hashlib.sha256).digest()
    assert ident["device_id"] == device_id
    assert ident["static_key"] == static
    assert X25519PrivateKey.from_private_bytes(static)  # a valid X25519 secret


@pytest.mark.parametrize("board", BOARDS)
def test_evidence_is_a_cose_sign1_eat_a_standard_verifier_accepts(board, provisioned):
    flash, uds = provisioned
    ident = _identity(board, flash, uds)
    message = Sign1Message.decode(ident["evidence"])
    message.key = OKPKey(crv=Ed25519, x=ident["device_id"])
    assert message.verify_signature()
    claims = cbor2.loads(message.payload)
    static_public = X25519PrivateKey.from_private_bytes(
        ident["static_key"]).public_key().public_bytes_raw()
    assert claims[8] == {1: {1: 1, -1: 4, -2: static_public}}  # cnf: the Noise key
    assert claims[256] == b"\x01" + hashlib.sha256(ident["device_id"]).digest()[:16]
    assert claims[2399] == [{1: n, 2: d} for n, d in ident["log"]]
    assert claims[-70001] == ident["register"]
    assert claims[271] == [json.loads((BUILD / board / "reference.json").read_text())
                           ["version"]]
    # Deterministic encoding: re-encoding the decoded claims gives the same bytes.
    assert cbor2.dumps(claims, canonical=True) == message.payload
    tampered = bytearray(ident["evidence"])
    tampered[-70] ^= 1  # a byte of the payload's register
    broken = Sign1Message.decode(bytes(tampered))
    broken.key = message.key
    assert not broken.verify_signature()


@pytest.mark.parametrize("board", BOARDS)
def test_uds_of_the_wrong_size_gives_no_identity(board, tmp_path):
    flash = _storage(board, tmp_path)
    uds = tmp_path / "uds.bin"
    uds.write_bytes(bytes(31))
    ident = _identity(board, flash, uds)
    assert ident["state"] == -1 and ident["static_key"] is None and ident["evidence"] == b""
    assert _identity(board, flash, None) is None  # not provisioned: no DICE at all
    # What layer 1 sees: a typed error, not a key.
    device = boot(board, flash, uds)
    try:
        out = device.exec("from sealink import attestation\n"
                          "try:\n"
                          "    attestation.identity()\n"
                          "except attestation.AttestationError as e:\n"
                          "    print(type(e).__name__, e)\n")
    finally:
        device.close()
    assert out.strip() == "AttestationError DICE boot stage: the UDS is not 32 bytes"


def _ram(board):
    """The guest's writable memory: data, bss (the heap is there) and the stack."""
    from elftools.elf.elffile import ELFFile

    with (BUILD / board / "firmware.elf").open("rb") as f:
        elf = ELFFile(f)
        ranges = [(s["p_vaddr"], s["p_vaddr"] + s["p_memsz"]) for s in elf.iter_segments()
                  if s["p_type"] == "PT_LOAD" and s["p_flags"] & 2 and s["p_memsz"]]
        symbols = {s.name: s["st_value"] for s in elf.get_section_by_name(".symtab")
                   .iter_symbols() if s.name in ("_estack", "_etext")}
    if board == "QEMU_MPS2_AN385":
        # One RWX segment from 0: skip the code; the stack grows down from _estack.
        ranges = [(symbols["_etext"], ranges[0][1]),
                  (symbols["_estack"] - 0x4000, symbols["_estack"])]
    return ranges


def _unix_ram(pid):
    """A unix device's writable memory, read from outside through /proc."""
    chunks = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb") as mem:
        for line in maps:
            fields = line.split()
            if "w" not in fields[1] or (len(fields) > 5 and fields[5].startswith("[v")):
                continue
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(lo)
                chunks.append(mem.read(hi - lo))
            except OSError:
                pass
    return b"".join(chunks)


@pytest.mark.parametrize("board", BOARDS)
def test_uds_and_device_id_secret_are_gone_from_memory(board, provisioned, tmp_path):
    """After boot no copy of the UDS, the DeviceID secret or the CDI is left anywhere in
    the device's writable memory (static data, heap, stack), read from outside it:
    QEMU's monitor for the boards, /proc/PID/mem for the unix firmware.  The static key
    (layer 1's) is there, as it must be."""
    flash, uds = provisioned
    secret = uds.read_bytes()
    seed = hmac.new(secret, b"sealink DeviceID v1", hashlib.sha256).digest()
    device = boot(board, flash, uds, **({} if board == "UNIX"
                                        else {"monitor": tmp_path / "monitor.sock"}))
    try:
        out = device.exec("import _sealink_crypto as c, binascii\n"
                          "r = c.dice()\n"
                          "h = lambda b: binascii.hexlify(b).decode()\n"
                          "print(h(r[3]), h(r[1]))")
        register, static = (bytes.fromhex(x) for x in out.split())
        if board == "UNIX":
            ram = _unix_ram(device.proc.pid)
        else:
            ram = b"".join(device.guest_memory(lo, hi - lo, tmp_path / f"ram-{lo:x}.bin")
                           for lo, hi in _ram(board))
    finally:
        device.close()
    cdi = hmac.new(secret, register, hashlib.sha256).digest()
    assert len(ram) > 100_000
    assert static in ram  # the scan sees what is there
    for name, value in (("UDS", secret), ("DeviceID secret", seed), ("CDI", cdi)):
        assert value not in ram, name
        assert value[:16] not in ram and value[16:] not in ram, name


@pytest.mark.parametrize(("board", "arch"), [("QEMU_MPS2_AN385", "armv7m"),
                                             ("QEMU_VIRT_RV32", "rv32imc")])
def test_python_code_cannot_run_machine_code_nor_write_memory(board, arch, tmp_path):
    # Machine code could issue the semihosting calls that reach the UDS file, and
    # machine.mem32 could patch the boot stage's code: a QEMU board allows neither.
    import subprocess

    src = tmp_path / "fast.py"
    src.write_text("@micropython.native\ndef f():\n    return 7\n")
    subprocess.run([str(ROOT / "deps/micropython/mpy-cross/build/mpy-cross"),
                    f"-march={arch}", str(src), "-o", str(tmp_path / "fast.mpy")], check=True)
    native = (tmp_path / "fast.mpy").read_bytes()
    device = boot(board, _storage(board, tmp_path))
    try:
        out = device.exec(
            f"open('fast.mpy', 'wb').write({native!r})\n"
            "def attempt(code):\n"
            "    try:\n"
            "        exec(code)\n"
            "        print('ran')\n"
            "    except Exception as e:\n"
            "        print(type(e).__name__, e)\n"
            "attempt('import fast')\n"
            "attempt('@micropython.native\\ndef g():\\n    return 1\\n')\n"
            "attempt('@micropython.viper\\ndef g():\\n    return 1\\n')\n"
            f"attempt('@micropython.asm_{'rv32' if 'rv32' in arch else 'thumb'}"
            "\\ndef g():\\n    nop()\\n')\n"
            "import machine\n"
            "print('mem32' if hasattr(machine, 'mem32') else 'no mem32')\n")
    finally:
        device.close()
    assert out.split("\n")[:5] == ["ValueError incompatible .mpy file",
                                   "SyntaxError invalid micropython decorator",
                                   "SyntaxError invalid micropython decorator",
                                   "SyntaxError invalid micropython decorator",
                                   "no mem32"]
