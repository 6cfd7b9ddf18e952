"""Synthetic throw scenarios with exact ground truth, for tuning and scoring the throw detector.

There is no footage of real throws to test on, so this module renders them: objects fall with
real physics (gravity, quadratic drag for light objects, an initial toss, wind) in 3-D in front of
a tower, and are projected through a tilted pinhole camera standing on the ground, so higher
floors look shorter and a fall looks slower near the roof, as it does through a real lens. The
facade is either drawn procedurally or is a real street clip from shared/data/video with a
virtual facade laid over it. Distractors (birds, rain, insects, laundry, windows lighting up,
clouds and exposure jumps, street traffic, camera shake, sensor noise) can be mixed in.

Everything is a pure function of the seed, so each seed set gives the same scenes on every
machine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vision.cameras import CameraConfig, FacadeSettings, MaskZone, dump_camera

G = 9.81
FLOOR_H = 3.0
CAMERA_HEIGHT = 1.5
ALL_DISTRACTORS = ("birds", "rain", "insects", "laundry", "windows", "clouds", "street", "shake")
# Seed sets: the detector is tuned on TUNING_SEEDS; VALIDATION_SEEDS were the first held-out set
# and, once looked at, became a second tuning set; FRESH_SEEDS are run only for a final score.
TUNING_SEEDS = range(1000, 1100)
VALIDATION_SEEDS = range(5000, 5100)
FRESH_SEEDS = range(9000, 9100)


# ----------------------------------------------------------------------------- camera model


@dataclass(frozen=True)
class Pinhole:
    """A camera on the ground in front of the facade plane Y=0 (X right along it, Z up)."""

    K: np.ndarray
    R: np.ndarray
    C: np.ndarray
    width: int
    height: int

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,3) world points -> (N,2) pixels and (N,) depths along the optical axis."""
        cam = (np.asarray(points, np.float64).reshape(-1, 3) - self.C) @ self.R.T
        depth = cam[:, 2]
        px = cam @ self.K.T
        return px[:, :2] / px[:, 2:3], depth

    def facade_homography(self, col_w: float, x0: float) -> np.ndarray:
        """Exact H for facade units (u columns from X=x0, v floors from Z=0)."""
        basis = np.stack(
            [np.array([col_w, 0, 0]), np.array([0, 0, FLOOR_H]), np.array([x0, 0, 0]) - self.C], 1
        )
        matrix = self.K @ self.R @ basis
        return matrix / matrix[2, 2]


def _rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """Rows: camera right, down, forward; the camera looks along +Y, tilted up by ``pitch``."""
    forward = np.array([math.sin(yaw) * math.cos(pitch), math.cos(yaw) * math.cos(pitch), math.sin(pitch)])
    right = np.array([math.cos(yaw), -math.sin(yaw), 0.0])
    down = np.cross(forward, right)
    cr, sr = math.cos(roll), math.sin(roll)
    right, down = cr * right + sr * down, -sr * right + cr * down
    return np.stack([right, down, forward])


@dataclass(frozen=True)
class Building:
    floors: int
    columns: int
    col_w: float
    x0: float


def _make_geometry(rng: np.random.Generator, width: int, height: int) -> tuple[Pinhole, Building]:
    floors = int(rng.integers(6, 31))
    col_w = float(rng.uniform(3.0, 4.2))
    top = floors * FLOOR_H
    distance = float(np.clip(rng.uniform(0.5, 1.0) * top + rng.uniform(10, 25), 25, 110))
    elev_top = math.atan2(top - CAMERA_HEIGHT, distance)
    elev_bottom = math.atan2(-CAMERA_HEIGHT - 4.0, distance)  # a strip of street below the facade
    pitch = 0.5 * (elev_top + elev_bottom)
    half = 0.5 * (elev_top - elev_bottom)
    focal = 0.5 * height * 0.9 / math.tan(half)
    K = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])
    R = _rotation(pitch, math.radians(rng.normal(0, 2.0)), math.radians(rng.normal(0, 1.0)))
    columns = int(rng.integers(5, 15))
    while True:
        facade_w = columns * col_w
        x0 = -facade_w / 2 + float(rng.uniform(-0.1, 0.1)) * facade_w
        cam = Pinhole(K, R, np.array([0.0, -distance, CAMERA_HEIGHT]), width, height)
        corners = np.array([[x0, 0, 0], [x0 + facade_w, 0, 0], [x0 + facade_w, 0, top], [x0, 0, top]])
        px, _ = cam.project(corners)
        if (px[:, 0].min() > 0.04 * width and px[:, 0].max() < 0.96 * width) or columns <= 3:
            break
        columns -= 1
    return cam, Building(floors, columns, col_w, x0)


