"""How many 10 fps gate cameras one machine carries with no decision lost, and their latency.

Run: `python -m benchmarks.bench_gates [--heights 720 1080] [--detectors yunet_s mtcnn] [--min-face 60]`.

Each simulated camera replays the real walking clip (shared/data/video/facenetpt_video.mp4),
re-encoded once by ffmpeg as H.264 at 10 fps: 1080p is the clip itself, 720p a 1280x720 window
of it around the enrolled walker (a gate camera's faces are as big as the clip's; shrinking the
frame would leave almost no face above the gate's minimum). Every camera has its own reader
thread that decodes its stream live and publishes each frame at the camera's pace, cameras
staggered within the 100 ms frame period as unsynchronised cameras are; decoding is part of the
load, as it is in the service. The processing loop (this thread) takes the newest frame of every
camera that has one and runs them as one micro-batch (`face_tracks.step_many`: detection per frame,
all chips embedded in one call) or, "unbatched", one `GateTracker.step` per frame. A frame
overwritten before the loop took it is dropped.

A camera count is carried when no frame was dropped, every camera decided exactly what one camera
alone decides on the same frames with no time pressure (the reference: one walker enrolled from a
still, so there is an unlock to lose; compared as the multiset of decision, reason, resident), and
frame-arrival -> decision latency p99 <= 100 ms. Counts are tried upwards until one fails.
The detector is sized to the gate's minimum face (--min-face, also the policy's min_face_px).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import cv2
import numpy as np

from benchmarks.shared import SHARED, use_model_mirror
from vision.face_tracks import GateDecision, GatePolicy, GateTracker, step_many
from vision.faces import FaceAnalyzer, build_analyzer
from vision.gate_analysis import open_gallery
from vision.streams import Frame

FPS = 10.0
LATENCY_TARGET_MS = 100.0
ENROL_FRAME, WALKER_AT = 40, (650, 670)  # as tests/test_gate_video.py: the walker's face in frame 40
CROP_720 = (320, 360)  # top-left of the 1280x720 window, which holds the walker's approach
Outcome = Counter[tuple[str, str, str | None]]


def encode(video: Path, height: int, folder: Path) -> Path:
    """The clip as a 10 fps H.264 camera stream at `height` (1080: as is; 720: the window)."""
    target = folder / f"gate_{height}p_10fps.mp4"
    if not target.exists():
        if shutil.which("ffmpeg") is None:
            raise SystemExit("ffmpeg is needed to make the camera streams (apt-get install ffmpeg)")
        crop = [] if height == 1080 else ["-vf", f"crop=1280:720:{CROP_720[0]}:{CROP_720[1]}"]
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(video), *crop, "-r", str(FPS), "-c:v", "libx264",
                        "-preset", "medium", "-g", "20", "-pix_fmt", "yuv420p", str(target)], check=True)
    return target


def decode_all(stream: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(stream))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    return frames


def enrol_walker(analyzer: FaceAnalyzer, video: Path, data_dir: Path) -> None:
    """The walker's head cropped from one still of the original clip and enrolled, as the test does."""
    cap = cv2.VideoCapture(str(video))
    cap.set(cv2.CAP_PROP_POS_FRAMES, ENROL_FRAME)
    ok, image = cap.read()
    cap.release()
    assert ok, video
    boxes = analyzer.analyze(image).detections.boxes
    x1, y1, x2, y2 = boxes[np.argmin(np.linalg.norm((boxes[:, :2] + boxes[:, 2:]) / 2 - WALKER_AT, axis=1))]
    pad = int(x2 - x1)
    crop = image[max(0, int(y1) - pad):int(y2) + pad, max(0, int(x1) - pad):int(x2) + pad]
    faces = analyzer.analyze(crop)
    if len(faces) != 1:
        raise SystemExit(f"expected one face in the walker's crop, found {len(faces)}")
    with open_gallery(data_dir, analyzer) as gallery:
        gallery.add_resident_with_faces("walker", faces.embeddings)


def outcome(decisions: Sequence[GateDecision]) -> Outcome:
    return Counter((d.decision, d.reason, d.match.name if d.match else None) for d in decisions)


class Camera(threading.Thread):
    """A camera and its newest-frame reader: decodes its stream and publishes frame k at start + k/FPS."""

    def __init__(self, camera_id: str, stream: Path, start: float, hub: Hub) -> None:
        super().__init__(daemon=True)
        self.camera_id, self.stream, self.start_at, self.hub = camera_id, stream, start, hub

    def run(self) -> None:
        cap = cv2.VideoCapture(str(self.stream))
        index = 0
        while True:
            ok, image = cap.read()
            if not ok:
                break
            release = self.start_at + index / FPS
            time.sleep(max(0.0, release - time.perf_counter()))
            self.hub.publish(Frame(self.camera_id, index, index / FPS, image), release)
            index += 1
        cap.release()
        self.hub.finish(self.camera_id)


