"""User-supplied ONNX files in the common insightface formats (SCRFD detector, ArcFace embedder).

insightface's own model_zoo classes read these formats (output layout, anchors, the input
mean/std heuristics); we hand them sessions made by models.runtime so that threads and providers
are chosen in one place, and give each file a model id derived from its checksum so that its
templates are never compared with another model's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.preprocess import Preprocess
from models.registry import sha256_of
from models.runtime import OrtModel
from vision.detections import Detections


class UnsupportedModelError(ValueError):
    """The ONNX file is not in the format it was offered as."""


def user_model_id(path: Path) -> str:
    return f"onnx-{sha256_of(Path(path))[:16]}"


def load_arcface_embedder(path: str | Path):
    """An Embedder for an ArcFace-format file (square >= 112 input, one embedding output)."""
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    from vision.faces.analyzer import Embedder

    path = _existing(path)
    model = OrtModel(path)
    shape = model.input_shape
    if len(shape) != 4 or shape[2] != shape[3] or not isinstance(shape[2], int) or shape[2] < 112:
        raise UnsupportedModelError(f"{path}: input shape {shape} is not ArcFace-format [N,3,S,S], S >= 112")
    if len(model.output_names) != 1:
        raise UnsupportedModelError(f"{path}: {len(model.output_names)} outputs; an embedder has one")
    reference = ArcFaceONNX(model_file=str(path), session=model.session)
    mean, std = float(reference.input_mean), float(reference.input_std)
    preprocess = Preprocess("RGB", (mean, mean, mean), (std, std, std))
    return Embedder(model, preprocess, user_model_id(path)), int(shape[2])


class ScrfdDetector:
    """insightface's SCRFD decoding over our session; returns the gatewatch Detections currency."""

    def __init__(self, path: str | Path, score_threshold: float = 0.5, input_size: int = 640) -> None:
        from insightface.model_zoo.scrfd import SCRFD

        path = _existing(path)
        model = OrtModel(path)
        if len(model.output_names) not in (6, 9, 10, 15):
            raise UnsupportedModelError(f"{path}: {len(model.output_names)} outputs is not an SCRFD layout")
        self._scrfd = SCRFD(model_file=str(path), session=model.session)
        if not self._scrfd.use_kps:
            raise UnsupportedModelError(f"{path}: this SCRFD has no landmarks; alignment needs them")
        self.score_threshold = score_threshold
        self.input_size = (input_size, input_size)

    def detect(self, image_bgr: np.ndarray) -> Detections:
        boxes, points = self._scrfd.detect(image_bgr, input_size=self.input_size,
                                           det_thresh=self.score_threshold)
        if len(boxes) == 0:
            return Detections.empty()
        return Detections(boxes[:, :4], boxes[:, 4], points)


def load_scrfd_detector(path: str | Path) -> ScrfdDetector:
    return ScrfdDetector(path)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} not found")
    return path
