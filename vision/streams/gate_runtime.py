"""The live gate pipeline: every gate/door camera read on its own thread, decided by a few workers.

Readers (vision/streams/readers.py) keep only each camera's newest frame. Each camera belongs to one of
`workers` processing threads (one per core by default; a new camera goes to the worker with the
fewest). A worker wakes when any of its cameras has a new frame, takes the newest frame of every
one that has one, and runs them as one micro-batch through the face tracks
(`vision.faces.tracks.step_many`: detection per frame, the chips of those cameras embedded in one call).
Half of a frame's work is ONNX Runtime, OpenCV and dlib, which let other threads run, so a second
worker keeps the second core busy while the first is in Python, and a camera whose frame is slow
(a group walking in) holds up only its own worker's cameras (benchmarks/bench_gates compares
worker counts). A worker never waits for a slow or dead camera: a batch is
whatever is ready. A frame that has waited longer than `max_frame_age_s` (the loop stalled, a camera
delivered late) is skipped rather than decided on: a door must not open for who stood there a
second ago. Latency is measured from a frame's arrival (decode) to the decision made on it.

The runtime decides and reports; what a decision means (rules, records, unlocking) is the
caller's, through `on_decision` and `on_camera_event`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

import cv2
import numpy as np

from vision.cameras import CameraConfig
from vision.faces.analyzer import FaceAnalyzer
from vision.faces.liveness import LivenessChecker
from vision.faces.tracks import GateDecision, GatePolicy, GateTracker, Identify, step_many
from vision.frames import Frame
from vision.streams.readers import Backoff, CameraEvent, CameraStream
from vision.streams.stats import CameraStats

log = logging.getLogger(__name__)

GATE_ROLES = ("gate", "door")
# Latency percentiles are over each camera's most recent decisions.
_LATENCY_WINDOW = 1000

DEFAULT_POLICY = GatePolicy()
DEFAULT_BACKOFF = Backoff()

OnDecision = Callable[[GateDecision, float], None]
OnCameraEvent = Callable[[CameraEvent], None]


class _Camera:
    """A camera's reader and face tracks; the tracker is touched only by the camera's worker."""

    def __init__(self, config: CameraConfig, stream: CameraStream, tracker: GateTracker, worker: int) -> None:
        self.config = config
        self.stream = stream
        self.tracker = tracker
        self.worker = worker
        self.last_frame: Frame | None = None
        self.finished = False
        self.frames_stale = 0
        self.frames_processed = 0
        self.decisions = 0
        self.errors = 0
        self.latencies_ms: deque[float] = deque(maxlen=_LATENCY_WINDOW)

    def stats(self) -> CameraStats:
        s = self.stream
        latencies = np.asarray(self.latencies_ms, np.float64)
        p50, p99 = (np.percentile(latencies, [50, 99]).round(2).tolist() if len(latencies) else (None, None))
        return CameraStats(self.config.id, self.config.gate_id, s.online, self.finished, round(s.fps, 2),
                           round(s.decode_ms, 2), s.frames_decoded, s.frames_dropped, self.frames_stale,
                           self.frames_processed, s.disconnects, self.decisions, self.errors, p50, p99)


class GateRuntime:
    """`GateRuntime(cameras, analyzer, identify, on_decision=...)`, then `start()` / `stop()`.

    `on_decision(decision, latency_ms)` and `on_camera_event(event)` run on the runtime's threads
    (the workers, and each camera's reader), possibly at the same time: keep them short and
    thread-safe, and they must not raise (what they raise is logged). Cameras can be added,
    replaced and removed while running.
    """

    def __init__(self, cameras: Iterable[CameraConfig], analyzer: FaceAnalyzer, identify: Identify, *,
                 on_decision: OnDecision, on_camera_event: OnCameraEvent | None = None,
                 policy: GatePolicy = DEFAULT_POLICY, liveness: LivenessChecker | None = None,
                 max_frame_age_s: float = 1.0, fps: float = 10.0, backoff: Backoff = DEFAULT_BACKOFF,
                 workers: int | None = None) -> None:
        """fps: the rate one camera's frames are expected to be decided at (the trackers' clock);
        workers: processing threads (default: one per core)."""
        count = (os.cpu_count() or 1) if workers is None else workers
        if count < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.analyzer = analyzer
        self.identify = identify
        self.on_decision = on_decision
        self.on_camera_event = on_camera_event
        self.policy = policy
        self.liveness = liveness
        self.max_frame_age_s = max_frame_age_s
        self.fps = fps
        self.backoff = backoff
        self._cameras: dict[str, _Camera] = {}
        self._lock = threading.Lock()
        self._wakes = [threading.Event() for _ in range(count)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(w,), name=f"gate-worker-{w}", daemon=True)
                         for w in range(count)]
        self._started = False
        for config in cameras:
            self._cameras[config.id] = self._camera(config)

    # --- life cycle -----------------------------------------------------------------------------

    def start(self) -> GateRuntime:
        # The cameras are the parallelism: OpenCV splitting each resize and warp over every core
        # only adds hand-offs between threads that are all busy anyway (measured 14.6 vs 17.6 ms of
        # CPU a 720p frame). Process-wide, as OpenCV's setting is.
        cv2.setNumThreads(1)
        with self._lock:
            self._started = True
            for camera in self._cameras.values():
                camera.stream.start()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for wake in self._wakes:
            wake.set()
        with self._lock:
            cameras, self._cameras = list(self._cameras.values()), {}
        for camera in cameras:
            camera.stream.stop(wait=False)
        for thread in self._threads:
            if thread.is_alive():
                thread.join()
        for camera in cameras:
            camera.stream.stop()

    def __enter__(self) -> GateRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- cameras --------------------------------------------------------------------------------

    def put(self, config: CameraConfig) -> None:
        """Adds a camera, or restarts it with its new settings (its tracks start afresh).
        Raises SourceError for a source that can never work, changing nothing."""
        with self._lock:
            old = self._cameras.get(config.id)
            camera = self._camera(config)
            self._cameras[config.id] = camera
            if self._started:
                camera.stream.start()
        if old is not None:
            old.stream.stop()

    def remove(self, camera_id: str) -> None:
        with self._lock:
            camera = self._cameras.pop(camera_id, None)
        if camera is not None:
            camera.stream.stop()

    def stats(self) -> list[CameraStats]:
        with self._lock:
            cameras = list(self._cameras.values())
        return [camera.stats() for camera in cameras]

    def _camera(self, config: CameraConfig) -> _Camera:
        """A camera for the worker with the fewest cameras (the caller holds the lock, or is __init__)."""
        if config.role not in GATE_ROLES:
            raise ValueError(f"camera {config.id!r} has role {config.role!r}; the gate runtime runs gate and "
                             "door cameras")
        load = [0] * len(self._wakes)
        for other in self._cameras.values():
            if other.config.id != config.id:
                load[other.worker] += 1
        worker = load.index(min(load))
        stream = CameraStream(config.id, config.source, on_event=self._camera_event, backoff=self.backoff,
                              realtime=config.playback == "realtime",
                              every_frame=config.playback == "every_frame", on_frame=self._wakes[worker].set)
        tracker = GateTracker(config.id, self.analyzer, self.identify, policy=self.policy, fps=self.fps,
                              liveness=self.liveness)
        return _Camera(config, stream, tracker, worker)

    def _camera_event(self, event: CameraEvent) -> None:
        if self.on_camera_event is not None:
            self.on_camera_event(event)  # the stream logs what this raises

    # --- the processing loop --------------------------------------------------------------------

    def _run(self, worker: int) -> None:
        wake = self._wakes[worker]
        while not self._stop.is_set():
            wake.wait(0.25)  # the timeout only notices file cameras that ended
            wake.clear()
            with self._lock:
                cameras = [c for c in self._cameras.values() if c.worker == worker]
            batch: list[tuple[_Camera, Frame]] = []
            for camera in cameras:
                frame = camera.stream.read(timeout_s=0)
                if frame is None:
                    if camera.stream.ended and not camera.finished:
                        self._finish(camera)
                    continue
                if (not camera.stream.every_frame
                        and time.monotonic() - frame.arrived > self.max_frame_age_s):
                    camera.frames_stale += 1
                    continue
                batch.append((camera, frame))
            if batch:
                self._decide(batch)

    def _decide(self, batch: list[tuple[_Camera, Frame]]) -> None:
        try:
            decisions = step_many([c.tracker for c, _ in batch], [f for _, f in batch])
        except Exception:
            log.exception("gate decisions failed for cameras %s; no decision from these frames",
                          ", ".join(c.config.id for c, _ in batch))
            for camera, _ in batch:
                camera.errors += 1
            return
        decided_at = time.monotonic()
        by_id = {}
        for camera, frame in batch:
            camera.frames_processed += 1
            camera.last_frame = frame
            by_id[camera.config.id] = (camera, frame)
        for decision in decisions:
            camera, frame = by_id[decision.camera_id]
            self._deliver(camera, decision, (decided_at - frame.arrived) * 1000)

    def _finish(self, camera: _Camera) -> None:
        """A file camera played to its end: its undecided tracks are decided as they stand."""
        camera.finished = True
        if camera.last_frame is None:
            return
        try:
            decisions = camera.tracker.finish(camera.last_frame)
        except Exception:
            log.exception("closing the tracks of camera %s failed", camera.config.id)
            camera.errors += 1
            return
        latency_ms = (time.monotonic() - camera.last_frame.arrived) * 1000
        for decision in decisions:
            self._deliver(camera, decision, latency_ms)

    def _deliver(self, camera: _Camera, decision: GateDecision, latency_ms: float) -> None:
        camera.decisions += 1
        camera.latencies_ms.append(latency_ms)
        try:
            self.on_decision(decision, latency_ms)
        except Exception:
            log.exception("decision callback failed for camera %s", camera.config.id)
