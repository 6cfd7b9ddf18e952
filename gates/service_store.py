"""SQLite storage of the gate service: gates, API keys, access rules and the event record.

The tables live in the gallery's database (schema versions 2 to 4 of gates/store.py), so that a resident
and everything attached to them are created and deleted in single transactions. Residents made
here are inserted with their rule in one transaction: a crash in between must not leave a visitor
or a blocked face stored as an ordinary resident of every gate. Their faces are added through the
Gallery, which keeps the FAISS index in step.

Threading: one connection and one lock, like gates/store.py; this connection and the gallery's
are two SQLite connections to one WAL file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Literal

from gates.access import EXPIRED, UNKNOWN, Verdict
from gates.rules import AccessRule, PersonKind, TimeWindow
from gates.store import Store, UnknownResidentError, connect, transaction

Role = Literal["admin", "gate", "guard", "integration"]
GateKind = Literal["main", "stairwell"]
CameraEventType = Literal["camera_offline", "camera_online"]

KEY_PREFIX = "gw_"
_KEY_BYTES = 32
_SHOWN_PREFIX = 10  # of the key, kept in clear so operators can tell keys apart in listings


class ServiceStoreError(Exception):
    """Base of the errors raised on purpose; the message is fit to show an operator."""


class UnknownGateError(ServiceStoreError, KeyError):
    pass


class UnknownKeyError(ServiceStoreError, KeyError):
    pass


@dataclass(frozen=True)
class ThrowRecord:
    """A throw seen by a facade camera (always an alert). `released_at`: when it left the facade
    (UTC); `detail`: the full alert as `gatewatch analyze` prints it."""

    id: int
    at: str
    released_at: str
    camera_id: str
    floor: int
    column: int
    confidence: float
    image_path: str | None
    clip_path: str | None
    detail: dict


class UnknownEventError(ServiceStoreError, KeyError):
    pass


class LastAdminKeyError(ServiceStoreError):
    """Revoking the only admin key would lock every operator out for good."""


@dataclass(frozen=True)
class Gate:
    id: int
    name: str
    building: str | None
    kind: GateKind
    created_at: str


@dataclass(frozen=True)
class ApiKey:
    id: int
    role: Role
    gate_id: int | None
    prefix: str
    created_at: str
    label: str | None = None  # who holds it ("north desk guard"), recorded with what they do


@dataclass(frozen=True)
class Person:
    """A gallery resident with their rule and this model's face ids."""

    id: int
    name: str
    unit: str | None
    created_at: str
    rule: AccessRule
    face_ids: tuple[int, ...]


@dataclass(frozen=True)
class Event:
    id: int
    at: str
    gate_id: int
    decision: str
    reason: str
    resident_id: int | None
    resident_name: str | None
    similarity: float | None
    latency_ms: float
    alert: bool
    has_crop: bool
    camera_id: str | None
    liveness: float | None


@dataclass(frozen=True)
class CameraRecord:
    """A camera going offline (an alert: a gate camera that sees nothing opens for nobody) or
    coming back online."""

    id: int
    at: str
    camera_id: str
    gate_id: int | None
    type: CameraEventType
    reason: str
    alert: bool


@dataclass(frozen=True)
class EventFilter:
    gate_id: int | None = None
    camera_id: str | None = None
    decision: str | None = None
    alert: bool | None = None
    since: datetime | None = None
    until: datetime | None = None


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)


def hash_key(key: str) -> str:
    """Keys are 256 random bits, so a plain sha256 is as good as a slow password hash here."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def utc_text(moment: datetime) -> str:
    """The one text form of instants in the database: sortable, UTC, milliseconds."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_utc(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


_RULE_SELECT = ("SELECT kind, all_gates, schedule, valid_from, valid_until, entries_left, "
                "(SELECT json_group_array(gate_id) FROM allowed_gates a WHERE a.resident_id = r.resident_id) "
                "FROM access_rules r")
