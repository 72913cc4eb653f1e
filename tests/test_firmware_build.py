"""Firmware facts that need the built images: the module is in every board, its flash
cost is reported, and its C sources build for the ESP32-C3 instruction set."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
MPY = ROOT / "deps" / "micropython"
MODULE = ROOT / "firmware" / "usermod" / "sealink_crypto"


def _size_rows() -> dict[str, dict]:
    """tools/firmware_size.py --json for the boards built here, by board."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "firmware_size.py"), "--json",
         "UNIX", "QEMU_MPS2_AN385", "QEMU_VIRT_RV32"],
        check=True, capture_output=True, text=True).stdout
    return {r["board"]: r for r in json.loads(out)}


def test_size_report_covers_every_board():
    rows = _size_rows()
    assert set(rows) == {"UNIX", "QEMU_MPS2_AN385", "QEMU_VIRT_RV32"}
    for board, row in rows.items():
        # X25519 + ChaCha20-Poly1305 + Ed25519 + SHA-512 + the Noise handshake +
        # bindings: tens of KiB, the linker dropping what the module does not call
        # (BLAKE2b, Argon2, Elligator).
        assert 2_000 < row["module_text"] < 60_000, (board, row)
        # The frozen Python (asyncio and lib/sealink as bytecode) is counted too: the
        # baseline freezes the same, so the module's figure leaves it out.
        assert 20_000 < row["frozen"] < 120_000, (board, row)
        # ... and split by package: all but a few per cent is put down to a module or
        # to the qstrs of a package (the rest: the table of module names, alignment).
        assert row["frozen_modules"]["other"] < row["frozen"] * 0.1, (board, row)
        assert 20_000 < row["frozen_sealink"] and 3_000 < row["frozen_asyncio"], board


def test_each_board_freezes_only_what_it_runs():
    rows = _size_rows()
    lora_node = {"sealink/session.py", "sealink/device.py",
                 "sealink/app.py", "sealink/drivers/rak3172.py", "sealink/ed25519.py"}
    # (The C module runs the Noise handshake and its HKDF: _sealink_crypto.Handshake.)
    not_on_a_lora_node = {"sealink/noise.py", "sealink/hkdf.py", "sealink/_hkdf_python.py",
                          "sealink/_crypto_python.py", "sealink/_crypto_cryptography.py",
                          "sealink/drivers/ble.py", "sealink/drivers/udp.py",
                          "sealink/drivers/lora_modem.py",
                          "sealink/drivers/rak3172_lorawan.py"}
    for board in ("QEMU_MPS2_AN385", "QEMU_VIRT_RV32"):
        modules = set(rows[board]["frozen_modules"])
        assert lora_node <= modules, board
        assert not modules & not_on_a_lora_node, board
        # Line numbers dropped (opt=3): the same module is smaller than on UNIX.
        assert rows[board]["frozen_modules"]["sealink/session.py"] < \
            rows["UNIX"]["frozen_modules"]["sealink/session.py"]
    assert lora_node | not_on_a_lora_node <= set(rows["UNIX"]["frozen_modules"])


@pytest.mark.parametrize("board", ["QEMU_MPS2_AN385", "QEMU_VIRT_RV32"])
def test_module_symbols_linked_into_firmware(board):
    with (BUILD / board / "firmware.elf").open("rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        names = {s.name for s in symtab.iter_symbols()}
    for symbol in ("sealink_crypto_user_cmodule", "crypto_x25519", "crypto_aead_read",
                   "sealink_ed25519_check", "crypto_hash_sha512_update"):
        assert symbol in names, (board, symbol)


def test_module_compiles_for_esp32_c3_isa(tmp_path):
    """ESP32-C3 is RV32IMC: build the module's C files with -march=rv32imc.

    The generated headers come from the QEMU_VIRT_RV32 build (same word size and
    endianness); the check is that our code and Monocypher compile warning-free for the
    ISA and use no instruction outside it (no atomics: the C3 has no 'A' extension).
    """
    gcc = "riscv64-unknown-elf-gcc"
    includes = [MPY, MPY / "ports" / "qemu", BUILD / "QEMU_VIRT_RV32",
                ROOT / "boards" / "QEMU_VIRT_RV32", MODULE / "monocypher",
                MODULE / "libsodium" / "include" / "sodium"]
    flags = ["-march=rv32imc", "-mabi=ilp32", "-Os", "-std=gnu99", "-Wall", "-Wextra",
             "-Werror", "-Wno-unused-parameter", "-ffunction-sections", "-fdata-sections",
             "-DQEMU_SOC_VIRT", '-DMICROPY_HW_BOARD_NAME="c3"', '-DMICROPY_HW_MCU_NAME="c3"',
             "-DCONFIGURED=1", "-DNATIVE_LITTLE_ENDIAN=1", "--specs=picolibc.specs"]
    flags += [f"-I{p}" for p in includes]
    objects = []
    for src in (MODULE / "modsealink_crypto.c", MODULE / "monocypher" / "monocypher.c",
                MODULE / "ed25519.c", MODULE / "sodium_utils.c",
                MODULE / "libsodium" / "crypto_hash" / "sha512" / "cp" / "hash_sha512_cp.c"):
        obj = tmp_path / (src.stem + ".o")
        subprocess.run([gcc, *flags, "-c", str(src), "-o", str(obj)], check=True)
        objects.append(obj)
    for obj in objects:
        with obj.open("rb") as f:
            elf = ELFFile(f)
            assert elf.elfclass == 32 and elf["e_machine"] == "EM_RISCV"
            assert elf["e_flags"] & 0x1, "compressed (C) instructions expected"
        dis = subprocess.run(["riscv64-unknown-elf-objdump", "-d", str(obj)],
                             check=True, capture_output=True, text=True).stdout
        mnemonics = {line.split("\t")[2].split()[0] for line in dis.splitlines()
                     if line.count("\t") >= 2}
        atomics = {m for m in mnemonics if m.startswith(("amo", "lr.", "sc."))}
        floats = {m for m in mnemonics if m.startswith(("fl", "fs", "fadd", "fmul", "fmv"))}
        assert not atomics and not floats, (obj.name, atomics, floats)
        if obj.stem == "monocypher":
            assert "mul" in mnemonics  # the M extension carries the field arithmetic
