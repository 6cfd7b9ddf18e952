"""Alerts: the one thing every source raises for the guard room, and its lifecycle.

Throws, spoof attempts, blocklisted faces, cameras going dark, tailgating and the compound's other
systems (smoke detectors, water sensors, an operator's phone call) all become the same `Alert`,
stored in one table and moved through `new -> acknowledged -> resolved`, each step recording who
(key id and label), when and a note. Repeats of one incident while it is open (a flapping camera,
a photo held up again and again at one gate) update that alert's count and last-seen time
instead of raising fifty.

Every change is also a row of `alert_changes`, with the alert as it stood after it; its `seq` is a
durable sequence, so a guard screen, the MQTT bridge or a webhook that was away can ask for exactly
what it missed, in order, even across a restart. Listeners registered with `subscribe` are told of
each change after its commit, on the writer's thread.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from gates.store import Store, connect, transaction

log = logging.getLogger(__name__)

Severity = Literal["critical", "high", "medium", "low"]
Status = Literal["new", "acknowledged", "resolved"]
SourceType = Literal["camera", "gate", "sensor", "operator"]
ChangeType = Literal["created", "updated", "acknowledged", "resolved"]
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low")

# Kinds the system raises itself, with their default severity; other systems bring their own kinds.
DEFAULT_SEVERITY: dict[str, Severity] = {
    "throw": "critical",
    "spoof": "high",
    "blocklisted": "high",
    "tailgating": "high",
    "unauthorised_entry": "high",
    "camera_offline": "medium",
}
EXTERNAL_SEVERITY: Severity = "medium"
KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]{1,39}$")


class AlertError(Exception):
    """Raised on purpose; the message is fit to show an operator."""


class UnknownAlertError(AlertError, KeyError):
    pass


class AlertStateError(AlertError, ValueError):
    """A lifecycle step out of order (resolving twice, acknowledging a resolved alert)."""


@dataclass(frozen=True)
class Actor:
    """Who acknowledged or resolved: their key's id and label."""

    key_id: int
    label: str | None


@dataclass(frozen=True)
class Source:
    type: SourceType
    id: str


@dataclass(frozen=True)
class Alert:
    id: int
    kind: str
    severity: Severity
    status: Status
    source: Source
    message: str
    count: int
    first_at: str
    last_at: str
    access_event_id: int | None
    camera_event_id: int | None
    throw_id: int | None
    has_image: bool
    acked_at: str | None = None
    acked_by: Actor | None = None
    ack_note: str | None = None
    resolved_at: str | None = None
    resolved_by: Actor | None = None
    resolve_note: str | None = None

    def seconds_to(self, moment: str | None) -> float | None:
        """From the first sighting to `moment` (acked_at, resolved_at): the command room's response time."""
        if moment is None:
            return None
        return (_parse(moment) - _parse(self.first_at)).total_seconds()

    def overdue(self, now: datetime, after_s: float) -> bool:
        return self.status != "resolved" and (now - _parse(self.first_at)).total_seconds() > after_s

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AlertChange:
    """One change of one alert; `alert` is how it stood after the change, `before` how it stood
    after the previous change (None for a new alert)."""

    seq: int
    type: ChangeType
    at: str
    alert: Alert
    before: Alert | None = None


@dataclass(frozen=True)
class NewAlert:
    """What a source raises. `incident`: repeats with the same key update the open alert."""

    kind: str
    source: Source
    message: str
    severity: Severity | None = None
    incident: str | None = None
    access_event_id: int | None = None
    camera_event_id: int | None = None
    throw_id: int | None = None
    image_jpeg: bytes | None = None

    def __post_init__(self) -> None:
        if not KIND_PATTERN.match(self.kind):
            raise AlertError(f"alert kind {self.kind!r}: use 2-40 lower-case letters, digits and _")
        if self.severity is not None and self.severity not in SEVERITIES:
            raise AlertError(f"severity {self.severity!r}: use one of {', '.join(SEVERITIES)}")
        if not self.message.strip():
            raise AlertError("an alert needs a message")


