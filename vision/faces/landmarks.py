"""dlib's 5-point shape predictor, the landmarks dlib's face embedder was trained on.

The default embedder (dlib's ResNet) was trained on chips aligned from dlib's own five points
(eye corners and the base of the nose), not a detector's, so the points come from dlib's cascade
of regression trees itself (dlib-bin, prebuilt for Linux, macOS and Windows). An exact numpy port
of the cascade was used before; it took 6-8 ms a face against dlib's 1 ms, which at a gate camera
was a quarter of each frame's time (benchmarks/bench_gates).

Boxes are dlib rectangles: (left, top, right, bottom), right and bottom inclusive, which
`vision.faces.align.rect_from_landmarks` makes from another detector's five points.
"""

from __future__ import annotations

from pathlib import Path

import dlib
import numpy as np


class ShapePredictor:
    """A dlib shape predictor file (e.g. shape_predictor_5_face_landmarks.dat)."""

    def __init__(self, path: str | Path) -> None:
        try:
            self._predictor = dlib.shape_predictor(str(path))
        except RuntimeError as error:  # dlib's own message names the serialization problem
            raise ValueError(f"{path} is not a dlib shape predictor: {error}") from error
        # The binding does not expose the part count; any box tells it.
        self.num_parts = int(self._predictor(np.zeros((8, 8), np.uint8), dlib.rectangle(0, 0, 7, 7)).num_parts)

    def predict(self, image_bgr: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Landmarks (N,P,2) float32 x,y in whole pixels for N boxes (N,4) left, top, right, bottom.

        dlib reads the image as grey, (R+G+B)/3, so the channel order does not matter."""
        image = np.asarray(image_bgr)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise ValueError(f"expected a uint8 gray (H,W) or BGR (H,W,3) image, got {image.dtype} {image.shape}")
        image = np.ascontiguousarray(image)
        boxes = np.floor(np.asarray(boxes, np.float64).reshape(-1, 4) + 0.5).astype(np.int64)
        points = np.zeros((len(boxes), self.num_parts, 2), np.float32)
        for face, (left, top, right, bottom) in zip(points, boxes.tolist(), strict=True):
            shape = self._predictor(image, dlib.rectangle(left, top, right, bottom))
            face[...] = [(part.x, part.y) for part in shape.parts()]
        return points
