"""Per-key rate limits: a stuck controller or a leaked key cannot flood the face pipeline."""

from __future__ import annotations

import threading
import time


class RateLimiter:
    """A token bucket per key: `burst` requests at once, refilled at `per_minute`."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key_id: int) -> float | None:
        """None if the request may proceed (and it is counted), else seconds until it may."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key_id] = (tokens, now)
                return (1.0 - tokens) / self.rate
            self._buckets[key_id] = (tokens - 1.0, now)
            return None
