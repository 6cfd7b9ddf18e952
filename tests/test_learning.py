"""Learning at the gate on real faces: templates grow only on certain passes, a look-alike stranger
never adds one, the number learned is bounded, and undo restores the enrolled templates.

The look-alike is the closest stranger pair of the shared photos: ahn_jaehyun's photos score up to
0.966 against chen_weiting's two-photo template (benchmarks/face_accuracy), the one pair that keeps
dlib's default threshold at 0.97.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.face_accuracy import embed_people, load_people
from gates.gallery import Gallery
from gates.learning import LearningPolicy, Pass, learn_from_pass
from models import registry
from vision.faces.analyzer import FaceAnalyzer

RESIDENT, LOOK_ALIKE = "chen_weiting", "ahn_jaehyun"


@pytest.fixture(scope="module")
def photos(analyzer: FaceAnalyzer, east_asian_dir: Path) -> dict[str, np.ndarray]:
    people = {name: paths for name, paths in load_people(east_asian_dir).items()}
    out: dict[str, list[np.ndarray]] = {}
    for s in embed_people(analyzer, people):
        if s.embedding is not None:
            out.setdefault(s.person, []).append(s.embedding)
    return {name: np.stack(rows) for name, rows in out.items()}


def _gallery(tmp_path: Path, photos: dict[str, np.ndarray], accept: float | None = None) -> tuple[Gallery, int]:
    entry = registry.get_entry("dlib_resnet_v1")
    gallery = Gallery.open(tmp_path, "dlib_resnet_v1", 128, accept_threshold=accept or entry.accept_threshold,
                           margin=entry.margin)
    resident_id = 0
    for name, rows in photos.items():
        if name != LOOK_ALIKE:
            resident, _ = gallery.add_resident_with_faces(name, rows[:2])
            resident_id = resident.id if name == RESIDENT else resident_id
    return gallery, resident_id


def _pass(gallery: Gallery, embedding: np.ndarray, resident_id: int, *, votes: int = 3,
          liveness: float | None = 0.95, event_id: int = 1) -> Pass:
    similarity = float(gallery.fused_templates([resident_id])[resident_id] @ (embedding / np.linalg.norm(embedding)))
    return Pass(resident_id, embedding, similarity, votes, liveness, event_id, "gate-cam")


def _policy(gallery: Gallery) -> LearningPolicy:
    return LearningPolicy(gallery.accept_threshold + 0.005)


def test_a_certain_pass_teaches_and_undo_restores(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    gallery, rid = _gallery(tmp_path, photos)
    with gallery:
        policy = _policy(gallery)
        enrolled = [f.face_id for f in gallery.faces_of(rid)]
        before = gallery.fused_templates([rid])[rid].copy()
        passes = [_pass(gallery, e, rid, event_id=i + 10) for i, e in enumerate(photos[RESIDENT][2:])]
        certain = [p for p in passes if p.similarity >= policy.threshold]
        assert certain, "the resident's own other photos include a certain pass"
        lessons = [learn_from_pass(gallery, policy, p) for p in certain]
        assert all(lesson.learned for lesson in lessons)
        faces = gallery.faces_of(rid)
        learned = [f for f in faces if f.learned]
        assert [f.learned_from for f in learned] == [p.event_id for p in certain]
        assert all(f.source == "gate:gate-cam" for f in learned)
        assert [f.face_id for f in faces if not f.learned] == enrolled

        # Only certain passes: too few votes, liveness unconfirmed, a score below the learning threshold.
        best = certain[0]
        for doubtful in (Pass(rid, best.embedding, best.similarity, 2, 0.95, 99, "gate-cam"),
                         Pass(rid, best.embedding, best.similarity, 3, None, 99, "gate-cam"),
                         Pass(rid, best.embedding, best.similarity, 3, 0.3, 99, "gate-cam"),
                         Pass(rid, best.embedding, policy.threshold - 0.001, 3, 0.95, 99, "gate-cam")):
            assert not learn_from_pass(gallery, policy, doubtful).learned
        assert len(gallery.faces_of(rid)) == len(faces)

        removed = gallery.forget_learned(rid)
        assert sorted(removed) == sorted(f.face_id for f in learned)
        assert [f.face_id for f in gallery.faces_of(rid)] == enrolled
        assert np.allclose(gallery.fused_templates([rid])[rid], before)
        probe = photos[RESIDENT][2]
        expected = float(before @ (probe / np.linalg.norm(probe)))
        assert gallery.search(probe[None], 1)[0][0].similarity == pytest.approx(expected, abs=1e-5)


def test_learned_templates_are_bounded(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    gallery, rid = _gallery(tmp_path, photos)
    with gallery:
        policy = LearningPolicy(gallery.accept_threshold + 0.005, keep=2)
        own = photos[RESIDENT][2:]
        best = max(own, key=lambda e: _pass(gallery, e, rid).similarity)
        ids = []
        for event_id in range(5):  # the same certain face, five passes
            lesson = learn_from_pass(gallery, policy, _pass(gallery, best, rid, event_id=event_id))
            if lesson.learned:
                ids.append(lesson.face_id)
        assert len(ids) >= 3
        learned = [f for f in gallery.faces_of(rid) if f.learned]
        assert [f.face_id for f in learned] == ids[-2:]  # the newest two, the older ones replaced
        assert gallery.count_templates() == 2 * (len(photos) - 1) + 2


def test_a_look_alike_stranger_never_adds_a_template(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    """Even where a compound set its threshold too low and the look-alike is let in as the resident,
    none of his passes is certain: his face is never learned, so he cannot pull the template
    towards himself pass after pass."""
    gallery, rid = _gallery(tmp_path, photos, accept=0.95)
    with gallery:
        matches = gallery.identify(photos[LOOK_ALIKE])
        let_in = [m for m in matches if m is not None and m.resident_id == rid]
        assert let_in, "at 0.95 the look-alike is let in as the resident (why the default is 0.97)"
        policy = LearningPolicy(registry.get_entry("dlib_resnet_v1").accept_threshold + 0.005)
        for i, embedding in enumerate(photos[LOOK_ALIKE]):
            lesson = learn_from_pass(gallery, policy, _pass(gallery, embedding, rid, votes=5, liveness=0.99,
                                                            event_id=100 + i))
            assert not lesson.learned, lesson
        assert not any(f.learned for f in gallery.faces_of(rid))
