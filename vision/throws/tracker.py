"""Candidate tracks of small moving blobs, followed with a ballistic Kalman filter on the facade.

The filter runs in facade units (columns, floors) per frame, where gravity is a near-constant
downward acceleration of g / floor height: this is what lets a track survive a few frames hidden
behind a tree or a same-coloured window, and what keeps its gate small when rain or a flock puts
dozens of blobs in each frame. A track is only a candidate; whether it was a throw is decided
afterwards on the whole trajectory (physics.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from scipy.optimize import linear_sum_assignment

from vision.facade import FacadeCalibration
from vision.motion import Blobs

G = 9.81
NOMINAL_FLOOR_H = 3.0  # metres; residential floors are 2.8-3.3 m
NOMINAL_COLUMN_W = 3.5


@dataclass(frozen=True)
class TrackerParams:
    max_missed: int = 6  # frames a track may coast (behind a tree, over a same-coloured window)
    max_length: int = 300  # frames; nothing falls for 12 s in front of a tower
    max_blob_width: float = 48.0  # px; wider things are insects on the lens, cars, people
    max_blob_height: float = 140.0
    max_fall_speed: float = 30.0  # m/s, for the first association of a new track
    max_rise_speed: float = 6.0
    max_side_speed: float = 6.0
    gate: float = 16.0  # Mahalanobis distance squared (2 dof: p ~ 0.9997)
    accel_noise: float = 0.35  # process noise as a fraction of g (drag, wind, perspective)
    accel_walk: float = 0.2  # per-frame change of the apparent acceleration (parallax, drag), x g
    pixel_noise: float = 0.6  # px, centroid noise of a sharp blob
    rain_thickness: float = 2.5  # px; streaks thinner than this are rain when there are many
    rain_min_streaks: int = 12


@dataclass
class Track:
    """One candidate: its detections in pixels and facade units, and its filter state."""

    id: int
    frames: list[int] = field(default_factory=list)
    xy: list[tuple[float, float]] = field(default_factory=list)
    uv: list[tuple[float, float]] = field(default_factory=list)
    sigma_uv: list[tuple[float, float]] = field(default_factory=list)
    size: list[tuple[float, float]] = field(default_factory=list)
    state: np.ndarray | None = None
    cov: np.ndarray | None = None
    missed: int = 0

    def __len__(self) -> int:
        return len(self.frames)

    def starting_at(self, start: int) -> Track:
        """The same candidate without its first `start` detections (filter state not carried)."""
        if start == 0:
            return self
        return Track(self.id, self.frames[start:], self.xy[start:], self.uv[start:], self.sigma_uv[start:],
                     self.size[start:])


class BallisticTracker:
    """Associates blobs frame to frame; returns tracks as they end."""

    def __init__(self, calib: FacadeCalibration, fps: float, params: TrackerParams | None = None) -> None:
        self.calib, self.fps = calib, float(fps)
        self.p = params or TrackerParams()
        self.a_g = G / NOMINAL_FLOOR_H / self.fps**2  # floors per frame^2
        self.tracks: list[Track] = []
        self.next_id = 1
        q = self.p.accel_noise * self.a_g
        # Piecewise-constant acceleration noise on both axes, random walk on the vertical accel.
        qb = np.array([[0.25, 0.5], [0.5, 1.0]]) * q**2
        self.Q = np.zeros((5, 5))
        self.Q[np.ix_([0, 2], [0, 2])] = qb
        self.Q[np.ix_([1, 3], [1, 3])] = qb
        self.Q[4, 4] = (self.p.accel_walk * self.a_g) ** 2
        self.F = np.array(
            [[1, 0, 1, 0, 0], [0, 1, 0, 1, 0.5], [0, 0, 1, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 0, 1]], float
        )

    # -- measurement model ------------------------------------------------------------------

    def _measure(self, blobs: Blobs) -> tuple[np.ndarray, np.ndarray]:
        """Blob centroids in facade units and their 2x2 covariances (pixel noise through H^-1)."""
        uv = self.calib.to_facade(blobs.xy)
        cov = np.empty((len(blobs), 2, 2))
        for i in range(len(blobs)):
            J_inv = np.linalg.inv(self.calib.jacobian(tuple(uv[i])))
            sx = self.p.pixel_noise + 0.1 * blobs.size[i, 0]
            sy = self.p.pixel_noise + 0.1 * blobs.size[i, 1]
            cov[i] = J_inv @ np.diag([sx * sx, sy * sy]) @ J_inv.T
        return uv, cov

    # -- association ------------------------------------------------------------------------

    def _mature_costs(self, tracks: list[Track], uv: np.ndarray, cov: np.ndarray) -> np.ndarray:
        pred = np.stack([t.state[:2] for t in tracks])  # (T,2)
        P = np.stack([t.cov[:2, :2] for t in tracks])  # (T,2,2)
        S = P[:, None] + cov[None]  # (T,N,2,2)
        d = uv[None] - pred[:, None]  # (T,N,2)
        det = S[..., 0, 0] * S[..., 1, 1] - S[..., 0, 1] ** 2
        m2 = (
            S[..., 1, 1] * d[..., 0] ** 2
            - 2 * S[..., 0, 1] * d[..., 0] * d[..., 1]
            + S[..., 0, 0] * d[..., 1] ** 2
        ) / det
        return np.where(m2 < self.p.gate, m2, np.inf)

    def _young_costs(self, tracks: list[Track], uv: np.ndarray, cov: np.ndarray, frame: int) -> np.ndarray:
        """A one-point track has no velocity yet: gate by what a falling object can do."""
        costs = np.full((len(tracks), len(uv)), np.inf)
        per_frame = 1.0 / (NOMINAL_FLOOR_H * self.fps)
        for r, trk in enumerate(tracks):
            gap = frame - trk.frames[-1]
            u0, v0 = trk.uv[-1]
            su, sv = trk.sigma_uv[-1]
            slack_u = 3 * np.sqrt(su**2 + cov[:, 0, 0])
            slack_v = 3 * np.sqrt(sv**2 + cov[:, 1, 1])
            du, dv = uv[:, 0] - u0, uv[:, 1] - v0
            fall = self.p.max_fall_speed * per_frame * gap + 0.5 * 2 * self.a_g * gap**2
            ok = (
                (dv >= -fall - slack_v)
                & (dv <= self.p.max_rise_speed * per_frame * gap + slack_v)
                & (
                    np.abs(du)
                    <= self.p.max_side_speed * per_frame * gap * NOMINAL_FLOOR_H / NOMINAL_COLUMN_W + slack_u
                )
            )
            # Prefer the nearest in pixels-equivalent terms; falling is the expected direction.
            score = (
                (du / (slack_u + 1e-6)) ** 2
                + (np.minimum(dv, 0) / (fall + slack_v)) ** 2
                + (np.maximum(dv, 0) / (slack_v + 1e-6)) ** 2
            )
            costs[r] = np.where(ok, score, np.inf)
        return costs

    @staticmethod
    def _assign(costs: np.ndarray) -> list[tuple[int, int]]:
        if costs.size == 0 or not np.isfinite(costs).any():
            return []
        finite = np.where(np.isfinite(costs), costs, 1e9)
        rows, cols = linear_sum_assignment(finite)
        return [(r, c) for r, c in zip(rows, cols, strict=True) if finite[r, c] < 1e9]

    # -- filter -----------------------------------------------------------------------------

    def _start_filter(self, trk: Track, cov: np.ndarray) -> None:
        (u0, v0), (u1, v1) = trk.uv[-2], trk.uv[-1]
        gap = trk.frames[-1] - trk.frames[-2]
        su0, sv0 = trk.sigma_uv[-2]
        vu, vv = (u1 - u0) / gap, (v1 - v0) / gap
        # Half of gravity's pull over the gap is already in the measured difference.
        trk.state = np.array([u1, v1, vu, vv - 0.5 * self.a_g * gap, -self.a_g])
        P = np.zeros((5, 5))
        P[:2, :2] = cov
        P[2, 2] = (cov[0, 0] + su0**2) / gap**2 + (self.p.accel_noise * self.a_g) ** 2
        P[3, 3] = (cov[1, 1] + sv0**2) / gap**2 + (self.a_g * gap) ** 2
        P[4, 4] = (0.6 * self.a_g) ** 2
        trk.cov = P

    def _predict(self, trk: Track) -> None:
        trk.state = self.F @ trk.state
        trk.cov = self.F @ trk.cov @ self.F.T + self.Q

    def _update(self, trk: Track, z: np.ndarray, R: np.ndarray) -> None:
        Hm = np.zeros((2, 5))
        Hm[0, 0] = Hm[1, 1] = 1.0
        S = Hm @ trk.cov @ Hm.T + R
        K = trk.cov @ Hm.T @ np.linalg.inv(S)
        trk.state = trk.state + K @ (z - Hm @ trk.state)
        trk.cov = (np.eye(5) - K @ Hm) @ trk.cov

    # -- main step --------------------------------------------------------------------------

    def _filter_blobs(self, blobs: Blobs) -> Blobs:
        keep = (blobs.size[:, 0] <= self.p.max_blob_width) & (blobs.size[:, 1] <= self.p.max_blob_height)
        # Rain: many thin streaks in one frame. Dropping the thin ones keeps objects of 4 px and
        # more, and keeps the tracker from linking random streaks into plausible arcs.
        length = blobs.size.max(1)
        thickness = blobs.area / np.maximum(length, 1.0)
        streak = (thickness <= self.p.rain_thickness) & (length >= 2.5 * thickness)
        if streak.sum() >= self.p.rain_min_streaks:
            keep &= ~streak
        return blobs.subset(keep)

    def step(self, frame: int, blobs: Blobs) -> list[Track]:
        """Advance to ``frame`` with its blobs; return the tracks that ended."""
        blobs = self._filter_blobs(blobs)
        uv, cov = self._measure(blobs) if len(blobs) else (np.zeros((0, 2)), np.zeros((0, 2, 2)))
        for trk in self.tracks:
            if trk.state is not None:
                self._predict(trk)
        used = np.zeros(len(blobs), bool)
        mature = [t for t in self.tracks if t.state is not None]
        young = [t for t in self.tracks if t.state is None]
        self._associate(mature, uv, cov, used, blobs, frame, self._mature_costs)
        self._associate(young, uv, cov, used, blobs, frame, partial(self._young_costs, frame=frame))
        for trk in self.tracks:
            if trk.frames[-1] != frame:
                trk.missed += 1
        for b in np.nonzero(~used)[0]:
            trk = Track(self.next_id)
            self.next_id += 1
            self._add(trk, frame, blobs, uv, cov, b)
            self.tracks.append(trk)
        done = [
            t
            for t in self.tracks
            if t.missed > (self.p.max_missed if t.state is not None else 2) or len(t) >= self.p.max_length
        ]
        if done:
            ids = {t.id for t in done}
            self.tracks = [t for t in self.tracks if t.id not in ids]
        return [t for t in done if len(t) >= 3]

    def _associate(
        self,
        group: list[Track],
        uv: np.ndarray,
        cov: np.ndarray,
        used: np.ndarray,
        blobs: Blobs,
        frame: int,
        costs_fn: Callable[[list[Track], np.ndarray, np.ndarray], np.ndarray],
    ) -> None:
        """Assign free blobs to the tracks of ``group`` by minimum total cost; mark them used."""
        if not group or used.all():
            return
        free = np.nonzero(~used)[0]
        for r, c in self._assign(costs_fn(group, uv[free], cov[free])):
            b = free[c]
            used[b] = True
            self._add(group[r], frame, blobs, uv, cov, b)

    def _add(self, trk: Track, frame: int, blobs: Blobs, uv: np.ndarray, cov: np.ndarray, b: int) -> None:
        trk.frames.append(frame)
        trk.xy.append((float(blobs.xy[b, 0]), float(blobs.xy[b, 1])))
        trk.uv.append((float(uv[b, 0]), float(uv[b, 1])))
        trk.sigma_uv.append((float(np.sqrt(cov[b, 0, 0])), float(np.sqrt(cov[b, 1, 1]))))
        trk.size.append((float(blobs.size[b, 0]), float(blobs.size[b, 1])))
        trk.missed = 0
        if len(trk) == 2:
            self._start_filter(trk, cov[b])
        elif trk.state is not None:
            self._update(trk, uv[b], cov[b])

    def flush(self) -> list[Track]:
        """End every open track (end of the video)."""
        done, self.tracks = self.tracks, []
        return [t for t in done if len(t) >= 3]
