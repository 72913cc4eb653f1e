"""`sealink keys`: custody of the gateway's keys (docs/key-custody.md).

    sealink keys init      create the keys (or import the plain files) into the custody
                           gateway.toml's [custody] names
    sealink keys show      the key file's header and what the database knows (no unlock)
    sealink keys backup    M-of-N SLIP-0039 shares, a page (and a QR code) per share
    sealink keys restore   rebuild the key file from any M shares

Each action is audited in the store (`sealink audit`), without secrets.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from sealink_gateway.keyfile import KeyFileError

SHARE_PASSPHRASE_ENV = "SEALINK_SHARE_PASSPHRASE"


def _config(path: str):
    from sealink_gateway.config import ConfigError, load

    try:
        cfg = load(path)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    if cfg.custody is None:
        raise click.ClickException(f"{path} has no [custody] section: the keys are plain "
                                   "files (see docs/key-custody.md)")
    return cfg


def _open_store(cfg):
    from sealink_gateway.store import Store

    return Store(cfg.database)


def _tpm(cfg):
    from sealink_gateway.custody import Tpm

    return Tpm(cfg.tpm)


def _unlock(cfg, store, source):
    """The keys from the configured key file, refused if this database's gateway does
    not know them as its own."""
    from sealink_gateway import custody

    return custody.unlock(cfg.keys_file, passphrase=source, tpm=_tpm(cfg),
                          expected=store.gateway_keys("static"))


def _rewrite(cfg, keys_, source) -> None:
    """Replace the key file (atomically) with `keys_`, in the configured custody."""
    from sealink_gateway import custody

    custody.write(cfg.keys_file, keys_, cfg.custody, passphrase=source, tpm=_tpm(cfg),
                  pcrs=cfg.pcrs, replace=True)


def _fail(e: Exception) -> click.ClickException:
    return click.ClickException(str(e))


_CONFIG = click.option("--config", "config_path", default="gateway.toml", show_default=True,
                       type=click.Path(dir_okay=False))
_PASSPHRASE_FD = click.option(
    "--passphrase-fd", type=int, default=None, metavar="FD",
    help="Read the key file's passphrase from this file descriptor (else "
         "$SEALINK_PASSPHRASE, else a prompt).")
_SHARE_PASSPHRASE_FD = click.option(
    "--share-passphrase-fd", type=int, default=None, metavar="FD",
    help=f"Read the backup's passphrase from this descriptor (else ${SHARE_PASSPHRASE_ENV}, "
         "else a prompt).")


_SHARE = {"option": "--share-passphrase-fd", "what": "passphrase of the backup shares"}


@click.group()
def keys() -> None:
    """Custody of the gateway's keys: init, show, backup, restore."""


@keys.command("init")
@_CONFIG
@_PASSPHRASE_FD
@click.option("--import-plain", is_flag=True,
              help="Take the existing plain static_key and authority_key files (a gateway "
                   "moving to custody keeps its devices), instead of new keys.")
def keys_init(config_path: str, passphrase_fd: int | None, import_plain: bool) -> None:
    """Create the gateway's keys in the custody gateway.toml names."""
    from sealink_gateway import custody

    cfg = _config(config_path)
    assert cfg.keys_file is not None
    if cfg.keys_file.exists():
        raise click.ClickException(f"{cfg.keys_file} exists: keys are never overwritten")
    store = _open_store(cfg)
    try:
        if import_plain:
            from sealink_gateway.authority import Authority
            from sealink_gateway.run import load_or_create_static_key

            for plain in (cfg.static_key, cfg.authority_key):
                if not plain.exists():
                    raise click.ClickException(f"--import-plain: {plain} does not exist")
            static = load_or_create_static_key(cfg.static_key)
            seed = Authority.load_or_create(cfg.authority_key).seed()
            new = custody.GatewayKeys(static, seed)
        else:
            new = custody.GatewayKeys.generate()
        known = store.gateway_keys("static")
        if known and new.static_public not in known:
            raise click.ClickException(
                f"{cfg.database} already belongs to gateway key "
                f"{next(iter(known)).hex()[:16]}…: restore its keys (`sealink keys "
                "restore`) or use --import-plain, or start from a new database")
        header = custody.write(cfg.keys_file, new, cfg.custody,
                               passphrase=custody.passphrase_source(passphrase_fd,
                                                                    confirm=True),
                               tpm=_tpm(cfg), pcrs=cfg.pcrs)
        store.adopt_gateway_keys(new.static_public, new.authority_public)
        store.audit("keys.init", custody=cfg.custody, file=str(cfg.keys_file),
                    imported=import_plain, gateway_key=header["public"]["static"],
                    authority_key=header["public"]["authority"], pcrs=cfg.pcrs)
    except KeyFileError as e:
        raise _fail(e) from None
    finally:
        store.close()
    click.echo(f"{cfg.keys_file}: {cfg.custody} custody\n"
               f"gateway key    {header['public']['static']}\n"
               f"authority key  {header['public']['authority']}")
    if import_plain:
        click.echo(f"the plain files {cfg.static_key} and {cfg.authority_key} still hold the "
                   "keys unencrypted: destroy them (shred -u) once the gateway starts")


