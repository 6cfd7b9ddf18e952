"""What a running camera reports, whatever its work (gate faces or facade throws): one shape for
`/metrics` and `/cameras` to show."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CameraStats:
    """One camera as the runtime sees it. ended: a file camera played to its end and every track
    it saw is decided; frames_dropped: decoded but overwritten before the runtime took them
    (processing slower than the camera); frames_stale: taken but too old to decide on; latency
    percentiles in ms from frame arrival to decision, None before any decision."""

    camera_id: str
    gate_id: int | None
    online: bool | None
    ended: bool
    fps: float
    decode_ms: float
    frames_decoded: int
    frames_dropped: int
    frames_stale: int
    frames_processed: int
    disconnects: int
    decisions: int
    errors: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
