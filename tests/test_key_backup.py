"""Offline M-of-N backup of the gateway's keys (SLIP-0039 shares) and the restore drill
as an operator runs it: back up, destroy the keys, restore from 3 of 5 shares, and the
devices reconnect with KK, without a new enrollment.  Bad shares are refused, each
with a message that says why, and nothing is written."""

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sealink_gateway import backup, custody
from sealink_gateway.store import Store

SEALINK = str(Path(sys.executable).parent / "sealink")
PASS = "drill passphrase one"


def _env(passphrase=PASS, **more):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALINK_")}
    if passphrase is not None:
        env["SEALINK_PASSPHRASE"] = passphrase
    return env | more


def _sealink(config, *args, ok=True, **env):
    """`sealink ARGS --config CONFIG`; no --config when `config` is None or ARGS start
    with the global --db (the database commands take no --config)."""
    tail = [] if config is None or args[:1] == ("--db",) else ["--config", str(config)]
    out = subprocess.run([SEALINK, *args, *tail], capture_output=True,
                         text=True, timeout=120, env=_env(**env), stdin=subprocess.DEVNULL)
    assert (out.returncode == 0) == ok, (args, out.stdout, out.stderr)
    return out


def _token(db, keyfile):
    """`sealink enroll create --json --gateway-key KEYFILE`: (token, gateway key)."""
    made = subprocess.run([SEALINK, "--db", str(db), "enroll", "create", "--json",
                           "--gateway-key", str(keyfile)], capture_output=True, text=True,
                          timeout=30, check=True, env=_env())
    doc = json.loads(made.stdout)
    return doc["token"].encode(), bytes.fromhex(doc["gateway_key"])


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """`sealink gateway` with custody, until stopped."""

    def __init__(self, config: Path, passphrase=PASS):
        self.proc = subprocess.Popen([SEALINK, "gateway", "--config", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=_env(passphrase),
                                     stdin=subprocess.DEVNULL)
        self.err = ""
        for line in self.proc.stderr:
            self.err += line
            if "listening" in line:
                return
        self.proc.wait(30)
        raise RuntimeError(f"gateway did not start: {self.err}")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def _config(d: Path, port: int) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "gateway.toml").write_text(
        '[gateway]\ndatabase = "gw.db"\n'
        f'[[transport]]\nurl = "udp://127.0.0.1:{port}?mtu=51"\n'
        '[custody]\nmode = "passphrase"\nfile = "gateway.keys"\n')
    return d / "gateway.toml"


async def _talk(port, keystores, tokens, gateway_key, text):
    """Each device connects (XX with its token the first time, KK after) and sends
    one message, acknowledged."""
    from sealink.device import Device, Keystore
    from sealink.drivers.udp import Udp

    for path, token in zip(keystores, tokens, strict=False):
        device = Device(Udp("127.0.0.1", port, mtu=51), Keystore(str(path)),
                        {"token": token, "gateway_key": gateway_key,
                         "retry_ms": 300, "max_retries": 6})
        await device.radio.start()
        device.start()
        try:
            await device.connect(timeout_ms=30_000)
            await device.send(text + path.stem.encode())
            assert await device.flush(timeout_ms=30_000), device.stats
        finally:
            device.close()


def _destroy(path: Path) -> None:
    """What a lost disk does to the key file."""
    with path.open("r+b") as f:
        f.write(os.urandom(path.stat().st_size))
    path.unlink()


def test_restore_drill_three_of_five_shares_and_the_fleet_reconnects_with_kk(tmp_path):
    port = _free_port()
    config = _config(tmp_path / "gw", port)
    db = tmp_path / "gw" / "gw.db"
    _sealink(config, "keys", "init")
    keyfile = tmp_path / "gw" / "gateway.keys"
    gateway_key = bytes.fromhex(custody.read_header(keyfile)["public"]["static"])
    tokens = []
    for _ in range(3):
        token, named = _token(db, keyfile)
        assert named == gateway_key
        tokens.append(token)
    keystores = [tmp_path / f"device-{i}.json" for i in range(3)]

    gw = Gateway(config)
    try:
        asyncio.run(asyncio.wait_for(_talk(port, keystores, tokens, gateway_key, b"before "),
                                     120))
    finally:
        gw.stop()

    # Back up, with a passphrase on the shares, then lose the keys.
    out = _sealink(config, "keys", "backup", "--shares", "5", "--threshold", "3",
                   "--out", str(tmp_path / "shares"), "--share-passphrase",
                   SEALINK_SHARE_PASSPHRASE="share words pass").stdout
    assert "5 shares, any 3 restore" in out
    pages = sorted((tmp_path / "shares").glob("share-*-of-5.txt"))
    assert len(pages) == 5 and len(list((tmp_path / "shares").glob("*.png"))) == 5
    assert all(p.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pages)
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in pages)
    _destroy(keyfile)
    refused = subprocess.run([SEALINK, "gateway", "--config", str(config)], capture_output=True,
                             text=True, timeout=60, env=_env(), stdin=subprocess.DEVNULL)
    assert refused.returncode != 0 and "gateway.keys does not exist" in refused.stderr

    # Restore from shares 1, 3 and 5 under a new passphrase.
    out = _sealink(config, "keys", "restore", str(pages[0]), str(pages[2]), str(pages[4]),
                   passphrase="drill passphrase two",
                   SEALINK_SHARE_PASSPHRASE="share words pass").stdout
    assert f"gateway key {gateway_key.hex()}" in out

    gw = Gateway(config, passphrase="drill passphrase two")
    try:
        # No tokens now: each device must come back with what it kept (KK).
        asyncio.run(asyncio.wait_for(_talk(port, keystores, [b""] * 3, gateway_key,
                                           b"after "), 120))
    finally:
        gw.stop()
    store = Store(db)
    assert len(store.devices()) == 3  # nobody enrolled again
    for d in store.devices():
        patterns = [s["pattern"] for s in store.sessions(d.id)]
        assert patterns[0] == "KK" and patterns[-1] == "XK", patterns
    assert len(store.uplinks(limit=100)) == 6
    events = [e["event"] for e in store.audit_log(200)]
    for event in ("keys.init", "keys.unlock", "keys.backup", "keys.unlock_refused",
                  "keys.restore"):
        assert event in events, events


