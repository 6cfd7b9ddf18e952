"""Liveness for load balancers and supervisors: unauthenticated, and cheap."""

from __future__ import annotations

import logging
import sqlite3

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.schemas import Health
from api.services import Services, ServicesDep

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


def _health(services: Services) -> Health:
    try:
        services.store.ping()
        templates = services.gallery.count_templates()
        db_ok = True
    except sqlite3.Error:
        log.exception("health check: the database is not answering")
        templates, db_ok = 0, False
    live = services.live
    cameras = live.runtime.stats()
    return Health(status="ok" if db_ok and not live.refuses_all else "degraded", model_id=services.analyzer.model_id,
                  models_loaded=True, gallery_templates=templates, db_ok=db_ok, liveness=live.liveness_state,
                  cameras=len(cameras), cameras_online=sum(bool(c.online) for c in cameras))


@router.get("/healthz", response_model=Health,
            responses={503: {"model": Health, "description": "The database is not answering"}},
            summary="Models loaded, liveness, cameras online, gallery size, database reachable")
async def healthz(services: ServicesDep) -> JSONResponse:
    health = await run_in_threadpool(_health, services)
    return JSONResponse(health.model_dump(), status_code=200 if health.db_ok else 503)
