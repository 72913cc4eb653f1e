"""`semtech-udp://HOST:PORT`: LoRa concentrators speaking the Semtech UDP packet-forwarder
protocol (version 2), as any off-the-shelf LoRa gateway does.

    PUSH_DATA  0x00  forwarder -> us: version, token(2), 0x00, gateway EUI(8), JSON {"rxpk": [...]}
    PUSH_ACK   0x01  us -> forwarder: version, token(2), 0x01
    PULL_DATA  0x02  forwarder -> us: version, token(2), 0x02, gateway EUI(8)  (keep-alive)
    PULL_RESP  0x03  us -> forwarder: version, token(2), 0x03, JSON {"txpk": {...}}
    PULL_ACK   0x04  us -> forwarder: version, token(2), 0x04
    TX_ACK     0x05  forwarder -> us: version, token(2), 0x05, gateway EUI(8), [JSON]

Uplinks with a good CRC that are Sealink frames (a LoRaWAN proprietary MHDR,
`sealink.lora.MHDR`) become frames with their radio metadata.  Anything else the
concentrator heard (LoRaWAN joins and data frames, other proprietary traffic) is
counted and dropped unread: it is never answered and never starts a handshake.

Downlinks are class A: each answers an uplink, in one of its two receive windows,
chosen by the downlink scheduler with the region's data (`sealink_gateway.regions`):

- RX1: rx1_delay after the uplink, on the region's RX1 frequency and data rate (EU868:
  the uplink's own);
- RX2: one second later, on the region's RX2 frequency and data rate (EU868: 869.525
  MHz, DR0 unless configured, in the 10 % sub-band g3);
- otherwise the frame waits for the device's next uplink (TransportError
  "duty_cycle", "too_long" or "no_window"; retransmission takes it from there).

A window is taken only if the frame fits that data rate's payload limit, the
concentrator's one transmitter is free then, and the sub-band's duty cycle (time on
air in any hour, `regions.DutyCycle`) allows it: a downlink is never sent over budget.
Each window takes `window_frames` frames (1 for a class A device; more for devices
that keep listening, which take the frames of one answer back to back).

The forwarder's TX_ACK for each PULL_RESP is matched to the frame by its token:
TOO_LATE, TOO_EARLY, COLLISION_PACKET and the others are counted (`tx_errors`), logged,
and reported to the gateway (`on_tx_result`), which keeps the downlink queued for the
next opportunity instead of marking it sent.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import time
from dataclasses import dataclass

from sealink import wire
from sealink.lora import MHDR, time_on_air_us, unwrap, wrap
from sealink_gateway import regions
from sealink_gateway.transport import Address, DatagramTransportBase, TransportError, Uplink

logger = logging.getLogger(__name__)

VERSION = 2
PUSH_DATA, PUSH_ACK, PULL_DATA, PULL_RESP, PULL_ACK, TX_ACK = range(6)

GUARD_US = 20000
RX2_AFTER_RX1_US = 1_000_000  # RX2 opens one second after RX1 (LoRaWAN class A)
TX_TOKENS = 1024  # PULL_RESP tokens remembered for their TX_ACK


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


def build_txpk(phy: bytes, tmst: int, freq_hz: int, rate: regions.DataRate, power: int,
               codr: str = "4/5") -> dict:
    return {
        "imme": False,
        "tmst": tmst & 0xFFFFFFFF,
        "freq": freq_hz / 1e6,
        "rfch": 0,
        "powe": power,
        "modu": "LORA",
        "datr": rate.datr,
        "codr": codr,
        "ipol": True,
        "size": len(phy),
        "data": base64.b64encode(phy).decode(),
    }


def frame_sid(frame: bytes) -> int | None:
    """The session id a Sealink frame is for (None if too short to say)."""
    return (frame[1] << 8) | frame[2] if len(frame) >= wire.HEADER else None


class SemtechUdpTransport(DatagramTransportBase):
    name = "semtech-udp"
    needs_window = True  # class A: a device hears us only right after it transmitted
    confirms_tx = True  # a frame is sent once the forwarder's TX_ACK says so

    def __init__(self, host: str, port: int, rx1_delay_s: float = 1.0, power: int = 14,
                 region: str = "EU868", rx2: bool = True, rx2_dr: int | None = None,
                 window_frames: int = 1, rx1: bool = True):
        super().__init__(host, port)
        self.rx1_delay_s = rx1_delay_s
        self.power = power
        self.region = regions.region(region)
        # rx1=False: devices that listen on the RX2 channel between their uplinks (P2P
        # modules parked there), never on their uplink channel.
        self.rx1, self.rx2 = rx1, rx2
        if not rx1 and not rx2:
            raise TransportError("windows", "neither RX1 nor RX2")
        self.rx2_freq, self.rx2_rate = self.region.rx2(rx2_dr)
        self.window_frames = window_frames
        # The smallest frame limit of the region (what a frame must fit when nothing
        # better is known); mtu_for() gives each uplink's own.
        self.max_frame = min(r.max_frame for r in self.region.data_rates)
        self.tx_errors: dict[str, int] = {}
        self.scheduled: dict[str, int] = {"rx1": 0, "rx2": 0}
        self.deferred: dict[str, int] = {}
        self.ignored: dict[str, int] = {}  # frames heard that are not Sealink's, by kind
        # on_tx_result(frame, error): the forwarder's verdict on each frame sent ("NONE":
        # transmitted).  Set by the gateway.
        self.on_tx_result = None
        self.pull_addr: dict[str, tuple] = {}  # gateway EUI -> where its PULL_DATA came from
        self.duty: dict[str, regions.DutyCycle] = {}  # EUI -> its transmitter's ledger
        self._busy: dict[str, list[tuple[int, int]]] = {}  # EUI -> [(start, end)] us
        self._latest_tmst: dict[str, int] = {}  # EUI -> tmst of the latest uplink heard
        self._windows: dict[tuple[str, int], list[int]] = {}  # (EUI, tmst) -> frames/window
        self._tokens: dict[bytes, bytes] = {}  # PULL_RESP token -> frame, for its TX_ACK
        self._high: dict[str, list[int]] = {}  # EUI -> [last tmst, wraps x 2^32]

    def mtu_for(self, up: Uplink) -> int:
        """The largest frame an answer to this uplink may use: its RX1 data rate's (RX2's
        when RX1 is not used)."""
        if not self.rx1:
            return self.rx2_rate.max_frame
        try:
            rate = self.region.datr_rate(up.radio["datr"])
            _, rx1 = self.region.rx1(int(round(up.radio["freq"] * 1e6)), rate)
        except (regions.RegionError, KeyError, TypeError):
            return self.max_frame
        return rx1.max_frame

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
            self._tx_ack(d)
            return
        self._transport.sendto(bytes((VERSION,)) + d.token + bytes((PUSH_ACK,)), addr)
        rxpks = d.body.get("rxpk", [])
        if not isinstance(rxpks, list):
            self._drop("rxpk")
            return
        for rxpk in rxpks:
            try:
                phy, radio = decode_rxpk(rxpk)
            except TransportError as e:
                self._drop(e.reason)
                continue
            self._latest_tmst[d.eui] = radio["tmst"]
            frame = unwrap(phy)
            if frame is None:
                # LoRaWAN (or another vendor's proprietary frame): not ours, not answered.
                kind = ("lorawan" if phy and phy[0] >> 5 != MHDR >> 5
                        else "other_proprietary")
                self.ignored[kind] = self.ignored.get(kind, 0) + 1
                self._drop(kind)
                continue
            radio["gateway"] = d.eui
            # Where the datagram came from: the EUI is whatever the sender wrote, the
            # host is not (the handshake limiter counts per forwarder host).
            radio["forwarder"] = addr[0] if isinstance(addr, tuple) else str(addr)
            self._deliver(Uplink(frame=frame, source=Address(self.name, d.eui),
                                 received_at=time.time(), radio=radio))

    def _tx_ack(self, d: Datagram) -> None:
        error = ((d.body or {}).get("txpk_ack") or {}).get("error", "NONE")
        frame = self._tokens.pop(d.token, None)
        if error != "NONE":
            self.tx_errors[error] = self.tx_errors.get(error, 0) + 1
            logger.warning("semtech-udp: gateway %s did not send a downlink%s: %s", d.eui,
                           "" if frame is None else f" for session {frame_sid(frame)}", error)
        if frame is not None and self.on_tx_result is not None:
            self.on_tx_result(frame, error)

    def _defer(self, reason: str, detail: str) -> TransportError:
        self.deferred[reason] = self.deferred.get(reason, 0) + 1
        return TransportError(reason, detail)

    def _now_us(self, eui: str, tmst: int) -> int:
        """A concentrator tmst as microseconds on a clock that does not wrap: counted
        back from the latest uplink heard (a window is never 35 minutes old)."""
        latest = self._latest_tmst.get(eui, tmst)
        high = self._high.setdefault(eui, [latest, 0])
        if latest < high[0]:  # the 32-bit counter wrapped since the last look
            high[1] += 1 << 32
        high[0] = latest
        return high[1] + latest - ((latest - tmst) & 0xFFFFFFFF)

    def _free(self, eui: str, start: int, end: int) -> bool:
        return not any(s < end + GUARD_US and start < e + GUARD_US
                       for s, e in self._busy.get(eui, ()))

    def _window(self, eui: str, phy: bytes, opens: int, freq: int, rate, taken: int,
                refused: list[str]) -> tuple[int, int] | None:
        """Where a frame can go in one receive window: (start, end) in us, or None (and
        why in `refused`)."""
        if taken >= self.window_frames:
            refused.append("no_window")
            return None
        if len(phy) > rate.max_phy:
            refused.append("too_long")
            return None
        toa = time_on_air_us(len(phy), rate.sf, rate.bw * 1000)
        dwell_ms = self.region.downlink_dwell_time_ms
        if dwell_ms and toa > dwell_ms * 1000:
            refused.append("too_long")  # over the region's dwell time at this rate
            return None
        start = opens
        for s, e in sorted(self._busy.get(eui, ())):
            if taken and s < start + toa + GUARD_US and start < e + GUARD_US:
                start = e + GUARD_US  # the frames of one answer follow each other
        if not self._free(eui, start, start + toa):
            refused.append("busy")
            return None
        if not self.duty.setdefault(eui, regions.DutyCycle(self.region)).allows(
                freq, start / 1e6, toa / 1e6):
            refused.append("duty_cycle")
            return None
        return start, start + toa

    async def send(self, frame: bytes, to: Address, uplink: Uplink | None = None) -> None:
        if uplink is None or "tmst" not in uplink.radio:
            raise TransportError("no_window", "class A downlinks answer an uplink")
        eui = to.key
        addr = self.pull_addr.get(eui)
        if addr is None:
            raise TransportError("no_pull", f"gateway {eui} has sent no PULL_DATA")
        tmst = uplink.radio["tmst"]
        rx1_us = int(self.rx1_delay_s * 1_000_000)
        latest = self._latest_tmst.get(eui)
        if latest is not None:
            age = (latest - tmst) & 0xFFFFFFFF
            if rx1_us < age < 0x80000000:
                # The concentrator has heard later frames than this one: its windows
                # have passed.  (A retransmission waits for the device's next uplink.)
                raise self._defer("window_passed", f"{age} us after the uplink")
        try:
            up_rate = self.region.datr_rate(uplink.radio["datr"])
            freq1, rate1 = self.region.rx1(int(round(uplink.radio["freq"] * 1e6)), up_rate)
        except regions.RegionError as e:
            raise TransportError("datr", str(e)) from None
        phy = wrap(frame)
        t0 = self._now_us(eui, tmst)
        counts = self._windows.setdefault((eui, tmst), [0, 0])
        if len(self._windows) > 4096:
            for key in list(self._windows)[:2048]:
                del self._windows[key]
        refused: list[str] = []
        slot = None
        if self.rx1 and not counts[1]:  # (once RX2 carried one, so do the rest)
            slot = self._window(eui, phy, t0 + rx1_us, freq1, rate1, counts[0], refused)
            window, freq, rate = "rx1", freq1, rate1
        if slot is None and self.rx2:
            slot = self._window(eui, phy, t0 + rx1_us + RX2_AFTER_RX1_US, self.rx2_freq,
                                self.rx2_rate, counts[1], refused)
            window, freq, rate = "rx2", self.rx2_freq, self.rx2_rate
        if slot is None:
            # "too_long" only when no window of this answer could ever take it: one that
            # is taken, busy or over budget now may take it after the next uplink.
            waits = [r for r in refused if r != "too_long"]
            reason = "duty_cycle" if "duty_cycle" in waits else (waits[0] if waits
                                                                 else "too_long")
            raise self._defer(reason, f"{len(phy)} bytes, {', '.join(refused)}")
        start, end = slot
        counts[0 if window == "rx1" else 1] += 1
        self.scheduled[window] += 1
        self.duty[eui].record(freq, start / 1e6, (end - start) / 1e6)
        busy = [(s, e) for s, e in self._busy.get(eui, ()) if e > t0 - 60_000_000]
        busy.append((start, end))
        self._busy[eui] = busy
        txpk = build_txpk(phy, tmst + (start - t0), freq, rate, self.power,
                          uplink.radio.get("codr", "4/5"))
        token = os.urandom(2)
        self._tokens[token] = frame
        if len(self._tokens) > TX_TOKENS:
            del self._tokens[next(iter(self._tokens))]
        payload = json.dumps({"txpk": txpk}).encode()
        self._transport.sendto(bytes((VERSION,)) + token + bytes((PULL_RESP,)) + payload, addr)

    def duty_cycle_usage(self) -> dict[str, dict[str, float]]:
        """Per concentrator and sub-band: the busiest hour's time on air so far, as a
        fraction of the budget."""
        return {eui: ledger.usage() for eui, ledger in self.duty.items()}
