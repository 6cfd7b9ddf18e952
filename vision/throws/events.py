"""The typed result of the throw pipeline: one ThrowEvent per object seen falling from the facade."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class ThrowEvent:
    """A detected throw, what a guard acts on.

    Frames are indices into the analysed stream; ``release_frame`` is fractional because the release
    is extrapolated between frames. ``floor``/``column`` are 1-based, ``sigma_*`` in floors/columns.
    ``trajectory_px`` holds the detections (frame, x, y) in reference-pose image pixels. Evidence
    paths are filled in by the evidence writer when it has written them.
    """

    start_frame: int
    end_frame: int
    release_frame: float
    release_time_s: float
    floor: int
    column: int
    u: float
    v: float
    sigma_floor: float
    sigma_column: float
    confidence: float
    accel_ratio: float
    camera_id: str = ""
    trajectory_px: list[tuple[int, float, float]] = field(default_factory=list)
    fitted_px: list[tuple[float, float]] = field(default_factory=list)
    release_xy: tuple[float, float] = (0.0, 0.0)
    image_path: str | None = None
    clip_path: str | None = None
    type: Literal["throw"] = "throw"

    def alert(self) -> dict:
        """The JSON-ready `throw` alert: what the CLI prints and what would be sent on."""
        return {
            "type": self.type,
            "camera_id": self.camera_id,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "release_frame": round(self.release_frame, 2),
            "release_time_s": round(self.release_time_s, 3),
            "floor": self.floor,
            "column": self.column,
            "floor_sigma": round(self.sigma_floor, 2),
            "column_sigma": round(self.sigma_column, 2),
            "u": round(self.u, 3),
            "v": round(self.v, 3),
            "confidence": round(self.confidence, 3),
            "accel_ratio": round(self.accel_ratio, 3),
            "points": len(self.trajectory_px),
            "image": self.image_path,
            "clip": self.clip_path,
        }