# ----------------------------------------------------------------------------- throws


@dataclass
class ThrowTruth:
    """Ground truth of one throw; ``path_px`` holds the object's image position in each frame."""

    release_frame: int
    end_frame: int
    floor: int
    column: int
    u: float
    v: float
    size_px: float
    light: bool
    depth_m: float
    path_px: list[tuple[float, float]] = field(default_factory=list)
    visible_frames: int = 0  # frames with the object in the picture and not behind a tree


@dataclass
class _Throw:
    truth: ThrowTruth
    times: np.ndarray  # seconds after release, fine steps
    positions: np.ndarray  # (N,3) world
    diameter_m: float
    aspect: float
    spin: float
    color: tuple[int, int, int]


def _simulate(rng: np.random.Generator, p0: np.ndarray, v0: np.ndarray, drag: float, wind: float) -> tuple:
    dt = 0.002
    p, v = p0.copy(), v0.copy()
    times, pos = [0.0], [p.copy()]
    t = 0.0
    while p[2] > 0 and t < 8.0:
        speed = float(np.linalg.norm(v))
        acc = np.array([wind, 0.0, -G]) - drag * speed * v
        v = v + acc * dt
        p = p + v * dt
        t += dt
        times.append(t)
        pos.append(p.copy())
    return np.array(times), np.array(pos)


def _make_throw(
    rng: np.random.Generator, cam: Pinhole, bld: Building, fps: float, start: int, size_range: tuple
) -> _Throw:
    floor = int(rng.integers(2, bld.floors + 1))
    column = int(rng.integers(1, bld.columns + 1))
    u = column - 0.5 + rng.uniform(-0.25, 0.25)
    v = floor - 1 + rng.uniform(0.3, 0.7)
    depth = float(rng.uniform(0.2, 0.8))
    p0 = np.array([bld.x0 + u * bld.col_w, -depth, v * FLOOR_H])
    v0 = np.array([rng.uniform(-1, 1), -rng.uniform(0.3, 3.0), rng.uniform(-1.5, 2.0)])
    light = bool(rng.random() < 0.35)
    drag = float(rng.uniform(0.03, 0.07) if light else rng.uniform(0.001, 0.01))
    wind = float(rng.normal(0, 0.6)) if light else 0.0
    times, positions = _simulate(rng, p0, v0, drag, wind)
    size_px = float(np.exp(rng.uniform(np.log(size_range[0]), np.log(size_range[1]))))
    _, depth_cam = cam.project(p0)
    diameter = size_px * float(depth_cam[0]) / cam.K[0, 0]
    n_frames = int(times[-1] * fps)
    truth = ThrowTruth(start, start + n_frames, floor, column, float(u), float(v), size_px, light, depth)
    luma = rng.uniform(10, 70) if rng.random() < 0.5 else rng.uniform(190, 250)
    tint = rng.uniform(-30, 30, 3)
    color = tuple(int(np.clip(luma + c, 0, 255)) for c in tint)
    return _Throw(
        truth, times, positions, diameter, float(rng.uniform(0.45, 1.0)), float(rng.uniform(-15, 15)), color
    )


def _draw_throw(
    frame: np.ndarray, thr: _Throw, cam: Pinhole, frame_idx: int, fps: float, trees: _Foreground | None
) -> None:
    t0 = (frame_idx - thr.truth.release_frame) / fps
    if t0 < 0 or t0 > thr.times[-1]:
        return
    # Motion blur: the shutter is open for half the frame interval; sample positions within it.
    samples = np.linspace(t0, min(t0 + 0.5 / fps, thr.times[-1]), 5)
    pts3 = np.stack([np.interp(samples, thr.times, thr.positions[:, k]) for k in range(3)], 1)
    px, depth = cam.project(pts3)
    thr.truth.path_px.append((float(px[0, 0]), float(px[0, 1])))
    h, w = frame.shape[:2]
    hidden = trees is not None and trees.hides(px[0, 0], px[0, 1])
    if 0 <= px[0, 0] < w and 0 <= px[0, 1] < h and not hidden:
        thr.truth.visible_frames += 1
    diam = thr.diameter_m * cam.K[0, 0] / depth
    x0, y0 = np.floor(px.min(0) - diam.max() - 3).astype(int)
    x1, y1 = np.ceil(px.max(0) + diam.max() + 3).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return
    alpha = np.zeros((y1 - y0, x1 - x0), np.float32)
    for k, (x, y) in enumerate(px):
        layer = np.zeros_like(alpha)
        axes = (max(diam[k] / 2, 0.6), max(diam[k] / 2 * thr.aspect, 0.6))
        angle = (thr.spin * samples[k] * 57.3) % 180
        center = ((x - x0) * 16, (y - y0) * 16)
        cv2.ellipse(
            layer,
            (round(center[0]), round(center[1])),
            (round(axes[0] * 16), round(axes[1] * 16)),
            angle,
            0,
            360,
            1.0,
            -1,
            cv2.LINE_AA,
            4,
        )
        alpha += layer / len(px)
    alpha = np.clip(alpha, 0, 1)[..., None]
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = (roi * (1 - alpha) + np.float32(thr.color) * alpha).astype(np.uint8)
    if trees is not None:
        trees.composite(frame, (x0, y0, x1, y1))


