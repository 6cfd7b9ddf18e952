"""Is a track a falling body? Decided on the whole trajectory, in facade units.

On the facade plane a thrown object follows v(t) = v0 + b t + a t^2 / 2 with a close to
-g / floor height (less for light objects, whose drag grows with speed), and drifts sideways at
a nearly constant rate. The distractors fail this in characteristic ways: birds fly level, rise,
or curve (horizontal acceleration), glide at constant speed (a ~ 0); rain falls at terminal
velocity (a ~ 0) and never links into long tracks; insects near the lens jump about (large
residuals); laundry and curtains sway in place and lit windows do not move (no drop); street
traffic stays at ground level and moves sideways.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vision.throws.facade import FacadeCalibration
from vision.throws.motion import Blobs
from vision.throws.tracker import NOMINAL_COLUMN_W, NOMINAL_FLOOR_H, G, Track


@dataclass(frozen=True)
class PhysicsParams:
    min_points: int = 12
    min_duration_s: float = 0.6  # a drop from the 2nd floor window lasts ~0.9 s
    min_final_speed: float = (
        0.5  # x g x duration (up to 1.2 s, drag caps it): a body falling that long is fast
    )
    min_drop_floors: float = 0.8
    accel_min: float = 0.5  # fraction of g (drag on light objects lowers it)
    accel_max: float = 1.7  # fraction of g (parallax and low floors raise the apparent value)
    max_side_accel: float = 0.5  # horizontal / vertical acceleration
    max_chi: float = 3.0  # rms of the residuals in units of their expected noise
    max_rms_px: float = 3.5
    min_density: float = 0.5  # detections per frame over the track's span
    min_seen_drop: float = 0.35  # share of the drop seen between detections at most 4 frames apart
    max_size_spread: float = 1.2  # std of log blob area: tumbling changes it, body parts more so
    robust_size_from_px: float = 12.0  # from this blob size, a few fragments do not count (MAD spread)
    min_start_floor: float = 0.8  # tracks entirely at street level are people and cars
    early_window_s: float = 1.0  # drag matters less early in a fall: test this window too
    # A hand toss from a window rises at most ~1 m before falling (0.35 of a nominal 3 m floor).
    # People walking, seen through a calibration that makes them "floors", bob up and down by more.
    max_rise_floors: float = 0.35
    # Gravity must be measured, not merely allowed: the fitted downward acceleration at least this
    # many standard errors from zero. A falling body bends its path by tens of pixels a second;
    # a chance chain of a crowd's body parts, jittering by their own size, does not prove a bend.
    min_accel_z: float = 4.0
    # Among a crowd's blobs the tracker had a choice at every step, and the chain it kept is the best
    # of many: its parabola is that much likelier to be chance, so it must prove more. A crowd is
    # ``crowd_neighbours`` other blobs on average next to each detection (within twice the object's
    # size plus its step from the previous frame).
    crowd_neighbours: float = 1.0
    crowd_accel_z: float = 6.0
    # ... and must fall at nearly g: a chain of people walking into a dense crowd drifts down the
    # frame slower than anything falling (0.65-0.69 g in the two crowd false alarms of the tuning
    # and validation scenes, 0.90-1.07 g for the throws seen over crowds), so a light object slowed
    # by drag is not told from it there and goes unreported rather than raising false alarms.
    crowd_accel_min: float = 0.8
    # ... unless it keeps falling: people walking into a crowd drift down the frame for a few
    # steps, a light object slowed by drag falls floor after floor (13 in the validation scene
    # that the rule above used to miss). About 9 m of fall.
    crowd_long_drop: float = 3.0


@dataclass(frozen=True)
class QuadraticFit:
    """Weighted least-squares quadratic x(t) = c0 + c1 t + c2 t^2, with coefficient covariance."""

    coef: np.ndarray
    cov: np.ndarray
    chi: float  # rms of normalised residuals

    def at(self, t: np.ndarray | float) -> np.ndarray:
        t = np.asarray(t, float)
        return self.coef[0] + self.coef[1] * t + self.coef[2] * t * t

    def sigma_at(self, t: float) -> float:
        phi = np.array([1.0, t, t * t])
        return float(np.sqrt(max(phi @ self.cov @ phi, 0.0)))


def fit_quadratic(t: np.ndarray, x: np.ndarray, sigma: np.ndarray) -> QuadraticFit:
    A = np.stack([np.ones_like(t), t, t * t], 1)
    w = 1.0 / np.maximum(sigma, 1e-6)
    coef, *_ = np.linalg.lstsq(A * w[:, None], x * w, rcond=None)
    resid = (x - A @ coef) * w
    dof = max(len(t) - 3, 1)
    chi = float(np.sqrt(np.sum(resid**2) / dof))
    normal = (A * w[:, None]).T @ (A * w[:, None])
    cov = np.linalg.pinv(normal) * max(chi, 1.0) ** 2
    return QuadraticFit(coef, cov, chi)


@dataclass(frozen=True)
class TrajectoryFit:
    """Fits of a track in facade units; time in seconds from the track's first frame."""

    t: np.ndarray
    u: QuadraticFit
    v: QuadraticFit
    early_u: QuadraticFit
    early_v: QuadraticFit
    frame0: int
    fps: float
    windows: list  # (selection, (u fit, v fit)) over overlapping ~1 s windows covering the track

    @property
    def local_chi(self) -> float:
        """Smoothness over short windows, the worst rms normalised residual of their fits: drag
        and wind bend a long fall away from one parabola, but over a second any falling body is a
        parabola, while an insect or a chance chain of blobs is not."""
        return max(max(f.chi for f in fits) for _, fits in self.windows)


