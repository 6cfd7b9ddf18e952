"""dlib's 5-point shape predictor parsed and run in numpy (models/dlib_shape_predictor.py,
vision/landmarks.py).

The reference is dlib itself (dlib-bin, a test-only dependency) with the CC0 model from
face_recognition_models, on the real photos of shared/data/faces. Both skip cleanly when absent;
the parser and runner semantics are also checked on a tiny hand-made model that needs neither.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.dlib_serialize import DlibFormatError
from models.dlib_shape_predictor import load_shape_predictor, parse_shape_predictor
from vision.align import rect_from_landmarks
from vision.landmarks import ShapePredictor

MAX_SIDE = 640  # photos are scaled down so the reference detector stays fast


# --- a tiny model written in dlib's serialization ------------------------------------------


def _int(value: int) -> bytes:
    magnitude = abs(value).to_bytes(8, "little").rstrip(b"\0")
    return bytes([len(magnitude) | (0x80 if value < 0 else 0)]) + magnitude


def _float(value: float) -> bytes:
    mantissa, exponent = math.frexp(value)
    return _int(int(mantissa * 2**24)) + _int(exponent - 24)


def _column(values: list[float]) -> bytes:
    return _int(-len(values)) + _int(-1) + b"".join(_float(v) for v in values)


def _tiny_model(split: tuple[int, int, float] = (0, 1, 10.0), leaf_len: int = 4) -> bytes:
    """Two landmarks at (0.25, 0.5) and (0.75, 0.5); one cascade of one depth-1 tree comparing
    the pixel under landmark 0 with the pixel under landmark 1. The left leaf (taken when
    pixel0 - pixel1 > thresh) moves both points right by 0.1 box widths, the right leaf left."""
    tree = (
        _int(1)
        + _int(split[0])
        + _int(split[1])
        + _float(split[2])
        + _int(2)
        + _column([0.1, 0.0, 0.1, 0.0][:leaf_len] + [0.0] * (leaf_len - 4))
        + _column([-0.1, 0.0, -0.1, 0.0][:leaf_len] + [0.0] * (leaf_len - 4))
    )
    anchors = _int(1) + _int(2) + _int(0) + _int(1)
    deltas = _int(1) + _int(2) + b"".join(_float(0.0) for _ in range(4))
    return _int(1) + _column([0.25, 0.5, 0.75, 0.5]) + _int(1) + _int(1) + tree + anchors + deltas


def test_tiny_model_parses_into_dense_arrays() -> None:
    model = parse_shape_predictor(_tiny_model())
    assert model.num_parts == 2 and model.num_cascades == 1 and model.tree_depth == 1
    np.testing.assert_array_equal(model.initial_shape, [[0.25, 0.5], [0.75, 0.5]])
    assert model.split_idx1.tolist() == [[[0]]] and model.split_idx2.tolist() == [[[1]]]
    assert model.split_thresh.tolist() == [[[10.0]]]
    np.testing.assert_allclose(model.leaf_values[0, 0, :, :, 0], [[0.1, 0.1], [-0.1, -0.1]], atol=1e-7)
    assert model.anchor_idx.tolist() == [[0, 1]]


@pytest.mark.parametrize(
    ("bright_x", "box_left", "expected_x"),
    [
        (25, 0, [35, 85]),  # pixel0 - pixel1 = 200 > 10: left leaf, +10 px
        (75, 0, [15, 65]),  # -200: right leaf, -10 px
        (25, -50, [-35, 15]),  # landmark 0 off the image reads 0: 0 - 200, right leaf
    ],
)
def test_tiny_model_follows_dlib_semantics(bright_x: int, box_left: int, expected_x: list[int]) -> None:
    image = np.zeros((101, 101, 3), np.uint8)
    image[50, bright_x] = (30, 60, 90)  # dlib's grey is (B+G+R)//3 = 60
    box = np.array([[box_left, 0, box_left + 100, 100]])
    points = ShapePredictor(parse_shape_predictor(_tiny_model())).predict(image, box)
    assert points.shape == (1, 2, 2) and points.dtype == np.float32
    np.testing.assert_allclose(points[0], [[expected_x[0], 50], [expected_x[1], 50]], atol=1e-4)


def test_no_boxes_gives_no_landmarks() -> None:
    predictor = ShapePredictor(parse_shape_predictor(_tiny_model()))
    assert predictor.predict(np.zeros((10, 10), np.uint8), np.zeros((0, 4))).shape == (0, 2, 2)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        _tiny_model()[:-3],  # truncated
        _tiny_model() + b"\x00",  # not at EOF after the model
        _int(2) + _tiny_model()[2:],  # unknown version
        _tiny_model(split=(0, 5, 1.0)),  # split feature index out of range
        _tiny_model(leaf_len=6),  # leaf vectors of the wrong length
        bytes(range(256)) * 4,
    ],
    ids=["empty", "truncated", "trailing", "version", "feature-index", "leaf-size", "garbage"],
)
def test_bad_bytes_raise_format_error(data: bytes) -> None:
    with pytest.raises(DlibFormatError):
        parse_shape_predictor(data)


# --- the real model against dlib -------------------------------------------------------------


@pytest.fixture(scope="module")
def model_path() -> Path:
    models = pytest.importorskip("face_recognition_models", reason="dlib's CC0 models package")
    path = Path(models.__file__).parent / "models" / "shape_predictor_5_face_landmarks.dat"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="module")
def predictor(model_path: Path) -> ShapePredictor:
    return ShapePredictor(model_path)


@pytest.mark.parametrize("cut", [1, 1000, 4_000_000, -1])
def test_truncated_real_model_raises(model_path: Path, cut: int) -> None:
    with pytest.raises(DlibFormatError):
        parse_shape_predictor(model_path.read_bytes()[:cut])


def test_real_model_layout(predictor: ShapePredictor) -> None:
    model = predictor.model
    assert model.initial_shape.shape == (5, 2)
    assert model.split_idx1.shape == (15, 500, 15) and model.leaf_values.shape == (15, 500, 16, 5, 2)
    assert model.deltas.shape == (15, 800, 2)


def test_other_dlib_model_is_rejected(model_path: Path) -> None:
    other = model_path.with_name("dlib_face_recognition_resnet_model_v1.dat")
    if not other.exists():
        pytest.skip("no other dlib model to try")
    with pytest.raises(DlibFormatError):
        load_shape_predictor(other)


@pytest.fixture(scope="module")
def reference(faces_dir: Path, model_path: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(BGR image, dlib detector boxes (N,4), dlib predictor landmarks (N,5,2)) for every third
    photo, scaled to MAX_SIDE."""
    dlib = pytest.importorskip("dlib", reason="dlib is the reference implementation")
    detector = dlib.get_frontal_face_detector()
    shape_predictor = dlib.shape_predictor(str(model_path))
    samples = []
    for path in sorted(faces_dir.glob("*/*.jpg"))[::3]:
        image = _load(path)
        rgb = np.ascontiguousarray(image[..., ::-1])
        rects = detector(rgb, 0)
        if not rects:
            continue
        boxes = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float64)
        shapes = [shape_predictor(rgb, r) for r in rects]
        points = np.array([[[p.x, p.y] for p in s.parts()] for s in shapes], np.float64)
        samples.append((image, boxes, points))
    if len(samples) < 10:
        pytest.skip("too few faces found by dlib's detector")
    return samples


