"""High-rise throw detection (防高空抛物): track small falling objects in front of a facade,
keep only those that fall like a thrown body, and say which floor and window they came from.
Motion segmentation and the facade calibration (image pixels <-> floors and columns) live here
too: only the throw detector uses them."""

from vision.throws.detector import ThrowDetector
from vision.throws.events import ThrowEvent

__all__ = ["ThrowDetector", "ThrowEvent"]