def fit_track(track: Track, fps: float, early_window_s: float = 1.0) -> TrajectoryFit:
    t = (np.asarray(track.frames, float) - track.frames[0]) / fps
    uv = np.asarray(track.uv)
    s = np.asarray(track.sigma_uv)
    fu, fv = fit_quadratic(t, uv[:, 0], s[:, 0]), fit_quadratic(t, uv[:, 1], s[:, 1])
    early = t <= t[0] + early_window_s
    if early.sum() >= 6 and early.sum() < len(t):
        eu = fit_quadratic(t[early], uv[early, 0], s[early, 0])
        ev = fit_quadratic(t[early], uv[early, 1], s[early, 1])
    else:
        eu, ev = fu, fv
    return TrajectoryFit(t, fu, fv, eu, ev, track.frames[0], fps, _windows(t, uv, s, early_window_s))


def _windows(t: np.ndarray, uv: np.ndarray, s: np.ndarray, window_s: float) -> list:
    """(selection, (u fit, v fit)) for overlapping windows of ``window_s`` covering the track."""
    if t[-1] <= 1.5 * window_s:
        sel = np.ones(len(t), bool)
        return [(sel, (fit_quadratic(t, uv[:, 0], s[:, 0]), fit_quadratic(t, uv[:, 1], s[:, 1])))]
    out = []
    for start in np.arange(0.0, t[-1] - window_s / 2, window_s / 2):
        sel = (t >= start) & (t <= start + window_s)
        if sel.sum() >= 6:
            out.append((sel, tuple(fit_quadratic(t[sel], uv[sel, k], s[sel, k]) for k in (0, 1))))
    if not out:
        sel = np.ones(len(t), bool)
        out.append((sel, (fit_quadratic(t, uv[:, 0], s[:, 0]), fit_quadratic(t, uv[:, 1], s[:, 1]))))
    return out


def local_rms_px(track: Track, fit: TrajectoryFit, calib: FacadeCalibration) -> float:
    """Worst rms pixel residual over the fit's ~1 s windows: an insect's jumps, whatever its blob size."""
    xy = np.asarray(track.xy)
    worst = 0.0
    for sel, (fu, fv) in fit.windows:
        fitted = calib.to_image(np.stack([fu.at(fit.t[sel]), fv.at(fit.t[sel])], 1))
        worst = max(worst, float(np.sqrt(np.mean(np.sum((xy[sel] - fitted) ** 2, 1)))))
    return worst