# ----------------------------------------------------------------------------- scene drawing


def _facade_texture(rng: np.random.Generator, bld: Building, ppu: int) -> tuple[np.ndarray, list]:
    """Facade in facade coordinates (row 0 = roof); returns the texture and the window quads."""
    h, w = bld.floors * ppu, bld.columns * ppu
    wall = rng.uniform(110, 215) + rng.uniform(-20, 20, 3)
    tex = np.empty((h, w, 3), np.float32)
    tex[:] = wall
    tex += rng.normal(0, 4, (h, w, 1)).astype(np.float32)
    wx0, wx1 = rng.uniform(0.15, 0.3), rng.uniform(0.7, 0.85)
    wy0, wy1 = rng.uniform(0.25, 0.35), rng.uniform(0.78, 0.9)
    glass = rng.uniform(30, 90)
    windows = []
    for f in range(bld.floors):
        row0 = (bld.floors - f - 1) * ppu
        cv2.rectangle(tex, (0, row0 + ppu - 3), (w, row0 + ppu), tuple((wall * 0.8).tolist()), -1)
        for c in range(bld.columns):
            shade = glass + rng.uniform(-20, 35)
            color = np.array([shade * 1.1, shade, shade * 0.9])
            if rng.random() < 0.08:
                color = np.array([150, 215, 240]) + rng.uniform(-20, 10, 3)
            x0, x1 = int((c + wx0) * ppu), int((c + wx1) * ppu)
            y0, y1 = row0 + int((1 - wy1) * ppu), row0 + int((1 - wy0) * ppu)
            cv2.rectangle(tex, (x0 - 2, y0 - 2), (x1 + 2, y1 + 2), tuple((wall * 0.6).tolist()), -1)
            cv2.rectangle(tex, (x0, y0), (x1, y1), tuple(color.tolist()), -1)
            windows.append((f + 1, c + 1, (c + wx0, f + wy0, c + wx1, f + wy1)))
    tex = cv2.GaussianBlur(tex, (0, 0), 0.8)
    return np.clip(tex, 0, 255).astype(np.uint8), windows


@dataclass
class _Foreground:
    """What stands between the camera and the facade (trees): drawn over the falling objects,
    which pass behind it, and hides them there."""

    image: np.ndarray
    alpha: np.ndarray  # (h, w) float32, 1 where the foreground is opaque

    def composite(self, frame: np.ndarray, box: tuple[int, int, int, int] | None = None) -> None:
        """Draw the foreground over ``frame`` (only within ``box`` = x0, y0, x1, y1 if given)."""
        x0, y0, x1, y1 = box or (0, 0, frame.shape[1], frame.shape[0])
        a = self.alpha[y0:y1, x0:x1, None]
        roi = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = (roi * (1 - a) + self.image[y0:y1, x0:x1] * a).astype(np.uint8)

    def hides(self, x: float, y: float) -> bool:
        h, w = self.alpha.shape
        return 0 <= int(y) < h and 0 <= int(x) < w and self.alpha[int(y), int(x)] >= 0.5


