# RAK3172 (RUI3 firmware) LoRa module on a UART, in LoRa P2P mode.
#
# The same driver runs on a device (MicroPython, frozen: a UART wrapped in
# asyncio.StreamReader/StreamWriter) and on the gateway host (CPython, pyserial-asyncio
# streams): it needs only `await reader.readline()`, `writer.write()` and
# `await writer.drain()`.
#
# The AT dialogue (RUI3 AT command manual): every command ends in CR LF; the module
# answers with optional value lines, then one status line: OK, or AT_ERROR,
# AT_PARAM_ERROR, AT_BUSY_ERROR, AT_COMMAND_NOT_FOUND, ...  Events come unasked:
#
#   AT+NWM=0                                  P2P mode (not LoRaWAN)
#   AT+P2P=868100000:7:125:0:8:14             freq Hz : SF : BW kHz : CR (0 = 4/5) :
#                                             preamble : TX power dBm
#   AT+IQINVER=1                              IQ inversion (transmit and receive)
#   AT+PRECV=65533                            receive continuously, sending allowed
#   AT+PSEND=<hex>          -> OK, later  +EVT:TXP2P DONE
#                                          +EVT:RXP2P:<rssi>:<snr>:<hex>   a frame heard
#
# Polarity: as in LoRaWAN, uplinks go with normal IQ and downlinks with inverted IQ, so
# that devices do not hear each other and gateways do not hear each other.  The module
# has one IQ setting for both directions: a device listens inverted and turns inversion
# off for the length of each transmission; a gateway's module (role "gateway") the
# other way round.
#
# Every frame on the air is a LoRaWAN proprietary frame (sealink.lora.MHDR in front):
# frames heard with another first byte (LoRaWAN traffic on the same channel) are
# counted ("foreign") and never handed up.
#
# Anything else on the line (noise on a UART, a module rebooting) is counted and
# ignored.  A command that gets no status in time is retried after resynchronising
# with a bare "AT"; errors surface as ModemError with the module's status code.

import asyncio
import binascii

from sealink.errors import SealinkError
from sealink.lora import max_payload, time_on_air_us, unwrap, wrap

RX_CONTINUOUS_TX_OK = 65533
RX_QUEUE = 8
MAX_LINE = 600  # "+EVT:RXP2P:-120:-20:" + 2 x 255 hex digits, with room
IQ_NORMAL, IQ_INVERTED = 0, 1


class ModemError(SealinkError):
    # The module answered a command with an error status, or did not answer.
    def __init__(self, command, status):
        super().__init__("%s: %s" % (command, status))
        self.command = command
        self.status = status


