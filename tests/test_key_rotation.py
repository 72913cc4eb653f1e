"""Rotation of the gateway's static key with a fleet (`sealink gateway` processes, the
device stack on CPython over UDP on loopback): `sealink keys rotate`, a restart, and
every device that reconnects under the old key during the grace period is sent a
credential (signed by the authority) naming the new one; from its next handshake on it
uses it.  A device offline during the rotation learns it at its next contact.  After
`sealink keys retire` only the new key is held, and no device was lost."""

import asyncio
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_key_backup import Gateway, _config, _free_port, _sealink, _token

from sealink import crypto
from sealink_gateway import custody
from sealink_gateway.authority import CredentialError, check_endorsement, endorse, verify
from sealink_gateway.store import Store


async def _session(port, keystore, gateway_key, authority_key, token=b"", text=b"hello"):
    """One connection of a device: handshake, one acknowledged message, and any
    credential the gateway sends on the way.  Returns the device's stats."""
    from sealink.device import Device, Keystore
    from sealink.drivers.udp import Udp

    device = Device(Udp("127.0.0.1", port, mtu=51), Keystore(str(keystore)),
                    {"token": token, "gateway_key": gateway_key,
                     "authority_key": authority_key, "retry_ms": 300, "max_retries": 6})
    await device.radio.start()
    device.start()
    try:
        await device.connect(timeout_ms=30_000)
        await device.send(text)
        assert await device.flush(timeout_ms=30_000), device.stats
        for _ in range(50):  # a credential, if one is coming, follows the ack closely
            if device.stats.get("gateway_key_updates"):
                break
            await asyncio.sleep(0.02)
        return dict(device.stats)
    finally:
        device.close()


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_rotation_of_the_gateway_key_loses_no_device(tmp_path):
    port = _free_port()
    config = _config(tmp_path / "gw", port)
    db, keyfile = tmp_path / "gw" / "gw.db", tmp_path / "gw" / "gateway.keys"
    _sealink(config, "keys", "init")
    header = custody.read_header(keyfile)["public"]
    old_key, authority = bytes.fromhex(header["static"]), bytes.fromhex(header["authority"])
    names = ["online-1", "online-2", "online-3", "offline"]
    keystores = {n: tmp_path / f"{n}.json" for n in names}
    tokens = {}
    for n in names:
        token, _ = _token(db, keyfile)
        tokens[n] = token

    gw = Gateway(config)
    try:
        for n in names:  # enrollment (XX) under the first key
            _run(_session(port, keystores[n], old_key, authority, tokens[n]))
    finally:
        gw.stop()

    out = _sealink(config, "keys", "rotate", "--grace", "1h").stdout
    new_key = bytes.fromhex(out.split("new gateway key")[1].split()[0])
    assert new_key != old_key and custody.read_header(keyfile)["public"]["retiring"] == \
        [old_key.hex()]

    gw = Gateway(config)
    try:
        # The devices online reconnect under the old key (KK) and are told the new one.
        for n in names[:3]:
            stats = _run(_session(port, keystores[n], old_key, authority))
            assert stats["gateway_key_updates"] == 1, (n, stats)
            assert json.loads(keystores[n].read_text())["gateway_key"] == new_key.hex()
        status = json.loads(_sealink(config, "keys", "status", "--json").stdout)
        assert status["counts"] == {"current": 0, "retiring": 4, "unknown": 0}
        # Their next handshake is under the new key: nothing more to learn.
        for n in names[:3]:
            stats = _run(_session(port, keystores[n], old_key, authority))
            assert not stats.get("gateway_key_updates"), (n, stats)
        # The device that was offline during the rotation comes back, within the grace
        # period: it learns the new key at this contact, and uses it at the next.
        stats = _run(_session(port, keystores["offline"], old_key, authority))
        assert stats["gateway_key_updates"] == 1
        _run(_session(port, keystores["offline"], old_key, authority))
        status = json.loads(_sealink(config, "keys", "status", "--json").stdout)
        assert status["counts"] == {"current": 4, "retiring": 0, "unknown": 0}
    finally:
        gw.stop()

    out = _sealink(config, "keys", "retire", "--force").stdout
    assert "retired 1 key(s); 0 device(s) had not followed" in out
    assert custody.read_header(keyfile)["public"]["retiring"] == []

    gw = Gateway(config)
    try:  # only the new key now: every device still reaches the gateway
        for n in names:
            _run(_session(port, keystores[n], old_key, authority, text=b"after " + n.encode()))
    finally:
        gw.stop()
    store = Store(db)
    assert len(store.devices()) == 4  # no device enrolled again
    sessions = {d.id: store.sessions(d.id, limit=1)[0] for d in store.devices()}
    assert all(s["pattern"] == "KK" for s in sessions.values())
    audit = store.audit_log(500)
    events = [e["event"] for e in audit]
    assert len({e["device_id"] for e in audit if e["event"] == "keys.announced"}) == 4
    assert "keys.rotate" in events and "keys.retire" in events


