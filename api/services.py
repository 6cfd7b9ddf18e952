"""What the routes share for the life of the process: built once by the app's lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Request

from api.alert_feed import AlertFeed
from api.live import LiveGates
from api.metrics import Metrics
from api.ratelimit import RateLimiter
from api.settings import Settings
from api.webhook import WebhookSender
from gates.alerts import AlertStore
from gates.gallery import Gallery
from gates.service_store import ServiceStore
from vision.faces.analyzer import FaceAnalyzer
from vision.faces.liveness import LivenessChecker

T = TypeVar("T")


@dataclass
class Services:
    settings: Settings
    analyzer: FaceAnalyzer
    gallery: Gallery
    store: ServiceStore
    metrics: Metrics
    limiter: RateLimiter
    # The neural nets already use every core per call: a few workers, not the event loop and not
    # the default pool of dozens of threads that would only fight over the cores.
    face_pool: ThreadPoolExecutor
    # None when off or unavailable; live.liveness_state says which, live.refuses_all what follows.
    liveness: LivenessChecker | None
    live: LiveGates
    alerts: AlertStore
    alert_feed: AlertFeed
    alert_webhook: WebhookSender | None = None

    async def face_work(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.face_pool, fn, *args)


def _services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(_services)]