class Hub:
    """Each camera's newest unprocessed frame and its arrival time; an overwritten frame is dropped."""

    def __init__(self, cameras: int) -> None:
        self.slots: dict[str, tuple[Frame, float]] = {}
        self.live = cameras
        self.dropped = 0
        self.ready = threading.Condition()

    def publish(self, frame: Frame, arrived: float) -> None:
        with self.ready:
            self.dropped += frame.camera_id in self.slots
            self.slots[frame.camera_id] = (frame, arrived)
            self.ready.notify()

    def finish(self, camera_id: str) -> None:
        with self.ready:
            self.live -= 1
            self.ready.notify()

    def take(self) -> list[tuple[Frame, float]]:
        """Whatever is ready (waiting until something is); empty once every camera has ended."""
        with self.ready:
            while not self.slots and self.live:
                self.ready.wait()
            taken, self.slots = list(self.slots.values()), {}
            return taken


@dataclass(frozen=True)
class Run:
    cameras: int
    frames: int
    dropped: int
    frame_ms: np.ndarray  # arrival -> that frame's step done, every frame
    decision_ms: np.ndarray  # arrival of the deciding frame -> decision made
    lost: int  # cameras whose decisions differ from the reference
    cpu_s: float  # all processes, all threads (decoding included)
    wall_s: float

    def ok(self) -> bool:
        latencies = self.decision_ms if len(self.decision_ms) else self.frame_ms
        return not self.dropped and not self.lost and float(np.percentile(latencies, 99)) <= LATENCY_TARGET_MS

    @staticmethod
    def merge(parts: Sequence[Run]) -> Run:
        return Run(sum(p.cameras for p in parts), sum(p.frames for p in parts), sum(p.dropped for p in parts),
                   np.concatenate([p.frame_ms for p in parts]), np.concatenate([p.decision_ms for p in parts]),
                   sum(p.lost for p in parts), sum(p.cpu_s for p in parts), max(p.wall_s for p in parts))


def batched(trackers: list[GateTracker], frames: list[Frame]) -> list[list[GateDecision]]:
    decisions = step_many(trackers, frames)
    return [[d for d in decisions if d.camera_id == f.camera_id] for f in frames]


def unbatched(trackers: list[GateTracker], frames: list[Frame]) -> list[list[GateDecision]]:
    return [tracker.step(frame) for tracker, frame in zip(trackers, frames, strict=True)]


STEPS = {"batched": batched, "unbatched": unbatched}


@dataclass(frozen=True)
class Task:
    """Cameras `indices` of `total`, all replaying `stream` from `start` (perf_counter, shared by
    the processes of one machine), stepped in `mode`."""

    stream: Path
    indices: tuple[int, ...]
    total: int
    start: float
    mode: str
    reference: Outcome


def live_run(analyzer: FaceAnalyzer, identify: Callable, policy: GatePolicy, task: Task) -> Run:
    hub = Hub(len(task.indices))
    names = [f"cam{i}" for i in task.indices]
    trackers = {c: GateTracker(c, analyzer, identify, policy=policy, fps=FPS) for c in names}
    decided: dict[str, list[GateDecision]] = {c: [] for c in names}
    readers = [Camera(f"cam{i}", task.stream, task.start + i / (FPS * task.total), hub) for i in task.indices]
    frame_ms: list[float] = []
    decision_ms: list[float] = []
    last: dict[str, Frame] = {}
    cpu = time.process_time()
    for reader in readers:
        reader.start()
    step = STEPS[task.mode]
    while taken := hub.take():
        frames = [frame for frame, _ in taken]
        results = step([trackers[f.camera_id] for f in frames], frames)
        done = time.perf_counter()
        for (frame, arrived), decisions in zip(taken, results, strict=True):
            frame_ms.append((done - arrived) * 1000)
            decision_ms += [(done - arrived) * 1000] * len(decisions)
            decided[frame.camera_id] += decisions
            last[frame.camera_id] = frame
    wall, cpu = time.perf_counter() - task.start, time.process_time() - cpu
    for camera_id, tracker in trackers.items():
        decided[camera_id] += tracker.finish(last[camera_id])
    lost = sum(outcome(d) != task.reference for d in decided.values())
    return Run(len(names), len(frame_ms), hub.dropped, np.array(frame_ms), np.array(decision_ms), lost, cpu, wall)


@dataclass(frozen=True)
class Setup:
    detector: str
    min_face: int
    data_dir: Path
    threads: int


def _serve(conn: Connection, setup: Setup) -> None:
    """A gate worker process: its own analyzer and gallery, running the tasks it is sent."""
    os.environ["GATEWATCH_ORT_THREADS"] = str(setup.threads)
    cv2.setNumThreads(setup.threads)
    analyzer = build_analyzer("open", detector=setup.detector, min_face_size=setup.min_face)
    with open_gallery(setup.data_dir, analyzer) as gallery:
        policy = GatePolicy(min_face_px=float(setup.min_face))
        conn.send("ready")
        while (task := conn.recv()) is not None:
            if isinstance(task, Path):  # warm-up on a new stream: every shape the sessions will see
                conn.send(reference_outcome(analyzer, gallery.identify, policy, decode_all(task)))
            else:
                conn.send(live_run(analyzer, gallery.identify, policy, task))


