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
        keys_ = custody.unlock(cfg.keys_file,
                               passphrase=custody.passphrase_source(passphrase_fd),
                               tpm=_tpm(cfg), expected=store.gateway_keys("static"))
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