def trim_head(track: Track, fps: float, max_drop: int = 12, min_points: int = 8) -> Track:
    """Drop leading detections that do not belong to the fall.

    A track can begin on something else (a bird, a pedestrian's head, a lit window) and then be
    handed to the falling object as it passes; those first points would put the origin on the
    wrong floor. Points are dropped from the front while the first one sits far (> 4 sigma) off
    the parabola fitted to the next second of the track.
    """
    start = 0
    while start < max_drop and len(track) - start > min_points:
        t = (np.asarray(track.frames[start:], float) - track.frames[start]) / fps
        uv = np.asarray(track.uv[start:])
        s = np.asarray(track.sigma_uv[start:])
        sel = t <= 1.0
        sel[0] = False  # judge the first point by the others
        if sel.sum() < 6:
            break
        fu = fit_quadratic(t[sel], uv[sel, 0], s[sel, 0])
        fv = fit_quadratic(t[sel], uv[sel, 1], s[sel, 1])
        ru = (uv[0, 0] - fu.at(0.0)) / np.hypot(s[0, 0], fu.sigma_at(0.0))
        rv = (uv[0, 1] - fv.at(0.0)) / np.hypot(s[0, 1], fv.sigma_at(0.0))
        if np.hypot(ru, rv) <= 4.0 * max(fu.chi, fv.chi, 1.0):
            break
        start += 1
    return track.starting_at(start)


def trim_still_head(track: Track, min_still: int = 3, radius_px: float = 2.0) -> Track:
    """Drop a motionless start, keeping its last point (the moment of release).

    A body in free fall stays within a pixel or two of its apex for only a few frames; a track
    that sits still for longer began on something else: a hand holding the object out (then the
    fall starts where the stillness ends) or, in a crowd, a head that the tracker later handed
    to other people's blobs. Either way the fall must prove itself on the moving part alone,
    which is what keeps a long stationary prefix from lending a chance chain of jumps the points,
    the duration and the smooth fit it does not have.
    """
    xy = np.asarray(track.xy)
    size = np.min(np.asarray(track.size), 1)
    # The median of the first three points, so that one stray first detection does not hide the rest.
    anchor = np.median(xy[:3], axis=0)
    still = 1
    while still < len(track) and np.hypot(*(xy[still] - anchor)) <= max(radius_px, 0.15 * size[still]):
        still += 1
    if still < min_still:
        return track
    return track.starting_at(still - 1)


def seen_drop_fraction(track: Track, max_gap: int = 4) -> float:
    """Share of a track's downward travel (facade floors) between detections <= max_gap frames apart."""
    v = np.asarray(track.uv)[:, 1]
    gaps = np.diff(track.frames)
    down = np.maximum(-np.diff(v), 0.0)
    total = float(down.sum())
    return float(down[gaps <= max_gap].sum()) / total if total > 0 else 0.0


def size_spread_log_area(track: Track, robust_from_px: float = 12.0) -> float:
    """Spread of log blob area, robust to a few fragments.

    A large low-contrast body breaks up for a frame or two as it crosses a window or a
    same-coloured wall; those few small pieces must not count like the steady size changes of a
    chain of different blobs (body parts of a crowd). For blobs of at least ``robust_from_px``
    (median of the smaller side) the spread is the smaller of the standard deviation and the
    scaled median absolute deviation, which ignores a minority of outliers; small blobs, whose
    chance chains are the crowd's false tracks, keep the plain standard deviation.
    """
    sizes = np.asarray(track.size)
    log_area = np.log(np.maximum(sizes[:, 0] * sizes[:, 1], 1e-6))
    std = float(np.std(log_area))
    if float(np.median(np.min(sizes, 1))) < robust_from_px:
        return std
    mad = 1.4826 * float(np.median(np.abs(log_area - np.median(log_area))))
    return min(std, mad)


def crowd_density(track: Track, blobs_at: Callable[[int], Blobs | None]) -> float:
    """Mean number of other blobs within twice the object's size plus its last step of each detection."""
    xy = np.asarray(track.xy)
    size = np.max(np.asarray(track.size), 1)
    counts = []
    for k, frame in enumerate(track.frames):
        blobs = blobs_at(frame)
        if blobs is None or not len(blobs):
            continue
        step = float(np.hypot(*(xy[k] - xy[k - 1]))) if k else 0.0
        d = np.hypot(blobs.xy[:, 0] - xy[k, 0], blobs.xy[:, 1] - xy[k, 1])
        counts.append(int(np.count_nonzero((d > 0.5) & (d < 2 * size[k] + step + 3))))
    return float(np.mean(counts)) if counts else 0.0