class Workers:
    """W worker processes, the cameras dealt out round-robin; W=2 on 2 cores gives each process
    one core, so the Python parts (tracking, landmarks, chips) run on both."""

    def __init__(self, count: int, setup: Setup) -> None:
        context = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for _ in range(count):
            parent, child = context.Pipe()
            proc = context.Process(target=_serve, args=(child, setup), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        for conn in self.conns:
            conn.recv()

    def warm(self, stream: Path) -> None:
        for conn in self.conns:
            conn.send(stream)
        for conn in self.conns:
            conn.recv()

    def run(self, stream: Path, cameras: int, mode: str, reference: Outcome) -> Run:
        start = time.perf_counter() + 1.0
        busy = [conn for w, conn in enumerate(self.conns) if w < cameras]
        for w, conn in enumerate(busy):
            conn.send(Task(stream, tuple(range(w, cameras, len(self.conns))), cameras, start, mode, reference))
        return Run.merge([conn.recv() for conn in busy])

    def close(self) -> None:
        for conn in self.conns:
            conn.send(None)
        for proc in self.procs:
            proc.join(timeout=10)


def reference_outcome(analyzer: FaceAnalyzer, identify: Callable, policy: GatePolicy,
                      frames: list[np.ndarray]) -> Outcome:
    tracker = GateTracker("ref", analyzer, identify, policy=policy, fps=FPS)
    decisions: list[GateDecision] = []
    frame = None
    for index, image in enumerate(frames):
        frame = Frame("ref", index, index / FPS, image)
        decisions += tracker.step(frame)
    assert frame is not None
    return outcome(decisions + tracker.finish(frame))


def capacity(workers: Workers, stream: Path, reference: Outcome, mode: str,
             counts: Sequence[int]) -> tuple[int, list[Run]]:
    carried, runs = 0, []
    for cameras in counts:
        run = workers.run(stream, cameras, mode, reference)
        runs.append(run)
        if not run.ok():
            break
        carried = cameras
    return carried, runs


def _p(values: np.ndarray, q: float) -> str:
    return f"{np.percentile(values, q):.0f}" if len(values) else "-"


def _row(label: str, run: Run) -> str:
    fps = run.frames / run.wall_s
    return (f"{label:<30} {run.cameras:>4} {run.frames:>6} {run.dropped:>7} {run.lost:>5} "
            f"{_p(run.frame_ms, 50):>6} {_p(run.frame_ms, 99):>6} {_p(run.decision_ms, 50):>6} "
            f"{_p(run.decision_ms, 99):>6} {fps:>7.1f} {run.cpu_s / run.wall_s:>5.2f}  {'ok' if run.ok() else 'FAIL'}")


def main(argv: list[str] | None = None) -> int:
    shared = SHARED
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=shared / "data/video/facenetpt_video.mp4")
    parser.add_argument("--heights", type=int, nargs="+", default=[720, 1080], choices=[720, 1080])
    parser.add_argument("--detectors", nargs="+", default=["yunet_s", "mtcnn"])
    parser.add_argument("--min-face", type=int, default=60, help="gate's smallest face, px (detector and policy)")
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8, 10, 12])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="gate processes to try")
    parser.add_argument("--modes", nargs="+", default=["batched"], choices=sorted(STEPS))
    args = parser.parse_args(argv)
    use_model_mirror()
    cores = os.cpu_count() or 1
    policy = GatePolicy(min_face_px=float(args.min_face))
    print(f"gate cameras at {FPS:.0f} fps replaying {args.video.name}; min face {args.min_face} px; "
          f"{cores} cores, load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'detector / mode':<30} {'cams':>4} {'frames':>6} {'dropped':>7} {'lost':>5} {'p50':>6} {'p99':>6} "
          f"{'dec50':>6} {'dec99':>6} {'fps':>7} {'cores':>5}  (ms: frame arrival -> done; dec: -> decision)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        enrol_walker(build_analyzer("open"), args.video, folder)  # as the service enrols: photo, default pack
        for detector in args.detectors:
            analyzer = build_analyzer("open", detector=detector, min_face_size=args.min_face)
            with open_gallery(folder, analyzer) as gallery:
                references = {h: reference_outcome(analyzer, gallery.identify, policy,
                                                   decode_all(encode(args.video, h, folder))) for h in args.heights}
            for height, reference in references.items():
                print(f"{height}p {detector}: reference decisions {dict(reference)}", flush=True)
            for count in args.workers:
                workers = Workers(count, Setup(detector, args.min_face, folder, max(1, cores // count)))
                try:
                    for height in args.heights:
                        workers.warm(encode(args.video, height, folder))
                        for mode in args.modes:
                            label = f"{height}p {detector} {mode} x{count}"
                            carried, runs = capacity(workers, encode(args.video, height, folder),
                                                     references[height], mode, args.counts)
                            for run in runs:
                                print(_row(label, run), flush=True)
                            print(f"=> {label}: {carried} cameras carried", flush=True)
                finally:
                    workers.close()
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
