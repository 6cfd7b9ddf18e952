"""Throws seen by facade cameras, newest first, with their evidence: what a guard acts on.

The evidence files are written by the camera's thread under DATA_DIR/evidence/; the record names
them, and these routes serve only files the record names, never a path from the request.
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from api.auth import require
from api.errors import AUTHENTICATED, ApiError, responses
from api.schemas import API_PREFIX, MAX_ID, ThrowOut, ThrowPage
from api.services import ServicesDep
from gates.service_store import ApiKey, ThrowRecord
from vision.cameras import CAMERA_ID_PATTERN

router = APIRouter(prefix=f"{API_PREFIX}/throws", tags=["throws"], responses=responses(*AUTHENTICATED))
GuardKey = Annotated[ApiKey, Depends(require("guard"))]
ThrowId = Annotated[int, Path(ge=1, le=MAX_ID)]


def throw_out(t: ThrowRecord, alert_id: int | None = None) -> ThrowOut:
    return ThrowOut(id=t.id, at=t.at, released_at=t.released_at, camera_id=t.camera_id, floor=t.floor,
                    column=t.column, floor_sigma=t.detail.get("floor_sigma", 0.0),
                    column_sigma=t.detail.get("column_sigma", 0.0), confidence=round(t.confidence, 3),
                    image_url=f"{API_PREFIX}/throws/{t.id}/image" if t.image_path else None,
                    clip_url=f"{API_PREFIX}/throws/{t.id}/clip" if t.clip_path else None, alert_id=alert_id)


@router.get("", response_model=ThrowPage, summary="Throws from the facades, newest first (all alerts)")
async def list_throws(
        services: ServicesDep, _: GuardKey,
        camera_id: Annotated[str | None, Query(pattern=CAMERA_ID_PATTERN)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[int | None, Query(ge=1, le=MAX_ID, description="a next_cursor")] = None,
) -> ThrowPage:
    records = await run_in_threadpool(
        lambda: services.store.list_throws(camera_id=camera_id, limit=limit, before_id=cursor))
    links = await run_in_threadpool(services.alerts.alert_ids_for, "throw_id", [r.id for r in records])
    return ThrowPage(throws=[throw_out(r, links.get(r.id)) for r in records],
                     next_cursor=str(records[-1].id) if len(records) == limit else None)


async def _evidence(services: ServicesDep, throw_id: int, kind: str) -> FilePath:
    record = await run_in_threadpool(services.store.get_throw, throw_id)
    name = record.image_path if kind == "image" else record.clip_path
    if name is None or not FilePath(name).is_file():
        raise ApiError(404, f"throw {throw_id} has no {kind} on disk", reason="not_found")
    return FilePath(name)


@router.get("/{throw_id}/image", response_class=FileResponse, summary="The trajectory drawn over the facade",
            responses={**responses(404), 200: {"content": {"image/jpeg": {"schema": {"type": "string",
                                                                                    "format": "binary"}}}}})
async def throw_image(throw_id: ThrowId, services: ServicesDep, _: GuardKey) -> FileResponse:
    return FileResponse(await _evidence(services, throw_id, "image"), media_type="image/jpeg")


@router.get("/{throw_id}/clip", response_class=FileResponse, summary="The throw on video, with pre- and post-roll",
            responses={**responses(404), 200: {"content": {"video/mp4": {"schema": {"type": "string",
                                                                                   "format": "binary"}}}}})
async def throw_clip(throw_id: ThrowId, services: ServicesDep, _: GuardKey) -> FileResponse:
    return FileResponse(await _evidence(services, throw_id, "clip"), media_type="video/mp4")
