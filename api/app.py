"""The gate service as an ASGI app: create_app(settings) wires the routers; the lifespan loads
the models and opens the stores once per process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from api import (
    access,
    alerts,
    cameras,
    commands,
    console,
    events,
    gates,
    health,
    identify,
    keys,
    metrics,
    residents,
    throws,
)
from api.alert_feed import AlertFeed
from api.alerts import alert_out
from api.errors import install as install_errors
from api.live import LiveGates, LivenessState
from api.metrics import Metrics, RequestTimer
from api.mqtt import MqttBridge
from api.ratelimit import RateLimiter
from api.schemas import AlertNotice
from api.services import Services
from api.settings import Settings
from api.uploads import BodyLimit
from api.webhook import WebhookSender
from gates.alerts import AlertStore
from gates.gallery import DB_NAME, Gallery
from gates.outbox import Outbox
from gates.retention import sweep
from gates.service_store import ServiceStore
from vision.faces.analyzer import FaceAnalyzer
from vision.faces.liveness import LivenessChecker

log = logging.getLogger(__name__)


def _open_services(settings: Settings, metrics: Metrics, analyzer: FaceAnalyzer | None) -> Services:
    import faiss

    from models import registry
    from vision.faces.analyzer import build_analyzer, for_gate_cameras

    faiss.omp_set_num_threads(1)  # gallery search is tiny; FAISS's thread pool would only fight ORT's
    if analyzer is None:
        analyzer = build_analyzer(settings.pack, min_face_size=settings.min_face_size)
    entry = registry.get_entry(registry.get_pack(settings.pack).embedder)
    threshold = entry.accept_threshold if settings.accept_threshold is None else settings.accept_threshold
    margin = entry.margin if settings.margin is None else settings.margin
    if threshold is None or margin is None:
        raise ValueError(f"model {entry.id} has no calibrated threshold; set GATEWATCH_ACCEPT_THRESHOLD "
                         "and GATEWATCH_MARGIN")
    gallery = Gallery.open(settings.data_dir, analyzer.model_id, analyzer.embedder.dim,
                           accept_threshold=threshold, margin=margin)
    store = alert_store = None
    try:
        store = ServiceStore(settings.data_dir / DB_NAME, analyzer.model_id)
        _bootstrap_admin(settings, store)
        alert_store = AlertStore(settings.data_dir / DB_NAME)
        feed = AlertFeed()
        alert_store.subscribe(feed.notify)
        alert_webhook = _alert_webhook(settings, alert_store)
        checker, state = _load_liveness(settings)
        cameras_analyzer = for_gate_cameras(analyzer, settings.pack, min_face_size=settings.min_face_size)
        live = LiveGates(settings, store, gallery, cameras_analyzer, metrics, checker, state, alert_store)
    except BaseException:
        for opened in (store, alert_store):
            if opened is not None:
                opened.close()
        gallery.close()
        raise
    metrics.watch_templates(gallery.count_templates)
    metrics.watch_alerts(lambda: _alert_counts(alert_store, settings))
    return Services(settings=settings, analyzer=analyzer, gallery=gallery, store=store, metrics=metrics,
                    limiter=RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst),
                    face_pool=ThreadPoolExecutor(settings.face_workers, thread_name_prefix="faces"),
                    liveness=checker, live=live, alerts=alert_store, alert_feed=feed,
                    alert_webhook=alert_webhook)


def _alert_webhook(settings: Settings, alerts: AlertStore) -> WebhookSender | None:
    """Every alert change POSTed, signed like the unlock webhook; an alert is still worth
    delivering minutes late, so it is retried for up to 10 minutes."""
    secret = settings.alert_webhook_secret
    if settings.alert_webhook_url is None or secret is None:
        return None
    sender = WebhookSender(str(settings.alert_webhook_url), secret.get_secret_value().encode(), max_age_s=600,
                           name="alert webhook", retry_delays_s=(1, 2, 5, 10, 30, 60, 60, 120, 120, 180))
    overdue_s = settings.alert_overdue_min * 60
    alerts.subscribe(lambda change: sender.send(AlertNotice(type=change.type, seq=change.seq, at=change.at,
                                                            alert=alert_out(change.alert, overdue_s))))
    return sender


def _mqtt_bridge(settings: Settings, services: Services) -> MqttBridge | None:
    """The MQTT bridge when mqtt_url is set, told of every alert change, gate decision and camera
    status from now on (queued in its outbox until it starts and the broker takes them)."""
    if settings.mqtt_url is None:
        return None
    outbox = Outbox(settings.data_dir / DB_NAME)
    try:
        bridge = MqttBridge(settings, outbox)
    except BaseException:
        outbox.close()
        raise
    services.alerts.subscribe(bridge.on_alert_change)
    services.live.on_access.append(bridge.on_access)
    services.live.on_camera_status.append(bridge.on_camera_status)
    return bridge


async def _retention(services: Services) -> None:
    """Once at start, then hourly; a failed sweep is logged and tried again the next hour."""
    while True:
        try:
            await run_in_threadpool(sweep, services.alerts, services.store, services.settings.alert_retention_days)
        except Exception:
            log.exception("alert retention sweep failed")
        await asyncio.sleep(3600)


def _alert_counts(alerts: AlertStore, settings: Settings) -> dict[tuple[str, str], int]:
    now, counts = datetime.now(UTC), {}
    for alert in alerts.open_alerts():
        counts[alert.kind, "open"] = counts.get((alert.kind, "open"), 0) + 1
        counts.setdefault((alert.kind, "overdue"), 0)
        if alert.overdue(now, settings.alert_overdue_min * 60):
            counts[alert.kind, "overdue"] += 1
    return counts


def _load_liveness(settings: Settings) -> tuple[LivenessChecker | None, LivenessState]:
    """The MiniFASNet pair, or why not. Its weights are not on PyPI; without them the service still
    starts, says so in /healthz, and the `liveness` setting decides what gates do."""
    if settings.liveness == "off":
        return None, "off"
    try:
        return LivenessChecker.from_registry(), "ok"
    except Exception as exc:  # a missing file (ModelNotFoundError) or one that does not load
        consequence = ("every gate decision will be a deny (set GATEWATCH_LIVENESS=if_available or off to "
                       "accept faces without it)" if settings.liveness == "required"
                       else "faces are accepted without a liveness check")
        log.error("liveness model unavailable: %s; %s", exc, consequence)
        return None, "unavailable"


def _bootstrap_admin(settings: Settings, store: ServiceStore) -> None:
    """The configured admin key, or, on a fresh data dir, a generated one shown this once."""
    if settings.admin_key is not None:
        store.ensure_admin_key(settings.admin_key.get_secret_value())
    elif not store.has_admin_key():
        _, key = store.create_key("admin")
        print(f"\n  gatewatch: created the first admin API key (shown only now, store it safely):\n\n"
              f"    {key}\n\n  Send it as X-API-Key. Set GATEWATCH_ADMIN_KEY to choose your own.\n",
              flush=True)


def create_app(settings: Settings, *, analyzer: FaceAnalyzer | None = None) -> FastAPI:
    """`analyzer`: an already built one to share (tests build it once per session)."""
    app_metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = _open_services(settings, app_metrics, analyzer)
        app.state.services = services
        try:
            bridge = app.state.mqtt = _mqtt_bridge(settings, services)
        except BaseException:
            for opened in (services.store, services.alerts, services.gallery):
                opened.close()
            raise
        log.info("gatewatch serving %s with %s (%d templates, %d cameras, liveness %s)", settings.data_dir,
                 services.analyzer.model_id, services.gallery.count_templates(), len(services.live.cameras()),
                 services.live.liveness_state)
        loop = asyncio.get_running_loop()
        services.alert_feed.bind(loop)
        if services.alert_webhook is not None:
            services.alert_webhook.start()
        services.live.start(loop)
        if bridge is not None:
            bridge.start()
        retention = asyncio.create_task(_retention(services))
        try:
            yield
        finally:
            retention.cancel()
            services.alert_feed.close()
            if services.alert_webhook is not None:
                services.alert_webhook.stop()
            services.live.stop()
            if bridge is not None:
                bridge.stop()
            services.face_pool.shutdown(wait=True, cancel_futures=True)
            services.store.close()
            services.alerts.close()
            services.gallery.close()

    app = FastAPI(title="gatewatch", version="1", lifespan=lifespan,
                  description="Face-recognition gates: gate controllers ask unlock or deny; operators enrol "
                              "residents and set who may pass where; every decision is recorded.")
    install_errors(app)
    for module in (keys, gates, cameras, commands, residents, access, identify, events, throws, alerts, health,
                   metrics, console):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, max_upload_bytes=settings.max_upload_bytes)
    app.add_middleware(RequestTimer, metrics=app_metrics)
    return app
