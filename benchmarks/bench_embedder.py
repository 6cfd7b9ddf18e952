"""Face-embedder throughput: our ONNX conversion of dlib's ResNet next to dlib itself.

Both embed the same aligned chips in the same run, so the speed-up column compares like with like
on this machine. Run from the repository root: ``python benchmarks/bench_embedder.py``.
gatewatch itself uses dlib (dlib-bin) only for its 5-point landmarks; its embedder runs as ONNX.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.shared import SHARED  # noqa: E402
from models.dlib_resnet import (  # noqa: E402
    DLIB_RESNET_INPUT_SIZE,
    DLIB_RESNET_PREPROCESS,
    convert_dlib_resnet,
)
from models.runtime import OrtModel, default_threads  # noqa: E402

BATCHES = (1, 8, 32)
MAX_SIDE = 640


def _dlib_model_dir() -> Path:
    import face_recognition_models

    return Path(os.path.dirname(face_recognition_models.__file__)) / "models"


def dlib_reference_chips(faces_dir: Path, count: int, model_dir: Path) -> np.ndarray:
    """Up to `count` aligned 150x150 RGB chips cut by dlib itself (HOG detector + 5-point predictor
    + get_face_chip), round-robin over the identities so that every person is represented."""
    import cv2
    import dlib

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_dir / "shape_predictor_5_face_landmarks.dat"))
    people = [sorted(f for f in d.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
              for d in sorted(faces_dir.iterdir()) if d.is_dir()]
    order = [files[i] for i in range(max(map(len, people))) for files in people if i < len(files)]
    chips = []
    for path in order:
        bgr = cv2.imread(str(path))
        if bgr is None:
            continue
        scale = MAX_SIDE / max(bgr.shape[:2])
        if scale < 1:
            bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        found = detector(rgb, 0) or detector(rgb, 1)
        if found:
            face = max(found, key=lambda r: r.area())
            chips.append(dlib.get_face_chip(rgb, predictor(rgb, face), DLIB_RESNET_INPUT_SIZE, 0.25))
        if len(chips) == count:
            break
    return np.stack(chips) if chips else np.zeros((0, DLIB_RESNET_INPUT_SIZE, DLIB_RESNET_INPUT_SIZE, 3), np.uint8)


def _ms_per_face(ours: Callable[[], object], dlib_run: Callable[[], object], batch: int,
                 repeats: int, dlib_repeats: int) -> tuple[float, float]:
    """Median ms/face of each, with dlib's runs spread among ours.

    Interleaving means a noisy neighbour on a shared machine slows both sides alike, so the
    speed-up ratio stays meaningful even when the absolute numbers wobble.
    """
    for _ in range(3):
        ours()
    dlib_run()
    ours_times: list[float] = []
    dlib_times: list[float] = []
    step = max(1, repeats // max(1, dlib_repeats))
    for i in range(max(repeats, step * dlib_repeats)):
        if i < repeats:
            start = time.perf_counter()
            ours()
            ours_times.append(time.perf_counter() - start)
        if i % step == 0 and len(dlib_times) < dlib_repeats:
            start = time.perf_counter()
            dlib_run()
            dlib_times.append(time.perf_counter() - start)
    return (statistics.median(ours_times) * 1000 / batch, statistics.median(dlib_times) * 1000 / batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="ONNX Runtime intra-op threads (default: GATEWATCH_ORT_THREADS or all cores)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per batch size for ONNX")
    parser.add_argument("--dlib-repeats", type=int, default=3, help="timed runs per batch size for dlib")
    parser.add_argument("--faces", type=Path, default=None,
                        help="folder of face photos (default: shared/data/faces)")
    args = parser.parse_args()

    import dlib

    shared = SHARED
    faces_dir = args.faces or shared / "data" / "faces"
    model_dir = _dlib_model_dir()
    dat = model_dir / "dlib_face_recognition_resnet_model_v1.dat"
    threads = args.threads or default_threads()

    start = time.perf_counter()
    onnx_bytes = convert_dlib_resnet(dat)
    convert_s = time.perf_counter() - start
    ours = OrtModel(onnx_bytes, threads=threads, providers=["CPUExecutionProvider"])
    reference = dlib.face_recognition_model_v1(str(dat))
    chips = dlib_reference_chips(faces_dir, max(BATCHES), model_dir)
    if not len(chips):
        raise SystemExit(f"no faces found under {faces_dir}")
    if len(chips) < max(BATCHES):  # too few photos: reuse chips; timing does not depend on content
        chips = np.resize(chips, (max(BATCHES), *chips.shape[1:]))

    def run_ours(batch: np.ndarray) -> np.ndarray:
        # Preprocessing is timed too: dlib's figure includes its own pixel conversion.
        return ours.run(DLIB_RESNET_PREPROCESS(batch[..., ::-1]))[0]

    def run_dlib(batch: np.ndarray) -> np.ndarray:
        if len(batch) == 1:
            return np.asarray(reference.compute_face_descriptor(batch[0]))[None]
        return np.array([np.asarray(v) for v in reference.compute_face_descriptor(list(batch))])

    diff = float(np.abs(run_ours(chips) - run_dlib(chips)).max())

    print(f"dlib ResNet embedder, {len(chips)} real face chips from {faces_dir}")
    provider = ours.session.get_providers()[0]
    print(f"conversion {convert_s:.2f} s; ONNX Runtime {provider}, {threads} thread(s); "
          f"dlib {dlib.__version__} (CUDA: {dlib.DLIB_USE_CUDA}, BLAS: {dlib.DLIB_USE_BLAS}); "
          f"{os.cpu_count()} CPU cores")
    print(f"max |ours - dlib| over the chips: {diff:.2e}")
    print()
    print(f"{'batch':>5} | {'ONNX ms/face':>12} | {'dlib ms/face':>12} | {'speed-up':>8}")
    print(f"{'-' * 5}-+-{'-' * 12}-+-{'-' * 12}-+-{'-' * 8}")
    for size in BATCHES:
        batch = chips[:size]
        ours_ms, dlib_ms = _ms_per_face(lambda b=batch: run_ours(b), lambda b=batch: run_dlib(b), size,
                                        args.repeats, args.dlib_repeats)
        print(f"{size:>5} | {ours_ms:>12.2f} | {dlib_ms:>12.2f} | {dlib_ms / ours_ms:>7.1f}x")
    print()
    print(f"median over {args.repeats} (ONNX) / {args.dlib_repeats} (dlib) interleaved timed runs after "
          "warm-up; dlib batches use its list overload of compute_face_descriptor")


if __name__ == "__main__":
    main()
