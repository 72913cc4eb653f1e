"""Run the gateway from a configuration: keys, store, transports, MQTT, metrics,
structured logs, and a graceful stop on SIGTERM / SIGINT."""

from __future__ import annotations

import asyncio
import faulthandler
import json
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path

from sealink import crypto
from sealink_gateway.authority import Authority
from sealink_gateway.config import Config
from sealink_gateway.heap import HeapKeeper
from sealink_gateway.keyfile import KeyFileError, require_private, write_private
from sealink_gateway.service import Gateway, HandshakeLimiter
from sealink_gateway.store import Store
from sealink_gateway.transport.semtech_udp import SemtechUdpTransport
from sealink_gateway.transport.serial_at import SerialAtTransport
from sealink_gateway.transport.udp import UdpTransport

logger = logging.getLogger("sealink_gateway")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (no keys, no payloads);
    and the worker, when the gateway runs on several (gateway/workers.py)."""

    def __init__(self, worker: int | None = None):
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": round(record.created, 3), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        if self.worker is not None:
            entry["worker"] = self.worker
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str, worker: int | None = None) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def load_or_create_static_key(path: Path) -> bytes:
    """The gateway's X25519 private key: 32 raw bytes, created with mode 0600."""
    if path.exists():
        require_private(path)
        key = path.read_bytes()
        if len(key) != 32:
            raise KeyFileError(f"{path} does not hold a 32-byte X25519 key")
        return key
    key = crypto.random_bytes(32)
    write_private(path, key)
    return key


def build(cfg: Config, passphrase: Callable[[], bytes] | None = None, keys=None,
          shard: tuple[int, int] = (0, 1), bound: dict | None = None) -> Gateway:
    """The gateway the configuration describes.  On several workers (gateway/workers.py)
    each builds its own with the keys unlocked once (`keys`: load_keys()), its shard
    (index, count), and `bound`: the udp:// sockets it reads, by transport index; the
    transports that are not udp:// run in worker 0 only."""
    transports = []
    for j, t in enumerate(cfg.transports):
        if shard[0] != 0 and t.scheme != "udp":
            continue
        if t.scheme == "udp":
            udp = UdpTransport(t.host, t.port, int(t.options.get("mtu", 222)))
            udp.bound = (bound or {}).get(j)
            transports.append(udp)
        elif t.scheme == "ble":
            from sealink_gateway.transport.ble import BleakCentral, BleTransport, BumbleCentral

            backend = (BumbleCentral(hci=t.options["hci"]) if t.host == "bumble"
                       else BleakCentral(t.options.get("adapter")))
            transports.append(BleTransport(backend, t.options["peers"].split(",")))
        elif t.scheme == "serial-at":
            o = t.options
            transports.append(SerialAtTransport(
                t.host, o["module"], baudrate=int(o.get("baud", 115200)),
                freq=int(o.get("freq", 868_100_000)), sf=int(o.get("sf", 7)),
                power=int(o.get("power", 14))))
        elif t.scheme == "semtech-udp":
            o = t.options
            transports.append(SemtechUdpTransport(
                t.host, t.port, rx1_delay_s=float(o.get("rx1_delay", 1.0)),
                region=o.get("region", "EU868"), rx2=o.get("rx2", "on") == "on",
                rx1=o.get("rx1", "on") == "on",
                rx2_dr=int(o["rx2_dr"]) if "rx2_dr" in o else None,
                window_frames=int(o.get("window_frames", 1))))
        elif t.scheme == "chirpstack-mqtt":
            from sealink_gateway.transport.chirpstack import ChirpStackTransport

            o = t.options
            transports.append(ChirpStackTransport(
                t.host, t.port, o["application"], fport=int(o["fport"]), fmt=o["format"],
                region=o.get("region", "EU868"), username=o.get("username"),
                password=o.get("password")))
    store = Store(cfg.database)
    store.shard = shard
    static, authority, retiring = keys or load_keys(cfg, store, passphrase)
    return Gateway(store, static, authority, transports,
                   HandshakeLimiter(cfg.handshakes_per_source, cfg.handshake_window_s),
                   retiring=retiring)


