"""Offline backup of the gateway's keys, M of N: SLIP-0039 mnemonic shares
(`shamir-mnemonic`), one page per share (a text file, and a QR code of the words as a
PNG through `segno`), for people to keep apart.  Any M of them rebuild the keys.

A page says which gateway it belongs to (its public keys) and the backup's SLIP-0039
identifier, never anything secret beyond its own words.  After combining, the keys
are checked against the gateway's public key written on the pages: a wrong backup
passphrase combines without error in SLIP-0039 (by design), and is caught there.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import shamir_mnemonic
from shamir_mnemonic.share import Share

from sealink_gateway.custody import CustodyError, GatewayKeys
from sealink_gateway.keyfile import write_private


class BackupError(CustodyError):
    """Shares that do not rebuild the keys; the message says why, without the words."""


@dataclass(frozen=True)
class SharePage:
    words: str
    gateway_key: str | None   # the public key the page names, if any
    path: Path | None = None
    protected: bool = False   # the page says the backup has a passphrase

    @property
    def share(self) -> Share:
        return Share.from_mnemonic(self.words)


def split(keys: GatewayKeys, threshold: int, shares: int,
          passphrase: bytes = b"") -> list[str]:
    if not 1 <= threshold <= shares <= 16:
        raise BackupError("need 1 <= threshold <= shares <= 16")
    if threshold == 1 and shares > 1:
        raise BackupError("a threshold of 1 makes every share a full copy of the keys: "
                          "use --shares 1 for that, or a threshold of 2 or more")
    [group] = shamir_mnemonic.generate_mnemonics(1, [(threshold, shares)], keys.secret(),
                                                 passphrase=passphrase)
    return group


def _where(page: SharePage) -> str:
    return str(page.path) if page.path else f"share {page.share.index + 1}"


def combine(pages: list[SharePage], passphrase: bytes = b"") -> GatewayKeys:
    """The keys from `pages`, or a BackupError that says what is wrong."""
    if not pages:
        raise BackupError("no shares given")
    parsed = []
    for page in pages:
        try:
            parsed.append((page, page.share))
        except shamir_mnemonic.MnemonicError as e:
            reason = str(e).split(" for \"")[0].split(" \"")[0]  # never echo the words
            word = re.search(r"Invalid mnemonic word '([^']*)'", str(e))
            if word:
                reason = f"'{word.group(1)}' is not a SLIP-0039 word (a typo?)"
            elif "checksum" in str(e):
                reason = "its checksum does not match (a word mistyped or swapped?)"
            raise BackupError(f"{_where(page)}: not a valid share: {reason}") from None
    first = parsed[0][1]
    for page, share in parsed[1:]:
        if share.identifier != first.identifier:
            raise BackupError(f"{_where(page)} belongs to another backup (identifier "
                              f"{share.identifier}, not {first.identifier})")
    indexes = {share.index for _, share in parsed}
    if len(indexes) < first.member_threshold:
        raise BackupError(f"too few shares: {len(indexes)} different share(s) given, this "
                          f"backup needs {first.member_threshold}")
    try:
        secret = shamir_mnemonic.combine_mnemonics([p.words for p in pages],
                                                   passphrase=passphrase)
    except shamir_mnemonic.MnemonicError as e:
        reason = str(e).split(" Expected")[0].split(" for \"")[0]
        raise BackupError(f"the shares do not combine: {reason}") from None
    keys = GatewayKeys.from_secret(secret)
    named = {p.gateway_key for p in pages if p.gateway_key}
    if len(named) > 1:
        raise BackupError("the pages name different gateways")
    if named and keys.static_public.hex() not in named:
        raise BackupError("the shares combine, but not to the gateway key their pages name: "
                          "a wrong backup passphrase?")
    return keys


def write_pages(out: Path, mnemonics: list[str], keys: GatewayKeys, threshold: int,
                has_passphrase: bool, qr: bool = True) -> list[Path]:
    """One page per share in `out` (created, mode 0700): share-K-of-N.txt (mode 0600)
    and, with `qr`, share-K-of-N.png.  Returns the text pages."""
    import segno

    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    n = len(mnemonics)
    identifier = Share.from_mnemonic(mnemonics[0]).identifier
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    pages = []
    for k, words in enumerate(mnemonics, 1):
        listed = words.split()
        rows = [" ".join(f"{i + 1:>2} {w:<10}" for i, w in
                         list(enumerate(listed))[r:r + 4]).rstrip()
                for r in range(0, len(listed), 4)]
        text = "\n".join([
            f"Sealink gateway key backup: share {k} of {n}",
            f"Any {threshold} of the {n} shares rebuild the gateway's keys "
            "(`sealink keys restore`).",
            "",
            f"gateway key     {keys.static_public.hex()}",
            f"authority key   {keys.authority_public.hex()}",
            f"backup id       {identifier}",
            f"made            {when}",
            f"passphrase      {'yes: the restore asks for it' if has_passphrase else 'no'}",
            "",
            "--- words (SLIP-0039) ---",
            *rows,
            "--- end ---",
            "",
            "Keep this page apart from the other shares, offline.  Whoever holds "
            f"{threshold} of them holds the gateway.",
            "",
        ])
        page = out / f"share-{k}-of-{n}.txt"
        write_private(page, text.encode())
        pages.append(page)
        if qr:
            png = out / f"share-{k}-of-{n}.png"
            segno.make(words, error="m").save(str(png), scale=4)
            png.chmod(0o600)
    return pages


def read_page(path: Path) -> SharePage:
    """A share from a page written by write_pages, or from a file that holds just the
    words."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise BackupError(f"{path}: cannot read it: {e}") from None
    gateway = re.search(r"^gateway key\s+([0-9a-f]{64})\s*$", text, re.M)
    if "--- words" in text:
        body = text.split("--- words", 1)[1].split("\n", 1)[-1].split("--- end ---")[0]
        words = [w for w in body.split() if not w.isdigit()]
    else:
        words = text.split()
    if not words:
        raise BackupError(f"{path}: no words in it")
    return SharePage(" ".join(w.lower() for w in words),
                     gateway.group(1) if gateway else None, path,
                     bool(re.search(r"^passphrase\s+yes", text, re.M)))
