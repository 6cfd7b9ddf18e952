"""High-rise throw detection (防高空抛物): track small falling objects in front of a facade,
keep only those that fall like a thrown body, and say which floor and window they came from."""

from vision.throws.detector import ThrowDetector
from vision.throws.events import ThrowEvent

__all__ = ["ThrowDetector", "ThrowEvent"]
