"""How a model wants its pixels: channel order, mean/std and tensor layout.

This lives with each model's registry entry, never in the code paths that call the model, so
that swapping a model (dlib's ResNet, SFace, an ArcFace-format file) changes data, not code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class Preprocess:
    channels: Literal["RGB", "BGR"] = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    layout: Literal["NCHW", "NHWC"] = "NCHW"

    def __call__(self, images_bgr: np.ndarray) -> np.ndarray:
        """(N,H,W,3) uint8 BGR images -> the float32 batch the model takes."""
        batch = np.asarray(images_bgr)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected (N,H,W,3) images, got shape {batch.shape}")
        if self.channels == "RGB":
            batch = batch[..., ::-1]
        out = (batch.astype(np.float32) - np.float32(self.mean)) / np.float32(self.std)
        if self.layout == "NCHW":
            out = out.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(out)
