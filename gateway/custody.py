"""Custody of the gateway's two secrets: its Noise static key (X25519) and the
authority's signing key (Ed25519).  Both sit in one key file, encrypted at rest:

- `passphrase`: the key-encryption key comes from Argon2id over an operator's
  passphrase (RFC 9106's second recommended parameters: t=3, 64 MiB, p=4);
- `tpm`: the key-encryption key is a random 32-byte value sealed to a TPM 2.0 under
  the owner hierarchy's storage key (optionally bound to PCR values), unsealed through
  tpm2-tools at every start.

The file (JSON, format documented in docs/key-custody.md) carries its format version,
the custody mode and its parameters, the two public keys (so that a file can be told
apart from another gateway's before anything is unlocked), a nonce and the
ChaCha20-Poly1305 ciphertext of the 64 secret bytes.  Every field but the ciphertext
is the AEAD's associated data: change one and the file does not open.

Errors are typed (each a CustodyError) and their messages name the file and the
reason; no message holds a secret.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from sealink import crypto
from sealink_gateway.keyfile import KeyFileError, require_private

FORMAT = "sealink-gateway-keys"
VERSION = 1
MODES = ("passphrase", "tpm")

# Argon2id, RFC 9106 section 4, second recommended option (memory-constrained).
ARGON2 = {"t": 3, "m_kib": 64 * 1024, "p": 4}


class CustodyError(KeyFileError):
    """The keys cannot be used; the message says which file and why."""


class KeyFormatError(CustodyError):
    """Not a key file, a corrupted or truncated one, or one from a newer version."""


class PassphraseError(CustodyError):
    """The passphrase does not open the file (or none was given)."""


class ForeignKeysError(CustodyError):
    """The file holds another gateway's keys."""


class TpmError(CustodyError):
    """The TPM is absent, locked out, or cannot unseal the key."""


@dataclass(frozen=True)
class GatewayKeys:
    static: bytes      # X25519 private key
    authority: bytes   # Ed25519 seed
    # Static keys being retired (`sealink keys rotate`): devices still reach the
    # gateway under them during the grace period, and learn the new one.
    retiring: tuple[bytes, ...] = ()

    @property
    def static_public(self) -> bytes:
        return crypto.x25519_base(self.static)

    @property
    def authority_key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.authority)

    @property
    def authority_public(self) -> bytes:
        return self.authority_key.public_key().public_bytes_raw()

    @property
    def retiring_public(self) -> list[bytes]:
        return [crypto.x25519_base(k) for k in self.retiring]

    def secret(self) -> bytes:
        return self.static + self.authority + b"".join(self.retiring)

    @classmethod
    def from_secret(cls, secret: bytes) -> GatewayKeys:
        if len(secret) < 64 or len(secret) % 32:
            raise KeyFormatError(f"the key material is {len(secret)} bytes, not 64 + 32k")
        return cls(secret[:32], secret[32:64],
                   tuple(secret[i:i + 32] for i in range(64, len(secret), 32)))

    @classmethod
    def generate(cls) -> GatewayKeys:
        return cls(crypto.random_bytes(32), crypto.random_bytes(32))


# --- passphrases ---------------------------------------------------------------------------

PASSPHRASE_ENV = "SEALINK_PASSPHRASE"


def passphrase_source(fd: int | None = None, env: str = PASSPHRASE_ENV,
                      prompt: bool = True, confirm: bool = False,
                      option: str = "--passphrase-fd",
                      what: str = "passphrase for the gateway's keys") -> Callable[[], bytes]:
    """Where the passphrase comes from, in this order: a file descriptor (the first
    line read from it), the environment variable `env`, a prompt on the terminal.
    Never the command line.  Returned as a function: it is asked only when needed."""
    def get() -> bytes:
        if fd is not None:
            with os.fdopen(fd, "rb", closefd=False) as f:
                value = f.readline().rstrip(b"\r\n")
        elif os.environ.get(env):
            value = os.environ[env].encode()
        elif prompt and os.isatty(0):
            import click

            value = click.prompt(what, hide_input=True, confirmation_prompt=confirm).encode()
        else:
            raise PassphraseError(f"no passphrase: set {env}, pass {option}, "
                                  "or run on a terminal to be asked")
        if not value:
            raise PassphraseError("the passphrase is empty")
        return value
    return get


