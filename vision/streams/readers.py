"""Camera ingestion: one reader thread per camera that keeps only the newest frame.

A gate decides on what is in front of it now. A consumer slower than the camera must therefore
skip frames rather than queue them: a queue would make every decision later than the last, so the
reader overwrites a single slot and counts what was overwritten unread. Network cameras drop (power,
Wi-Fi, NVR restarts); the reader reconnects with exponential backoff and reports the change once,
as a typed event, so an operator sees "gate cam offline" rather than a silent stall.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from vision.frames import Frame

log = logging.getLogger(__name__)

# RTSP over TCP: UDP loses packets (smeared frames) on busy LANs and cannot cross most NATs.
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")

EventType = Literal["camera_offline", "camera_online"]
_NETWORK_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


@dataclass(frozen=True)
class CameraEvent:
    type: EventType
    camera_id: str
    time: float
    reason: str


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: short at first (a blip), growing to max_s so a dead camera costs nothing."""

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 10.0

    def delay(self, failures: int) -> float:
        return min(self.initial_s * self.factor ** max(failures - 1, 0), self.max_s)


class SourceError(ValueError):
    """A source that can never work (a missing file), as opposed to one that is down for now."""


def is_file_source(source: str) -> bool:
    return not source.isdigit() and not source.lower().startswith(_NETWORK_SCHEMES)


def check_source(camera_id: str, source: str) -> None:
    """SourceError for a source that can never work; a network camera or a device may be down now
    and come up later, so only a missing video file is refused."""
    if is_file_source(source) and not Path(source).is_file():
        raise SourceError(f"camera {camera_id!r}: video file {source!r} does not exist (a source is a video file, "
                          f"a device index, or a {'/'.join(s.rstrip(':/') for s in _NETWORK_SCHEMES)} URL)")


def open_capture(source: str, open_timeout_s: float = 5.0, read_timeout_s: float = 5.0) -> cv2.VideoCapture:
    """A digit is a USB device index; anything else goes to FFmpeg with timeouts, so a camera that
    hangs mid-stream fails a read after read_timeout_s instead of blocking its thread forever.

    FFmpeg decodes on one thread: every camera already has a thread of its own, and FFmpeg's own
    threads cost CPU (720p H.264: 7.0 ms a frame on one thread, 8.3-11 with FFmpeg's defaults)."""
    if source.isdigit():
        return cv2.VideoCapture(int(source))
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000), cv2.CAP_PROP_N_THREADS, 1]
    return cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)


