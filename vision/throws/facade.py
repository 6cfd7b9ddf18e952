"""Facade calibration: the plane of a tower's face, in floors and window columns.

Everything downstream reasons in facade units because there a falling body's motion is simple
(a parabola with roughly constant downward acceleration of g / floor height), whereas in the image
a tilted camera makes higher floors look shorter and the same fall look slower near the top.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vision.cameras import FacadeSettings


def homography_from_corners(
    corners_px: np.ndarray | list[list[float]], floors: int, columns: int
) -> np.ndarray:
    """H (facade -> image) from the image positions of the facade's four corners.

    Corners are given in the order a surveyor reads them off a frame: bottom-left, bottom-right,
    top-right, top-left (the ground line first, then the roof line).
    """
    image = np.asarray(corners_px, dtype=np.float32).reshape(4, 2)
    facade = np.float32([[0, 0], [columns, 0], [columns, floors], [0, floors]])
    matrix = cv2.getPerspectiveTransform(facade, image)
    return matrix / matrix[2, 2]


@dataclass(frozen=True)
class FloorColumn:
    """Where on the facade: 1-based floor and column, plus the continuous coordinates behind them."""

    floor: int
    column: int
    u: float
    v: float


class FacadeCalibration:
    """Pixel <-> facade mapping for one camera at one frame size."""

    def __init__(self, homography: np.ndarray, floors: int, columns: int) -> None:
        self.H = np.asarray(homography, dtype=np.float64)
        self.H_inv = np.linalg.inv(self.H)
        self.floors = int(floors)
        self.columns = int(columns)

    @classmethod
    def from_settings(
        cls, settings: FacadeSettings, frame_size: tuple[int, int] | None = None
    ) -> FacadeCalibration:
        """Calibration for frames of ``frame_size`` (w, h), rescaling H if it was measured at another."""
        matrix = settings.homography_matrix
        if frame_size is not None and settings.image_size is not None:
            sx = frame_size[0] / settings.image_size[0]
            sy = frame_size[1] / settings.image_size[1]
            matrix = np.diag([sx, sy, 1.0]) @ matrix
        return cls(matrix, settings.floors, settings.columns)

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        """(N,2) facade coordinates -> (N,2) pixels."""
        pts = np.asarray(uv, dtype=np.float64).reshape(-1, 1, 2)
        return cv2.perspectiveTransform(pts, self.H).reshape(-1, 2)

    def to_facade(self, xy: np.ndarray) -> np.ndarray:
        """(N,2) pixels -> (N,2) facade coordinates (u columns, v floors)."""
        pts = np.asarray(xy, dtype=np.float64).reshape(-1, 1, 2)
        return cv2.perspectiveTransform(pts, self.H_inv).reshape(-1, 2)

    def floor_column(self, xy: tuple[float, float] | np.ndarray) -> FloorColumn:
        """The floor and column a pixel lies on; values outside the facade are clamped to it."""
        u, v = self.to_facade(np.asarray(xy, dtype=np.float64).reshape(1, 2))[0]
        return self.floor_column_of(float(u), float(v))

    def floor_column_of(self, u: float, v: float) -> FloorColumn:
        floor = int(np.clip(np.floor(v) + 1, 1, self.floors))
        column = int(np.clip(np.floor(u) + 1, 1, self.columns))
        return FloorColumn(floor, column, u, v)

    def jacobian(self, uv: tuple[float, float]) -> np.ndarray:
        """d(pixel)/d(facade) at a facade point: how many pixels one floor / column spans there."""
        u, v = uv
        h = self.H
        w = h[2, 0] * u + h[2, 1] * v + h[2, 2]
        x = (h[0, 0] * u + h[0, 1] * v + h[0, 2]) / w
        y = (h[1, 0] * u + h[1, 1] * v + h[1, 2]) / w
        return np.array(
            [
                [(h[0, 0] - x * h[2, 0]) / w, (h[0, 1] - x * h[2, 1]) / w],
                [(h[1, 0] - y * h[2, 0]) / w, (h[1, 1] - y * h[2, 1]) / w],
            ]
        )

    def outline(
        self, margin_u: float = 0.0, margin_below: float = 0.0, margin_above: float = 0.0
    ) -> np.ndarray:
        """Image polygon of the facade, optionally widened (in facade units) on each side."""
        u0, u1 = -margin_u, self.columns + margin_u
        v0, v1 = -margin_below, self.floors + margin_above
        # Sample the edges densely so a strongly tilted view still gives a faithful polygon.
        us = np.linspace(u0, u1, 9)
        vs = np.linspace(v0, v1, 17)
        ring = np.concatenate(
            [
                np.stack([us, np.full_like(us, v0)], 1),
                np.stack([np.full_like(vs, u1), vs], 1),
                np.stack([us[::-1], np.full_like(us, v1)], 1),
                np.stack([np.full_like(vs, u0), vs[::-1]], 1),
            ]
        )
        return self.to_image(ring)

    def region_mask(
        self,
        frame_size: tuple[int, int],
        mask_zones: list[np.ndarray] | None = None,
        margin_u: float = 0.6,
        margin_below: float = 1.0,
        margin_above: float = 0.3,
    ) -> np.ndarray:
        """uint8 mask (255 = watch) of where a falling object can appear, minus the mask zones.

        The margins matter: a tossed object flies out in front of the facade, and the camera
        (below and in front) then sees it outside the facade's outline, lower and to the side.
        """
        w, h = frame_size
        mask = np.zeros((h, w), np.uint8)
        poly = self.outline(margin_u, margin_below, margin_above)
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 255)
        for zone in mask_zones or []:
            cv2.fillPoly(mask, [np.round(np.asarray(zone)).astype(np.int32)], 0)
        return mask
