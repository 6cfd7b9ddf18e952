"""dlib's shape predictor (`shape_predictor_5_face_landmarks.dat`, CC0) read into plain arrays.

The default embedder was trained on chips aligned from *these* landmarks, so we run the same
regression-tree cascade ourselves (vision/landmarks.py) instead of depending on dlib at run time.

Layout of the file (dlib/image_processing/shape_predictor.h, serialize): version 1; the initial
shape (a column matrix of x,y pairs in unit-box coordinates); per cascade, a forest of regression
trees (each: split features idx1, idx2, thresh, then the leaf shape deltas); per cascade, the
anchor landmark of each feature pixel; per cascade, the offset of each feature pixel from its
anchor. Every dlib predictor grows its trees to one depth and uses one feature-pool size, so
those are parsed as dense arrays; anything irregular is rejected as not a dlib shape predictor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.dlib_serialize import DlibFormatError, DlibReader

__all__ = ["DlibFormatError", "ShapePredictorModel", "load_shape_predictor", "parse_shape_predictor"]


@dataclass(frozen=True)
class ShapePredictorModel:
    """A parsed cascade. C cascades, T trees each, S splits and L = S+1 leaves per tree,
    P landmarks, F feature pixels per cascade.

    initial_shape (P,2) float32: mean shape in the unit box (0,0)-(1,1) of the face rectangle.
    split_idx1, split_idx2 (C,T,S) int32; split_thresh (C,T,S) float32: node k of a tree goes to
        child 2k+1 when pixel[idx1] - pixel[idx2] > thresh, else to 2k+2.
    leaf_values (C,T,L,P,2) float32: shape increment of each leaf, in unit-box coordinates.
    anchor_idx (C,F) int32 and deltas (C,F,2) float32: feature pixel f sits at
        landmark anchor_idx[f] + deltas[f] of the initial shape.
    """

    initial_shape: np.ndarray
    split_idx1: np.ndarray
    split_idx2: np.ndarray
    split_thresh: np.ndarray
    leaf_values: np.ndarray
    anchor_idx: np.ndarray
    deltas: np.ndarray

    @property
    def num_parts(self) -> int:
        return len(self.initial_shape)

    @property
    def num_cascades(self) -> int:
        return len(self.split_idx1)

    @property
    def tree_depth(self) -> int:
        return int(np.log2(self.leaf_values.shape[2]))


def load_shape_predictor(path: str | Path) -> ShapePredictorModel:
    return parse_shape_predictor(Path(path).read_bytes())


def parse_shape_predictor(data: bytes) -> ShapePredictorModel:
    """Parse the bytes of a dlib shape_predictor; DlibFormatError if they are anything else."""
    reader = DlibReader(data)
    reader.expect_int(1, "shape_predictor version")
    initial = reader.float_matrix()
    if initial.shape[1] != 1 or initial.shape[0] == 0 or initial.shape[0] % 2:
        raise DlibFormatError(f"initial shape must be a non-empty column of x,y pairs, got {initial.shape}")
    num_parts = initial.shape[0] // 2
    forests = [_read_forest(reader, num_parts) for _ in range(_count(reader, "cascades"))]
    anchors = [reader.ints(_count(reader, "anchors")) for _ in range(_count(reader, "anchor lists"))]
    deltas = [reader.floats(2 * _count(reader, "deltas")) for _ in range(_count(reader, "delta lists"))]
    if not reader.at_end:
        raise DlibFormatError(f"{len(data) - reader.pos} trailing bytes after the shape predictor")
    arrays = {
        "initial_shape": initial.reshape(num_parts, 2),
        "split_idx1": _stack([f[0] for f in forests], "trees"),
        "split_idx2": _stack([f[1] for f in forests], "trees"),
        "split_thresh": _stack([f[2] for f in forests], "trees"),
        "leaf_values": _stack([f[3] for f in forests], "trees"),
        "anchor_idx": _stack(anchors, "anchor lists"),
        "deltas": _stack([d.reshape(-1, 2) for d in deltas], "delta lists"),
    }
    _validate(arrays, num_parts)
    return ShapePredictorModel(
        **{k: v.astype(np.int32 if k in _INDEX_ARRAYS else np.float32) for k, v in arrays.items()}
    )


_INDEX_ARRAYS = ("split_idx1", "split_idx2", "anchor_idx")


def _count(reader: DlibReader, what: str) -> int:
    """A std::vector length; bounded by the bytes left so a corrupt length fails fast."""
    start = reader.pos
    count = reader.int()
    if count < 0 or count > len(reader.data) - reader.pos:
        raise DlibFormatError(f"implausible number of {what} ({count}) at byte {start}")
    return count


def _read_forest(reader: DlibReader, num_parts: int) -> tuple[np.ndarray, ...]:
    """One cascade's trees, all of one depth, decoded as a single block of ints.

    Per tree the ints are: S; S x (idx1, idx2, thresh mantissa, thresh exponent); L; then L
    leaves of (-2P, -1, 2P x (mantissa, exponent)). Checking the structural ints (S, L, the
    matrix sizes) in every tree catches a file that does not follow this layout.
    """
    num_trees = _count(reader, "trees")
    start = reader.pos
    num_splits = reader.int() if num_trees else 0
    reader.pos = start
    num_leaves = num_splits + 1
    if num_splits < 1 or num_leaves & num_splits:
        raise DlibFormatError(f"tree with {num_splits} splits at byte {start} is not a full binary tree")
    leaf_len = 2 + 4 * num_parts
    per_tree = 2 + 4 * num_splits + num_leaves * leaf_len
    block = reader.ints(num_trees * per_tree).reshape(num_trees, per_tree)
    splits = block[:, 1 : 1 + 4 * num_splits].reshape(num_trees, num_splits, 4)
    leaves = block[:, 2 + 4 * num_splits :].reshape(num_trees, num_leaves, leaf_len)
    layout_ok = (
        np.all(block[:, 0] == num_splits)
        and np.all(block[:, 1 + 4 * num_splits] == num_leaves)
        and np.all(leaves[:, :, 0] == -2 * num_parts)
        and np.all(leaves[:, :, 1] == -1)
    )
    if not layout_ok:
        raise DlibFormatError(f"irregular regression trees in the forest starting at byte {start}")
    thresh = np.ldexp(splits[..., 2].astype(np.float64), splits[..., 3])
    values = leaves[:, :, 2:].reshape(num_trees, num_leaves, num_parts, 2, 2)
    values = np.ldexp(values[..., 0].astype(np.float64), values[..., 1])
    return splits[..., 0], splits[..., 1], thresh, values


def _stack(arrays: list[np.ndarray], what: str) -> np.ndarray:
    if not arrays:
        raise DlibFormatError(f"no {what}")
    if len({a.shape for a in arrays}) != 1:
        raise DlibFormatError(f"{what} differ in size between cascades: {sorted({a.shape for a in arrays})}")
    return np.stack(arrays)


def _validate(arrays: dict[str, np.ndarray], num_parts: int) -> None:
    """Indices in range and numbers finite: what the runner relies on without checking again."""
    num_cascades = len(arrays["split_idx1"])
    anchors, deltas = arrays["anchor_idx"], arrays["deltas"]
    if len(anchors) != num_cascades or len(deltas) != num_cascades:
        raise DlibFormatError(
            f"{num_cascades} cascades but {len(anchors)} anchor and {len(deltas)} delta lists"
        )
    num_features = anchors.shape[1]
    if deltas.shape[1] != num_features:
        raise DlibFormatError(f"{num_features} anchors but {deltas.shape[1]} deltas per cascade")
    bounds = {"split_idx1": num_features, "split_idx2": num_features, "anchor_idx": num_parts}
    for name, bound in bounds.items():
        idx = arrays[name]
        if idx.size and (idx.min() < 0 or idx.max() >= bound):
            raise DlibFormatError(f"{name} out of range [0, {bound})")
    for name, values in arrays.items():
        if name not in bounds and not np.all(np.isfinite(values)):
            raise DlibFormatError(f"non-finite values in {name}")