_EVENT_SELECT = ("SELECT e.id, e.at, e.gate_id, e.decision, e.reason, e.resident_id, e.resident_name, "
                 "e.similarity, e.latency_ms, e.alert, c.event_id IS NOT NULL, e.camera_id, e.liveness "
                 "FROM events e LEFT JOIN event_crops c ON c.event_id = e.id")


class ServiceStore:
    def __init__(self, path: Path, model_id: str, *, timeout_s: float = 30.0) -> None:
        """`model_id`: whose face ids a Person lists (the gallery's model)."""
        Store(path, timeout_s=timeout_s).close()  # brings the schema up to date, whoever opens first
        self.path = path
        self.model_id = model_id
        self._lock = threading.RLock()
        self._conn = connect(path, timeout_s)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _transaction(self, mode: str = "IMMEDIATE") -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._conn, self._lock, mode)

    def ping(self) -> None:
        with self._lock:
            self._conn.execute("SELECT count(*) FROM gates").fetchone()

    # --- API keys -------------------------------------------------------------------------------

    def create_key(self, role: Role, gate_id: int | None = None, label: str | None = None) -> tuple[ApiKey, str]:
        """The record and the key itself, which is not stored and cannot be shown again."""
        with self._transaction() as conn:
            return _insert_key(conn, role, gate_id, label)

    def ensure_admin_key(self, key: str) -> None:
        """Bootstraps an operator-chosen admin key (idempotent across restarts)."""
        with self._transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO api_keys (role, key_hash, prefix) VALUES ('admin', ?, ?)",
                         (hash_key(key), key[:_SHOWN_PREFIX]))
            role = conn.execute("SELECT role FROM api_keys WHERE key_hash = ?",
                                (hash_key(key),)).fetchone()[0]
        if role != "admin":
            raise ServiceStoreError(f"the configured admin key is already stored with role {role!r}")

    def has_admin_key(self) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM api_keys WHERE role = 'admin'").fetchone() is not None

    def key_for(self, key: str) -> ApiKey | None:
        """The live key record for a presented key, or None (unknown or revoked)."""
        digest = hash_key(key)
        with self._lock:
            row = self._conn.execute("SELECT id, role, gate_id, prefix, created_at, label, key_hash FROM api_keys "
                                     "WHERE key_hash = ?", (digest,)).fetchone()
        if row is None or not hmac.compare_digest(row[6], digest):
            return None
        return ApiKey(*row[:6])

    def list_keys(self) -> list[ApiKey]:
        with self._lock:
            return [ApiKey(*row) for row in self._conn.execute(
                "SELECT id, role, gate_id, prefix, created_at, label FROM api_keys ORDER BY id")]

    def delete_key(self, key_id: int) -> None:
        with self._transaction() as conn:
            row = conn.execute("SELECT role FROM api_keys WHERE id = ?", (key_id,)).fetchone()
            if row is None:
                raise UnknownKeyError(f"no API key with id {key_id}")
            admins = conn.execute("SELECT count(*) FROM api_keys WHERE role = 'admin'").fetchone()[0]
            if row[0] == "admin" and admins == 1:
                raise LastAdminKeyError("this is the only admin key; create another before revoking it")
            conn.execute("DELETE FROM api_keys WHERE id = ?", (key_id,))

    # --- gates ----------------------------------------------------------------------------------

    def create_gate(self, name: str, building: str | None, kind: GateKind) -> tuple[Gate, str]:
        """The gate and its controller's key, made together so that no gate exists without one."""
        name = name.strip()
        if not name:
            raise ValueError("a gate needs a name")
        with self._transaction() as conn:
            row = conn.execute("INSERT INTO gates (name, building, kind) VALUES (?, ?, ?) "
                               "RETURNING id, name, building, kind, created_at",
                               (name, (building or "").strip() or None, kind)).fetchone()
            gate = Gate(*row)
            _, key = _insert_key(conn, "gate", gate.id)
            return gate, key

    def get_gate(self, gate_id: int) -> Gate:
        with self._lock:
            row = self._conn.execute("SELECT id, name, building, kind, created_at FROM gates WHERE id = ?",
                                     (gate_id,)).fetchone()
        if row is None:
            raise UnknownGateError(f"no gate with id {gate_id}")
        return Gate(*row)

    def list_gates(self) -> list[Gate]:
        with self._lock:
            return [Gate(*row) for row in self._conn.execute(
                "SELECT id, name, building, kind, created_at FROM gates ORDER BY id")]

    def delete_gate(self, gate_id: int) -> None:
        """Its keys and its place in residents' allowed gates go with it (which can leave a resident
        allowed nowhere: never more than before)."""
        with self._transaction() as conn:
            if conn.execute("DELETE FROM gates WHERE id = ?", (gate_id,)).rowcount == 0:
                raise UnknownGateError(f"no gate with id {gate_id}")

    # --- residents, visitors, blocked faces -----------------------------------------------------

    def create_person(self, name: str, unit: str | None, rule: AccessRule) -> Person:
        name = name.strip()
        if not name:
            raise ValueError("a resident needs a name")
        with self._transaction() as conn:
            row = conn.execute("INSERT INTO residents (name, unit) VALUES (?, ?) RETURNING id",
                               (name, (unit or "").strip() or None)).fetchone()
            _write_rule(conn, row[0], rule)
            return self._person(conn, row[0])

    def update_person(self, resident_id: int, *, name: str | None = None, unit: str | None = None,
                      clear_unit: bool = False, rule: AccessRule | None = None) -> Person:
        with self._transaction() as conn:
            _require_resident(conn, resident_id)
            if name is not None:
                if not name.strip():
                    raise ValueError("a resident needs a name")
                conn.execute("UPDATE residents SET name = ? WHERE id = ?", (name.strip(), resident_id))
            if unit is not None or clear_unit:
                conn.execute("UPDATE residents SET unit = ? WHERE id = ?",
                             ((unit or "").strip() or None, resident_id))
            if rule is not None:
                _write_rule(conn, resident_id, rule)
            return self._person(conn, resident_id)

    def get_person(self, resident_id: int) -> Person:
        with self._transaction("DEFERRED") as conn:
            _require_resident(conn, resident_id)
            return self._person(conn, resident_id)

    def list_people(self) -> list[Person]:
        with self._transaction("DEFERRED") as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM residents ORDER BY id")]
            return [self._person(conn, resident_id) for resident_id in ids]

    def rule_for(self, resident_id: int) -> AccessRule:
        with self._lock:
            return _read_rule(self._conn, resident_id)

    def _person(self, conn: sqlite3.Connection, resident_id: int) -> Person:
        row = conn.execute("SELECT id, name, unit, created_at FROM residents WHERE id = ?",
                           (resident_id,)).fetchone()
        face_ids = tuple(r[0] for r in conn.execute(
            "SELECT face_id FROM faces WHERE resident_id = ? AND model_id = ? ORDER BY face_id",
            (resident_id, self.model_id)))
        return Person(*row, rule=_read_rule(conn, resident_id), face_ids=face_ids)

    # --- events ---------------------------------------------------------------------------------

    def record_access(self, *, at: datetime, gate_id: int, verdict: Verdict, resident_id: int | None,
                      resident_name: str | None, similarity: float | None, latency_ms: float,
                      crop_jpeg: bytes | None = None, camera_id: str | None = None,
                      liveness: float | None = None) -> tuple[int, Verdict]:
        """Stores the decision and, for an unlocking visitor, spends one entry of their pass, in one
        transaction. Returns the event id and the verdict as stored, which is a deny where the store
        knows better than the caller: the pass's last entry was spent by a concurrent request
        ("expired"), or the person was deleted since they were recognised ("unknown").
        `camera_id`: the camera whose video was decided on (None: a photo sent to the API)."""
        with self._transaction() as conn:
            if resident_id is not None:
                row = conn.execute("SELECT (SELECT entries_left FROM access_rules WHERE resident_id = r.id) "
                                   "FROM residents r WHERE r.id = ?", (resident_id,)).fetchone()
                if row is None:
                    resident_id, verdict = None, UNKNOWN
                elif verdict.unlocks and row[0] is not None:
                    if row[0] == 0:
                        verdict = EXPIRED
                    else:
                        conn.execute("UPDATE access_rules SET entries_left = entries_left - 1 "
                                     "WHERE resident_id = ?", (resident_id,))
            event_id = conn.execute(
                "INSERT INTO events (at, gate_id, decision, reason, resident_id, resident_name, similarity, "
                "latency_ms, alert, camera_id, liveness) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (utc_text(at), gate_id, verdict.decision, verdict.reason, resident_id, resident_name,
                 similarity, latency_ms, int(verdict.alert), camera_id, liveness)).lastrowid
            if crop_jpeg is not None:
                conn.execute("INSERT INTO event_crops (event_id, resident_id, jpeg) VALUES (?, ?, ?)",
                             (event_id, resident_id, crop_jpeg))
            return event_id, verdict

    def list_events(self, where: EventFilter, *, limit: int, before_id: int | None = None) -> list[Event]:
        """Newest first; `before_id` continues a listing below the last id seen."""
        clauses, params = [], []
        for clause, value in (("e.gate_id = ?", where.gate_id), ("e.camera_id = ?", where.camera_id),
                              ("e.decision = ?", where.decision),
                              ("e.alert = ?", None if where.alert is None else int(where.alert)),
                              ("e.at >= ?", where.since and utc_text(where.since)),
                              ("e.at < ?", where.until and utc_text(where.until)),
                              ("e.id < ?", before_id)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        where_sql = "WHERE " + " AND ".join(clauses) if clauses else ""
        sql = f"{_EVENT_SELECT} {where_sql} ORDER BY e.id DESC LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, (*params, limit)).fetchall()
        return [Event(*row[:9], alert=bool(row[9]), has_crop=bool(row[10]), camera_id=row[11], liveness=row[12])
                for row in rows]

    def event_crop(self, event_id: int) -> bytes:
        with self._lock:
            row = self._conn.execute("SELECT jpeg FROM event_crops WHERE event_id = ?",
                                     (event_id,)).fetchone()
        if row is None:
            raise UnknownEventError(f"event {event_id} has no stored face crop")
        return row[0]

    def count_events(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM events").fetchone()[0]

    # --- cameras --------------------------------------------------------------------------------

    def record_camera_event(self, *, at: datetime, camera_id: str, gate_id: int | None, type: CameraEventType,
                            reason: str) -> CameraRecord:
        with self._transaction() as conn:
            row = conn.execute("INSERT INTO camera_events (at, camera_id, gate_id, type, reason, alert) "
                               "VALUES (?, ?, ?, ?, ?, ?) RETURNING id, at, camera_id, gate_id, type, reason, alert",
                               (utc_text(at), camera_id, gate_id, type, reason,
                                int(type == "camera_offline"))).fetchone()
        return CameraRecord(*row[:6], alert=bool(row[6]))

    def list_camera_events(self, *, camera_id: str | None, limit: int,
                           before_id: int | None = None) -> list[CameraRecord]:
        """Newest first; `before_id` continues a listing below the last id seen."""
        sql = ("SELECT id, at, camera_id, gate_id, type, reason, alert FROM camera_events "
               "WHERE (? IS NULL OR camera_id = ?) AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?")
        with self._lock:
            rows = self._conn.execute(sql, (camera_id, camera_id, before_id, before_id, limit)).fetchall()
        return [CameraRecord(*row[:6], alert=bool(row[6])) for row in rows]


    # --- throws ---------------------------------------------------------------------------------

    def record_throw(self, *, at: datetime, released_at: datetime, camera_id: str, floor: int, column: int,
                     confidence: float, image_path: str | None, clip_path: str | None, detail: dict) -> ThrowRecord:
        with self._transaction() as conn:
            row = conn.execute(
                "INSERT INTO throw_events (at, released_at, camera_id, floor, facade_column, confidence, image_path, "
                f"clip_path, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_THROW_COLUMNS}",
                (utc_text(at), utc_text(released_at), camera_id, floor, column, confidence, image_path, clip_path,
                 json.dumps(detail))).fetchone()
        return _throw(row)

    def list_throws(self, *, camera_id: str | None, limit: int, before_id: int | None = None) -> list[ThrowRecord]:
        """Newest first; `before_id` continues a listing below the last id seen."""
        sql = (f"SELECT {_THROW_COLUMNS} FROM throw_events WHERE (? IS NULL OR camera_id = ?) "
               "AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?")
        with self._lock:
            rows = self._conn.execute(sql, (camera_id, camera_id, before_id, before_id, limit)).fetchall()
        return [_throw(row) for row in rows]

    def get_throw(self, throw_id: int) -> ThrowRecord:
        with self._lock:
            row = self._conn.execute(f"SELECT {_THROW_COLUMNS} FROM throw_events WHERE id = ?",
                                     (throw_id,)).fetchone()
        if row is None:
            raise UnknownEventError(f"no throw with id {throw_id}")
        return _throw(row)


_THROW_COLUMNS = "id, at, released_at, camera_id, floor, facade_column, confidence, image_path, clip_path, detail"


def _throw(row: tuple) -> ThrowRecord:
    return ThrowRecord(*row[:9], detail=json.loads(row[9]))


def _insert_key(conn: sqlite3.Connection, role: Role, gate_id: int | None,
                label: str | None = None) -> tuple[ApiKey, str]:
    key = new_key()
    row = conn.execute("INSERT INTO api_keys (role, gate_id, key_hash, prefix, label) VALUES (?, ?, ?, ?, ?) "
                       "RETURNING id, role, gate_id, prefix, created_at, label",
                       (role, gate_id, hash_key(key), key[:_SHOWN_PREFIX], label)).fetchone()
    return ApiKey(*row), key


def _require_resident(conn: sqlite3.Connection, resident_id: int) -> None:
    if conn.execute("SELECT 1 FROM residents WHERE id = ?", (resident_id,)).fetchone() is None:
        raise UnknownResidentError(resident_id)


def _write_rule(conn: sqlite3.Connection, resident_id: int, rule: AccessRule) -> None:
    if rule.gates:
        known = {r[0] for r in conn.execute(
            "SELECT id FROM gates WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(rule.gates)),))}
        if missing := sorted(rule.gates - known):
            raise UnknownGateError(f"no gate with id {', '.join(map(str, missing))}")
    schedule = json.dumps([{"days": sorted(w.days), "start": w.start.isoformat("minutes"),
                            "end": w.end.isoformat("minutes")} for w in rule.schedule])
    conn.execute("DELETE FROM access_rules WHERE resident_id = ?", (resident_id,))  # and its allowed_gates
    conn.execute("INSERT INTO access_rules (resident_id, kind, all_gates, schedule, valid_from, "
                 "valid_until, entries_left) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (resident_id, rule.kind, int(rule.gates is None), schedule,
                  rule.valid_from and utc_text(rule.valid_from),
                  rule.valid_until and utc_text(rule.valid_until), rule.entries_left))
    conn.executemany("INSERT INTO allowed_gates (resident_id, gate_id) VALUES (?, ?)",
                     [(resident_id, g) for g in sorted(rule.gates or ())])


def _read_rule(conn: sqlite3.Connection, resident_id: int) -> AccessRule:
    row = conn.execute(f"{_RULE_SELECT} WHERE resident_id = ?", (resident_id,)).fetchone()
    if row is None:
        return AccessRule()  # enrolled outside the service (CLI): a resident of every gate
    kind, all_gates, schedule, valid_from, valid_until, entries_left, gates = row
    kind_: PersonKind = kind
    windows = tuple(TimeWindow(frozenset(w["days"]), time.fromisoformat(w["start"]),
                               time.fromisoformat(w["end"])) for w in json.loads(schedule))
    return AccessRule(kind_, None if all_gates else frozenset(json.loads(gates)), windows,
                      _parse_utc(valid_from), _parse_utc(valid_until), entries_left)

