"""The shortened demo: `python -m sim.fleet sim/scenarios/quick.toml` boots one
Cortex-M3 and one RV32 board under QEMU and two unix-port devices, each with its modeled
RAK3172, around an in-process gateway reached through the modeled concentrator over
Semtech UDP, one unix device on a LoRaWAN network (its module in LoRaWAN mode, through
a modeled network server's ChirpStack MQTT integration and a real mosquitto), plus one
device over the modeled BLE link (bumble virtual controllers).
One device gets line noise on its UART, another a module that fails sends, and the BLE
link drops once; every device must still enroll, send, take its command and
acknowledge it.  The QEMU and unix devices attest (docs/attestation.md)."""

import json
import struct
import subprocess
import sys
from pathlib import Path

import dpkt
import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    r = subprocess.run([sys.executable, "-m", "sim.fleet", "sim/scenarios/quick.toml",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
    return r, out, json.loads((out / "summary.json").read_text())


def test_every_device_finishes(demo):
    r, out, summary = demo
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Summary" in r.stdout and "unix-2" in r.stdout
    assert summary["ok"] and len(summary["devices"]) == 6
    assert {d["board"] for d in summary["devices"]} == {"QEMU_MPS2_AN385", "QEMU_VIRT_RV32",
                                                        "UNIX", "CPYTHON"}
    for d in summary["devices"]:
        assert d["result"] == "ok" and d["command_acknowledged"], d
        # hello + 2 telemetry + the command's acknowledgement, all committed by the gateway
        assert d["messages_sent"] == d["messages_delivered"] == 4, d
        assert d["handshake_ms"] > 0 and d["handshake_frames"] >= 2 and d["bytes_sent"] > 0
        if d["radio"] in ("lora", "lorawan"):
            assert 0 < d["handshake_airtime_s"] < d["airtime_s"]
            assert d["frames_sent"] == len(d["airtime_log"])
    assert summary["gateway"]["counters"]["enrolled"] == 6


def test_devices_attest_the_modified_one_is_quarantined_the_updated_one_comes_back(demo):
    """The QEMU and unix devices boot with a UDS (DICE) and are provisioned.  The RV32
    one's main.py changed after provisioning: quarantine.  The others run registered
    firmware only: trusted.  unix-2 gets an application update (a main.py) the operator registered
    after its run: another static key, no token, and it comes back as the same device,
    re-attested and trusted.  The BLE device (CPython) has no DICE identity."""
    _, _, summary = demo
    decisions = {d["name"]: d["attestation"] for d in summary["devices"]}
    assert decisions == {"mps2_an385-1": "trusted", "virt_rv32-1": "quarantine",
                         "unix-1": "trusted", "unix-2": "trusted", "lorawan-1": "trusted",
                         "ble-1": None}
    [update] = summary["updates"]
    assert update == {"device": "unix-2", "exit": 0, "same_device": True, "rekeyed": True,
                      "attestation": "trusted", "components": ["firmware", "main.py"],
                      "uplinks_after": 4, "ok": True}
    counters = summary["gateway"]["counters"]
    assert counters["attestation_quarantine"] == 1
    assert counters["attestation_trusted"] >= 3  # (counted before the update; an
    # attacked device may re-attest)


def test_gateway_key_rotation_mid_run_loses_no_device(demo):
    """The gateway's static key is rotated mid-run (as `sealink keys rotate` and a SIGHUP
    do), with unix-1 off the air.  Devices with a session are told at their next frame;
    after the run each LoRa device starts again until it reconnects under the new key:
    every one does, none enrolled again (the firmware's frozen stack on QEMU and unix,
    with the attacker on the air)."""
    _, _, summary = demo
    rot = summary["rotation"]
    assert rot["ok"] and rot["devices"] == 4 and rot["followed"] == 4 and rot["lost"] == []
    assert rot["offline"] == ["unix-1"] and rot["same_devices"]
    # (The LoRaWAN and BLE devices take no part in the rotation's rounds.  Either may
    # still be in a session when the key is rotated, and be told too: how far each has
    # got by then depends on how the machine schedules the fleet's processes.)
    assert set(rot["told"]) - {"lorawan-1", "ble-1"} == {"mps2_an385-1", "virt_rv32-1",
                                                         "unix-1", "unix-2"}


def test_faults_were_injected_and_survived(demo):
    _, _, summary = demo
    devices = {d["name"]: d for d in summary["devices"]}
    # The module that fails sends answered AT_ERROR, and the device still finished.
    assert devices["unix-2"]["modem"]["errors"] > 0
    assert devices["unix-2"]["result"] == "ok"
    # The BLE link was lost once, counted by the gateway, and re-established.
    assert devices["ble-1"]["ble"]["link_drops"] == 1 and devices["ble-1"]["ble"]["mtu"] == 247
    # An attacker on the air (Stage 6) tried every kind of frame; every device still
    # finished, nothing was delivered twice, and its forgeries were dropped and counted.
    tried = summary["attacker"]["tried"]
    assert set(tried) == {"replay", "forge", "reject", "squat", "flood"}, tried
    assert all(d["messages_duplicated"] == 0 for d in summary["devices"])
    assert summary["gateway"]["drops"]["AuthenticationError"] > 0
    assert summary["gateway"]["transport_drops"]["ble"] == {"disconnected": 1}


def test_duty_cycle_is_kept_and_reported(demo):
    """Every device and the concentrator stay within their duty cycles: a device's
    frames are spaced by 99 times their time on air; the concentrator's downlinks,
    scheduled by the gateway, use at most its budget in any hour in each sub-band."""
    _, _, summary = demo
    for d in summary["devices"]:
        if d["radio"] == "ble":
            continue
        log = d["airtime_log"]
        # After a frame of T seconds the sub-band is off for 99 T (modeled time).
        for (start, toa), (next_start, _) in zip(log, log[1:], strict=False):
            assert next_start >= start + toa / 0.01 - 1e-6, (d["name"], start, next_start)
        assert d["duty_cycle_used_of_hourly_budget"] <= 1.0
    bands = summary["concentrator"]["duty_cycle"]
    assert bands and all(b["used"] <= 1.0 for b in bands.values()), bands
    # Compressed 50x, stated (the run proper: the rotation rounds and the update after it
    # restart devices in their own time).
    assert summary["modeled_s"] > summary["run_wall_s"] * 10


def test_outputs_pcap_and_plot(demo):
    _, out, summary = demo
    with open(out / "air.pcap", "rb") as f:
        reader = dpkt.pcap.Reader(f)
        assert reader.datalink() == 270  # LoRaTap
        packets = [buf for _, buf in reader]
    assert len(packets) == summary["air"]["pcap_frames"] >= summary["air"]["frames"] - 2
    version, _, length, freq, bw, sf = struct.unpack(">BBHIBB", packets[0][:10])
    assert (version, length, bw) == (0, 15, 1) and 868_000_000 <= freq <= 868_600_000
    assert 7 <= sf <= 12
    assert (out / "airtime.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sealink_over_lorawan_reaches_the_gateway_through_chirpstack(demo):
    """lorawan-1's module runs LoRaWAN: its Sealink frames are the payloads of LoRaWAN
    uplinks, which the modeled network server publishes as ChirpStack uplink events;
    the gateway's chirpstack-mqtt:// transport takes them and enqueues its answers.  The
    concentrator heard those LoRaWAN frames too, and the gateway ignored them unread."""
    _, _, summary = demo
    devices = {d["name"]: d for d in summary["devices"]}
    d = devices["lorawan-1"]
    assert d["result"] == "ok" and d["messages_delivered"] == 4
    ns = summary["network_server"]
    # Every uplink the network server took is published (a frame lost on the air, to a
    # collision with the attacker's, never reaches it).
    heard = ns["devices"]["lorawan-1"]["uplinks"]
    assert ns["published"] + ns.get("publish_failed", 0) == heard
    assert 0 < heard <= d["frames_sent"]
    assert ns["downlinks"] > 0 and ns["devices"]["lorawan-1"]["downlinks"] > 0
    ignored = summary["concentrator"]["scheduler"]["semtech-udp"]["ignored"]
    assert ignored.get("lorawan", 0) > 0


def test_first_contact_frames_are_reported_per_sf(demo):
    _, _, summary = demo
    rows = summary["first_contact"]
    assert {r["device"] for r in rows} == {d["name"] for d in summary["devices"]
                                           if d["radio"] != "ble"}
    for r in rows:
        assert r["up"] >= 2 and r["down"] >= 1, r
