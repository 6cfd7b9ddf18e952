"""Face detection -> alignment -> embedding, as one object built from a model pack.

The aligner is chosen by the embedder, not the detector: dlib's ResNet was trained on dlib's
own 150x150 chips (from its 5-point shape predictor), ArcFace-format models on the 112x112
five-point template. Chips of all faces (of one or many images) are embedded in one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from models.preprocess import Preprocess
from models.runtime import OrtModel
from vision.detections import Detections
from vision.faces.align import arcface_transforms, dlib_chip_transforms, rect_from_landmarks, warp_chips
from vision.faces.landmarks import ShapePredictor
from vision.faces.quality import FaceQuality, QualityLimits, assess


class FaceDetector(Protocol):
    def detect(self, image_bgr: np.ndarray) -> Detections: ...


class Aligner(Protocol):
    size: int

    def chips(self, image_bgr: np.ndarray, faces: Detections) -> np.ndarray: ...


class DlibAligner:
    """dlib's get_face_chip geometry from dlib's own 5 points (eye corners, nose base)."""

    def __init__(self, predictor: ShapePredictor, size: int = 150, padding: float = 0.25) -> None:
        self.predictor = predictor
        self.size = size
        self.padding = padding

    def chips(self, image_bgr: np.ndarray, faces: Detections) -> np.ndarray:
        if len(faces) == 0:
            return np.zeros((0, self.size, self.size, 3), np.uint8)
        points = self.predictor.predict(image_bgr, rect_from_landmarks(faces.landmarks))
        return warp_chips(image_bgr, dlib_chip_transforms(points, self.size, self.padding), self.size)


class ArcFaceAligner:
    """The ArcFace five-point template, scaled to the embedder's input size; chips cut as
    insightface's norm_crop cuts them (cv2.warpAffine, rounded, black outside, no pyramid)."""

    def __init__(self, size: int = 112) -> None:
        self.size = size

    def chips(self, image_bgr: np.ndarray, faces: Detections) -> np.ndarray:
        chips = np.zeros((len(faces), self.size, self.size, 3), np.uint8)
        if len(faces):
            for chip, tform in zip(chips, arcface_transforms(faces.landmarks, self.size), strict=True):
                chip[...] = cv2.warpAffine(image_bgr, tform, (self.size, self.size), borderValue=0)
        return chips


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class Embedder:
    """Aligned chips -> L2-normalised embeddings, in batches.

    With flip_average, each chip is embedded with its mirror image and the two unit vectors are
    averaged: measured on faces/ with dlib's ResNet, this raised the open-set match rate at 0 %
    false accepts from 0.949 to 0.975 for the cost of a second (batched) forward pass.
    """

    def __init__(self, model: OrtModel, preprocess: Preprocess, model_id: str, *,
                 flip_average: bool = True) -> None:
        self.model = model
        self.preprocess = preprocess
        self.model_id = model_id
        self.flip_average = flip_average
        self.dim = int(model.session.get_outputs()[0].shape[-1])

    def __call__(self, chips_bgr: np.ndarray) -> np.ndarray:
        count = len(chips_bgr)
        if count == 0:
            return np.zeros((0, self.dim), np.float32)
        batch = np.concatenate([chips_bgr, chips_bgr[:, :, ::-1]]) if self.flip_average else chips_bgr
        raw = _l2_normalise(self.model.run(self.preprocess(batch))[0].reshape(len(batch), -1))
        return _l2_normalise(raw[:count] + raw[count:]) if self.flip_average else raw


@dataclass(frozen=True)
class Faces:
    """The faces of one image, largest first, with their chips, embeddings and quality."""

    detections: Detections
    chips: np.ndarray
    embeddings: np.ndarray
    quality: tuple[FaceQuality, ...]

    def __len__(self) -> int:
        return len(self.detections)


class FaceAnalyzer:
    def __init__(self, detector: FaceDetector, aligner: Aligner, embedder: Embedder,
                 quality_limits: QualityLimits = QualityLimits()) -> None:
        self.detector = detector
        self.aligner = aligner
        self.embedder = embedder
        self.quality_limits = quality_limits

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    def analyze(self, image_bgr: np.ndarray, max_faces: int | None = None) -> Faces:
        return self.analyze_many([image_bgr], max_faces)[0]

    def analyze_many(self, images_bgr: Sequence[np.ndarray], max_faces: int | None = None) -> list[Faces]:
        """Detect and align per image, then embed every chip of every image in one batch."""
        per_image = []
        for image in images_bgr:
            faces = self.detector.detect(image).largest_first()
            if max_faces is not None:
                faces = faces[:max_faces]
            chips = self.aligner.chips(image, faces)
            per_image.append((faces, chips))
        all_chips = [chips for _, chips in per_image if len(chips)]
        embeddings = self.embedder(np.concatenate(all_chips)) if all_chips else None
        results, start = [], 0
        for faces, chips in per_image:
            count = len(faces)
            emb = (embeddings[start:start + count] if embeddings is not None
                   else np.zeros((0, self.embedder.dim), np.float32))
            start += count
            quality = tuple(assess(faces.boxes[i], faces.landmarks[i], chips[i], self.quality_limits)
                            for i in range(count))
            results.append(Faces(faces, chips, emb, quality))
        return results


