"""How many 10 fps gate cameras one machine carries with no decision lost, and their latency.

Run: `python -m benchmarks.bench_gates [--heights 720 1080] [--detectors yunet_s mtcnn] [--min-face 60]
[--workers 2 1] [--liveness on|off] [--traffic rush independent sparse] [--idle-detect-every 1 2]`.

Each simulated camera replays the real walking clip (shared/data/video/facenetpt_video.mp4, a
steady stream of people walking towards the camera: the busiest gate), re-encoded once by ffmpeg
as H.264 at 10 fps and played PLAYS times over: 1080p is the clip itself, 720p a 1280x720 window
of it around the enrolled walker (a gate camera's faces are as big as the clip's; shrinking the
frame would leave almost no face above the gate's minimum). The cameras run through the service's
own `vision.streams.gate_runtime.GateRuntime`: a reader thread per camera decoding its file in real time
and keeping only the newest frame, `--workers` processing threads, liveness as the service's
default (on). Decoding is part of the load, as it is in the service.

Traffic: `rush` (default) plays the same moment of the clip at every camera, so every gate's crowd
arrives within the same frame period: the worst case, where the busy frames of all cameras
coincide. `independent` starts each camera's clip at a different moment (camera i of n rotated by
i/n of one play), as separate gates see separate people: the same average load, bursts spread.
Both keep 6-8 faces in view at every gate all the time. `sparse` is a gate with a life between
crowds: each play is the clip's 4.4 s of walkers followed by 8.8 s of a street with nobody near
the camera (MOT17-13, filmed from a bus in a busy street: people, but no face the gate's minimum
detects), each camera at its own moment as in `independent`. People are in view a third of the
time; the empty part costs its decoding (more than a still doorway's: the whole picture moves)
and, by `GatePolicy.idle_detect_every`, detection on every other frame.

A camera count is carried when no frame was dropped (overwritten before a worker took it) or
skipped as stale, every camera decided exactly what one camera alone decides on the same frames
with no time pressure (the reference: one walker enrolled from a still, so there is an unlock to
lose; compared as the multiset of decision, reason, resident), and frame-arrival -> decision
latency p99 <= 100 ms. Counts are tried upwards until one fails. The detector is sized to the
gate's minimum face (--min-face, also the policy's min_face_px). `lost` counts the cameras whose
decisions differ at all; `unl±` how many of the differences are unlocks (missed or extra), the
ones a resident or the gate would notice.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from benchmarks.shared import SHARED, use_model_mirror
from gates.analysis import open_gallery
from vision.cameras import CameraConfig
from vision.faces.analyzer import FaceAnalyzer, build_analyzer, for_gate_cameras
from vision.faces.liveness import LivenessChecker
from vision.faces.tracks import GateDecision, GatePolicy, GateTracker
from vision.frames import Frame
from vision.streams.gate_runtime import GateRuntime

FPS = 10.0
PLAYS = 3  # the clip is 4.4 s; played 3 times, a run is long enough for start-up not to dominate
LATENCY_TARGET_MS = 100.0
ENROL_FRAME, WALKER_AT = 40, (650, 670)  # as tests/test_gate_video.py: the walker's face in frame 40
CROP_720 = (320, 360)  # top-left of the 1280x720 window, which holds the walker's approach
EMPTY_STREET = "data/video/dlib_MOT17-13-SDP-raw.h265"  # `sparse` traffic's view with nobody near the gate
EMPTY_S = 8.8  # seconds of it after each play of the clip
Outcome = Counter[tuple[str, str, str | None]]
# How every simulated camera stream is encoded: H.264, a key frame every 2 s.
CAMERA_H264 = ("-c:v", "libx264", "-preset", "medium", "-g", "20", "-pix_fmt", "yuv420p")


def encode(video: Path, height: int, folder: Path) -> Path:
    """The clip, PLAYS times over, as a 10 fps H.264 camera stream at `height` (1080: as is; 720: the window)."""
    target = folder / f"gate_{height}p_10fps_x{PLAYS}.mp4"
    if not target.exists():
        if shutil.which("ffmpeg") is None:
            raise SystemExit("ffmpeg is needed to make the camera streams (apt-get install ffmpeg)")
        crop = [] if height == 1080 else ["-vf", f"crop=1280:720:{CROP_720[0]}:{CROP_720[1]}"]
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", str(PLAYS - 1), "-i", str(video), *crop,
                        "-r", str(FPS), *CAMERA_H264, str(target)], check=True)
    return target


def encode_frames(frames: Sequence[np.ndarray], target: Path) -> Path:
    """Frames as a camera stream, encoded as `encode` does."""
    height, width = frames[0].shape[:2]
    encoder = subprocess.Popen(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
                                "-s", f"{width}x{height}", "-r", str(FPS), "-i", "-", *CAMERA_H264, str(target)],
                               stdin=subprocess.PIPE)
    assert encoder.stdin is not None
    for image in frames:
        encoder.stdin.write(image.tobytes())
    encoder.stdin.close()
    if encoder.wait() != 0:
        raise SystemExit(f"ffmpeg failed to write {target}")
    return target


def rotated(stream: Path, frames: list[np.ndarray], shift: int) -> Path:
    """The stream with its first `shift` frames moved to the end, encoded as `encode` does."""
    if shift == 0:
        return stream
    target = stream.with_name(f"{stream.stem}_from{shift}.mp4")
    return target if target.exists() else encode_frames(frames[shift:] + frames[:shift], target)


def with_empty_street(stream: Path, frames: list[np.ndarray], street: Path) -> Path:
    """`sparse` traffic's stream: each play of the clip followed by EMPTY_S seconds of the street,
    scaled to the clip's size (the street's frames are taken on from play to play)."""
    height, width = frames[0].shape[:2]
    count = round(EMPTY_S * FPS)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(street), "-vf", f"fps={FPS},scale={width}:{height}",
                          "-frames:v", str(count * PLAYS), "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
                         check=True, capture_output=True).stdout
    empty = list(np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3))
    if len(empty) < count * PLAYS:
        raise SystemExit(f"{street} has {len(empty)} frames at {FPS:.0f} fps, {count * PLAYS} needed")
    play = len(frames) // PLAYS
    sparse = [image for p in range(PLAYS)
              for image in frames[p * play:(p + 1) * play] + empty[p * count:(p + 1) * count]]
    return encode_frames(sparse, stream.with_name(f"{stream.stem}_sparse.mp4"))


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


@dataclass(frozen=True)
class Run:
    cameras: int
    frames: int  # decoded, all cameras
    dropped: int  # decoded but overwritten before a worker took them
    stale: int  # taken too late to decide on
    decision_ms: np.ndarray  # arrival of the deciding frame -> decision made
    lost: int  # cameras whose decisions differ from the reference
    unlocks_off: int  # of those differences, unlocks: the reference's not made, plus any it did not make
    cpu_s: float  # the whole process: readers, workers, ONNX Runtime threads
    wall_s: float

    def ok(self) -> bool:
        return (not self.dropped and not self.stale and not self.lost and len(self.decision_ms) > 0
                and float(np.percentile(self.decision_ms, 99)) <= LATENCY_TARGET_MS)


class Decisions:
    """What the runtime decided, per camera; latencies only of decisions made while the camera
    was still streaming (a file camera's last tracks are closed when the worker notices the end,
    up to its 0.25 s idle wake-up later, which a live camera never does)."""

    def __init__(self, last_frame: int) -> None:
        self.last_frame = last_frame
        self.by_camera: dict[str, list[GateDecision]] = {}
        self.latency_ms: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, decision: GateDecision, latency_ms: float) -> None:
        with self._lock:
            self.by_camera.setdefault(decision.camera_id, []).append(decision)
            if decision.frame < self.last_frame:
                self.latency_ms.append(latency_ms)


@dataclass(frozen=True)
class Camera:
    """What a simulated camera plays, and what one camera alone decides on it."""

    stream: Path
    reference: Outcome


def live_run(analyzer: FaceAnalyzer, identify: Callable, liveness: LivenessChecker | None, policy: GatePolicy,
             playlist: Callable[[int], list[Camera]], frames: int, cameras: int, *, workers: int) -> Run:
    """`cameras` gate cameras (`playlist(cameras)`) replaying their streams in real time through one
    GateRuntime, started staggered within one frame period as unsynchronised cameras are; until
    every one has ended."""
    plays = playlist(cameras)
    seen = Decisions(frames - 1)
    runtime = GateRuntime([], analyzer, identify, on_decision=seen, policy=policy, liveness=liveness, fps=FPS,
                          workers=workers)
    names = [f"cam{i}" for i in range(cameras)]
    cpu, wall = time.process_time(), time.perf_counter()
    with runtime:
        for gate_id, (name, play) in enumerate(zip(names, plays, strict=True), 1):
            runtime.put(CameraConfig(id=name, role="gate", source=str(play.stream), gate_id=gate_id))
            time.sleep(1 / (FPS * cameras))
        deadline = time.monotonic() + 10 * frames / FPS + 60
        stats = runtime.stats()
        while not all(s.ended for s in stats):
            if time.monotonic() > deadline:
                raise SystemExit(f"{cameras} cameras did not finish playing {plays[0].stream.name}")
            time.sleep(0.1)
            stats = runtime.stats()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    made = [outcome(seen.by_camera.get(name, [])) for name in names]
    lost = sum(m != play.reference for m, play in zip(made, plays, strict=True))
    unlocks_off = sum(_unlocks_off(m, play.reference) for m, play in zip(made, plays, strict=True))
    return Run(cameras, sum(s.frames_decoded for s in stats), sum(s.frames_dropped for s in stats),
               sum(s.frames_stale for s in stats), np.array(seen.latency_ms), lost, unlocks_off, cpu, wall)


def _unlocks_off(made: Outcome, reference: Outcome) -> int:
    """How far a camera's unlocks are from the reference's: a dropped frame that splits a stranger's
    track adds a harmless "unknown"; a missed or extra unlock is what a resident or the gate feels."""
    mine = Counter({k: v for k, v in made.items() if k[0] == "unlock"})
    theirs = Counter({k: v for k, v in reference.items() if k[0] == "unlock"})
    return sum(((mine - theirs) + (theirs - mine)).values())


def reference_outcome(analyzer: FaceAnalyzer, identify: Callable, policy: GatePolicy,
                      frames: list[np.ndarray], liveness: LivenessChecker | None = None) -> Outcome:
    tracker = GateTracker("ref", analyzer, identify, policy=policy, fps=FPS, liveness=liveness)
    decisions: list[GateDecision] = []
    frame = None
    for index, image in enumerate(frames):
        frame = Frame("ref", index, index / FPS, image)
        decisions += tracker.step(frame)
    assert frame is not None
    return outcome(decisions + tracker.finish(frame))


class Cameras:
    """The simulated cameras of one stream: the clip from a given frame on (rotated), with its
    reference decisions, made once per starting frame."""

    def __init__(self, analyzer: FaceAnalyzer, identify: Callable, policy: GatePolicy,
                 liveness: LivenessChecker | None, stream: Path, frames: list[np.ndarray]) -> None:
        self.analyzer, self.identify, self.policy, self.liveness = analyzer, identify, policy, liveness
        self.stream, self.frames = stream, frames
        self._made: dict[int, Camera] = {}

    def at(self, shift: int) -> Camera:
        if shift not in self._made:
            stream = rotated(self.stream, self.frames, shift)
            clip = decode_all(stream) if shift else self.frames  # what the camera will decode
            self._made[shift] = Camera(stream, reference_outcome(self.analyzer, self.identify, self.policy, clip,
                                                                 self.liveness))
        return self._made[shift]

    def playlist(self, count: int, *, traffic: str) -> list[Camera]:
        """rush: every camera at frame 0; independent (and sparse, on its own stream): camera i of n
        from i/n of one play."""
        play = len(self.frames) // PLAYS
        return [self.at(0 if traffic == "rush" else i * play // count) for i in range(count)]


def capacity(run: Callable[[int], Run], counts: Sequence[int]) -> tuple[int, list[Run]]:
    carried, runs = 0, []
    for cameras in counts:
        runs.append(result := run(cameras))
        if not result.ok():
            break
        carried = cameras
    return carried, runs


def _p(values: np.ndarray, q: float) -> str:
    return f"{np.percentile(values, q):.0f}" if len(values) else "-"


def _row(label: str, run: Run) -> str:
    return (f"{label:<36} {run.cameras:>4} {run.frames:>6} {run.dropped:>7} {run.stale:>5} {run.lost:>5} "
            f"{run.unlocks_off:>5} "
            f"{_p(run.decision_ms, 50):>6} {_p(run.decision_ms, 99):>6} {run.frames / run.wall_s:>7.1f} "
            f"{run.cpu_s / run.wall_s:>5.2f}  {'ok' if run.ok() else 'FAIL'}")


def main(argv: list[str] | None = None) -> int:
    shared = SHARED
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=shared / "data/video/facenetpt_video.mp4")
    parser.add_argument("--heights", type=int, nargs="+", default=[720, 1080], choices=[720, 1080])
    parser.add_argument("--detectors", nargs="+", default=["yunet_s", "mtcnn"])
    parser.add_argument("--min-face", type=int, default=60, help="gate's smallest face, px (detector and policy)")
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 8, 10])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 1], help="the runtime's worker threads")
    parser.add_argument("--liveness", choices=["on", "off"], default="on",
                        help="the MiniFASNet pair on every decision, as the service's default (required)")
    parser.add_argument("--traffic", nargs="+", choices=["rush", "independent", "sparse"], default=["rush"],
                        help="rush: every camera at the same moment of the clip; independent: each at its own; "
                             "sparse: as independent, with nobody near the camera two thirds of the time")
    parser.add_argument("--idle-detect-every", type=int, nargs="+", default=[GatePolicy.idle_detect_every],
                        help="the policy's detection stride while no face is in view (1: every frame)")
    args = parser.parse_args(argv)
    use_model_mirror()
    base_policy = GatePolicy(min_face_px=float(args.min_face))
    liveness = LivenessChecker.from_registry() if args.liveness == "on" else None
    print(f"gate cameras at {FPS:.0f} fps replaying {args.video.name} {PLAYS}x; min face {args.min_face} px; "
          f"liveness {args.liveness}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'detector / traffic / idle / workers':<36} {'cams':>4} {'frames':>6} {'dropped':>7} {'stale':>5} "
          f"{'lost':>5} {'unl±':>5} {'dec50':>6} {'dec99':>6} {'fps':>7} {'cores':>5}  "
          "(ms: deciding frame's arrival -> decision)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        photos = build_analyzer("open")
        enrol_walker(photos, args.video, folder)  # as the service enrols: photo, default pack
        for detector in args.detectors:
            analyzer = for_gate_cameras(photos, min_face_size=args.min_face, detector=detector)
            with open_gallery(folder, analyzer) as gallery:
                for height in args.heights:
                    clip = encode(args.video, height, folder)
                    clip_frames = decode_all(clip)
                    for traffic in args.traffic:
                        stream = clip
                        if traffic == "sparse":
                            stream = with_empty_street(clip, clip_frames, shared / EMPTY_STREET)
                        frames = clip_frames if stream == clip else decode_all(stream)
                        for idle in args.idle_detect_every:
                            policy = replace(base_policy, idle_detect_every=idle)
                            cameras = Cameras(analyzer, gallery.identify, policy, liveness, stream, frames)
                            setting = f"{height}p {detector} {traffic} idle/{idle}"
                            print(f"{setting}: reference decisions {dict(cameras.at(0).reference)}", flush=True)
                            for workers in args.workers:
                                label = f"{setting} x{workers}"
                                playlist = functools.partial(cameras.playlist, traffic=traffic)
                                run = functools.partial(live_run, analyzer, gallery.identify, liveness, policy,
                                                        playlist, len(frames), workers=workers)
                                carried, runs = capacity(run, args.counts)
                                for run in runs:
                                    print(_row(label, run), flush=True)
                                print(f"=> {label}: {carried} cameras carried", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
