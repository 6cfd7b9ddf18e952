"""The MQTT outbox: every message the service means to publish, kept in the service's SQLite file
(table `mqtt_outbox`, schema version 6 of gates/store.py) until the broker has acknowledged it.

A message is written here first, in one transaction, and deleted only after its PUBACK; so a broker
that is down, or a service that restarts meanwhile, costs a delay, never a message. Oldest first:
`id` is AUTOINCREMENT, never reused, so ids give the order the messages were put in.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gates.store import Store, connect, transaction


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    topic: str
    payload: str
    retain: bool
    created_at: str


class Outbox:
    """One connection under a lock, like the other stores."""

    def __init__(self, path: Path, *, timeout_s: float = 30.0) -> None:
        Store(path, timeout_s=timeout_s).close()  # brings the schema up to date
        self._lock = threading.RLock()
        self._conn = connect(path, timeout_s)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def put(self, topic: str, payload: str, retain: bool = False) -> int:
        """Stores one message; returns its id."""
        with transaction(self._conn, self._lock) as conn:
            return conn.execute("INSERT INTO mqtt_outbox (topic, payload, retain) VALUES (?, ?, ?)",
                                (topic, payload, int(bool(retain)))).lastrowid

    def peek(self, limit: int = 100, *, after_id: int = 0) -> list[OutboxMessage]:
        """The oldest `limit` messages (with an id above `after_id`), oldest first."""
        with self._lock:
            rows = self._conn.execute("SELECT id, topic, payload, retain, created_at FROM mqtt_outbox "
                                      "WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)).fetchall()
        return [OutboxMessage(id_, topic, payload, bool(retain), created)
                for id_, topic, payload, retain, created in rows]

    def delete(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if not ids:
            return
        with transaction(self._conn, self._lock) as conn:
            conn.executemany("DELETE FROM mqtt_outbox WHERE id = ?", [(i,) for i in ids])

    def count(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM mqtt_outbox").fetchone()[0]