def _procedural_background(
    rng: np.random.Generator, cam: Pinhole, bld: Building, H: np.ndarray
) -> tuple[np.ndarray, list[MaskZone], list, _Foreground]:
    w, h = cam.width, cam.height
    sky_top, sky_bot = rng.uniform(150, 230), rng.uniform(190, 250)
    col = np.linspace(sky_top, sky_bot, h, dtype=np.float32)[:, None]
    img = np.empty((h, w, 3), np.float32)
    img[..., 0] = col * 1.05
    img[..., 1] = col * 0.97
    img[..., 2] = col * 0.85
    # Ground: the horizon of the Z=0 plane, then the street drawn up to it.
    ground_line = _to_img(H, [[-50, 0], [bld.columns + 50, 0]])
    y_ground = float(np.max(ground_line[:, 1]))
    road = rng.uniform(70, 120)
    cv2.rectangle(img, (0, int(y_ground - 5)), (w, h), (road, road, road * 1.02), -1)
    ppu = int(np.clip(max(h / bld.floors * 1.6, 40), 40, 120))
    tex, windows = _facade_texture(rng, bld, ppu)
    to_tex = np.array([[1 / ppu, 0, 0], [0, -1 / ppu, bld.floors], [0, 0, 1.0]])
    out = img.astype(np.uint8)
    cv2.warpPerspective(
        tex, H @ to_tex, (w, h), out, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT
    )
    zones: list[MaskZone] = []
    trees = _Foreground(out.copy(), np.zeros((h, w), np.float32))
    # The sky zone starts half a floor above the roof: an object tossed up from the top floor must
    # stay visible.
    roof = _to_img(H, [[bld.columns + 3, bld.floors + 0.6], [-3, bld.floors + 0.6]])
    zones.append(
        MaskZone(
            kind="sky",
            name="sky",
            polygon=[(0.0, 0.0), (float(w), 0.0), (float(w), float(roof[0, 1])), (0.0, float(roof[1, 1]))],
        )
    )
    street_top = y_ground + 0.25 * (h - y_ground)
    zones.append(
        MaskZone(
            kind="road",
            name="street",
            polygon=[(0.0, street_top), (float(w), street_top), (float(w), float(h)), (0.0, float(h))],
        )
    )
    for k in range(int(rng.integers(0, 4))):
        cx = rng.uniform(0.05, 0.95) * w
        top_y = y_ground - rng.uniform(0.08, 0.22) * h
        pts = []
        for _ in range(7):
            r = rng.uniform(0.02, 0.05) * w
            c = (cx + rng.uniform(-0.04, 0.04) * w, top_y + rng.uniform(0, y_ground - top_y))
            green = (rng.uniform(30, 60), rng.uniform(70, 120), rng.uniform(30, 60))
            cv2.circle(trees.image, (int(c[0]), int(c[1])), int(r), green, -1, cv2.LINE_AA)
            cv2.circle(trees.alpha, (int(c[0]), int(c[1])), int(r), 1.0, -1, cv2.LINE_AA)
            pts += [(c[0] + r * math.cos(a), c[1] + r * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 12)]
        hull = cv2.convexHull(np.float32(pts)).reshape(-1, 2)
        zones.append(MaskZone(kind="tree", name=f"tree{k + 1}", polygon=[tuple(map(float, p)) for p in hull]))
    trees.composite(out)
    return out, zones, windows, trees


def _to_img(H: np.ndarray, uv: list) -> np.ndarray:
    return cv2.perspectiveTransform(np.float64(uv).reshape(-1, 1, 2), H).reshape(-1, 2)


class _ClipBackground:
    """Frames of a real clip, resized, played forwards then backwards so there is never a jump cut.

    A facade camera is bolted to a wall, but some clips were filmed from a moving vehicle, a dolly
    or an edited programme with cuts and pans. Played behind a fixed virtual facade such a clip
    is a scene no facade camera ever sees (the whole image slides every frame), so only the
    clip's longest stretch that a fixed camera could have filmed is used (no cut, no pan, no
    dolly: see _longest_fixed_stretch); a clip with no such stretch of ``min_stable`` frames is
    held on one frame, its real texture without its camera motion. The real clips themselves,
    in full and with their camera motion, are still run through the detector for false alarms
    (tests/test_throws.py, bench_throws.py).
    """

    def __init__(
        self, path: str, size: tuple[int, int], offset: int, max_cached: int = 160, min_stable: int = 25
    ) -> None:
        cap = cv2.VideoCapture(path)
        frames = []
        cache_w = min(size[0], 960)
        while len(frames) < max_cached:
            ok, fr = cap.read()
            if not ok:
                break
            scale = cache_w / fr.shape[1]
            frames.append(cv2.resize(fr, (cache_w, round(fr.shape[0] * scale)), interpolation=cv2.INTER_AREA))
        cap.release()
        if not frames:
            raise FileNotFoundError(f"cannot read video frames from {path}")
        start, stop = _longest_fixed_stretch(frames)
        if stop - start < min_stable:
            start, stop = 0, 1
        self.frames, self.size, self.offset = frames[start:stop], size, offset

    def get(self, index: int) -> np.ndarray:
        n = len(self.frames)
        period = max(2 * n - 2, 1)
        k = (index + self.offset) % period
        fr = self.frames[k if k < n else period - k]
        return cv2.resize(fr, self.size, interpolation=cv2.INTER_LINEAR)


