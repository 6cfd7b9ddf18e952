"""Face detectors on real photos: accuracy against dlib's hand-labelled boxes, and robustness.

Ground truth: dlib's imglab files in shared/data/groups (9 PASCAL VOC photos, 43 faces, 37-109 px).
A detection matches a labelled face one-to-one when their IoU is >= 0.3. dlib's boxes are tighter
and squarer than MTCNN's or YuNet's, but every labelled face's best match measured IoU >= 0.52
with all three detectors, so 0.3 separates hits from misses with room to spare; the median
matched IoU is asserted separately so that a drift in box geometry still fails.
Precision counts every unmatched detection as false, although some are real faces dlib left
unlabelled (5-15 px faces in 2008_004176 and 2008_002079): the floors allow for them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

from vision.detections import Detections
from vision.faces.analyzer import gate_detector
from vision.faces.mtcnn import MtcnnDetector
from vision.faces.yunet import YunetDetector
from vision.nms import iou_matrix, nms

MATCH_IOU = 0.3
DETECTORS = ("mtcnn", "yunet_s", "yunet_n")
# Measured on the 43 labelled faces: recall 43/43 for all three; precision 43/44 (MTCNN),
# 43/46 (YuNet-s), 43/50 (YuNet-n); median matched IoU 0.69, 0.72, 0.71.
RECALL_FLOOR = {"mtcnn": 0.95, "yunet_s": 0.95, "yunet_n": 0.95}
PRECISION_FLOOR = {"mtcnn": 0.93, "yunet_s": 0.9, "yunet_n": 0.82}
MEDIAN_IOU_FLOOR = 0.62
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def read_imglab(path: Path) -> dict[str, np.ndarray]:
    """File name -> (N,4) x1y1x2y2 boxes of an imglab XML, boxes marked ignore left out."""
    truth = {}
    for image in ET.parse(path).getroot().iter("image"):
        boxes = [[int(b.get(k, 0)) for k in ("left", "top", "width", "height")]
                 for b in image.iter("box") if b.get("ignore") != "1"]
        xywh = np.array(boxes, np.float32).reshape(-1, 4)
        truth[image.get("file", "")] = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    return truth


def match(truth: np.ndarray, found: np.ndarray, min_iou: float = MATCH_IOU) -> np.ndarray:
    """IoUs of the one-to-one pairs, greedily taken from the highest IoU down."""
    iou = iou_matrix(truth, found)
    pairs = []
    while iou.size and iou.max() >= min_iou:
        t, f = np.unravel_index(iou.argmax(), iou.shape)
        pairs.append(iou[t, f])
        iou[t, :], iou[:, f] = -1, -1
    return np.array(pairs, np.float32)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


@pytest.fixture(scope="module")
def mtcnn() -> MtcnnDetector:
    return MtcnnDetector.from_package()


@pytest.fixture(scope="module")
def yunet_s(shared_models: Path) -> YunetDetector:
    return YunetDetector(shared_models / "yunet_s_640_640.onnx")


@pytest.fixture(scope="module")
def yunet_n(shared_models: Path) -> YunetDetector:
    return YunetDetector(shared_models / "yunet_n_640_640.onnx")


@pytest.fixture(scope="module")
def mtcnn_40(mtcnn: MtcnnDetector) -> MtcnnDetector:
    """For the portraits, up to 2500 px wide with faces of hundreds of pixels: 40 px keeps the
    pyramid (and the suite) short. The default 20 px also measured 97/97 on faces/."""
    return MtcnnDetector(mtcnn.pnet, mtcnn.rnet, mtcnn.onet, min_face_size=40)


@pytest.fixture(scope="module", params=DETECTORS)
def detector(request: pytest.FixtureRequest) -> tuple[str, MtcnnDetector | YunetDetector]:
    return request.param, request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def groups_truth(shared_data: Path) -> dict[Path, np.ndarray]:
    """Labelled boxes of the dlib photos present in groups/ (copied there with a dlib_ prefix)."""
    groups = shared_data / "groups"
    truth = {}
    for xml in ("dlib_testing.xml", "dlib_training.xml"):
        for name, boxes in read_imglab(groups / xml).items():
            if (groups / f"dlib_{name}").exists():
                truth[groups / f"dlib_{name}"] = boxes
    if not truth:
        pytest.skip("none of dlib's labelled photos are in groups/")
    return truth


@pytest.fixture(scope="module")
def groups_found(detector, groups_truth) -> dict[Path, Detections]:
    return {path: detector[1].detect(cv2.imread(str(path))) for path in groups_truth}


@pytest.fixture(scope="module")
def face_photos(faces_dir: Path) -> dict[Path, np.ndarray]:
    return {path: cv2.imread(str(path)) for path in image_files(faces_dir)}


def test_groups_recall_and_precision(detector, groups_truth, groups_found) -> None:
    name = detector[0]
    matched_ious, labelled, detected = [], 0, 0
    for path, truth in groups_truth.items():
        found = groups_found[path]
        matched_ious.append(match(truth, found.boxes))
        labelled += len(truth)
        detected += len(found)
    ious = np.concatenate(matched_ious)
    recall, precision = len(ious) / labelled, len(ious) / max(detected, 1)
    summary = f"{name}: recall {len(ious)}/{labelled}, precision {len(ious)}/{detected}"
    assert recall >= RECALL_FLOOR[name], summary
    assert precision >= PRECISION_FLOOR[name], summary
    assert np.median(ious) >= MEDIAN_IOU_FLOOR, f"{summary}, median IoU {np.median(ious):.2f}"


def test_finds_a_face_in_nearly_every_portrait(detector, face_photos, mtcnn, mtcnn_40) -> None:
    name, found_by = detector
    found_by = mtcnn_40 if found_by is mtcnn else found_by
    missed = [path.name for path, image in face_photos.items() if not len(found_by.detect(image))]
    assert len(missed) <= 0.05 * len(face_photos), f"{name} found no face in {missed}"


def test_landmarks_come_in_arcface_order(detector, groups_found) -> None:
    """Image-left eye and mouth corner first, eyes above the nose, nose above the mouth."""
    points = np.concatenate([found.landmarks for found in groups_found.values()])
    eyes, nose, mouth = points[:, 0:2], points[:, 2], points[:, 3:5]
    ordered = ((eyes[:, 0, 0] < eyes[:, 1, 0]) & (mouth[:, 0, 0] < mouth[:, 1, 0])
               & (eyes[:, :, 1].max(axis=1) < nose[:, 1]) & (nose[:, 1] < mouth[:, :, 1].min(axis=1)))
    assert ordered.mean() >= 0.9, f"{detector[0]}: {ordered.sum()}/{len(ordered)} faces in ArcFace order"


def test_mtcnn_and_yunet_agree_on_landmarks(mtcnn_40, yunet_s, face_photos) -> None:
    """Two independent models placing each point within a fraction of the eye distance rules out
    a swapped or transposed landmark layout in either decoder."""
    errors = []
    for image in list(face_photos.values())[::4]:
        a, b = mtcnn_40.detect(image), yunet_s.detect(image)
        if len(a) and len(b):
            eye_distance = np.linalg.norm(b.landmarks[0, 0] - b.landmarks[0, 1])
            errors.append(np.linalg.norm(a.landmarks[0] - b.landmarks[0], axis=1).max() / eye_distance)
    assert len(errors) >= 20
    assert np.median(errors) < 0.2, f"median worst-point error {np.median(errors):.2f} eye distances"


def _square_canvas(image: np.ndarray, side: int = 640) -> np.ndarray:
    """The image letterboxed onto a side x side canvas, so both decoders see identical pixels."""
    ratio = side / max(image.shape[:2])
    resized = cv2.resize(image, (round(image.shape[1] * ratio), round(image.shape[0] * ratio)))
    canvas = np.zeros((side, side, 3), np.uint8)
    canvas[:resized.shape[0], :resized.shape[1]] = resized
    return canvas


@pytest.mark.parametrize("variant", ["s", "n"])
def test_yunet_decode_matches_opencv(variant, shared_models, shared_data) -> None:
    path = shared_models / f"yunet_{variant}_640_640.onnx"
    ours = YunetDetector(path)
    reference = cv2.FaceDetectorYN.create(str(path), "", (640, 640), 0.6, 0.3, 5000)
    compared = 0
    for photo in image_files(shared_data / "groups"):
        canvas = _square_canvas(cv2.imread(str(photo)))
        found = ours.detect(canvas)
        rows = reference.detect(canvas)[1]
        rows = np.zeros((0, 15), np.float32) if rows is None else rows
        assert len(found) == len(rows), photo.name
        if not len(rows):
            continue
        boxes = np.clip(np.concatenate([rows[:, :2], rows[:, :2] + rows[:, 2:4]], axis=1), 0, 640)
        pair = iou_matrix(found.boxes, boxes).argmax(axis=1)
        np.testing.assert_allclose(found.boxes, boxes[pair], atol=0.05, err_msg=photo.name)
        np.testing.assert_allclose(found.landmarks.reshape(-1, 10), rows[pair, 4:14], atol=0.05)
        np.testing.assert_allclose(found.scores, rows[pair, 14], atol=1e-4)
        compared += len(rows)
    assert compared >= 40


@pytest.fixture(scope="module")
def clip_frames(shared_data: Path) -> list[np.ndarray]:
    """Every 8th frame of the walking clip (1080p, faces 22-103 px)."""
    cap = cv2.VideoCapture(str(shared_data / "video" / "facenetpt_video.mp4"))
    frames = []
    while (ok_image := cap.read())[0]:
        frames.append(ok_image[1])
    cap.release()
    if not frames:
        pytest.skip("walking clip not available")
    return frames[::8]


@pytest.mark.parametrize("height", [1080, 720])
def test_yunet_sized_by_min_face_keeps_the_faces_that_matter(shared_models, clip_frames, height) -> None:
    """Shrunk so that a 60 px face is 20 px at the input (a third of the pixels per side), YuNet
    still finds the faces of 60 px and more that it finds on the full frame, in frame pixels,
    and drops the faces far below the minimum. Measured: 1080p all of them; 720p 11/12, the miss
    a half-turned face at the left edge (frame 88) that the full frame finds at 60 px."""
    path = shared_models / "yunet_s_640_640.onnx"
    full, gate = YunetDetector(path, input_size=1920), YunetDetector(path, min_face_size=60)
    frames = [cv2.resize(f, (f.shape[1] * height // 1080, height), interpolation=cv2.INTER_AREA)
              for f in clip_frames]
    assert gate._scale(*frames[0].shape[:2]).tolist() == pytest.approx([1 / 3, 1 / 3])
    wanted = found = 0
    for image, shrunk in zip(frames, gate.detect_many(frames), strict=True):
        reference = full.detect(image)
        big = reference[reference.shorter_side >= 60]
        wanted += len(big)
        if len(big) and len(shrunk):
            found += int((iou_matrix(big.boxes, shrunk.boxes).max(axis=1) >= MATCH_IOU).sum())
        assert np.all(shrunk.shorter_side >= 48)
        np.testing.assert_allclose(gate.detect(image).boxes, shrunk.boxes, atol=1e-3)
    assert wanted >= 5 and found >= 0.9 * wanted, f"{found}/{wanted} faces of 60 px or more"


def test_gate_detector_is_yunet_where_available_else_the_packs(shared_models, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GATEWATCH_MODEL_MIRROR", str(shared_models))
    assert gate_detector("open") == "yunet_s"
    monkeypatch.setenv("GATEWATCH_MODEL_MIRROR", str(tmp_path))
    monkeypatch.setenv("GATEWATCH_MODEL_CACHE", str(tmp_path))
    assert gate_detector("open") == "mtcnn"


def test_mtcnn_runs_rnet_and_onet_once_per_image(mtcnn, groups_truth, monkeypatch) -> None:
    calls = {"rnet": [], "onet": []}
    for net, sizes in calls.items():
        model = getattr(mtcnn, net)
        original = model.run

        def counted(batch: np.ndarray, original=original, sizes=sizes) -> list[np.ndarray]:
            sizes.append(len(batch))
            return original(batch)

        monkeypatch.setattr(model, "run", counted)
    found = mtcnn.detect(cv2.imread(str(next(iter(groups_truth)))))
    assert len(found) >= 1
    assert len(calls["rnet"]) == 1 and calls["rnet"][0] > len(found)
    assert len(calls["onet"]) == 1 and calls["onet"][0] >= len(found)


def test_detections_are_largest_first_and_inside_the_image(groups_found) -> None:
    for path, found in groups_found.items():
        assert np.all(np.diff(found.area) <= 0)
        height, width = cv2.imread(str(path)).shape[:2]
        assert np.all(found.boxes >= 0) and np.all(found.boxes[:, [0, 2]] <= width)
        assert np.all(found.boxes[:, [1, 3]] <= height)


@pytest.mark.parametrize("bad", [
    None,
    "photo.jpg",
    np.zeros((0, 0, 3), np.uint8),
    np.zeros((480, 0, 3), np.uint8),
    np.zeros((480, 640), np.uint8),
    np.zeros((480, 640, 4), np.uint8),
    np.zeros((480, 640, 3), np.float32),
    np.zeros((2, 480, 640, 3), np.uint8),
], ids=["none", "path", "empty", "zero-width", "grey", "bgra", "float", "batch"])
def test_rejects_what_is_not_a_bgr_image(detector, bad) -> None:
    with pytest.raises(ValueError):
        detector[1].detect(bad)


@pytest.mark.parametrize("payload", ["garbage", "truncated"])
def test_corrupt_file_is_rejected(detector, payload, groups_truth) -> None:
    """cv2 decodes a corrupt or truncated JPEG to None, which must fail loudly, not find 0 faces."""
    jpeg = next(iter(groups_truth)).read_bytes()
    data = b"\xff\xd8 not a jpeg" if payload == "garbage" else jpeg[:len(jpeg) // 2]
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    with pytest.raises(ValueError):
        detector[1].detect(image)


@pytest.mark.parametrize("shape", [(480, 640, 3), (5, 7, 3), (1, 1, 3)])
def test_blank_or_tiny_image_has_no_faces(detector, shape) -> None:
    found = detector[1].detect(np.zeros(shape, np.uint8))
    assert isinstance(found, Detections) and len(found) == 0
    assert found.landmarks is not None and found.landmarks.shape == (0, 5, 2)


def test_constructors_reject_bad_settings(mtcnn, shared_models) -> None:
    nets = (mtcnn.pnet, mtcnn.rnet, mtcnn.onet)
    for settings in ({"min_face_size": 0}, {"scale_factor": 1.0}, {"thresholds": (0.6, 0.7)}):
        with pytest.raises(ValueError):
            MtcnnDetector(*nets, **settings)
    for settings in ({"input_size": 300}, {"min_face_size": 0}):
        with pytest.raises(ValueError):
            YunetDetector(shared_models / "yunet_s_640_640.onnx", **settings)


def test_nms_matches_opencv_and_min_mode_drops_nested_boxes() -> None:
    rng = np.random.default_rng(7)
    corner = rng.uniform(0, 600, (500, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(12, 80, (500, 1))], axis=1).astype(np.float32)
    scores = rng.uniform(0.5, 1, 500).astype(np.float32)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    expected = np.asarray(cv2.dnn.NMSBoxes(xywh, scores, 0.0, 0.4)).reshape(-1)
    np.testing.assert_array_equal(nms(boxes, scores, 0.4), expected)

    outer, inner = [0, 0, 100, 100], [10, 10, 50, 50]  # IoU 0.16, but inner lies wholly inside
    nested = np.array([outer, inner], np.float32)
    assert len(nms(nested, np.array([0.9, 0.8]), 0.5)) == 2
    assert nms(nested, np.array([0.9, 0.8]), 0.5, mode="min").tolist() == [0]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)
