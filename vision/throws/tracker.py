"""Candidate tracks of small moving blobs, followed with a ballistic Kalman filter on the facade.

The filter runs in facade units (columns, floors) per frame, where gravity is a near-constant
downward acceleration of g / floor height: this is what lets a track survive a few frames hidden
behind a tree or a same-coloured window, and what keeps its gate small when rain or a flock puts
dozens of blobs in each frame. A track is only a candidate; whether it was a throw is decided
afterwards on the whole trajectory (physics.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np
from scipy.optimize import linear_sum_assignment

from vision.throws.facade import FacadeCalibration
from vision.throws.motion import Blobs

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
    # A large object partly the colour of the wall is seen in pieces, their centroids up to half
    # its size off its centre (arcs regrown from such pieces: track_of).
    fragment_noise: float = 0.3  # centroid std per pixel of the object's size a blob lacks


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


@dataclass(frozen=True)
class _Measurements:
    """Blob centroids in facade units, and what turns pixel noise into facade covariance there: a
    pixel std of (sx, sy) is sx^2 A + sy^2 B (outer products of the columns of H^-1's Jacobian)."""

    uv: np.ndarray  # (N,2)
    A: np.ndarray  # (N,2,2)
    B: np.ndarray  # (N,2,2)
    sigma_px: np.ndarray  # (N,2) pixel noise of each blob taken as a whole object

    def cov(self, sigma_px: np.ndarray) -> np.ndarray:
        """Facade covariances (..., N, 2, 2) for pixel noise (..., N, 2)."""
        return sigma_px[..., 0, None, None] ** 2 * self.A + sigma_px[..., 1, None, None] ** 2 * self.B

    def subset(self, idx: np.ndarray) -> _Measurements:
        return _Measurements(self.uv[idx], self.A[idx], self.B[idx], self.sigma_px[idx])


@dataclass(frozen=True)
class _Detection:
    """What a track takes from one frame."""

    xy: np.ndarray
    size: np.ndarray
    uv: np.ndarray
    cov: np.ndarray


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

    def _measure(self, blobs: Blobs) -> _Measurements:
        uv = self.calib.to_facade(blobs.xy)
        cols = np.stack([np.linalg.inv(self.calib.jacobian(tuple(p))) for p in uv]).reshape(-1, 2, 2)
        a, b = cols[:, :, 0], cols[:, :, 1]
        sigma_px = self.p.pixel_noise + 0.1 * blobs.size
        return _Measurements(uv, a[:, :, None] * a[:, None, :], b[:, :, None] * b[:, None, :], sigma_px)

    # -- association ------------------------------------------------------------------------

    def _mature_costs(self, tracks: list[Track], uv: np.ndarray, R: np.ndarray) -> np.ndarray:
        """Mahalanobis costs (T,N) of measurements with covariances R (N,2,2), gated."""
        pred = np.stack([t.state[:2] for t in tracks])  # (T,2)
        P = np.stack([t.cov[:2, :2] for t in tracks])  # (T,2,2)
        S = P[:, None] + R[None]  # (T,N,2,2)
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

    def filter_blobs(self, blobs: Blobs) -> Blobs:
        """The blobs a track may take (what ``step`` expects)."""
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
        """Advance to ``frame`` with its (filtered) blobs; return the tracks that ended."""
        for trk in self.tracks:
            if trk.state is not None:
                self._predict(trk)
        if len(blobs):
            ms = self._measure(blobs)
            used = np.zeros(len(blobs), bool)
            self._associate([t for t in self.tracks if t.state is not None], blobs, ms, used, frame, True)
            self._associate([t for t in self.tracks if t.state is None], blobs, ms, used, frame, False)
        for trk in self.tracks:
            if trk.frames[-1] != frame:
                trk.missed += 1
        if len(blobs):
            cov = ms.cov(ms.sigma_px)
            for b in np.nonzero(~used)[0]:
                trk = Track(self.next_id)
                self.next_id += 1
                self._add(trk, frame, _Detection(blobs.xy[b], blobs.size[b], ms.uv[b], cov[b]))
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
        self, group: list[Track], blobs: Blobs, ms: _Measurements, used: np.ndarray, frame: int, mature: bool
    ) -> None:
        """Assign free blobs to the tracks of ``group`` by minimum total cost; mark them used."""
        free = np.nonzero(~used)[0]
        if not group or not len(free):
            return
        msub = ms.subset(free)
        cov = msub.cov(msub.sigma_px)
        costs_fn = self._mature_costs if mature else partial(self._young_costs, frame=frame)
        for r, c in self._assign(costs_fn(group, msub.uv, cov)):
            b = free[c]
            used[b] = True
            self._add(group[r], frame, _Detection(blobs.xy[b], blobs.size[b], msub.uv[c], cov[c]))

    def _add(self, trk: Track, frame: int, det: _Detection) -> None:
        trk.frames.append(frame)
        trk.xy.append((float(det.xy[0]), float(det.xy[1])))
        trk.uv.append((float(det.uv[0]), float(det.uv[1])))
        trk.sigma_uv.append((float(np.sqrt(det.cov[0, 0])), float(np.sqrt(det.cov[1, 1]))))
        trk.size.append((float(det.size[0]), float(det.size[1])))
        trk.missed = 0
        if len(trk) == 2:
            self._start_filter(trk, det.cov)
        elif trk.state is not None:
            self._update(trk, det.uv, det.cov)

    def track_of(self, track_id: int, frames: list[int], xy: np.ndarray, size: np.ndarray) -> Track:
        """A track (without filter state) made of the given detections of one object.

        Blobs smaller than the object (its 80th-percentile size) are pieces of it, their
        centroids off its centre by up to the size they lack: their noise says so.
        """
        ms = self._measure(Blobs(xy, size, np.ones(len(frames))))
        lack = np.maximum(np.percentile(size, 80, axis=0)[None] - size, 0.0)
        sigma = np.sqrt(np.diagonal(ms.cov(ms.sigma_px + self.p.fragment_noise * lack), axis1=1, axis2=2))
        return Track(
            track_id,
            list(frames),
            [(float(x), float(y)) for x, y in xy],
            [(float(u), float(v)) for u, v in ms.uv],
            [(float(a), float(b)) for a, b in sigma],
            [(float(w), float(h)) for w, h in size],
        )

    def flush(self) -> list[Track]:
        """End every open track (end of the video)."""
        done, self.tracks = self.tracks, []
        return [t for t in done if len(t) >= 3]
