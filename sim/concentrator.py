"""A modeled LoRa concentrator (an SX1301-class gateway board) with its packet forwarder:
it hears every spreading factor on its channel from the modeled air and speaks the
Semtech UDP protocol (version 2) to the Sealink gateway, which so runs its production
LoRa path (`semtech-udp://`).

Uplinks become PUSH_DATA with an `rxpk` (tmst = the concentrator's microsecond counter,
which here is modeled time); PULL_DATA keeps the downlink path open; each PULL_RESP
`txpk` is transmitted at its `tmst` (class A receive window) and answered with TX_ACK
(TOO_LATE when that moment has passed, TOO_EARLY when it is too far ahead,
COLLISION_PACKET when it would overlap a downlink already scheduled: one transmitter).

Duty cycle: a downlink is sent in the window the gateway asked for (a real
concentrator's HAL does not delay a scheduled transmission either); keeping within the
sub-bands' budgets is the gateway's downlink scheduler's job
(sealink_gateway.transport.semtech_udp).  The model measures what was sent, per
sub-band, against the budget (`duty_cycle_used()`): the demo reports it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time

from sealink_gateway import regions
from sim.lora import LoRaAir, Params, Radio

VERSION = 2
PUSH_DATA, PUSH_ACK, PULL_DATA, PULL_RESP, PULL_ACK, TX_ACK = range(6)
MAX_AHEAD_S = 30.0
EU868_CHANNELS = (868_100_000, 868_300_000, 868_500_000)  # the three default channels


class Concentrator(asyncio.DatagramProtocol):
    """`gateway_addr`: the gateway's UDP port on loopback; or, for a discrete-event run,
    `endpoint`: an in-loop datagram path to it (sim.datagram.MemoryDatagramLink)."""

    def __init__(self, air: LoRaAir, radio: Radio, gateway_addr: tuple[str, int] | None = None,
                 eui: bytes = bytes.fromhex("b827ebfffe5ea100"), keepalive_s: float = 5.0,
                 endpoint=None):
        self.air, self.radio = air, radio
        self.gateway_addr = gateway_addr
        self.eui = eui
        self.keepalive_s = keepalive_s
        radio.any_sf = True
        radio.channels = radio.channels or EU868_CHANNELS
        radio.rx_iq_inverted = False  # it hears uplinks, not other gateways' downlinks
        # A scheduled downlink goes out at its tmst (the gateway keeps the duty cycle).
        radio.regulated = False
        radio.on_receive = self._heard
        self.stats = {"rxpk": 0, "txpk": 0, "tx_ack_errors": 0, "crc_bad": 0, "acks": 0}
        self._transport = endpoint
        self._tasks: set[asyncio.Task] = set()
        self.tx_errors: dict[str, int] = {}
        self.tx_kinds: dict[str, int] = {}  # downlinks sent, by Sealink frame kind
        self._scheduled: list[tuple[float, float]] = []  # (start, end) of downlinks, modeled
        self.tx_log: list[tuple[int, float, float]] = []  # (freq, start, time on air)

    async def start(self) -> None:
        if self._transport is None:
            loop = asyncio.get_running_loop()
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: self, local_addr=("127.0.0.1", 0))
        self._spawn(self._keepalive())

    def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self._transport:
            self._transport.close()

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _tmst(self, modeled_s: float) -> int:
        return int(modeled_s * 1_000_000) & 0xFFFFFFFF

    def _send(self, identifier: int, body: bytes = b"", token: bytes | None = None) -> None:
        token = token if token is not None else os.urandom(2)
        self._transport.sendto(bytes((VERSION,)) + token + bytes((identifier,)) + self.eui
                               + body, self.gateway_addr)

    async def _keepalive(self) -> None:
        while True:
            self._send(PULL_DATA)
            await asyncio.sleep(self.keepalive_s)

    # --- uplinks ---------------------------------------------------------------------------

    def _heard(self, frame: bytes, rssi: float, snr: float, crc_ok: bool, p: Params) -> None:
        if not crc_ok:
            self.stats["crc_bad"] += 1
        self.stats["rxpk"] += 1
        now = self.air.clock.now()
        rxpk = {"tmst": self._tmst(now), "time": _iso(self.air.epoch + now),
                "freq": p.freq / 1e6, "chan": 0, "rfch": 0, "stat": 1 if crc_ok else -1,
                "modu": "LORA", "datr": f"SF{p.sf}BW{p.bw}", "codr": f"4/{p.cr + 4}",
                "rssi": int(rssi), "lsnr": snr, "size": len(frame),
                "data": base64.b64encode(frame).decode()}
        self._send(PUSH_DATA, json.dumps({"rxpk": [rxpk]}).encode())

    # --- downlinks -------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) < 4 or data[0] != VERSION:
            return
        if data[3] in (PUSH_ACK, PULL_ACK):
            self.stats["acks"] += 1
            return
        if data[3] != PULL_RESP:
            return
        token = bytes(data[1:3])
        try:
            txpk = json.loads(data[4:])["txpk"]
            frame = base64.b64decode(txpk["data"])
            sf = int(txpk["datr"][2:txpk["datr"].index("BW")])
            bw = int(txpk["datr"][txpk["datr"].index("BW") + 2:])
            params = Params(int(round(txpk["freq"] * 1e6)), sf, bw, 1, 8, int(txpk["powe"]),
                            bool(txpk.get("ipol", False)))
        except (ValueError, KeyError, TypeError):
            self._tx_ack(token, "TX_FREQ")
            return
        self._spawn(self._transmit(token, txpk, frame, params))

    async def _transmit(self, token: bytes, txpk: dict, frame: bytes, params: Params) -> None:
        now = self._tmst(self.air.clock.now())
        if txpk.get("imme"):
            wait_us = 0
        else:
            wait_us = (int(txpk["tmst"]) - now) & 0xFFFFFFFF
            if wait_us > 0x7FFFFFFF:  # in the past (modulo the 32-bit counter)
                self._tx_ack(token, "TOO_LATE")
                return
            if wait_us > MAX_AHEAD_S * 1e6:
                self._tx_ack(token, "TOO_EARLY")
                return
        start = self.air.clock.now() + wait_us / 1e6
        end = start + params.time_on_air_s(len(frame))
        # One transmitter: a downlink overlapping one already scheduled is refused.
        if any(s < end and start < e for s, e in self._scheduled):
            self._tx_ack(token, "COLLISION_PACKET")
            return
        self._scheduled = [(s, e) for s, e in self._scheduled if e > self.air.clock.now()]
        self._scheduled.append((start, end))
        self._tx_ack(token, "NONE")
        await self.air.clock.sleep(wait_us / 1e6)
        self.stats["txpk"] += 1
        # (After the MHDR: a Sealink frame's first byte.)
        kind = ("hs", "data", "ctl", "frag", "rej", "rel")[(frame[1] >> 5) - 1] \
            if len(frame) > 1 and 1 <= frame[1] >> 5 <= 6 else "?"
        self.tx_kinds[kind] = self.tx_kinds.get(kind, 0) + 1
        self.tx_log.append((params.freq, start, end - start))
        await self.air.transmit(self.radio, frame, params, at=start)

    def _tx_ack(self, token: bytes, error: str) -> None:
        if error != "NONE":
            self.stats["tx_ack_errors"] += 1
            self.tx_errors[error] = self.tx_errors.get(error, 0) + 1
        self._send(TX_ACK, json.dumps({"txpk_ack": {"error": error}}).encode(), token)

    def duty_cycle_used(self, region: str = "EU868") -> dict[str, dict[str, float]]:
        """Per sub-band it transmitted in: the most time on air in any hour so far, and
        that as a fraction of the sub-band's hourly budget."""
        reg = regions.region(region)
        logs: dict[str, list[tuple[float, float]]] = {}
        for freq, start, toa in self.tx_log:
            logs.setdefault(reg.sub_band(freq).name, []).append((start, toa))
        out = {}
        for name, log in sorted(logs.items()):
            band = next(b for b in reg.sub_bands if b.name == name)
            busiest = busiest_window_s(log, 3600)
            out[name] = {"busiest_hour_s": round(busiest, 3),
                         "budget_s": round(band.budget_s, 3),
                         "used": round(busiest / band.budget_s, 4) if band.duty < 1 else 0.0}
        return out


def busiest_window_s(airtime_log: list[tuple[float, float]], window_s: float) -> float:
    """The most airtime in any `window_s` of modeled time (sliding, from each frame's
    start), from a radio's (start, time on air) log."""
    best, total, j = 0.0, 0.0, 0
    log = sorted(airtime_log)
    for start, toa in log:
        total += toa
        while log[j][0] <= start - window_s:
            total -= log[j][1]
            j += 1
        best = max(best, total)
    return best


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"
