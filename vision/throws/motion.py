"""Motion segmentation tuned for small, fast objects seen by a fixed camera that may shake.

Why not OpenCV's MOG2: it costs ~10 ms per half-HD frame on one core and knows nothing about
camera shake, so every window edge lights up when the pole sways. Instead, a running-average
background is compared with the current frame after three cheap corrections:

* shake: phase correlation of a quarter-size image against the background gives the global
  shift; the integer part is undone by slicing (free) and the sub-pixel rest is absorbed by
  comparing against the local 3x3 min/max of the background ("envelope") instead of the
  background itself, so an edge moved by less than a pixel is not motion;
* light: a robust global gain (median ratio over a sparse grid) normalises exposure jumps and
  clouds; a frame where much of the image still changes (a scene cut, lights switched on all
  at once) re-learns the background instead of reporting thousands of blobs;
* clutter: a per-pixel activity average raises the threshold where things always move
  (leaves, flags, flickering signs), which a throw passing once does not;
* colour: the same comparison on the chroma planes at half resolution, because a pale bag over
  a pale wall differs in hue, not in grey (camera video carries chroma at half resolution
  anyway, 4:2:0).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def _fft_size(limit: int) -> int:
    """Largest n <= limit with only factors 2, 3, 5: a DFT of a prime size is several times slower."""
    for n in range(limit, 0, -1):
        m = n
        for f in (2, 3, 5):
            while m % f == 0:
                m //= f
        if m == 1:
            return n
    return limit


@dataclass(frozen=True)
class MotionParams:
    threshold: float = 14.0  # minimum envelope difference, grey levels
    noise_k: float = 4.0  # threshold is at least noise_k x the frame's robust noise
    activity_k: float = 2.0  # extra threshold per unit of a pixel's usual difference
    alpha: float = 0.04  # background learning rate where nothing moves
    alpha_slow: float = 0.004  # learning rate everywhere, so stopped things are absorbed
    activity_alpha: float = 0.02
    # More foreground than this is a light change or a cut, not objects. A dense crowd alone moves
    # 4-10 % of the region (MOT20-08): at a lower bound the detector went blind over every crowd.
    disturbed_fraction: float = 0.25
    min_area: int = 2  # pixels, at processing scale
    max_blobs: int = 600
    warmup_frames: int = 8
    max_shift: float = 40.0  # processing pixels; beyond this the shift estimate is not trusted
    # Chroma (Cr, Cb) envelope difference, levels: their noise is lower than grey's, and a facade
    # is mostly unsaturated. 0 turns colour off.
    chroma_threshold: float = 8.0


_KERNEL = np.ones((3, 3), np.uint8)


def _envelope_diff(cur: np.ndarray, bg8: np.ndarray) -> np.ndarray:
    """How far each pixel lies outside the background's local 3x3 min/max (per channel)."""
    up = cv2.subtract(cur, cv2.dilate(bg8, _KERNEL))
    down = cv2.subtract(cv2.erode(bg8, _KERNEL), cur)
    return cv2.max(up, down)


def _learn(
    cur: np.ndarray, bg: np.ndarray, act: np.ndarray, diff: np.ndarray, fg: np.ndarray, p: MotionParams, adopt: bool
) -> None:
    """Background and activity update in place: at once when ``adopt``, else slowly everywhere and
    faster away from the foreground ``fg``."""
    if adopt:
        cv2.accumulateWeighted(cur, bg, 0.5)
    else:
        cv2.accumulateWeighted(cur, bg, p.alpha_slow)
        still = cv2.bitwise_not(cv2.dilate(fg, _KERNEL, iterations=2))
        cv2.accumulateWeighted(cur, bg, p.alpha, mask=still)
    cv2.accumulateWeighted(diff, act, p.activity_alpha)