def rise_floors(fit: TrajectoryFit) -> float:
    """How far the early fit climbs above its first point before falling (floors; 0 if it never does)."""
    c1, c2 = fit.early_v.coef[1], fit.early_v.coef[2]
    if c2 >= 0 or c1 <= 0:
        return 0.0
    t_apex = min(-c1 / (2 * c2), fit.t[-1])
    return float(fit.early_v.at(t_apex) - fit.early_v.at(0.0))


def turning_flight(t: np.ndarray, fu: QuadraticFit, fv: QuadraticFit, slack_g: float = 0.5) -> bool:
    """A body can only slow sideways by drag, and drag slows its fall too, by as much per unit of
    speed: a = g - k|v|v. So a stretch (times ``t``, fits ``fu``, ``fv``) that clearly loses
    sideways speed while falling faster than g less that drag (beyond ``slack_g`` for
    perspective) is a bird banking down a turn, whose speed stays the same as its path bends, not
    a falling body."""
    t_mid = (t[0] + t[-1]) / 2
    a_side = 2 * fu.coef[2] * NOMINAL_COLUMN_W  # m/s^2
    v_side = (fu.coef[1] + 2 * fu.coef[2] * t_mid) * NOMINAL_COLUMN_W
    sigma = 2 * np.sqrt(max(fu.cov[2, 2], 0.0)) * NOMINAL_COLUMN_W
    if a_side * v_side >= 0 or abs(a_side) < 0.1 * G + 3 * sigma or abs(v_side) < 1.0:
        return False
    drag = -a_side / v_side  # k|v|, per second
    fall_speed = -(fv.coef[1] + 2 * fv.coef[2] * t_mid) * NOMINAL_FLOOR_H
    fall_accel = -2 * fv.coef[2] * NOMINAL_FLOOR_H
    return bool(fall_accel > G - drag * fall_speed + slack_g * G)


def banks_into_a_turn(fit: TrajectoryFit) -> bool:
    """turning_flight over the whole track or any of the fit's ~1 s windows: a bird that flies
    level and then banks down turns in part of its track only."""
    stretches = [(fit.t, (fit.u, fit.v))] + [(fit.t[sel], fits) for sel, fits in fit.windows]
    return any(turning_flight(t, fu, fv) for t, (fu, fv) in stretches)


@dataclass(frozen=True)
class PhysicsVerdict:
    is_throw: bool
    reason: str
    accel_ratio: float  # fitted downward acceleration / (g / nominal floor height)
    drop_floors: float
    chi: float
    confidence: float