@keys.command("show")
@_CONFIG
@click.option("--json", "as_json", is_flag=True)
def keys_show(config_path: str, as_json: bool) -> None:
    """The key file's header (public) and the keys the database knows; nothing unlocked."""
    from sealink_gateway import custody

    cfg = _config(config_path)
    try:
        doc = custody.read_header(cfg.keys_file)
    except KeyFileError as e:
        raise _fail(e) from None
    store = _open_store(cfg)
    known = sorted(k.hex() for k in store.gateway_keys("static"))
    store.close()
    info = {"file": str(cfg.keys_file), "format": doc["format"], "version": doc["version"],
            "custody": doc["custody"], "created_at": doc["created_at"],
            "gateway_key": doc["public"]["static"],
            "authority_key": doc["public"]["authority"],
            "database_knows": known}
    if doc["custody"] == "passphrase":
        info["kdf"] = {k: v for k, v in doc["passphrase"].items() if k != "salt"}
    else:
        info["tpm_pcrs"] = doc["tpm"].get("pcrs")
    if as_json:
        click.echo(json.dumps(info))
    else:
        for k, v in info.items():
            click.echo(f"{k:<15} {v}")


@keys.command("backup")
@_CONFIG
@_PASSPHRASE_FD
@click.option("--shares", default=5, show_default=True, help="How many shares (N).")
@click.option("--threshold", default=3, show_default=True, help="How many restore (M).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="A new directory for the pages (one text page and QR code per share).")
@click.option("--share-passphrase", is_flag=True,
              help="Protect the shares with a passphrase too (SLIP-0039's).")
@_SHARE_PASSPHRASE_FD
@click.option("--no-qr", is_flag=True, help="Text pages only.")
def keys_backup(config_path: str, passphrase_fd: int | None, shares: int, threshold: int,
                out_dir: str, share_passphrase: bool, share_passphrase_fd: int | None,
                no_qr: bool) -> None:
    """Split the gateway's keys into SHARES SLIP-0039 shares, any THRESHOLD of which
    rebuild them."""
    from shamir_mnemonic.share import Share

    from sealink_gateway import backup, custody

    cfg = _config(config_path)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise click.ClickException(f"{out} is not empty: pages are never overwritten")
    store = _open_store(cfg)
    try:
        keys_ = _unlock(cfg, store, custody.passphrase_source(passphrase_fd))
        words_passphrase = (custody.passphrase_source(share_passphrase_fd,
                                                      env=SHARE_PASSPHRASE_ENV,
                                                      confirm=True, **_SHARE)()
                            if share_passphrase or share_passphrase_fd is not None else b"")
        mnemonics = backup.split(keys_, threshold, shares, words_passphrase)
        pages = backup.write_pages(out, mnemonics, keys_, threshold, bool(words_passphrase),
                                   qr=not no_qr)
        identifier = Share.from_mnemonic(mnemonics[0]).identifier
        store.audit("keys.backup", shares=shares, threshold=threshold, backup_id=identifier,
                    out=str(out), passphrase=bool(words_passphrase),
                    gateway_key=keys_.static_public.hex())
    except KeyFileError as e:
        raise _fail(e) from None
    finally:
        store.close()
    click.echo(f"backup {identifier}: {shares} shares, any {threshold} restore")
    for page in pages:
        click.echo(f"  {page}" + ("" if no_qr else f"  (+ {page.with_suffix('.png').name})"))
    click.echo("print each page, give each to a different person, then delete "
               f"{out} from this machine")


@keys.command("restore")
@_CONFIG
@_PASSPHRASE_FD
@_SHARE_PASSPHRASE_FD
@click.argument("pages", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False))
def keys_restore(config_path: str, passphrase_fd: int | None,
                 share_passphrase_fd: int | None, pages: tuple[str, ...]) -> None:
    """Rebuild the key file from share PAGES (the text pages `keys backup` wrote, or
    files holding just a share's words), in the custody gateway.toml names."""
    from sealink_gateway import backup, custody

    cfg = _config(config_path)
    assert cfg.keys_file is not None
    if cfg.keys_file.exists():
        raise click.ClickException(f"{cfg.keys_file} exists: restore never overwrites keys "
                                   "(move it away first if it is the broken one)")
    store = _open_store(cfg)
    try:
        read = [backup.read_page(Path(p)) for p in pages]
        protected = any(p.protected for p in read)
        words_passphrase = (custody.passphrase_source(share_passphrase_fd,
                                                      env=SHARE_PASSPHRASE_ENV, **_SHARE)()
                            if protected or share_passphrase_fd is not None else b"")
        keys_ = backup.combine(read, words_passphrase)
        known = store.gateway_keys("static")
        if known and keys_.static_public not in known:
            raise custody.ForeignKeysError(
                f"the shares rebuild gateway key {keys_.static_public.hex()[:16]}…, but "
                f"{cfg.database} belongs to {next(iter(known)).hex()[:16]}…: shares of "
                "another gateway")
        custody.write(cfg.keys_file, keys_, cfg.custody,
                      passphrase=custody.passphrase_source(passphrase_fd, confirm=True),
                      tpm=_tpm(cfg), pcrs=cfg.pcrs)
        store.adopt_gateway_keys(keys_.static_public, keys_.authority_public)
        store.audit("keys.restore", custody=cfg.custody, file=str(cfg.keys_file),
                    shares=len(read), backup_id=read[0].share.identifier,
                    gateway_key=keys_.static_public.hex())
    except KeyFileError as e:
        store.audit("keys.restore_refused", error=type(e).__name__, reason=str(e))
        raise _fail(e) from None
    finally:
        store.close()
    click.echo(f"{cfg.keys_file}: restored from {len(read)} shares ({cfg.custody} custody), "
               f"gateway key {keys_.static_public.hex()}")