@dataclass(frozen=True)
class AlertFilter:
    kind: str | None = None
    status: Status | None = None
    severity: Severity | None = None
    source_type: SourceType | None = None
    source_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


Listener = Callable[[AlertChange], None]

_COLUMNS = ("id, kind, severity, status, source_type, source_id, message, count, first_at, last_at, "
            "access_event_id, camera_event_id, throw_id, image IS NOT NULL, acked_at, acked_by, acked_by_label, "
            "ack_note, resolved_at, resolved_by, resolved_by_label, resolve_note")


class AlertStore:
    """Alerts in the service's SQLite file (schema version 6 of gates/store.py). One connection
    under a lock, like the other stores; writes commit before listeners hear of them."""

    def __init__(self, path: Path, *, timeout_s: float = 30.0) -> None:
        Store(path, timeout_s=timeout_s).close()  # brings the schema up to date
        self._lock = threading.RLock()
        self._conn = connect(path, timeout_s)
        self._listeners: list[Listener] = []

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._conn, self._lock)

    def raise_alert(self, new: NewAlert, at: datetime | None = None) -> AlertChange:
        """Creates the alert, or updates the open alert of the same incident."""
        at_text = _utc_text(at or datetime.now(UTC))
        with self._transaction() as conn:
            row = None
            if new.incident is not None:
                row = conn.execute(f"SELECT {_COLUMNS} FROM alerts WHERE incident = ? AND status != 'resolved'",
                                   (new.incident,)).fetchone()
            if row is None:
                alert_id = conn.execute(
                    "INSERT INTO alerts (kind, severity, status, source_type, source_id, message, incident, "
                    "first_at, last_at, access_event_id, camera_event_id, throw_id, image) "
                    "VALUES (?, ?, 'new', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (new.kind, new.severity or DEFAULT_SEVERITY.get(new.kind, EXTERNAL_SEVERITY), new.source.type,
                     new.source.id, new.message.strip()[:2000], new.incident, at_text, at_text, new.access_event_id,
                     new.camera_event_id, new.throw_id, new.image_jpeg)).lastrowid
                change = _record(conn, alert_id, "created", at_text, None)
            else:
                before = _alert(row)
                conn.execute(
                    "UPDATE alerts SET count = count + 1, last_at = ?, message = ?, "
                    "access_event_id = coalesce(?, access_event_id), camera_event_id = coalesce(?, camera_event_id), "
                    "throw_id = coalesce(?, throw_id), image = coalesce(?, image) WHERE id = ?",
                    (at_text, new.message.strip()[:2000], new.access_event_id, new.camera_event_id, new.throw_id,
                     new.image_jpeg, before.id))
                change = _record(conn, before.id, "updated", at_text, before)
        self._tell(change)
        return change

    def note(self, incident: str, message: str, at: datetime | None = None) -> AlertChange | None:
        """Updates the open alert of an incident without counting a repeat (a camera back online)."""
        at_text = _utc_text(at or datetime.now(UTC))
        with self._transaction() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM alerts WHERE incident = ? AND status != 'resolved'",
                               (incident,)).fetchone()
            if row is None:
                return None
            before = _alert(row)
            conn.execute("UPDATE alerts SET message = ? WHERE id = ?", (message[:2000], before.id))
            change = _record(conn, before.id, "updated", at_text, before)
        self._tell(change)
        return change

    def acknowledge(self, alert_id: int, actor: Actor, note: str | None = None) -> AlertChange:
        return self._step(alert_id, "acknowledged", actor, note)

    def resolve(self, alert_id: int, actor: Actor, note: str) -> AlertChange:
        return self._step(alert_id, "resolved", actor, note)

    def _step(self, alert_id: int, step: Literal["acknowledged", "resolved"], actor: Actor,
              note: str | None) -> AlertChange:
        at_text = _utc_text(datetime.now(UTC))
        with self._transaction() as conn:
            before = self._get(conn, alert_id)
            if before.status == "resolved":
                raise AlertStateError(f"alert {alert_id} is already resolved")
            if step == "acknowledged":
                if before.status == "acknowledged":
                    raise AlertStateError(f"alert {alert_id} is already acknowledged")
                conn.execute("UPDATE alerts SET status = 'acknowledged', acked_at = ?, acked_by = ?, "
                             "acked_by_label = ?, ack_note = ? WHERE id = ?",
                             (at_text, actor.key_id, actor.label, note, alert_id))
            else:
                # Resolving an alert nobody acknowledged acknowledges it at the same moment.
                conn.execute("UPDATE alerts SET status = 'resolved', resolved_at = ?, resolved_by = ?, "
                             "resolved_by_label = ?, resolve_note = ?, acked_at = coalesce(acked_at, ?), "
                             "acked_by = coalesce(acked_by, ?), acked_by_label = coalesce(acked_by_label, ?) "
                             "WHERE id = ?", (at_text, actor.key_id, actor.label, note, at_text, actor.key_id,
                                              actor.label, alert_id))
            change = _record(conn, alert_id, step, at_text, before)
        self._tell(change)
        return change

    def get(self, alert_id: int) -> Alert:
        with self._lock:
            return self._get(self._conn, alert_id)

    def image(self, alert_id: int) -> bytes:
        with self._lock:
            row = self._conn.execute("SELECT image FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        if row is None or row[0] is None:
            raise UnknownAlertError(f"alert {alert_id} has no image")
        return row[0]

    def list(self, where: AlertFilter, *, limit: int, before_id: int | None = None) -> list[Alert]:
        """Newest first; `before_id` continues a listing below the last id seen."""
        clauses, params = [], []
        for clause, value in (("kind = ?", where.kind), ("status = ?", where.status),
                              ("severity = ?", where.severity), ("source_type = ?", where.source_type),
                              ("source_id = ?", where.source_id),
                              ("last_at >= ?", where.since and _utc_text(where.since)),
                              ("first_at < ?", where.until and _utc_text(where.until)), ("id < ?", before_id)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        sql = (f"SELECT {_COLUMNS} FROM alerts {'WHERE ' + ' AND '.join(clauses) if clauses else ''} "
               "ORDER BY id DESC LIMIT ?")
        with self._lock:
            return [_alert(row) for row in self._conn.execute(sql, (*params, limit)).fetchall()]

    def open_alerts(self) -> list[Alert]:
        with self._lock:
            return [_alert(row) for row in self._conn.execute(
                f"SELECT {_COLUMNS} FROM alerts WHERE status != 'resolved' ORDER BY id")]

    def changes_after(self, seq: int, limit: int = 500) -> list[AlertChange]:
        """The changes after `seq`, oldest first, each with the alert before it where there was one."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT c.seq, c.type, c.at, c.alert, (SELECT p.alert FROM alert_changes p WHERE "
                "p.alert_id = c.alert_id AND p.seq < c.seq ORDER BY p.seq DESC LIMIT 1) "
                "FROM alert_changes c WHERE c.seq > ? ORDER BY c.seq LIMIT ?", (seq, limit)).fetchall()
        return [AlertChange(s, t, at, _from_json(a), None if b is None else _from_json(b)) for s, t, at, a, b in rows]

    def last_seq(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT coalesce(max(seq), 0) FROM alert_changes").fetchone()[0]

    def alert_ids_for(self, column: Literal["access_event_id", "camera_event_id", "throw_id"],
                      ids: list[int]) -> dict[int, int]:
        """event id -> the alert that event raised or updated (for linking the older lists)."""
        if not ids:
            return {}
        # Every change keeps the alert as it stood, so an event that updated an alert (a repeat) is
        # found in the change it made even after later repeats moved the alert's own link on.
        with self._lock:
            rows = self._conn.execute(f"SELECT json_extract(alert, '$.{column}') AS event, max(alert_id) "
                                      "FROM alert_changes WHERE event IN (SELECT value FROM json_each(?)) GROUP BY 1",
                                      (json.dumps(ids),))
            return dict(rows.fetchall())

    def delete_older_than(self, cutoff: datetime) -> list[Alert]:
        """Resolved alerts last seen before `cutoff`, with their changes and snapshots; returns them
        (their throws' evidence files are the caller's to delete)."""
        with self._transaction() as conn:
            gone = [_alert(row) for row in conn.execute(
                f"SELECT {_COLUMNS} FROM alerts WHERE status = 'resolved' AND last_at < ?", (_utc_text(cutoff),))]
            ids = json.dumps([a.id for a in gone])
            conn.execute("DELETE FROM alert_changes WHERE alert_id IN (SELECT value FROM json_each(?))", (ids,))
            conn.execute("DELETE FROM alerts WHERE id IN (SELECT value FROM json_each(?))", (ids,))
        return gone

    def _get(self, conn: sqlite3.Connection, alert_id: int) -> Alert:
        row = conn.execute(f"SELECT {_COLUMNS} FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        if row is None:
            raise UnknownAlertError(f"no alert with id {alert_id}")
        return _alert(row)

    def _tell(self, change: AlertChange) -> None:
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("an alert listener failed on change %d", change.seq)


def _record(conn: sqlite3.Connection, alert_id: int, type: ChangeType, at: str, before: Alert | None) -> AlertChange:
    after = _alert(conn.execute(f"SELECT {_COLUMNS} FROM alerts WHERE id = ?", (alert_id,)).fetchone())
    seq = conn.execute("INSERT INTO alert_changes (alert_id, type, at, alert) VALUES (?, ?, ?, ?)",
                       (alert_id, type, at, json.dumps(after.to_json()))).lastrowid
    return AlertChange(seq, type, at, after, before)


def _alert(row: tuple) -> Alert:
    (id_, kind, severity, status, source_type, source_id, message, count, first_at, last_at, access_event_id,
     camera_event_id, throw_id, has_image, acked_at, acked_by, acked_label, ack_note, resolved_at, resolved_by,
     resolved_label, resolve_note) = row
    return Alert(id_, kind, severity, status, Source(source_type, source_id), message, count, first_at, last_at,
                 access_event_id, camera_event_id, throw_id, bool(has_image), acked_at,
                 None if acked_by is None else Actor(acked_by, acked_label), ack_note, resolved_at,
                 None if resolved_by is None else Actor(resolved_by, resolved_label), resolve_note)


def _from_json(text: str) -> Alert:
    data = json.loads(text)
    actor = {k: None if data[k] is None else Actor(**data[k]) for k in ("acked_by", "resolved_by")}
    return Alert(**{**data, "source": Source(**data["source"]), **actor})


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def access_alert(*, event_id: int, reason: str, gate_id: int, camera_id: str | None,
                 resident_name: str | None) -> NewAlert | None:
    """The alert an access decision raises, if any: a presentation attack or a blocklisted face.
    Repeats at one camera (or one gate's photo endpoint) while the alert is open are one incident."""
    who = f" ({resident_name})" if resident_name else ""
    if reason == "spoof":
        kind, message = "spoof", f"a photo or screen held up to gate {gate_id}{who}"
    elif reason == "blocked":
        kind, message = "blocklisted", f"blocklisted face at gate {gate_id}{who}"
    else:
        return None
    source = Source("camera", camera_id) if camera_id else Source("gate", str(gate_id))
    return NewAlert(kind, source, message, incident=f"{kind}:{source.type}:{source.id}", access_event_id=event_id)


def camera_offline_alert(camera_id: str, reason: str, camera_event_id: int) -> NewAlert:
    """A camera going dark; a flapping camera is one alert whose count goes up."""
    return NewAlert("camera_offline", Source("camera", camera_id), f"camera {camera_id} went dark: {reason}",
                    incident=f"camera_offline:{camera_id}", camera_event_id=camera_event_id)
