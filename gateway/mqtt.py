"""Applications over MQTT: each uplink is published to `<prefix>/<device>/up` as a JSON
envelope (to `<prefix>/<device>/quarantine` while the device's attestation says
quarantine); a message on `<prefix>/<device>/down` ({"payload": "<base64>"}) is queued as
a downlink.  Uplinks are marked published only after the broker has them (QoS 1), and
the backlog left by a restart or a broker outage is published on (re)connect."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import socket

import aiomqtt

from sealink_gateway.service import Gateway

logger = logging.getLogger(__name__)


BATCH = 1000  # uplinks read from the store, and marked published, at once
# QoS 1 publishes awaiting their PUBACK at once.  paho walks its outgoing messages on
# every PUBACK and aiomqtt its pending calls on every publish: both cost in proportion
# to the messages in flight, so a whole batch in flight made each message cost O(BATCH)
# (a profile of the burst: 40 % of the gateway's CPU).  64 in flight fill a loopback or
# LAN link; over a 20 ms round trip they allow 3,200 messages a second.
INFLIGHT = 64
STOP_S = 5.0  # how long stop() waits for the client to leave the broker


def envelope(uplink: dict, attributes: dict, attestation: str | None = None) -> bytes:
    return json.dumps({
        "device": uplink["device_id"],
        "attributes": attributes,
        # The device's latest appraisal (trusted, quarantine), or null for a device
        # without a DICE identity.
        "attestation": attestation,
        "uplink_id": uplink["id"],
        "received_at": uplink["received_at"],
        "radio": uplink["radio"],
        "payload": base64.b64encode(uplink["payload"]).decode(),
    }, sort_keys=True).encode()


class MqttBridge:
    def __init__(self, gateway: Gateway, host: str, port: int, prefix: str = "sealink",
                 poll_s: float | None = None):
        self.gateway = gateway
        # None: woken only by the gateway's commits; else also every poll_s (uplinks
        # that other processes commit: gateway/workers.py).
        self.poll_s = poll_s
        self.host, self.port, self.prefix = host, port, prefix
        self.published = 0
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Leave the broker cleanly: the client's work stops, then it disconnects.
        (Cancelling the client itself, at a bad moment, such as just after it connected,
        could leave it waiting forever for the broker to confirm the disconnect.)"""
        if self._task is None:
            return
        self._stopping.set()
        done, _ = await asyncio.wait({self._task}, timeout=STOP_S)
        if not done:
            logger.warning("mqtt: the client did not stop in %.0f s; cancelling it", STOP_S)
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=STOP_S)

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                        self.host, self.port, identifier="sealink-gateway",
                        max_inflight_messages=INFLIGHT,
                        socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)) as client:
                    # A full window in flight is the plan, not a concern to log.
                    client.pending_calls_threshold = INFLIGHT + 1
                    await client.subscribe(f"{self.prefix}/+/down", qos=1)
                    self.connected.set()
                    logger.info("mqtt: connected to %s:%d", self.host, self.port)
                    work = asyncio.gather(self._publish(client), self._downlinks(client))
                    stopping = asyncio.ensure_future(self._stopping.wait())
                    await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    if self._stopping.is_set():
                        work.cancel()
                        await asyncio.gather(work, return_exceptions=True)
                        return  # and the client disconnects, as it leaves the `with`
                    stopping.cancel()
                    try:
                        await work  # raises what ended it (the connection lost)
                    finally:
                        work.cancel()  # the other half, if it still runs
            except aiomqtt.MqttError as e:
                self.connected.clear()
                if self._stopping.is_set():
                    return
                logger.warning("mqtt: %s; reconnecting in 1 s", e)
                try:
                    await asyncio.wait_for(self._stopping.wait(), 1.0)
                    return
                except TimeoutError:
                    pass

    async def _publish(self, client: aiomqtt.Client) -> None:
        store = self.gateway.store
        attributes: dict[str, dict] = {}
        while True:
            batch = store.uplinks(unpublished=True, limit=BATCH)
            if not batch:
                try:
                    await asyncio.wait_for(self.gateway.uplink_event.wait(), self.poll_s)
                except TimeoutError:
                    pass
                self.gateway.uplink_event.clear()
                continue
            devices = {uplink["device_id"] for uplink in batch}
            for device_id in devices - attributes.keys():
                device = store.device(device_id)
                attributes[device_id] = device.attributes if device else {}
            decisions = store.attestation_decisions(devices)  # once per batch: it can change
            messages = []
            for uplink in batch:
                device_id = uplink["device_id"]
                decision = decisions.get(device_id)
                # A quarantined device (unknown measurements) reaches only its
                # quarantine topic: diagnostics and updates, not the application.
                kind = "quarantine" if decision == "quarantine" else "up"
                messages.append((f"{self.prefix}/{device_id}/{kind}",
                                 envelope(uplink, attributes[device_id], decision)))
            # In order, INFLIGHT at a time; marked published (one commit) once the broker
            # has acknowledged every one of them.  A failure leaves them all unpublished:
            # published again after the reconnect (at least once, as QoS 1 promises).
            try:
                await asyncio.wait_for(self._publish_all(client, messages),
                                       client.timeout * (1 + len(messages) // INFLIGHT))
            except TimeoutError:
                raise aiomqtt.MqttError("the broker did not acknowledge the publishes") from None
            store.mark_published_many([u["id"] for u in batch])
            self.published += len(batch)
            self.gateway.counters["published"] += len(batch)

    @staticmethod
    async def _publish_all(client: aiomqtt.Client, messages: list[tuple[str, bytes]]) -> None:
        # INFLIGHT publishers share one iterator: each takes the next message as soon as
        # the broker acknowledged its last, so publishes leave in the batch's order.
        # (The batch has one timeout, its caller's, not one per message: aiomqtt would
        # run each publish's wait as a task of its own.)
        pending = iter(messages)

        async def publisher() -> None:
            for topic, body in pending:
                await client.publish(topic, body, qos=1, timeout=math.inf)
        await asyncio.gather(*(publisher() for _ in range(min(INFLIGHT, len(messages)))))

    async def _downlinks(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            parts = str(message.topic).split("/")
            if len(parts) != 3 or parts[2] != "down":
                continue
            try:
                body = json.loads(message.payload)
                payload = base64.b64decode(body["payload"], validate=True)
                await self.gateway.send(parts[1], payload)
            except (ValueError, KeyError, TypeError, binascii.Error):
                self.gateway._drop("bad_downlink", f"mqtt {message.topic}")
