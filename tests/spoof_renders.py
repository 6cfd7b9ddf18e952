"""Presentation attacks rendered from real photos: an enrolled face re-shown on a phone or printed.

There are no real attack recordings here. These renders imitate the cues liveness networks are
trained on (moire, backlight, halftone, paper, a bezel or border in the wider crop); the liveness
tests and the gate spoof tests share them so both judge the same attacks.
"""

from __future__ import annotations

import cv2
import numpy as np


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR)


def screen_replay(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo re-shown on a phone: half resolution, moire, gamma, bluish backlight, bezel, JPEG."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    shown = cv2.resize(small, (w, h)).astype(np.float32) / 255
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    freq, angle = rng.uniform(0.18, 0.3), rng.uniform(0.3, 1.2)
    moire = 1 + 0.12 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
    shown = (shown ** 0.8 * moire[..., None]) * np.float32([1.08, 1.0, 0.9]) * 0.85 + 0.08
    bezel = int(0.06 * max(h, w))
    phone = cv2.copyMakeBorder(np.clip(shown * 255, 0, 255).astype(np.uint8), bezel, bezel, bezel, bezel,
                               cv2.BORDER_CONSTANT, value=(20, 20, 20))
    noise = rng.normal(0, 6, (phone.shape[0] + 2 * bezel, phone.shape[1] + 2 * bezel, 3))
    scene = (noise + np.float32([120, 140, 160])).clip(0, 255).astype(np.uint8)
    scene[bezel:-bezel, bezel:-bezel] = phone
    return _jpeg(cv2.GaussianBlur(scene, (3, 3), 0.8), 70)


def printed_photo(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo printed: faded inks, halftone screen, paper grain, limited range, white border, JPEG."""
    h, w = image.shape[:2]
    f = image.astype(np.float32) / 255
    f = 0.75 * f + 0.25 * f.mean(axis=2, keepdims=True)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(3.0, 4.5)
    dots = 0.5 + 0.5 * np.sin(2 * np.pi * xx / period) * np.sin(2 * np.pi * yy / period)
    f = np.where(f > dots[..., None] * 0.9 + 0.05, f, f * 0.75)
    grain = cv2.resize(rng.normal(0, 0.03, (h // 4 + 1, w // 4 + 1)).astype(np.float32), (w, h))
    f = ((f + grain[..., None]) * 0.8 + 0.12) * np.float32([0.92, 0.98, 1.04])
    border = int(0.05 * max(h, w))
    out = cv2.copyMakeBorder(np.clip(f * 255, 0, 255).astype(np.uint8), border, border, border, border,
                             cv2.BORDER_CONSTANT, value=(225, 235, 240))
    return _jpeg(cv2.GaussianBlur(out, (3, 3), 1.0), 75)
