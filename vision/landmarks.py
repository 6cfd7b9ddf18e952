"""dlib's 5-point shape predictor, run in numpy.

The default embedder (dlib's ResNet) was trained on chips aligned from dlib's own five points
(eye corners and the base of the nose), not a detector's. So we run dlib's cascade of regression
trees (Kazemi & Sullivan, "One millisecond face alignment") ourselves, following
dlib/image_processing/shape_predictor.h step for step so the landmarks match dlib's:

* the image is read as dlib's grayscale, (R+G+B)//3, sampled at the nearest pixel, and a feature
  pixel outside the image reads 0;
* feature pixels are placed relative to the current shape by the similarity transform that maps
  the initial (mean) shape onto it, computed in double and applied in float32, as dlib does;
* the face box is dlib's rectangle: (left, top, right, bottom) with right/bottom inclusive; the
  unit box (0,0)-(1,1) of the model maps onto its corners.

Everything is vectorised over the faces and over the 500 trees of a cascade; only the 15 cascades
and the 4 tree levels are Python loops.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.dlib_shape_predictor import ShapePredictorModel, load_shape_predictor


class ShapePredictor:
    """A dlib shape predictor (e.g. shape_predictor_5_face_landmarks.dat) in numpy."""

    def __init__(self, model: ShapePredictorModel | str | Path) -> None:
        self.model = model if isinstance(model, ShapePredictorModel) else load_shape_predictor(model)
        m = self.model
        cascades, trees, splits = m.split_idx1.shape
        # Flat per-cascade tables, so one gather serves all trees of all faces at once.
        self._tree_base = np.arange(trees) * splits
        self._leaf_base = np.arange(trees) * (splits + 1) - splits
        self._idx1 = m.split_idx1.reshape(cascades, -1).astype(np.intp)
        self._idx2 = m.split_idx2.reshape(cascades, -1).astype(np.intp)
        self._thresh = m.split_thresh.reshape(cascades, -1)
        self._leaves = m.leaf_values.reshape(cascades, trees * (splits + 1), m.num_parts, 2)
        self._mean_centred = m.initial_shape.astype(np.float64) - m.initial_shape.mean(axis=0)

    @property
    def num_parts(self) -> int:
        return self.model.num_parts

    def predict(self, image_bgr: np.ndarray, boxes: np.ndarray, *, subpixel: bool = False) -> np.ndarray:
        """Landmarks (N,P,2) float32 x,y in pixels for N boxes (N,4) left, top, right, bottom.

        By default the points are rounded to whole pixels as dlib's full_object_detection stores
        them, which makes the result (and the chips cut from it) identical to dlib's; `subpixel`
        keeps the fractional positions the cascade actually computed.
        """
        image = _as_image(image_bgr)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if not len(boxes):
            return np.zeros((0, self.num_parts, 2), np.float32)
        origin, extent = boxes[:, None, :2], boxes[:, None, 2:] - boxes[:, None, :2]
        shape = np.broadcast_to(self.model.initial_shape, (len(boxes), self.num_parts, 2)).astype(np.float32)
        for cascade in range(self.model.num_cascades):
            pixels = self._feature_pixels(image, shape, origin, extent, cascade)
            shape = self._apply_forest(shape, pixels, cascade)
        points = origin + extent * shape
        if not subpixel:
            points = np.floor(points + 0.5)
        return points.astype(np.float32)

    def _feature_pixels(
        self, image: np.ndarray, shape: np.ndarray, origin: np.ndarray, extent: np.ndarray, cascade: int
    ) -> np.ndarray:
        """Intensities (N,F) of the cascade's feature pixels, placed relative to `shape`."""
        tform = self._similarity_to(shape)
        deltas = self.model.deltas[cascade]
        anchors = shape[:, self.model.anchor_idx[cascade]]
        # dlib: tform*delta + anchor in float32, then the box mapping in double, then rounding.
        unit_x = tform[:, 0, None, 0] * deltas[:, 0] + tform[:, 0, None, 1] * deltas[:, 1] + anchors[..., 0]
        unit_y = tform[:, 1, None, 0] * deltas[:, 0] + tform[:, 1, None, 1] * deltas[:, 1] + anchors[..., 1]
        col = np.floor(origin[..., 0] + extent[..., 0] * unit_x + 0.5).astype(np.intp)
        row = np.floor(origin[..., 1] + extent[..., 1] * unit_y + 0.5).astype(np.intp)
        return _gray_at(image, row, col)

    def _similarity_to(self, shape: np.ndarray) -> np.ndarray:
        """Linear part (N,2,2) float32 of the least-squares similarity from the initial shape to
        each current shape: dlib's find_similarity_transform, in double, then cast to float."""
        target = shape.astype(np.float64)
        target -= target.mean(axis=1, keepdims=True)
        src = self._mean_centred
        norm = np.sum(src * src)
        if norm == 0:  # a one-point model: dlib uses the identity
            return np.broadcast_to(np.eye(2, dtype=np.float32), (len(shape), 2, 2))
        a = np.sum(src * target, axis=(1, 2)) / norm
        b = (target[..., 1] @ src[:, 0] - target[..., 0] @ src[:, 1]) / norm
        return np.stack([np.stack([a, -b], -1), np.stack([b, a], -1)], -2).astype(np.float32)

    def _apply_forest(self, shape: np.ndarray, pixels: np.ndarray, cascade: int) -> np.ndarray:
        """Walk every tree of the cascade for every face and add up the leaf increments in tree
        order, starting from the current shape (dlib's float32 summation order)."""
        idx1, idx2, thresh = self._idx1[cascade], self._idx2[cascade], self._thresh[cascade]
        num_features = pixels.shape[1]
        face_base = (np.arange(len(shape)) * num_features)[:, None]
        flat_pixels = pixels.ravel()
        node = np.zeros((len(shape), len(self._tree_base)), np.intp)
        for _ in range(self.model.tree_depth):
            split = self._tree_base + node
            diff = flat_pixels[face_base + idx1[split]] - flat_pixels[face_base + idx2[split]]
            node = 2 * node + 2 - (diff > thresh[split])
        leaves = self._leaves[cascade][self._leaf_base + node]
        terms = np.concatenate([shape[None], leaves.transpose(1, 0, 2, 3)])
        return np.add.reduce(terms, axis=0)


def _as_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"expected a uint8 gray (H,W) or BGR (H,W,3) image, got {image.dtype} {image.shape}")
    return image


def _gray_at(image: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """dlib's intensity at the given pixels, 0 outside the image. Only the sampled pixels are
    converted: (B+G+R)//3 is dlib's rgb->gray, and it does not depend on the channel order."""
    height, width = image.shape[:2]
    inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
    values = image[np.where(inside, row, 0), np.where(inside, col, 0)]
    if values.ndim == 3:
        values = values.sum(axis=-1, dtype=np.uint16) // 3
    return np.where(inside, values, 0).astype(np.float32)
