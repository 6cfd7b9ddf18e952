"""Whole-arc regrowth: a fall the tracker saw only in pieces, rebuilt from the blobs along its parabola.

A large object the colour of the wall is seen only where it passes in front of windows and
slabs: its blob splits, shrinks, jumps by half its size and comes back, and the tracker's
frame-to-frame gate loses it every few frames, leaving pieces too short to judge; a light object
blown about can be handed to a raindrop for a frame. What the pieces share is the parabola:
fitted to one piece and extended frame by frame through the recent blobs, it collects the
object's other detections, and the whole arc is then judged by the same physics tests as any
track. Only the piece's own parabola decides which blob is taken, so a chain the tracker built
by hopping between people's heads does not regrow into anything smoother than the blobs are.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vision.throws.facade import FacadeCalibration
from vision.throws.motion import Blobs
from vision.throws.tracker import Track


@dataclass(frozen=True)
class ArcParams:
    min_piece: int = 8  # detections a piece needs to seed a regrowth
    # Only large objects break into pieces; small ones are seen whole or not at all, and the
    # chance chains of street clips are made of small blobs.
    min_size_px: float = 8.0  # the piece's median blob (larger side)
    min_piece_drop: float = 0.2  # floors the piece itself falls
    radius_px: float = 2.5  # a blob is on the arc within this many pixels...
    radius_per_size: float = 0.5  # ... plus this share of the object's size (its pieces' offsets)
    radius_per_frame: float = 0.5  # px per frame of extrapolation beyond the last blob taken
    max_skip: int = 6  # frames with no blob on the arc end its growth in that direction
    refit_every: int = 3  # blobs taken between refits of the parabola
    history_frames: int = 300
    # An arc is judged only if it is long and dense: adding a few blobs near a chance chain's
    # parabola must not lift it over the physics tests' minimum length (street clips).
    min_arc_s: float = 0.8
    min_arc_density: float = 0.7


class BlobHistory:
    """The recent frames' blobs (after the tracker's rain filter), oldest first."""

    def __init__(self, frames: int) -> None:
        self.frames: deque[tuple[int, Blobs]] = deque(maxlen=frames)

    def append(self, frame: int, blobs: Blobs) -> None:
        self.frames.append((frame, blobs))

    def get(self, frame: int) -> Blobs | None:
        if not self.frames or not self.frames[0][0] <= frame <= self.frames[-1][0]:
            return None
        k = frame - self.frames[0][0]
        if k < len(self.frames) and self.frames[k][0] == frame:
            return self.frames[k][1]
        return next((b for f, b in self.frames if f == frame), None)


@dataclass
class _Arc:
    """Detections taken so far, by frame: pixel centroid and size."""

    points: dict[int, tuple[np.ndarray, np.ndarray]]

    def fit(self, calib: FacadeCalibration, fps: float, f0: int) -> Callable[[int], np.ndarray]:
        frames = np.array(sorted(self.points))
        xy = np.array([self.points[f][0] for f in frames])
        uv = calib.to_facade(xy)
        t = (frames - f0) / fps
        deg = 2 if len(frames) >= 6 else 1
        cu, cv = np.polyfit(t, uv[:, 0], deg), np.polyfit(t, uv[:, 1], deg)

        def predict(frame: int) -> np.ndarray:
            tt = (frame - f0) / fps
            return calib.to_image(np.array([[np.polyval(cu, tt), np.polyval(cv, tt)]]))[0]

        return predict


def regrow(
    piece: Track,
    history: BlobHistory,
    calib: FacadeCalibration,
    fps: float,
    p: ArcParams,
) -> dict[int, tuple[np.ndarray, np.ndarray]] | None:
    """The piece's arc, grown backward and forward through ``history``: {frame: (xy, size)}.

    None when the piece cannot seed one (too short, not falling) or the arc is short or sparse.
    """
    if len(piece) < p.min_piece:
        return None
    v = np.array([uv[1] for uv in piece.uv])
    if v[0] - v[-1] < p.min_piece_drop:
        return None
    size = float(np.median(np.max(np.asarray(piece.size), 1)))
    if size < p.min_size_px:
        return None
    radius = p.radius_px + p.radius_per_size * size
    f0 = piece.frames[0]
    arc = _Arc(
        {f: (np.asarray(xy), np.asarray(s)) for f, xy, s in zip(piece.frames, piece.xy, piece.size, strict=True)}
    )
    predict = arc.fit(calib, fps, f0)
    # Grow outward from the piece's ends, refitting as blobs are taken.
    ends = {-1: piece.frames[0], 1: piece.frames[-1]}
    for direction in (1, -1):
        frame, last, taken = ends[direction], ends[direction], 0
        while abs(frame - last) <= p.max_skip:
            frame += direction
            blobs = history.get(frame)
            if blobs is None:
                break
            hit = _pieces(blobs, predict(frame), radius + p.radius_per_frame * abs(frame - last))
            if hit is None:
                continue
            arc.points[frame] = hit
            last, taken = frame, taken + 1
            if taken % p.refit_every == 0:
                predict = arc.fit(calib, fps, f0)
    # Re-take every frame's blob nearest the final parabola: this also replaces the tracker's
    # wrong picks inside the piece (a raindrop taken for a light object for a frame).
    predict = arc.fit(calib, fps, f0)
    out = {}
    for frame in range(min(arc.points), max(arc.points) + 1):
        blobs = history.get(frame)
        if blobs is None:
            continue
        hit = _pieces(blobs, predict(frame), radius)
        if hit is not None:
            out[frame] = hit
    span = max(out) - min(out) + 1 if out else 0
    if len(out) < p.min_arc_s * fps or len(out) < p.min_arc_density * span:
        return None
    return out


def _pieces(blobs: Blobs, xy: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The object on the arc at ``xy``: every blob within ``radius`` taken as one of its pieces
    (the area-weighted centroid and the union box of them), None if there is none. The nearest
    piece alone would jump between the object's ends as they show in turn."""
    if not len(blobs):
        return None
    near = np.hypot(blobs.xy[:, 0] - xy[0], blobs.xy[:, 1] - xy[1]) <= radius
    if not near.any():
        return None
    centre = np.average(blobs.xy[near], axis=0, weights=blobs.area[near])
    half = blobs.size[near] / 2
    size = (blobs.xy[near] + half).max(axis=0) - (blobs.xy[near] - half).min(axis=0)
    return centre, size
