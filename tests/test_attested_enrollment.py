"""Attestation in the handshake, end to end on CPython: the real Device (UDP driver) and
the real gateway (udp://, SQLite).  The device's measured identity is built on the host
(tests/evidence.py, checked byte for byte against the firmware's boot stage in
tests/test_attest.py); the gateway verifies it at first contact and applies its
policy: trusted, quarantine, or refused; a device whose measured code changed comes
back under its DeviceID without a new token."""

import asyncio
import hashlib

from test_gateway_service import _start, env  # noqa: F401 (env is a fixture)

from evidence import Identity
from sealink import crypto
from sealink.device import Device, DeviceError, Keystore
from sealink.drivers.udp import Udp
from sealink_gateway import attest

FIRMWARE = hashlib.sha256(b"firmware v1").digest()
FIRMWARE_2 = hashlib.sha256(b"firmware v2").digest()
MAIN = hashlib.sha256(b"main.py as built").digest()
VERSION = "sealink-0.1.0+micropython-1.25.0"
UDS = bytes(range(32))


async def _device(gw, addr, ident, path, token=None, gateway_key=None):
    ks = Keystore(str(path), measured_secret=ident.static_key)
    device = Device(Udp(*addr, mtu=222), ks,
                    {"token": token or b"", "evidence": ident.evidence(),
                     "gateway_key": gateway_key or gw.public_key, "retry_ms": 300,
                     "max_retries": 4})
    await device.radio.start()
    device.start()
    return device


async def _enroll_and_send(gw, addr, ident, path, token, payload):
    """First contact with evidence and a token, one uplink, acknowledged."""
    device = await _device(gw, addr, ident, path, token.encode())
    await device.connect()
    await device.send(payload)
    assert await device.flush(10_000)
    device.close()


def _provisioned(gw, ident, good=True):
    gw.store.provision(ident.device_id, ident.ueid, "bench unit")
    for name, digest in ident.components:
        gw.store.add_reference(name, digest, "good" if good else "bad")


def test_provisioned_device_enrolls_with_evidence_and_is_trusted(env, tmp_path):  # noqa: F811
    async def scenario():
        gw, addr = await _start(env)
        ident = Identity(UDS, [("firmware", FIRMWARE), ("main.py", MAIN)], VERSION)
        _provisioned(gw, ident)
        token, _ = gw.store.create_token({"site": "lab"}, 600)
        await _enroll_and_send(gw, addr, ident, tmp_path / "ks.json", token, b"reading 1")
        await gw.stop()
        return gw

    gw = asyncio.run(asyncio.wait_for(scenario(), 60))
    [device] = gw.store.devices()
    att = gw.store.attestation(device.id)
    assert (att["decision"], att["reason"]) == ("trusted", "reference_values_match")
    result = bytes.fromhex(att["result"])
    claims = attest.verify_result(result, gw.authority.public_key)
    assert claims["device"] == device.id and claims["decision"] == "trusted"
    assert gw.store.device_for_ueid(attest.ueid_for(Identity(UDS, [], "").device_id)).id \
        == device.id
    # The keystore on the device's flash holds no private key: it is measured.
    assert '"secret": null' in (tmp_path / "ks.json").read_text()
    # What an operator sees.
    import subprocess
    import sys
    from pathlib import Path

    sealink = str(Path(sys.executable).parent / "sealink")
    shown = subprocess.run([sealink, "--db", str(env["db"]), "device", "show", device.id],
                           capture_output=True, text=True, timeout=60, check=True).stdout
    assert "attestation  trusted (reference_values_match)" in shown
    assert f"measured   firmware     {FIRMWARE.hex()}" in shown
    assert f"measured   main.py      {MAIN.hex()}" in shown


def test_modified_application_is_quarantined(env, tmp_path):  # noqa: F811
    async def scenario():
        gw, addr = await _start(env)
        ident = Identity(UDS, [("firmware", FIRMWARE), ("main.py", MAIN)], VERSION)
        gw.store.provision(ident.device_id, ident.ueid)
        gw.store.add_reference("firmware", FIRMWARE, "good")  # main.py: never registered
        token, _ = gw.store.create_token({}, 600)
        await _enroll_and_send(gw, addr, ident, tmp_path / "ks.json", token, b"diagnostics")
        await gw.stop()
        return gw

    gw = asyncio.run(asyncio.wait_for(scenario(), 60))
    [device] = gw.store.devices()
    att = gw.store.attestation(device.id)
    assert att["decision"] == "quarantine" and att["claims"]["unknown"] == ["main.py"]


