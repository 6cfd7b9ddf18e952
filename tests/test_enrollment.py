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


def test_the_face_that_dominates_a_photo_is_enrolled(analyzer: FaceAnalyzer, portrait, faces_dir: Path) -> None:
    """A bystander in the corner does not stop the enrolment of the person the photo was taken of."""
    alone = enrolment_face(analyzer, portrait)
    bystander = load_image(faces_dir / "katy_perry" / "deepface_img26.jpg")
    scale = 0.3 * portrait.shape[0] / bystander.shape[0]
    small = cv2.resize(bystander, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    shared = portrait.copy()
    shared[:small.shape[0], :small.shape[1]] = small[:shared.shape[0], :shared.shape[1]]
    assert len(analyzer.analyze(shared)) >= 2
    face = enrolment_face(analyzer, shared)
    assert float(face.embedding @ alone.embedding) > 0.99


def test_a_gate_snapshot_is_weak_not_refused_and_an_override_is_kept(analyzer: FaceAnalyzer) -> None:
    """The walker's 70-px face from frame 40 of the gate video (sharpness 12) matches his gate
    frames; it is enrolled and its weakness noted. Blurred past what matches, it is refused
    unless an operator overrides, and then the overridden problem is kept with the template."""
    from walker_clip import VIDEO, walker_photo

    if not VIDEO.is_file():
        pytest.skip("shared video not available")
    snapshot = walker_photo(analyzer)
    face = enrolment_face(analyzer, snapshot)
    assert face.quality.ok and face.note is not None and face.note.startswith("soft: sharpness")
    blurred = cv2.GaussianBlur(snapshot, (0, 0), 1.3)
    with pytest.raises(EnrolmentError) as info:
        enrolment_face(analyzer, blurred)
    assert info.value.reason == "too_blurry" and "override" in str(info.value)
    forced = enrolment_face(analyzer, blurred, override_quality=True)
    assert forced.note is not None and forced.note.startswith("override: too_blurry")


def test_template_strength_names_a_resident_with_one_weak_photo(tmp_path: Path, analyzer: FaceAnalyzer,
                                                               portrait) -> None:
    from gates.enrollment import enroll_person
    from gates.gallery import Gallery

    photo = tmp_path / "biden.jpg"
    cv2.imwrite(str(photo), portrait)
    with Gallery.open(tmp_path / "data", analyzer.model_id, 128, accept_threshold=0.97, margin=0.01) as gallery:
        one = enroll_person(gallery, analyzer, "biden", [photo])
        assert one.strength is not None and one.strength.weak and "enrol 1 more" in one.strength.advice
        two = enroll_person(gallery, analyzer, "biden", [photo])  # a second good photo (the same, here)
        assert two.strength is not None and not two.strength.weak and two.strength.enrolled == 2