def test_a_credential_not_signed_by_the_authority_does_not_move_the_device(tmp_path):
    """A device provisioned with the authority's key takes a new gateway key only from
    a credential the authority signed (a stolen old gateway key alone cannot point the
    fleet elsewhere)."""
    port = _free_port()
    config = _config(tmp_path / "gw", port)
    db, keyfile = tmp_path / "gw" / "gw.db", tmp_path / "gw" / "gateway.keys"
    _sealink(config, "keys", "init")
    header = custody.read_header(keyfile)["public"]
    old_key = bytes.fromhex(header["static"])
    token, _ = _token(db, keyfile)
    keystore = tmp_path / "device.json"
    other_authority = bytes(range(32))  # not the authority that signs
    gw = Gateway(config)
    try:
        _run(_session(port, keystore, old_key, other_authority, token))
    finally:
        gw.stop()
    _sealink(config, "keys", "rotate", "--grace", "1h")
    gw = Gateway(config)
    try:
        stats = _run(_session(port, keystore, old_key, other_authority))
    finally:
        gw.stop()
    assert stats["credentials_refused"] >= 1 and not stats.get("gateway_key_updates")
    assert json.loads(keystore.read_text())["gateway_key"] == old_key.hex()


def test_rotation_of_the_authority_key_devices_accept_its_endorsed_successor(tmp_path):
    """`sealink keys rotate --authority`: the new authority key is endorsed by the old
    one.  Devices provisioned with the old key accept credentials the new one signs
    (the endorsement travels with them), and keep the new key; a credential whose
    endorsement another key signed is refused."""
    port = _free_port()
    config = _config(tmp_path / "gw", port)
    db, keyfile = tmp_path / "gw" / "gw.db", tmp_path / "gw" / "gateway.keys"
    _sealink(config, "keys", "init")
    header = custody.read_header(keyfile)["public"]
    gateway_key, old_authority = (bytes.fromhex(header["static"]),
                                  bytes.fromhex(header["authority"]))
    keystores = [tmp_path / f"device-{i}.json" for i in range(2)]
    gw = Gateway(config)
    try:
        for ks in keystores:
            token, _ = _token(db, keyfile)
            _run(_session(port, ks, gateway_key, old_authority,
                          token))
    finally:
        gw.stop()
    out = _sealink(config, "keys", "rotate", "--authority", "--grace", "1h").stdout
    new_authority = bytes.fromhex(out.split("new authority key")[1].split()[0])
    endorsement = bytes.fromhex(out.split("\nendorsement")[1].split()[0])
    assert custody.read_header(keyfile)["public"]["authority"] == new_authority.hex()
    assert check_endorsement(old_authority, endorsement)[0] == new_authority
    # A static rotation makes the gateway send credentials (now signed by the new
    # authority, followed by the endorsement) to the devices.
    _sealink(config, "keys", "rotate", "--grace", "1h")
    gw = Gateway(config)
    try:
        for ks in keystores:
            stats = _run(_session(port, ks, gateway_key, old_authority))
            assert stats["gateway_key_updates"] == 1 and not stats.get("credentials_refused")
            assert json.loads(ks.read_text())["authority_key"] == new_authority.hex()
    finally:
        gw.stop()
    # Offline: a credential the new key signed verifies under the old key with the
    # endorsement after it; an endorsement another key made does not.
    credential = bytes.fromhex(json.loads(keystores[0].read_text())["credential"])
    assert verify(credential + endorsement, old_authority)["sid"] > 0
    forged = endorse(Ed25519PrivateKey.generate(), new_authority, 2**31)
    with pytest.raises(CredentialError, match="not signed by that authority"):
        verify(credential + forged, old_authority)
    events = [e["event"] for e in Store(db).audit_log(200)]
    assert events.count("keys.rotate") == 2


def test_rotation_without_a_restart_tells_live_sessions_at_their_next_frame(tmp_path):
    """`sealink keys rotate`, then SIGHUP: the running gateway takes the new key; a
    device with a live session keeps it, and is told the new key in the answer to its
    next frame (what a class A device can hear)."""
    import signal

    from sealink.device import Device, Keystore
    from sealink.drivers.udp import Udp

    port = _free_port()
    config = _config(tmp_path / "gw", port)
    db, keyfile = tmp_path / "gw" / "gw.db", tmp_path / "gw" / "gateway.keys"
    _sealink(config, "keys", "init")
    header = custody.read_header(keyfile)["public"]
    old_key, authority = bytes.fromhex(header["static"]), bytes.fromhex(header["authority"])
    token, _ = _token(db, keyfile)
    keystore = tmp_path / "device.json"
    gw = Gateway(config)

    async def scenario():
        device = Device(Udp("127.0.0.1", port, mtu=51), Keystore(str(keystore)),
                        {"token": token, "gateway_key": old_key, "authority_key": authority,
                         "retry_ms": 300, "max_retries": 6})
        await device.radio.start()
        device.start()
        try:
            await device.connect(timeout_ms=30_000)
            await device.send(b"before the rotation")
            assert await device.flush(timeout_ms=30_000)
            session = device.channel
            out = await asyncio.to_thread(_sealink, config, "keys", "rotate", "--grace", "1h")
            gw.proc.send_signal(signal.SIGHUP)
            seen = ""
            while "gateway key rotated" not in seen:
                seen = await asyncio.wait_for(asyncio.to_thread(gw.proc.stderr.readline), 30)
                assert seen, "the gateway exited"
            await device.send(b"after the rotation")
            assert await device.flush(timeout_ms=30_000)
            for _ in range(100):
                if device.stats.get("gateway_key_updates"):
                    break
                await asyncio.sleep(0.02)
            assert device.channel is session  # the same session throughout
            return out.stdout, dict(device.stats)
        finally:
            device.close()

    try:
        out, stats = asyncio.run(asyncio.wait_for(scenario(), 120))
    finally:
        gw.stop()
    new_key = out.split("new gateway key")[1].split()[0]
    assert stats["gateway_key_updates"] == 1 and stats["handshakes"] == 1
    assert json.loads(keystore.read_text())["gateway_key"] == new_key