def judge(
    track: Track, fit: TrajectoryFit, calib: FacadeCalibration, p: PhysicsParams, crowd: float = 0.0
) -> PhysicsVerdict:
    """Accept a track as a throw only if every physical test passes; say which one failed.

    ``crowd``: the mean number of other blobs next to the track's detections (crowd_density).
    """
    a_nom = G / NOMINAL_FLOOR_H
    n = len(track)
    duration = fit.t[-1]
    v_fit = fit.v.at(fit.t)
    # The drop must be seen, not only fitted: a quadratic through a chain that wanders up, along
    # and down overshoots its top (a running median of three keeps one stray point out).
    v_seen = np.median(np.lib.stride_tricks.sliding_window_view(np.asarray(track.uv)[:, 1], 3), axis=1)
    drop = float(min(v_fit.max() - v_fit[-1], v_seen.max() - v_seen[-1]))
    ratios = [-2 * f.coef[2] / a_nom for f in (fit.v, fit.early_v)]
    ratio = max(ratios, key=lambda r: -abs(r - 1.0))
    chi = fit.local_chi

    def verdict(ok: bool, reason: str) -> PhysicsVerdict:
        conf = 0.0
        if ok:
            conf = float(
                np.clip(
                    0.5
                    + 0.25 * min(n / 20, 1)
                    + 0.25 * np.exp(-(((ratio - 1) / 0.5) ** 2))
                    - 0.05 * max(chi - 1.5, 0),
                    0.05,
                    0.99,
                )
            )
        return PhysicsVerdict(ok, reason, float(ratio), drop, chi, conf)

    if n < p.min_points * min(fit.fps / 25.0, 1.0) or duration < p.min_duration_s:
        return verdict(False, f"too short ({n} points, {duration:.2f} s)")
    # A falling object is seen in most frames of its fall; chains of scattered blobs (body parts
    # of a crowd, rain) that happen to line up are seen in few.
    density = n / (duration * fit.fps + 1)
    if density < p.min_density:
        return verdict(False, f"sparse ({density:.2f} of frames)")
    # Where a body falls it is seen falling: much of the drop lies between detections at most
    # four frames apart (passing over a same-coloured wall, a body can vanish for a frame or
    # two). A chain that sits still and then drops only across long coasting gaps is the tracker
    # hopping between people's heads in a crowd, not a fall.
    seen = seen_drop_fraction(track)
    if seen < p.min_seen_drop:
        return verdict(False, f"drop mostly unseen ({seen:.2f})")
    size_spread = size_spread_log_area(track, p.robust_size_from_px)
    if size_spread > p.max_size_spread:
        return verdict(False, f"size unstable ({size_spread:.2f})")
    if max(v for _, v in track.uv) < p.min_start_floor:
        return verdict(False, "street level")
    if drop < p.min_drop_floors:
        return verdict(False, f"drop {drop:.2f} floors")
    if not any(p.accel_min <= r <= p.accel_max for r in ratios):
        return verdict(False, f"acceleration {ratios[0]:.2f}/{ratios[1]:.2f} g")
    # Drag only ever slows a fall as it speeds up: the early part must fall at close to g even when
    # the whole track, bent by drag, does not.
    if ratios[1] < p.accel_min:
        return verdict(False, f"early part not falling freely ({ratios[1]:.2f} g)")
    accel_z = -fit.v.coef[2] / np.sqrt(max(fit.v.cov[2, 2], 1e-12))
    in_crowd = crowd >= p.crowd_neighbours
    where = f" in a crowd ({crowd:.1f} neighbours)" if in_crowd else ""
    if accel_z < (p.crowd_accel_z if in_crowd else p.min_accel_z):
        return verdict(False, f"acceleration not significant ({accel_z:.1f} sigma{where})")
    if in_crowd and min(ratios) < p.crowd_accel_min and drop < p.crowd_long_drop:
        return verdict(False, f"acceleration {min(ratios):.2f} g{where}")
    rise = rise_floors(fit)
    if rise > p.max_rise_floors:
        return verdict(False, f"rises {rise:.2f} floors first")
    if abs(fit.u.coef[2]) > p.max_side_accel * abs(fit.v.coef[2]) + 3 * np.sqrt(fit.u.cov[2, 2]):
        return verdict(False, "curving sideways")
    if banks_into_a_turn(fit):
        return verdict(False, "slows sideways while falling faster than free fall (turning flight)")
    if chi > p.max_chi:
        return verdict(False, f"erratic (chi {chi:.1f})")
    # The same in pixels, where a blurred insect's jumps are obvious whatever its blob size.
    rms_px = local_rms_px(track, fit, calib)
    size = float(np.median(np.min(np.asarray(track.size), 1)))
    if rms_px > max(p.max_rms_px, 0.2 * size):
        return verdict(False, f"erratic ({rms_px:.1f} px rms)")
    # The speed must grow downward: the last third falls faster than the first third.
    k = max(n // 3, 2)
    speed_first = -(v_fit[k] - v_fit[0]) / max(fit.t[k] - fit.t[0], 1e-6)
    speed_last = -(v_fit[-1] - v_fit[-1 - k]) / max(fit.t[-1] - fit.t[-1 - k], 1e-6)
    if speed_last <= speed_first or speed_last <= 0:
        return verdict(False, "not accelerating downward")
    # People walking towards the camera also drift down the image and can look uniformly
    # accelerated over a few frames; they never reach the speed of a body that fell that long.
    final_speed = -float(fit.v.coef[1] + 2 * fit.v.coef[2] * fit.t[-1])
    if final_speed < p.min_final_speed * a_nom * min(duration, 1.2):
        return verdict(False, f"too slow at the end ({final_speed:.2f} floors/s)")
    return verdict(True, "ballistic")