def _once(source):
    """A passphrase source asked at most once (unlock and rewrite share it)."""
    cache: list[bytes] = []

    def get() -> bytes:
        if not cache:
            cache.append(source())
        return cache[0]
    return get


@keys.command("rotate")
@_CONFIG
@_PASSPHRASE_FD
@click.option("--grace", default="7d", show_default=True,
              help="How long devices may still reach the gateway under the old key "
                   "(and learn the new one): 90s, 30m, 12h, 7d.")
@click.option("--authority", "authority_key", is_flag=True,
              help="Rotate the authority's signing key instead: the new one is endorsed "
                   "(cross-signed) by the old one.")
def keys_rotate(config_path: str, passphrase_fd: int | None, grace: str,
                authority_key: bool) -> None:
    """Make a new gateway static key.  Restarted, the gateway answers first contact
    with it, and sends every device that reconnects under the old key (during the grace
    period) a credential, signed by the authority, that names it.  With --authority,
    a new authority key, endorsed by the old one: during the grace period every
    credential carries the endorsement, so devices holding either key accept it."""
    import time

    from sealink_gateway import custody
    from sealink_gateway.cli import parse_duration

    cfg = _config(config_path)
    seconds = parse_duration(grace)
    store = _open_store(cfg)
    source = _once(custody.passphrase_source(passphrase_fd))
    if authority_key:
        try:
            _rotate_authority(cfg, store, source, int(time.time() + seconds))
        except KeyFileError as e:
            raise _fail(e) from None
        finally:
            store.close()
        return
    try:
        old = _unlock(cfg, store, source)
        still = store.retiring_keys("static")
        now = time.time()
        keep = tuple(k for k, p in zip(old.retiring, old.retiring_public, strict=False)
                     if still.get(p, 0) > now)
        new = custody.GatewayKeys(custody.GatewayKeys.generate().static, old.authority,
                                  (old.static, *keep))
        until = now + seconds
        _rewrite(cfg, new, source)
        store.rotate_gateway_key("static", old.static_public, new.static_public, until)
        store.audit("keys.rotate", role="static", old=old.static_public.hex(),
                    new=new.static_public.hex(), grace_until=until)
    except KeyFileError as e:
        raise _fail(e) from None
    finally:
        store.close()
    click.echo(f"new gateway key  {new.static_public.hex()}\n"
               f"old gateway key  {old.static_public.hex()} accepted until "
               f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(until))}\n"
               "restart the gateway or send it SIGHUP to use it; `sealink keys status` "
               "shows which devices have followed")


