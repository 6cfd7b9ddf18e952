"""How many gate cameras one machine carries: batched vs one-frame-at-a-time, naive vs tracked.

Run: `python -m benchmarks.bench_streams [--cameras 4] [--ticks 12]`. N simulated gate cameras
replay the real walking clip (each from another start, every 2nd frame ~ 12.5 fps) at 720p and
1080p. Each tick every camera delivers one frame at once (the worst case: all arrive together),
processed four ways (after a detection-only row, the ceiling set by MTCNN alone):
  naive/seq    detect + embed every face, one camera after another (FaceAnalyzer.analyze)
  naive/batch  detect per frame, every face of every camera embedded in one batch (analyze_many)
  track/seq    ByteTrack + embed only tracks whose face got clearly better (GateTracker.step)
  track/batch  the same, the selected chips of all cameras in one batch (face_tracks.step_many)
Latency is frame arrival (tick start) -> that frame's decisions done, p50/p99 over all frames.
Capacity is how many 10 fps cameras the measured throughput keeps up with (frames/s / 10), with
the machine's cores all given to this process. --min-face 80 suits a gate, where whoever is
deciding is close to the camera (MTCNN's image pyramid then starts smaller).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gates.gallery import Gallery
from vision.face_tracks import GateTracker, step_many
from vision.faces import FaceAnalyzer, build_analyzer
from vision.gate_analysis import open_gallery
from vision.streams import Frame

GATE_FPS = 10.0


@dataclass(frozen=True)
class Result:
    mode: str
    frames_per_s: float
    p50_ms: float
    p99_ms: float
    embeddings_per_frame: float

    @property
    def cameras_at_10fps(self) -> float:
        return self.frames_per_s / GATE_FPS


def _load(video: Path, height: int, count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < count:
        ok, image = cap.read()
        if not ok:
            break
        if height != image.shape[0]:
            image = cv2.resize(image, (round(image.shape[1] * height / image.shape[0]), height),
                               interpolation=cv2.INTER_AREA)
        frames.append(image)
    cap.release()
    return frames[::2]


def _measure(mode: str, ticks: list[list[Frame]], process: Callable[[list[Frame]], list[float]],
             embeddings: Callable[[], int]) -> Result:
    """process(frames of one tick) -> per frame, seconds from tick start until its work was done."""
    latencies: list[float] = []
    start = time.perf_counter()
    for frames in ticks:
        latencies += process(frames)
    elapsed = time.perf_counter() - start
    count = sum(len(t) for t in ticks)
    ms = np.array(latencies) * 1000
    return Result(mode, count / elapsed, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)),
                  embeddings() / count)


def _sequential(step: Callable[[Frame], int]) -> Callable[[list[Frame]], list[float]]:
    def process(frames: list[Frame]) -> list[float]:
        t0, done = time.perf_counter(), []
        for frame in frames:
            step(frame)
            done.append(time.perf_counter() - t0)
        return done
    return process


def _batched(step: Callable[[list[Frame]], int]) -> Callable[[list[Frame]], list[float]]:
    def process(frames: list[Frame]) -> list[float]:
        t0 = time.perf_counter()
        step(frames)
        return [time.perf_counter() - t0] * len(frames)
    return process


def _naive(analyzer: FaceAnalyzer, gallery: Gallery, ticks: list[list[Frame]], batched: bool) -> Result:
    embedded = [0]

    def identify_all(images: list[np.ndarray]) -> int:
        faces = analyzer.analyze_many(images)
        embedded[0] += sum(len(gallery.identify(f.embeddings)) for f in faces)
        return embedded[0]

    process = (_batched(lambda fs: identify_all([f.image for f in fs])) if batched
               else _sequential(lambda f: identify_all([f.image])))
    return _measure("naive/batch" if batched else "naive/seq", ticks, process, lambda: embedded[0])


def _detect_only(analyzer: FaceAnalyzer, ticks: list[list[Frame]]) -> Result:
    return _measure("detect only", ticks, _sequential(lambda f: len(analyzer.detector.detect(f.image))), lambda: 0)


def _tracked(analyzer: FaceAnalyzer, gallery: Gallery, ticks: list[list[Frame]], batched: bool) -> Result:
    trackers = {f.camera_id: GateTracker(f.camera_id, analyzer, gallery.identify, fps=12.5) for f in ticks[0]}
    process = (_batched(lambda fs: len(step_many([trackers[f.camera_id] for f in fs], fs))) if batched
               else _sequential(lambda f: len(trackers[f.camera_id].step(f))))
    return _measure("track/batch" if batched else "track/seq", ticks, process,
                    lambda: sum(t.embeddings_computed for t in trackers.values()))


def run(analyzer: FaceAnalyzer, video: Path, height: int, cameras: int, ticks: int, data_dir: Path) -> list[Result]:
    clip = _load(video, height, 105)
    offsets = [(c * len(clip)) // cameras for c in range(cameras)]
    tick_frames = [[Frame(f"cam{c}", t, t / 12.5, clip[(offsets[c] + t) % len(clip)]) for c in range(cameras)]
                   for t in range(ticks)]
    with open_gallery(data_dir, analyzer) as gallery:
        return [_detect_only(analyzer, tick_frames)] + [measure(analyzer, gallery, tick_frames, batched)
                                                         for measure in (_naive, _tracked) for batched in (False, True)]


def main(argv: list[str] | None = None) -> int:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=repo.parent / "shared/data/video/facenetpt_video.mp4")
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--ticks", type=int, default=12, help="frames per camera")
    parser.add_argument("--heights", type=int, nargs="+", default=[720, 1080])
    parser.add_argument("--min-face", type=int, default=40, help="smallest face the detector looks for, px")
    args = parser.parse_args(argv)
    analyzer = build_analyzer("open", min_face_size=args.min_face)
    print(f"{args.cameras} gate cameras x {args.ticks} frames, all arriving together each tick; "
          f"min face {args.min_face} px; faces embedded with flip averaging ({analyzer.model_id})")
    print(f"{'res':>5} {'mode':<12} {'frames/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'emb/frame':>10} {'cams@10fps':>11}")
    for height in args.heights:
        with tempfile.TemporaryDirectory() as tmp:
            for r in run(analyzer, args.video, height, args.cameras, args.ticks, Path(tmp)):
                print(f"{height:>4}p {r.mode:<12} {r.frames_per_s:>9.2f} {r.p50_ms:>8.0f} {r.p99_ms:>8.0f} "
                      f"{r.embeddings_per_frame:>10.2f} {r.cameras_at_10fps:>11.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
