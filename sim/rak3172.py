"""A model of the RAK3172 LoRa module (RUI3 firmware) as its host sees it over the UART,
attached to the modeled air.  It speaks the AT commands the Sealink driver uses (and
answers anything else as the module does), in LoRa P2P mode:

    AT                      OK
    AT+NWM=? / AT+NWM=0     network mode; 1 (LoRaWAN) from the factory, 0 = P2P: the
                            module restarts and prints its banner
    AT+P2P=? / AT+P2P=f:sf:bw:cr:pre:txp
    AT+IQINVER=? / =0|1     IQ inversion, for transmission and reception alike (0 from
                            the factory: the module hears normal-IQ frames only)
    AT+PRECV=n              0 stop, 65535 continuous (no TX), 65534 until one frame,
                            65533 continuous with TX allowed, else n ms
    AT+PSEND=<hex>          OK, then +EVT:TXP2P DONE once sent (after the duty-cycle
                            wait: this model holds frames to the EU868 1 % rule)
    heard:                  +EVT:RXP2P:<rssi>:<snr>:<hex>

In LoRaWAN mode (AT+NWM=1, as shipped) it is a class A end device of a modeled network
(sim.network_server), activated over the air or by personalization:

    AT+NJM=1                OTAA (as shipped): AT+DEVEUI= AT+APPEUI= AT+APPKEY=, then
                            AT+JOIN=1:0:<interval s>:<attempts>: a join request, the join
                            accept in the windows join_delay_s after it, +EVT:JOINED (or
                            +EVT:JOIN_FAILED_RX_TIMEOUT, and again after the interval)
    AT+NJM=0                ABP
    AT+BAND=4 / =5          EU868 / US915
    AT+DEVEUI= AT+DEVADDR= AT+NWKSKEY= AT+APPSKEY=   the session
    AT+DR=n AT+ADR=0 AT+CLASS=A
    AT+NJS=?                1 once the ABP session is set
    AT+SEND=<port>:<hex>    OK, then a LoRaWAN data frame (sim.lorawan) on the next
                            default channel at the data rate (after the duty-cycle
                            wait), and the receive windows: RX1 on that channel
                            rx1_delay_s later, RX2 a second later (869.525 MHz, SF12);
                            a downlink of this session heard in one:
                            +EVT:RX_1:<rssi>:<snr>:UNICAST:<port>:<hex> (or RX_2);
                            then +EVT:TX_DONE

Faults for tests: `error_rate` (a PSEND answered AT_ERROR), `garbage()` (noise on the
UART), `silent` (the module stops answering).
"""

from __future__ import annotations

import asyncio
import binascii
import collections
import dataclasses
import random

from sealink_gateway import regions
from sim import lorawan
from sim.lora import LoRaAir, Params, Radio

BANNER = ["RAKwireless RAK3172-E Example", "-" * 54, "Version: RUI_4.0.6_RAK3172-E"]
MODES = {0: "LoRa P2P", 1: "LoRaWAN", 2: "FSK"}
BANDS = {4: "EU868", 5: "US915"}
LORAWAN_COMMANDS = {"+NJM", "+BAND", "+DR", "+ADR", "+CLASS", "+DEVEUI", "+DEVADDR",
                    "+NWKSKEY", "+APPSKEY", "+NJS", "+SEND", "+JOIN", "+APPEUI", "+APPKEY"}
EU868_CHANNELS = (868_100_000, 868_300_000, 868_500_000)
P2P_BW = (125, 250, 500)
P2P_MAX = 255  # bytes a P2P frame may carry (the region's limits are the driver's)


