"""Who is at the gate: open-set identification against the residents enrolled for one model.

A Gallery is the SQLite store (the truth) plus a FAISS index of one model's templates (a cache),
kept in step by a fingerprint of the model's templates (ModelState) that SQLite changes in the same
transaction as every insert or delete:
- a write commits to SQLite first, then updates the index in memory, then saves the index file
  atomically with the fingerprint it matches. A crash in between leaves a file whose fingerprint is
  not SQLite's, and the next open rebuilds instead of trusting it.
- every search first reads the fingerprint (one indexed row). If another process (an admin tool,
  another web worker) changed the templates, the index is rebuilt before answering: a resident
  removed elsewhere is never let in from a stale cache.

A resident is scored against one fused template: the normalised mean of their templates'
embeddings (2-5 enrolment photos, and what the gate has learned). Against a single photo, a probe
that happens to resemble that one look scores high; the mean of several looks is what stays the
same across them. Measured with dlib's embedder on photos of people never tuned on
(benchmarks/face_accuracy): with two photos, fused scoring kept more residents than the best
single template at the threshold where no stranger got in. FAISS still searches the templates
one by one; the few residents it finds are re-scored by their fused template.

Templates of different models are never compared: a gallery is opened for one model_id and sees
only that model's templates (residents themselves are shared by all models).

Threading: one lock around the store and the index, held by every method. FAISS must not search
while the index is being changed, the fingerprint check and the search must see the same index,
and a gate's load (a few faces a second) does not need parallel searches. Open one Gallery per
process and share it between threads.
"""

from __future__ import annotations

import logging
import re
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from gates.index import FaceIndex, IndexFileError, discard_partial_saves, ivf_lists, kind_for
from gates.store import (
    AmbiguousNameError,
    Change,
    DimensionMismatchError,
    FaceTemplate,
    GalleryError,
    InvalidEmbeddingError,
    ModelState,
    Resident,
    Store,
    UnknownFaceError,
    UnknownResidentError,
)

__all__ = [
    "DEFAULT_NPROBE",
    "AmbiguousNameError",
    "Candidate",
    "DimensionMismatchError",
    "FaceTemplate",
    "Gallery",
    "GalleryError",
    "InvalidEmbeddingError",
    "Match",
    "Resident",
    "UnknownFaceError",
    "UnknownResidentError",
]

log = logging.getLogger(__name__)

DB_NAME = "gallery.sqlite3"
DEFAULT_NPROBE = 32
# Templates fetched per probe at first; more are fetched when they all belong to too few residents
# (someone enrolled with many photos), so that the runner-up resident is always really found.
_SEARCH_DEPTH = 32
# Residents found by their best template whose fused templates are scored: enough that the fused
# winner and its runner-up are among them (a fused score is never above the best template's).
_RESCORED = 8


@dataclass(frozen=True)
class Candidate:
    """A resident for one probe: `similarity` to their fused template, `face_id` their closest template."""

    resident_id: int
    name: str
    similarity: float
    face_id: int


@dataclass(frozen=True)
class Match:
    """An accepted identification. `margin` is the lead over the best other resident (the
    similarity floor -1 stands in for the runner-up when nobody else has templates)."""

    resident_id: int
    name: str
    similarity: float
    margin: float
    face_id: int


