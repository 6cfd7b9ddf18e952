"""Evidence a guard can act on: the trajectory drawn over the facade, and a short clip.

Frames are kept in a ring buffer as JPEG (about 100 kB each at 960 px wide) because a throw is only
known once its object has landed, up to ~5 s after the release, and the clip must start before
the release: holding that much raw 1080p video would take gigabytes.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vision.throws.events import ThrowEvent
from vision.throws.facade import FacadeCalibration


def draw_trajectory(
    frame: np.ndarray, event: ThrowEvent, calib: FacadeCalibration, scale: float = 1.0
) -> np.ndarray:
    """The frame with the facade grid, the origin window, the detections and the fitted path.

    ``scale`` maps full-resolution pixels (the event's coordinates) to ``frame``'s pixels.
    """
    img = frame.copy()
    grid = img.copy()

    def to_px(uv: np.ndarray) -> np.ndarray:
        return np.round(calib.to_image(uv) * scale).astype(np.int32)

    for f in range(calib.floors + 1):
        cv2.polylines(
            grid, [to_px(np.array([[0, f], [calib.columns, f]]))], False, (200, 200, 200), 1, cv2.LINE_AA
        )
    for c in range(calib.columns + 1):
        cv2.polylines(
            grid, [to_px(np.array([[c, 0], [c, calib.floors]]))], False, (200, 200, 200), 1, cv2.LINE_AA
        )
    f0, c0 = event.floor - 1, event.column - 1
    cell = to_px(np.array([[c0, f0], [c0 + 1, f0], [c0 + 1, f0 + 1], [c0, f0 + 1]], float))
    cv2.fillPoly(grid, [cell], (0, 0, 255))
    cv2.addWeighted(grid, 0.35, img, 0.65, 0, img)
    cv2.polylines(img, [cell], True, (0, 0, 255), 2, cv2.LINE_AA)
    if event.fitted_px:
        path = np.round(np.asarray(event.fitted_px) * scale).astype(np.int32)
        cv2.polylines(img, [path], False, (0, 255, 255), 2, cv2.LINE_AA)
    for _, x, y in event.trajectory_px:
        cv2.circle(img, (round(x * scale), round(y * scale)), 3, (0, 0, 255), 1, cv2.LINE_AA)
    rx, ry = event.origin.release_xy
    cv2.drawMarker(img, (round(rx * scale), round(ry * scale)), (255, 0, 255), cv2.MARKER_CROSS, 18, 2)
    text = (
        f"THROW floor {event.floor} (+-{event.origin.sigma_floor:.1f}) column {event.column} "
        f"t={event.release_time_s:.1f}s conf {event.confidence:.2f}"
    )
    cv2.rectangle(img, (0, 0), (img.shape[1], 28), (0, 0, 0), -1)
    cv2.putText(img, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return img


@dataclass(frozen=True)
class EvidenceParams:
    width: int = 960  # evidence frames are downscaled to at most this width
    pre_roll_s: float = 2.0
    post_roll_s: float = 1.0
    max_track_s: float = 8.0
    jpeg_quality: int = 85


class _Clip:
    def __init__(self, writer: cv2.VideoWriter, until: int) -> None:
        self.writer, self.until = writer, until


class EvidenceRecorder:
    """Buffers recent frames; on a throw writes the trajectory image and a pre/post-roll clip."""

    def __init__(
        self,
        out_dir: Path,
        calib: FacadeCalibration,
        fps: float,
        frame_size: tuple[int, int],
        params: EvidenceParams | None = None,
    ) -> None:
        self.p = params or EvidenceParams()
        self.out_dir = Path(out_dir)
        self.calib, self.fps = calib, fps
        self.scale = min(1.0, self.p.width / frame_size[0])
        self.size = (round(frame_size[0] * self.scale), round(frame_size[1] * self.scale))
        n = int((self.p.pre_roll_s + self.p.max_track_s) * fps) + 2
        self.ring: deque[tuple[int, bytes]] = deque(maxlen=n)
        self.clips: list[_Clip] = []
        self.stamp = time.strftime("%Y%m%d-%H%M%S")

    def push(self, frame: np.ndarray, index: int) -> None:
        small = frame if self.scale == 1.0 else cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, self.p.jpeg_quality])
        if ok:
            self.ring.append((index, buf.tobytes()))
        for clip in list(self.clips):
            clip.writer.write(small)
            if index >= clip.until:
                clip.writer.release()
                self.clips.remove(clip)

    def _frame(self, data: bytes) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)

    def record(self, event: ThrowEvent) -> None:
        """Write the image now and start the clip; fills in the event's evidence paths."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        base = self.out_dir / f"{event.camera_id or 'camera'}_{self.stamp}_throw_f{event.start_frame:06d}"
        if not self.ring:
            return
        # The trajectory is drawn on the frame where the object was last seen: the whole path is
        # in the past there, and the scene (lit windows, open balconies) is as it was.
        frames = dict(self.ring)
        key = min(frames, key=lambda i: abs(i - event.end_frame))
        image = draw_trajectory(self._frame(frames[key]), event, self.calib, self.scale)
        image_path = base.with_suffix(".jpg")
        cv2.imwrite(str(image_path), image)
        event.image_path = str(image_path)
        clip_path = base.with_suffix(".mp4")
        writer = cv2.VideoWriter(str(clip_path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
        if not writer.isOpened():
            return
        first = event.origin.release_frame - self.p.pre_roll_s * self.fps
        for index, data in self.ring:
            if index >= first:
                writer.write(self._frame(data))
        last = self.ring[-1][0]
        self.clips.append(_Clip(writer, last + int(self.p.post_roll_s * self.fps)))
        event.clip_path = str(clip_path)

    def close(self) -> None:
        for clip in self.clips:
            clip.writer.release()
        self.clips.clear()
