"""The typed result of the throw pipeline: one ThrowEvent per object seen falling from the facade."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vision.throws.origin import Origin


@dataclass
class ThrowEvent:
    """A detected throw, what a guard acts on.

    Frames are indices into the analysed stream; where and when the object left the facade is the
    ``origin`` (floor/column 1-based, its release frame fractional because the release is
    extrapolated between frames). ``trajectory_px`` holds the detections (frame, x, y) in
    reference-pose image pixels. Evidence paths are filled in by the evidence writer when it has
    written them.
    """

    start_frame: int
    end_frame: int
    origin: Origin
    release_time_s: float
    confidence: float
    accel_ratio: float
    camera_id: str = ""
    trajectory_px: list[tuple[int, float, float]] = field(default_factory=list)
    fitted_px: list[tuple[float, float]] = field(default_factory=list)
    image_path: str | None = None
    clip_path: str | None = None
    type: Literal["throw"] = "throw"

    @property
    def floor(self) -> int:
        return self.origin.floor

    @property
    def column(self) -> int:
        return self.origin.column

    def alert(self) -> dict:
        """The JSON-ready `throw` alert: what the CLI prints and what would be sent on."""
        o = self.origin
        return {
            "type": self.type,
            "camera_id": self.camera_id,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "release_frame": round(o.release_frame, 2),
            "release_time_s": round(self.release_time_s, 3),
            "floor": o.floor,
            "column": o.column,
            "floor_sigma": round(o.sigma_floor, 2),
            "column_sigma": round(o.sigma_column, 2),
            "u": round(o.u, 3),
            "v": round(o.v, 3),
            "confidence": round(self.confidence, 3),
            "accel_ratio": round(self.accel_ratio, 3),
            "points": len(self.trajectory_px),
            "image": self.image_path,
            "clip": self.clip_path,
        }
