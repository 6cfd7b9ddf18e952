"""Box overlap and greedy non-maximum suppression shared by the face detectors.

Kept in numpy rather than cv2.dnn.NMSBoxes because MTCNN's last stage needs the
intersection-over-minimum variant, which OpenCV does not offer, and both detectors should
suppress by the same rule.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Overlap = Literal["union", "min"]
_BLOCK_ROWS = 256


def box_area(boxes: np.ndarray) -> np.ndarray:
    wh = np.clip(boxes[..., 2:4] - boxes[..., 0:2], 0, None)
    return wh[..., 0] * wh[..., 1]


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,M) intersection areas of x1y1x2y2 boxes a (N,4) and b (M,4).

    One coordinate at a time: broadcasting over a trailing axis of 2 is ~10x slower in numpy.
    """
    width = np.minimum(a[:, 2:3], b[:, 2]) - np.maximum(a[:, 0:1], b[:, 0])
    height = np.minimum(a[:, 3:4], b[:, 3]) - np.maximum(a[:, 1:2], b[:, 1])
    return np.clip(width, 0, None) * np.clip(height, 0, None)


def overlap_matrix(a: np.ndarray, b: np.ndarray, mode: Overlap = "union") -> np.ndarray:
    """(N,M) overlap of each box in a with each box in b.

    "union" is the usual IoU; "min" divides by the smaller box, so a box nested inside a larger
    one counts as a duplicate even though their IoU is small (MTCNN's final stage relies on it).
    """
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    inter = _intersection(a, b)
    area_a, area_b = box_area(a)[:, None], box_area(b)[None, :]
    denom = area_a + area_b - inter if mode == "union" else np.minimum(area_a, area_b)
    return inter / np.maximum(denom, np.float32(1e-9))


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return overlap_matrix(a, b, "union")


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: Overlap = "union") -> np.ndarray:
    """Indices of the boxes kept by greedy suppression, best score first.

    A box is dropped when its overlap with an already kept, higher-scoring box exceeds threshold.
    Overlaps are computed a block of rows at a time, so the Python loop only does a boolean OR
    per kept box while memory stays bounded when P-net floods a level with thousands of boxes.
    """
    order = np.argsort(-np.asarray(scores, np.float32).reshape(-1), kind="stable")
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)[order]
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep: list[int] = []
    for start in range(0, len(boxes), _BLOCK_ROWS):
        # Rows only for boxes still alive, columns only for boxes not yet decided.
        live = start + np.flatnonzero(~suppressed[start:start + _BLOCK_ROWS])
        rows = overlap_matrix(boxes[live], boxes[start:], mode) > threshold
        for index, row in zip(live.tolist(), rows, strict=True):
            if not suppressed[index]:
                keep.append(index)
                suppressed[start:] |= row
    return order[np.asarray(keep, dtype=np.int64)]
