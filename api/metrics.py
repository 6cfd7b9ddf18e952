"""Prometheus metrics: request latency, decisions by reason, where the time of a decision goes, and
the live cameras (frame rate, decode time, frames decoded/dropped, disconnects, online, decision
latency from a frame's arrival).

Each app has its own registry, so several apps in one process (tests) do not share counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vision.streams.stats import CameraStats

# Gate decisions should take tens of milliseconds; uploads and enrolments up to seconds.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram("gatewatch_http_request_duration_seconds", "HTTP request latency",
                                  ["method", "route", "status"], buckets=_LATENCY_BUCKETS,
                                  registry=self.registry)
        self.decisions = Counter("gatewatch_access_decisions_total", "Gate decisions",
                                 ["gate_id", "decision", "reason"], registry=self.registry)
        self.learned = Counter("gatewatch_gate_learning_total", "Gate-camera unlocks that taught a template or not",
                               ["outcome"], registry=self.registry)
        self.alert_response = Histogram("gatewatch_alert_response_seconds",
                                        "From an alert's first sighting to its acknowledgement or resolution",
                                        ["kind", "step"], buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
                                        registry=self.registry)
        self.stages = Histogram("gatewatch_stage_duration_seconds",
                                "Time per stage of an access decision or enrolment",
                                ["stage"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.templates = Gauge("gatewatch_gallery_templates", "Face templates in the gallery",
                               registry=self.registry)
        self.camera_latency = Histogram("gatewatch_camera_decision_latency_seconds",
                                        "From a frame's arrival to the gate decision made on it",
                                        ["camera_id"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.camera_events = Counter("gatewatch_camera_events_total", "Cameras going offline or online; throws seen",
                                     ["camera_id", "type"], registry=self.registry)

    def watch_templates(self, count: Callable[[], float]) -> None:
        self.templates.set_function(count)

    def watch_alerts(self, counts: Callable[[], dict[tuple[str, str], int]]) -> None:
        """counts(): (kind, "open" | "overdue") -> alerts, read at scrape time."""
        self.registry.register(_AlertCollector(counts))

    def watch_cameras(self, stats: Callable[[], list[CameraStats]]) -> None:
        self.registry.register(_CameraCollector(stats))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stages.labels(name).observe(time.perf_counter() - started)


class _CameraCollector(Collector):
    """Reads the runtime's per-camera counters at scrape time: one source of truth, no copying."""

    def __init__(self, stats: Callable[[], list[CameraStats]]) -> None:
        self.stats = stats

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        stats = self.stats()
        gauges = (("fps", "Frames decoded per second", lambda s: s.fps),
                  ("decode_seconds", "Time to read and decode one frame (smoothed)", lambda s: s.decode_ms / 1000),
                  ("online", "1 while the camera delivers frames", lambda s: float(bool(s.online))))
        counters = (("frames_decoded", "Frames decoded", lambda s: s.frames_decoded),
                    ("frames_dropped", "Frames overwritten before processing took them", lambda s: s.frames_dropped),
                    ("frames_stale", "Frames skipped as too old to decide on", lambda s: s.frames_stale),
                    ("frames_processed", "Frames the gate decisions ran on", lambda s: s.frames_processed),
                    ("disconnects", "Connections lost after frames had arrived", lambda s: s.disconnects))
        for name, help_text, value in gauges:
            family = GaugeMetricFamily(f"gatewatch_camera_{name}", help_text, labels=["camera_id"])
            for s in stats:
                family.add_metric([s.camera_id], value(s))
            yield family
        for name, help_text, value in counters:
            family = CounterMetricFamily(f"gatewatch_camera_{name}", help_text, labels=["camera_id"])
            for s in stats:
                family.add_metric([s.camera_id], value(s))
            yield family


class _AlertCollector(Collector):
    def __init__(self, counts: Callable[[], dict[tuple[str, str], int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("gatewatch_alerts", "Alerts not resolved, and those of them overdue",
                                   labels=["kind", "state"])
        for (kind, state), n in sorted(self.counts().items()):
            family.add_metric([kind, state], n)
        yield family


class RequestTimer:
    """ASGI middleware timing every HTTP request by route template (not raw path: ids would
    explode the label set)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            self.metrics.requests.labels(scope["method"], getattr(route, "path", "unmatched"),
                                         str(status)).observe(time.perf_counter() - started)


router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.services.metrics.registry),
                    media_type=CONTENT_TYPE_LATEST)
