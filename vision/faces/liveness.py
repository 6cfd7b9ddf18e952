"""Passive liveness: is the face in front of the camera a person, or a photo/screen held up to it?

The default is the MiniFASNet pair (Silent-Face-Anti-Spoofing, Apache-2.0): two small networks
that see the face at different context scales (2.7x and 4.0x the box), because the tell-tale signs
of a recapture - screen bezels, paper edges, moire, flat lighting - sit partly around the face. Their
softmax outputs are averaged and the face is real when "real" is the most likely class, as in the
reference method. Each network must be fed exactly as it was trained (crop, size, channel order,
scaling), so every member carries its own crop and preprocessing.

A single frame is easy to get wrong under motion blur or odd light; :func:`track_verdict` pools
the calls over a track's best frames before a gate acts on them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from models.minifasnet import MINIFASNET_INPUT_SIZE, MINIFASNET_REAL_CLASS
from models.preprocess import Preprocess
from models.runtime import OrtModel

__all__ = [
    "FIXTURE_SCALE",
    "PAIR_SCALES",
    "LivenessChecker",
    "LivenessMember",
    "LivenessResult",
    "Verdict",
    "letterbox_square_crop",
    "minifasnet_member",
    "scaled_crop",
    "track_verdict",
]

PAIR_SCALES = {"minifasnet_v2": 2.7, "minifasnet_v1se": 4.0}
FIXTURE_SCALE = 1.5
_FIXTURE_SIZE = 128
_FIXTURE_REAL_CLASS = 0

Crop = Callable[[np.ndarray, np.ndarray], np.ndarray]
Verdict = Literal["real", "spoof", "undecided"]


def scaled_crop(image_bgr: np.ndarray, box: np.ndarray, scale: float, size: int) -> np.ndarray:
    """The reference crop: the box grown about its centre, shifted (not clipped) to stay inside the image.

    Shifting keeps the context ratio the network was trained on; near a border the face is simply
    off-centre. The scale shrinks when the image cannot hold the grown box at all.
    """
    h, w = image_bgr.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    box_w, box_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    scale = min((h - 1) / box_h, (w - 1) / box_w, scale)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, right = _shift_inside(cx - box_w * scale / 2, cx + box_w * scale / 2, w - 1)
    top, bottom = _shift_inside(cy - box_h * scale / 2, cy + box_h * scale / 2, h - 1)
    patch = image_bgr[int(top):int(bottom) + 1, int(left):int(right) + 1]
    return cv2.resize(patch, (size, size))


def _shift_inside(lo: float, hi: float, last: int) -> tuple[float, float]:
    if lo < 0:
        lo, hi = 0.0, hi - lo
    if hi > last:
        lo, hi = lo - (hi - last), float(last)
    return max(lo, 0.0), hi


def letterbox_square_crop(image_bgr: np.ndarray, box: np.ndarray, scale: float, size: int) -> np.ndarray:
    """A square of side scale x the longer box side about the box centre, zero-padded outside the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * scale
    zoom = size / side
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    matrix = np.float32([[zoom, 0, size / 2 - cx * zoom], [0, zoom, size / 2 - cy * zoom]])
    return cv2.warpAffine(image_bgr, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


@dataclass(frozen=True)
class LivenessMember:
    """One network of an ensemble, with the exact crop and pixel format it was trained on."""

    name: str
    model: OrtModel
    crop: Crop
    preprocess: Preprocess
    real_class: int

    def probabilities(self, image_bgr: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        chips = np.stack([self.crop(image_bgr, box) for box in boxes])
        return _softmax(self.model.run(self.preprocess(chips))[0])


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class LivenessResult:
    """Per face: probability of "real" (ensemble mean) and the reference decision (argmax is real)."""

    real: np.ndarray
    is_real: np.ndarray

    def __len__(self) -> int:
        return len(self.real)


class LivenessChecker:
    """Averages the members' class probabilities per face; members must share one class layout."""

    def __init__(self, members: Sequence[LivenessMember]) -> None:
        if not members:
            raise ValueError("a liveness checker needs at least one model")
        if len({m.real_class for m in members}) != 1:
            raise ValueError("ensemble members disagree on which class is real")
        self.members = tuple(members)
        self.real_class = members[0].real_class

    @property
    def model_ids(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)

    def check(self, image_bgr: np.ndarray, boxes: np.ndarray) -> LivenessResult:
        """Liveness of each box (x1,y1,x2,y2) in a BGR frame, e.g. ``Detections.boxes``."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return LivenessResult(np.zeros(0, np.float32), np.zeros(0, bool))
        mean = np.mean([m.probabilities(image_bgr, boxes) for m in self.members], axis=0)
        return LivenessResult(mean[:, self.real_class].astype(np.float32), mean.argmax(axis=1) == self.real_class)

    @classmethod
    def from_registry(cls, model_ids: Sequence[str] = tuple(PAIR_SCALES), *,
                      allow_download: bool | None = None) -> LivenessChecker:
        """The MiniFASNet pair from the model registry (converted once, cached).

        Raises ``ModelNotFoundError`` when a weight file is not available offline, which the service
        reports in /healthz and answers according to its liveness setting.
        """
        from models import registry

        members = []
        for model_id in model_ids:
            entry = registry.get_entry(model_id)
            path = registry.resolve_onnx(entry, allow_download=allow_download)
            members.append(minifasnet_member(model_id, OrtModel(path), PAIR_SCALES[model_id]))
        return cls(members)

    @classmethod
    def from_fixture(cls, path: Path) -> LivenessChecker:
        """The binary CelebA-Spoof fixture model (test fixture only: its licence is unclear)."""
        crop = _bind(letterbox_square_crop, FIXTURE_SCALE, _FIXTURE_SIZE)
        member = LivenessMember(Path(path).stem, OrtModel(path), crop,
                                Preprocess("RGB", std=(255.0, 255.0, 255.0)), _FIXTURE_REAL_CLASS)
        return cls([member])


def minifasnet_member(name: str, model: OrtModel, scale: float) -> LivenessMember:
    """A MiniFASNet network as the reference feeds it: 80x80 BGR, raw 0..255."""
    return LivenessMember(name, model, _bind(scaled_crop, scale, MINIFASNET_INPUT_SIZE),
                          Preprocess("BGR"), MINIFASNET_REAL_CLASS)


def _bind(crop: Callable[[np.ndarray, np.ndarray, float, int], np.ndarray], scale: float, size: int) -> Crop:
    return lambda image, box: crop(image, box, scale, size)


def track_verdict(real_probabilities: Sequence[float], *, min_frames: int = 3, threshold: float = 0.5,
                  agreement: float = 0.6) -> Verdict:
    """Pools one track's per-frame calls: a gate should not act on one blurred or badly lit frame.

    Undecided until ``min_frames`` frames are seen; then the track is real when the median
    probability clears the threshold and at least ``agreement`` of the frames agree, spoof when the
    same holds the other way round, otherwise still undecided (mixed evidence: keep looking).
    """
    probs = np.asarray(real_probabilities, dtype=np.float32)
    if len(probs) < min_frames:
        return "undecided"
    real_share = float(np.mean(probs >= threshold))
    median = float(np.median(probs))
    if median >= threshold and real_share >= agreement:
        return "real"
    if median < threshold and 1 - real_share >= agreement:
        return "spoof"
    return "undecided"
