"""The resident gallery on synthetic embeddings: what a gate relies on when SQLite, the FAISS cache
and several threads or processes meet. Real photos are exercised in test_face_accuracy.py."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from gates import index as index_module
from gates.gallery import (
    DB_NAME,
    AmbiguousNameError,
    DimensionMismatchError,
    Gallery,
    GalleryError,
    InvalidEmbeddingError,
    Match,
    UnknownFaceError,
    UnknownResidentError,
)
from gates.index import FaceIndex
from gates.store import SCHEMA_VERSION

DIM = 128
MODEL = "test-model"
ACCEPT = 0.5
MARGIN = 0.05


def unit(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    x = rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def near(v: np.ndarray, cos: float, rng: np.random.Generator, n: int = 1) -> np.ndarray:
    """n unit vectors at cosine `cos` from the unit vector v."""
    v = v.reshape(-1)
    noise = rng.standard_normal((n, DIM))
    noise -= np.outer(noise @ v, v)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return (cos * v + np.sqrt(1 - cos**2) * noise).astype(np.float32)


def open_gallery(path: Path, **kwargs) -> Gallery:
    options = {"accept_threshold": ACCEPT, "margin": MARGIN, **kwargs}
    return Gallery.open(path, options.pop("model_id", MODEL), options.pop("dim", DIM), **options)


def index_file(path: Path) -> Path:
    (found,) = path.glob("index-*.faiss")
    return found


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def count_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Kinds of every index built from now on: empty means nothing was rebuilt."""
    built: list[str] = []
    original = FaceIndex.build.__func__

    def build(cls, kind, *args, **kwargs):
        built.append(kind)
        return original(cls, kind, *args, **kwargs)

    monkeypatch.setattr(FaceIndex, "build", classmethod(build))
    return built


def test_add_identify_remove_without_rebuild(tmp_path, rng, count_builds):
    alice_c, bob_c = unit(rng), unit(rng)
    with open_gallery(tmp_path) as g:
        count_builds.clear()
        alice, alice_faces = g.add_resident_with_faces("Alice", near(alice_c, 0.9, rng, 2), [0.9, 0.8],
                                                       ["a1.jpg", "a2.jpg"], unit="12-3")
        bob = g.add_resident("Bob")
        (bob_face,) = g.add_faces(bob.id, near(bob_c, 0.9, rng))
        assert g.count_templates() == 3

        stranger = unit(rng)
        found = g.identify(np.vstack([near(alice_c, 0.8, rng), near(bob_c, 0.8, rng), stranger]))
        assert [m and m.name for m in found] == ["Alice", "Bob", None]
        assert found[0].resident_id == alice.id and found[0].face_id in alice_faces
        assert g.get_resident(alice.id).unit == "12-3"

        g.remove_face(bob_face)
        assert g.identify(near(bob_c, 0.8, rng)) == [None]
        g.remove_resident(alice.id)
        assert g.identify(near(alice_c, 0.8, rng)) == [None]
        assert g.count_templates() == 0
        assert [r.name for r in g.list_residents()] == ["Bob"]
    assert count_builds == []


def test_a_resident_is_scored_against_the_mean_of_their_templates(tmp_path, rng):
    """The fused template, not the closest single photo: a probe equal to one of two photos scores
    the cosine to their normalised mean, and names that photo as the closest template."""
    centre = unit(rng)
    other = near(centre, 0.3, rng)
    with open_gallery(tmp_path) as g:
        resident, faces = g.add_resident_with_faces("Carol", np.vstack([other, centre]))
        (match,) = g.identify(centre)
        fused = (other[0] + centre[0]) / np.linalg.norm(other[0] + centre[0])
        assert match.face_id == faces[1]
        assert match.similarity == pytest.approx(float(fused @ centre[0]), abs=1e-5)
        assert match.similarity < 0.999
        assert [f.face_id for f in g.faces_of(resident.id)] == faces
        # a third photo moves the fused template at once
        g.add_faces(resident.id, centre)
        (match,) = g.identify(centre)
        fused = (other[0] + 2 * centre[0]) / np.linalg.norm(other[0] + 2 * centre[0])
        assert match.similarity == pytest.approx(float(fused @ centre[0]), abs=1e-5)


