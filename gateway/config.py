"""gateway.toml: what `sealink gateway` runs.  Checked before anything starts.

    [gateway]
    database = "sealink.db"          # SQLite state file
    static_key = "gateway.key"       # the gateway's X25519 key (created, mode 0600)
    authority_key = "authority.pem"  # Ed25519 key that signs credentials (created, 0600)
    log_level = "INFO"
    workers = 1                      # processes (one per core): udp:// is sharded over
                                     # them by session id (gateway/workers.py)

    [[transport]]
    url = "udp://0.0.0.0:1700?mtu=222"
    [[transport]]
    url = "semtech-udp://0.0.0.0:1680?rx1_delay=1&region=EU868&rx2=on&rx2_dr=0"
    # LoRa packet forwarders; rx2=off: RX1 only; window_frames=N: frames per window for
    # devices that keep listening (1: class A)
    [[transport]]                    # Sealink over LoRaWAN: ChirpStack v4's MQTT integration
    url = "chirpstack-mqtt://127.0.0.1:1883?application=<id>&fport=200&format=json&region=EU868"
    [[transport]]                    # a LoRa module on a UART, AT commands, P2P mode
    url = "serial-at:///dev/ttyUSB0?module=rak3172&sf=7&freq=868100000&baud=115200"
    [[transport]]                    # BLE central: bumble on an HCI transport, or bleak
    url = "ble://bumble?hci=usb:0&peers=F5:F4:F3:F2:F1:F0"

    [mqtt]                           # optional: uplinks and downlinks over MQTT
    url = "mqtt://127.0.0.1:1883"
    prefix = "sealink"

    [custody]                        # optional: the keys encrypted at rest instead
    mode = "passphrase"              # or "tpm" (docs/key-custody.md)
    file = "gateway.keys"            # made by `sealink keys init`
    tpm = "device:/dev/tpmrm0"       # tpm: the TCTI (swtpm:host=...,port=... for swtpm)
    pcrs = "sha256:7"                # tpm, optional: unseal only with these PCR values

    [metrics]                        # optional: Prometheus metrics over HTTP
    listen = "127.0.0.1:9108"

    [limits]
    handshakes_per_source = 5
    handshake_window_s = 10.0

Relative paths are relative to the configuration file.  Without [custody] the two keys
are the plain files static_key and authority_key (mode 0600, unencrypted: for
development; `sealink gateway` says so in its log).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from sealink_gateway.keyfile import KeyFileError, require_private

TRANSPORT_SCHEMES = {"udp", "semtech-udp", "serial-at", "ble", "chirpstack-mqtt"}
BLE_BACKENDS = {"bumble", "bleak"}
SERIAL_MODULES = {"rak3172"}


class ConfigError(ValueError):
    pass


@dataclass
class TransportConfig:
    url: str
    scheme: str
    host: str  # for serial-at: the device path
    port: int
    options: dict[str, str]


@dataclass
class Config:
    path: Path
    database: Path
    static_key: Path
    authority_key: Path
    log_level: str = "INFO"
    workers: int = 1
    transports: list[TransportConfig] = field(default_factory=list)
    mqtt_host: str | None = None
    mqtt_port: int = 1883
    mqtt_prefix: str = "sealink"
    metrics_host: str | None = None
    metrics_port: int = 0
    handshakes_per_source: int = 5
    handshake_window_s: float = 10.0
    custody: str | None = None       # None: plain files; "passphrase" or "tpm"
    keys_file: Path | None = None
    tpm: str = "device:/dev/tpmrm0"
    pcrs: str | None = None


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{what}: {text!r} is not HOST:PORT")
    return host, int(port)


def parse_transport(url: str) -> TransportConfig:
    parts = urlsplit(url)
    if parts.scheme not in TRANSPORT_SCHEMES:
        raise ConfigError(f"transport {url!r}: scheme {parts.scheme!r} is not available "
                          f"(this gateway has: {', '.join(sorted(TRANSPORT_SCHEMES))})")
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme == "serial-at":
        return _serial_at(url, parts.netloc + parts.path, options)
    if parts.scheme == "ble":
        return _ble(url, parts.netloc, options)
    host, port = _host_port(parts.netloc, f"transport {url!r}")
    if parts.scheme == "chirpstack-mqtt":
        return _chirpstack(url, host, port, options)
    if parts.scheme == "semtech-udp":
        _lora_region(url, options)
        for window in ("rx1", "rx2"):
            if options.get(window, "on") not in ("on", "off"):
                raise ConfigError(f"transport {url!r}: {window} must be on or off")
        if options.get("rx1") == options.get("rx2") == "off":
            raise ConfigError(f"transport {url!r}: rx1 and rx2 cannot both be off")
        if "window_frames" in options and (not options["window_frames"].isdigit() or not
                                           1 <= int(options["window_frames"]) <= 16):
            raise ConfigError(f"transport {url!r}: window_frames must be 1..16")
        if "rx2_dr" in options:
            from sealink_gateway import regions

            try:
                regions.region(options.get("region", "EU868")).rate(int(options["rx2_dr"]))
            except (ValueError, regions.RegionError) as e:
                raise ConfigError(f"transport {url!r}: rx2_dr: {e}") from None
    if "rx1_delay" in options:
        try:
            if not 0 < float(options["rx1_delay"]) <= 15:
                raise ValueError
        except ValueError:
            raise ConfigError(f"transport {url!r}: rx1_delay must be 0..15 seconds") from None
    if "mtu" in options and (not options["mtu"].isdigit()
                             or not 20 <= int(options["mtu"]) <= 1024):
        raise ConfigError(f"transport {url!r}: mtu must be 20..1024")
    return TransportConfig(url, parts.scheme, host, port, options)


def _lora_region(url: str, options: dict[str, str]) -> None:
    from sealink_gateway import regions

    name = options.get("region", "EU868")
    if name not in regions.names():
        raise ConfigError(f"transport {url!r}: region {name!r} is not one of "
                          f"{', '.join(regions.names())}")


def _chirpstack(url: str, host: str, port: int, options: dict[str, str]) -> TransportConfig:
    if not options.get("application"):
        raise ConfigError(f"transport {url!r}: application=<ChirpStack application id> "
                          "is required")
    fport = options.setdefault("fport", "200")
    if not fport.isdigit() or not 1 <= int(fport) <= 223:
        raise ConfigError(f"transport {url!r}: fport must be an application FPort 1..223")
    if options.setdefault("format", "json") not in ("json", "protobuf"):
        raise ConfigError(f"transport {url!r}: format must be json or protobuf")
    _lora_region(url, options)
    return TransportConfig(url, "chirpstack-mqtt", host, port, options)


def _serial_at(url: str, device: str, options: dict[str, str]) -> TransportConfig:
    if not device:
        raise ConfigError(f"transport {url!r}: no serial device (serial-at:///dev/ttyUSB0)")
    module = options.setdefault("module", "rak3172")
    if module not in SERIAL_MODULES:
        raise ConfigError(f"transport {url!r}: module {module!r} is not one of "
                          f"{', '.join(sorted(SERIAL_MODULES))}")
    limits = {"sf": (7, 12), "freq": (150_000_000, 960_000_000), "baud": (1200, 921600),
              "power": (5, 22)}
    for key, (lo, hi) in limits.items():
        if key in options and (not options[key].isdigit() or not lo <= int(options[key]) <= hi):
            raise ConfigError(f"transport {url!r}: {key} must be an integer {lo}..{hi}")
    return TransportConfig(url, "serial-at", device, 0, options)


def _ble(url: str, backend: str, options: dict[str, str]) -> TransportConfig:
    if backend not in BLE_BACKENDS:
        raise ConfigError(f"transport {url!r}: BLE back end {backend!r} is not one of "
                          f"{', '.join(sorted(BLE_BACKENDS))} (ble://bumble?hci=usb:0 or "
                          "ble://bleak)")
    if backend == "bumble" and not options.get("hci"):
        raise ConfigError(f"transport {url!r}: bumble needs hci=<transport> (e.g. usb:0)")
    peers = [p for p in options.get("peers", "").split(",") if p]
    if not peers:
        raise ConfigError(f"transport {url!r}: peers=<address>,... names the devices")
    for p in peers:
        parts = p.split(":")
        if len(parts) != 6 or not all(len(x) == 2 and all(c in "0123456789abcdefABCDEF"
                                                          for c in x) for x in parts):
            raise ConfigError(f"transport {url!r}: {p!r} is not a BLE address")
    return TransportConfig(url, "ble", backend, 0, options)


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    known = {"gateway", "transport", "mqtt", "metrics", "limits", "custody"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}")
    base = path.parent
    gw = data.get("gateway", {})
    cfg = Config(path=path,
                 database=base / gw.get("database", "sealink.db"),
                 static_key=base / gw.get("static_key", "gateway.key"),
                 authority_key=base / gw.get("authority_key", "authority.pem"),
                 log_level=str(gw.get("log_level", "INFO")).upper())
    for key in (cfg.static_key, cfg.authority_key):
        if key.exists():
            try:
                require_private(key)
            except KeyFileError as e:
                raise ConfigError(str(e)) from None
    workers = gw.get("workers", 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= 64:
        raise ConfigError(f"[gateway] workers must be a whole number from 1 to 64, "
                          f"not {workers!r}")
    cfg.workers = workers
    if cfg.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"log_level {cfg.log_level!r} is not DEBUG, INFO, WARNING or ERROR")
    if "custody" in data:
        c = data["custody"]
        unknown = set(c) - {"mode", "file", "tpm", "pcrs"}
        if unknown:
            raise ConfigError(f"[custody]: unknown key(s) {', '.join(sorted(unknown))}")
        cfg.custody = str(c.get("mode", ""))
        if cfg.custody not in ("passphrase", "tpm"):
            raise ConfigError(f"[custody] mode {cfg.custody!r} is not passphrase or tpm")
        cfg.keys_file = base / str(c.get("file", "gateway.keys"))
        cfg.tpm = str(c.get("tpm", cfg.tpm))
        cfg.pcrs = str(c["pcrs"]) if c.get("pcrs") else None
        if cfg.pcrs and (cfg.custody != "tpm" or ":" not in cfg.pcrs):
            raise ConfigError("[custody] pcrs is for mode tpm, as BANK:N,N (sha256:0,7)")
        if cfg.keys_file.exists():
            try:
                require_private(cfg.keys_file)
            except KeyFileError as e:
                raise ConfigError(str(e)) from None
    transports = data.get("transport", [])
    if not isinstance(transports, list) or not transports:
        raise ConfigError("at least one [[transport]] with a url is needed")
    for t in transports:
        if not isinstance(t, dict) or "url" not in t:
            raise ConfigError("each [[transport]] needs a url")
        cfg.transports.append(parse_transport(str(t["url"])))
    if "mqtt" in data:
        url = urlsplit(str(data["mqtt"].get("url", "")))
        if url.scheme != "mqtt":
            raise ConfigError("[mqtt] url must be mqtt://HOST:PORT")
        cfg.mqtt_host, cfg.mqtt_port = _host_port(url.netloc, "[mqtt] url")
        cfg.mqtt_prefix = str(data["mqtt"].get("prefix", "sealink")).strip("/")
    if "metrics" in data:
        cfg.metrics_host, cfg.metrics_port = _host_port(str(data["metrics"].get("listen", "")),
                                                        "[metrics] listen")
    limits = data.get("limits", {})
    try:
        cfg.handshakes_per_source = int(limits.get("handshakes_per_source", 5))
        cfg.handshake_window_s = float(limits.get("handshake_window_s", 10.0))
    except (TypeError, ValueError):
        raise ConfigError("[limits] values must be numbers") from None
    if cfg.handshakes_per_source < 1 or cfg.handshake_window_s <= 0:
        raise ConfigError("[limits] values must be positive")
    return cfg