def _longest_fixed_stretch(frames: list[np.ndarray], max_motion_px: float = 0.5) -> tuple[int, int]:
    """[start, stop) of the longest run of frames with no cut and no camera motion.

    Camera motion is the dominant similarity transform between consecutive 480-pixel-wide frames,
    fitted with RANSAC to tracked corners so that walking people (a minority of corners, moving
    every which way) do not count; a step moves no image corner by more than ``max_motion_px``
    on a fixed camera. A cut loses the corners or gives a wild transform: also a break. Measured
    medians per step: 0.1-0.2 px for the fixed MOT17-01 and MOT20-08 cameras, 0.4 for the slow
    dolly of facenetpt_video, 2.2 for MOT17-13 (filmed from a bus). The dense MOT20-05 crowd
    biases its fixed camera's estimate to ~0.85, so that clip is held on one frame too: a known
    loss of a hard, legitimate background (its full clip still runs in the false-alarm check).
    """
    small = []
    for fr in frames:
        gray = cv2.cvtColor(fr, cv2.COLOR_BGR2GRAY)
        small.append(cv2.resize(gray, (480, round(gray.shape[0] * 480 / gray.shape[1])), interpolation=cv2.INTER_AREA))
    h, w = small[0].shape
    corners = np.float32([[0, 0], [w, 0], [0, h], [w, h]])
    best, run_start = (0, 1), 0
    for k in range(1, len(small) + 1):
        ok = False
        if k < len(small):
            pts = cv2.goodFeaturesToTrack(small[k - 1], 300, 0.01, 8)
            if pts is not None and len(pts) >= 10:
                nxt, status, _ = cv2.calcOpticalFlowPyrLK(small[k - 1], small[k], pts, None)
                found = status.ravel() == 1
                if found.sum() >= 10:
                    m, _ = cv2.estimateAffinePartial2D(pts[found], nxt[found], ransacReprojThreshold=1.0)
                    if m is not None:
                        moved = corners @ m[:, :2].T + m[:, 2]
                        ok = float(np.max(np.hypot(*(moved - corners).T))) <= max_motion_px
        if not ok:
            if k - run_start > best[1] - best[0]:
                best = (run_start, k)
            run_start = k
    return best


# ----------------------------------------------------------------------------- distractors


