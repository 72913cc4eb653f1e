"""A modeled LoRaWAN network with a ChirpStack v4 MQTT integration: its gateway hears
the LoRaWAN data frames of its devices on the modeled air; the network server checks
and decrypts them (sim.lorawan: ABP sessions, real frame format, MIC and encryption),
publishes an uplink event per frame to a real MQTT broker on the integration's topic,
activates devices over the air (join request and accept, LoRaWAN 1.0.x) or by
personalization,
takes the downlink enqueue commands published for its devices, and sends each one in
the device's next class A receive window: RX1 (the uplink's channel and data rate,
inverted IQ) when its sub-band's duty cycle allows, else RX2 (869.525 MHz, DR0); the
rest wait in the device's queue for its next uplink, as ChirpStack's device queue does.

Messages are those of the `chirpstack-api` package (integration.UplinkEvent,
api.DeviceQueueItem), as JSON or protobuf.  This stands in for ChirpStack itself (a
Go service this machine cannot install): what the Sealink gateway's
`chirpstack-mqtt://` transport sees is what ChirpStack publishes.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
import os
import uuid
from dataclasses import dataclass, field

import aiomqtt
from chirpstack_api import api, integration
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from sealink_gateway import regions
from sim import lorawan
from sim.lora import LoRaAir, Params, Radio

logger = logging.getLogger(__name__)

EU868_CHANNELS = (868_100_000, 868_300_000, 868_500_000)


@dataclass
class Session:
    """One device's ABP session on the network server."""

    dev_eui: str
    dev_addr: int
    nwk_s_key: bytes
    app_s_key: bytes
    name: str = ""
    fcnt_up: int = -1
    fcnt_down: int = 0
    queue: collections.deque = field(default_factory=collections.deque)  # (fport, data, id)
    stats: collections.Counter = field(default_factory=collections.Counter)


@dataclass
class OtaaDevice:
    """A device the network server may activate over the air."""

    dev_eui: str
    app_eui: bytes
    app_key: bytes
    name: str = ""
    nonces: set = field(default_factory=set)  # DevNonces used (a replayed join is refused)