def build_analyzer(pack: str = "open", *, min_face_size: int = 40, detector: str | None = None,
                   detector_path: Path | None = None, embedder_path: Path | None = None,
                   allow_download: bool | None = None) -> FaceAnalyzer:
    """A FaceAnalyzer for a registry pack, optionally with user-supplied insightface-format ONNX files.

    min_face_size sizes the detector's work to the smallest face that matters (MTCNN's pyramid,
    YuNet's input), so a gate camera deciding on faces of 60 px or more should say so. `detector`
    swaps the pack's detector for another registry detector, e.g. "yunet_s" for the `open` pack's
    gate cameras where it is available offline (several times cheaper than MTCNN, benchmarks/bench_gates).
    """
    from models import registry
    from vision.faces.insightface_models import load_arcface_embedder, load_scrfd_detector

    spec = registry.get_pack(pack)
    if detector_path is not None:
        face_detector: FaceDetector = load_scrfd_detector(detector_path)
    else:
        face_detector = _registry_detector(detector or spec.detector, min_face_size, allow_download)
    if embedder_path is not None:
        embedder, input_size = load_arcface_embedder(embedder_path)
        return FaceAnalyzer(face_detector, ArcFaceAligner(input_size), embedder)
    entry = registry.get_entry(spec.embedder)
    model = OrtModel(registry.resolve_onnx(entry, allow_download=allow_download))
    embedder = Embedder(model, entry.preprocess or Preprocess(), entry.id)
    if entry.alignment == "dlib5":
        landmarks = registry.get_entry(spec.landmarks or "dlib_shape_predictor_5")
        predictor = ShapePredictor(registry.resolve_file(landmarks.files[0]))
        aligner: Aligner = DlibAligner(predictor, entry.input_size or 150)
    else:
        aligner = ArcFaceAligner(entry.input_size or 112)
    return FaceAnalyzer(face_detector, aligner, embedder)


def gate_detector(pack: str = "open") -> str:
    """The registry detector a gate camera should run: YuNet-s where its file is available offline
    (mirror or cache), else the pack's own, so the PyPI-only `open` pack keeps working anywhere.

    At a gate's minimum face YuNet-s costs a fraction of MTCNN (benchmarks/bench_streams: 720p,
    min face 60, 183 vs 13 frames/s detection alone) and decided the walking clip as MTCNN does:
    the enrolled walker unlocked once, everyone else unknown (benchmarks/bench_gates).
    """
    from models import registry

    if all(found.problem is None for found in registry.status("yunet_s")):
        return "yunet_s"
    return registry.get_pack(pack).detector


def for_gate_cameras(analyzer: FaceAnalyzer, pack: str = "open", *, min_face_size: int = 40,
                     detector: str | None = None) -> FaceAnalyzer:
    """The analyzer as gate cameras run it: the gate detector (`gate_detector` unless `detector`
    names another, sized to the smallest face a gate decides on), the same aligner and embedding
    network (templates stay comparable), but no flip averaging.

    A photo is one look and gains from its mirror image; a gate track already votes k of n over
    several frames, and the mirror pass doubles a camera's dearest step. Measured with dlib's ResNet,
    probes embedded once against flip-averaged templates: faces/ 0.975 genuine match rate as with
    flip (no false accept either way), faces_east_asian/ 48 of 56 genuine matches instead of 51
    and 17 of 69 impostor accepts instead of 20; bench_gates carries one 720p camera more."""
    gate_detector_ = _registry_detector(detector or gate_detector(pack), min_face_size, None)
    shared = analyzer.embedder
    embedder = Embedder(shared.model, shared.preprocess, shared.model_id, flip_average=False)
    return FaceAnalyzer(gate_detector_, analyzer.aligner, embedder, analyzer.quality_limits)


def _registry_detector(model_id: str, min_face_size: int, allow_download: bool | None) -> FaceDetector:
    from models import registry
    from vision.faces.mtcnn import MtcnnDetector
    from vision.faces.yunet import YunetDetector

    entry = registry.get_entry(model_id)
    if entry.kind != "detector":
        raise ValueError(f"{model_id!r} is a {entry.kind}, not a face detector")
    paths = [registry.resolve_file(f, allow_download=allow_download) for f in entry.files]
    if model_id == "mtcnn":
        return MtcnnDetector(*(OrtModel(p) for p in paths), min_face_size=min_face_size)
    return YunetDetector(paths[0], min_face_size=min_face_size)
