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

Faults for tests: `error_rate` (a PSEND answered AT_ERROR), `garbage()` (noise on the
UART), `silent` (the module stops answering).
"""

from __future__ import annotations

import asyncio
import binascii
import collections
import dataclasses
import random

from sim.lora import LoRaAir, Params, Radio

BANNER = ["RAKwireless RAK3172-E Example", "-" * 54, "Version: RUI_4.0.6_RAK3172-E",
          "Current Work Mode: LoRa P2P."]
P2P_BW = (125, 250, 500)
P2P_MAX = 255  # bytes a P2P frame may carry (the region's limits are the driver's)


class Rak3172Model:
    def __init__(self, air: LoRaAir, radio: Radio, reader, writer, error_rate: float = 0.0,
                 seed: int | None = None):
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
                asyncio.get_running_loop().call_later(0.05, self._out, *BANNER)
            return ["OK"]
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
