"""FAISS search over one model's face templates, and the file that spares rebuilding it at start-up.

Scores are inner products of L2-normalised vectors (cosine similarities) whichever kind of index
holds them, so thresholds calibrated with exact cosine apply unchanged.

Up to `exact_limit` templates the index is exact: IndexFlatIP inside IndexIDMap2, face_id as the
id. Nothing is missed, and a probe against 100k 128-d templates takes ~2.5 ms on one core. Above
the limit it is IVF-Flat rather than HNSW, because (figures from benchmarks/bench_index.py):
- IVF removes vectors natively (remove_ids), so removing a resident needs neither tombstones nor
  the periodic rebuilds HNSW would need (HNSW cannot remove);
- IVF builds ~20x faster (300k templates: ~5 s against ~100 s for HNSW32 on 2 cores), and a
  rebuild is what a crash, a stale file or another process's write costs;
- at 300k templates IVF with 32 probed lists keeps recall@1 at ~0.998, HNSW (efSearch 64) ~0.95;
- IVF-Flat keeps full vectors, so the similarities it reports are exact: a template in a list that
  was not probed can be missed, never mis-scored.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

IndexKind = Literal["flat", "ivf"]

_MAGIC = b"GWFAISS1"
_HEADER_LEN = struct.Struct("<I")
_CRC = struct.Struct("<I")


class IndexFileError(Exception):
    """The index file is missing, damaged or not ours: the caller rebuilds from SQLite."""


def kind_for(count: int, exact_limit: int) -> IndexKind:
    return "ivf" if count > exact_limit else "flat"


def ivf_lists(count: int) -> int:
    """About sqrt(N) lists, and never fewer than 39 training points per list (faiss's minimum for
    stable k-means)."""
    return max(1, min(math.isqrt(count), count // 39))


class FaceIndex:
    """Face templates of one model, searchable by cosine similarity, addressed by face_id."""

    def __init__(self, index: faiss.Index, kind: IndexKind, nprobe: int) -> None:
        self._index = index
        self.kind = kind
        self.nprobe = nprobe

    @classmethod
    def build(cls, kind: IndexKind, dim: int, ids: np.ndarray, vectors: np.ndarray, *,
              nprobe: int) -> FaceIndex:
        if kind == "flat":
            index = faiss.index_factory(dim, "IDMap2,Flat", faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.index_factory(dim, f"IVF{ivf_lists(len(ids))},Flat", faiss.METRIC_INNER_PRODUCT)
            # k-means on a sample of 64 points per list instead of faiss's 256: 7x faster training
            # at 300k templates for the same recall (measured), and a rebuild blocks the gate.
            index.cp.max_points_per_centroid = 64
            index.train(vectors)
            # A hash table from id to list, so remove_ids does not scan every list.
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
        built = cls(index, kind, nprobe)
        built.add(ids, vectors)
        return built

    @property
    def nprobe(self) -> int:
        """IVF lists searched per query: recall against speed, tunable without a rebuild."""
        return faiss.extract_index_ivf(self._index).nprobe if self.kind == "ivf" else 0

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self.kind == "ivf":
            faiss.extract_index_ivf(self._index).nprobe = value

    @property
    def nlist(self) -> int:
        return faiss.extract_index_ivf(self._index).nlist if self.kind == "ivf" else 0

    @property
    def dim(self) -> int:
        return self._index.d

    @property
    def ntotal(self) -> int:
        return self._index.ntotal

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> None:
        self._index.remove_ids(np.asarray(ids, dtype=np.int64))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, face_ids), each (N, k), best first; face_id -1 pads missing results."""
        return self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def save(self, path: Path, meta: dict) -> None:
        """Atomic: readers of `path` see the old file or the new one, never a torn one.

        Layout: magic, header length, JSON header (kind, caller's meta), faiss blob, CRC-32 of all
        before it. The CRC is checked before faiss parses anything: a damaged file must lead to a
        rebuild, not to faiss reading garbage.
        """
        header = json.dumps({"kind": self.kind, "meta": meta}).encode()
        blob = faiss.serialize_index(self._index)
        parts = [_MAGIC, _HEADER_LEN.pack(len(header)), header, memoryview(blob)]
        crc = 0
        for part in parts:
            crc = zlib.crc32(part, crc)
        _write_atomically(path, [*parts, _CRC.pack(crc)])

    @classmethod
    def load(cls, path: Path, *, nprobe: int) -> tuple[FaceIndex, dict]:
        """(index, the meta it was saved with); IndexFileError for anything short of a sound file."""
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise IndexFileError(f"no index file at {path}") from exc
        except OSError as exc:
            raise IndexFileError(f"cannot read {path}: {exc}") from exc
        fixed = len(_MAGIC) + _HEADER_LEN.size
        if len(data) < fixed + _CRC.size or not data.startswith(_MAGIC):
            raise IndexFileError(f"{path} is not a gatewatch index file")
        body = memoryview(data)[:-_CRC.size]
        if zlib.crc32(body) != _CRC.unpack_from(data, len(body))[0]:
            raise IndexFileError(f"{path} is damaged (checksum mismatch)")
        (header_len,) = _HEADER_LEN.unpack_from(data, len(_MAGIC))
        try:
            header = json.loads(bytes(body[fixed:fixed + header_len]))
            kind, meta = header["kind"], header["meta"]
            if kind not in ("flat", "ivf") or not isinstance(meta, dict):
                raise ValueError(f"unexpected header {header!r}")
            index = faiss.deserialize_index(np.frombuffer(body[fixed + header_len:], dtype=np.uint8))
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise IndexFileError(f"{path} cannot be read back: {exc}") from exc
        return cls(index, kind, nprobe), meta


def discard_partial_saves(path: Path) -> None:
    """Temp files of saves cut short by a crash. Deleting one another process is still writing only
    fails that save, which is harmless: the index file is a cache and a missed save means a rebuild."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)


def _write_atomically(path: Path, parts: list[bytes | memoryview]) -> None:
    """Temp file in the same directory (so the rename cannot cross filesystems), fsync, rename over
    the target, fsync the directory so that the rename itself survives a power cut."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
