"""Where and when a thrown object left the facade.

A body let go from a window starts with a small vertical speed, so the top of the fitted parabola
(its apex) is the release point for a drop, and a close approximation for a gentle toss up or
down (the apex differs from the release by v0^2 / 2g, 0.2 m at 2 m/s). The apex is only trusted
between the first sighting and a bounded time before it: a track picked up mid-fall (the object
was hidden, or too faint while slow) is extrapolated back to where its speed was zero; a release
after the first sighting is impossible. The early part of the
trajectory is used because drag bends the rest of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vision.throws.facade import FacadeCalibration
from vision.throws.physics import TrajectoryFit


@dataclass(frozen=True)
class Origin:
    """Release point: 1-based floor and column, facade coordinates, 1-sigma uncertainty in floors
    and columns, the (fractional) release frame and the release point in image pixels."""

    floor: int
    column: int
    u: float
    v: float
    sigma_floor: float
    sigma_column: float
    release_frame: float
    release_xy: tuple[float, float]


def estimate_origin(fit: TrajectoryFit, calib: FacadeCalibration, max_back_s: float = 2.0) -> Origin:
    fv, fu = fit.early_v, fit.early_u
    c1, c2 = fv.coef[1], fv.coef[2]
    t_apex = -c1 / (2 * c2) if c2 < 0 else 0.0
    t_rel = float(np.clip(t_apex, -max_back_s, 0.0))
    u, v = float(fu.at(t_rel)), float(fv.at(t_rel))
    # Statistical uncertainty of the fit, plus how far the release time choice moves the point.
    v_first = float(fv.at(0.0))
    sigma_v = float(np.hypot(fv.sigma_at(t_rel), 0.5 * abs(v - v_first)) + 0.1)
    sigma_u = float(np.hypot(fu.sigma_at(t_rel), 0.5 * abs(u - float(fu.at(0.0)))) + 0.1)
    fc = calib.floor_column_of(u, v)
    xy = calib.to_image(np.array([[u, v]]))[0]
    return Origin(
        fc.floor,
        fc.column,
        u,
        v,
        sigma_v,
        sigma_u,
        fit.frame0 + t_rel * fit.fps,
        (float(xy[0]), float(xy[1])),
    )