def test_a_device_rotates_its_own_key_on_request(tmp_path):
    """`sealink device rotate-key`: at its next session the device makes a new static
    key and offers it on that session (its current key authenticates the offer); its
    next handshake, under the new key, proves it holds it and completes the rotation.
    The old key opens nothing after that."""
    port = _free_port()
    config = _config(tmp_path / "gw", port)
    db, keyfile = tmp_path / "gw" / "gw.db", tmp_path / "gw" / "gateway.keys"
    _sealink(config, "keys", "init")
    header = custody.read_header(keyfile)["public"]
    gateway_key, authority = bytes.fromhex(header["static"]), bytes.fromhex(header["authority"])
    token, _ = _token(db, keyfile)
    keystore = tmp_path / "device.json"
    gw = Gateway(config)
    try:
        _run(_session(port, keystore, gateway_key, authority,
                      token, text=b"enrolled"))
        old = json.loads(keystore.read_text())
        (device_id,) = [d.id for d in Store(db).devices()]
        _sealink(None, "--db", str(db), "device", "rotate-key", device_id)
        _run(_session(port, keystore, gateway_key, authority, text=b"asked"))
        offered = json.loads(keystore.read_text())
        show = _sealink(None, "--db", str(db), "device", "show", device_id).stdout
        stats = _run(_session(port, keystore, gateway_key, authority, text=b"rotated"))
        after = json.loads(keystore.read_text())
        _run(_session(port, keystore, gateway_key, authority, text=b"and again"))
        # A copy of the old keystore (the old key) reaches nothing any more.
        stale = tmp_path / "stale.json"
        stale.write_text(json.dumps(old))
        with pytest.raises(Exception, match="handshake did not complete"):
            _run(_session(port, stale, gateway_key, authority, text=b"stale"))
    finally:
        gw.stop()
    assert offered["secret"] == old["secret"] and offered["next_secret"]
    assert f"next key {crypto.x25519_base(bytes.fromhex(offered['next_secret'])).hex()}" \
        in show and "key rotation offered" in show
    assert stats["key_rotations"] == 1
    assert after["secret"] == offered["next_secret"] and "next_secret" not in after
    store = Store(db)
    (device,) = store.devices()
    assert device.static_key == crypto.x25519_base(bytes.fromhex(after["secret"]))
    assert [u["payload"] for u in store.uplinks(device.id)] == [
        b"enrolled", b"asked", b"rotated", b"and again"]
    events = [(e["event"], e["detail"].get("reason")) for e in store.audit_log(100)]
    assert ("device.rekeyed", "rotation requested") in events
    assert ("device.key_offered", None) in events


def test_a_device_provisioned_before_the_rotation_enrolls_in_the_grace_period(tmp_path):
    """A device provisioned with the old key (and its token) before `sealink keys rotate`
    makes first contact (XK, message 1 under the old key) in the grace period: the
    gateway reads it under the retiring key, enrolls the device, and names the new key
    in a credential, which the device takes for its next handshake."""
    port = _free_port()
    config = _config(tmp_path / "gw", port)
    db, keyfile = tmp_path / "gw" / "gw.db", tmp_path / "gw" / "gateway.keys"
    _sealink(config, "keys", "init")
    header = custody.read_header(keyfile)["public"]
    old_key, authority = bytes.fromhex(header["static"]), bytes.fromhex(header["authority"])
    token, _ = _token(db, keyfile)
    out = _sealink(config, "keys", "rotate", "--grace", "1h").stdout
    new_key = bytes.fromhex(out.split("new gateway key")[1].split()[0])
    keystore = tmp_path / "late.json"
    gw = Gateway(config)
    try:
        stats = _run(_session(port, keystore, old_key, authority, token))
        assert stats["enrolled"] == 1 and stats["gateway_key_updates"] == 1, stats
        assert json.loads(keystore.read_text())["gateway_key"] == new_key.hex()
        stats = _run(_session(port, keystore, old_key, authority))  # KK, the new key
        assert not stats.get("gateway_key_updates"), stats
    finally:
        gw.stop()
    store = Store(db)
    [device] = store.devices()
    assert [s["pattern"] for s in store.sessions(device.id)] == ["KK", "XK"]
