# A driver around a micropython-lib LoRa modem (lora-sx126x, lora-sx127x), for boards
# with the radio on SPI.  The application builds the modem for its pins and passes the
# asynchronous wrapper in:
#
#     from lora import SX1262, AsyncModem
#     modem = AsyncModem(SX1262(spi, cs, busy, dio1, reset, lora_cfg={"sf": 9, ...}))
#     radio = LoRaModem(modem, sf=9)
#
# The driver keeps to the region's payload limit of the spreading factor and to the 1 %
# duty cycle of the sub-band (after a frame of T it waits 99 T before the next), using
# the modem's own time-on-air figure.  It sends with normal IQ and receives with
# inverted IQ (the gateway's downlinks, as in LoRaWAN): it sets the modem's
# "invert_iq_rx" / "invert_iq_tx" when the modem can be configured.  Frames go out as
# LoRaWAN proprietary frames (sealink.lora.MHDR); frames heard that are not (LoRaWAN
# traffic) are counted ("foreign") and dropped.

import asyncio
import time

from sealink.drivers.rak3172 import ModemError
from sealink.lora import max_payload, unwrap, wrap

try:
    _ticks_ms, _ticks_diff = time.ticks_ms, time.ticks_diff
except AttributeError:  # CPython

    def _ticks_ms():
        return int(time.monotonic() * 1000)

    def _ticks_diff(a, b):
        return a - b


class LoRaModem:
    def __init__(self, modem, sf=7, duty_cycle=0.01, region="EU868"):
        self._modem = modem
        self.sf = sf
        self.mtu = max_payload(sf, region)
        self.duty_cycle = duty_cycle
        self._free_at = None
        self.airtime_us = 0
        self.stats = {"tx": 0, "rx": 0, "crc_errors": 0, "duty_wait_ms": 0, "foreign": 0}

    async def start(self):
        # (micropython-lib's AsyncModem passes configure() to its modem.)
        configure = getattr(self._modem, "configure", None)
        if configure is not None:
            configure({"invert_iq_rx": True, "invert_iq_tx": False})

    async def send(self, frame):
        if not 0 < len(frame) <= self.mtu:
            raise ModemError("send", "frame of %d bytes (limit %d at SF%d)"
                             % (len(frame), self.mtu, self.sf))
        if self._free_at is not None:
            wait = _ticks_diff(self._free_at, _ticks_ms())
            if wait > 0:
                self.stats["duty_wait_ms"] += wait
                await asyncio.sleep(wait / 1000)
        toa_us = self._modem.get_time_on_air_us(len(frame) + 1)
        await self._modem.send(wrap(frame))
        self.airtime_us += toa_us
        self.stats["tx"] += 1
        off_ms = int(toa_us * (1 / self.duty_cycle - 1) / 1000)
        self._free_at = _ticks_ms() + off_ms

    async def recv(self):
        while True:
            packet = await self._modem.recv()
            if packet is None:
                continue
            if not getattr(packet, "valid_crc", True):
                self.stats["crc_errors"] += 1
                continue
            frame = unwrap(bytes(packet))
            if frame is None:
                self.stats["foreign"] += 1
                continue
            self.stats["rx"] += 1
            return (frame, getattr(packet, "rssi", 0), getattr(packet, "snr", 0))
