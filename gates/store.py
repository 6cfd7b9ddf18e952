"""SQLite storage of residents and their face templates: the gallery's source of truth.

Everything the gate decides is derived from this file; the FAISS index beside it is a cache that
can always be rebuilt from here, so every write is one transaction and nothing is half-stored.

Threading: one connection, shared by all threads of a process and guarded by a lock. SQLite runs
one writer at a time anyway, the gallery's reads are tiny next to its FAISS search, and a single
connection keeps transactions and close() simple. Other processes (web workers, an admin tool) may
open the same file: WAL lets readers proceed while one writes, busy_timeout makes writers queue.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_NOW = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
_NEW_TOKEN = "lower(hex(randomblob(8)))"
_RESIDENT_SELECT = "SELECT id, name, unit, created_at FROM residents"

# One tuple of statements per schema version; PRAGMA user_version counts those applied. A later
# version appends a tuple (ALTER TABLE ..., data fixes) and never edits an earlier one.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        f"""CREATE TABLE residents (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL CHECK (length(trim(name)) > 0),
            unit TEXT,
            created_at TEXT NOT NULL DEFAULT {_NOW})""",
        # One row per embedding model: its dimension, and the fingerprint of its templates.
        f"""CREATE TABLE models (
            model_id TEXT PRIMARY KEY,
            dim INTEGER NOT NULL CHECK (dim > 0),
            generation INTEGER NOT NULL DEFAULT 0,
            token TEXT NOT NULL DEFAULT ({_NEW_TOKEN}))""",
        # AUTOINCREMENT: face_ids are the FAISS ids, and a reused id would let a stale index
        # entry stand for somebody else's face.
        f"""CREATE TABLE faces (
            face_id INTEGER PRIMARY KEY AUTOINCREMENT,
            resident_id INTEGER NOT NULL REFERENCES residents(id) ON DELETE CASCADE,
            model_id TEXT NOT NULL REFERENCES models(model_id),
            embedding BLOB NOT NULL,
            quality REAL,
            source TEXT,
            created_at TEXT NOT NULL DEFAULT {_NOW})""",
        "CREATE INDEX faces_by_model ON faces(model_id, face_id)",
        "CREATE INDEX faces_by_resident ON faces(resident_id)",
        "CREATE INDEX residents_by_name ON residents(name)",
        """CREATE TRIGGER faces_dim BEFORE INSERT ON faces
           WHEN length(NEW.embedding) != 4 * (SELECT dim FROM models WHERE model_id = NEW.model_id)
           BEGIN SELECT RAISE(ABORT, 'embedding size does not match the model dimension'); END""",
        # Indexes hold copies of the embeddings keyed by face_id: a row changed in place would
        # silently disagree with them. Templates are replaced by delete + insert instead.
        """CREATE TRIGGER faces_immutable BEFORE UPDATE ON faces
           BEGIN SELECT RAISE(ABORT, 'face templates are immutable: delete and add instead'); END""",
        # The fingerprint moves in the same transaction as the change, whichever code (or a cascade
        # from residents) made it, so no writer can forget to bump it.
        f"""CREATE TRIGGER faces_inserted AFTER INSERT ON faces BEGIN
            UPDATE models SET generation = generation + 1, token = {_NEW_TOKEN}
            WHERE model_id = NEW.model_id; END""",
        f"""CREATE TRIGGER faces_deleted AFTER DELETE ON faces BEGIN
            UPDATE models SET generation = generation + 1, token = {_NEW_TOKEN}
            WHERE model_id = OLD.model_id; END""",
    ),
    # Version 2: the gate service (gates/service_store.py). Its tables live here, beside the
    # residents, so that deleting a resident takes their access rules and retained face crops in
    # the same statement (ON DELETE CASCADE) instead of a second file that a crash could leave behind.
    (
        f"""CREATE TABLE gates (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL CHECK (length(trim(name)) > 0),
            building TEXT,
            kind TEXT NOT NULL CHECK (kind IN ('main', 'stairwell')),
            created_at TEXT NOT NULL DEFAULT {_NOW})""",
        # Only the sha256 of a key is kept; a gate key dies with its gate.
        f"""CREATE TABLE api_keys (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            role TEXT NOT NULL CHECK (role IN ('admin', 'gate', 'guard')),
            gate_id INTEGER REFERENCES gates(id) ON DELETE CASCADE,
            key_hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            created_at TEXT NOT NULL DEFAULT {_NOW},
            CHECK ((role = 'gate') = (gate_id IS NOT NULL)))""",
        # A resident without a row here (enrolled by the CLI) is a resident of every gate.
        """CREATE TABLE access_rules (
            resident_id INTEGER PRIMARY KEY REFERENCES residents(id) ON DELETE CASCADE,
            kind TEXT NOT NULL CHECK (kind IN ('resident', 'visitor', 'blocked')),
            all_gates INTEGER NOT NULL CHECK (all_gates IN (0, 1)),
            schedule TEXT NOT NULL DEFAULT '[]',
            valid_from TEXT,
            valid_until TEXT,
            entries_left INTEGER CHECK (entries_left >= 0))""",
        """CREATE TABLE allowed_gates (
            resident_id INTEGER NOT NULL REFERENCES access_rules(resident_id) ON DELETE CASCADE,
            gate_id INTEGER NOT NULL REFERENCES gates(id) ON DELETE CASCADE,
            PRIMARY KEY (resident_id, gate_id)) WITHOUT ROWID""",
        "CREATE INDEX allowed_gates_by_gate ON allowed_gates(gate_id)",
        # The record outlives gates and residents: no key to gates, and a deleted resident's events
        # keep the name they were decided under.
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            gate_id INTEGER NOT NULL,
            decision TEXT NOT NULL CHECK (decision IN ('unlock', 'deny')),
            reason TEXT NOT NULL,
            resident_id INTEGER REFERENCES residents(id) ON DELETE SET NULL,
            resident_name TEXT,
            similarity REAL,
            latency_ms REAL NOT NULL,
            alert INTEGER NOT NULL CHECK (alert IN (0, 1)))""",
        "CREATE INDEX events_by_gate ON events(gate_id, id)",
        "CREATE INDEX events_by_resident ON events(resident_id)",
        # Face crops are personal data: they go with the resident they show.
        """CREATE TABLE event_crops (
            event_id INTEGER PRIMARY KEY REFERENCES events(id) ON DELETE CASCADE,
            resident_id INTEGER REFERENCES residents(id) ON DELETE CASCADE,
            jpeg BLOB NOT NULL)""",
        "CREATE INDEX event_crops_by_resident ON event_crops(resident_id)",
    ),
    # Version 3: live cameras. A decision made on a camera's video names the camera (NULL: a photo
    # sent to the access endpoint) and its liveness score; a camera going offline or coming back is
    # recorded beside the decisions, for guards, and outlives the camera's configuration.
    (
        "ALTER TABLE events ADD COLUMN camera_id TEXT",
        "ALTER TABLE events ADD COLUMN liveness REAL",
        f"""CREATE TABLE camera_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL DEFAULT {_NOW},
            camera_id TEXT NOT NULL,
            gate_id INTEGER,
            type TEXT NOT NULL CHECK (type IN ('camera_offline', 'camera_online')),
            reason TEXT NOT NULL,
            alert INTEGER NOT NULL CHECK (alert IN (0, 1)))""",
        "CREATE INDEX camera_events_by_camera ON camera_events(camera_id, id)",
    ),
    # Version 4: throws seen by facade cameras, each an alert. Floor and column are columns of
    # their own (guards look up a flat); the rest of the alert is kept as its JSON; the evidence
    # files stay on disk beside the database and are named here.
    (
        """CREATE TABLE throw_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            released_at TEXT NOT NULL,
            camera_id TEXT NOT NULL,
            floor INTEGER NOT NULL,
            facade_column INTEGER NOT NULL,
            confidence REAL NOT NULL,
            image_path TEXT,
            clip_path TEXT,
            detail TEXT NOT NULL)""",
        "CREATE INDEX throw_events_by_camera ON throw_events(camera_id, id)",
    ),
    # Version 5: where a template came from. `note`: the weaknesses of its photo, or the problems an
    # operator overrode to enrol it (the quality is on record, not forgotten). `learned_from`: the
    # access event of the certain pass a gate camera learned it from (NULL: enrolled by an
    # operator), so that what the gate learned can be listed and undone per resident.
    (
        "ALTER TABLE faces ADD COLUMN note TEXT",
        "ALTER TABLE faces ADD COLUMN learned_from INTEGER",
        "CREATE INDEX faces_learned ON faces(resident_id, learned_from) WHERE learned_from IS NOT NULL",
    ),
    # Version 6: the guard room (gates/alerts.py). Keys get a label (who acknowledged) and the role
    # `integration` (other systems raising alerts), which needs the table rebuilt for its CHECK.
    # An alert is one row; each change of it is a row of alert_changes, whose seq is the durable
    # sequence a guard screen resumes from. `incident` keys repeats of one open incident onto one
    # alert. The outbox holds what is to be published to MQTT until the broker has it.
    (
        f"""CREATE TABLE api_keys_v6 (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            role TEXT NOT NULL CHECK (role IN ('admin', 'gate', 'guard', 'integration')),
            gate_id INTEGER REFERENCES gates(id) ON DELETE CASCADE,
            key_hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            created_at TEXT NOT NULL DEFAULT {_NOW},
            label TEXT,
            CHECK ((role = 'gate') = (gate_id IS NOT NULL)))""",
        "INSERT INTO api_keys_v6 (id, role, gate_id, key_hash, prefix, created_at) "
        "SELECT id, role, gate_id, key_hash, prefix, created_at FROM api_keys",
        "DROP TABLE api_keys",
        "ALTER TABLE api_keys_v6 RENAME TO api_keys",
        """CREATE TABLE alerts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            severity TEXT NOT NULL CHECK (severity IN ('critical', 'high', 'medium', 'low')),
            status TEXT NOT NULL CHECK (status IN ('new', 'acknowledged', 'resolved')),
            source_type TEXT NOT NULL CHECK (source_type IN ('camera', 'gate', 'sensor', 'operator')),
            source_id TEXT NOT NULL,
            message TEXT NOT NULL,
            incident TEXT,
            count INTEGER NOT NULL DEFAULT 1,
            first_at TEXT NOT NULL,
            last_at TEXT NOT NULL,
            access_event_id INTEGER,
            camera_event_id INTEGER,
            throw_id INTEGER,
            image BLOB,
            acked_at TEXT, acked_by INTEGER, acked_by_label TEXT, ack_note TEXT,
            resolved_at TEXT, resolved_by INTEGER, resolved_by_label TEXT, resolve_note TEXT)""",
        "CREATE UNIQUE INDEX alerts_open_incident ON alerts(incident) WHERE status != 'resolved'",
        "CREATE INDEX alerts_by_kind ON alerts(kind, id)",
        "CREATE INDEX alerts_by_access_event ON alerts(access_event_id) WHERE access_event_id IS NOT NULL",
        "CREATE INDEX alerts_by_camera_event ON alerts(camera_event_id) WHERE camera_event_id IS NOT NULL",
        "CREATE INDEX alerts_by_throw ON alerts(throw_id) WHERE throw_id IS NOT NULL",
        """CREATE TABLE alert_changes (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            alert_id INTEGER NOT NULL,
            type TEXT NOT NULL CHECK (type IN ('created', 'updated', 'acknowledged', 'resolved')),
            at TEXT NOT NULL,
            alert TEXT NOT NULL)""",
        f"""CREATE TABLE mqtt_outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            topic TEXT NOT NULL,
            payload TEXT NOT NULL,
            retain INTEGER NOT NULL CHECK (retain IN (0, 1)),
            created_at TEXT NOT NULL DEFAULT {_NOW})""",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


class GalleryError(Exception):
    """Base of the errors the gallery raises on purpose."""


class UnknownResidentError(GalleryError, KeyError):
    pass


class UnknownFaceError(GalleryError, KeyError):
    """No template with that face_id for this gallery's model (another model's faces are unseen)."""


class AmbiguousNameError(GalleryError, LookupError):
    """Several residents share the name; acting on one of them could enrol a face to the wrong person."""


class DimensionMismatchError(GalleryError, ValueError):
    pass


class InvalidEmbeddingError(GalleryError, ValueError):
    pass


@dataclass(frozen=True)
class Resident:
    id: int
    name: str
    unit: str | None
    created_at: str


@dataclass(frozen=True)
class FaceTemplate:
    face_id: int
    resident_id: int
    model_id: str
    quality: float | None
    source: str | None
    created_at: str
    note: str | None = None
    learned_from: int | None = None  # the access event a gate camera learned it from

    @property
    def learned(self) -> bool:
        return self.learned_from is not None


@dataclass(frozen=True)
class ModelState:
    """The fingerprint of one model's templates, which an index must match to be trusted.

    `token` changes with every insert or delete of the model's templates. It is random rather than
    a counter so that a database restored from a backup and then edited can never line up with an
    index built from the lost future; `generation` counts changes, for logs.
    """

    model_id: str
    dim: int
    generation: int
    token: str


@dataclass(frozen=True)
class Change:
    """What one committed write did to a model's templates, for its index to follow.

    The index may apply `face_ids` incrementally only if it stood at `before`; otherwise some other
    connection wrote in between and it must rebuild.
    """

    face_ids: list[int]
    before: ModelState
    after: ModelState




def connect(path: Path, timeout_s: float) -> sqlite3.Connection:
    """A connection shared by threads under a lock, in WAL mode with foreign keys on."""
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise GalleryError(f"{path}: SQLite refused WAL mode (got {mode!r})")
        # What was acknowledged (an enrolment, an access event) must survive a power cut.
        conn.execute("PRAGMA synchronous = FULL")
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection, lock: threading.RLock,
                mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
    """One SQLite transaction under the connection's lock, rolled back on any error.

    IMMEDIATE for writes: the write lock is taken up front, so what is read first (the state
    before) cannot be changed by another process before the commit."""
    with lock:
        conn.execute(f"BEGIN {mode}")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

class Store:
    def __init__(self, path: Path, *, timeout_s: float = 30.0) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._conn = connect(path, timeout_s)
        try:
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _transaction(self, mode: str = "IMMEDIATE") -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._conn, self._lock, mode)

    def _migrate(self) -> None:
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise GalleryError(f"{self.path} has schema version {version}, newer than this "
                                   f"gatewatch's {SCHEMA_VERSION}: upgrade gatewatch to open it")
            for statements in _MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # --- models ---------------------------------------------------------------------------------

    def register_model(self, model_id: str, dim: int) -> ModelState:
        with self._transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO models (model_id, dim) VALUES (?, ?)", (model_id, dim))
            state = _state(conn, model_id)
        if state.dim != dim:
            raise DimensionMismatchError(f"model {model_id!r} is stored with {state.dim}-d embeddings, "
                                         f"not {dim}-d")
        return state

    def model_state(self, model_id: str) -> ModelState:
        with self._lock:
            return _state(self._conn, model_id)

    # --- residents ------------------------------------------------------------------------------

    def add_resident(self, name: str, unit: str | None) -> Resident:
        with self._transaction() as conn:
            return _insert_resident(conn, name, unit)

    def get_resident(self, resident_id: int) -> Resident:
        with self._lock:
            row = self._conn.execute(f"{_RESIDENT_SELECT} WHERE id = ?", (resident_id,)).fetchone()
        if row is None:
            raise UnknownResidentError(resident_id)
        return Resident(*row)

    def list_residents(self) -> list[Resident]:
        with self._lock:
            return [Resident(*row) for row in self._conn.execute(f"{_RESIDENT_SELECT} ORDER BY id")]

    def find_resident_by_name(self, name: str) -> Resident | None:
        with self._lock:
            rows = self._conn.execute(f"{_RESIDENT_SELECT} WHERE name = ? ORDER BY id",
                                      (name.strip(),)).fetchall()
        if len(rows) > 1:
            raise AmbiguousNameError(f"{len(rows)} residents are named {name.strip()!r} (ids "
                                     f"{', '.join(str(r[0]) for r in rows)}); refer to them by id")
        return Resident(*rows[0]) if rows else None

    def remove_resident(self, resident_id: int, model_id: str) -> Change:
        """Deletes the resident and, by cascade, their templates of every model."""
        with self._transaction() as conn:
            before = _state(conn, model_id)
            face_ids = [r[0] for r in conn.execute(
                "SELECT face_id FROM faces WHERE resident_id = ? AND model_id = ?", (resident_id, model_id))]
            if conn.execute("DELETE FROM residents WHERE id = ?", (resident_id,)).rowcount == 0:
                raise UnknownResidentError(resident_id)
            return Change(face_ids, before, _state(conn, model_id))

    # --- face templates -------------------------------------------------------------------------

    def add_faces(self, resident_id: int, model_id: str, embeddings: np.ndarray,
                  qualities: Sequence[float | None] | None, sources: Sequence[str | None] | None,
                  notes: Sequence[str | None] | None = None) -> Change:
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM residents WHERE id = ?", (resident_id,)).fetchone() is None:
                raise UnknownResidentError(resident_id)
            return _insert_faces(conn, resident_id, model_id, embeddings, qualities, sources, notes)

    def add_resident_with_faces(self, name: str, unit: str | None, model_id: str, embeddings: np.ndarray,
                                qualities: Sequence[float | None] | None,
                                sources: Sequence[str | None] | None,
                                notes: Sequence[str | None] | None = None) -> tuple[Resident, Change]:
        with self._transaction() as conn:
            resident = _insert_resident(conn, name, unit)
            return resident, _insert_faces(conn, resident.id, model_id, embeddings, qualities, sources, notes)

    def learn_face(self, resident_id: int, model_id: str, embedding: np.ndarray, event_id: int,
                   source: str, keep: int) -> Change:
        """Adds a template learned at the gate; beyond `keep` learned ones, the oldest goes, in the
        same transaction (`Change.face_ids`: the new one first, then any removed)."""
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM residents WHERE id = ?", (resident_id,)).fetchone() is None:
                raise UnknownResidentError(resident_id)
            added = _insert_faces(conn, resident_id, model_id, embedding[None], [None], [source], None, event_id)
            learned = [r[0] for r in conn.execute(
                "SELECT face_id FROM faces WHERE resident_id = ? AND model_id = ? AND learned_from IS NOT NULL "
                "ORDER BY face_id DESC", (resident_id, model_id))]
            dropped = learned[keep:]
            conn.execute("DELETE FROM faces WHERE face_id IN (SELECT value FROM json_each(?))", (json.dumps(dropped),))
            return Change(added.face_ids + dropped, added.before, _state(conn, model_id))

    def forget_learned(self, resident_id: int, model_id: str) -> Change:
        """Removes every template the gates learned for the resident; the enrolled ones stay."""
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM residents WHERE id = ?", (resident_id,)).fetchone() is None:
                raise UnknownResidentError(resident_id)
            before = _state(conn, model_id)
            face_ids = [r[0] for r in conn.execute(
                "DELETE FROM faces WHERE resident_id = ? AND model_id = ? AND learned_from IS NOT NULL "
                "RETURNING face_id", (resident_id, model_id))]
            return Change(face_ids, before, _state(conn, model_id))

    def remove_face(self, face_id: int, model_id: str) -> Change:
        with self._transaction() as conn:
            before = _state(conn, model_id)
            deleted = conn.execute("DELETE FROM faces WHERE face_id = ? AND model_id = ?",
                                   (face_id, model_id))
            if deleted.rowcount == 0:
                raise UnknownFaceError(face_id)
            return Change([face_id], before, _state(conn, model_id))

    def faces_of(self, resident_id: int, model_id: str) -> list[FaceTemplate]:
        with self._transaction("DEFERRED") as conn:
            if conn.execute("SELECT 1 FROM residents WHERE id = ?", (resident_id,)).fetchone() is None:
                raise UnknownResidentError(resident_id)
            rows = conn.execute("SELECT face_id, resident_id, model_id, quality, source, created_at, note, "
                                "learned_from FROM faces WHERE resident_id = ? AND model_id = ? ORDER BY face_id",
                                (resident_id, model_id))
            return [FaceTemplate(*row) for row in rows]

    def count_faces(self, model_id: str) -> int:
        with self._lock:
            row = self._conn.execute("SELECT count(*) FROM faces WHERE model_id = ?", (model_id,)).fetchone()
        return row[0]

    def owners(self, face_ids: Sequence[int]) -> dict[int, tuple[int, str]]:
        """face_id -> (resident_id, name) for those of `face_ids` that still exist."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT f.face_id, r.id, r.name FROM faces f JOIN residents r ON r.id = f.resident_id "
                "WHERE f.face_id IN (SELECT value FROM json_each(?))",
                (json.dumps([int(i) for i in face_ids]),))
            return {face_id: (resident_id, name) for face_id, resident_id, name in rows}

    def embeddings_of(self, resident_ids: Sequence[int], model_id: str, *,
                      enrolled_only: bool = False) -> dict[int, np.ndarray]:
        """resident_id -> (n, dim) embeddings of that resident's templates of the model (only those an
        operator enrolled, if `enrolled_only`), for those of `resident_ids` that have any."""
        learned = " AND learned_from IS NULL" if enrolled_only else ""
        with self._transaction("DEFERRED") as conn:
            dim = _state(conn, model_id).dim
            rows = conn.execute("SELECT resident_id, embedding FROM faces WHERE model_id = ? AND resident_id IN "
                                f"(SELECT value FROM json_each(?)){learned} ORDER BY face_id",
                                (model_id, json.dumps([int(i) for i in resident_ids]))).fetchall()
        out: dict[int, list[bytes]] = {}
        for resident_id, blob in rows:
            out.setdefault(resident_id, []).append(blob)
        return {rid: np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim).astype(np.float32)
                for rid, blobs in out.items()}

    def snapshot(self, model_id: str) -> tuple[ModelState, np.ndarray, np.ndarray]:
        """(state, face_ids (N,), embeddings (N, dim)) read in one transaction, so they agree."""
        with self._transaction("DEFERRED") as conn:
            state = _state(conn, model_id)
            rows = conn.execute("SELECT face_id, embedding FROM faces WHERE model_id = ? ORDER BY face_id",
                                (model_id,)).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(bytearray(b"".join(r[1] for r in rows)), dtype="<f4")
        return state, ids, vectors.reshape(len(rows), state.dim).astype(np.float32, copy=False)



def _state(conn: sqlite3.Connection, model_id: str) -> ModelState:
    row = conn.execute("SELECT model_id, dim, generation, token FROM models WHERE model_id = ?",
                       (model_id,)).fetchone()
    if row is None:
        raise GalleryError(f"model {model_id!r} is not registered in this gallery")
    return ModelState(*row)


def _insert_resident(conn: sqlite3.Connection, name: str, unit: str | None) -> Resident:
    name = name.strip()
    if not name:
        raise ValueError("a resident needs a name")
    unit = (unit or "").strip() or None
    row = conn.execute("INSERT INTO residents (name, unit) VALUES (?, ?) "
                       "RETURNING id, name, unit, created_at", (name, unit)).fetchone()
    return Resident(*row)


def _insert_faces(conn: sqlite3.Connection, resident_id: int, model_id: str, embeddings: np.ndarray,
                  qualities: Sequence[float | None] | None, sources: Sequence[str | None] | None,
                  notes: Sequence[str | None] | None = None, learned_from: int | None = None) -> Change:
    """Callers hand over L2-normalised float32 rows; this only refuses anything else, so that no
    code path can store a template the index would score differently from its siblings."""
    n = len(embeddings)
    if n == 0:
        raise ValueError("no embeddings to add")
    if embeddings.dtype != np.float32 or embeddings.ndim != 2:
        raise InvalidEmbeddingError(f"expected (N, dim) float32 embeddings, "
                                    f"got {embeddings.dtype} {embeddings.shape}")
    if not np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-4):
        raise InvalidEmbeddingError("embeddings must be L2-normalised before they are stored")
    qualities = [None] * n if qualities is None else list(qualities)
    sources = [None] * n if sources is None else list(sources)
    notes = [None] * n if notes is None else list(notes)
    if not len(qualities) == len(sources) == len(notes) == n:
        raise ValueError(f"{n} embeddings but {len(qualities)} qualities, {len(sources)} sources and "
                         f"{len(notes)} notes")
    before = _state(conn, model_id)
    face_ids = [
        conn.execute("INSERT INTO faces (resident_id, model_id, embedding, quality, source, note, learned_from) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (resident_id, model_id, row.astype("<f4").tobytes(), None if q is None else float(q),
                      None if s is None else str(s), note, learned_from)).lastrowid
        for row, q, s, note in zip(embeddings, qualities, sources, notes, strict=True)
    ]
    return Change(face_ids, before, _state(conn, model_id))