def _load(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    scale = MAX_SIDE / max(image.shape[:2])
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image


def test_matches_dlib_on_dlib_boxes(predictor: ShapePredictor, reference: list) -> None:
    """Measured on the 32 faces here (and on all 95 of faces/ at 500-1024 px): every
    landmark identical to dlib's, mean error 0.000 px."""
    errors = np.concatenate(
        [np.linalg.norm(predictor.predict(img, boxes) - points, axis=-1) for img, boxes, points in reference]
    )
    assert errors.mean() < 0.5
    assert np.mean(np.all(errors == 0, axis=1)) >= 0.9, "dlib's landmarks are reproduced exactly"


def test_subpixel_keeps_the_fraction(predictor: ShapePredictor, reference: list) -> None:
    image, boxes, points = reference[0]
    fine = predictor.predict(image, boxes, subpixel=True)
    assert np.all(np.abs(fine - points) <= 0.5 + 1e-4) and np.any(fine != np.round(fine))


def test_boxes_from_yunet_points_reach_dlibs_landmarks(
    predictor: ShapePredictor, reference: list, shared_models: Path
) -> None:
    """rect_from_landmarks(YuNet's 5 points) instead of dlib's detector box. Measured on these
    faces: mean 0.35 px (0.6% of the inter-ocular distance), worst face 0.85 px (1.6%)."""
    errors, relative = [], []
    for image, boxes, points in reference:
        detector_points = _yunet_points(image, boxes, shared_models / "yunet_s_640_640.onnx")
        for box_index, yunet in detector_points:
            ours = predictor.predict(image, rect_from_landmarks(yunet[None]))[0]
            err = np.linalg.norm(ours - points[box_index], axis=-1).mean()
            eye_dist = np.linalg.norm(points[box_index, :2].mean(0) - points[box_index, 2:4].mean(0))
            errors.append(err)
            relative.append(err / eye_dist)
    assert len(errors) >= 0.9 * sum(len(b) for _, b, _ in reference)
    assert np.mean(errors) < 1.0 and np.mean(relative) < 0.015
    assert np.max(relative) < 0.05


def _yunet_points(image: np.ndarray, boxes: np.ndarray, path: Path) -> list[tuple[int, np.ndarray]]:
    """YuNet's 5 points for each dlib box that a YuNet face overlaps (IoU >= 0.3)."""
    if not path.exists():
        pytest.skip(f"{path} not found")
    height, width = image.shape[:2]
    yunet = cv2.FaceDetectorYN.create(str(path), "", (width, height), 0.6, 0.3, 5000)
    _, faces = yunet.detect(image)
    if faces is None:
        return []
    yunet_boxes = np.concatenate([faces[:, :2], faces[:, :2] + faces[:, 2:4]], axis=1)
    matched = []
    for index, box in enumerate(boxes):
        iou = _iou(box, yunet_boxes)
        if iou.max() >= 0.3:
            matched.append((index, faces[iou.argmax(), 4:14].reshape(5, 2).astype(np.float64)))
    return matched


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    low = np.maximum(box[:2], others[:, :2])
    high = np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    return inter / (area + np.prod(others[:, 2:] - others[:, :2], axis=1) - inter)