class NetworkServer:
    NET_ID = 0x000013

    def __init__(self, air: LoRaAir, radio: Radio, broker: tuple[str, int], application: str,
                 fmt: str = "json", region: str = "EU868", rx1_delay_s: float = 1.0,
                 join_delay_s: float = 5.0):
        self.air, self.radio = air, radio
        self.broker, self.application, self.fmt = broker, application, fmt
        self.region = regions.region(region)
        self.rx1_delay_s = rx1_delay_s
        self.join_delay_s = join_delay_s  # JOIN_ACCEPT_DELAY1
        self.sessions: dict[int, Session] = {}  # DevAddr -> session
        self.otaa: dict[str, OtaaDevice] = {}  # DevEUI -> what a join needs
        self._app_nonce = 0
        self.stats: collections.Counter = collections.Counter()
        self.duty = regions.DutyCycle(self.region)
        self.tx_log: list[tuple[int, float, float]] = []
        radio.any_sf = True
        radio.channels = radio.channels or EU868_CHANNELS
        radio.rx_iq_inverted = False
        radio.regulated = False  # (held by its own ledger, self.duty)
        radio.on_receive = self._heard
        self._client: aiomqtt.Client | None = None
        self._tasks: set[asyncio.Task] = set()
        self.connected = asyncio.Event()

    def add_device(self, session: Session) -> None:
        self.sessions[session.dev_addr] = session

    def add_otaa_device(self, device: OtaaDevice) -> None:
        self.otaa[device.dev_eui] = device

    async def start(self) -> None:
        self._spawn(self._run())
        await asyncio.wait_for(self.connected.wait(), 10)

    def stop(self) -> None:
        for t in self._tasks:
            t.cancel()

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(*self.broker, identifier="modeled-chirpstack") as c:
                    await c.subscribe(f"application/{self.application}/device/+/command/down",
                                      qos=1)
                    self._client = c
                    self.connected.set()
                    async for message in c.messages:
                        self._command(str(message.topic), bytes(message.payload))
            except aiomqtt.MqttError as e:
                self._client = None
                logger.warning("network server: %s; reconnecting", e)
                await asyncio.sleep(0.5)

    # --- downlink enqueue commands ---------------------------------------------------------

    def _command(self, topic: str, payload: bytes) -> None:
        item = api.DeviceQueueItem()
        try:
            if self.fmt == "json":
                json_format.Parse(payload, item, ignore_unknown_fields=True)
            else:
                item.ParseFromString(payload)
        except (json_format.ParseError, DecodeError, ValueError):
            self.stats["bad_command"] += 1
            return
        dev_eui = topic.split("/")[3].lower()
        session = next((s for s in self.sessions.values() if s.dev_eui == dev_eui), None)
        if session is None or item.dev_eui.lower() != dev_eui or not 1 <= item.f_port <= 223:
            self.stats["bad_command"] += 1
            return
        session.queue.append((item.f_port, bytes(item.data), item.id))
        session.stats["enqueued"] += 1
        self.stats["enqueued"] += 1

    # --- uplinks -----------------------------------------------------------------------------

    def _heard(self, phy: bytes, rssi: float, snr: float, crc_ok: bool, p: Params) -> None:
        if not crc_ok:
            self.stats["crc_bad"] += 1
            return
        if phy[:1] == bytes((lorawan.JOIN_REQUEST,)):
            self._join(phy, p)
            return
        dev_addr = lorawan.dev_addr_of(phy)
        session = self.sessions.get(dev_addr) if dev_addr is not None else None
        if session is None:
            self.stats["not_ours"] += 1  # Sealink's proprietary frames, other networks
            return
        try:
            frame = lorawan.decode(phy, session.nwk_s_key, session.app_s_key,
                                   max(session.fcnt_up, 0) >> 16)
        except lorawan.FrameError:
            self.stats["mic_failed"] += 1
            return
        if frame.fcnt <= session.fcnt_up or frame.mtype not in (lorawan.UNCONFIRMED_UP,
                                                                  lorawan.CONFIRMED_UP):
            self.stats["replayed"] += 1
            return
        session.fcnt_up = frame.fcnt
        session.stats["uplinks"] += 1
        self.stats["uplinks"] += 1
        heard_at = self.air.clock.now()
        if frame.fport:
            self._spawn(self._publish(session, frame, rssi, snr, p))
        self._spawn(self._answer(session, heard_at, p))

    async def _publish(self, session: Session, frame: lorawan.DataFrame, rssi: float,
                       snr: float, p: Params) -> None:
        dr = self.region.rate_of(p.sf, p.bw).dr
        event = integration.UplinkEvent(
            deduplication_id=str(uuid.uuid4()),
            device_info=self._device_info(session),
            dev_addr=f"{session.dev_addr:08x}", adr=False, dr=dr, f_cnt=frame.fcnt,
            f_port=frame.fport, confirmed=frame.mtype == lorawan.CONFIRMED_UP,
            data=frame.payload)
        rx = event.rx_info.add()
        rx.gateway_id, rx.rssi, rx.snr = "b827ebfffe000001", int(rssi), snr
        event.tx_info.frequency = p.freq
        event.tx_info.modulation.lora.bandwidth = p.bw * 1000
        event.tx_info.modulation.lora.spreading_factor = p.sf
        sent = await self._emit(session, "up", event)
        self.stats["published" if sent else "publish_failed"] += 1

    def _device_info(self, session: Session) -> integration.DeviceInfo:
        return integration.DeviceInfo(
            tenant_id="00000000-0000-0000-0000-000000000000", tenant_name="sealink",
            application_id=self.application, application_name="sealink",
            device_name=session.name, dev_eui=session.dev_eui)

    async def _emit(self, session: Session, kind: str, event) -> bool | None:
        """Publish an integration event of the device (`kind`: up, txack), in the
        configured format, with its time set now: True once the broker took it, False
        if it refused, None when not connected."""
        event.time.FromDatetime(datetime.datetime.now(datetime.UTC))
        body = (json_format.MessageToJson(event, indent=None).encode() if self.fmt == "json"
                else event.SerializeToString())
        if self._client is None:
            return None
        try:
            await self._client.publish(f"application/{self.application}/device/"
                                       f"{session.dev_eui}/event/{kind}", body, qos=1)
            return True
        except aiomqtt.MqttError:
            return False

    def _join(self, phy: bytes, p: Params) -> None:
        try:
            _, dev_eui, dev_nonce = lorawan.read_join_request(phy)
        except lorawan.FrameError:
            self.stats["bad_join"] += 1
            return
        device = self.otaa.get(dev_eui.hex())
        if device is None:
            self.stats["unknown_join"] += 1
            return
        try:
            lorawan.check_join_request(phy, device.app_key)
        except lorawan.FrameError:
            self.stats["mic_failed"] += 1
            return
        if dev_nonce in device.nonces:
            self.stats["join_replayed"] += 1
            return
        device.nonces.add(dev_nonce)
        self._app_nonce += 1
        dev_addr = 0x26100000 + self._app_nonce
        nwk, app = lorawan.session_keys(device.app_key, self._app_nonce, self.NET_ID, dev_nonce)
        for addr in [a for a, s in self.sessions.items() if s.dev_eui == device.dev_eui]:
            del self.sessions[addr]  # the old session ends with the join
        self.sessions[dev_addr] = Session(device.dev_eui, dev_addr, nwk, app, device.name)
        self.stats["joins"] += 1
        accept = lorawan.join_accept(device.app_key, self._app_nonce, self.NET_ID, dev_addr)
        self._spawn(self._transmit(accept, self.air.clock.now() + self.join_delay_s, p))

    # --- downlinks ---------------------------------------------------------------------------

    async def _answer(self, session: Session, heard_at: float, p: Params) -> None:
        """Class A: the first queued downlink goes in RX1 or RX2 of this uplink."""
        rx1 = heard_at + self.rx1_delay_s
        # The application had until just before RX1 to enqueue (ChirpStack waits for
        # its get_downlink_data_delay, then takes what is queued).
        await self.air.clock.sleep(max(0.0, rx1 - self.air.clock.now() - 0.05 *
                                       self.rx1_delay_s))
        if not session.queue:
            return
        fport, data, item_id = session.queue[0]
        phy = lorawan.encode(lorawan.UNCONFIRMED_DOWN, session.dev_addr, session.fcnt_down,
                             fport, data, session.nwk_s_key, session.app_s_key)
        if await self._transmit(phy, rx1, p):
            session.queue.popleft()
            self._spawn(self._txack(session, item_id, session.fcnt_down))
            session.fcnt_down += 1
            session.stats["downlinks"] += 1
            self.stats["downlinks"] += 1
        else:
            self.stats["downlink_deferred"] += 1

    async def _txack(self, session: Session, item_id: str, f_cnt_down: int) -> None:
        """ChirpStack's txack event: the gateway sent that queue item."""
        event = integration.TxAckEvent(
            downlink_id=int.from_bytes(os.urandom(4), "big"), queue_item_id=item_id,
            f_cnt_down=f_cnt_down, gateway_id="b827ebfffe000001",
            device_info=self._device_info(session))
        sent = await self._emit(session, "txack", event)
        if sent is not None:
            self.stats["txack" if sent else "publish_failed"] += 1

    async def _transmit(self, phy: bytes, rx1: float, p: Params) -> bool:
        """Send a downlink in RX1 (at `rx1`, the uplink's channel and data rate) or RX2 (a
        second later), whichever the duty cycle allows; False if neither."""
        rx2_freq, rx2_rate = self.region.rx2()
        for at, params in ((rx1, Params(p.freq, p.sf, p.bw, power=14, iq_inverted=True)),
                           (rx1 + 1.0, Params(rx2_freq, rx2_rate.sf, rx2_rate.bw, power=14,
                                              iq_inverted=True))):
            if len(phy) > self.region.rate_of(params.sf, params.bw).max_phy:
                continue
            toa = params.time_on_air_s(len(phy))
            if not self.duty.allows(params.freq, at, toa) or at < self.air.clock.now():
                continue
            self.duty.record(params.freq, at, toa)
            self.tx_log.append((params.freq, at, toa))
            await self.air.clock.sleep(at - self.air.clock.now())
            self._spawn(self.air.transmit(self.radio, phy, params, at=at))
            return True
        return False


def abp_session(name: str, dev_addr: int) -> Session:
    """A fresh ABP session (random keys) for a modeled device."""
    return Session(dev_eui=os.urandom(8).hex(), dev_addr=dev_addr, nwk_s_key=os.urandom(16),
                   app_s_key=os.urandom(16), name=name)

