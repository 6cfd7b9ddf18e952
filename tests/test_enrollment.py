"""Enrolment refuses photos that would make a poor template, with a reason an operator can act on."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from gates.enrollment import EnrolmentError, enrolment_face
from vision.faces.analyzer import FaceAnalyzer, build_analyzer
from vision.images import load_image


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return build_analyzer("open", min_face_size=20)


@pytest.fixture(scope="module")
def portrait(faces_dir: Path):
    return load_image(faces_dir / "joe_biden" / "facerec_biden.jpg")


def test_a_good_portrait_is_accepted(analyzer: FaceAnalyzer, portrait) -> None:
    face = enrolment_face(analyzer, portrait)
    assert face.quality.ok and 0 < face.quality.score <= 1 and face.embedding.shape == (128,)


@pytest.mark.parametrize(("change", "reason"), [
    (lambda im: cv2.resize(im, None, fx=0.12, fy=0.12, interpolation=cv2.INTER_AREA), "too_small"),
    (lambda im: cv2.GaussianBlur(im, (0, 0), 9), "too_blurry"),
])
def test_poor_photos_are_refused_with_a_reason(analyzer: FaceAnalyzer, portrait, change, reason: str) -> None:
    with pytest.raises(EnrolmentError) as info:
        enrolment_face(analyzer, change(portrait))
    assert info.value.reason == reason
    assert reason in str(info.value)


def test_several_faces_and_no_face(analyzer: FaceAnalyzer, shared_data: Path, portrait) -> None:
    with pytest.raises(EnrolmentError) as info:
        enrolment_face(analyzer, load_image(shared_data / "groups" / "facerec_obama_and_biden.jpg"))
    assert info.value.reason == "several_faces"
    with pytest.raises(EnrolmentError) as info:
        enrolment_face(analyzer, portrait[:40, :40].copy())
    assert info.value.reason == "no_face"