class _Distractors:
    """Everything that moves or changes and is not a throw; drawn in image space per frame."""

    def __init__(
        self,
        rng: np.random.Generator,
        kinds: set[str],
        cam: Pinhole,
        bld: Building,
        H: np.ndarray,
        n_frames: int,
        fps: float,
        windows: list,
    ) -> None:
        self.rng, self.kinds, self.fps, self.H = rng, kinds, fps, H
        w, h = cam.width, cam.height
        self.w, self.h = w, h
        diag = math.hypot(w, h) / math.hypot(1920, 1080)
        self.birds = []
        if "birds" in kinds:
            for _ in range(int(rng.integers(2, 7))):
                start = int(rng.integers(0, max(n_frames - 50, 1)))
                mode = rng.choice(["level", "rising", "curving", "glide"])
                speed = rng.uniform(3, 12) * diag
                heading = rng.choice([-1, 1])
                vy = {
                    "level": rng.normal(0, 0.3),
                    "rising": -rng.uniform(1, 4),
                    "curving": 0.0,
                    "glide": rng.uniform(0.5, 2.5),
                }[mode] * diag
                self.birds.append(
                    dict(
                        start=start,
                        x=rng.uniform(0, w),
                        y=rng.uniform(0.05, 0.8) * h,
                        vx=heading * speed,
                        vy=vy,
                        mode=mode,
                        size=rng.uniform(4, 14) * diag,
                        flap=rng.uniform(3, 8),
                        turn=rng.uniform(-0.08, 0.08),
                        dur=int(rng.integers(40, 200)),
                    )
                )
        self.insects = []
        if "insects" in kinds:
            for _ in range(int(rng.integers(1, 4))):
                self.insects.append(
                    dict(
                        start=int(rng.integers(0, max(n_frames - 30, 1))),
                        dur=int(rng.integers(20, 80)),
                        x=rng.uniform(0, w),
                        y=rng.uniform(0, h),
                        size=rng.uniform(35, 110) * diag,
                        alpha=rng.uniform(0.25, 0.6),
                    )
                )
        self.laundry = []
        if "laundry" in kinds and windows:
            for _ in range(int(rng.integers(1, 4))):
                _, _, (u0, v0, u1, v1) = windows[int(rng.integers(len(windows)))]
                quad = _to_img(H, [[u0, v0 - 0.25], [u1, v0 - 0.25], [u1, v0 + 0.15], [u0, v0 + 0.15]])
                self.laundry.append(
                    dict(
                        quad=quad,
                        amp=rng.uniform(1.5, 6) * diag,
                        freq=rng.uniform(0.3, 1.5),
                        color=tuple(rng.uniform(0, 255, 3).tolist()),
                        start=int(rng.integers(0, n_frames)) if rng.random() < 0.3 else 0,
                    )
                )
        self.lights = []
        if "windows" in kinds and windows:
            for _ in range(int(rng.integers(2, 10))):
                _f, _c, (u0, v0, u1, v1) = windows[int(rng.integers(len(windows)))]
                quad = _to_img(H, [[u0, v0], [u1, v0], [u1, v1], [u0, v1]])
                on = int(rng.integers(0, n_frames))
                off = on + int(rng.integers(25, n_frames + 1))
                self.lights.append(
                    dict(
                        quad=np.round(quad).astype(np.int32),
                        on=on,
                        off=off,
                        color=tuple((np.array([140, 210, 250]) + rng.uniform(-30, 5, 3)).tolist()),
                    )
                )
        self.street = []
        if "street" in kinds:
            ground_y = float(np.max(_to_img(H, [[0, 0], [bld.columns, 0]])[:, 1]))
            for _ in range(int(rng.integers(3, 10))):
                vehicle = rng.random() < 0.4
                size = (
                    (rng.uniform(90, 220), rng.uniform(40, 80))
                    if vehicle
                    else (rng.uniform(12, 25), rng.uniform(35, 70))
                )
                size = (size[0] * diag, size[1] * diag)
                direction = rng.choice([-1, 1])
                self.street.append(
                    dict(
                        start=int(rng.integers(0, n_frames)),
                        size=size,
                        y=min(ground_y + rng.uniform(-5, 40) * diag, h - 2),
                        x=-size[0] if direction > 0 else w + size[0],
                        vx=direction * (rng.uniform(4, 14) if vehicle else rng.uniform(0.8, 2.5)) * diag,
                        color=tuple(rng.uniform(0, 255, 3).tolist()),
                    )
                )
        self.rain_on = "rain" in kinds
        self.rain_angle = rng.uniform(-0.3, 0.3)
        self.rain_n = int(rng.integers(60, 300) * diag**2)
        self.clouds = "clouds" in kinds
        if self.clouds:
            self.cloud_field = rng.uniform(-1, 1, (6, 8)).astype(np.float32)
            self.cloud_amp = rng.uniform(0.08, 0.22)
            self.cloud_speed = rng.uniform(0.002, 0.01)
            self.jumps = sorted(int(x) for x in rng.integers(0, n_frames, int(rng.integers(0, 3))))
            self.jump_gain = [rng.uniform(-0.25, 0.25) for _ in self.jumps]
        self.shake = "shake" in kinds
        if self.shake:
            self.jitter = rng.uniform(0.2, 1.0) * diag
            self.bumps = [
                (int(b), rng.uniform(2, 8) * diag) for b in rng.integers(0, n_frames, int(rng.integers(0, 4)))
            ]

    def draw_scene(self, frame: np.ndarray, i: int) -> None:
        """Things that are part of the scene (drawn before the falling objects, which pass in front)."""
        for light in self.lights:
            if light["on"] <= i < light["off"]:
                cv2.fillPoly(frame, [light["quad"]], light["color"])
        for item in self.laundry:
            if i < item["start"]:
                continue
            dx = item["amp"] * math.sin(2 * math.pi * item["freq"] * i / self.fps)
            q = item["quad"].copy()
            q[2:, 0] += dx  # the hanging edge sways, the line it hangs from does not
            cv2.fillPoly(frame, [np.round(q).astype(np.int32)], item["color"], cv2.LINE_AA)
        for car in self.street:
            if i < car["start"]:
                continue
            x = car["x"] + car["vx"] * (i - car["start"])
            w, h = car["size"]
            cv2.rectangle(frame, (int(x), int(car["y"] - h)), (int(x + w), int(car["y"])), car["color"], -1)

    def draw_front(self, frame: np.ndarray, i: int) -> np.ndarray:
        """Things in front of everything (birds, insects, rain) and whole-image effects."""
        rng = self.rng
        for b in self.birds:
            k = i - b["start"]
            if not 0 <= k < b["dur"]:
                continue
            if b["mode"] == "curving":
                ang = b["turn"] * k
                x = b["x"] + sum(b["vx"] * math.cos(b["turn"] * j) for j in range(k))
                y = b["y"] + sum(b["vx"] * math.sin(b["turn"] * j) for j in range(k))
                del ang
            else:
                x, y = b["x"] + b["vx"] * k, b["y"] + b["vy"] * k + 2 * math.sin(k / 6)
            phase = math.sin(2 * math.pi * b["flap"] * k / self.fps)
            span = b["size"] * (0.55 + 0.45 * phase)
            cv2.ellipse(
                frame,
                (int(x), int(y)),
                (max(int(span / 2), 1), max(int(b["size"] / 5), 1)),
                0,
                0,
                360,
                (35, 35, 40),
                -1,
                cv2.LINE_AA,
            )
            tip = int(b["size"] / 3 * phase)
            cv2.line(
                frame, (int(x - span / 2), int(y - tip)), (int(x + span / 2), int(y - tip)), (40, 40, 45), 1
            )
        for ins in self.insects:
            k = i - ins["start"]
            if not 0 <= k < ins["dur"]:
                continue
            ins["x"] += rng.normal(0, 15)
            ins["y"] += rng.normal(0, 15)
            layer = np.zeros(frame.shape[:2], np.uint8)
            cv2.circle(layer, (int(ins["x"]), int(ins["y"])), int(ins["size"] / 2), 255, -1)
            layer = cv2.GaussianBlur(layer, (0, 0), ins["size"] / 5)
            a = (layer.astype(np.float32) * (ins["alpha"] / 255))[..., None]
            frame[:] = (frame * (1 - a) + 25 * a).astype(np.uint8)
        if self.rain_on:
            dx = self.rain_angle
            xs = rng.uniform(0, self.w, self.rain_n)
            ys = rng.uniform(0, self.h, self.rain_n)
            ls = rng.uniform(8, 25, self.rain_n) * self.w / 1920
            overlay = np.zeros_like(frame)
            for x, y, ln in zip(xs, ys, ls, strict=True):
                cv2.line(
                    overlay, (int(x), int(y)), (int(x + dx * ln), int(y + ln)), (45, 45, 45), 1, cv2.LINE_AA
                )
            frame = cv2.add(frame, overlay)
        if self.clouds:
            t = i * self.cloud_speed
            shifted = np.roll(self.cloud_field, int(t) % 8, axis=1)
            frac = t - int(t)
            field_ = (1 - frac) * shifted + frac * np.roll(shifted, 1, axis=1)
            gain = 1 + self.cloud_amp * cv2.resize(field_, (self.w, self.h), interpolation=cv2.INTER_CUBIC)
            for j, g in zip(self.jumps, self.jump_gain, strict=True):
                if i >= j:
                    gain = gain * (1 + g * math.exp(-(i - j) / (2 * self.fps)))
            frame = cv2.multiply(frame, cv2.merge([gain, gain, gain]), dtype=cv2.CV_8U)
        if self.shake:
            dx, dy = rng.normal(0, self.jitter, 2)
            for start, amp in self.bumps:
                if i >= start:
                    k = (i - start) / self.fps
                    dx += amp * math.exp(-3 * k) * math.sin(2 * math.pi * 4 * k)
                    dy += 0.6 * amp * math.exp(-3 * k) * math.cos(2 * math.pi * 4 * k)
            frame = cv2.warpAffine(
                frame, np.float32([[1, 0, dx], [0, 1, dy]]), (self.w, self.h), borderMode=cv2.BORDER_REPLICATE
            )
        return frame


