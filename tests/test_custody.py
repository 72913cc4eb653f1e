"""Key custody (docs/key-custody.md): the gateway's keys encrypted at rest under a
passphrase (Argon2id) or sealed to a TPM 2.0 (swtpm, started by the tests, through
tpm2-tools), and `sealink gateway` refusing, with a message that says which, to start
on a loose file, a wrong passphrase, another gateway's file or a TPM that cannot
unseal.  Bad files are refused with typed errors and nothing is overwritten."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sealink import crypto
from sealink_gateway import custody
from sealink_gateway.store import Store
from tpm import SwTpm

SEALINK = str(Path(sys.executable).parent / "sealink")
FAST = {"t": 1, "m_kib": 1024, "p": 1}  # library-level tests: a cheap KDF


def _config(d: Path, mode: str = "passphrase", tcti: str = "", pcrs: str = "") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    text = ('[gateway]\ndatabase = "gw.db"\n[[transport]]\nurl = "udp://127.0.0.1:0"\n'
            f'[custody]\nmode = "{mode}"\nfile = "gateway.keys"\n')
    if tcti:
        text += f'tpm = "{tcti}"\n'
    if pcrs:
        text += f'pcrs = "{pcrs}"\n'
    (d / "gateway.toml").write_text(text)
    return d / "gateway.toml"


def _sealink(*args, passphrase="correct horse battery", ok=True, env=None, timeout=60):
    environ = dict(os.environ, **(env or {}))
    environ.pop("SEALINK_PASSPHRASE", None)
    if passphrase is not None:
        environ["SEALINK_PASSPHRASE"] = passphrase
    out = subprocess.run([SEALINK, *args], capture_output=True, text=True, timeout=timeout,
                         env=environ, stdin=subprocess.DEVNULL)
    assert (out.returncode == 0) == ok, (args, out.stdout, out.stderr)
    return out


def _start(config: Path, passphrase="correct horse battery") -> subprocess.CompletedProcess:
    """`sealink gateway` until it listens (then stopped), or until it refuses."""
    environ = dict(os.environ, SEALINK_PASSPHRASE=passphrase)
    proc = subprocess.Popen([SEALINK, "gateway", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environ, stdin=subprocess.DEVNULL)
    err = ""
    for line in proc.stderr:
        err += line
        if "listening" in line:
            proc.terminate()
            break
    proc.wait(30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err + proc.stderr.read())


@pytest.fixture
def swtpm(tmp_path):
    t = SwTpm(tmp_path / "tpm-state")
    yield t
    t.stop()


def test_keys_at_rest_are_encrypted_under_the_passphrase(tmp_path):
    config = _config(tmp_path)
    out = _sealink("keys", "init", "--config", str(config)).stdout
    keyfile = tmp_path / "gateway.keys"
    assert oct(keyfile.stat().st_mode & 0o777) == "0o600"
    public = out.split("gateway key")[1].split()[0]
    keys = custody.unlock(keyfile, passphrase=lambda: b"correct horse battery")
    assert keys.static_public.hex() == public
    raw = keyfile.read_bytes()
    for secret in (keys.static, keys.authority):  # neither in the file, in any encoding
        assert secret.hex().encode() not in raw and secret not in raw
    doc = json.loads(raw)
    assert doc["passphrase"]["kdf"] == "argon2id" and doc["passphrase"]["m_kib"] == 65536
    # The gateway starts on it, and the database now knows the key as its own.
    started = _start(config)
    assert "listening" in started.stderr and public in started.stderr
    assert Store(tmp_path / "gw.db").gateway_keys("static") == {bytes.fromhex(public)}
    # What an operator sees without unlocking anything.
    show = json.loads(_sealink("keys", "show", "--config", str(config), "--json",
                               passphrase=None).stdout)
    assert show["custody"] == "passphrase" and show["gateway_key"] == public
    assert show["database_knows"] == [public] and "salt" not in show["kdf"]
    check = json.loads(_sealink("gateway", "--config", str(config), "check", "--json",
                                passphrase=None).stdout)
    assert check["authority"] == doc["public"]["authority"]
    assert check["custody"].startswith("passphrase")
    # A second init never overwrites the keys.
    again = _sealink("keys", "init", "--config", str(config), ok=False)
    assert "never overwritten" in again.stderr
    assert keyfile.read_bytes() == raw


def test_gateway_refuses_a_wrong_passphrase(tmp_path):
    config = _config(tmp_path)
    _sealink("keys", "init", "--config", str(config))
    started = _start(config, passphrase="correct horse battery!")
    assert started.returncode != 0 and "listening" not in started.stderr
    assert "wrong passphrase" in started.stderr
    assert "correct horse" not in started.stderr  # no secret in what it says
    audit = Store(tmp_path / "gw.db").audit_log()
    assert audit[0]["event"] == "keys.unlock_refused"
    assert audit[0]["detail"]["error"] == "PassphraseError"


def test_gateway_refuses_a_key_file_with_loose_permissions(tmp_path):
    config = _config(tmp_path)
    _sealink("keys", "init", "--config", str(config))
    (tmp_path / "gateway.keys").chmod(0o640)
    started = _start(config)
    assert started.returncode != 0 and "listening" not in started.stderr
    assert "gateway.keys has mode 0640" in started.stderr


def test_gateway_refuses_a_key_file_from_another_gateway(tmp_path):
    ours, theirs = _config(tmp_path / "ours"), _config(tmp_path / "theirs")
    _sealink("keys", "init", "--config", str(ours))
    _sealink("keys", "init", "--config", str(theirs))
    assert "listening" in _start(ours).stderr  # our database adopts our key
    os.replace(tmp_path / "theirs" / "gateway.keys", tmp_path / "ours" / "gateway.keys")
    started = _start(ours)  # same passphrase, a valid file: but not ours
    assert started.returncode != 0 and "listening" not in started.stderr
    assert "a key file from another gateway" in started.stderr


def test_gateway_refuses_to_start_without_a_passphrase(tmp_path):
    config = _config(tmp_path)
    _sealink("keys", "init", "--config", str(config))
    environ = {k: v for k, v in os.environ.items() if k != "SEALINK_PASSPHRASE"}
    out = subprocess.run([SEALINK, "gateway", "--config", str(config)], capture_output=True,
                         text=True, timeout=60, env=environ, stdin=subprocess.DEVNULL)
    assert out.returncode != 0 and "no passphrase: set SEALINK_PASSPHRASE" in out.stderr


def test_passphrase_is_read_from_a_file_descriptor(tmp_path):
    config = _config(tmp_path)
    _sealink("keys", "init", "--config", str(config))
    r, w = os.pipe()
    os.write(w, b"correct horse battery\n")
    os.close(w)
    try:
        out = subprocess.run([SEALINK, "keys", "backup", "--config", str(config),
                              "--passphrase-fd", str(r), "--out", str(tmp_path / "s"),
                              "--no-qr"], capture_output=True, text=True, timeout=60,
                             pass_fds=(r,), stdin=subprocess.DEVNULL,
                             env={k: v for k, v in os.environ.items()
                                  if k != "SEALINK_PASSPHRASE"})
    finally:
        os.close(r)
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "s").glob("share-*-of-5.txt"))) == 5


# --- bad files ------------------------------------------------------------------------------

@pytest.fixture
def keyfile(tmp_path):
    path = tmp_path / "gateway.keys"
    keys = custody.GatewayKeys.generate()
    custody.write(path, keys, "passphrase", passphrase=lambda: b"pw", argon2=FAST)
    return path, keys


def _rewrite(path: Path, data: bytes) -> None:
    path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, data)
    os.close(fd)


@pytest.mark.parametrize(("damage", "error", "says"), [
    (lambda raw: raw[: len(raw) // 2], custody.KeyFormatError, "not JSON: truncated"),
    (lambda raw: b"", custody.KeyFormatError, "not JSON"),
    (lambda raw: raw.replace(b'"version": 1', b'"version": 2'), custody.KeyFormatError,
     "format version 2; this Sealink reads up to version 1"),
    (lambda raw: raw.replace(b'"format": "sealink-gateway-keys"', b'"format": "other"'),
     custody.KeyFormatError, "is not a Sealink key file"),
    (lambda raw: raw.replace(b'"custody": "passphrase"', b'"custody": "hsm"'),
     custody.KeyFormatError, "unknown custody mode 'hsm'"),
    (lambda raw: raw.replace(b'"ciphertext": "', b'"ciphertext": "00'),
     custody.KeyFormatError, "ciphertext is 81 bytes"),
    # A header field changed (the KDF's cost lowered): the AEAD's associated data.
    (lambda raw: raw.replace(b'"t": 1', b'"t": 2'), custody.PassphraseError,
     "wrong passphrase (or the file was altered)"),
])
def test_damaged_key_files_are_refused_with_a_typed_error(keyfile, damage, error, says):
    path, keys = keyfile
    good = path.read_bytes()
    _rewrite(path, damage(good))
    with pytest.raises(error) as e:
        custody.unlock(path, passphrase=lambda: b"pw")
    assert says in str(e.value)
    # Nothing was overwritten: put the good file back and it opens.
    _rewrite(path, good)
    assert custody.unlock(path, passphrase=lambda: b"pw") == keys


# --- TPM ----------------------------------------------------------------------------------

def test_tpm_custody_seals_the_keys_to_this_tpm(tmp_path, swtpm):
    config = _config(tmp_path, "tpm", swtpm.tcti)
    out = _sealink("keys", "init", "--config", str(config), passphrase=None).stdout
    public = out.split("gateway key")[1].split()[0]
    doc = json.loads((tmp_path / "gateway.keys").read_text())
    assert doc["custody"] == "tpm" and "passphrase" not in doc
    started = _start(config, passphrase="")
    assert "listening" in started.stderr and public in started.stderr
    # The swtpm restarts (a reboot): same owner seed, same storage key, unseals again.
    swtpm.reboot()
    assert "listening" in _start(config, passphrase="").stderr
    audit = [e["event"] for e in Store(tmp_path / "gw.db").audit_log()]
    assert audit[:3] == ["keys.unlock", "keys.unlock", "keys.init"]


def test_gateway_refuses_a_tpm_that_cannot_unseal(tmp_path, swtpm):
    config = _config(tmp_path, "tpm", swtpm.tcti)
    _sealink("keys", "init", "--config", str(config), passphrase=None)
    other = SwTpm(tmp_path / "other-tpm")  # another machine's TPM: another owner seed
    try:
        config.write_text(config.read_text().replace(swtpm.tcti, other.tcti))
        started = _start(config, passphrase="")
    finally:
        other.stop()
    assert started.returncode != 0 and "listening" not in started.stderr
    assert "cannot load the sealed key: it was sealed by another TPM" in started.stderr


def test_gateway_refuses_an_absent_tpm(tmp_path, swtpm):
    config = _config(tmp_path, "tpm", swtpm.tcti)
    _sealink("keys", "init", "--config", str(config), passphrase=None)
    swtpm.stop()
    started = _start(config, passphrase="")
    assert started.returncode != 0 and f"no TPM at {swtpm.tcti}" in started.stderr


def test_tpm_custody_bound_to_pcrs_refuses_once_they_change(tmp_path, swtpm):
    config = _config(tmp_path, "tpm", swtpm.tcti, pcrs="sha256:16")
    _sealink("keys", "init", "--config", str(config), passphrase=None)
    assert "listening" in _start(config, passphrase="").stderr
    # What a changed boot chain does to a PCR (16 is the debug PCR: resettable).
    swtpm.tool("tpm2_pcrextend", "16:sha256=" + "11" * 32)
    started = _start(config, passphrase="")
    assert started.returncode != 0
    assert "PCR values are not the ones the key was sealed to" in started.stderr
    swtpm.tool("tpm2_pcrreset", "16")
    assert "listening" in _start(config, passphrase="").stderr


def test_gateway_refuses_a_tpm_in_dictionary_attack_lockout(tmp_path, swtpm):
    config = _config(tmp_path, "tpm", swtpm.tcti)
    _sealink("keys", "init", "--config", str(config), passphrase=None)
    # Someone guesses a password on the TPM: one failure with max-tries 1 locks it out.
    d = tmp_path / "guess"
    d.mkdir()
    swtpm.tool("tpm2_createprimary", "-Q", "-C", "o", "-g", "sha256", "-G", "ecc",
               "-c", str(d / "p.ctx"))
    (d / "secret").write_bytes(b"12345678")
    swtpm.tool("tpm2_create", "-Q", "-C", str(d / "p.ctx"), "-p", "right", "-i",
               str(d / "secret"), "-u", str(d / "o.pub"), "-r", str(d / "o.priv"))
    swtpm.tool("tpm2_flushcontext", "-t")
    swtpm.tool("tpm2_dictionarylockout", "-Q", "--setup-parameters", "--max-tries=1",
               "--recovery-time=600", "--lockout-recovery-time=600")
    swtpm.tool("tpm2_load", "-Q", "-C", str(d / "p.ctx"), "-u", str(d / "o.pub"),
               "-r", str(d / "o.priv"), "-c", str(d / "o.ctx"))
    swtpm.tool("tpm2_flushcontext", "-t")
    with pytest.raises(RuntimeError):
        swtpm.tool("tpm2_unseal", "-c", str(d / "o.ctx"), "-p", "wrong")
    before = (tmp_path / "gateway.keys").read_bytes()
    started = _start(config, passphrase="")
    assert started.returncode != 0 and "listening" not in started.stderr
    assert "is in dictionary-attack lockout" in started.stderr
    assert (tmp_path / "gateway.keys").read_bytes() == before  # nothing overwritten


def test_a_gateway_moves_its_plain_keys_into_custody_and_keeps_them(tmp_path):
    """`sealink keys init --import-plain`: the same keys (so every enrolled device keeps
    reaching the gateway), now encrypted; the plain files are named for destruction."""
    from sealink_gateway.authority import Authority
    from sealink_gateway.run import load_or_create_static_key

    static = load_or_create_static_key(tmp_path / "gateway.key")  # as a plain gateway made
    authority = Authority.load_or_create(tmp_path / "authority.pem")
    config = _config(tmp_path)
    out = _sealink("keys", "init", "--config", str(config), "--import-plain").stdout
    assert "still hold the keys unencrypted: destroy them" in out
    header = custody.read_header(tmp_path / "gateway.keys")["public"]
    assert header["static"] == crypto.x25519_base(static).hex()
    assert header["authority"] == authority.public_key.hex()
    started = _start(config)
    assert "listening" in started.stderr and crypto.x25519_base(static).hex() in started.stderr
