"""The gateway's SQLite state and the operator CLI, on real files."""

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from sealink import crypto
from sealink_gateway.cli import main
from sealink_gateway.store import MIGRATIONS, Store, StoreError, TokenRefused


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "gw.db")
    yield s
    s.close()


def _key():
    return crypto.x25519_base(crypto.random_bytes(32))


def test_schema_is_versioned_and_migrated(tmp_path):
    s = Store(tmp_path / "a.db")
    assert s.schema_version == len(MIGRATIONS)
    s.close()
    # Reopening migrates nothing and keeps the data.
    s = Store(tmp_path / "a.db")
    assert s.schema_version == len(MIGRATIONS)
    s.close()
    db = sqlite3.connect(tmp_path / "a.db")
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer than this gateway"):
        Store(tmp_path / "a.db")


def test_token_is_one_time(store):
    token, _ = store.create_token({"site": "dock"}, 3600)
    key = _key()
    dev = store.enroll(token, key)
    assert dev.attributes == {"site": "dock"} and dev.status == "active"
    assert 1 <= dev.sid <= 0x7FFF
    assert store.device_by_sid(dev.sid).static_key == key
    with pytest.raises(TokenRefused, match="already used"):
        store.enroll(token, _key())
    events = [(r["event"], r["detail"].get("reason")) for r in store.audit_log()]
    assert ("enroll.refused", "token already used") in events


def test_expired_and_unknown_tokens_are_refused(store):
    token, _ = store.create_token({}, 0.01)
    time.sleep(0.05)
    with pytest.raises(TokenRefused, match="expired"):
        store.enroll(token, _key())
    with pytest.raises(TokenRefused, match="unknown"):
        store.enroll("00" * 16, _key())
    assert store.devices() == []


def test_tokens_are_stored_only_as_hashes(store, tmp_path):
    token, _ = store.create_token({}, 60)
    raw = (tmp_path / "gw.db").read_bytes() + (tmp_path / "gw.db-wal").read_bytes()
    assert token.encode() not in raw and bytes.fromhex(token) not in raw


def test_revoke(store):
    token, _ = store.create_token({}, 60)
    dev = store.enroll(token, _key())
    assert store.revoke(dev.id, "stolen").status == "revoked"
    with pytest.raises(StoreError):
        store.revoke(dev.id)


def test_a_batch_of_uplinks_is_given_the_ids_it_was_stored_under(store):
    """add_uplinks commits a batch in one statement and returns each row's id (the
    gateway hands them to subscribers and MQTT): they must be the rows' own, in order,
    also after rows were deleted and with another writer's work in between."""
    token, _ = store.create_token({}, 60)
    dev = store.enroll(token, _key())
    first = store.add_uplinks([(dev.id, b"a%d" % i, {"rssi": -i}) for i in range(5)])
    store.db.execute("DELETE FROM uplinks WHERE id = ?", (first[-1],))  # the newest
    store.db.commit()
    store.audit("between", dev.id)
    second = store.add_uplinks([(dev.id, b"b%d" % i, {"rssi": i}, i) for i in range(300)])
    assert store.add_uplinks([]) == []
    rows = {r["id"]: r for r in store.uplinks(dev.id, limit=1000)}
    for ids, prefix, n in ((first[:-1], b"a", 4), (second, b"b", 300)):
        assert [bytes(rows[i]["payload"]) for i in ids] == [prefix + b"%d" % i
                                                           for i in range(n)]
    assert [rows[i]["msg_id"] for i in second] == list(range(300))


