"""`sealink`: the operator's command line (enrollment, devices, audit, the gateway).

Every read command takes --json for scripting.  The state file is --db, or the
SEALINK_DB environment variable, or ./sealink.db.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import click

from sealink_gateway.store import Store, StoreError

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    m = _DURATION.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 30m, 1h or 7d")
    return int(m.group(1)) * _UNITS[m.group(2)]


def parse_attr(values: tuple[str, ...]) -> dict[str, str]:
    attrs = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key or not re.match(r"^[A-Za-z0-9_.-]+$", key):
            raise click.BadParameter(f"{v!r} is not key=value")
        attrs[key] = value
    return attrs


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


@click.group()
@click.option("--db", envvar="SEALINK_DB", default="sealink.db", show_default=True,
              type=click.Path(dir_okay=False), help="The gateway's SQLite state file.")
@click.pass_context
def main(ctx: click.Context, db: str) -> None:
    """Sealink gateway administration."""
    ctx.obj = {"db": db}


def _gateway_public(path: str) -> bytes:
    """The public half of the gateway's static key: from a custody key file's header
    (`sealink keys init`; nothing unlocked), or from a plain key file (created if
    missing)."""
    from sealink import crypto
    from sealink_gateway import custody
    from sealink_gateway.keyfile import KeyFileError
    from sealink_gateway.run import load_or_create_static_key

    try:
        # A plain key file is the 32 raw bytes (one in 256 of them starts with "{"); a
        # custody file is a JSON document, longer than that.
        if Path(path).exists() and Path(path).stat().st_size != 32:
            return bytes.fromhex(custody.read_header(Path(path))["public"]["static"])
        return crypto.x25519_base(load_or_create_static_key(Path(path)))
    except KeyFileError as e:
        raise click.ClickException(str(e)) from None


def _store(ctx: click.Context) -> Store:
    try:
        return Store(ctx.obj["db"])
    except (StoreError, OSError) as e:  # sqlite3 errors are OSError-like here
        raise click.ClickException(str(e)) from None
    except Exception as e:  # a file that is not a database
        raise click.ClickException(f"cannot open {ctx.obj['db']}: {e}") from None


@main.group()
def enroll() -> None:
    """One-time enrollment tokens."""


@enroll.command("create")
@click.option("--attr", "attrs", multiple=True, metavar="KEY=VALUE",
              help="An attribute recorded for the device (repeatable).")
@click.option("--ttl", default="1h", show_default=True, help="Validity: 90s, 30m, 1h, 7d.")
@click.option("--gateway-key", type=click.Path(exists=True, dir_okay=False),
              help="The gateway's static key file: its public key is printed too, for the "
                   "device (which sends its token only to the holder of that key).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def enroll_create(ctx: click.Context, attrs: tuple[str, ...], ttl: str,
                  gateway_key: str | None, as_json: bool) -> None:
    """Issue a one-time token for a device's first handshake."""
    attributes = parse_attr(attrs)
    seconds = parse_duration(ttl)
    public = _gateway_public(gateway_key).hex() if gateway_key else None
    token, expires = _store(ctx).create_token(attributes, seconds)
    if as_json:
        click.echo(json.dumps({"token": token, "expires_at": expires,
                               "attributes": attributes, "gateway_key": public}))
    else:
        click.echo(token)
        if public:
            click.echo(f"gateway key {public}")
        click.echo(f"expires {_when(expires)}", err=True)


@main.group()
def device() -> None:
    """Enrolled devices."""


@device.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def device_list(ctx: click.Context, as_json: bool) -> None:
    devices = _store(ctx).devices()
    if as_json:
        click.echo(json.dumps([d.as_json() for d in devices]))
        return
    click.echo(f"{'device':<18}{'sid':>6}  {'status':<8}{'enrolled':<21}{'last seen':<21}"
               "attributes")
    for d in devices:
        attrs = ",".join(f"{k}={v}" for k, v in sorted(d.attributes.items()))
        click.echo(f"{d.id:<18}{d.sid:>6}  {d.status:<8}{_when(d.enrolled_at):<21}"
                   f"{_when(d.last_seen):<21}{attrs}")