def load_keys(cfg: Config, store: Store, passphrase: Callable[[], bytes] | None = None
              ) -> tuple[bytes, Authority, list[tuple[bytes, float]]]:
    """The gateway's static key, the authority, and the static keys being retired (with
    the end of their grace period), from the custody the configuration names; the
    unlock is audited.  A key file this database does not know as its own is refused
    (CustodyError)."""
    if cfg.custody is None:
        logger.warning("keys in plain files (%s, %s), unencrypted at rest: configure "
                       "[custody] for production", cfg.static_key, cfg.authority_key)
        return (load_or_create_static_key(cfg.static_key),
                Authority.load_or_create(cfg.authority_key), [])
    from sealink_gateway import custody

    assert cfg.keys_file is not None
    try:
        keys = custody.unlock(cfg.keys_file, passphrase=passphrase, tpm=custody.Tpm(cfg.tpm),
                              expected=store.gateway_keys("static"))
    except custody.CustodyError as e:
        store.audit("keys.unlock_refused", custody=cfg.custody, file=str(cfg.keys_file),
                    error=type(e).__name__, reason=str(e))
        raise
    adopted = store.adopt_gateway_keys(keys.static_public, keys.authority_public)
    grace = store.retiring_keys("static")
    retiring = [(k, grace[p]) for k, p in zip(keys.retiring, keys.retiring_public, strict=False)
                if p in grace]
    store.audit("keys.unlock", custody=cfg.custody, file=str(cfg.keys_file),
                gateway_key=keys.static_public.hex(), first_use=adopted,
                retiring=[crypto.x25519_base(k).hex() for k, _ in retiring])
    endorsement = store.endorsement("authority", keys.authority_public)
    if endorsement is not None and authority_grace_ended(endorsement):
        endorsement = None
    return keys.static, Authority(keys.authority_key, endorsement), retiring


def reload_keys(cfg: Config, gateway: Gateway,
                passphrase: Callable[[], bytes] | None = None) -> None:
    """SIGHUP: read the key file again; a static key rotated meanwhile (`sealink keys
    rotate`) takes effect without a restart: live sessions go on, and each device is
    told the new key at its next frame."""
    from sealink_gateway.custody import CustodyError

    try:
        static, authority, _ = load_keys(cfg, gateway.store, passphrase)
    except CustodyError as e:
        logger.error("keys not reloaded: %s", e)
        return
    gateway.authority = authority
    if static != gateway.static_key:
        grace = gateway.store.retiring_keys("static").get(gateway.public_key, time.time())
        gateway.rotate_static(static, grace)
        logger.info("gateway key rotated to %s; the old one is accepted until %s",
                    gateway.public_key.hex(), time.strftime("%Y-%m-%d %H:%M:%S",
                                                            time.localtime(grace)))
    else:
        logger.info("keys reloaded; gateway key unchanged")


def authority_grace_ended(endorsement: bytes) -> bool:
    import struct

    return struct.unpack(">I", endorsement[32:36])[0] <= time.time()


async def serve(cfg: Config, ready: asyncio.Event | None = None,
                passphrase: Callable[[], bytes] | None = None, keys=None,
                shard: tuple[int, int] = (0, 1), bound: dict | None = None,
                report=None) -> None:
    """Run the gateway until SIGTERM / SIGINT.  On several workers (gateway/workers.py),
    this is one worker: keys, shard and bound as build() takes them, and `report`, the
    pipe its metrics go to the parent by (which serves them)."""
    # `kill -USR1 <pid>` writes every thread's stack to stderr (a stuck gateway).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    gateway = build(cfg, passphrase, keys, shard, bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload_keys(cfg, gateway, passphrase))
    await gateway.start()
    heap = HeapKeeper()
    keeper = asyncio.create_task(heap.run())  # the collector off long-lived sessions
    bridge = None
    if cfg.mqtt_host and shard[0] == 0:
        from sealink_gateway.mqtt import MqttBridge

        # On several workers the others commit uplinks too: the bridge looks at the
        # store every 50 ms besides when this worker commits.
        bridge = MqttBridge(gateway, cfg.mqtt_host, cfg.mqtt_port, cfg.mqtt_prefix,
                            poll_s=0.05 if shard[1] > 1 else None)
        await bridge.start()
    metrics_server = reporter = None
    if report is not None:
        from sealink_gateway.workers import report_metrics

        reporter = asyncio.create_task(report_metrics(gateway, report))
    elif cfg.metrics_host:
        from sealink_gateway.metrics import serve as serve_metrics

        metrics_server, _ = serve_metrics(gateway, cfg.metrics_host, cfg.metrics_port)
    ports = {t.name: getattr(t, "port", None) for t in gateway.transports}
    logger.info("listening %s; gateway key %s", json.dumps(ports),
                gateway.public_key.hex())
    if ready is not None:
        ready.set()
    await stop.wait()
    keeper.cancel()
    heap.release()
    logger.info("stopping: draining transports and queues")
    await gateway.stop()
    if reporter is not None:
        reporter.cancel()
        from sealink_gateway.workers import send_metrics

        send_metrics(gateway, report)  # the last word: what the drain committed
    if bridge is not None:
        # Give the bridge a moment to publish what was accepted before the stop.
        deadline = time.monotonic() + 2.0
        while gateway.store.uplinks(unpublished=True, limit=1) and time.monotonic() < deadline:
            gateway.uplink_event.set()
            await asyncio.sleep(0.05)
        await bridge.stop()
    if metrics_server is not None:
        metrics_server.shutdown()
    gateway.store.close()
    logger.info("stopped")