def _argon2id(passphrase: bytes, salt: bytes, params: dict[str, int]) -> bytes:
    from argon2.low_level import Type, hash_secret_raw

    return hash_secret_raw(passphrase, salt, time_cost=params["t"],
                           memory_cost=params["m_kib"], parallelism=params["p"],
                           hash_len=32, type=Type.ID)


# --- the TPM, through tpm2-tools -----------------------------------------------------------

TPM_DEVICE = "device:/dev/tpmrm0"


class Tpm:
    """A TPM 2.0 reached through tpm2-tools and a TCTI string ("device:/dev/tpmrm0" in
    production, "swtpm:host=127.0.0.1,port=2321" against swtpm in tests)."""

    def __init__(self, tcti: str = TPM_DEVICE):
        self.tcti = tcti

    def _run(self, *args: str, stdin: bytes | None = None, cwd: str) -> bytes:
        if shutil.which(args[0]) is None:
            raise TpmError(f"{args[0]} is not installed (Debian package tpm2-tools)")
        env = dict(os.environ, TPM2TOOLS_TCTI=self.tcti)
        try:
            out = subprocess.run(list(args), input=stdin, capture_output=True, cwd=cwd,
                                 env=env, timeout=60)
        except subprocess.TimeoutExpired:
            raise TpmError(f"the TPM at {self.tcti} did not answer {args[0]} in 60 s") from None
        if out.returncode != 0:
            raise TpmError(self._explain(args[0], out.stderr.decode(errors="replace")))
        return out.stdout

    def _explain(self, tool: str, err: str) -> str:
        low = err.lower()
        if "tcti" in low or "connection refused" in low or "no such file" in low:
            return f"no TPM at {self.tcti} ({tool}: cannot connect)"
        if "lockout" in low or "0x921" in low:
            return f"the TPM at {self.tcti} is in dictionary-attack lockout ({tool})"
        if "policy" in low or "0x99d" in low or "pcr" in low:
            return (f"the TPM at {self.tcti} refuses to unseal: its PCR values are not the "
                    f"ones the key was sealed to ({tool})")
        if "integrity" in low or "0x9a" in low or "0x1df" in low or "0x8b" in low:
            return (f"the TPM at {self.tcti} cannot load the sealed key: it was sealed by "
                    f"another TPM or its owner hierarchy was cleared ({tool})")
        last = err.strip().splitlines()[-1] if err.strip() else "failed"
        return f"the TPM at {self.tcti}: {tool}: {last}"

    def _primary(self, cwd: str) -> None:
        # The owner hierarchy's storage key: the default template is deterministic, so
        # the same TPM gives the same key every time and nothing needs to persist.
        # Without a resource manager (swtpm, /dev/tpm0) the TPM has few object slots:
        # whatever an interrupted run left loaded is flushed first.
        self._flush(cwd)
        self._run("tpm2_createprimary", "-Q", "-C", "o", "-g", "sha256", "-G", "ecc",
                  "-c", "primary.ctx", cwd=cwd)

    def _flush(self, cwd: str) -> None:
        for kind in ("-t", "-s"):
            try:
                self._run("tpm2_flushcontext", kind, cwd=cwd)
            except TpmError:
                pass

    def seal(self, secret: bytes, pcrs: str | None) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="sealink-tpm-") as d:
            try:
                self._primary(d)
                extra: list[str] = []
                if pcrs:
                    self._run("tpm2_createpolicy", "-Q", "--policy-pcr", "-l", pcrs,
                              "-L", "pcr.policy", cwd=d)
                    extra = ["-L", "pcr.policy"]
                self._run("tpm2_create", "-Q", "-C", "primary.ctx", "-g", "sha256",
                          *extra, "-i", "-", "-u", "seal.pub", "-r", "seal.priv",
                          stdin=secret, cwd=d)
                return {"tcti_hint": self.tcti.split(":")[0], "pcrs": pcrs,
                        "public": Path(d, "seal.pub").read_bytes().hex(),
                        "private": Path(d, "seal.priv").read_bytes().hex()}
            finally:
                self._flush(d)

    def unseal(self, sealed: dict[str, Any]) -> bytes:
        with tempfile.TemporaryDirectory(prefix="sealink-tpm-") as d:
            try:
                Path(d, "seal.pub").write_bytes(bytes.fromhex(sealed["public"]))
                Path(d, "seal.priv").write_bytes(bytes.fromhex(sealed["private"]))
                self._primary(d)
                self._run("tpm2_load", "-Q", "-C", "primary.ctx", "-u", "seal.pub",
                          "-r", "seal.priv", "-c", "seal.ctx", cwd=d)
                self._flush(cwd=d)  # seal.ctx is a saved context: unseal loads it again
                auth = ["-p", f"pcr:{sealed['pcrs']}"] if sealed.get("pcrs") else []
                return self._run("tpm2_unseal", "-c", "seal.ctx", *auth, cwd=d)
            finally:
                self._flush(d)