@pytest.fixture
def backed_up(tmp_path):
    config = _config(tmp_path / "gw", _free_port())
    _sealink(config, "keys", "init")
    _sealink(config, "keys", "backup", "--out", str(tmp_path / "shares"), "--no-qr")
    pages = sorted((tmp_path / "shares").glob("share-*-of-5.txt"))
    keyfile = tmp_path / "gw" / "gateway.keys"
    _destroy(keyfile)
    return config, pages, keyfile


def _restore_refused(config, keyfile, *pages, **env):
    out = _sealink(config, "keys", "restore", *map(str, pages), ok=False, **env)
    assert not keyfile.exists()  # nothing written
    return out.stderr


def _with_word(page: Path, index: int, word: str, into: Path) -> Path:
    share = backup.read_page(page)
    words = share.words.split()
    words[index] = word
    into.write_text(" ".join(words) + "\n")
    return into


def test_too_few_shares_are_refused(backed_up):
    config, pages, keyfile = backed_up
    err = _restore_refused(config, keyfile, pages[0], pages[1])
    assert "too few shares: 2 different share(s) given, this backup needs 3" in err
    err = _restore_refused(config, keyfile, pages[0], pages[1], pages[1])
    assert "too few shares: 2 different" in err


def test_a_typo_in_a_word_is_refused(backed_up, tmp_path):
    config, pages, keyfile = backed_up
    typo = _with_word(pages[2], 20, "zebraa", tmp_path / "typo.txt")
    err = _restore_refused(config, keyfile, pages[0], pages[1], typo)
    assert "'zebraa' is not a SLIP-0039 word (a typo?)" in err
    assert backup.read_page(pages[2]).words.split()[21] not in err  # no words echoed


def test_a_wrong_share_is_refused_by_its_checksum(backed_up, tmp_path):
    config, pages, keyfile = backed_up
    words = backup.read_page(pages[2]).words.split()
    other = "academic" if words[30] != "academic" else "acid"  # a real word, the wrong one
    wrong = _with_word(pages[2], 30, other, tmp_path / "wrong.txt")
    err = _restore_refused(config, keyfile, pages[0], pages[1], wrong)
    assert "checksum does not match" in err


def test_a_share_from_another_backup_is_refused(backed_up, tmp_path):
    config, pages, keyfile = backed_up
    other = _config(tmp_path / "other", _free_port())
    _sealink(other, "keys", "init")
    _sealink(other, "keys", "backup", "--out", str(tmp_path / "other-shares"), "--no-qr")
    stranger = sorted((tmp_path / "other-shares").glob("share-*.txt"))[2]
    err = _restore_refused(config, keyfile, pages[0], pages[1], stranger)
    assert "belongs to another backup" in err


def test_shares_of_another_gateway_are_refused(backed_up, tmp_path):
    config, _, keyfile = backed_up
    other = _config(tmp_path / "other", _free_port())
    _sealink(other, "keys", "init")
    _sealink(other, "keys", "backup", "--out", str(tmp_path / "other-shares"), "--no-qr")
    theirs = sorted((tmp_path / "other-shares").glob("share-*.txt"))[:3]
    err = _restore_refused(config, keyfile, *theirs)
    assert "shares of another gateway" in err


def test_a_wrong_backup_passphrase_is_refused(tmp_path):
    config = _config(tmp_path / "gw", _free_port())
    _sealink(config, "keys", "init")
    _sealink(config, "keys", "backup", "--out", str(tmp_path / "s"), "--no-qr",
             "--share-passphrase", SEALINK_SHARE_PASSPHRASE="right")
    keyfile = tmp_path / "gw" / "gateway.keys"
    _destroy(keyfile)
    pages = sorted((tmp_path / "s").glob("*.txt"))[:3]
    err = _restore_refused(config, keyfile, *pages, SEALINK_SHARE_PASSPHRASE="wrong")
    assert "a wrong backup passphrase?" in err
    _sealink(config, "keys", "restore", *map(str, pages), SEALINK_SHARE_PASSPHRASE="right")
    assert custody.unlock(keyfile, passphrase=lambda: PASS.encode()).static_public.hex() \
        in pages[0].read_text()