class Rak3172Model:
    def __init__(self, air: LoRaAir, radio: Radio, reader, writer, error_rate: float = 0.0,
                 seed: int | None = None, rx1_delay_s: float = 1.0,
                 rx_margin_s: float = 0.0, join_delay_s: float = 5.0):
        self.air, self.radio = air, radio
        self.reader, self.writer = reader, writer
        self.mode = 1  # LoRaWAN, as shipped
        self.rx = 0  # PRECV value in force (0: not receiving)
        self.error_rate = error_rate
        self.silent = False
        self.rng = random.Random(seed)
        self._sending = False
        self.history: collections.deque = collections.deque(maxlen=64)  # (command, status)
        self._task: asyncio.Task | None = None
        self._tx_tasks: set[asyncio.Task] = set()
        self.stats = {"commands": 0, "errors": 0, "crc_dropped": 0, "heard": 0, "sent": 0,
                      "bad_lines": 0}
        radio.on_receive = self._heard
        radio.listening = False
        radio.rx_iq_inverted = False  # IQ inversion off, as shipped
        self.rx1_delay_s = rx1_delay_s
        # Its receive windows open this much early and close as much late: in a run on
        # the wall clock, timers are late by the host's scheduling (exact in virtual time).
        self.rx_margin_s = rx_margin_s
        self.join_delay_s = join_delay_s  # JOIN_ACCEPT_DELAY1
        self.wan = {"njm": 1, "band": 4, "dr": 0, "adr": 1, "deveui": None, "devaddr": None,
                    "nwkskey": None, "appskey": None, "appeui": None, "appkey": None}
        self.joined = False
        self.dev_nonce = 0
        self._join_nonce: int | None = None  # waiting for the accept of this DevNonce
        self.fcnt_up, self.fcnt_down = 0, -1
        self._channel = 0

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        """Power the module off: its host is gone.  Its pending receive-window timers
        then find nothing to close (the radio may already serve a module started in
        its place)."""
        self.silent = True
        self.rx = 0
        if self._task:
            self._task.cancel()
        for t in self._tx_tasks:
            t.cancel()

    def _out(self, *lines: str) -> None:
        if self.writer.is_closing():  # the host is gone (its process exited)
            return
        self.writer.write(b"".join(line.encode() + b"\r\n" for line in lines))

    def garbage(self, data: bytes) -> None:
        """Noise on the UART towards the host."""
        self.writer.write(data)

    async def _run(self) -> None:
        while True:
            try:
                raw = await self.reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                self.stats["bad_lines"] += 1
                continue
            if not raw:
                return
            line = raw.decode(errors="replace").strip()
            if not line or self.silent:
                continue
            self.stats["commands"] += 1
            reply = self._command(line)
            self.history.append((line[:40], reply[-1] if reply else None))
            if reply is not None:
                if reply[-1] != "OK":
                    self.stats["errors"] += 1
                self._out(*reply)

    # --- commands ---------------------------------------------------------------------------

    def _command(self, line: str) -> list[str] | None:
        if not line.upper().startswith("AT"):
            return ["AT_COMMAND_NOT_FOUND"]
        cmd, _, arg = line[2:].partition("=")
        cmd = cmd.upper()
        if cmd == "":
            return ["OK"]
        if cmd == "+NWM":
            if arg == "?":
                return [f"AT+NWM={self.mode}", "OK"]
            if arg not in ("0", "1", "2"):
                return ["AT_PARAM_ERROR"]
            if int(arg) != self.mode:
                self.mode = int(arg)
                self.rx = 0
                self.radio.listening = False
                asyncio.get_running_loop().call_later(
                    0.05, self._out, *BANNER, f"Current Work Mode: {MODES[self.mode]}.")
            return ["OK"]
        if cmd in LORAWAN_COMMANDS:
            if self.mode != 1:
                return ["AT_MODE_NO_SUPPORT"]
            return self._lorawan(cmd, arg)
        if cmd in ("+P2P", "+PRECV", "+PSEND", "+IQINVER") and self.mode != 0:
            return ["AT_MODE_NO_SUPPORT"]
        if cmd == "+P2P":
            p = self.radio.params
            if arg == "?":
                return [f"AT+P2P={p.freq}:{p.sf}:{p.bw}:{p.cr - 1}:{p.preamble}:{p.power}", "OK"]
            return self._set_p2p(arg)
        if cmd == "+IQINVER":
            if arg == "?":
                return [f"AT+IQINVER={int(self.radio.params.iq_inverted)}", "OK"]
            if arg not in ("0", "1"):
                return ["AT_PARAM_ERROR"]
            self.radio.params = dataclasses.replace(self.radio.params, iq_inverted=arg == "1")
            self.radio.rx_iq_inverted = arg == "1"
            return ["OK"]
        if cmd == "+PRECV":
            if not arg.isdigit() or int(arg) > 65535:
                return ["AT_PARAM_ERROR"]
            self.rx = int(arg)
            self.radio.listening = self.rx != 0
            if self.rx not in (0, 65533, 65534, 65535):
                asyncio.get_running_loop().call_later(
                    self.air.clock.wall(self.rx / 1000), self._rx_window_over, self.rx)
            return ["OK"]
        if cmd == "+PSEND":
            return self._psend(arg)
        return ["AT_COMMAND_NOT_FOUND"]

    # --- LoRaWAN mode -----------------------------------------------------------------------

    def _lorawan(self, cmd: str, arg: str) -> list[str]:
        key = cmd[1:].lower()
        sizes = {"deveui": 8, "devaddr": 4, "nwkskey": 16, "appskey": 16, "appeui": 8,
                 "appkey": 16}
        if cmd == "+SEND":
            return self._send(arg)
        if cmd == "+JOIN":
            return self._join(arg)
        if cmd == "+NJS":
            return [f"AT+NJS={int(self._activated())}", "OK"]
        if arg == "?":
            value = self.wan[key]
            return [f"AT{cmd}={value.hex() if isinstance(value, bytes) else value}", "OK"]
        if key in sizes:
            try:
                value = binascii.unhexlify(arg)
            except (binascii.Error, ValueError):
                return ["AT_PARAM_ERROR"]
            if len(value) != sizes[key]:
                return ["AT_PARAM_ERROR"]
            self.wan[key] = value
            return ["OK"]
        allowed = {"njm": ("0", "1"), "band": ("4", "5"), "adr": ("0", "1"),
                   "class": ("A",), "dr": tuple(str(r.dr) for r in self._region().data_rates)}
        if arg not in allowed[key]:
            return ["AT_PARAM_ERROR"]
        self.wan[key] = arg if key == "class" else int(arg)
        return ["OK"]

    def _region(self) -> regions.Region:
        return regions.region(BANDS[self.wan["band"]])

    def _activated(self) -> bool:
        w = self.wan
        if w["njm"] == 1:
            return self.joined
        return all(w[k] for k in ("devaddr", "nwkskey", "appskey"))

    def _join(self, arg: str) -> list[str]:
        w = self.wan
        try:
            start, _auto, interval, attempts = (int(x) for x in arg.split(":"))
        except ValueError:
            return ["AT_PARAM_ERROR"]
        if w["njm"] != 1 or not all(w[k] for k in ("deveui", "appeui", "appkey")):
            return ["AT_ERROR"]
        if self._sending:
            return ["AT_BUSY_ERROR"]
        if start == 1:
            self._sending = True
            task = asyncio.ensure_future(self._joining(max(1, interval), max(1, attempts)))
            self._tx_tasks.add(task)
            task.add_done_callback(self._tx_tasks.discard)
        return ["OK"]

    async def _joining(self, interval_s: int, attempts: int) -> None:
        w = self.wan
        rate = self._region().rate(w["dr"])
        try:
            for _ in range(attempts):
                self.dev_nonce += 1
                self._join_nonce = self.dev_nonce
                phy = lorawan.join_request(w["appeui"], w["deveui"], self.dev_nonce,
                                           w["appkey"])
                await self._uplink_and_windows(phy, rate, self.join_delay_s)
                if self.joined:
                    self._out("+EVT:JOINED")
                    return
                self._out("+EVT:JOIN_FAILED_RX_TIMEOUT")
                await self.air.clock.sleep(interval_s)
        finally:
            self._join_nonce = None
            self._sending = False

    def _send(self, arg: str) -> list[str]:
        port, _, data = arg.partition(":")
        if not self._activated():
            return ["AT_NO_NETWORK_JOINED"]
        if self._sending:
            return ["AT_BUSY_ERROR"]
        try:
            payload = binascii.unhexlify(data)
            port_n = int(port)
        except (binascii.Error, ValueError):
            return ["AT_PARAM_ERROR"]
        rate = self._region().rate(self.wan["dr"])
        if not 1 <= port_n <= 223 or len(payload) > rate.max_application:
            return ["AT_PARAM_ERROR"]
        self._sending = True
        task = asyncio.ensure_future(self._transmit_lorawan(port_n, payload, rate))
        self._tx_tasks.add(task)
        task.add_done_callback(self._tx_tasks.discard)
        return ["OK"]

    async def _transmit_lorawan(self, port: int, payload: bytes, rate) -> None:
        w = self.wan
        dev_addr = int.from_bytes(w["devaddr"], "big")
        phy = lorawan.encode(lorawan.UNCONFIRMED_UP, dev_addr, self.fcnt_up, port, payload,
                             w["nwkskey"], w["appskey"])
        self.fcnt_up += 1
        try:
            await self._uplink_and_windows(phy, rate, self.rx1_delay_s)
        finally:
            self._sending = False
        # (After its receive windows: until then the module takes no other command.)
        self._out("+EVT:TX_DONE")

    async def _uplink_and_windows(self, phy: bytes, rate, rx1_delay_s: float) -> None:
        """Send a frame on the next default channel and listen in its two windows."""
        freq = EU868_CHANNELS[self._channel % len(EU868_CHANNELS)]
        self._channel += 1
        up = Params(freq, rate.sf, rate.bw, 1, 8, self.radio.params.power)
        self.radio.params = up
        self.radio.rx_iq_inverted = True  # its windows hear downlinks
        try:
            await self.air.transmit(self.radio, phy)
            self.stats["sent"] += 1
            sent_at = self.air.clock.now()
            margin = self.rx_margin_s
            await self.air.clock.sleep(rx1_delay_s - margin)
            self._window = "RX_1"
            await self.air.receive_window(self.radio, margin)
            rx2_freq, rx2_rate = self._region().rx2()
            rx2_at = sent_at + rx1_delay_s + 1.0
            if self.air.clock.now() <= rx2_at - margin:
                await self.air.clock.sleep(rx2_at - margin - self.air.clock.now())
                self.radio.params = Params(rx2_freq, rx2_rate.sf, rx2_rate.bw, 1, 8,
                                           up.power)
                self._window = "RX_2"
                await self.air.receive_window(self.radio, margin)
        finally:
            self.radio.params = up

    _window = "RX_1"

    def _heard_lorawan(self, phy: bytes, rssi: float, snr: float) -> None:
        w = self.wan
        if self._join_nonce is not None and phy[:1] == bytes((lorawan.JOIN_ACCEPT,)):
            try:
                app_nonce, net_id, dev_addr = lorawan.read_join_accept(phy, w["appkey"])
            except lorawan.FrameError:
                return  # another device's accept
            w["nwkskey"], w["appskey"] = lorawan.session_keys(w["appkey"], app_nonce, net_id,
                                                              self._join_nonce)
            w["devaddr"] = dev_addr.to_bytes(4, "big")
            self.fcnt_up, self.fcnt_down, self.joined = 0, -1, True
            return
        if lorawan.dev_addr_of(phy) != int.from_bytes(w["devaddr"] or bytes(4), "big"):
            return  # another device's (or a Sealink proprietary frame)
        try:
            frame = lorawan.decode(phy, w["nwkskey"], w["appskey"],
                                   max(self.fcnt_down, 0) >> 16)
        except lorawan.FrameError:
            self.stats["mic_failed"] += 1
            return
        if frame.fcnt <= self.fcnt_down or frame.mtype not in (lorawan.UNCONFIRMED_DOWN,
                                                                 lorawan.CONFIRMED_DOWN):
            return
        self.fcnt_down = frame.fcnt
        self.stats["heard"] += 1
        if frame.fport:
            self._out(f"+EVT:{self._window}:{int(rssi)}:{int(snr)}:UNICAST:{frame.fport}:"
                      f"{binascii.hexlify(frame.payload).decode().upper()}")

    def _set_p2p(self, arg: str) -> list[str]:
        try:
            freq, sf, bw, cr, pre, txp = (int(x) for x in arg.split(":"))
        except ValueError:
            return ["AT_PARAM_ERROR"]
        if not (150_000_000 <= freq <= 960_000_000 and 5 <= sf <= 12 and bw in P2P_BW
                and 0 <= cr <= 3 and 5 <= pre <= 65535 and 5 <= txp <= 22):
            return ["AT_PARAM_ERROR"]
        self.radio.params = Params(freq, sf, bw, cr + 1, pre, txp,
                                   self.radio.params.iq_inverted)
        return ["OK"]

    def _rx_window_over(self, value: int) -> None:
        if self.rx == value:
            self.rx = 0
            self.radio.listening = False
            self._out("+EVT:RXP2P RECEIVE TIMEOUT")

    def _psend(self, arg: str) -> list[str]:
        if self.rx == 65535 or self._sending:
            return ["AT_BUSY_ERROR"]
        try:
            frame = binascii.unhexlify(arg)
        except (binascii.Error, ValueError):
            return ["AT_PARAM_ERROR"]
        if not 0 < len(frame) <= P2P_MAX:
            return ["AT_PARAM_ERROR"]
        if self.rng.random() < self.error_rate:
            return ["AT_ERROR"]
        self._sending = True
        task = asyncio.ensure_future(self._transmit(frame))
        self._tx_tasks.add(task)
        task.add_done_callback(self._tx_tasks.discard)
        return ["OK"]

    async def _transmit(self, frame: bytes) -> None:
        try:
            await self.air.transmit(self.radio, frame)
            self.stats["sent"] += 1
        finally:
            self._sending = False
        self._out("+EVT:TXP2P DONE")

    # --- the air ----------------------------------------------------------------------------

    def _heard(self, frame: bytes, rssi: float, snr: float, crc_ok: bool, params) -> None:
        if self.mode == 1 and crc_ok and not self.silent:
            self._heard_lorawan(frame, rssi, snr)
            return
        if self.mode != 0 or self.rx == 0 or self.silent:
            return
        if not crc_ok:
            self.stats["crc_dropped"] += 1  # the radio's CRC check: never reaches the host
            return
        self.stats["heard"] += 1
        self._out(f"+EVT:RXP2P:{int(rssi)}:{int(snr)}:{binascii.hexlify(frame).decode().upper()}")
        if self.rx == 65534:
            self.rx = 0
            self.radio.listening = False