# ----------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    seed: int
    width: int
    height: int
    fps: float
    n_frames: int
    floors: int
    columns: int
    homography: list[list[float]]
    mask_zones: list[MaskZone]
    throws: list[ThrowTruth]
    distractors: list[str]
    background: str
    noise_sigma: float

    def camera(self, source: str = "scenario") -> CameraConfig:
        facade = FacadeSettings(
            homography=self.homography,
            floors=self.floors,
            columns=self.columns,
            image_size=(self.width, self.height),
            mask_zones=self.mask_zones,
        )
        return CameraConfig(id=f"scenario-{self.seed}", role="facade", source=source, facade=facade)

    def truth_json(self) -> dict:
        d = asdict(self)
        d["mask_zones"] = [z.model_dump(mode="json") for z in self.mask_zones]
        return d


def make_scenario(
    seed: int,
    *,
    width: int = 1280,
    height: int = 720,
    fps: float = 25.0,
    duration_s: float = 10.0,
    n_throws: int = 1,
    distractors: tuple[str, ...] | set[str] = (),
    background: str | None = None,
    size_range: tuple[float, float] = (3.0, 30.0),
) -> tuple[Scenario, Iterator[np.ndarray]]:
    """A scenario and an iterator over its frames (BGR uint8), both fixed by ``seed``.

    ``background`` is a real clip to play behind the virtual facade, or None for a drawn one.
    Throws are spaced so that they never overlap in time.
    """
    rng = np.random.default_rng(seed)
    cam, bld = _make_geometry(rng, width, height)
    H = cam.facade_homography(bld.col_w, bld.x0)
    n_frames = int(duration_s * fps)
    kinds = set(distractors)
    if background is None:
        static, zones, windows, trees = _procedural_background(rng, cam, bld, H)
        clip = None
    else:
        static, zones, windows, trees = None, [], [], None
        clip = _ClipBackground(background, (width, height), int(rng.integers(0, 100)))
    throws: list[_Throw] = []
    t = int(rng.integers(int(0.6 * fps), int(1.5 * fps)))
    for _ in range(n_throws):
        thr = _make_throw(rng, cam, bld, fps, t, size_range)
        if thr.truth.end_frame >= n_frames - 2:
            break
        throws.append(thr)
        t = thr.truth.end_frame + int(rng.integers(int(1.0 * fps), int(3 * fps)))
    noise = float(rng.uniform(1.0, 3.0))
    dis = _Distractors(np.random.default_rng(seed + 7919), kinds, cam, bld, H, n_frames, fps, windows)
    scenario = Scenario(
        seed,
        width,
        height,
        fps,
        n_frames,
        bld.floors,
        bld.columns,
        H.tolist(),
        zones,
        [thr.truth for thr in throws],
        sorted(kinds),
        background or "procedural",
        noise,
    )

    def frames() -> Iterator[np.ndarray]:
        nrng = np.random.default_rng(seed + 104729)
        noise_pos, noise_neg = [], []
        for _ in range(6):
            n = nrng.normal(0, noise, (height, width, 1)).astype(np.float32)
            noise_pos.append(np.repeat(np.clip(n, 0, 255).astype(np.uint8), 3, axis=2))
            noise_neg.append(np.repeat(np.clip(-n, 0, 255).astype(np.uint8), 3, axis=2))
        for i in range(n_frames):
            frame = static.copy() if clip is None else clip.get(i)
            dis.draw_scene(frame, i)
            for thr in throws:
                _draw_throw(frame, thr, cam, i, fps, trees)
            frame = dis.draw_front(frame, i)
            k = int(nrng.integers(6))
            frame = cv2.subtract(cv2.add(frame, noise_pos[k]), noise_neg[k])
            yield frame

    return scenario, frames()


