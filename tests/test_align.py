"""Alignment to each embedder's chip geometry (vision/faces/align.py).

dlib's chips are checked against dlib's get_face_chip on the real photos of shared/data/faces;
ArcFace chips against the template and insightface's norm_crop. Tests needing the photos,
dlib or the CC0 model package skip cleanly without them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vision.faces.align import (
    ARCFACE_TEMPLATE,
    DLIB_CHIP_TEMPLATE,
    arcface_transforms,
    dlib_chip_transforms,
    invert_affine,
    pyramid_down,
    rect_from_landmarks,
    similarity_transforms,
    warp_chips,
)

MAX_SIDE = 1024  # large enough that most chips come from a shrunk pyramid level, as in dlib


def _similarity(scale: float, angle: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def _apply(tform: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ tform[:2, :2].T + tform[:2, 2]


# --- geometry, no data needed ----------------------------------------------------------------


def test_similarity_transforms_recover_a_known_similarity() -> None:
    truth = _similarity(2.5, 0.3, (40.0, -12.0))
    points = ARCFACE_TEMPLATE + np.random.default_rng(0).normal(0, 0.01, (5, 2))
    fitted = similarity_transforms(points, _apply(truth, points))
    np.testing.assert_allclose(fitted[0], truth, atol=1e-9)


def test_arcface_template_maps_onto_itself() -> None:
    tform = arcface_transforms(ARCFACE_TEMPLATE[None])
    np.testing.assert_allclose(tform[0], [[1, 0, 0], [0, 1, 0]], atol=1e-9)


def test_arcface_undoes_a_similarity_of_the_face() -> None:
    truth = _similarity(3.0, -0.4, (500.0, 300.0))
    tform = arcface_transforms(_apply(truth, ARCFACE_TEMPLATE)[None])[0]
    np.testing.assert_allclose(tform, invert_affine(truth), atol=1e-9)


@pytest.mark.parametrize(("size", "scale", "shift"), [(224, 2.0, 0.0), (128, 1.0, 8.0)])
def test_arcface_other_sizes_follow_insightface(size: int, scale: float, shift: float) -> None:
    tform = arcface_transforms(ARCFACE_TEMPLATE[None], size)[0]
    expected = ARCFACE_TEMPLATE * scale + [shift, 0]
    np.testing.assert_allclose(_apply(tform, ARCFACE_TEMPLATE), expected, atol=1e-9)


def test_arcface_matches_skimage_estimate() -> None:
    """insightface's norm_crop estimates with skimage's SimilarityTransform (Umeyama)."""
    transform = pytest.importorskip("skimage.transform")
    points = ARCFACE_TEMPLATE * 2.2 + np.random.default_rng(1).normal(0, 3, (5, 2)) + 100
    if hasattr(transform.SimilarityTransform, "from_estimate"):  # skimage >= 0.26
        reference = transform.SimilarityTransform.from_estimate(points, ARCFACE_TEMPLATE)
    else:
        reference = transform.SimilarityTransform()
        reference.estimate(points, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(arcface_transforms(points[None])[0], reference.params[:2], atol=1e-9)


def test_dlib_chip_transform_puts_landmarks_on_dlibs_template() -> None:
    """A face that is exactly dlib's template at 3 times the chip's scale lands on the template
    in the chip up to dlib's own quirks: the chip rectangle is centred on the image of chip
    point (75, 75) but spans chip pixels 0..149 (centre 74.5), and it is 150*3 pixels wide
    counted inclusively, so 449 image pixels stretch over 149 chip pixels (0.4%, up to 0.7 px)."""
    template = (0.25 + DLIB_CHIP_TEMPLATE) / 1.5 * 150
    tform = dlib_chip_transforms((template * 3 + 40)[None])[0]
    expected = (template - 75) * 3 / (449 / 149) + 74.5
    np.testing.assert_allclose(_apply(tform, template * 3 + 40), expected, atol=1e-9)


def test_warp_chips_edge_cases() -> None:
    image = np.full((60, 80, 3), 200, np.uint8)
    assert warp_chips(image, np.zeros((0, 2, 3)), 150).shape == (0, 150, 150, 3)
    far_away = _similarity(1.0, 0.0, (-1000.0, -1000.0))[None]
    assert not warp_chips(image, far_away, 50).any(), "outside the image is black"
    identity = _similarity(1.0, 0.0, (0.0, 0.0))[None]
    chip = warp_chips(image[..., 0], identity, 50)
    assert chip.shape == (1, 50, 50) and np.all(chip == 200)


def test_rect_from_landmarks_follows_the_face() -> None:
    truth = _similarity(2.0, 0.2, (300.0, 200.0))
    base, moved = rect_from_landmarks(np.stack([ARCFACE_TEMPLATE, _apply(truth, ARCFACE_TEMPLATE)]))
    assert np.isclose(base[2] - base[0], base[3] - base[1]), "square and axis-aligned, like dlib's"
    np.testing.assert_allclose(moved[2:] - moved[:2], 2 * (base[2:] - base[:2]))
    np.testing.assert_allclose((moved[:2] + moved[2:]) / 2, _apply(truth, (base[:2] + base[2:]) / 2))


# --- against dlib on real photos -------------------------------------------------------------


@pytest.fixture(scope="module")
def dlib():
    return pytest.importorskip("dlib", reason="dlib is the reference implementation")


def test_pyramid_down_matches_dlib(dlib) -> None:
    rng = np.random.default_rng(2)
    for shape in [(9, 9, 3), (10, 13, 3), (57, 64, 3), (100, 81), (301, 257, 3)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_array_equal(pyramid_down(image), dlib.pyramid_down(2)(image))


@pytest.fixture(scope="module")
def dlib_faces(faces_dir: Path, dlib) -> list[tuple[np.ndarray, list]]:
    """(RGB image, dlib full_object_detections) for every ninth photo, scaled to MAX_SIDE."""
    models = pytest.importorskip("face_recognition_models", reason="dlib's CC0 models package")
    model_dir = Path(models.__file__).parent / "models"
    predictor = dlib.shape_predictor(str(model_dir / "shape_predictor_5_face_landmarks.dat"))
    detector = dlib.get_frontal_face_detector()
    samples = []
    for path in sorted(faces_dir.glob("*/*.jpg"))[::9]:
        image = cv2.imread(str(path))
        scale = MAX_SIDE / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        rgb = np.ascontiguousarray(image[..., ::-1])
        shapes = [predictor(rgb, rect) for rect in detector(rgb, 0)]
        if shapes:
            samples.append((rgb, shapes))
    if len(samples) < 5:
        pytest.skip("too few faces found by dlib's detector")
    return samples


def _points(shape) -> np.ndarray:
    return np.array([[p.x, p.y] for p in shape.parts()], np.float64)


def test_dlib_chip_geometry_matches_get_face_chip_details(dlib, dlib_faces: list) -> None:
    for _, shapes in dlib_faces:
        for shape in shapes:
            details = dlib.get_face_chip_details(shape, 150, 0.25)
            chip_to_image = invert_affine(dlib_chip_transforms(_points(shape)[None]))[0]
            centre = _apply(chip_to_image, np.array([74.5, 74.5]))
            rect = details.rect
            rect_centre = [(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2]
            np.testing.assert_allclose(centre, rect_centre)
            width = np.linalg.norm(chip_to_image[:, 0]) * 149 + 1
            np.testing.assert_allclose(width, rect.right() - rect.left() + 1)
            assert np.isclose(np.arctan2(chip_to_image[1, 0], chip_to_image[0, 0]), details.angle)


def test_chips_match_dlib_get_face_chip(dlib, dlib_faces: list) -> None:
    """Measured on these 11 faces (and on all 95 of faces/ at 500-1024 px, and on random boxes
    partly off the image with pyramid depths 0-3): identical to dlib's chips, mean absolute
    difference 0.000 grey levels. Without the pyramid these chips differ from dlib's by 1.2 grey
    levels on average, 4.1 on the worst face; on faces/ at 1600 px that moved dlib's own face
    descriptor by 0.027 on average and 0.10 at worst (its match threshold is 0.6)."""
    diffs, no_pyramid = [], []
    for rgb, shapes in dlib_faces:
        transforms = dlib_chip_transforms(np.stack([_points(s) for s in shapes]))
        ours, plain = warp_chips(rgb, transforms, 150), warp_chips(rgb, transforms, 150, pyramid=False)
        for chip, plain_chip, shape in zip(ours, plain, shapes, strict=True):
            reference = dlib.get_face_chip(rgb, shape, 150, 0.25).astype(np.int16)
            diffs.append(np.abs(chip - reference).mean())
            no_pyramid.append(np.abs(plain_chip - reference).mean())
    assert np.mean(diffs) < 0.5 and np.max(diffs) < 2.0
    assert max(no_pyramid) > 0.1, "these faces are large enough for dlib's pyramid to matter"


def test_arcface_aligns_real_faces(faces_dir: Path, shared_models: Path) -> None:
    """YuNet's points land within a few pixels of the template (a face is not the template's
    shape exactly; measured 3.4 px mean, 4.6 worst); the chips are insightface's own norm_crop's, up
    to its float32 template (measured 2 pixels in 37,632 one grey level off)."""
    from insightface.utils.face_align import norm_crop

    from vision.detections import Detections
    from vision.faces.analyzer import ArcFaceAligner

    residuals, off = [], []
    for path in sorted(faces_dir.glob("*/*.jpg"))[::9]:
        image = cv2.imread(str(path))
        scale = 640 / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        yunet = cv2.FaceDetectorYN.create(
            str(shared_models / "yunet_s_640_640.onnx"), "", image.shape[1::-1], 0.6, 0.3, 5000
        )
        _, faces = yunet.detect(image)
        if faces is None:
            continue
        points = faces[:, 4:14].reshape(-1, 5, 2).astype(np.float64)
        transforms = arcface_transforms(points)
        chips = ArcFaceAligner().chips(image, Detections(faces[:, :4], faces[:, 14], points.astype(np.float32)))
        for tform, face_points, chip in zip(transforms, points, chips, strict=True):
            residuals.append(np.linalg.norm(_apply(tform, face_points) - ARCFACE_TEMPLATE, axis=1).mean())
            diff = np.abs(chip.astype(np.int16) - norm_crop(image, face_points.astype(np.float32)))
            assert diff.max() <= 1
            off.append(np.mean(diff > 0))
    assert len(residuals) >= 5 and np.mean(off) < 1e-3
    assert np.mean(residuals) < 5.0 and np.max(residuals) < 8.0
