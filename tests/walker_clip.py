"""The live-camera tests' footage: a short clip of the shared walking video, and the walker to enrol.

The clip is the video's first frames, every second one, re-encoded, so that a test camera is a real
video file that plays in a few seconds on 2 cores; the walker near the camera unlocks within it
(at its 19th frame, as `gatewatch analyze` finds), the people behind are strangers.

The walker is enrolled from two snapshots of his approach (frames 10 and 40), as a guard enrols a
visitor from a gate camera: at the default threshold (0.97) one blurred 70-px snapshot is not
enough for dlib's embedder (his votes reach 0.95-0.97), two are (README, accuracy).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from conftest import SHARED_DATA

from vision.faces.analyzer import FaceAnalyzer

VIDEO = SHARED_DATA / "video" / "facenetpt_video.mp4"
ENROL_FRAME = 40
# frame -> centre of the walker's face in it
SNAPSHOTS = {10: (758, 611), ENROL_FRAME: (650, 670)}


def write_clip(path: Path, frames: int = 24, stride: int = 2) -> Path:
    """`frames` frames of the video (every `stride`-th), at the frame rate that keeps real time."""
    cap = cv2.VideoCapture(str(VIDEO))
    fps = cap.get(cv2.CAP_PROP_FPS)
    writer = None
    index = 0
    while index < frames * stride:
        ok, image = cap.read()
        assert ok, f"{VIDEO} has fewer than {frames * stride} frames"
        if index % stride == 0:
            if writer is None:
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps / stride,
                                         (image.shape[1], image.shape[0]))
            writer.write(image)
        index += 1
    cap.release()
    assert writer is not None
    writer.release()
    return path


def walker_photo(analyzer: FaceAnalyzer, frame: int = ENROL_FRAME) -> np.ndarray:
    """The walker's head cropped from one frame, as a guard would from a snapshot."""
    cap = cv2.VideoCapture(str(VIDEO))
    cap.set(cv2.CAP_PROP_POS_FRAMES, frame)
    ok, image = cap.read()
    cap.release()
    assert ok
    boxes = analyzer.analyze(image).detections.boxes
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    x1, y1, x2, y2 = boxes[np.argmin(np.linalg.norm(centres - SNAPSHOTS[frame], axis=1))].astype(int)
    pad = x2 - x1
    return image[max(0, y1 - pad):y2 + pad, max(0, x1 - pad):x2 + pad]


def walker_snapshots(analyzer: FaceAnalyzer) -> dict[int, bytes]:
    """frame -> the walker's snapshot from it as a JPEG file, as a guard saves it from the console."""
    return {frame: cv2.imencode(".jpg", walker_photo(analyzer, frame), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
            for frame in SNAPSHOTS}


def walker_embeddings(analyzer: FaceAnalyzer) -> np.ndarray:
    """The walker's templates: one embedding per snapshot."""
    rows = []
    for frame in SNAPSHOTS:
        faces = analyzer.analyze(walker_photo(analyzer, frame))
        assert len(faces) == 1
        rows.append(faces.embeddings[0])
    return np.stack(rows)
