"""Liveness cost per face: each MiniFASNet network, the averaged pair, and the test-fixture model.

Timed end to end from a frame and a face box (crop, resize, preprocessing, inference), since the
crops are a real share of the work for 80x80 networks. Run from the repository root:
``python benchmarks/bench_liveness.py`` (weights from GATEWATCH_MODEL_MIRROR, default ../shared/models).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.shared import use_model_mirror  # noqa: E402

use_model_mirror()

from vision.faces.liveness import LivenessChecker  # noqa: E402

FIXTURE = "fixture_antispoofing_bin_1.5_128.onnx"


def _frame_and_boxes(faces: int) -> tuple[np.ndarray, np.ndarray]:
    """A 1280x720 frame of noise with `faces` boxes of gate-typical size (~150 px)."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    x = rng.uniform(100, 1000, faces)
    y = rng.uniform(100, 450, faces)
    return frame, np.stack([x, y, x + 150, y + 180], axis=1).astype(np.float32)


def ms_per_face(checker: LivenessChecker, faces: int, repeats: int) -> float:
    frame, boxes = _frame_and_boxes(faces)
    checker.check(frame, boxes)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        checker.check(frame, boxes)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000 / faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--faces", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    pair = LivenessChecker.from_registry(allow_download=False)
    checkers = {m.name: LivenessChecker([m]) for m in pair.members}
    checkers["pair (mean)"] = pair
    fixture = Path(os.environ["GATEWATCH_MODEL_MIRROR"]) / FIXTURE
    if fixture.exists():
        checkers["fixture (test only)"] = LivenessChecker.from_fixture(fixture)
    print(f"{'model':<22}" + "".join(f"{f'{n} face(s)':>14}" for n in args.faces) + "   (ms per face)")
    for name, checker in checkers.items():
        print(f"{name:<22}" + "".join(f"{ms_per_face(checker, n, args.repeats):>14.2f}" for n in args.faces))


if __name__ == "__main__":
    cv2.setNumThreads(1)
    main()