@device.command("show")
@click.argument("device_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def device_show(ctx: click.Context, device_id: str, as_json: bool) -> None:
    d = _store(ctx).device(device_id)
    if d is None:
        raise click.ClickException(f"no device {device_id}")
    sessions = _store(ctx).sessions(device_id)
    if as_json:
        click.echo(json.dumps(d.as_json() | {"sessions": sessions,
                                             "attestation": _store(ctx).attestation(device_id)}))
        return
    for key, value in d.as_json().items():
        click.echo(f"{key:<12} {value}")
    for x in sessions:
        closed = (f"closed {_when(x['closed_at'])} ({x['close_reason']})" if x["closed_at"]
                  else "open")
        click.echo(f"session      sid {x['sid']} {x['pattern']} over {x['transport']}, "
                   f"from {_when(x['established_at'])}, {closed}")
    rotation, next_key = _store(ctx).key_rotation(device_id)
    if rotation:
        click.echo(f"key rotation {rotation}" + (f", next key {next_key.hex()}" if next_key
                                                 else ""))
    att = _store(ctx).attestation(device_id)
    if att is None:
        click.echo("attestation  none")
    else:
        claims = att["claims"]
        click.echo(f"attestation  {att['decision']} ({att['reason']}) at {_when(att['at'])}, "
                   f"{claims.get('version')}")
        for name, digest in claims.get("components", []):
            click.echo(f"  measured   {name:<12} {digest}")


@device.command("revoke")
@click.argument("device_id")
@click.option("--reason", default="", help="Recorded in the audit log.")
@click.pass_context
def device_revoke(ctx: click.Context, device_id: str, reason: str) -> None:
    """Refuse the device from its next frame on."""
    try:
        d = _store(ctx).revoke(device_id, reason)
    except StoreError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{d.id} revoked")


# On the device: program a blank UDS (a board with no one-time storage, or one
# programmed already, says so by its OSError and is left as it is).
_PROGRAM_UDS = """import _sealink_crypto as c
try:
    import _board
    if c.dice() is None:
        _board.program_uds()
        print('programmed')
except (ImportError, AttributeError, OSError):
    pass
"""


@device.command("rotate-key")
@click.argument("device_id")
@click.pass_context
def device_rotate_key(ctx: click.Context, device_id: str) -> None:
    """Ask the device for a new static key: at its next session it makes one and offers
    it (the session under its current key proves the offer is its own); its next
    handshake under the new key completes the rotation.  Devices with a measured key
    (DICE) change keys only with what they run."""
    try:
        _store(ctx).request_key_rotation(device_id)
    except StoreError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{device_id}: key rotation requested (`sealink device show` follows it)")


@device.command("provision")
@click.option("--port", required=True, help="The device's serial line (a QEMU pty, a USB port).")
@click.option("--label", default="", help="Recorded with the DeviceID.")
@click.option("--gateway-key", type=click.Path(exists=True, dir_okay=False), required=True,
              help="The gateway's static key file: its public half goes to the device.")
@click.option("--authority-key", type=click.Path(exists=True, dir_okay=False), required=True,
              help="The authority's key file (authority.pem): its public half goes to the "
                   "device.")
@click.pass_context
def device_provision(ctx: click.Context, port: str, label: str, gateway_key: str,
                     authority_key: str) -> None:
    """Provision a device over its serial line.  A device whose one-time storage is
    blank first makes its Unique Device Secret (on the device, from its own entropy:
    it never crosses the line) and is reset to boot with it.  Then: write its
    config.json (the gateway's and the authority's public keys), read back its DeviceID
    public key and register it."""
    from mpremote.transport import TransportError
    from mpremote.transport_serial import SerialTransport

    from sealink_gateway import attest
    from sealink_gateway.authority import Authority

    public = _gateway_public(gateway_key)
    authority = Authority.load_or_create(Path(authority_key))
    config = json.dumps({"gateway_key": public.hex(),
                         "authority_key": authority.public_key.hex()})
    try:
        link = SerialTransport(port, baudrate=115200, timeout=30)
        try:
            link.enter_raw_repl(soft_reset=False)
            if link.exec(_PROGRAM_UDS).decode().strip() == "programmed":
                click.echo("UDS programmed on the device; resetting it")
                link.exec_raw_no_follow("import _board\n_board.reset()\n")
                booted = link.read_until(1, b">>> ", timeout=120)  # measured again
                if not booted.endswith(b">>> "):
                    raise click.ClickException(f"{port}: the device did not boot again")
                link.enter_raw_repl(soft_reset=False)
            out = link.exec("import _sealink_crypto as c, binascii\n"
                            "r = c.dice()\n"
                            "print('none' if r is None or r[0] != 2 else"
                            " binascii.hexlify(r[5]).decode())\n"
                            f"with open('config.json', 'w') as f:\n    f.write({config!r})\n")
            link.exit_raw_repl()
        finally:
            link.close()
    except (TransportError, OSError) as e:
        raise click.ClickException(f"{port}: {e}") from None
    answer = out.decode().strip()
    if answer == "none":
        raise click.ClickException(f"{port}: the device has no DICE identity (no UDS)")
    device_id = bytes.fromhex(answer)
    ueid = attest.ueid_for(device_id)
    try:
        _store(ctx).provision(device_id, ueid, label)
    except StoreError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"provisioned ueid {ueid.hex()} (DeviceID {device_id.hex()})")