# --- the key file --------------------------------------------------------------------------

def _aad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def write(path: Path, keys: GatewayKeys, mode: str, *,
          passphrase: Callable[[], bytes] | None = None, tpm: Tpm | None = None,
          pcrs: str | None = None, argon2: dict[str, int] | None = None,
          replace: bool = False) -> dict[str, Any]:
    """Encrypt `keys` into a new file at `path` (mode 0600).  An existing file is never
    overwritten, unless `replace` (a rotation: the new file takes the old one's place
    atomically, so a crash leaves one or the other, whole).  Returns the header."""
    if mode not in MODES:
        raise CustodyError(f"custody mode {mode!r} is not one of {', '.join(MODES)}")
    header: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "custody": mode, "created_at": int(time.time()),
        "public": {"static": keys.static_public.hex(), "authority": keys.authority_public.hex(),
                   "retiring": [k.hex() for k in keys.retiring_public]},
    }
    if mode == "passphrase":
        params = dict(argon2 or ARGON2)
        salt = crypto.random_bytes(16)
        header["passphrase"] = {"kdf": "argon2id", "salt": salt.hex(), **params}
        kek = _argon2id((passphrase or passphrase_source(confirm=True))(), salt, params)
    else:
        kek = crypto.random_bytes(32)
        header["tpm"] = (tpm or Tpm()).seal(kek, pcrs)
    nonce = crypto.random_bytes(12)
    header["aead"] = {"name": "chacha20poly1305", "nonce": nonce.hex()}
    ciphertext = ChaCha20Poly1305(kek).encrypt(nonce, keys.secret(), _aad(header))
    body = json.dumps(header | {"ciphertext": ciphertext.hex()}, indent=1, sort_keys=True)
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(body + "\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if `path` exists: nothing is overwritten
    except FileExistsError:
        raise CustodyError(f"{path} exists: keys are never overwritten") from None
    finally:
        tmp.unlink(missing_ok=True)
    return header


def read_header(path: Path) -> dict[str, Any]:
    """The file's header (everything public), checked for structure; no unlocking."""
    try:
        require_private(path)
    except FileNotFoundError:
        raise CustodyError(f"{path} does not exist: run `sealink keys init` "
                           "(or `sealink keys restore`)") from None
    raw = path.read_bytes()
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise KeyFormatError(f"{path} is not a Sealink key file (not JSON: truncated or "
                             "corrupted?)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise KeyFormatError(f"{path} is not a Sealink key file")
    version = doc.get("version")
    if not isinstance(version, int) or version < 1:
        raise KeyFormatError(f"{path}: bad format version {version!r}")
    if version > VERSION:
        raise KeyFormatError(f"{path} is format version {version}; this Sealink reads up "
                             f"to version {VERSION}: upgrade Sealink to use it")
    try:
        mode = doc["custody"]
        public = doc["public"]
        for name in ("static", "authority"):
            if len(bytes.fromhex(public[name])) != 32:
                raise ValueError(f"public {name} key is not 32 bytes")
        nonce = bytes.fromhex(doc["aead"]["nonce"])
        ciphertext = bytes.fromhex(doc["ciphertext"])
        if doc["aead"]["name"] != "chacha20poly1305" or len(nonce) != 12:
            raise ValueError("unknown AEAD")
        retiring = public.get("retiring", [])
        if not isinstance(retiring, list) or any(len(bytes.fromhex(k)) != 32
                                                 for k in retiring):
            raise ValueError("retiring keys are not 32 bytes each")
        if len(ciphertext) != 64 + 32 * len(retiring) + 16:
            raise ValueError(f"ciphertext is {len(ciphertext)} bytes, not "
                             f"{64 + 32 * len(retiring) + 16}")
        if mode == "passphrase":
            p = doc["passphrase"]
            if p["kdf"] != "argon2id" or len(bytes.fromhex(p["salt"])) < 16:
                raise ValueError("unknown KDF")
            for k in ("t", "m_kib", "p"):
                if not isinstance(p[k], int) or p[k] < 1:
                    raise ValueError(f"KDF parameter {k} is not a positive integer")
        elif mode == "tpm":
            bytes.fromhex(doc["tpm"]["public"])
            bytes.fromhex(doc["tpm"]["private"])
        else:
            raise ValueError(f"unknown custody mode {mode!r}")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise KeyFormatError(f"{path} is corrupted: {e}") from None
    return doc


def unlock(path: Path, *, passphrase: Callable[[], bytes] | None = None,
           tpm: Tpm | None = None, expected: set[bytes] | None = None) -> GatewayKeys:
    """Open the key file.  `expected`: the gateway static public keys this gateway's
    database knows as its own (a file holding another key is refused before anything
    is unlocked)."""
    doc = read_header(path)
    static_public = bytes.fromhex(doc["public"]["static"])
    if expected and static_public not in expected:
        raise ForeignKeysError(
            f"{path} holds gateway key {static_public.hex()[:16]}…, but this gateway's "
            f"database belongs to {' or '.join(k.hex()[:16] + '…' for k in expected)}: "
            "a key file from another gateway")
    ciphertext = bytes.fromhex(doc.pop("ciphertext"))
    if doc["custody"] == "passphrase":
        p = doc["passphrase"]
        kek = _argon2id((passphrase or passphrase_source())(), bytes.fromhex(p["salt"]),
                        {k: p[k] for k in ("t", "m_kib", "p")})
    else:
        kek = (tpm or Tpm()).unseal(doc["tpm"])
        if len(kek) != 32:
            raise TpmError(f"{path}: the TPM unsealed {len(kek)} bytes, not 32")
    try:
        secret = ChaCha20Poly1305(kek).decrypt(bytes.fromhex(doc["aead"]["nonce"]),
                                               ciphertext, _aad(doc))
    except InvalidTag:
        if doc["custody"] == "passphrase":
            raise PassphraseError(f"{path}: wrong passphrase (or the file was altered)") \
                from None
        raise KeyFormatError(f"{path}: the sealed key does not open the file (altered?)") \
            from None
    keys = GatewayKeys.from_secret(secret)
    if (keys.static_public.hex(), keys.authority_public.hex(),
            [k.hex() for k in keys.retiring_public]) != \
            (doc["public"]["static"], doc["public"]["authority"],
             doc["public"].get("retiring", [])):
        raise KeyFormatError(f"{path}: the keys inside do not match its public keys")
    return keys
