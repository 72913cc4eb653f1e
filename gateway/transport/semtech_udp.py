"""`semtech-udp://HOST:PORT`: LoRa concentrators speaking the Semtech UDP packet-forwarder
protocol (version 2), as any off-the-shelf LoRa gateway does.

    PUSH_DATA  0x00  forwarder -> us: version, token(2), 0x00, gateway EUI(8), JSON {"rxpk": [...]}
    PUSH_ACK   0x01  us -> forwarder: version, token(2), 0x01
    PULL_DATA  0x02  forwarder -> us: version, token(2), 0x02, gateway EUI(8)  (keep-alive)
    PULL_RESP  0x03  us -> forwarder: version, token(2), 0x03, JSON {"txpk": {...}}
    PULL_ACK   0x04  us -> forwarder: version, token(2), 0x04
    TX_ACK     0x05  forwarder -> us: version, token(2), 0x05, gateway EUI(8), [JSON]

Uplinks with a good CRC become frames with their radio metadata.  A downlink is
scheduled into the device's class A first receive window (RX1): the uplink's
concentrator timestamp plus rx1_delay, same frequency and data rate, inverted
polarity; a frame over the data rate's EU868 payload limit is refused.  A concentrator
has one transmitter: when a downlink through it is still scheduled, the next one
follows it (time on air plus a guard interval) instead of colliding; so do the frames
of a fragmented answer.  A later start suits devices whose radio keeps listening (the
RAK3172 in continuous P2P receive); a strict class A device would miss it.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import time
from dataclasses import dataclass

from sealink.lora import EU868_MAX_PAYLOAD, time_on_air_us
from sealink_gateway.transport import Address, DatagramTransportBase, TransportError, Uplink

logger = logging.getLogger(__name__)

VERSION = 2
PUSH_DATA, PUSH_ACK, PULL_DATA, PULL_RESP, PULL_ACK, TX_ACK = range(6)

GUARD_US = 20000


@dataclass
class Datagram:
    identifier: int
    token: bytes
    eui: str | None
    body: dict | None


def parse_datagram(data: bytes) -> Datagram:
    """Decode one forwarder datagram; TransportError(reason) for anything malformed."""
    if len(data) < 4:
        raise TransportError("short", f"{len(data)} bytes")
    if data[0] != VERSION:
        raise TransportError("version", str(data[0]))
    identifier = data[3]
    token = bytes(data[1:3])
    if identifier not in (PUSH_DATA, PULL_DATA, TX_ACK):
        raise TransportError("identifier", str(identifier))
    if len(data) < 12:
        raise TransportError("short", "no gateway EUI")
    eui = data[4:12].hex()
    body = None
    rest = data[12:]
    if identifier == PUSH_DATA or (identifier == TX_ACK and rest.strip(b"\x00")):
        try:
            body = json.loads(rest.rstrip(b"\x00"))
        except (ValueError, UnicodeDecodeError):
            raise TransportError("json", eui) from None
        if not isinstance(body, dict):
            raise TransportError("json", "not an object")
    return Datagram(identifier, token, eui, body)


def datr_sf(datr: str) -> int:
    """"SF9BW125" -> 9."""
    if not isinstance(datr, str) or not datr.startswith("SF") or "BW" not in datr:
        raise TransportError("datr", repr(datr))
    try:
        return int(datr[2:datr.index("BW")])
    except ValueError:
        raise TransportError("datr", repr(datr)) from None


def decode_rxpk(rxpk: dict) -> tuple[bytes, dict]:
    """(frame, radio metadata) of one rxpk with a good CRC."""
    if not isinstance(rxpk, dict):
        raise TransportError("rxpk", "not an object")
    if rxpk.get("stat", 1) != 1:
        raise TransportError("crc", str(rxpk.get("stat")))
    data = rxpk.get("data")
    if not isinstance(data, str):
        raise TransportError("base64", "no data")
    try:
        frame = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise TransportError("base64", "invalid") from None
    if "size" in rxpk and rxpk["size"] != len(frame):
        raise TransportError("size", f"{rxpk['size']} != {len(frame)}")
    radio = {k: rxpk[k] for k in ("tmst", "freq", "chan", "rfch", "datr", "codr", "rssi",
                                  "lsnr", "time") if k in rxpk}
    datr_sf(radio.get("datr", ""))
    if not isinstance(radio.get("tmst"), int) or not isinstance(radio.get("freq"),
                                                                   (int, float)):
        raise TransportError("rxpk", "tmst or freq missing")
    return frame, radio


def build_txpk(frame: bytes, uplink_radio: dict, rx1_delay_s: float, power: int,
               offset_us: int = 0) -> dict:
    sf = datr_sf(uplink_radio["datr"])
    limit = EU868_MAX_PAYLOAD.get(sf)
    if limit is None:
        raise TransportError("datr", uplink_radio["datr"])
    if len(frame) > limit:
        raise TransportError("too_long", f"{len(frame)} bytes > {limit} at SF{sf}")
    return {
        "imme": False,
        "tmst": (uplink_radio["tmst"] + int(rx1_delay_s * 1_000_000) + offset_us) & 0xFFFFFFFF,
        "freq": uplink_radio["freq"],
        "rfch": 0,
        "powe": power,
        "modu": "LORA",
        "datr": uplink_radio["datr"],
        "codr": uplink_radio.get("codr", "4/5"),
        "ipol": True,
        "size": len(frame),
        "data": base64.b64encode(frame).decode(),
    }


class SemtechUdpTransport(DatagramTransportBase):
    name = "semtech-udp"
    needs_window = True  # class A: a device hears us only right after it transmitted
    max_frame = 51  # the smallest EU868 limit (SF10-SF12); send() checks per data rate

    def __init__(self, host: str, port: int, rx1_delay_s: float = 1.0, power: int = 14):
        super().__init__(host, port)
        self.rx1_delay_s = rx1_delay_s
        self.power = power
        self.tx_errors: dict[str, int] = {}
        self.pull_addr: dict[str, tuple] = {}  # gateway EUI -> where its PULL_DATA came from
        self._busy_until: dict[str, int] = {}  # EUI -> tmst when its last downlink ends
        self._latest_tmst: dict[str, int] = {}  # EUI -> tmst of the latest uplink heard

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            d = parse_datagram(data)
        except TransportError as e:
            self._drop(e.reason)
            logger.debug("semtech-udp: %s from %s", e, addr)
            return
        if d.identifier == PULL_DATA:
            self.pull_addr[d.eui] = addr
            self._transport.sendto(bytes((VERSION,)) + d.token + bytes((PULL_ACK,)), addr)
            return
        if d.identifier == TX_ACK:
            error = ((d.body or {}).get("txpk_ack") or {}).get("error", "NONE")
            if error != "NONE":
                self.tx_errors[error] = self.tx_errors.get(error, 0) + 1
            return
        self._transport.sendto(bytes((VERSION,)) + d.token + bytes((PUSH_ACK,)), addr)
        rxpks = d.body.get("rxpk", [])
        if not isinstance(rxpks, list):
            self._drop("rxpk")
            return
        for rxpk in rxpks:
            try:
                frame, radio = decode_rxpk(rxpk)
            except TransportError as e:
                self._drop(e.reason)
                continue
            radio["gateway"] = d.eui
            # Where the datagram came from: the EUI is whatever the sender wrote, the
            # host is not (the handshake limiter counts per forwarder host).
            radio["forwarder"] = addr[0] if isinstance(addr, tuple) else str(addr)
            self._latest_tmst[d.eui] = radio["tmst"]
            self._deliver(Uplink(frame=frame, source=Address(self.name, d.eui),
                                 received_at=time.time(), radio=radio))

    async def send(self, frame: bytes, to: Address, uplink: Uplink | None = None) -> None:
        if uplink is None or "tmst" not in uplink.radio:
            raise TransportError("no_window", "class A downlinks answer an uplink")
        addr = self.pull_addr.get(to.key)
        if addr is None:
            raise TransportError("no_pull", f"gateway {to.key} has sent no PULL_DATA")
        # The concentrator has one transmitter: a frame goes in its RX1 window, or,
        # when an earlier downlink through the same concentrator still occupies it,
        # right after that one (consecutive frames of one answer follow each other).
        rx1_us = int(self.rx1_delay_s * 1_000_000)
        window = (uplink.radio["tmst"] + rx1_us) & 0xFFFFFFFF
        latest = self._latest_tmst.get(to.key)
        if latest is not None:
            age = (latest - uplink.radio["tmst"]) & 0xFFFFFFFF
            if rx1_us < age < 0x80000000:
                # The concentrator has heard later frames than this one: its window
                # has passed.  (A retransmission waits for the device's next uplink.)
                raise TransportError("window_passed", f"{age} us after the uplink")
        busy = self._busy_until.get(to.key)
        offset = 0
        if busy is not None and 0 < (busy - window) & 0xFFFFFFFF < 0x80000000:
            offset = (busy - window) & 0xFFFFFFFF
        txpk = build_txpk(frame, uplink.radio, self.rx1_delay_s, self.power, offset)
        self._busy_until[to.key] = (txpk["tmst"] + GUARD_US + time_on_air_us(
            len(frame), datr_sf(uplink.radio["datr"]))) & 0xFFFFFFFF
        payload = json.dumps({"txpk": txpk}).encode()
        self._transport.sendto(bytes((VERSION,)) + os.urandom(2) + bytes((PULL_RESP,))
                               + payload, addr)
