"""Box overlap and greedy non-maximum suppression shared by the face detectors.

Kept in numpy rather than cv2.dnn.NMSBoxes because MTCNN's last stage needs the
intersection-over-minimum variant, which OpenCV does not offer, and both detectors should
suppress by the same rule.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Overlap = Literal["union", "min"]


def box_area(boxes: np.ndarray) -> np.ndarray:
    wh = np.clip(boxes[..., 2:4] - boxes[..., 0:2], 0, None)
    return wh[..., 0] * wh[..., 1]


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,M) intersection areas of x1y1x2y2 boxes a (N,4) and b (M,4)."""
    lo = np.maximum(a[:, None, 0:2], b[None, :, 0:2])
    hi = np.minimum(a[:, None, 2:4], b[None, :, 2:4])
    wh = np.clip(hi - lo, 0, None)
    return wh[..., 0] * wh[..., 1]


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
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float32).reshape(-1), kind="stable")
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        overlap = overlap_matrix(boxes[best:best + 1], boxes[rest], mode)[0]
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)
