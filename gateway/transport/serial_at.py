"""`serial-at:///dev/ttyUSB0?module=rak3172&freq=868100000&sf=7`: a LoRa module on a
UART of the gateway host, driven with its AT commands in LoRa P2P mode.

The gateway uses the very driver the devices freeze into their firmware
(`sealink.drivers.rak3172`), over pyserial-asyncio streams.  P2P LoRa has no
addressing: every device on the channel hears every frame (downlinks with inverted IQ,
as from a LoRaWAN gateway), and the Sealink session id
in each frame says whose it is.  So all devices share one `Address` (the module), and
downlinks go out one at a time, whenever the module is free (devices listen
continuously; this is not LoRaWAN class A).

Noise on the serial line and malformed module events are counted (`drops`), never
fatal; a module that stops answering is reset and set up again.
"""

from __future__ import annotations

import asyncio
import logging
import time

import serial_asyncio_fast

from sealink.drivers.rak3172 import ModemError, Rak3172
from sealink_gateway.transport import Address, FrameHandler, TransportError, Uplink

logger = logging.getLogger(__name__)

MODULES = {"rak3172": Rak3172}


class SerialAtTransport:
    name = "serial-at"
    needs_window = False  # P2P modules listen continuously

    def __init__(self, device: str, module: str = "rak3172", baudrate: int = 115200,
                 freq: int = 868_100_000, sf: int = 7, bw: int = 125, power: int = 14):
        if module not in MODULES:
            raise TransportError("module", f"{module!r} is not one of {sorted(MODULES)}")
        self.device, self.module, self.baudrate = device, module, baudrate
        self.radio_params = {"freq": freq, "sf": sf, "bw": bw, "txp": power}
        self.modem: Rak3172 | None = None
        self.max_frame = MODULES[module](None, None, sf=sf).mtu
        self.address = Address(self.name, device)
        self._drops: dict[str, int] = {}
        self._handler: FrameHandler | None = None
        self._writer = None
        self._task: asyncio.Task | None = None
        self._send_lock = asyncio.Lock()
        self._deliveries: set[asyncio.Task] = set()

    def _drop(self, reason: str) -> None:
        self._drops[reason] = self._drops.get(reason, 0) + 1

    async def start(self, handler: FrameHandler) -> None:
        self._handler = handler
        reader, self._writer = await serial_asyncio_fast.open_serial_connection(
            url=self.device, baudrate=self.baudrate)
        # A gateway's module: it hears uplinks (normal IQ) and sends downlinks inverted.
        self.modem = MODULES[self.module](reader, self._writer, role="gateway",
                                          **self.radio_params)
        await self.modem.start()
        self._task = asyncio.ensure_future(self._receive_loop())
        logger.info("serial-at: %s (%s) in P2P mode, SF%d, %d Hz", self.device, self.module,
                    self.modem.sf, self.modem.freq)

    async def _receive_loop(self) -> None:
        while True:
            frame, rssi, snr = await self.modem.recv()
            up = Uplink(frame=frame, source=self.address, received_at=time.time(),
                        radio={"rssi": rssi, "lsnr": snr, "freq": self.modem.freq / 1e6,
                               "datr": f"SF{self.modem.sf}BW{self.modem.bw}"})
            task = asyncio.ensure_future(self._handler(up))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)

    @property
    def drops(self) -> dict[str, int]:
        """What was refused: garbage on the serial line, malformed module events,
        module errors and timeouts, a module not put back to listening after a failed
        send (the driver's counters), frames too long to send."""
        out = dict(self._drops)
        if self.modem is not None:
            s = self.modem.stats
            for reason in ("garbage", "rx_bad", "rx_overflow", "errors", "timeouts",
                           "restore_failed"):
                if s[reason]:
                    out[reason] = s[reason]
        return out

    async def send(self, frame: bytes, to: Address, uplink: Uplink | None = None) -> None:
        if self.modem is None:
            raise TransportError("stopped")
        if len(frame) > self.max_frame:
            self._drop("too_long")
            raise TransportError("too_long", f"{len(frame)} bytes > {self.max_frame}")
        async with self._send_lock:
            modem = self.modem
            if modem is None:
                raise TransportError("stopped")
            try:
                await modem.send(frame)
            except (ModemError, OSError) as e:
                if self.modem is not modem:
                    # stop() closed the module and its line while this send waited on
                    # them: nothing to count or reset.
                    raise TransportError("stopped", "the transport stopped during the send"
                                         ) from None
                if isinstance(e, OSError):  # the serial line itself (a USB adapter gone)
                    self._drop("serial")
                    raise TransportError("serial", str(e)) from None
                self._drop("modem")
                logger.warning("serial-at: %s: %s", self.device, e)
                if e.status == "no answer":
                    await self._reset(modem)

    async def _reset(self, modem: Rak3172) -> None:
        try:
            await modem.start()
        except ModemError as e:
            logger.error("serial-at: %s does not answer: %s", self.device, e)

    async def stop(self) -> None:
        if self._deliveries:
            await asyncio.gather(*self._deliveries, return_exceptions=True)
        if self._task is not None:
            self._task.cancel()
        if self.modem is not None:
            self.modem.close()
            self.modem = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