def test_many_templates_of_one_resident_do_not_hide_the_runner_up(tmp_path, rng):
    """More templates than a search fetches at first all outrank the other resident: the margin
    must still be measured against that resident, not against the person's own templates."""
    centre = unit(rng)
    with open_gallery(tmp_path) as g:
        g.add_resident_with_faces("Many", near(centre, 0.95, rng, 100))
        g.add_resident_with_faces("Other", near(centre, 0.6, rng))
        (match,) = g.identify(centre)
        assert match is not None and match.name == "Many"
        assert match.margin == pytest.approx(match.similarity - 0.6, abs=1e-4)


def test_margin_rule_rejects_a_face_close_to_two_residents(tmp_path, rng):
    twin = unit(rng)
    with open_gallery(tmp_path) as g:
        g.add_resident_with_faces("Twin A", near(twin, 0.95, rng))
        g.add_resident_with_faces("Twin B", near(twin, 0.95, rng))
        (candidates,) = g.search(twin, k=2)
        assert {c.name for c in candidates} == {"Twin A", "Twin B"}
        assert candidates[0].similarity >= ACCEPT
        assert g.identify(twin) == [None]
    with open_gallery(tmp_path, margin=0.0) as g:
        assert isinstance(g.identify(twin)[0], Match)


def test_below_threshold_is_unknown(tmp_path, rng):
    centre = unit(rng)
    with open_gallery(tmp_path) as g:
        g.add_resident_with_faces("Dave", centre)
        assert g.identify(near(centre, ACCEPT - 0.05, rng)) == [None]
        assert g.identify(near(centre, ACCEPT + 0.05, rng))[0].name == "Dave"


def test_lone_resident_has_the_widest_margin(tmp_path, rng):
    centre = unit(rng)
    with open_gallery(tmp_path) as g:
        g.add_resident_with_faces("Eve", near(centre, 0.9, rng, 3))
        (match,) = g.identify(centre)
        assert match.margin == pytest.approx(match.similarity + 1.0)


def test_search_ranks_residents_by_best_template(tmp_path, rng):
    centre = unit(rng)
    with open_gallery(tmp_path) as g:
        for name, cos in [("far", 0.2), ("near", 0.9), ("mid", 0.6)]:
            g.add_resident_with_faces(name, near(centre, cos, rng, 2))
        (ranked,) = g.search(centre, k=2)
        assert [c.name for c in ranked] == ["near", "mid"]
        assert ranked[0].similarity >= ranked[1].similarity


def test_empty_gallery_and_empty_batch(tmp_path, rng):
    with open_gallery(tmp_path) as g:
        assert g.identify(unit(rng)) == [None]
        assert g.identify(np.zeros((0, DIM), np.float32)) == []
        assert g.search(unit(rng)) == [[]]


def test_models_are_never_compared(tmp_path, rng):
    face = unit(rng)
    with open_gallery(tmp_path) as a, open_gallery(tmp_path, model_id="other-model") as b:
        resident, _ = a.add_resident_with_faces("Frank", face)
        assert b.count_templates() == 0
        assert b.identify(face) == [None]
        assert b.faces_of(resident.id) == []
        b.add_faces(resident.id, face)  # the same person, enrolled for the other model too
        assert a.count_templates() == 1 and b.count_templates() == 1
        with pytest.raises(UnknownFaceError):
            b.remove_face(a.faces_of(resident.id)[0].face_id)
        # Removing the person removes them for every model.
        a.remove_resident(resident.id)
        assert b.count_templates() == 0 and b.identify(face) == [None]
    with pytest.raises(DimensionMismatchError):
        open_gallery(tmp_path, dim=DIM + 1)


def test_wrong_dimension_and_broken_embeddings_are_refused(tmp_path, rng):
    with open_gallery(tmp_path) as g:
        resident = g.add_resident("Gina")
        with pytest.raises(DimensionMismatchError):
            g.add_faces(resident.id, np.ones((1, DIM + 1), np.float32))
        with pytest.raises(DimensionMismatchError):
            g.identify(np.ones(DIM, np.float32))  # (D,) is ambiguous: (N, D) is asked for
        with pytest.raises(InvalidEmbeddingError):
            g.add_faces(resident.id, np.zeros((1, DIM), np.float32))
        nan = unit(rng)
        nan[0, 3] = np.nan
        with pytest.raises(InvalidEmbeddingError):
            g.add_faces(resident.id, np.vstack([unit(rng), nan]))
        with pytest.raises(InvalidEmbeddingError):
            g.identify(nan)
        assert g.count_templates() == 0


