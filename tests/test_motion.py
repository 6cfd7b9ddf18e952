"""The facade motion segmenter on synthetic frames where the answer is known exactly."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vision.throws.motion import MotionParams, MotionSegmenter

W, H = 320, 240
WALL = (200, 200, 200)
# Same grey as the wall (0.114 B + 0.587 G + 0.299 R = 198.9) but bluish: seen only in colour.
PALE_BLUE = (232, 200, 184)


def _wall(rng: np.random.Generator) -> np.ndarray:
    frame = np.full((H, W, 3), WALL, np.uint8)
    noise = rng.normal(0, 1.5, (H, W, 1))
    return np.clip(frame + noise, 0, 255).astype(np.uint8)


def _falling_object_frames(n: int = 30) -> list[tuple[np.ndarray, tuple[int, int]]]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        frame = _wall(rng)
        centre = (160, 40 + 5 * i)
        if i >= 12:  # the background has settled by then
            cv2.circle(frame, centre, 4, PALE_BLUE, -1)
        out.append((frame, centre))
    return out


def _hits(params: MotionParams) -> int:
    seg = MotionSegmenter(np.full((H, W), 255, np.uint8), params=params)
    hits = 0
    for i, (frame, (cx, cy)) in enumerate(_falling_object_frames()):
        blobs = seg.apply(frame).blobs
        if i >= 12 and len(blobs):
            hits += int(np.any(np.hypot(blobs.xy[:, 0] - cx, blobs.xy[:, 1] - cy) < 4))
    return hits


def test_an_object_of_the_walls_grey_is_seen_by_its_colour() -> None:
    assert _hits(MotionParams()) >= 16  # of 18 frames with the object
    assert _hits(replace(MotionParams(), chroma_threshold=0.0)) <= 2  # grey alone barely sees it


def test_a_light_change_raises_no_colour_blobs() -> None:
    """Clouds dim the whole wall: grey is normalised by the global gain, chroma must stay quiet."""
    seg = MotionSegmenter(np.full((H, W), 255, np.uint8))
    rng = np.random.default_rng(5)
    tinted = np.full((H, W, 3), (190, 205, 215), np.uint8)  # a warm, slightly saturated wall
    blobs = 0
    for i in range(40):
        gain = 1.0 if i < 20 else 0.8
        frame = np.clip(tinted * gain + rng.normal(0, 1.5, (H, W, 1)), 0, 255).astype(np.uint8)
        motion = seg.apply(frame)
        blobs += len(motion.blobs)
    assert blobs == 0
