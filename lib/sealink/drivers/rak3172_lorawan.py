# RAK3172 (RUI3 firmware) in LoRaWAN mode: Sealink over a LoRaWAN network.
#
# Each Sealink frame is the application payload of an unconfirmed uplink on `fport`;
# the network server (ChirpStack) hands it to the Sealink gateway's chirpstack-mqtt
# transport, and queues the gateway's answers, which arrive in this device's class A
# receive windows.  LoRaWAN's own session keys are the network operator's: the
# Sealink channel above them is end to end, between this device and its gateway.
#
#   AT+NWM=1                            LoRaWAN mode (the module restarts)
#   AT+BAND=4                           EU868 (5: US915)
#   AT+NJM=0                            activation by personalization (ABP) ...
#   AT+DEVADDR= AT+NWKSKEY= AT+APPSKEY=   ... with the session the operator issued
#   AT+NJM=1, AT+DEVEUI= AT+APPEUI= AT+APPKEY=, AT+JOIN=1:0:10:8   OTAA instead
#   AT+DR=n AT+ADR=0 AT+CLASS=A
#   AT+SEND=<port>:<hex>   -> OK, later  +EVT:TX_DONE
#                                        +EVT:RX_1:<rssi>:<snr>:UNICAST:<port>:<hex>
#
# The frame size limit is the FRMPayload limit N of the data rate (11 bytes at US915
# DR0, 51 at EU868 DR0): the Sealink channel fragments to it.

import asyncio
import binascii

from sealink.drivers.rak3172 import ModemError, Rak3172

# FRMPayload limit N per data rate (LoRaWAN Regional Parameters RP002, no FOpts).
APP_LIMITS = {"EU868": (51, 51, 51, 115, 222, 222), "US915": (11, 53, 125, 242)}
BANDS = {"EU868": 4, "US915": 5}


class Rak3172Lorawan(Rak3172):
    def __init__(self, reader, writer, session=None, fport=200, dr=0, region="EU868",
                 timeout_ms=1000, retries=3, tx_timeout_ms=None):
        super().__init__(reader, writer, timeout_ms=timeout_ms, retries=retries,
                         tx_timeout_ms=tx_timeout_ms, region=region)
        self.session = session or {}  # {"devaddr", "nwkskey", "appskey"} or OTAA keys
        self.fport, self.dr, self.region = fport, dr, region
        self.mtu = APP_LIMITS[region][dr]

    def _event(self, event):
        if event.startswith("RX_1:") or event.startswith("RX_2:"):
            self._downlink(event[5:])
        elif event.startswith("TX_DONE"):
            self._txdone.set()
        elif event.startswith("JOINED"):
            self.joined = True

    def _downlink(self, fields):
        parts = fields.split(":")
        if len(parts) != 5:
            self.stats["rx_bad"] += 1
            return
        try:
            rssi, snr, port = int(parts[0]), int(parts[1]), int(parts[3])
            frame = binascii.unhexlify(parts[4])
        except ValueError:
            self.stats["rx_bad"] += 1
            return
        if port != self.fport or not frame:
            self.stats["foreign"] += 1  # another application's downlink
            return
        self._queue(frame, rssi, snr)

    async def start(self):
        if self._task is None:
            self._task = asyncio.create_task(self._read_loop())
        await self.command("AT")
        mode = await self.command("AT+NWM=?")
        if not mode or mode[-1].rsplit("=", 1)[-1] != "1":
            await self.command("AT+NWM=1", 5000)  # the module restarts into LoRaWAN
        s = self.session
        await self.command("AT+BAND=%d" % BANDS[self.region])
        if s.get("devaddr"):
            await self.command("AT+NJM=0")
            for key in ("devaddr", "nwkskey", "appskey"):
                await self.command("AT+%s=%s" % (key.upper(), s[key]))
        else:
            await self.command("AT+NJM=1")
            for key in ("deveui", "appeui", "appkey"):
                await self.command("AT+%s=%s" % (key.upper(), s[key]))
            self.joined = False
            await self.command("AT+JOIN=1:0:10:8", 5000)
            for _ in range(600):
                if self.joined:
                    break
                await asyncio.sleep(0.1)
            else:
                raise ModemError("AT+JOIN", "not joined")
        await self.command("AT+DR=%d" % self.dr)
        await self.command("AT+ADR=0")
        await self.command("AT+CLASS=A")

    def time_on_air_us(self, length):
        return 0  # (the network's accounting, not ours)

    async def send(self, frame):
        """Send one frame as an uplink's application payload; returns once sent."""
        if not 0 < len(frame) <= self.mtu:
            raise ModemError("AT+SEND", "frame of %d bytes (limit %d at DR%d)"
                             % (len(frame), self.mtu, self.dr))
        async with self._send_lock:
            self._txdone.clear()
            await self.command("AT+SEND=%d:%s" % (self.fport,
                                                  binascii.hexlify(frame).decode().upper()))
            try:
                await asyncio.wait_for(self._txdone.wait(),
                                       (self.tx_timeout_ms or 600000) / 1000)
            except asyncio.TimeoutError:
                self.stats["timeouts"] += 1
                raise ModemError("AT+SEND", "no TX_DONE") from None
        self.stats["tx"] += 1