def _rotate_authority(cfg, store, source, until: int) -> None:
    import time

    from sealink_gateway import custody
    from sealink_gateway.authority import endorse

    old = _unlock(cfg, store, source)
    new = custody.GatewayKeys(old.static, custody.GatewayKeys.generate().authority,
                              old.retiring)
    endorsement = endorse(old.authority_key, new.authority_public, until)
    _rewrite(cfg, new, source)
    store.rotate_gateway_key("authority", old.authority_public, new.authority_public, until,
                             endorsement)
    store.audit("keys.rotate", role="authority", old=old.authority_public.hex(),
                new=new.authority_public.hex(), grace_until=until,
                endorsement=endorsement.hex())
    click.echo(f"new authority key  {new.authority_public.hex()}\n"
               f"endorsed by        {old.authority_public.hex()} (credentials carry the "
               f"endorsement until {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(until))})"
               f"\nendorsement        {endorsement.hex()}\n"
               "restart the gateway to use it")


@keys.command("status")
@_CONFIG
@click.option("--json", "as_json", is_flag=True)
def keys_status(config_path: str, as_json: bool) -> None:
    """Which gateway key each active device used last: the current one, a retiring one
    (not followed yet), or none recorded."""
    cfg = _config(config_path)
    store = _open_store(cfg)
    current = store.gateway_keys("static")
    retiring = store.retiring_keys("static")
    in_use = store.gateway_key_in_use()
    store.close()
    rows = {d: ("current" if k in current else "retiring" if k in retiring else "unknown")
            for d, k in in_use.items()}
    counts = {s: sum(1 for v in rows.values() if v == s)
              for s in ("current", "retiring", "unknown")}
    if as_json:
        click.echo(json.dumps({"devices": rows, "counts": counts,
                               "retiring_until": {k.hex(): u for k, u in retiring.items()}}))
        return
    click.echo(f"{counts['current']} device(s) on the current key, {counts['retiring']} on a "
               f"retiring key, {counts['unknown']} not seen under a known key")
    for d, state in sorted(rows.items()):
        click.echo(f"  {d:<18} {state}")


@keys.command("retire")
@_CONFIG
@_PASSPHRASE_FD
@click.option("--force", is_flag=True,
              help="Retire keys whose grace period has not ended (devices that have not "
                   "followed are lost: they need a new enrollment).")
def keys_retire(config_path: str, passphrase_fd: int | None, force: bool) -> None:
    """Remove retiring gateway keys whose grace period has ended from the key file."""
    import time

    from sealink_gateway import custody

    cfg = _config(config_path)
    store = _open_store(cfg)
    source = _once(custody.passphrase_source(passphrase_fd))
    try:
        now = time.time()
        grace = store.retiring_keys("static")
        stragglers = [d for d, k in store.gateway_key_in_use().items() if k in grace]
        ended = {p for p, until in grace.items() if until <= now or force}
        if not ended:
            raise click.ClickException("no retiring key whose grace period has ended "
                                       "(--force to retire them now)")
        keys_ = _unlock(cfg, store, source)
        kept = tuple(k for k, p in zip(keys_.retiring, keys_.retiring_public, strict=False)
                     if p not in ended)
        _rewrite(cfg, custody.GatewayKeys(keys_.static, keys_.authority, kept), source)
        for p in ended:
            store.retire_gateway_key("static", p)
        store.audit("keys.retire", role="static", retired=sorted(p.hex() for p in ended),
                    devices_not_followed=stragglers, forced=force)
    except KeyFileError as e:
        raise _fail(e) from None
    finally:
        store.close()
    click.echo(f"retired {len(ended)} key(s); {len(stragglers)} device(s) had not followed"
               + (": " + ", ".join(stragglers) if stragglers else ""))