class _ChromaChange:
    """The segmenter's background comparison on Cr and Cb at half the processing scale.

    Returns foreground at processing scale, in reference-pose coordinates, for the grey
    comparison to OR in; learns where it saw no change.
    """

    def __init__(self, size: tuple[int, int], params: MotionParams) -> None:
        self.p = params
        self.full_size = size
        self.size = (max(size[0] // 2, 4), max(size[1] // 2, 4))
        self.bg: np.ndarray | None = None
        self.activity: np.ndarray | None = None
        self._step: tuple | None = None

    def planes(self, crop_bgr: np.ndarray) -> np.ndarray:
        small = cv2.resize(crop_bgr, self.size, interpolation=cv2.INTER_AREA)
        ycc = cv2.cvtColor(small, cv2.COLOR_BGR2YCrCb)
        planes = np.empty((*ycc.shape[:2], 2), np.uint8)
        cv2.mixChannels([ycc], [planes], [1, 0, 2, 1])
        return planes

    def reset(self, chroma: np.ndarray) -> None:
        self.bg = chroma.astype(np.float32)
        self.activity = np.zeros(chroma.shape[:2], np.float32)
        self._step = None

    def foreground(self, chroma: np.ndarray, shift: tuple[float, float]) -> np.ndarray | None:
        """Colour foreground at processing scale, or None where there is none (most frames)."""
        p = self.p
        ix, iy = round(shift[0] / 2), round(shift[1] / 2)
        h, w = chroma.shape[:2]
        bx0, by0 = max(0, -ix), max(0, -iy)
        bx1, by1 = min(w, w - ix), min(h, h - iy)
        cur = chroma[by0 + iy : by1 + iy, bx0 + ix : bx1 + ix]
        bg = self.bg[by0:by1, bx0:bx1]
        act = self.activity[by0:by1, bx0:bx1]
        bg8 = cv2.convertScaleAbs(bg)
        cr, cb = cv2.split(_envelope_diff(cur, bg8))
        diff = cv2.max(cr, cb)
        grid = np.abs(cur[::8, ::8].astype(np.int16) - bg8[::8, ::8]).max(axis=2)
        thr = max(p.chroma_threshold, p.noise_k * 1.4826 * float(np.median(grid)))
        limit = cv2.convertScaleAbs(act, alpha=p.activity_k, beta=thr)
        fg = cv2.compare(diff, limit, cv2.CMP_GT)
        self._step = (cur, bg, act, diff, fg)
        x, y, bw, bh = cv2.boundingRect(fg)
        if bw == 0:
            return None
        # Upsampled only where there is something: a full-frame resize costs ~1 ms at 1080p.
        out = np.zeros(self.full_size[::-1], np.uint8)
        x0, y0 = 2 * (x + bx0), 2 * (y + by0)
        x1, y1 = min(x0 + 2 * bw, self.full_size[0]), min(y0 + 2 * bh, self.full_size[1])
        big = cv2.resize(fg[y : y + bh, x : x + bw], (2 * bw, 2 * bh), interpolation=cv2.INTER_NEAREST)
        out[y0:y1, x0:x1] = big[: y1 - y0, : x1 - x0]
        return out

    def learn(self, adopt: bool) -> None:
        """Update the background with the frame ``foreground`` last saw (at once if ``adopt``)."""
        if self._step is None:
            return
        _learn(*self._step, self.p, adopt)
        self._step = None


@dataclass(frozen=True)
class Blobs:
    """Foreground blobs of one frame, in reference-pose full-resolution pixels.

    ``xy`` (N,2) centroids, ``size`` (N,2) bounding-box width/height, ``area`` (N,) pixels.
    """

    xy: np.ndarray
    size: np.ndarray
    area: np.ndarray

    @staticmethod
    def empty() -> Blobs:
        return Blobs(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0))

    def __len__(self) -> int:
        return len(self.area)

    def subset(self, keep: np.ndarray) -> Blobs:
        return Blobs(self.xy[keep], self.size[keep], self.area[keep])


@dataclass(frozen=True)
class MotionFrame:
    """What the segmenter saw in one frame; ``disturbed`` frames carry no blobs."""

    blobs: Blobs
    shift: tuple[float, float]
    gain: float
    fg_fraction: float
    disturbed: bool


class MotionSegmenter:
    """Foreground blobs inside a region of interest, robust to shake and light changes.

    Only the bounding box of ``roi_mask`` is processed, at ``scale`` (1 = full resolution).
    """

    def __init__(self, roi_mask: np.ndarray, scale: float = 1.0, params: MotionParams | None = None) -> None:
        self.p = params or MotionParams()
        ys, xs = np.nonzero(roi_mask)
        if len(xs) == 0:
            raise ValueError("the region of interest is empty: check the facade calibration and mask zones")
        self.x0, self.y0 = int(xs.min()), int(ys.min())
        self.x1, self.y1 = int(xs.max()) + 1, int(ys.max()) + 1
        self.scale = float(scale)
        crop = roi_mask[self.y0 : self.y1, self.x0 : self.x1]
        self.size = (max(round(crop.shape[1] * scale), 8), max(round(crop.shape[0] * scale), 8))
        self.mask = cv2.resize(crop, self.size, interpolation=cv2.INTER_NEAREST)
        self.roi_area = max(cv2.countNonZero(self.mask), 1)
        # The quarter-size image for shake estimation uses an exact factor of 4 (OpenCV's fast path).
        self.small_size = (_fft_size(max(self.size[0] // 4, 16)), _fft_size(max(self.size[1] // 4, 16)))
        self.small_crop = (self.small_size[0] * 4, self.small_size[1] * 4)
        self.window = cv2.createHanningWindow(self.small_size, cv2.CV_32F)
        self.bg: np.ndarray | None = None
        self.activity: np.ndarray | None = None
        self.frames = 0
        self.shift = (0.0, 0.0)
        self.search_radius = 3  # quarter-scale pixels per frame: fast shake, far below a window period
        self.chroma = _ChromaChange(self.size, self.p) if self.p.chroma_threshold > 0 else None

    def _planes(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Grey at processing scale and, for a colour frame, chroma at half of it."""
        crop = frame[self.y0 : self.y1, self.x0 : self.x1]
        if self.scale != 1.0 and crop.ndim == 3 and self.chroma is not None:
            # Downscale the colour image once; grey and chroma both come from it (4K: one pass
            # over the full-resolution pixels instead of two).
            crop = cv2.resize(crop, self.size, interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
        if gray.shape[1::-1] != self.size:
            gray = cv2.resize(gray, self.size, interpolation=cv2.INTER_AREA)
        chroma = self.chroma.planes(crop) if self.chroma is not None and crop.ndim == 3 else None
        return gray, chroma

    def _reset(self, gray: np.ndarray, chroma: np.ndarray | None) -> None:
        self.bg = gray.astype(np.float32)
        self.activity = np.zeros_like(self.bg)
        self.shift = (0.0, 0.0)
        self._learn_spectrum()
        if chroma is not None:
            self.chroma.reset(chroma)

    def _estimate_shift(self, gray: np.ndarray) -> tuple[float, float]:
        """Phase correlation against the background, peak searched near the previous shift.

        The local search matters on a facade: its windows repeat, so the global correlation peak
        can be one window period away from the true shift, which would misalign everything.
        """
        small = self._quarter(gray).astype(np.float32)
        f_cur = cv2.dft(small * self.window, flags=cv2.DFT_COMPLEX_OUTPUT)
        cross = cv2.mulSpectrums(f_cur, self.bg_spectrum, 0, conjB=True)
        mag = cv2.magnitude(cross[..., 0], cross[..., 1]) + 1e-6
        cross /= mag[..., None]
        corr = cv2.idft(cross, flags=cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE)
        h, w = corr.shape
        fx, fy = self.size[0] / w, self.size[1] / h
        px, py = self.shift[0] / fx, self.shift[1] / fy
        r = self.search_radius
        ys = (np.arange(round(py) - r, round(py) + r + 1)) % h
        xs = (np.arange(round(px) - r, round(px) + r + 1)) % w
        patch = corr[np.ix_(ys, xs)]
        k = int(np.argmax(patch))
        iy, ix = divmod(k, patch.shape[1])
        peak = float(patch[iy, ix])
        # Sub-pixel: parabola through the peak and its neighbours on each axis.
        dx = dy = 0.0
        if 0 < ix < patch.shape[1] - 1:
            a, b, c = patch[iy, ix - 1], patch[iy, ix], patch[iy, ix + 1]
            dx = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) < 0 else 0.0
        if 0 < iy < patch.shape[0] - 1:
            a, b, c = patch[iy - 1, ix], patch[iy, ix], patch[iy + 1, ix]
            dy = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) < 0 else 0.0
        sx = (round(px) - r + ix + dx) * fx
        sy = (round(py) - r + iy + dy) * fy
        if peak < 0.03 or abs(sx) > self.p.max_shift or abs(sy) > self.p.max_shift:
            return self.shift
        return sx, sy

    def _quarter(self, image: np.ndarray) -> np.ndarray:
        w, h = self.small_crop
        if image.shape[1] < w or image.shape[0] < h:
            return cv2.resize(image, self.small_size, interpolation=cv2.INTER_LINEAR)
        return cv2.resize(image[:h, :w], self.small_size, interpolation=cv2.INTER_AREA)

    def _learn_spectrum(self) -> None:
        self.bg_small = self._quarter(self.bg)
        self.bg_spectrum = cv2.dft(self.bg_small * self.window, flags=cv2.DFT_COMPLEX_OUTPUT)

    def apply(self, frame: np.ndarray) -> MotionFrame:
        gray, chroma = self._planes(frame)
        self.frames += 1
        if self.bg is None or (chroma is not None and self.chroma.bg is None):
            self._reset(gray, chroma)
            return MotionFrame(Blobs.empty(), (0.0, 0.0), 1.0, 0.0, True)
        p = self.p
        dx, dy = self.shift = self._estimate_shift(gray)
        ix, iy = round(dx), round(dy)
        # Align: content at background (x, y) is at current (x + ix, y + iy).
        h, w = gray.shape
        bx0, by0 = max(0, -ix), max(0, -iy)
        bx1, by1 = min(w, w - ix), min(h, h - iy)
        if bx1 - bx0 < w // 2 or by1 - by0 < h // 2:
            self._reset(gray, chroma)
            return MotionFrame(Blobs.empty(), (dx, dy), 1.0, 1.0, True)
        cur = gray[by0 + iy : by1 + iy, bx0 + ix : bx1 + ix]
        bg = self.bg[by0:by1, bx0:bx1]
        act = self.activity[by0:by1, bx0:bx1]
        mask = self.mask[by0:by1, bx0:bx1]

        # Global gain from a sparse grid: robust to the few pixels that really moved.
        s_cur = cur[::8, ::8].astype(np.float32) + 1.0
        s_bg = bg[::8, ::8] + 1.0
        gain = float(np.median(s_cur / s_bg))
        if abs(gain - 1.0) > 0.01:
            cur = cv2.convertScaleAbs(cur, alpha=1.0 / gain)
        bg8 = cv2.convertScaleAbs(bg)
        noise = 1.4826 * float(np.median(np.abs(cur[::8, ::8].astype(np.int16) - bg8[::8, ::8])))
        thr = max(p.threshold, p.noise_k * noise)

        diff = _envelope_diff(cur, bg8)
        limit = cv2.convertScaleAbs(act, alpha=p.activity_k, beta=thr)
        fg = cv2.compare(diff, limit, cv2.CMP_GT)
        if chroma is not None:
            colour = self.chroma.foreground(chroma, (dx, dy))
            if colour is not None:
                fg = cv2.bitwise_or(fg, colour[by0:by1, bx0:bx1])
        fg = cv2.bitwise_and(fg, mask)
        fg_fraction = cv2.countNonZero(fg) / self.roi_area

        warm = self.frames <= p.warmup_frames
        disturbed = warm or fg_fraction > p.disturbed_fraction
        # Too much changed at once to be objects: adopt the new look of the scene at once.
        adopt = disturbed and not warm
        _learn(cur, bg, act, diff, fg, p, adopt)
        if chroma is not None:
            self.chroma.learn(adopt)
        if abs(gain - 1.0) > 0.01:
            # Let the background follow a lasting exposure change instead of normalising forever.
            cv2.multiply(bg, gain**0.15, dst=bg)
        if self.frames % 2 == 0 or disturbed:
            self._learn_spectrum()
        if disturbed:
            return MotionFrame(Blobs.empty(), (dx, dy), gain, fg_fraction, True)

        blobs = self._blobs(cv2.dilate(fg, _KERNEL), bx0, by0)
        return MotionFrame(blobs, (dx, dy), gain, fg_fraction, False)

    def _blobs(self, fg: np.ndarray, ox: int, oy: int) -> Blobs:
        # Contours, not connectedComponentsWithStats: on a sparse mask they are ~20x faster.
        contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            return Blobs.empty()
        if len(contours) > self.p.max_blobs:
            contours = sorted(contours, key=len, reverse=True)[: self.p.max_blobs]
        rows = []
        for c in contours:
            x, y, w, h = cv2.boundingRect(c)
            m = cv2.moments(c)
            # Pixel count from the outline's area plus half its perimeter (exact for rectangles).
            pixels = m["m00"] + 0.5 * cv2.arcLength(c, True) + 1.0
            if m["m00"] > 0:
                cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
            else:
                cx, cy = x + (w - 1) / 2, y + (h - 1) / 2
            rows.append((cx, cy, w, h, pixels))
        a = np.asarray(rows, np.float64)
        # The 3x3 dilation above adds about one pixel all round; take it back out of the sizes.
        w = np.maximum(a[:, 2] - 2, 1)
        h = np.maximum(a[:, 3] - 2, 1)
        area = np.maximum(a[:, 4] - 2 * (w + h) - 4, 1)
        keep = area >= self.p.min_area
        inv = 1.0 / self.scale
        xy = (a[keep, :2] + [ox + 0.5, oy + 0.5]) * inv - 0.5 + [self.x0, self.y0]
        size = np.stack([w[keep], h[keep]], 1) * inv
        return Blobs(xy, size, area[keep] * inv * inv)