def test_unknown_ids_raise_key_errors(tmp_path, rng):
    with open_gallery(tmp_path) as g:
        for call in (lambda: g.get_resident(99), lambda: g.remove_resident(99), lambda: g.faces_of(99),
                     lambda: g.add_faces(99, unit(rng)), lambda: g.remove_face(99)):
            with pytest.raises(KeyError):
                call()
        with pytest.raises(UnknownResidentError):
            g.add_faces(99, unit(rng))


def test_find_resident_by_name(tmp_path, rng):
    with open_gallery(tmp_path) as g:
        assert g.find_resident_by_name("Hana") is None
        hana = g.add_resident("Hana")
        assert g.find_resident_by_name(" Hana ") == hana
        g.add_resident("Hana")
        with pytest.raises(AmbiguousNameError):
            g.find_resident_by_name("Hana")


def test_person_and_photos_are_stored_together_or_not_at_all(tmp_path, rng):
    with open_gallery(tmp_path) as g:
        with pytest.raises(ValueError):
            # The second row's quality fails inside the transaction, after the person and the
            # first template were inserted.
            g.add_resident_with_faces("Ivan", unit(rng, 2), [0.9, "not a number"])
        with pytest.raises(ValueError):
            g.add_resident_with_faces("Ivan", unit(rng, 2), [0.9])  # fewer qualities than faces
        assert g.list_residents() == [] and g.count_templates() == 0
        assert g.identify(unit(rng)) == [None]


def test_sqlite_is_configured_for_safety(tmp_path, rng):
    with open_gallery(tmp_path) as g:
        g.add_resident_with_faces("Jun", unit(rng))
    conn = sqlite3.connect(tmp_path / DB_NAME)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        with pytest.raises(sqlite3.IntegrityError, match="immutable"):
            conn.execute("UPDATE faces SET quality = 0")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(GalleryError, match="newer"):
        open_gallery(tmp_path)


def _damage(path: Path, how: str, older: bytes) -> None:
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "flipped byte":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "garbage":
        path.write_bytes(os.urandom(1000))
    elif how == "stale":
        path.write_bytes(older)


@pytest.mark.parametrize("how", ["missing", "truncated", "flipped byte", "garbage", "stale"])
def test_bad_index_file_is_rebuilt_from_sqlite(tmp_path, rng, count_builds, how):
    kept, removed = unit(rng), unit(rng)
    with open_gallery(tmp_path) as g:
        g.add_resident_with_faces("Kept", kept)
        gone, _ = g.add_resident_with_faces("Removed", removed)
        older = index_file(tmp_path).read_bytes()  # knows "Removed"
        g.remove_resident(gone.id)
        g.add_resident_with_faces("Added", unit(rng))
    _damage(index_file(tmp_path), how, older)
    count_builds.clear()
    with open_gallery(tmp_path) as g:
        assert count_builds == ["flat"]
        assert g.count_templates() == 2
        assert [m and m.name for m in g.identify(np.vstack([kept, removed]))] == ["Kept", None]
    count_builds.clear()
    with open_gallery(tmp_path) as g:  # the rebuilt file was saved and is trusted again
        assert count_builds == []


def test_crash_between_commit_and_index_save(tmp_path, rng, monkeypatch, count_builds):
    """The process dies after SQLite committed but before the index file was written: the next
    open must see SQLite's truth, above all not let in a resident who was removed."""
    old, new = unit(rng), unit(rng)
    with open_gallery(tmp_path) as g:
        gone, _ = g.add_resident_with_faces("Moved out", old)
    with monkeypatch.context() as crash:
        crash.setattr(FaceIndex, "save", lambda *args, **kwargs: None)
        crashed = open_gallery(tmp_path)
        crashed.remove_resident(gone.id)
        crashed.add_resident_with_faces("Moved in", new)
        # No close(): the process is gone. Its connection stays open, as a dead process's would
        # until the kernel closed it; SQLite's committed state is all that matters.
    count_builds.clear()
    with open_gallery(tmp_path) as g:
        assert count_builds == ["flat"]
        assert [m and m.name for m in g.identify(np.vstack([old, new]))] == [None, "Moved in"]
    crashed.close()


def test_deferred_saves_are_written_on_close(tmp_path, rng, count_builds):
    face = unit(rng)
    with open_gallery(tmp_path, autosave=False) as g:
        g.add_resident_with_faces("Lena", face)
    count_builds.clear()
    with open_gallery(tmp_path) as g:
        assert count_builds == [] and g.identify(face)[0].name == "Lena"