@main.group()
def firmware() -> None:
    """Reference values: firmware and application measurements operators vouch for."""


@firmware.command("register")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--app", "app_name", default=None, metavar="NAME",
              help="PATH is a file the device runs (main.py, boot.py, config.json) under NAME, "
                   "not a reference.json.")
@click.option("--bad", is_flag=True, help="Register it as known bad (refused), not good.")
@click.pass_context
def firmware_register(ctx: click.Context, path: str, app_name: str | None, bad: bool) -> None:
    """Register build/<BOARD>/reference.json (the firmware), or with --app an
    application file, as known good (or --bad)."""
    import hashlib

    status = "bad" if bad else "good"
    data = Path(path).read_bytes()
    if app_name:
        if app_name not in ("boot.py", "main.py", "config.json"):
            raise click.BadParameter("NAME must be boot.py, main.py or config.json")
        name, digest, version, board = app_name, hashlib.sha256(data).digest(), "", ""
    else:
        try:
            ref = json.loads(data)
            name, digest = "firmware", bytes.fromhex(ref["firmware"])
            version, board = str(ref["version"]), str(ref["board"])
            if len(digest) != 32:
                raise ValueError("firmware must be a SHA-256 digest")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise click.ClickException(f"{path} is not a reference.json: {e}") from None
    try:
        _store(ctx).add_reference(name, digest, status, version, board)
    except StoreError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{name} {digest.hex()} registered {status}")


@firmware.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def firmware_list(ctx: click.Context, as_json: bool) -> None:
    refs = _store(ctx).references()
    if as_json:
        click.echo(json.dumps(refs))
        return
    for r in refs:
        click.echo(f"{r['status']:<5} {r['name']:<12} {r['digest']}  {r['board']} {r['version']}")


@main.group()
def attest() -> None:
    """Attestation results."""


@attest.command("export")
@click.argument("device_id")
@click.argument("out", type=click.Path(dir_okay=False, writable=True))
@click.pass_context
def attest_export(ctx: click.Context, device_id: str, out: str) -> None:
    """Write the device's latest attestation result (COSE_Sign1, signed by the
    authority) to OUT, for a third party to check with `sealink attest verify`."""
    att = _store(ctx).attestation(device_id)
    if att is None or not att.get("result"):
        raise click.ClickException(f"no attestation result for {device_id}")
    Path(out).write_bytes(bytes.fromhex(att["result"]))
    click.echo(f"{out}: {att['decision']} ({att['reason']}), "
               f"{len(att['result']) // 2} bytes")


@attest.command("verify")
@click.argument("result", type=click.Path(exists=True, dir_okay=False))
@click.option("--authority-key", required=True, metavar="HEX",
              help="The authority's Ed25519 public key (hex), as `sealink gateway check` "
                   "prints it (authority).")
@click.option("--json", "as_json", is_flag=True)
def attest_verify(result: str, authority_key: str, as_json: bool) -> None:
    """Check an attestation result offline: the authority's signature and the expiry."""
    from sealink_gateway import attest as verifier
    from sealink_gateway.cli_keys import authority_hex

    public = authority_hex(authority_key)
    try:
        claims = verifier.verify_result(Path(result).read_bytes(), public)
    except verifier.ResultError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(claims))
        return
    click.echo(f"valid: {claims['device']} {claims['decision']} ({claims['reason']}), "
               f"{claims['version']}, until {_when(claims['expires_at'])}")
    for name, digest in claims["components"]:
        click.echo(f"  {name:<12} {digest}")


@main.group()
def messages() -> None:
    """Uplinks the gateway accepted (no MQTT broker needed)."""


