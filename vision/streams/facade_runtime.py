"""Live facade cameras: every frame of a tower camera through the throw detector, on its own thread.

Throw detection cannot skip frames the way a gate can: a falling object crosses a floor in a few
frames, and the tracker's physics needs each of them. So each facade camera gets its own
processing thread (after Frigate: a process or thread per camera) fed by its reader; frames the
thread could not keep up with are counted as dropped (the reader keeps the newest) and show up in
the camera's metrics as the sign that the machine is too small for this camera. Frame indices are
the reader's decode counter, so a gap stays a gap for the tracker instead of squeezing time.

The detector is built on the first frame (it needs the frame size and the source's frame rate) and
again if the camera comes back at another resolution. Evidence (trajectory image, clip with
pre/post-roll) is written before the throw is handed on, so the alert can name its files.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from vision.cameras import CameraConfig
from vision.frames import Frame
from vision.streams.readers import CameraEvent, CameraStream
from vision.streams.stats import CameraStats
from vision.throws import ThrowDetector, ThrowEvent
from vision.throws.evidence import EvidenceRecorder

log = logging.getLogger(__name__)

DEFAULT_FPS = 25.0  # when the source declares no frame rate (some RTSP cameras)

OnThrow = Callable[[ThrowEvent, float], None]


class FacadeWatch:
    """One facade camera: `FacadeWatch(config, evidence_dir, on_throw=...)`, `start()`, `stop()`.

    `on_throw(event, released_s_ago)` runs on this camera's thread, with how long before the frame
    just processed the object left the facade (to date the release); what it raises is logged and
    never stops the camera.
    """

    def __init__(self, config: CameraConfig, evidence_dir: Path, *, on_throw: OnThrow,
                 on_camera_event: Callable[[CameraEvent], None] | None = None) -> None:
        if config.role != "facade" or config.facade is None:
            raise ValueError(f"camera {config.id!r} has role {config.role!r}, not a facade camera")
        self.config = config
        self.evidence_dir = evidence_dir
        self.on_throw = on_throw
        self.stream = CameraStream(config.id, config.source, on_event=on_camera_event,
                                   realtime=config.playback == "realtime",
                                   every_frame=config.playback == "every_frame")
        self.throws = 0
        self.errors = 0
        self.frames_processed = 0
        self.finished = False
        self._detector: ThrowDetector | None = None
        self._evidence: EvidenceRecorder | None = None
        self._size: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"facade-{config.id}", daemon=True)

    def start(self) -> FacadeWatch:
        self.stream.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.stream.stop(wait=False)
        if self._thread.is_alive():
            self._thread.join()
        self.stream.stop()

    def stats(self) -> CameraStats:
        s = self.stream
        return CameraStats(self.config.id, None, s.online, self.finished, round(s.fps, 2), round(s.decode_ms, 2),
                           s.frames_decoded, s.frames_dropped, 0, self.frames_processed, s.disconnects,
                           self.throws, self.errors, None, None)

    def _run(self) -> None:
        last: Frame | None = None
        try:
            while not self._stop.is_set():
                frame = self.stream.read(timeout_s=0.5)
                if frame is None:
                    if self.stream.ended:
                        break
                    continue
                last = frame
                self._process(frame)
            if self._detector is not None and last is not None:
                self._hand_on(self._detector.finish(), last)
        finally:
            self.finished = self.stream.ended
            if self._evidence is not None:
                self._evidence.close()

    def _process(self, frame: Frame) -> None:
        size = (frame.image.shape[1], frame.image.shape[0])
        try:
            if size != self._size:
                self._rebuild(size, frame)
            assert self._detector is not None and self._evidence is not None
            self._evidence.push(frame.image, frame.index)
            events = self._detector.process(frame.image, frame.index)
        except Exception:
            self.errors += 1
            log.exception("throw detection failed on camera %s, frame %d", self.config.id, frame.index)
            return
        self.frames_processed += 1
        self._hand_on(events, frame)

    def _rebuild(self, size: tuple[int, int], frame: Frame) -> None:
        if self._detector is not None:
            log.info("camera %s now delivers %dx%d frames; throw detection starts afresh", self.config.id, *size)
            if self._evidence is not None:
                self._evidence.close()
        fps = self.stream.source_fps or DEFAULT_FPS
        assert self.config.facade is not None
        self._detector = ThrowDetector(self.config.facade, size, fps, self.config.id)
        self._evidence = EvidenceRecorder(self.evidence_dir, self._detector.calib, fps, size)
        self._size = size

    def _hand_on(self, events: list[ThrowEvent], frame: Frame) -> None:
        for event in events:
            self.throws += 1
            try:
                if self._evidence is not None:
                    self._evidence.record(event)
                fps = self._detector.fps if self._detector is not None else DEFAULT_FPS
                self.on_throw(event, max(0.0, (frame.index - event.origin.release_frame) / fps))
            except Exception:
                self.errors += 1
                log.exception("handing on a throw of camera %s failed", self.config.id)
