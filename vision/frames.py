"""The frame: the unit every camera hands to the work downstream (face tracks, throw detection)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Frame:
    """index counts frames decoded by this camera since start (gaps = frames skipped by a slow
    consumer); timestamp is wall-clock time of decode for live sources, media time for files.
    arrived is the monotonic clock when the frame was made (decoded), for latency on any source."""

    camera_id: str
    index: int
    timestamp: float
    image: np.ndarray
    arrived: float = field(default_factory=time.monotonic)
