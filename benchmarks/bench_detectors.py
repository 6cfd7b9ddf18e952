"""Face-detector latency per 640x480 frame: MTCNN and YuNet-s at two minimum face sizes, YuNet-n.

YuNet without a minimum face runs on the 640x640 letterbox as OpenCV does; with min_face 40 its
input is shrunk to half (a 40 px face is 20 px there, see vision/faces/yunet.py), as MTCNN's pyramid
starts at 12 / min_face.

Frames are real photos from shared/data (groups/ and faces/), centre-cropped to 4:3 and resized
to 640x480, so the cascades see real clutter: MTCNN's cost grows with the number of candidates
P-net lets through, which blank or synthetic frames would understate.
Run from the repository root: ``python benchmarks/bench_detectors.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.shared import SHARED  # noqa: E402
from models.runtime import default_providers, default_threads  # noqa: E402
from vision.detections import Detections  # noqa: E402
from vision.faces.mtcnn import MtcnnDetector  # noqa: E402
from vision.faces.yunet import YunetDetector  # noqa: E402

FRAME_SIZE = (640, 480)
SUFFIXES = {".jpg", ".jpeg", ".png"}


def _frame(image: np.ndarray) -> np.ndarray:
    """The centre 4:3 part of a photo at 640x480, as a camera frame would be, without stretching."""
    height, width = image.shape[:2]
    crop_w, crop_h = min(width, height * 4 // 3), min(height, width * 3 // 4)
    x0, y0 = (width - crop_w) // 2, (height - crop_h) // 2
    return cv2.resize(image[y0 : y0 + crop_h, x0 : x0 + crop_w], FRAME_SIZE, interpolation=cv2.INTER_AREA)


def _frames(data: Path, count: int) -> list[np.ndarray]:
    """Group photos first (many faces, most work for MTCNN), then portraits, up to count."""
    paths = [
        p
        for folder in ("groups", "faces")
        for p in sorted((data / folder).rglob("*"))
        if p.suffix.lower() in SUFFIXES
    ]
    images = (cv2.imread(str(p)) for p in paths)
    frames = [_frame(image) for image in images if image is not None][:count]
    if not frames:
        raise SystemExit(f"no photos under {data}/groups or {data}/faces")
    return frames


def _detectors(models: Path) -> dict[str, Callable[[np.ndarray], Detections]]:
    mtcnn = MtcnnDetector.from_package()
    found: dict[str, Callable[[np.ndarray], Detections]] = {
        "MTCNN min_face 20": mtcnn.detect,
        "MTCNN min_face 40": MtcnnDetector(mtcnn.pnet, mtcnn.rnet, mtcnn.onet, min_face_size=40).detect,
    }
    for variant in ("s", "n"):
        path = models / f"yunet_{variant}_640_640.onnx"
        if path.exists():
            found[f"YuNet-{variant}"] = YunetDetector(path).detect
        else:
            print(f"skipping YuNet-{variant}: {path} not found")
    if (models / "yunet_s_640_640.onnx").exists():
        found["YuNet-s min_face 40"] = YunetDetector(models / "yunet_s_640_640.onnx", min_face_size=40).detect
    return found


def _time(detectors: dict[str, Callable[[np.ndarray], Detections]], frames: list[np.ndarray],
          repeats: int) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU milliseconds and faces found per call, detectors interleaved frame by frame.

    Interleaving means a busy neighbour on a shared machine slows every detector alike, so their
    ratios stay meaningful even when the absolute numbers wobble. CPU time (all threads of this
    process) counts the work done rather than the wait for a core; threads spinning idle count too.
    """
    for detect in detectors.values():  # warm-up: graph set-up and every pyramid shape once
        for frame in frames:
            detect(frame)
    results: dict[str, dict[str, list[float]]] = {
        name: {"wall": [], "cpu": [], "faces": []} for name in detectors}
    for _ in range(repeats):
        for frame in frames:
            for name, detect in detectors.items():
                wall, cpu = time.perf_counter(), time.process_time()
                found = detect(frame)
                results[name]["wall"].append((time.perf_counter() - wall) * 1000)
                results[name]["cpu"].append((time.process_time() - cpu) * 1000)
                results[name]["faces"].append(len(found))
    return results


def main() -> None:
    shared = SHARED
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=shared / "data")
    parser.add_argument("--models", type=Path, default=shared / "models")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    frames = _frames(args.data, args.frames)
    detectors = _detectors(args.models)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{len(frames)} real frames at {FRAME_SIZE[0]}x{FRAME_SIZE[1]}, {args.repeats} repeats after "
        f"warm-up; ORT {default_providers()[0]}, {default_threads()} threads; load average {load:.1f}"
    )
    results = _time(detectors, frames, args.repeats)
    print("\n| detector | median ms/frame | p90 ms | frames/s | median CPU ms | faces/frame |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, result in results.items():
        median = statistics.median(result["wall"])
        print(f"| {name} | {median:.1f} | {np.percentile(result['wall'], 90):.1f} | {1000 / median:.1f} "
              f"| {statistics.median(result['cpu']):.1f} | {np.mean(result['faces']):.1f} |")

if __name__ == "__main__":
    main()