def test_updated_firmware_reattests_without_a_token(env, tmp_path):  # noqa: F811
    async def scenario():
        gw, addr = await _start(env)
        old = Identity(UDS, [("firmware", FIRMWARE)], VERSION)
        _provisioned(gw, old)
        token, _ = gw.store.create_token({}, 600)
        device = await _device(gw, addr, old, tmp_path / "ks.json", token.encode())
        await device.connect()
        device.close()
        # Updated to a registered firmware: another static key, the same DeviceID, and
        # no token left.  The keystore on flash notices the key changed.
        new = Identity(UDS, [("firmware", FIRMWARE_2)], VERSION)
        gw.store.add_reference("firmware", FIRMWARE_2, "good")
        updated = await _device(gw, addr, new, tmp_path / "ks.json")
        assert not updated.keystore.enrolled
        await updated.connect()
        await updated.send(b"after the update")
        assert await updated.flush(10_000)
        updated.close()
        # From now on the new key reconnects with KK.
        again = await _device(gw, addr, new, tmp_path / "ks.json")
        assert again.keystore.enrolled
        await again.connect()
        assert again.channel.pattern == "KK"
        again.close()
        await gw.stop()
        return gw, old, new

    gw, old, new = asyncio.run(asyncio.wait_for(scenario(), 90))
    [device] = gw.store.devices()  # the same device, not a second enrollment
    assert device.static_key == new.static_public != old.static_public
    assert gw.store.attestation(device.id)["claims"]["components"] == [
        ["firmware", FIRMWARE_2.hex()]]
    assert any(e["event"] == "device.rekeyed" for e in gw.store.audit_log())


def test_unknown_device_id_and_known_bad_firmware_get_no_session(env, tmp_path):  # noqa: F811
    async def scenario():
        gw, addr = await _start(env)
        stranger = Identity(bytes(32), [("firmware", FIRMWARE)], VERSION)  # not provisioned
        gw.store.add_reference("firmware", FIRMWARE, "good")
        token, _ = gw.store.create_token({}, 600)
        refused = []
        for ident, path in ((stranger, "a.json"), (None, "b.json")):
            if ident is None:
                ident = Identity(UDS, [("firmware", FIRMWARE_2)], VERSION)
                gw.store.provision(ident.device_id, ident.ueid)
                gw.store.add_reference("firmware", FIRMWARE_2, "bad")  # known bad
            device = await _device(gw, addr, ident, tmp_path / path, token.encode())
            # XK completes on the device's side with message 3; the gateway's refusal
            # shows as silence (and a REJECT): nothing acknowledged, nothing enrolled.
            try:
                await device.connect(timeout_ms=3000)
                await device.send(b"measured?")
                acknowledged = await device.flush(3000)
            except DeviceError:
                acknowledged = False
            refused.append(not acknowledged and not device.keystore.enrolled)
            device.close()
        await gw.stop()
        return gw, refused

    gw, refused = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert refused == [True, True]
    assert gw.store.devices() == []  # no token spent on either
    assert gw.drops["evidence_unknown_device"] >= 1
    assert gw.drops["attestation_refused"] >= 1
    events = [e["event"] for e in gw.store.audit_log()]
    assert events.count("attestation.refused") >= 2


def test_first_contact_payload_is_the_cbor_the_gateway_reads():
    from sealink.device import first_contact_payload
    from sealink_gateway.service import parse_first_contact

    def parsed(payload):
        c = parse_first_contact(payload)
        return c.token, c.evidence, c.wants_credential

    evidence = bytes(range(200))
    assert parsed(first_contact_payload(b"tok", evidence)) == ("tok", evidence, False)
    assert parsed(first_contact_payload(b"", evidence)) == ("", evidence, False)
    # A hex token travels as its 16 bytes, and comes out as the same text.
    token = b"00112233445566778899aabbccddeeff"
    payload = first_contact_payload(token, None, True)
    assert len(payload) == 1 + 2 + 16 + 2 and parsed(payload) == (token.decode(), None, True)
    assert parsed(b"a1b2c3") == ("a1b2c3", None, False)  # a plain token (XX)
    for bad in (b"\xa1\x01\x02", b"\xa2\x01\x61", b"\xa1\x04\x41\x00", b"\xa1\x03\xf5"):
        try:
            parse_first_contact(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
    assert crypto.BACKEND


def test_quarantined_device_reaches_only_its_quarantine_topic(env, tmp_path, mosquitto):  # noqa: F811
    """Applications see each uplink's attestation in its MQTT envelope; a quarantined
    device's uplinks go to sealink/<device>/quarantine, never to /up (a real mosquitto
    broker started by the test)."""
    import json

    import aiomqtt

    from sealink_gateway.mqtt import MqttBridge

    async def scenario():
        gw, addr = await _start(env)
        bridge = MqttBridge(gw, "127.0.0.1", mosquitto)
        await bridge.start()
        trusted = Identity(UDS, [("firmware", FIRMWARE)], VERSION)
        modified = Identity(bytes(32), [("firmware", FIRMWARE), ("main.py", MAIN)], VERSION)
        for ident in (trusted, modified):
            gw.store.provision(ident.device_id, ident.ueid)
        gw.store.add_reference("firmware", FIRMWARE, "good")
        got = {}
        async with aiomqtt.Client("127.0.0.1", mosquitto) as app:
            await app.subscribe("sealink/#", qos=1)
            for name, ident in (("t", trusted), ("q", modified)):
                token, _ = gw.store.create_token({"name": name}, 600)
                await _enroll_and_send(gw, addr, ident, tmp_path / f"{name}.json", token,
                                       b"from " + name.encode())
            while len(got) < 2:
                message = await asyncio.wait_for(anext(aiter(app.messages)), 10)
                envelope = json.loads(message.payload)
                got[envelope["attributes"]["name"]] = (str(message.topic).split("/")[-1],
                                                       envelope["attestation"])
        await bridge.stop()
        await gw.stop()
        return got

    got = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert got == {"t": ("up", "trusted"), "q": ("quarantine", "quarantine")}