def test_committed_rows_survive_kill_9(tmp_path):
    """A writer process killed with SIGKILL right after committing loses nothing."""
    path = tmp_path / "crash.db"
    code = f"""
import os, signal
from sealink_gateway.store import Store
s = Store({str(path)!r})
token, _ = s.create_token({{}}, 60)
dev = s.enroll(token, bytes(range(32)))
for i in range(50):
    s.add_uplink(dev.id, b"reading %d" % i, {{"rssi": -70}})
s.queue_downlink(dev.id, b"reboot")
os.kill(os.getpid(), signal.SIGKILL)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert run.returncode == -9
    s = Store(path)
    (dev,) = s.devices()
    assert [u["payload"] for u in s.uplinks(dev.id)] == [b"reading %d" % i for i in range(50)]
    assert [d["payload"] for d in s.downlinks(dev.id)] == [b"reboot"]
    s.close()


# --- The CLI --------------------------------------------------------------------------------

def _cli(db, *args):
    result = CliRunner().invoke(main, ["--db", str(db), *args], catch_exceptions=False)
    return result


def test_cli_enroll_and_device_commands(tmp_path):
    db = tmp_path / "cli.db"
    r = _cli(db, "enroll", "create", "--attr", "site=dock", "--attr", "kind=meter",
             "--ttl", "1h", "--json")
    assert r.exit_code == 0
    token = json.loads(r.output)["token"]
    s = Store(db)
    dev = s.enroll(token, _key())
    s.close()
    listed = json.loads(_cli(db, "device", "list", "--json").output)
    assert [d["id"] for d in listed] == [dev.id]
    assert listed[0]["attributes"] == {"site": "dock", "kind": "meter"}
    shown = json.loads(_cli(db, "device", "show", dev.id, "--json").output)
    assert shown["sid"] == dev.sid
    assert "revoked" in _cli(db, "device", "revoke", dev.id, "--reason", "lost").output
    assert json.loads(_cli(db, "device", "show", dev.id, "--json").output)["status"] == "revoked"
    audit = json.loads(_cli(db, "audit", "--json").output)
    assert audit[0]["event"] == "device.revoked" and audit[0]["detail"] == {"reason": "lost"}
    table = _cli(db, "device", "list").output
    assert dev.id in table and "revoked" in table


@pytest.mark.parametrize("args,message", [
    (["enroll", "create", "--ttl", "soon"], "not a duration"),
    (["enroll", "create", "--ttl", "0h"], "not a duration"),
    (["enroll", "create", "--attr", "novalue"], "not key=value"),
    (["device", "show", "dev-nope"], "no device dev-nope"),
    (["device", "revoke", "dev-nope"], "no active device"),
])
def test_cli_bad_arguments_get_clear_errors(tmp_path, args, message):
    r = CliRunner().invoke(main, ["--db", str(tmp_path / "x.db"), *args])
    assert r.exit_code != 0
    assert message in r.output


def test_cli_refuses_a_file_that_is_not_a_database(tmp_path):
    bad = tmp_path / "garbage.db"
    bad.write_bytes(os.urandom(4096))
    r = CliRunner().invoke(main, ["--db", str(bad), "device", "list"])
    assert r.exit_code != 0 and "cannot open" in r.output


def test_console_script_is_installed(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "sealink")
    r = subprocess.run([exe, "--db", str(tmp_path / "c.db"), "device", "list", "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout) == []


def test_cli_messages_tail(tmp_path):
    db = tmp_path / "m.db"
    s = Store(db)
    token, _ = s.create_token({}, 60)
    dev = s.enroll(token, _key())
    for i in range(5):
        s.add_uplink(dev.id, b"m%d" % i, {"rssi": -80 - i})
    s.close()
    lines = _cli(db, "messages", "tail", "-n", "3", "--json").output.splitlines()
    got = [json.loads(x) for x in lines]
    assert [g["payload"] for g in got] == ["bTI=", "bTM=", "bTQ="]  # m2, m3, m4
    assert got[0]["radio"] == {"rssi": -82} and got[0]["device"] == dev.id
    assert "6d34" in _cli(db, "messages", "tail", "-n", "1").output


def test_state_database_and_device_keystore_are_private(tmp_path):
    """Stage 6, finding 14: the database (payloads) and the CPython keystore (the
    device's private key) were created 0644."""
    import stat

    from sealink.device import Keystore

    store = Store(tmp_path / "state.db")
    token, _ = store.create_token({}, 60)  # a write: the -wal file exists now
    for name in ("state.db", "state.db-wal"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    store.close()
    ks = Keystore(str(tmp_path / "device.json"))
    ks.save()
    assert stat.S_IMODE((tmp_path / "device.json").stat().st_mode) == 0o600


def test_key_file_others_can_read_is_refused(tmp_path):
    """Stage 6, finding 14: a pre-existing 0644 gateway.key passed `sealink gateway
    check` and started the gateway."""
    from click.testing import CliRunner

    from sealink_gateway.authority import Authority
    from sealink_gateway.cli import main
    from sealink_gateway.keyfile import KeyFileError
    from sealink_gateway.run import load_or_create_static_key

    (tmp_path / "gateway.toml").write_text('[[transport]]\nurl = "udp://127.0.0.1:0"\n')
    key = tmp_path / "gateway.key"
    load_or_create_static_key(key)
    Authority.load_or_create(tmp_path / "authority.pem")
    runner = CliRunner()
    ok = runner.invoke(main, ["gateway", "--config", str(tmp_path / "gateway.toml"), "check"])
    assert ok.exit_code == 0, ok.output
    for path in (key, tmp_path / "authority.pem"):
        path.chmod(0o644)
        r = runner.invoke(main, ["gateway", "--config", str(tmp_path / "gateway.toml"),
                                 "check"])
        assert r.exit_code != 0 and f"{path} has mode 0644" in r.output
        with pytest.raises(KeyFileError, match="chmod 600"):
            (load_or_create_static_key(path) if path == key
             else Authority.load_or_create(path))
        path.chmod(0o600)


def test_enroll_create_prints_the_gateway_key_for_the_device(tmp_path):
    from sealink_gateway.run import load_or_create_static_key

    key = load_or_create_static_key(tmp_path / "gateway.key")
    r = CliRunner().invoke(main, ["--db", str(tmp_path / "s.db"), "enroll", "create",
                                  "--gateway-key", str(tmp_path / "gateway.key"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["gateway_key"] == crypto.x25519_base(key).hex()


def test_a_plain_gateway_key_that_starts_with_a_brace_is_read_as_a_key(tmp_path):
    # One plain key in 256 starts with the byte "{", as a custody file (JSON) does: the
    # CLI took such a key for a custody file and refused it.
    from sealink_gateway.keyfile import write_private

    key = b"{" + crypto.random_bytes(31)
    write_private(tmp_path / "gateway.key", key)
    r = CliRunner().invoke(main, ["--db", str(tmp_path / "s.db"), "enroll", "create",
                                  "--gateway-key", str(tmp_path / "gateway.key"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["gateway_key"] == crypto.x25519_base(key).hex()