def test_index_saves_are_atomic(tmp_path, rng, monkeypatch):
    with open_gallery(tmp_path) as g:
        g.add_resident_with_faces("Mia", unit(rng))
        saved = index_file(tmp_path).read_bytes()
        assert not list(tmp_path.glob(".*.tmp"))

        def power_cut(src, dst):
            raise OSError("simulated crash before the rename")

        with monkeypatch.context() as crash:
            crash.setattr(index_module.os, "replace", power_cut)
            g.add_resident_with_faces("Noah", unit(rng))  # committed; the save fails and is logged
        assert index_file(tmp_path).read_bytes() == saved  # the previous file is untouched
        assert not list(tmp_path.glob(".*.tmp"))
        assert g.count_templates() == 2
    # A temp file left by a crash in the middle of a save is cleaned up at the next open.
    leftover = tmp_path / f".{index_file(tmp_path).name}.abc123.tmp"
    leftover.write_bytes(b"half an index")
    with open_gallery(tmp_path) as g:
        assert not leftover.exists()
        assert g.count_templates() == 2


def test_approximate_index_above_the_exact_limit(tmp_path, rng, count_builds):
    centres = unit(rng, 100)
    probes = np.vstack([near(c, 0.8, rng) for c in centres])
    with open_gallery(tmp_path, exact_limit=50, nprobe=2) as g:
        residents = [g.add_resident_with_faces(f"r{i}", near(c, 0.9, rng, 4))[0]
                     for i, c in enumerate(centres)]
        assert g.index_kind == "ivf" and g.count_templates() == 400
        # Switched to IVF when the limit was crossed, then retrained as the gallery outgrew its lists.
        assert count_builds[:2] == ["flat", "ivf"] and set(count_builds[2:]) == {"ivf"}
        # Approximate: 2 of the index's 7 lists are probed, so a few residents may be missed.
        found = [m and m.resident_id for m in g.identify(probes)]
        assert sum(f == r.id for f, r in zip(found, residents, strict=True)) >= 95
        count_builds.clear()
        g.remove_resident(residents[0].id)  # IVF removes in place
        g.add_faces(residents[1].id, near(centres[1], 0.9, rng))
        assert count_builds == []
        assert residents[0].id not in {c.resident_id for c in g.search(probes[:1], k=10)[0]}
    with open_gallery(tmp_path, exact_limit=50, nprobe=7) as g:
        assert count_builds == [] and g.index_kind == "ivf"
        found = [m and m.resident_id for m in g.identify(probes[1:])]
        assert found == [r.id for r in residents[1:]]  # every list probed: nothing missed
    with open_gallery(tmp_path, exact_limit=1000) as g:  # a raised limit brings exact search back
        assert count_builds == ["flat"] and g.index_kind == "flat"


def test_changes_by_another_process_are_seen_before_answering(tmp_path, rng):
    face = unit(rng)
    with open_gallery(tmp_path) as gate, open_gallery(tmp_path) as admin:
        assert gate.identify(face) == [None]
        resident, _ = admin.add_resident_with_faces("Olga", face)
        assert gate.identify(face)[0].name == "Olga"
        gate.add_faces(resident.id, near(face, 0.9, rng))  # the gate's own write, then ...
        admin.remove_resident(resident.id)
        assert gate.identify(face) == [None]  # ... the admin's removal still wins
        assert admin.identify(face) == [None]


def test_concurrent_identify_and_add(tmp_path, rng):
    centres = unit(rng, 30)
    probes = np.vstack([near(c, 0.85, rng) for c in centres])
    templates = [near(c, 0.9, rng, 2) for c in centres]
    errors: list[BaseException] = []
    with open_gallery(tmp_path) as g:
        g.add_resident_with_faces("r0", templates[0])
        done = threading.Event()

        def reader() -> None:
            try:
                while not done.is_set():
                    for i, match in enumerate(g.identify(probes)):
                        assert match is None or match.name == f"r{i}"
            except BaseException as exc:
                errors.append(exc)

        def writer() -> None:
            try:
                for i in range(1, len(centres)):
                    g.add_resident_with_faces(f"r{i}", templates[i])
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.set()

        threads = [threading.Thread(target=reader) for _ in range(3)] + [threading.Thread(target=writer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors
        assert [m and m.name for m in g.identify(probes)] == [f"r{i}" for i in range(len(centres))]
        assert g.count_templates() == 2 * len(centres)