class Rak3172:
    def __init__(self, reader, writer, freq=868100000, sf=7, bw=125, cr=0, preamble=8,
                 txp=14, timeout_ms=1000, retries=3, tx_timeout_ms=None, region="EU868",
                 role="device", rx=None, rx_hold_ms=0):
        self._reader = reader
        self._writer = writer
        self.freq, self.sf, self.bw, self.cr = freq, sf, bw, cr
        self.preamble, self.txp = preamble, txp
        self.mtu = max_payload(sf, region)
        # The polarity this end hears: a device hears downlinks (inverted), a gateway
        # hears uplinks (normal); it transmits with the other one.
        self._rx_iq = IQ_NORMAL if role == "gateway" else IQ_INVERTED
        # rx: (freq, sf) a device listens on between its transmissions (a gateway's RX2
        # channel, its 10 % sub-band in EU868), instead of its own uplink channel.
        self.rx = rx
        # rx_hold_ms: after each transmission the module stays on its listening channel
        # this long before it may tune away to transmit again: the receive windows of
        # class A (RX1, RX2 and the frames of an answer).  Without it a device with
        # another frame queued tunes to its uplink channel at once and, while the
        # module holds that frame for its duty cycle (minutes at SF12), hears nothing
        # of the answer to the frame before.
        self.rx_hold_ms = rx_hold_ms
        self.timeout_ms = timeout_ms
        self.retries = retries
        # A module may hold a frame for its duty-cycle budget: allow 100x time on air.
        self.tx_timeout_ms = tx_timeout_ms
        self._lock = asyncio.Lock()  # one command at a time
        self._send_lock = asyncio.Lock()
        self._status = None
        self._values = []
        self._reply = asyncio.Event()
        self._txdone = asyncio.Event()
        self._rx = []
        self._rx_event = asyncio.Event()
        self._task = None
        self._waiting = False
        self.stats = {"garbage": 0, "errors": 0, "timeouts": 0, "rx": 0, "tx": 0,
                      "rx_bad": 0, "rx_overflow": 0, "foreign": 0, "restore_failed": 0}
        self.airtime_us = 0

    # --- the line reader ----------------------------------------------------------------

    async def _read_loop(self):
        while True:
            try:
                raw = await self._reader.readline()
            except (ValueError, OSError):  # an overlong line (CPython) or a UART error
                self.stats["garbage"] += 1
                continue
            if not raw:
                return  # the stream closed
            if len(raw) > MAX_LINE:
                self.stats["garbage"] += 1
                continue
            try:
                line = raw.decode().strip()
            except UnicodeError:
                self.stats["garbage"] += 1
                continue
            if line:
                self._line(line)

    def _line(self, line):
        if line.startswith("+EVT:"):
            self._event(line[5:])
            return
        if not self._waiting:
            self.stats["garbage"] += 1
            return
        if line == "OK" or (line.startswith("AT_") and line[3:4].isalpha()):
            self._status = line
            self._reply.set()
        else:
            self._values.append(line)

    def _event(self, event):
        if event.startswith("RXP2P:"):
            self._heard(event[6:])
        elif event.startswith("TXP2P"):
            self._txdone.set()
        # (Other events, RX timeouts, restarts, need nothing from us.)

    def _queue(self, frame, rssi, snr):
        if len(self._rx) >= RX_QUEUE:
            self._rx.pop(0)
            self.stats["rx_overflow"] += 1
        self._rx.append((frame, rssi, snr))
        self.stats["rx"] += 1
        self._rx_event.set()

    def _heard(self, fields):
        parts = fields.split(":")
        if len(parts) != 3:
            if "TIMEOUT" not in fields:
                self.stats["rx_bad"] += 1
            return
        try:
            rssi, snr = int(parts[0]), int(parts[1])
            frame = binascii.unhexlify(parts[2])
        except ValueError:
            self.stats["rx_bad"] += 1
            return
        if not frame:
            self.stats["rx_bad"] += 1
            return
        frame = unwrap(frame)
        if frame is None:  # not a Sealink frame (LoRaWAN, another vendor's): not ours
            self.stats["foreign"] += 1
            return
        self._queue(frame, rssi, snr)

    # --- commands -----------------------------------------------------------------------

    async def _once(self, command, timeout_ms):
        self._status = None
        self._values = []
        self._reply.clear()
        self._waiting = True
        try:
            self._writer.write(command.encode() + b"\r\n")
            await self._writer.drain()
            await asyncio.wait_for(self._reply.wait(), timeout_ms / 1000)
        except asyncio.TimeoutError:
            self.stats["timeouts"] += 1
            return None
        finally:
            self._waiting = False
        return self._status

    async def command(self, command, timeout_ms=None):
        """Send one AT command; its value lines, or ModemError.  Retried (after a
        resynchronising "AT") when the module does not answer or is busy."""
        timeout_ms = timeout_ms or self.timeout_ms
        async with self._lock:
            status = None
            for attempt in range(self.retries + 1):
                if attempt:
                    await asyncio.sleep((50 << attempt) / 1000)
                    if status is None:
                        await self._once("AT", self.timeout_ms)
                status = await self._once(command, timeout_ms)
                if status == "OK":
                    return self._values
                if status is not None and status != "AT_BUSY_ERROR":
                    break
            self.stats["errors"] += 1
            raise ModemError(command.split("=")[0], status or "no answer")

    async def start(self):
        """Start reading the UART and put the module in P2P mode with our parameters."""
        if self._task is None:
            self._task = asyncio.create_task(self._read_loop())
        await self.command("AT")
        mode = await self.command("AT+NWM=?")
        if not mode or mode[-1].rsplit("=", 1)[-1] != "0":
            await self.command("AT+NWM=0", 5000)  # the module restarts into P2P
        await self._tune(self.rx)
        await self.command("AT+IQINVER=%d" % self._rx_iq)
        await self.command("AT+PRECV=%d" % RX_CONTINUOUS_TX_OK)

    async def _tune(self, channel):
        freq, sf = channel or (self.freq, self.sf)
        await self.command("AT+P2P=%d:%d:%d:%d:%d:%d" % (freq, sf, self.bw, self.cr,
                                                         self.preamble, self.txp))

    async def _listen(self):
        # After a transmission: the polarity this end hears, on its listening channel.
        await self.command("AT+IQINVER=%d" % self._rx_iq)
        if self.rx:
            await self._tune(self.rx)

    def time_on_air_us(self, length):
        # (A frame on the air is the Sealink frame and its MHDR.)
        return time_on_air_us(length + 1, self.sf, self.bw * 1000, self.cr + 1, self.preamble)

    async def send(self, frame):
        """Transmit one frame; returns when the module reports it sent."""
        if not 0 < len(frame) <= self.mtu:
            raise ModemError("AT+PSEND", "frame of %d bytes (limit %d at SF%d)"
                             % (len(frame), self.mtu, self.sf))
        toa = self.time_on_air_us(len(frame))
        async with self._send_lock:  # one frame on the air at a time
            self._txdone.clear()
            if self.rx:
                await self._tune(None)  # from its listening channel to its own
            await self.command("AT+IQINVER=%d" % (1 - self._rx_iq))
            try:
                await self.command("AT+PSEND=" + binascii.hexlify(wrap(frame)).decode().upper())
                timeout_ms = self.tx_timeout_ms or (toa * 101 // 1000 + 2000)
                try:
                    await asyncio.wait_for(self._txdone.wait(), timeout_ms / 1000)
                except asyncio.TimeoutError:
                    self.stats["timeouts"] += 1
                    raise ModemError("AT+PSEND", "no TXP2P DONE") from None
            except BaseException:  # an error, or a cancellation (BaseException)
                # Back to listening, as after a frame sent; but what ends this send is
                # the error or cancellation in flight, never this step's own failure.
                try:
                    await self._listen()
                except ModemError:
                    self.stats["restore_failed"] += 1
                raise
            await self._listen()
            self.stats["tx"] += 1
            self.airtime_us += toa
            if self.rx_hold_ms:
                await asyncio.sleep(self.rx_hold_ms / 1000)  # the receive windows

    async def recv(self):
        """The next frame heard: (frame, rssi dBm, snr dB)."""
        while not self._rx:
            self._rx_event.clear()
            await self._rx_event.wait()
        return self._rx.pop(0)

    def close(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None