@click.group()
def revocations() -> None:
    """The revocation list the authority signs: export, verify, import."""


@revocations.command("export")
@_CONFIG
@_PASSPHRASE_FD
@click.argument("out", type=click.Path(dir_okay=False))
def revocations_export(config_path: str, passphrase_fd: int | None, out: str) -> None:
    """Write the signed revocation list to OUT (unlocks the authority's key)."""
    from sealink_gateway import custody, revocation
    from sealink_gateway.config import ConfigError, load
    from sealink_gateway.run import load_keys

    try:
        cfg = load(config_path)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    store = _open_store(cfg)
    try:
        static, authority, _ = load_keys(cfg, store, custody.passphrase_source(passphrase_fd))
        from sealink import crypto

        data = revocation.build(store, authority._key, crypto.x25519_base(static))
        doc = revocation.verify(data, authority.public_key)
        Path(out).write_bytes(data)
        store.audit("revocations.export", seq=doc["seq"], entries=len(doc["revoked"]),
                    out=out)
    except KeyFileError as e:
        raise _fail(e) from None
    finally:
        store.close()
    click.echo(f"{out}: revocation list {doc['seq']}, {len(doc['revoked'])} device(s), "
               f"signed by {authority.public_key.hex()}")


def authority_hex(value: str) -> bytes:
    """An --authority-key argument: 32 bytes in hex (BadParameter otherwise)."""
    try:
        key = bytes.fromhex(value)
        if len(key) == 32:
            return key
    except ValueError:
        pass
    raise click.BadParameter("--authority-key must be 32 bytes in hex")


@revocations.command("verify")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--authority-key", required=True, metavar="HEX")
@click.option("--min-seq", default=0, show_default=True,
              help="Refuse a list older than this sequence number (the last one seen).")
@click.option("--json", "as_json", is_flag=True)
def revocations_verify(path: str, authority_key: str, min_seq: int, as_json: bool) -> None:
    """Check a revocation list offline."""
    from sealink_gateway import revocation

    try:
        doc = revocation.verify(Path(path).read_bytes(), authority_hex(authority_key),
                                min_seq)
    except revocation.RevocationError as e:
        raise _fail(e) from None
    if as_json:
        click.echo(json.dumps(doc))
        return
    click.echo(f"valid: revocation list {doc['seq']} of gateway {doc['gateway_key'][:16]}…, "
               f"{len(doc['revoked'])} device(s)")
    for r in doc["revoked"]:
        click.echo(f"  {r['device_id']:<18} {r['static_key']}  {r['reason']}")


@revocations.command("import")
@_CONFIG
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--authority-key", required=True, metavar="HEX",
              help="The authority whose list this is (the other gateway's).")
def revocations_import(config_path: str, path: str, authority_key: str) -> None:
    """Apply another gateway's signed revocation list to this one: every device it
    names is revoked here too.  A list older than the last one imported is refused."""
    from sealink_gateway import revocation
    from sealink_gateway.config import ConfigError, load

    try:
        cfg = load(config_path)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    store = _open_store(cfg)
    try:
        authority = authority_hex(authority_key)
        seen = [e["detail"].get("seq", 0) for e in store.audit_log(100_000)
                if e["event"] == "revocations.import"
                and e["detail"].get("authority") == authority.hex()]
        doc = revocation.verify(Path(path).read_bytes(), authority,
                                max(seen, default=-1) + 1)
        done = revocation.apply(store, doc)
        store.audit("revocations.import", seq=doc["seq"], authority=authority.hex(),
                    revoked=done)
    except revocation.RevocationError as e:
        store.audit("revocations.import_refused", reason=str(e))
        raise _fail(e) from None
    finally:
        store.close()
    click.echo(f"revocation list {doc['seq']}: {len(done)} device(s) revoked here")