class Gallery:
    """Use Gallery.open(); the constructor assumes a store already registered for the model."""

    def __init__(self, store: Store, index_path: Path, model_id: str, dim: int, *, accept_threshold: float,
                 margin: float, exact_limit: int, nprobe: int, autosave: bool) -> None:
        self.model_id = model_id
        self.dim = dim
        self.accept_threshold = accept_threshold
        self.margin = margin
        self._store = store
        self._index_path = index_path
        self._exact_limit = exact_limit
        self._nprobe = nprobe
        self._autosave = autosave
        self._lock = threading.RLock()
        self._index: FaceIndex | None = None
        # The fingerprint self._index matches; None while it matches nothing (rebuild before use).
        self._state: ModelState | None = None
        self._unsaved = False
        # resident_id -> fused template, valid while the templates stand at _fused_state
        self._fused: dict[int, np.ndarray] = {}
        self._fused_state: ModelState | None = None

    @classmethod
    def open(cls, data_dir: Path, model_id: str, dim: int, *, accept_threshold: float, margin: float,
             exact_limit: int = 100_000, nprobe: int = DEFAULT_NPROBE, autosave: bool = True) -> Gallery:
        """Open (creating if needed) the gallery in `data_dir` for one embedding model.

        accept_threshold: least cosine similarity to accept a resident. margin: least lead over the
        best other resident. Both are per model and calibrated on real photos by the caller.
        exact_limit: above this many templates, search is approximate (IVF, `nprobe` lists per
        probe). autosave=False defers index saves to save()/close(), for bulk imports: a crash
        before then costs a rebuild at the next open, never a wrong answer.
        """
        if not -1.0 <= accept_threshold <= 1.0:
            raise ValueError(f"accept_threshold {accept_threshold} is not a cosine similarity")
        if margin < 0:
            raise ValueError(f"margin {margin} must not be negative")
        if dim <= 0 or exact_limit < 0 or nprobe < 1:
            raise ValueError(f"need dim > 0, exact_limit >= 0, nprobe >= 1; "
                             f"got {dim}, {exact_limit}, {nprobe}")
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        store = Store(data_dir / DB_NAME)
        try:
            store.register_model(model_id, dim)
            gallery = cls(store, data_dir / _index_file_name(model_id), model_id, dim,
                          accept_threshold=accept_threshold, margin=margin, exact_limit=exact_limit,
                          nprobe=nprobe, autosave=autosave)
            gallery._load_index()
        except BaseException:
            store.close()
            raise
        return gallery

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._unsaved:
                self._save()
            self._store.close()

    def save(self) -> None:
        with self._lock:
            self._save()

    @property
    def index_kind(self) -> str:
        with self._lock:
            return self._fresh_index().kind

    # --- residents and templates ----------------------------------------------------------------

    def add_resident(self, name: str, unit: str | None = None) -> Resident:
        """A resident without faces yet; prefer add_resident_with_faces when the photos are at hand."""
        return self._store.add_resident(name, unit)

    def add_resident_with_faces(self, name: str, embeddings: np.ndarray,
                                qualities: Sequence[float | None] | None = None,
                                sources: Sequence[str | None] | None = None, *,
                                unit: str | None = None,
                                notes: Sequence[str | None] | None = None) -> tuple[Resident, list[int]]:
        """A person and their templates are stored together or not at all. `notes`: per photo, its
        weaknesses or the quality problems an operator overrode (kept on record)."""
        rows = self._normalise(embeddings)
        with self._lock:
            resident, change = self._store.add_resident_with_faces(name, unit, self.model_id, rows,
                                                                    qualities, sources, notes)
            self._follow(change, lambda index: index.add(np.asarray(change.face_ids), rows))
            return resident, change.face_ids

    def add_faces(self, resident_id: int, embeddings: np.ndarray,
                  qualities: Sequence[float | None] | None = None,
                  sources: Sequence[str | None] | None = None,
                  notes: Sequence[str | None] | None = None) -> list[int]:
        """All of them in one transaction; returns their face_ids."""
        rows = self._normalise(embeddings)
        with self._lock:
            change = self._store.add_faces(resident_id, self.model_id, rows, qualities, sources, notes)
            self._follow(change, lambda index: index.add(np.asarray(change.face_ids), rows))
            return change.face_ids

    def learn_face(self, resident_id: int, embedding: np.ndarray, event_id: int, source: str,
                   keep: int) -> int:
        """Stores a template learned at the gate (gates.learning decides whether one may be);
        at most `keep` learned templates per resident, the oldest replaced. Returns its face_id."""
        row = self._normalise(embedding[None])
        with self._lock:
            change = self._store.learn_face(resident_id, self.model_id, row[0], event_id, source, keep)
            added, dropped = np.asarray(change.face_ids[:1]), np.asarray(change.face_ids[1:])

            def update(index: FaceIndex) -> None:
                index.add(added, row)
                if len(dropped):
                    index.remove(dropped)

            self._follow(change, update)
            return change.face_ids[0]

    def forget_learned(self, resident_id: int) -> list[int]:
        """Undo of learning for one resident: their learned templates go, the enrolled stay."""
        with self._lock:
            change = self._store.forget_learned(resident_id, self.model_id)
            self._follow(change, lambda index: index.remove(np.asarray(change.face_ids)))
            return change.face_ids

    def enrolled_template(self, resident_id: int) -> np.ndarray | None:
        """The fused template of the resident's enrolled photos only, without what gates learned:
        what learning is anchored to, so that learned templates cannot lead it astray step by step."""
        rows = self._store.embeddings_of([resident_id], self.model_id, enrolled_only=True).get(resident_id)
        if rows is None:
            return None
        mean = rows.mean(axis=0)
        return (mean / np.linalg.norm(mean)).astype(np.float32)

    def remove_face(self, face_id: int) -> None:
        with self._lock:
            change = self._store.remove_face(face_id, self.model_id)
            self._follow(change, lambda index: index.remove(np.asarray(change.face_ids)))

    def remove_resident(self, resident_id: int) -> None:
        """The resident and their templates of every model."""
        with self._lock:
            change = self._store.remove_resident(resident_id, self.model_id)
            self._follow(change, lambda index: index.remove(np.asarray(change.face_ids)))

    def get_resident(self, resident_id: int) -> Resident:
        return self._store.get_resident(resident_id)

    def list_residents(self) -> list[Resident]:
        return self._store.list_residents()

    def find_resident_by_name(self, name: str) -> Resident | None:
        """None if nobody has the name; AmbiguousNameError if several do."""
        return self._store.find_resident_by_name(name)

    def faces_of(self, resident_id: int) -> list[FaceTemplate]:
        """The resident's templates of this gallery's model."""
        return self._store.faces_of(resident_id, self.model_id)

    def count_templates(self) -> int:
        return self._store.count_faces(self.model_id)

    # --- identification -------------------------------------------------------------------------

    def identify(self, embeddings: np.ndarray) -> list[Match | None]:
        """One answer per probe row: the resident, or None for "unknown".

        Accepted only if the best resident's similarity (max over their templates) reaches
        accept_threshold and leads the best *other* resident by at least `margin`: a face that looks
        about as much like two residents is not let in as either.
        """
        return [self._decide(candidates) for candidates in self._candidates(embeddings, 2)]

    def fused_templates(self, resident_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """resident_id -> unit-length fused template, for those of `resident_ids` with templates."""
        with self._lock:
            state = self._store.model_state(self.model_id)
            if state != self._fused_state:
                self._fused, self._fused_state = {}, state
            missing = [rid for rid in resident_ids if rid not in self._fused]
            if missing:
                for rid, rows in self._store.embeddings_of(missing, self.model_id).items():
                    mean = rows.mean(axis=0)
                    self._fused[rid] = (mean / np.linalg.norm(mean)).astype(np.float32)
            return {rid: self._fused[rid] for rid in resident_ids if rid in self._fused}

    def search(self, embeddings: np.ndarray, k: int = 5) -> list[list[Candidate]]:
        """Per probe, up to k residents ranked by their best template, with no threshold applied:
        for evaluation (rank-1, calibration of the thresholds), not for opening doors."""
        if k < 1:
            raise ValueError("k must be at least 1")
        return self._candidates(embeddings, k)

    def _decide(self, candidates: list[Candidate]) -> Match | None:
        if not candidates:
            return None
        best = candidates[0]
        runner_up = candidates[1].similarity if len(candidates) > 1 else -1.0
        margin = best.similarity - runner_up
        if best.similarity >= self.accept_threshold and margin >= self.margin:
            return Match(best.resident_id, best.name, best.similarity, margin, best.face_id)
        return None

    def _candidates(self, embeddings: np.ndarray, residents: int) -> list[list[Candidate]]:
        probes = self._normalise(embeddings)
        with self._lock:
            index = self._fresh_index()
            total = index.ntotal
            if total == 0 or len(probes) == 0:
                return [[] for _ in probes]
            depth = min(_SEARCH_DEPTH, total)
            wanted = max(residents, _RESCORED)
            while True:
                similarities, face_ids = index.search(probes, depth)
                owners = self._store.owners(np.unique(face_ids[face_ids >= 0]).tolist())
                ranked = [_rank(s, f, owners, wanted) for s, f in zip(similarities, face_ids, strict=True)]
                if depth == total or all(len(r) == wanted for r in ranked):
                    break
                depth = min(4 * depth, total)
            fused = self.fused_templates(sorted({c.resident_id for r in ranked for c in r}))
            return [_rescore(probe, found, fused, residents) for probe, found in zip(probes, ranked, strict=True)]

    def _normalise(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, dim) float32 rows of unit length. Zero, NaN or infinite rows are refused rather than
        scored: a broken embedder must fail loudly, not quietly read as "unknown"."""
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise DimensionMismatchError(f"model {self.model_id!r} takes (N, {self.dim}) embeddings, "
                                         f"got shape {x.shape}")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if not (np.isfinite(norms).all() and (norms > 1e-6).all()):
            raise InvalidEmbeddingError("embeddings must be finite and non-zero")
        return np.ascontiguousarray(x / norms)

    # --- keeping the index in step with SQLite --------------------------------------------------

    def _load_index(self) -> None:
        discard_partial_saves(self._index_path)
        state = self._store.model_state(self.model_id)
        try:
            index, meta = FaceIndex.load(self._index_path, nprobe=self._nprobe)
        except IndexFileError as exc:
            reason = str(exc)
        else:
            reason = self._why_stale(index, meta, state)
            if reason is None:
                self._index, self._state = index, state
                return
        log.info("rebuilding the %s index from SQLite: %s", self.model_id, reason)
        self._rebuild()

    def _why_stale(self, index: FaceIndex, meta: dict, state: ModelState) -> str | None:
        if meta.get("state") != asdict(state):
            return f"it was built from {meta.get('state')}, SQLite is at {asdict(state)}"
        count = self._store.count_faces(self.model_id)
        if index.dim != self.dim or index.ntotal != count:
            return f"it holds {index.ntotal} {index.dim}-d vectors, SQLite {count} {self.dim}-d templates"
        if not self._suits(index, count):
            return f"a {index.kind} index does not suit {count} templates (exact_limit={self._exact_limit})"
        return None

    def _suits(self, index: FaceIndex, count: int) -> bool:
        """Exact up to the limit. IVF, once chosen, stays until the gallery shrinks to half the limit,
        so that a count hovering at the limit does not rebuild on every write; and it is retrained
        once the gallery has outgrown its lists (about four times the templates it was trained on)."""
        if index.kind == "flat":
            return count <= self._exact_limit
        return count > self._exact_limit // 2 and ivf_lists(count) <= 2 * index.nlist

    def _rebuild(self) -> FaceIndex:
        state, ids, vectors = self._store.snapshot(self.model_id)
        kind = kind_for(len(ids), self._exact_limit)
        index = FaceIndex.build(kind, self.dim, ids, vectors, nprobe=self._nprobe)
        self._index, self._state = index, state
        self._persist()
        return index

    def _fresh_index(self) -> FaceIndex:
        state = self._store.model_state(self.model_id)
        if self._index is None or state != self._state:
            log.info("rebuilding the %s index from SQLite: it is out of step with it", self.model_id)
            return self._rebuild()
        return self._index

    def _follow(self, change: Change, update: Callable[[FaceIndex], None]) -> None:
        """Bring the index along with a committed change; the commit stands whatever happens here."""
        if self._index is None or change.before != self._state:
            log.info("rebuilding the %s index from SQLite: another connection wrote too", self.model_id)
            self._rebuild()  # applying only this change would miss the other one
            return
        if change.after == change.before:
            return  # e.g. a resident removed who had no templates of this model
        self._state = None
        try:
            update(self._index)
        except Exception:
            # The write is committed and must not be reported as failed (a retry would enrol twice);
            # with no state recorded, the next use of the index rebuilds it from SQLite.
            log.exception("updating the %s index failed; it will be rebuilt from SQLite", self.model_id)
            return
        self._state = change.after
        if self._suits(self._index, self._index.ntotal):
            self._persist()
        else:
            log.info("rebuilding the %s index: a %s index does not suit %d templates (exact_limit=%d)",
                     self.model_id, self._index.kind, self._index.ntotal, self._exact_limit)
            self._rebuild()

    def _persist(self) -> None:
        self._unsaved = True
        if self._autosave:
            self._save()

    def _save(self) -> None:
        """Best effort: the file is a cache, and a failed save only means a rebuild at the next open."""
        if self._index is None or self._state is None:
            return
        try:
            self._index.save(self._index_path, {"state": asdict(self._state)})
        except OSError:
            log.exception("saving the %s index to %s failed", self.model_id, self._index_path)
            return
        self._unsaved = False


def _rank(similarities: np.ndarray, face_ids: np.ndarray, owners: dict[int, tuple[int, str]],
          limit: int) -> list[Candidate]:
    """Best template per resident, best resident first, at most `limit` residents. Templates no
    longer in SQLite (removed since the search) are skipped."""
    ranked: dict[int, Candidate] = {}
    for similarity, face_id in zip(similarities.tolist(), face_ids.tolist(), strict=True):
        if face_id not in owners:
            continue
        resident_id, name = owners[face_id]
        if resident_id not in ranked:
            ranked[resident_id] = Candidate(resident_id, name, similarity, face_id)
            if len(ranked) == limit:
                break
    return list(ranked.values())


def _rescore(probe: np.ndarray, found: list[Candidate], fused: dict[int, np.ndarray], limit: int) -> list[Candidate]:
    """The residents found, scored by their fused template, best first, at most `limit`."""
    scored = [Candidate(c.resident_id, c.name, float(fused[c.resident_id] @ probe), c.face_id)
              for c in found if c.resident_id in fused]
    scored.sort(key=lambda c: -c.similarity)
    return scored[:limit]


def _index_file_name(model_id: str) -> str:
    """Readable, filesystem-safe, and distinct for model ids that sanitise alike."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", model_id)[:64]
    return f"index-{safe}-{zlib.crc32(model_id.encode()):08x}.faiss"
