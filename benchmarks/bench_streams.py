"""Throughput of the gate hot path: batched vs one-frame-at-a-time, naive vs tracked, per detector.

Run: `python -m benchmarks.bench_streams [--cameras 8] [--ticks 12] [--detectors yunet_s mtcnn]`.
N simulated gate cameras replay the real walking clip as the 10 fps camera streams of
benchmarks/bench_gates.py (each from another start), decoded beforehand: this measures the
processing alone, saturated (each tick every camera delivers one frame at once, the worst case),
while bench_gates measures live cameras with decoding and dropped frames. Rows:
  detect/frame  the detector alone, one frame at a time
  detect/batch  the detector alone, the tick's frames in one call (YuNet's detect_many)
  naive/seq     detect + embed every face, one camera after another (FaceAnalyzer.analyze)
  naive/batch   detect per frame, every face of every camera embedded in one batch (analyze_many)
  track/seq     ByteTrack + embed only tracks whose face got clearly better (GateTracker.step)
  track/batch   the same, the selected chips of all cameras in one batch (vision.faces.tracks.step_many)
Latency is tick start -> that frame's results, p50/p99 over all frames. cams@10fps is throughput
/ 10 with this process's threads (decoding not counted); the ratios at the end are measured in
the same run, modes taking turns tick by tick so that a busy neighbour slows all alike.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.bench_gates import FPS, decode_all, encode
from benchmarks.shared import SHARED, use_model_mirror
from gates.analysis import open_gallery
from gates.gallery import Gallery
from vision.faces.analyzer import FaceAnalyzer, build_analyzer, for_gate_cameras
from vision.faces.tracks import GatePolicy, GateTracker, step_many
from vision.frames import Frame

Process = Callable[[list[Frame]], list[float]]  # one tick's frames -> per frame, seconds until done


@dataclass
class Mode:
    name: str
    process: Process
    embeddings: Callable[[], int]
    latencies: list[float]
    seconds: float = 0.0
    frames: int = 0

    def row(self) -> str:
        ms = np.array(self.latencies) * 1000
        fps = self.frames / self.seconds
        return (f"{self.name:<13} {fps:>9.1f} {np.percentile(ms, 50):>8.0f} {np.percentile(ms, 99):>8.0f} "
                f"{self.embeddings() / self.frames:>10.2f} {fps / FPS:>11.2f}")


def _sequential(step: Callable[[Frame], object]) -> Process:
    def process(frames: list[Frame]) -> list[float]:
        t0, done = time.perf_counter(), []
        for frame in frames:
            step(frame)
            done.append(time.perf_counter() - t0)
        return done
    return process


def _batched(step: Callable[[list[Frame]], object]) -> Process:
    def process(frames: list[Frame]) -> list[float]:
        t0 = time.perf_counter()
        step(frames)
        return [time.perf_counter() - t0] * len(frames)
    return process


def modes(analyzer: FaceAnalyzer, gallery: Gallery, cameras: list[str], policy: GatePolicy) -> list[Mode]:
    detector = analyzer.detector
    embedded = {"naive/seq": 0, "naive/batch": 0}

    def identify_all(mode: str, images: list[np.ndarray]) -> None:
        embedded[mode] += sum(len(gallery.identify(f.embeddings)) for f in analyzer.analyze_many(images))

    def trackers() -> dict[str, GateTracker]:
        return {c: GateTracker(c, analyzer, gallery.identify, policy=policy, fps=FPS) for c in cameras}

    seq, batch = trackers(), trackers()
    found = [
        Mode("detect/frame", _sequential(lambda f: detector.detect(f.image)), lambda: 0, []),
        Mode("naive/seq", _sequential(lambda f: identify_all("naive/seq", [f.image])),
             lambda: embedded["naive/seq"], []),
        Mode("naive/batch", _batched(lambda fs: identify_all("naive/batch", [f.image for f in fs])),
             lambda: embedded["naive/batch"], []),
        Mode("track/seq", _sequential(lambda f: seq[f.camera_id].step(f)),
             lambda: sum(t.embeddings_computed for t in seq.values()), []),
        Mode("track/batch", _batched(lambda fs: step_many([batch[f.camera_id] for f in fs], fs)),
             lambda: sum(t.embeddings_computed for t in batch.values()), []),
    ]
    detect_many = getattr(detector, "detect_many", None)
    if detect_many is not None:
        found.insert(1, Mode("detect/batch", _batched(lambda fs: detect_many([f.image for f in fs])), lambda: 0, []))
    return found


def run(analyzer: FaceAnalyzer, gallery: Gallery, clip: list[np.ndarray], cameras: int, ticks: int,
        policy: GatePolicy) -> list[Mode]:
    """Modes interleaved tick by tick, each with its own trackers."""
    offsets = [(c * len(clip)) // cameras for c in range(cameras)]
    names = [f"cam{c}" for c in range(cameras)]
    tick_frames = [[Frame(names[c], t, t / FPS, clip[(offsets[c] + t) % len(clip)]) for c in range(cameras)]
                   for t in range(ticks)]
    found = modes(analyzer, gallery, names, policy)
    for frames in tick_frames:
        for mode in found:
            start = time.perf_counter()
            mode.latencies += mode.process(frames)
            mode.seconds += time.perf_counter() - start
            mode.frames += len(frames)
    return found


def main(argv: list[str] | None = None) -> int:
    shared = SHARED
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=shared / "data/video/facenetpt_video.mp4")
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--ticks", type=int, default=12, help="frames per camera")
    parser.add_argument("--heights", type=int, nargs="+", default=[720, 1080], choices=[720, 1080])
    parser.add_argument("--detectors", nargs="+", default=["yunet_s", "mtcnn"])
    parser.add_argument("--min-face", type=int, default=60, help="gate's smallest face, px (detector and policy)")
    args = parser.parse_args(argv)
    use_model_mirror()
    policy = GatePolicy(min_face_px=float(args.min_face))
    print(f"{args.cameras} gate cameras x {args.ticks} frames, all arriving together each tick; min face "
          f"{args.min_face} px; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'res':>5} {'detector':<8} {'mode':<13} {'frames/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'emb/frame':>10} "
          f"{'cams@10fps':>11}")
    photos = build_analyzer("open")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for detector in args.detectors:
            analyzer = for_gate_cameras(photos, min_face_size=args.min_face, detector=detector)
            with open_gallery(folder / detector, analyzer) as gallery:
                for height in args.heights:
                    clip = decode_all(encode(args.video, height, folder))
                    analyzer.analyze(clip[0])  # warm-up
                    found = {m.name: m for m in run(analyzer, gallery, clip, args.cameras, args.ticks, policy)}
                    for mode in found.values():
                        print(f"{height:>4}p {detector:<8} {mode.row()}", flush=True)
                    rate = {name: m.frames / m.seconds for name, m in found.items()}
                    ratios = [f"track batched/seq {rate['track/batch'] / rate['track/seq']:.2f}x",
                              f"naive batched/seq {rate['naive/batch'] / rate['naive/seq']:.2f}x",
                              f"tracked/naive {rate['track/batch'] / rate['naive/batch']:.2f}x"]
                    if "detect/batch" in rate:
                        ratios.append(f"detect batched/frame {rate['detect/batch'] / rate['detect/frame']:.2f}x")
                    print(f"      ratios: {', '.join(ratios)}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