@messages.command("tail")
@click.option("--device", "device_id", default=None, help="Only this device.")
@click.option("-n", "--last", default=10, show_default=True, help="Start with the last N.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new uplinks.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def messages_tail(ctx: click.Context, device_id: str | None, last: int, follow: bool,
                  as_json: bool) -> None:
    import base64

    store = _store(ctx)
    newest = store.uplinks(device_id, limit=1_000_000)
    rows = newest[-last:] if last > 0 else []
    after = newest[-1]["id"] if newest else 0
    while True:
        for r in rows:
            if as_json:
                click.echo(json.dumps({"uplink_id": r["id"], "device": r["device_id"],
                                       "received_at": r["received_at"], "radio": r["radio"],
                                       "payload": base64.b64encode(r["payload"]).decode()}))
            else:
                click.echo(f"{_when(r['received_at'])}  {r['device_id']:<18} "
                           f"{len(r['payload']):>4} B  {r['payload'].hex()}")
        if not follow:
            return
        time.sleep(0.5)
        rows = store.uplinks(device_id, limit=1000, after_id=after)
        if rows:
            after = rows[-1]["id"]


@main.command("audit")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audit(ctx: click.Context, limit: int, as_json: bool) -> None:
    """The audit log, newest first."""
    rows = _store(ctx).audit_log(limit)
    if as_json:
        click.echo(json.dumps(rows))
        return
    for r in rows:
        click.echo(f"{_when(r['at'])}  {r['event']:<16} {r['device_id'] or '-':<18} "
                   f"{json.dumps(r['detail'], sort_keys=True)}")


_PASSPHRASE_FD = click.option(
    "--passphrase-fd", type=int, default=None, metavar="FD",
    help="Read the keys' passphrase from this file descriptor (else $SEALINK_PASSPHRASE, "
         "else a prompt); never from the command line.")


@main.group("gateway", invoke_without_command=True)
@click.option("--config", "config_path", default="gateway.toml", show_default=True,
              type=click.Path(dir_okay=False))
@_PASSPHRASE_FD
@click.pass_context
def gateway(ctx: click.Context, config_path: str, passphrase_fd: int | None) -> None:
    """Run the gateway service (until SIGTERM / SIGINT)."""
    ctx.obj["config"] = config_path
    if ctx.invoked_subcommand is not None:
        return
    import asyncio

    from sealink_gateway.config import ConfigError, load
    from sealink_gateway.run import serve, setup_logging

    try:
        cfg = load(config_path)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    setup_logging(cfg.log_level)
    from sealink_gateway.custody import passphrase_source
    from sealink_gateway.keyfile import KeyFileError

    try:
        if cfg.workers > 1:
            from sealink_gateway.workers import serve_workers

            sys.exit(serve_workers(cfg, cfg.workers, passphrase_source(passphrase_fd)))
        asyncio.run(serve(cfg, passphrase=passphrase_source(passphrase_fd)))
    except KeyFileError as e:
        raise click.ClickException(f"not started: {e}") from None


@gateway.command("check")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def gateway_check(ctx: click.Context, as_json: bool) -> None:
    """Validate a configuration without starting anything."""
    from sealink_gateway.config import ConfigError, load

    try:
        cfg = load(ctx.obj["config"])
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    summary = {"config": str(cfg.path), "database": str(cfg.database),
               "transports": [t.url for t in cfg.transports],
               "workers": cfg.workers,
               "mqtt": f"{cfg.mqtt_host}:{cfg.mqtt_port}" if cfg.mqtt_host else None,
               "metrics": f"{cfg.metrics_host}:{cfg.metrics_port}" if cfg.metrics_host
               else None}
    if cfg.custody is not None:
        from sealink_gateway import custody

        summary["custody"] = f"{cfg.custody} ({cfg.keys_file})"
        try:
            summary["authority"] = custody.read_header(cfg.keys_file)["public"]["authority"]
        except custody.CustodyError as e:
            raise click.ClickException(str(e)) from None
    elif cfg.authority_key.exists():
        # Public: what a third party needs to check attestation results offline.
        from sealink_gateway.authority import Authority, CredentialError

        try:
            summary["authority"] = Authority.load_or_create(cfg.authority_key).public_key.hex()
        except CredentialError as e:
            raise click.ClickException(str(e)) from None
    click.echo(json.dumps(summary) if as_json else
               "\n".join(f"{k:<10} {v}" for k, v in summary.items()) + "\nconfiguration OK")


if __name__ == "__main__":
    sys.exit(main())


from sealink_gateway.cli_keys import keys, revocations  # noqa: E402 (their own module)

main.add_command(keys)
main.add_command(revocations)
