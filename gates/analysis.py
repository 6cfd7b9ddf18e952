"""Offline gate analysis: what a gate camera would have decided over a recorded video.

Used to check thresholds and k-of-n settings on footage from a real gate before going live, and
by `gatewatch analyze` for gate cameras. No rules engine offline: a match unlocks, nobody denies.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2

from gates.gallery import Gallery
from models import registry
from vision.cameras import CameraConfig
from vision.faces.analyzer import FaceAnalyzer, build_analyzer, for_gate_cameras
from vision.faces.liveness import LivenessChecker
from vision.faces.tracks import GateDecision, GatePolicy, GateTracker
from vision.frames import Frame


def open_gallery(data_dir: Path, analyzer: FaceAnalyzer, pack: str = "open") -> Gallery:
    """The gallery for the analyzer's embedder, with the registry's calibrated threshold and margin."""
    entry = registry.get_entry(registry.get_pack(pack).embedder)
    return Gallery.open(data_dir, analyzer.model_id, analyzer.embedder.dim,
                        accept_threshold=entry.accept_threshold, margin=entry.margin)


def analyze_gate_video(video: str | Path, camera: CameraConfig, data_dir: str | Path, *,
                       analyzer: FaceAnalyzer | None = None, liveness: LivenessChecker | None = None,
                       policy: GatePolicy | None = None, stride: int = 1,
                       max_frames: int | None = None) -> Iterator[GateDecision]:
    """Yield access decisions as they are made. stride > 1 analyses every stride-th frame (long
    recordings). `liveness`: the checker the live service would use (None: no liveness check). The
    default analyzer is the live service's for gate cameras (`vision.faces.analyzer.for_gate_cameras`)."""
    if camera.role not in ("gate", "door"):
        raise ValueError(f"camera {camera.id!r} has role {camera.role!r}, not a gate or door camera")
    policy = policy or GatePolicy()
    if analyzer is None:
        min_face = int(policy.min_face_px)
        analyzer = for_gate_cameras(build_analyzer("open", min_face_size=min_face), min_face_size=min_face)
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {video}")
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if 1.0 <= fps <= 240.0 else 25.0
    try:
        with open_gallery(Path(data_dir), analyzer) as gallery:
            tracker = GateTracker(camera.id, analyzer, gallery.identify, policy=policy,
                                  fps=fps / stride, liveness=liveness)
            index, last = 0, None
            while max_frames is None or index < max_frames:
                ok, image = cap.read()
                if not ok:
                    break
                if index % stride == 0:
                    last = Frame(camera.id, index, index / fps, image)
                    yield from tracker.step(last)
                index += 1
            if last is not None:
                yield from tracker.finish(last)
    finally:
        cap.release()