class CameraStream:
    """Reads one camera on its own thread; `read()` returns the newest frame not yet returned.

    File sources are played at their native frame rate (``realtime``) so a recording behaves like
    the camera it came from, and end the stream at the end instead of reconnecting; ``every_frame``
    makes a file's reader wait until its frame was read instead of overwriting it (replays, tests).
    ``on_frame`` is called after each new frame, so one consumer of many cameras can sleep until any
    of them has something (it must be quick: it runs on the reader thread). Counters are
    plain attributes for the metrics exporter: fps (decoded, smoothed), decode_ms (smoothed time of
    one read), frames_decoded, frames_dropped (decoded but overwritten unread), disconnects, online;
    source_fps is the frame rate the source declares (None until opened, or when it declares none).
    """

    def __init__(self, camera_id: str, source: str, *, on_event: Callable[[CameraEvent], None] | None = None,
                 backoff: Backoff = Backoff(), open_timeout_s: float = 5.0, read_timeout_s: float = 5.0,
                 realtime: bool = True, every_frame: bool = False,
                 on_frame: Callable[[], None] | None = None) -> None:
        check_source(camera_id, source)
        self.camera_id = camera_id
        self.source = source
        self.is_file = is_file_source(source)
        self.on_event = on_event
        self.backoff = backoff
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.realtime = realtime
        self.every_frame = every_frame and self.is_file
        self.on_frame = on_frame
        self.fps = 0.0
        self.source_fps: float | None = None
        self.decode_ms = 0.0
        self.frames_decoded = 0
        self.frames_dropped = 0
        self.disconnects = 0
        self.online: bool | None = None
        self.ended = False
        self._last_publish = 0.0
        self._latest: Frame | None = None
        self._returned = -1
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"camera-{camera_id}", daemon=True)

    def start(self) -> CameraStream:
        self._thread.start()
        return self

    def stop(self, timeout_s: float | None = None, *, wait: bool = True) -> None:
        """wait=False only asks the thread to end: stopping many cameras, ask all, then join each,
        so that cameras stuck in a read wait out their timeouts together, not one after another."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if wait and self._thread.is_alive():
            self._thread.join(self.read_timeout_s + 1.0 if timeout_s is None else timeout_s)

    def __enter__(self) -> CameraStream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def read(self, timeout_s: float | None = None) -> Frame | None:
        """The newest frame newer than the last one returned; None on timeout or when the stream
        has ended (or was stopped) with nothing new."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._latest is None or self._latest.index <= self._returned:
                if self.ended or self._stop.is_set():
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame = self._latest
            self._returned = frame.index
            self._cond.notify_all()  # an every_frame reader waits for this
            return frame

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            cap = open_capture(self.source, self.open_timeout_s, self.read_timeout_s)
            if cap.isOpened():
                reason, frames = self._read_until_failure(cap)
            else:
                reason, frames = f"cannot open {self.source}", 0
            cap.release()
            if self._stop.is_set():
                break
            self._set_online(False, reason)
            if self.is_file:
                break
            failures = 1 if frames else failures + 1
            self.disconnects += bool(frames)
            self._stop.wait(self.backoff.delay(failures))
        with self._cond:
            self.ended = True
            self._cond.notify_all()

    def _read_until_failure(self, cap: cv2.VideoCapture) -> tuple[str, int]:
        declared = cap.get(cv2.CAP_PROP_FPS)
        self.source_fps = declared if 1.0 <= declared <= 240.0 else None
        period = 1.0 / self.source_fps if self.is_file and self.realtime and self.source_fps else 0.0
        started = time.monotonic()
        count = 0
        while not self._stop.is_set():
            t0 = time.monotonic()
            ok, image = cap.read()
            t1 = time.monotonic()
            if not ok or image is None:
                return ("end of file" if self.is_file else f"read failed on {self.source}"), count
            if count == 0:
                self._set_online(True, f"reading {self.source}")
            media_time = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 if self.is_file else time.time()
            self._publish(image, media_time, t1 - t0)
            count += 1
            if period:
                self._stop.wait(max(0.0, started + count * period - time.monotonic()))
        return "stopped", count

    def _publish(self, image: np.ndarray, timestamp: float, decode_s: float) -> None:
        with self._cond:
            if self.every_frame:
                self._cond.wait_for(lambda: self._stop.is_set() or self._latest is None
                                    or self._latest.index <= self._returned)
            now = time.monotonic()
            if self._latest is not None and self._latest.index > self._returned:
                self.frames_dropped += 1
            if self.frames_decoded:
                interval = max(now - self._last_publish, 1e-6)
                self.fps = 0.9 * self.fps + 0.1 / interval if self.fps else 1.0 / interval
                self.decode_ms = 0.9 * self.decode_ms + 0.1 * decode_s * 1000
            else:
                self.decode_ms = decode_s * 1000
            self._last_publish = now
            self._latest = Frame(self.camera_id, self.frames_decoded, timestamp, image, now)
            self.frames_decoded += 1
            self._cond.notify_all()
        if self.on_frame is not None:
            self.on_frame()

    def _set_online(self, online: bool, reason: str) -> None:
        if self.online is online:
            return
        self.online = online
        event = CameraEvent("camera_online" if online else "camera_offline", self.camera_id, time.time(), reason)
        log.info("%s %s: %s", event.type, self.camera_id, reason)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("camera event callback failed for %s", self.camera_id)