def write_scenario(
    scenario: Scenario, frames: Iterator[np.ndarray], out_dir: Path
) -> tuple[Path, Path, Path]:
    """Video (mp4), camera YAML and truth JSON on disk, for running the CLI on a scenario."""
    out_dir.mkdir(parents=True, exist_ok=True)
    video = out_dir / f"scenario_{scenario.seed}.mp4"
    writer = cv2.VideoWriter(
        str(video), cv2.VideoWriter_fourcc(*"mp4v"), scenario.fps, (scenario.width, scenario.height)
    )
    for frame in frames:
        writer.write(frame)
    writer.release()
    camera = out_dir / f"scenario_{scenario.seed}.yaml"
    camera.write_text(dump_camera(scenario.camera(str(video))), encoding="utf-8")
    truth = out_dir / f"scenario_{scenario.seed}.json"
    truth.write_text(json.dumps(scenario.truth_json(), indent=1), encoding="utf-8")
    return video, camera, truth


if __name__ == "__main__":  # a quick look: python -m benchmarks.throw_scenarios SEED OUT_DIR
    import sys

    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("/tmp/throw_scenario")
    sc, fr = make_scenario(seed, n_throws=2, distractors=ALL_DISTRACTORS)
    paths = write_scenario(sc, fr, out)
    print(*paths, sep="\n")
