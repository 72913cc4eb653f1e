"""The gateway's state in one SQLite file: devices, enrollment tokens, accepted uplinks,
the downlink queue, sessions and an audit log.

Durability: WAL journal with synchronous=FULL, so a committed uplink or queued downlink
survives a crash of the process (kill -9) or the machine (the MQTT bridge's "published"
marks alone are not fsynced: mark_published_many).  The schema is versioned
with PRAGMA user_version and upgraded by the MIGRATIONS below, in order.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# devices.last_seen is kept to this many seconds (Store.add_uplinks).
LAST_SEEN_S = 1.0

MIGRATIONS = [
    # 1: the first schema.
    """
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        sid INTEGER NOT NULL UNIQUE,
        static_key BLOB NOT NULL UNIQUE,
        attributes TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
        enrolled_at REAL NOT NULL,
        revoked_at REAL,
        last_seen REAL
    );
    CREATE TABLE enrollment_tokens (
        token_hash BLOB PRIMARY KEY,
        attributes TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        used_at REAL,
        used_by TEXT
    );
    CREATE TABLE uplinks (
        id INTEGER PRIMARY KEY,
        device_id TEXT NOT NULL REFERENCES devices(id),
        payload BLOB NOT NULL,
        radio TEXT NOT NULL,
        received_at REAL NOT NULL,
        published INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX uplinks_unpublished ON uplinks(published) WHERE published = 0;
    CREATE TABLE downlinks (
        id INTEGER PRIMARY KEY,
        device_id TEXT NOT NULL REFERENCES devices(id),
        payload BLOB NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'acked', 'failed')),
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX downlinks_pending ON downlinks(device_id, state);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        event TEXT NOT NULL,
        device_id TEXT,
        detail TEXT NOT NULL
    );
    """,
    # 2: sessions, as operators see them (never their keys: those live only in memory).
    """
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        device_id TEXT NOT NULL REFERENCES devices(id),
        sid INTEGER NOT NULL,
        pattern TEXT NOT NULL,
        transport TEXT NOT NULL,
        established_at REAL NOT NULL,
        closed_at REAL,
        close_reason TEXT
    );
    CREATE INDEX sessions_device ON sessions(device_id, id);
    """,
    # 3: the reliable id of each uplink: a device keeps a message's id across sessions,
    # and the gateway remembers the ids it committed (exactly once across sessions and
    # restarts).
    """
    ALTER TABLE uplinks ADD COLUMN msg_id INTEGER;
    CREATE INDEX uplinks_by_device ON uplinks (device_id, id)
    """,
    # 4: attestation (gateway/attest.py, docs/attestation.md): reference values operators
    # register, the DeviceID public keys provisioning read from devices, and each
    # device's latest appraisal with the authority-signed result.
    """
    CREATE TABLE reference_values (
        name TEXT NOT NULL,
        digest BLOB NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('good', 'bad')),
        version TEXT NOT NULL DEFAULT '',
        board TEXT NOT NULL DEFAULT '',
        added_at REAL NOT NULL,
        PRIMARY KEY (name, digest)
    );
    CREATE TABLE device_ids (
        ueid BLOB PRIMARY KEY,
        public_key BLOB NOT NULL UNIQUE,
        label TEXT NOT NULL DEFAULT '',
        device TEXT REFERENCES devices(id),
        provisioned_at REAL NOT NULL
    );
    CREATE TABLE attestations (
        device TEXT PRIMARY KEY REFERENCES devices(id),
        decision TEXT NOT NULL,
        reason TEXT NOT NULL,
        claims TEXT NOT NULL,
        result BLOB,
        at REAL NOT NULL
    )
    """,
    # 5: key custody (gateway/custody.py, docs/key-custody.md): the public halves of the
    # keys this gateway holds, so that a key file from another gateway is refused.
    """
    CREATE TABLE gateway_keys (
        role TEXT NOT NULL CHECK (role IN ('static', 'authority')),
        public BLOB NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('current', 'retiring', 'retired')),
        added_at REAL NOT NULL,
        until REAL,
        endorsement BLOB,
        PRIMARY KEY (role, public)
    );
    ALTER TABLE sessions ADD COLUMN gateway_key BLOB;
    ALTER TABLE devices ADD COLUMN key_rotation TEXT;
    ALTER TABLE devices ADD COLUMN next_static_key BLOB;
    CREATE TABLE revocations (
        seq INTEGER PRIMARY KEY,
        device_id TEXT NOT NULL,
        static_key BLOB NOT NULL,
        reason TEXT NOT NULL,
        at REAL NOT NULL
    );
    INSERT INTO revocations (device_id, static_key, reason, at)
        SELECT id, static_key, '', coalesce(revoked_at, 0) FROM devices
        WHERE status = 'revoked' ORDER BY revoked_at
    """,
    # 6: the per-device index of uplinks only over reliable ones (the ids the gateway
    # remembers across restarts: recent_msg_ids).  An index entry per uplink, in the
    # order of a fleet's devices rather than of arrival, cost more than the row itself.
    """
    DROP INDEX uplinks_by_device;
    CREATE INDEX uplinks_reliable ON uplinks (device_id, id) WHERE msg_id IS NOT NULL
    """,
]

@functools.cache
def _insert_uplinks(rows: int) -> str:
    return ("INSERT INTO uplinks (device_id, payload, radio, received_at, msg_id) VALUES "
            + ",".join(["(?, ?, ?, ?, ?)"] * rows))


FIRST_SID, LAST_SID = 1, 0x7FFF  # enrolled devices; 0x8000.. are first-contact ids


class StoreError(Exception):
    """A refused store operation, with the reason an operator sees."""


class TokenRefused(StoreError):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Device:
    id: str
    sid: int
    static_key: bytes
    attributes: dict[str, str]
    status: str
    enrolled_at: float
    revoked_at: float | None
    last_seen: float | None

    def as_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["static_key"] = self.static_key.hex()
        return d


def device_id_for(static_key: bytes) -> str:
    return "dev-" + hashlib.sha256(static_key).hexdigest()[:12]


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        # The database holds payloads and device keys' public halves: private to its
        # owner (SQLite gives its -wal and -shm files the database file's mode).
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._last_seen: dict[str, float] = {}  # device id -> last_seen written (add_uplinks)
        # (index, count): this process is shard `index` of `count` (gateway/workers.py),
        # and gives new devices session ids of its own, sid % count == index.
        self.shard = (0, 1)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.migrate()

    def close(self) -> None:
        self.db.close()

    @property
    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def migrate(self) -> None:
        version = self.schema_version
        if version > len(MIGRATIONS):
            raise StoreError(f"{self.path} has schema {version}, newer than this gateway "
                             f"({len(MIGRATIONS)})")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.transaction():
                for statement in script.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {number}")

    def transaction(self):
        return _Transaction(self.db)

    # --- audit ------------------------------------------------------------------------

    def audit(self, event: str, device_id: str | None = None, **detail: Any) -> None:
        self.db.execute("INSERT INTO audit (at, event, device_id, detail) VALUES (?, ?, ?, ?)",
                        (time.time(), event, device_id, json.dumps(detail, sort_keys=True)))

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(r) | {"detail": json.loads(r["detail"])} for r in rows]

    # --- custody ----------------------------------------------------------------------------

    def gateway_keys(self, role: str = "static") -> set[bytes]:
        """The public keys this gateway's database knows as its own, in `role`."""
        return {bytes(r[0]) for r in self.db.execute(
            "SELECT public FROM gateway_keys WHERE role = ? AND state = 'current'", (role,))}

    def retiring_keys(self, role: str = "static") -> dict[bytes, float]:
        """Keys being retired in `role`, with the end of their grace period."""
        return {bytes(r[0]): r[1] for r in self.db.execute(
            "SELECT public, until FROM gateway_keys WHERE role = ? AND state = 'retiring'",
            (role,))}

    def rotate_gateway_key(self, role: str, old: bytes, new: bytes, until: float,
                           endorsement: bytes | None = None) -> None:
        """`new` becomes the current key in `role`; `old` is retiring until `until`."""
        with self.transaction():
            self.db.execute("UPDATE gateway_keys SET state = 'retiring', until = ?"
                            " WHERE role = ? AND public = ?", (until, role, old))
            self.db.execute("INSERT INTO gateway_keys (role, public, state, added_at,"
                            " endorsement) VALUES (?, ?, 'current', ?, ?)",
                            (role, new, time.time(), endorsement))

    def retire_gateway_key(self, role: str, public: bytes) -> None:
        self.db.execute("UPDATE gateway_keys SET state = 'retired' WHERE role = ? AND"
                        " public = ?", (role, public))

    def endorsement(self, role: str, public: bytes) -> bytes | None:
        row = self.db.execute("SELECT endorsement FROM gateway_keys WHERE role = ? AND"
                              " public = ?", (role, public)).fetchone()
        return bytes(row[0]) if row and row[0] else None

    def adopt_gateway_keys(self, static_public: bytes, authority_public: bytes) -> bool:
        """Record the keys as this gateway's own (the first time); True if new."""
        with self.transaction():
            known = self.db.execute("SELECT count(*) FROM gateway_keys").fetchone()[0]
            if known:
                return False
            for role, public in (("static", static_public), ("authority", authority_public)):
                self.db.execute("INSERT INTO gateway_keys (role, public, state, added_at)"
                                " VALUES (?, ?, 'current', ?)", (role, public, time.time()))
        return True

    # --- enrollment -------------------------------------------------------------------------

    def create_token(self, attributes: dict[str, str], ttl_s: float) -> tuple[str, float]:
        """A new one-time token (returned once, stored only as a hash) and its expiry."""
        token = secrets.token_hex(16)
        now = time.time()
        with self.transaction():
            self.db.execute(
                "INSERT INTO enrollment_tokens (token_hash, attributes, created_at, expires_at)"
                " VALUES (?, ?, ?, ?)", (_token_hash(token), json.dumps(attributes), now,
                                         now + ttl_s))
            self.audit("token.created", None, attributes=attributes, ttl_s=ttl_s)
        return token, now + ttl_s

    def enroll(self, token: str, static_key: bytes, sid: int | None = None) -> Device:
        """Spend a token on a device's static key, under `sid` (or a free one);
        TokenRefused with the reason."""
        now = time.time()
        device_id = device_id_for(static_key)
        with self.transaction():
            row = self.db.execute("SELECT * FROM enrollment_tokens WHERE token_hash = ?",
                                  (_token_hash(token),)).fetchone()
            reason = None
            if row is None:
                reason = "unknown token"
            elif row["used_at"] is not None:
                reason = "token already used"
            elif row["expires_at"] < now:
                reason = "token expired"
            elif self.device_by_key(static_key) is not None:
                reason = "static key already enrolled"
            elif sid is not None and self.device_by_sid(sid) is not None:
                reason = "session id taken"
            if reason:
                # Recorded in this transaction, which commits: the refusal is kept.
                self.audit("enroll.refused", device_id, reason=reason)
            else:
                sid = self.free_sid() if sid is None else sid
                attributes = json.loads(row["attributes"])
                self.db.execute(
                    "INSERT INTO devices (id, sid, static_key, attributes, status, enrolled_at)"
                    " VALUES (?, ?, ?, ?, 'active', ?)",
                    (device_id, sid, static_key, json.dumps(attributes), now))
                self.db.execute("UPDATE enrollment_tokens SET used_at = ?, used_by = ?"
                                " WHERE token_hash = ?", (now, device_id, _token_hash(token)))
                self.audit("enroll.accepted", device_id, sid=sid, attributes=attributes)
        if reason:
            raise TokenRefused(reason)
        return self.device(device_id)

    def move_sid(self, device_id: str, sid: int) -> bool:
        """Give a device another session id (first contact again, XK); False if taken."""
        with self.transaction():
            if self.device_by_sid(sid) is not None:
                return False
            self.db.execute("UPDATE devices SET sid = ? WHERE id = ?", (sid, device_id))
            self.audit("device.sid_moved", device_id, sid=sid)
        return True

    def free_sid(self, exclude: set[int] = frozenset()) -> int:
        """A session id no enrolled device has (nor any in `exclude`); with a shard
        (index, count) set, one of that shard's: sid % count == index."""
        index, count = self.shard
        used = {r[0] for r in self.db.execute("SELECT sid FROM devices")} | set(exclude)
        first = FIRST_SID + (index - FIRST_SID) % count  # the shard's first sid
        choices = range(first, LAST_SID + 1, count)
        if len(used.intersection(choices)) >= len(choices):
            raise StoreError("no session id left")
        while True:
            sid = choices[secrets.randbelow(len(choices))]
            if sid not in used:
                return sid

    # --- devices ----------------------------------------------------------------------------

    def _device(self, row: sqlite3.Row | None) -> Device | None:
        if row is None:
            return None
        d = dict(row)
        d["attributes"] = json.loads(d["attributes"])
        d["static_key"] = bytes(d["static_key"])
        for column in ("key_rotation", "next_static_key"):  # (store.key_rotation())
            d.pop(column, None)
        return Device(**d)

    def device(self, device_id: str) -> Device | None:
        return self._device(self.db.execute("SELECT * FROM devices WHERE id = ?",
                                            (device_id,)).fetchone())

    def device_by_sid(self, sid: int) -> Device | None:
        return self.device_by_sid_with_rotation(sid)[0]

    def device_by_sid_with_rotation(
            self, sid: int) -> tuple[Device | None, str | None, bytes | None]:
        """device_by_sid() and key_rotation() of that device from one read (a KK
        handshake needs both)."""
        row = self.db.execute("SELECT * FROM devices WHERE sid = ?", (sid,)).fetchone()
        if row is None:
            return None, None, None
        return (self._device(row), *self._rotation(row))

    @staticmethod
    def _rotation(row: sqlite3.Row) -> tuple[str | None, bytes | None]:
        nxt = row["next_static_key"]
        return row["key_rotation"], bytes(nxt) if nxt is not None else None

    def device_by_key(self, static_key: bytes) -> Device | None:
        return self._device(self.db.execute("SELECT * FROM devices WHERE static_key = ?",
                                            (static_key,)).fetchone())

    def devices(self) -> list[Device]:
        rows = self.db.execute("SELECT * FROM devices ORDER BY enrolled_at")
        return [self._device(r) for r in rows]

    def revoked_ids(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT id FROM devices WHERE status = 'revoked'")}

    def revoke(self, device_id: str, reason: str = "") -> Device:
        with self.transaction():
            cur = self.db.execute("UPDATE devices SET status = 'revoked', revoked_at = ?"
                                  " WHERE id = ? AND status = 'active'", (time.time(), device_id))
            if cur.rowcount != 1:
                raise StoreError(f"no active device {device_id}")
            self.db.execute("INSERT INTO revocations (device_id, static_key, reason, at)"
                            " SELECT id, static_key, ?, ? FROM devices WHERE id = ?",
                            (reason, time.time(), device_id))
            self.audit("device.revoked", device_id, reason=reason)
        return self.device(device_id)

    def revocations(self) -> list[dict[str, Any]]:
        """Every revocation, in order (the revocation list's entries)."""
        return [dict(r) | {"static_key": bytes(r["static_key"])} for r in self.db.execute(
            "SELECT * FROM revocations ORDER BY seq")]

    def touch(self, device_id: str) -> None:
        self.db.execute("UPDATE devices SET last_seen = ? WHERE id = ?", (time.time(), device_id))

    # --- attestation -------------------------------------------------------------------

    def add_reference(self, name: str, digest: bytes, status: str, version: str = "",
                      board: str = "") -> None:
        """Register (or re-classify) a reference value: a measured component's digest
        and whether it is known good or known bad."""
        if status not in ("good", "bad") or len(digest) != 32 or not name:
            raise StoreError("a reference value needs a name, a 32-byte digest and "
                             "status good or bad")
        with self.transaction():
            self.db.execute(
                "INSERT INTO reference_values (name, digest, status, version, board, added_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name, digest) DO UPDATE SET"
                " status = excluded.status, version = excluded.version,"
                " board = excluded.board", (name, digest, status, version, board, time.time()))
            self.audit("reference.registered", None, name=name, digest=digest.hex(),
                       status=status, version=version, board=board)

    def reference_status(self, name: str, digest: bytes) -> str | None:
        row = self.db.execute("SELECT status FROM reference_values WHERE name = ? AND"
                              " digest = ?", (name, digest)).fetchone()
        return row[0] if row else None

    def references(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM reference_values ORDER BY added_at")
        return [dict(r) | {"digest": bytes(r["digest"]).hex()} for r in rows]

    def provision(self, public_key: bytes, ueid: bytes, label: str = "") -> None:
        """Record a device's DeviceID public key, read from it at provisioning."""
        if len(public_key) != 32 or len(ueid) != 17:
            raise StoreError("a DeviceID is a 32-byte Ed25519 public key")
        with self.transaction():
            try:
                self.db.execute("INSERT INTO device_ids (ueid, public_key, label,"
                                " provisioned_at) VALUES (?, ?, ?, ?)",
                                (ueid, public_key, label, time.time()))
            except sqlite3.IntegrityError:
                raise StoreError(f"DeviceID {public_key.hex()} is already provisioned") from None
            self.audit("device.provisioned", None, ueid=ueid.hex(), label=label)

    def device_id_key(self, ueid: bytes) -> bytes | None:
        row = self.db.execute("SELECT public_key FROM device_ids WHERE ueid = ?",
                              (ueid,)).fetchone()
        return bytes(row[0]) if row else None

    def device_for_ueid(self, ueid: bytes) -> Device | None:
        row = self.db.execute("SELECT device FROM device_ids WHERE ueid = ?", (ueid,)).fetchone()
        return self.device(row[0]) if row and row[0] else None

    def bind_device_id(self, ueid: bytes, device_id: str) -> None:
        self.db.execute("UPDATE device_ids SET device = ? WHERE ueid = ?", (device_id, ueid))

    def rekey(self, device_id: str, static_key: bytes, reason: str) -> None:
        """A device's static key changed (new firmware, measured): the key it proved."""
        with self.transaction():
            self.db.execute("UPDATE devices SET static_key = ? WHERE id = ?",
                            (static_key, device_id))
            self.audit("device.rekeyed", device_id, reason=reason,
                       static_key=static_key.hex())

    # A device's own key, rotated on request (`sealink device rotate-key`): requested ->
    # offered (the device sent its next public key on a session under the old one) ->
    # done when it completes a handshake under the next key (store.rekey).

    def request_key_rotation(self, device_id: str) -> None:
        with self.transaction():
            cur = self.db.execute("UPDATE devices SET key_rotation = 'requested',"
                                  " next_static_key = NULL WHERE id = ? AND status = 'active'",
                                  (device_id,))
            if cur.rowcount != 1:
                raise StoreError(f"no active device {device_id}")
            self.audit("device.key_rotation_requested", device_id)

    def key_rotation(self, device_id: str) -> tuple[str | None, bytes | None]:
        row = self.db.execute("SELECT key_rotation, next_static_key FROM devices"
                              " WHERE id = ?", (device_id,)).fetchone()
        if row is None:
            return None, None
        return self._rotation(row)

    def offer_next_key(self, device_id: str, next_static: bytes) -> None:
        with self.transaction():
            self.db.execute("UPDATE devices SET key_rotation = 'offered',"
                            " next_static_key = ? WHERE id = ?", (next_static, device_id))
            self.audit("device.key_offered", device_id, next_static_key=next_static.hex())

    def complete_key_rotation(self, device_id: str, static_key: bytes) -> None:
        with self.transaction():
            self.db.execute("UPDATE devices SET static_key = ?, key_rotation = NULL,"
                            " next_static_key = NULL WHERE id = ?", (static_key, device_id))
            self.audit("device.rekeyed", device_id, reason="rotation requested",
                       static_key=static_key.hex())

    def record_attestation(self, device_id: str, decision: str, reason: str,
                           claims: dict[str, Any], result: bytes | None) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT INTO attestations (device, decision, reason, claims, result, at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device) DO UPDATE SET"
                " decision = excluded.decision, reason = excluded.reason,"
                " claims = excluded.claims, result = excluded.result, at = excluded.at",
                (device_id, decision, reason, json.dumps(claims, sort_keys=True), result,
                 time.time()))
            self.audit(f"attestation.{decision}", device_id, reason=reason,
                       version=claims.get("version"))

    def attestation(self, device_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM attestations WHERE device = ?",
                              (device_id,)).fetchone()
        if row is None:
            return None
        return dict(row) | {"claims": json.loads(row["claims"]),
                            "result": bytes(row["result"]).hex() if row["result"] else None}

    def attestation_decisions(self, device_ids) -> dict[str, str]:
        """The latest appraisal's decision of each of these devices that has one (one
        query: the MQTT bridge asks for a whole batch's devices at once)."""
        decisions: dict[str, str] = {}
        for marks, chunk in _in_lists(list(device_ids)):
            decisions.update(self.db.execute(
                f"SELECT device, decision FROM attestations WHERE device IN ({marks})", chunk))
        return decisions

    # --- uplinks and downlinks ----------------------------------------------------------------

    def recent_msg_ids(self, device_id: str, limit: int = 128) -> list[int]:
        """The ids of a device's last `limit` reliable uplinks, oldest first."""
        rows = self.db.execute("SELECT msg_id FROM uplinks WHERE device_id = ?"
                               " AND msg_id IS NOT NULL ORDER BY id DESC LIMIT ?",
                               (device_id, limit))
        return [r[0] for r in rows][::-1]

    def add_uplink(self, device_id: str, payload: bytes, radio: dict[str, Any]) -> int:
        cur = self.db.execute("INSERT INTO uplinks (device_id, payload, radio, received_at)"
                              " VALUES (?, ?, ?, ?)",
                              (device_id, payload, json.dumps(radio), time.time()))
        return cur.lastrowid

    # --- sessions ---------------------------------------------------------------------

    def session_opened(self, device_id: str, sid: int, pattern: str, transport: str,
                       gateway_key: bytes | None = None) -> None:
        """Record a new session (and the gateway static key it was made under); the
        device's earlier open one (if any) is superseded."""
        now = time.time()
        self.db.execute("UPDATE sessions SET closed_at = ?, close_reason = 'superseded'"
                        " WHERE device_id = ? AND closed_at IS NULL", (now, device_id))
        self.db.execute("INSERT INTO sessions (device_id, sid, pattern, transport,"
                        " established_at, gateway_key) VALUES (?, ?, ?, ?, ?, ?)",
                        (device_id, sid, pattern, transport, now, gateway_key))

    def gateway_key_in_use(self) -> dict[str, bytes | None]:
        """Each active device's gateway static key in its latest session (None: no
        session recorded under a known key)."""
        rows = self.db.execute(
            "SELECT d.id, (SELECT s.gateway_key FROM sessions s WHERE s.device_id = d.id"
            " ORDER BY s.id DESC LIMIT 1) FROM devices d WHERE d.status = 'active'")
        return {r[0]: bytes(r[1]) if r[1] is not None else None for r in rows}

    def session_closed(self, device_id: str, reason: str) -> None:
        self.db.execute("UPDATE sessions SET closed_at = ?, close_reason = ?"
                        " WHERE device_id = ? AND closed_at IS NULL",
                        (time.time(), reason, device_id))

    def sessions(self, device_id: str, limit: int = 10) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM sessions WHERE device_id = ?"
                               " ORDER BY id DESC LIMIT ?", (device_id, limit))
        return [dict(r) for r in rows]

    def add_uplinks(self, rows: list[tuple],
                    actions: list = ()) -> list[int]:
        """Commit many uplinks (device id, payload, radio metadata[, reliable id]), and
        other writes (callables: audit entries, session records), in one transaction
        (one fsync); returns the uplinks' ids."""
        now = time.time()
        with self.transaction():
            for action in actions:
                action()
            # Multi-row INSERTs of 256, 64, 16, 4 and 1 rows (a few statements, each
            # prepared once and cached), a third cheaper per row than executemany.
            # uplinks.id is a rowid (INTEGER PRIMARY KEY, no AUTOINCREMENT): each insert
            # takes the largest id + 1, and no other connection can write inside this
            # transaction, so the batch's ids are the n that end at last_insert_rowid().
            values = [(device_id, payload, json.dumps(radio) if radio else "{}", now,
                       rest[0] if rest else None) for device_id, payload, radio, *rest in rows]
            i = 0
            for chunk in (256, 64, 16, 4, 1):
                while len(values) - i >= chunk:
                    self.db.execute(_insert_uplinks(chunk),
                                    [x for row in values[i:i + chunk] for x in row])
                    i += chunk
            last = self.db.execute("SELECT last_insert_rowid()").fetchone()[0]
            # devices.last_seen to the second: written when it moves by LAST_SEEN_S or
            # more (an UPDATE per device per batch would cost as much as the inserts).
            seen = self._last_seen
            stale = [d for d in {r[0] for r in rows} if now - seen.get(d, 0.0) >= LAST_SEEN_S]
            if stale:
                self.db.executemany("UPDATE devices SET last_seen = ? WHERE id = ?",
                                    [(now, d) for d in stale])
        for d in stale:
            seen[d] = now
        return list(range(last - len(rows) + 1, last + 1)) if rows else []

    def uplinks(self, device_id: str | None = None, limit: int = 100,
                unpublished: bool = False, after_id: int = 0) -> list[dict[str, Any]]:
        sql = "SELECT * FROM uplinks WHERE id > ?"
        args: list[Any] = [after_id]
        if device_id:
            sql += " AND device_id = ?"
            args.append(device_id)
        if unpublished:
            sql += " AND published = 0"
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        out = []
        for r in self.db.execute(sql, args):
            uplink = dict(r)
            radio = uplink["radio"]
            uplink["radio"] = {} if radio == "{}" else json.loads(radio)  # ("{}": udp://)
            uplink["payload"] = bytes(uplink["payload"])
            out.append(uplink)
        return out

    def mark_published(self, uplink_id: int) -> None:
        self.mark_published_many([uplink_id])

    def mark_published_many(self, uplink_ids: list[int]) -> None:
        """Marked in a transaction that is not fsynced (WAL, synchronous=NORMAL): a
        power loss may forget the marks (never the uplinks), and the bridge then
        publishes those uplinks again, which QoS 1's "at least once" allows.  The next
        fsynced commit makes them durable.  (A trickle of uplinks paid two fsyncs each.)"""
        self.db.execute("PRAGMA synchronous=NORMAL")
        try:
            with self.transaction():
                for marks, chunk in _in_lists(uplink_ids):
                    self.db.execute(f"UPDATE uplinks SET published = 1 WHERE id IN ({marks})",
                                    chunk)
        finally:
            self.db.execute("PRAGMA synchronous=FULL")

    def queue_downlink(self, device_id: str, payload: bytes) -> int:
        now = time.time()
        cur = self.db.execute("INSERT INTO downlinks (device_id, payload, state, created_at,"
                              " updated_at) VALUES (?, ?, 'queued', ?, ?)",
                              (device_id, payload, now, now))
        return cur.lastrowid

    def downlinks(self, device_id: str | None = None,
                  states: tuple[str, ...] = ("queued", "sent")) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(states))
        sql = f"SELECT * FROM downlinks WHERE state IN ({marks})"
        args: list[Any] = list(states)
        if device_id:
            sql += " AND device_id = ?"
            args.append(device_id)
        return [dict(r) | {"payload": bytes(r["payload"])}
                for r in self.db.execute(sql + " ORDER BY id", args)]

    def set_downlink_state(self, downlink_id: int, state: str) -> None:
        self.db.execute("UPDATE downlinks SET state = ?, updated_at = ? WHERE id = ?",
                        (state, time.time(), downlink_id))


def _in_lists(values: list):
    """(placeholders, values) for IN lists of at most 500 values each: SQLite limits the
    variables of a statement."""
    for i in range(0, len(values), 500):
        chunk = values[i:i + 500]
        yield ",".join("?" * len(chunk)), chunk


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False
