"""The throw pipeline for one facade camera: motion -> ballistic tracks -> physics -> origin."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vision.cameras import FacadeSettings
from vision.throws.arc import ArcParams, BlobHistory, regrow
from vision.throws.events import ThrowEvent
from vision.throws.facade import FacadeCalibration
from vision.throws.motion import MotionFrame, MotionParams, MotionSegmenter
from vision.throws.origin import estimate_origin
from vision.throws.physics import (
    PhysicsParams,
    PhysicsVerdict,
    TrajectoryFit,
    crowd_density,
    fit_track,
    judge,
    trim_head,
    trim_still_head,
)
from vision.throws.tracker import BallisticTracker, Track, TrackerParams


@dataclass(frozen=True)
class DetectorParams:
    # Processing at most this many pixels of the watched region per frame keeps 1080p25 within one
    # core; larger regions (4K) are downscaled by 2 (an exact factor: OpenCV's fast path).
    max_pixels: int = 2_100_000
    merge_gap_frames: int = 12  # a track resumed this soon after an event is the same throw
    stitch_gap_frames: int = 15  # a rejected track may be continued by one starting this soon after
    stitch_min_points: int = 6  # each joined piece must be a track in its own right, not a stray blob
    min_regrown_lead_s: float = 0.25  # an accepted track's regrown arc must start this much earlier
    # A facade camera is fixed: shake oscillates about one pose, it does not carry the view away.
    # While the view drifts by more than this (full-resolution px, net over a track), the camera is
    # panning or moving and the scene's own edges slide through the frame as smooth "tracks".
    max_camera_drift_px: float = 6.0
    # ... nor far from its reference pose: shake stays within ~0.5 % of the frame diagonal (a pole
    # swaying by a few pixels; the generator draws bumps up to 8 px at 1080p). A view
    # displaced by more has been panned or knocked, and the calibration no longer holds.
    max_pose_offset: float = 0.01


class ThrowDetector:
    """Feed frames in order; get ThrowEvents when a falling object's track ends."""

    def __init__(
        self,
        facade: FacadeSettings,
        frame_size: tuple[int, int],
        fps: float,
        camera_id: str = "",
        params: DetectorParams | None = None,
        motion: MotionParams | None = None,
        tracker: TrackerParams | None = None,
        physics: PhysicsParams | None = None,
        arc: ArcParams | None = None,
    ) -> None:
        self.p = params or DetectorParams()
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.camera_id = camera_id
        self.calib = FacadeCalibration.from_settings(facade, frame_size)
        zones = [self._scaled(z.polygon, facade, frame_size) for z in facade.mask_zones]
        self.roi = self.calib.region_mask(frame_size, zones)
        area = max(int(np.count_nonzero(self.roi)), 1)
        ys, xs = np.nonzero(self.roi)
        box = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1) if len(xs) else area
        scale = 1.0
        while box * scale * scale > self.p.max_pixels:
            scale /= 2
        self.motion = MotionSegmenter(self.roi, scale=scale, params=motion)
        self.tracker = BallisticTracker(self.calib, self.fps, tracker)
        self.arc = arc or ArcParams()
        self.history = BlobHistory(self.arc.history_frames)
        self.physics = physics or PhysicsParams()
        self.events: list[ThrowEvent] = []
        self.rejected: list[tuple[Track, PhysicsVerdict]] = []
        self.pending: list[Track] = []  # recently rejected tracks that a later one may continue
        self.keep_rejected = False
        self.last_motion: MotionFrame | None = None
        self.diagonal = float(np.hypot(*frame_size))
        self.shifts: dict[int, tuple[float, float]] = {}  # recent frames' camera shift (processing px)

    @staticmethod
    def _scaled(polygon: list, facade: FacadeSettings, frame_size: tuple[int, int]) -> np.ndarray:
        pts = np.asarray(polygon, float)
        if facade.image_size is not None:
            pts = pts * [frame_size[0] / facade.image_size[0], frame_size[1] / facade.image_size[1]]
        return pts

    def process(self, frame: np.ndarray, index: int) -> list[ThrowEvent]:
        return self.process_motion(self.motion.apply(frame), index)

    def process_motion(self, motion: MotionFrame, index: int) -> list[ThrowEvent]:
        """Tracking and judging alone, on a frame's motion already segmented (replays of recorded
        blobs re-score tracker and physics changes without rendering and segmenting again)."""
        self.last_motion = motion
        self.shifts[index] = motion.shift
        if len(self.shifts) > self.arc.history_frames + self.p.stitch_gap_frames:
            self.shifts.pop(next(iter(self.shifts)))
        blobs = self.tracker.filter_blobs(motion.blobs)
        self.history.append(index, blobs)
        return self._judge(self.tracker.step(index, blobs))

    def finish(self) -> list[ThrowEvent]:
        return self._judge(self.tracker.flush())

    def _judge(self, tracks: list[Track]) -> list[ThrowEvent]:
        out = []
        for raw in tracks:
            judged = self._judge_track(raw)
            if judged is None:
                continue
            track, fit, verdict = judged
            if self._continues_previous(track):
                continue
            origin = estimate_origin(fit, self.calib)
            tt = np.linspace(min(origin.release_frame - fit.frame0, 0) / self.fps, fit.t[-1], 40)
            fitted = self.calib.to_image(
                np.stack([fit.early_u.at(tt) if tt[-1] <= 1.0 else fit.u.at(tt), fit.v.at(tt)], 1)
            )
            event = ThrowEvent(
                start_frame=track.frames[0],
                end_frame=track.frames[-1],
                origin=origin,
                release_time_s=origin.release_frame / self.fps,
                confidence=verdict.confidence,
                accel_ratio=verdict.accel_ratio,
                camera_id=self.camera_id,
                trajectory_px=[(f, x, y) for f, (x, y) in zip(track.frames, track.xy, strict=True)],
                fitted_px=[(float(x), float(y)) for x, y in fitted],
            )
            self.events.append(event)
            out.append(event)
        return out

    def _judge_track(self, raw: Track) -> tuple[Track, TrajectoryFit, PhysicsVerdict] | None:
        """The track, or a rejected earlier track joined to it, if either passes the physics tests.

        A fall the tracker lost for a few frames (behind a crowd, over a same-coloured wall, or
        because drag made it fall slower than the filter expected) comes out as two tracks, each
        too short to prove anything. Joined, the fit over both halves decides: two unrelated
        pieces do not make one parabola.
        """
        best = self._verdict(raw)
        if best is None or not best[2].is_throw:
            self.pending = [
                t for t in self.pending if raw.frames[0] - t.frames[-1] <= self.p.stitch_gap_frames
            ]
            for prev in reversed(self.pending):
                if not self._may_continue(prev, raw):
                    continue
                joined = self._verdict(_concat(prev, raw))
                if joined is not None and joined[2].is_throw:
                    self.pending.remove(prev)
                    return joined
            regrown = self._regrown(raw)
            if regrown is not None:
                return regrown
            self.pending.append(raw)
            if best is not None and self.keep_rejected:
                self.rejected.append((best[0], best[2]))
            return None
        # A large object's track may start mid-fall, where the tracker first kept hold of its
        # pieces: the origin comes from the whole arc when the pieces before it regrow onto it,
        # adding a stretch of the fall (a blob or two more at the start is as likely clutter
        # beside the object, a lit window it passes, as the object).
        whole = self._regrown(raw)
        if whole is not None and whole[0].frames[0] <= best[0].frames[0] - self.p.min_regrown_lead_s * self.fps:
            return whole
        return best

    def _regrown(self, raw: Track) -> tuple[Track, TrajectoryFit, PhysicsVerdict] | None:
        """The whole arc the rejected ``raw`` is a piece of, if it passes the physics tests (arc.py)."""
        points = regrow(raw, self.history, self.calib, self.fps, self.arc)
        if not points or len(points) < self.physics.min_points:
            return None
        frames = sorted(points)
        xy = np.array([points[f][0] for f in frames])
        size = np.array([points[f][1] for f in frames])
        judged = self._verdict(self.tracker.track_of(raw.id, frames, xy, size))
        return judged if judged is not None and judged[2].is_throw else None

    def _may_continue(self, prev: Track, raw: Track) -> bool:
        """Cheap test before a joint fit: two real pieces, the second later, lower and within a fall's reach."""
        gap = raw.frames[0] - prev.frames[-1]
        if min(len(prev), len(raw)) < self.p.stitch_min_points or not 0 <= gap <= self.p.stitch_gap_frames:
            return False
        dv = raw.uv[0][1] - prev.uv[-1][1]
        du = raw.uv[0][0] - prev.uv[-1][0]
        return -0.3 <= -dv <= 0.5 * gap and abs(du) <= 0.1 * gap + 0.3

    def _verdict(self, raw: Track) -> tuple[Track, TrajectoryFit, PhysicsVerdict] | None:
        if len(raw) < self.physics.min_points:
            return None
        track = trim_head(trim_still_head(raw), self.fps, min_points=self.physics.min_points)
        if len(track) < self.physics.min_points:
            return None
        fit = fit_track(track, self.fps, self.physics.early_window_s)
        drift, offset = self._camera_motion(track)
        if drift > self.p.max_camera_drift_px or offset > self.p.max_pose_offset * self.diagonal:
            reason = f"camera moved ({drift:.0f} px during the track, {offset:.0f} px off its pose)"
            return track, fit, PhysicsVerdict(False, reason, 0.0, 0.0, fit.local_chi, 0.0)
        crowd = crowd_density(track, self.history.get)
        return track, fit, judge(track, fit, self.calib, self.physics, crowd)

    def _camera_motion(self, track: Track) -> tuple[float, float]:
        """Full-resolution px: the camera's net shift up to a track's last frame (from its first
        frame, and from a second before it), and its largest offset from the reference pose
        during the track.

        Shake swings about one pose, so its net shift over any stretch stays within its
        amplitude; a camera being carried (a bus, a pan) keeps going, and the second before the
        track shows it even when the track itself is short."""
        shifts = np.array([self.shifts[f] for f in track.frames if f in self.shifts]).reshape(-1, 2)
        if not len(shifts):
            return 0.0, 0.0
        first = track.frames[0]
        before = next((self.shifts[f] for f in range(first - round(self.fps), first) if f in self.shifts), shifts[0])
        drift = float(max(np.hypot(*(shifts[-1] - shifts[0])), np.hypot(*(shifts[-1] - np.asarray(before)))))
        offset = float(np.hypot(shifts[:, 0], shifts[:, 1]).max())
        return drift / self.motion.scale, offset / self.motion.scale

    def _continues_previous(self, track: Track) -> bool:
        """A track that overlaps or picks up where a reported throw's track was is that throw again.

        A large or fast object can split into two blobs for a while, or be lost and found again;
        either gives a second track along the same path.
        """
        for prev in self.events[-3:]:
            gap = track.frames[0] - prev.end_frame
            if gap > self.p.merge_gap_frames or track.frames[-1] < prev.start_frame:
                continue
            prev_pts = {f: (x, y) for f, x, y in prev.trajectory_px}
            common = [k for k, f in enumerate(track.frames) if f in prev_pts]
            if common:
                d = [
                    np.hypot(
                        track.xy[k][0] - prev_pts[track.frames[k]][0],
                        track.xy[k][1] - prev_pts[track.frames[k]][1],
                    )
                    for k in common
                ]
                if np.median(d) < 60:
                    return True
            elif gap > 0:
                _, x, y = prev.trajectory_px[-1]
                x1, y1 = track.xy[0]
                if abs(x1 - x) < 80 and -10 < y1 - y < 40 * gap:
                    return True
        return False


def _concat(first: Track, second: Track) -> Track:
    """``first`` followed by the part of ``second`` after it (the two may share their boundary frame)."""
    k = next((i for i, f in enumerate(second.frames) if f > first.frames[-1]), len(second))
    return Track(
        second.id,
        first.frames + second.frames[k:],
        first.xy + second.xy[k:],
        first.uv + second.uv[k:],
        first.sigma_uv + second.sigma_uv[k:],
        first.size + second.size[k:],
    )
