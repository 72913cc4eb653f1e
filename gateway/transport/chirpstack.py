"""`chirpstack-mqtt://HOST:PORT?application=<id>&fport=200&format=json&region=EU868`:
Sealink over LoRaWAN, through a ChirpStack v4 network server's MQTT integration.

A device on a LoRaWAN network carries each Sealink frame as the application payload
(FRMPayload) of an uplink on the configured FPort.  The network server removes the
LoRaWAN layer (it holds that layer's session keys) and publishes an uplink event; this
transport takes the events of one application, and answers with downlink enqueue
commands, which the network server sends in the device's next class A receive window.
What the network server sees of the application is Sealink ciphertext only: the
channel is end to end, above LoRaWAN, between the device and this gateway.

    uplink events    application/<id>/device/<DevEUI>/event/up    (integration.UplinkEvent)
    downlinks        application/<id>/device/<DevEUI>/command/down  (api.DeviceQueueItem)
    sent             application/<id>/device/<DevEUI>/event/txack  (integration.TxAckEvent)

The network server keeps a queue per device and sends one item per uplink.  A frame
already in that queue (enqueued, no txack for its queue item yet: a handshake answer
the device asked for again before the first copy reached it) is not enqueued twice, or
a device that is always one answer behind would make the queue grow by one frame per
uplink for ever.

Messages are JSON (the integration's default, protobuf's JSON mapping) or protobuf
(`format=protobuf`), with the message types of the `chirpstack-api` package.  An event
on another FPort is another application's and is ignored (counted); a malformed one is
counted and dropped.  A frame's size limit is the FRMPayload limit N of the data rate
the device used (`regions`: 11 bytes at US915 DR0, 51 at EU868 DR0): the channel
fragments to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import aiomqtt
from chirpstack_api import api, integration
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from sealink_gateway import regions
from sealink_gateway.transport import Address, FrameHandler, TransportError, Uplink

logger = logging.getLogger(__name__)

FORMATS = ("json", "protobuf")
MAX_TRACKED = 64  # queued frames remembered per device


def _parse(event, payload: bytes, fmt: str, what: str):
    """`event` (an integration message) filled from JSON or protobuf; TransportError(fmt)
    if malformed."""
    try:
        if fmt == "json":
            json_format.Parse(payload, event, ignore_unknown_fields=True)
        else:
            event.ParseFromString(payload)
    except (json_format.ParseError, DecodeError, UnicodeDecodeError, ValueError):
        raise TransportError(fmt, f"not {what}") from None
    return event


def parse_uplink(payload: bytes, fmt: str) -> integration.UplinkEvent:
    """An uplink event, from JSON or protobuf; TransportError(reason) if malformed."""
    event = _parse(integration.UplinkEvent(), payload, fmt, "an uplink event")
    if not event.device_info.dev_eui:
        raise TransportError("no_dev_eui", "uplink event without a DevEUI")
    return event


def parse_txack(payload: bytes, fmt: str) -> integration.TxAckEvent:
    """A txack event (the network server sent a queue item); TransportError if
    malformed."""
    return _parse(integration.TxAckEvent(), payload, fmt, "a txack event")


def downlink_command(dev_eui: str, fport: int, frame: bytes, fmt: str,
                     item_id: str = "") -> bytes:
    item = api.DeviceQueueItem(id=item_id, dev_eui=dev_eui, confirmed=False, f_port=fport,
                               data=frame)
    if fmt == "json":
        return json_format.MessageToJson(item, indent=None).encode()
    return item.SerializeToString()


class ChirpStackTransport:
    name = "chirpstack-mqtt"
    # Class A through the network server: an answer rides on the device's next uplink
    # (enqueued now, sent by the network server in that uplink's receive window).
    needs_window = True

    def __init__(self, host: str, port: int, application: str, fport: int = 200,
                 fmt: str = "json", region: str = "EU868", username: str | None = None,
                 password: str | None = None):
        if fmt not in FORMATS:
            raise TransportError("format", f"{fmt!r} is not one of {FORMATS}")
        if not 1 <= fport <= 223:
            raise TransportError("fport", f"{fport} is not an application FPort (1..223)")
        self.host, self.port = host, port
        self.application, self.fport, self.fmt = application, fport, fmt
        self.region = regions.region(region)
        self.username, self.password = username, password
        # The smallest FRMPayload of the region; mtu_for() gives each uplink's own.
        self.max_frame = min(r.max_application for r in self.region.data_rates)
        self.drops: dict[str, int] = {}
        self.ignored: dict[str, int] = {}
        self.connected = asyncio.Event()
        self.enqueued = 0
        self.already_queued = 0  # frames not enqueued again (see the module's docstring)
        self.tx_acked = 0
        # DevEUI -> {frame: queue item id}: enqueued, not yet reported sent.
        self._queued: dict[str, dict[bytes, str]] = {}
        self._handler: FrameHandler | None = None
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task | None = None

    @property
    def up_topic(self) -> str:
        return f"application/{self.application}/device/+/event/up"

    @property
    def txack_topic(self) -> str:
        return f"application/{self.application}/device/+/event/txack"

    def down_topic(self, dev_eui: str) -> str:
        return f"application/{self.application}/device/{dev_eui}/command/down"

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def mtu_for(self, up: Uplink) -> int:
        """The largest frame an answer may be: the FRMPayload limit of the uplink's
        data rate."""
        try:
            return self.region.rate(int(up.radio["dr"])).max_application
        except (KeyError, TypeError, ValueError, regions.RegionError):
            return self.max_frame

    async def start(self, handler: FrameHandler) -> None:
        self._handler = handler
        self._task = asyncio.create_task(self._run())
        try:
            await asyncio.wait_for(self.connected.wait(), 10)
        except TimeoutError:
            logger.warning("chirpstack-mqtt: no broker at %s:%d yet; retrying", self.host,
                           self.port)

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(self.host, self.port, username=self.username,
                                          password=self.password,
                                          identifier=f"sealink-{self.application}") as client:
                    await client.subscribe(self.up_topic, qos=1)
                    await client.subscribe(self.txack_topic, qos=1)
                    self._client = client
                    self.connected.set()
                    logger.info("chirpstack-mqtt: application %s on %s:%d", self.application,
                                self.host, self.port)
                    async for message in client.messages:
                        await self._message(str(message.topic), bytes(message.payload))
            except aiomqtt.MqttError as e:
                self._client = None
                self.connected.clear()
                logger.warning("chirpstack-mqtt: %s; reconnecting in 1 s", e)
                await asyncio.sleep(1.0)

    async def _message(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) == 6 and parts[4:] == ["event", "txack"]:
            self._txack(parts[3].lower(), payload)
            return
        if len(parts) != 6 or parts[4:] != ["event", "up"]:
            self._drop("topic")
            return
        try:
            event = parse_uplink(payload, self.fmt)
        except TransportError as e:
            self._drop(e.reason)
            return
        if event.f_port != self.fport:
            # Another application on the same LoRaWAN device (or its MAC commands).
            self.ignored["other_fport"] = self.ignored.get("other_fport", 0) + 1
            return
        if not event.data:
            self._drop("empty")
            return
        dev_eui = event.device_info.dev_eui.lower()
        best = max(event.rx_info, key=lambda r: r.rssi, default=None)
        radio = {"network_server": "chirpstack", "dev_eui": dev_eui, "dr": event.dr,
                 "fcnt": event.f_cnt, "freq": event.tx_info.frequency / 1e6,
                 # The handshake limiter counts per source: here, the application.
                 "forwarder": f"chirpstack:{self.application}"}
        if best is not None:
            radio.update(rssi=best.rssi, lsnr=round(best.snr, 1), gateway=best.gateway_id)
        try:
            await self._handler(Uplink(frame=bytes(event.data),
                                       source=Address(self.name, dev_eui),
                                       received_at=time.time(), radio=radio))
        except Exception:  # one bad frame must never stop the others
            logger.exception("chirpstack-mqtt: handling a frame failed")
            self._drop("handler_error")

    def _txack(self, dev_eui: str, payload: bytes) -> None:
        try:
            event = parse_txack(payload, self.fmt)
        except TransportError as e:
            self._drop(e.reason)
            return
        queued = self._queued.get(dev_eui, {})
        for frame, item_id in list(queued.items()):
            if item_id == event.queue_item_id:
                del queued[frame]
                self.tx_acked += 1
        if not queued:
            self._queued.pop(dev_eui, None)

    async def send(self, frame: bytes, to: Address, uplink: Uplink | None = None) -> None:
        limit = self.mtu_for(uplink) if uplink is not None else self.max_frame
        if len(frame) > limit:
            raise TransportError("too_long", f"{len(frame)} bytes > {limit}")
        queued = self._queued.setdefault(to.key, {})
        if frame in queued:
            self.already_queued += 1  # on its way: the device's next uplinks take it
            return
        client = self._client
        if client is None:
            raise TransportError("broker", "not connected to the MQTT broker")
        item_id = str(uuid.uuid4())
        try:
            await client.publish(self.down_topic(to.key),
                                 downlink_command(to.key, self.fport, frame, self.fmt,
                                                  item_id), qos=1)
        except aiomqtt.MqttError as e:
            raise TransportError("broker", str(e)) from None
        queued[frame] = item_id
        while len(queued) > MAX_TRACKED:  # (a network server that never sends txack)
            del queued[next(iter(queued))]
        self.enqueued += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
