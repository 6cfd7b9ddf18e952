"""Cameras: what each camera is (source, role, the gate it opens), editable while the service runs.

A change takes effect at once (the camera's reader is started, restarted with the new settings, or
stopped) and is written to the camera's file, so it survives a restart. Guards read the cameras'
offline/online record here too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from starlette.concurrency import run_in_threadpool

from api.auth import AdminKey, require
from api.errors import AUTHENTICATED, ApiError, responses
from api.live import CameraError, DuplicateCameraError, LiveGates, UnknownCameraError
from api.schemas import API_PREFIX, MAX_ID, CameraEventOut, CameraEventPage, CameraOut, CameraStatus
from api.services import ServicesDep
from gates.service_store import ApiKey
from vision.cameras import CAMERA_ID_PATTERN, CameraConfig
from vision.streams.stats import CameraStats

router = APIRouter(prefix=API_PREFIX, tags=["cameras"], responses=responses(*AUTHENTICATED))
CameraId = Annotated[str, Path(pattern=CAMERA_ID_PATTERN)]
GuardKey = Annotated[ApiKey, Depends(require("guard"))]


def camera_out(camera: CameraConfig, stats: CameraStats | None) -> CameraOut:
    """A camera with its status; one not running (yet) shows zero counters."""
    status = CameraStatus(running=False) if stats is None else CameraStatus(running=True, **asdict(stats))
    return CameraOut(**camera.model_dump(), status=status)


def _one(live: LiveGates, camera_id: str) -> CameraOut:
    try:
        return camera_out(live.camera(camera_id), live.stats().get(camera_id))
    except UnknownCameraError as exc:
        raise ApiError(404, exc.args[0], reason="not_found") from None


def _change(live: LiveGates, apply: Callable[[CameraConfig], None], camera: CameraConfig) -> CameraOut:
    try:
        apply(camera)
    except DuplicateCameraError as exc:
        raise ApiError(409, str(exc), reason=exc.reason) from None
    except CameraError as exc:
        raise ApiError(422, str(exc), reason=exc.reason) from None
    except UnknownCameraError as exc:
        raise ApiError(404, exc.args[0], reason="not_found") from None
    return _one(live, camera.id)


@router.post("/cameras", status_code=201, response_model=CameraOut, responses=responses(409),
             summary="Add a camera and start it")
async def create_camera(body: CameraConfig, services: ServicesDep, _: AdminKey) -> CameraOut:
    return await run_in_threadpool(_change, services.live, services.live.create, body)


@router.get("/cameras", response_model=list[CameraOut], summary="Cameras with their live status")
async def list_cameras(services: ServicesDep, _: AdminKey) -> list[CameraOut]:
    live = services.live
    stats = live.stats()
    return [camera_out(c, stats.get(c.id)) for c in live.cameras()]


@router.get("/cameras/{camera_id}", response_model=CameraOut, responses=responses(404), summary="One camera")
async def get_camera(camera_id: CameraId, services: ServicesDep, _: AdminKey) -> CameraOut:
    return _one(services.live, camera_id)


@router.put("/cameras/{camera_id}", response_model=CameraOut, responses=responses(404),
            summary="Replace a camera's settings; it restarts with them (its tracks start afresh)")
async def replace_camera(camera_id: CameraId, body: CameraConfig, services: ServicesDep, _: AdminKey) -> CameraOut:
    if body.id != camera_id:
        raise ApiError(422, f"the body's id {body.id!r} is not the camera {camera_id!r}; a camera's id cannot "
                            "change (delete it and add the new one)", reason="invalid_request")
    return await run_in_threadpool(_change, services.live, services.live.replace, body)


@router.delete("/cameras/{camera_id}", status_code=204, responses=responses(404), summary="Stop and remove a camera")
async def delete_camera(camera_id: CameraId, services: ServicesDep, _: AdminKey) -> None:
    try:
        await run_in_threadpool(services.live.delete, camera_id)
    except UnknownCameraError as exc:
        raise ApiError(404, exc.args[0], reason="not_found") from None


@router.get("/camera-events", response_model=CameraEventPage,
            summary="Cameras going offline (alerts) and back online, newest first")
async def camera_events(
        services: ServicesDep, _: GuardKey,
        camera_id: Annotated[str | None, Query(pattern=CAMERA_ID_PATTERN)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[int | None, Query(ge=1, le=MAX_ID, description="a next_cursor")] = None,
) -> CameraEventPage:
    records = await run_in_threadpool(
        lambda: services.store.list_camera_events(camera_id=camera_id, limit=limit, before_id=cursor))
    links = await run_in_threadpool(services.alerts.alert_ids_for, "camera_event_id", [r.id for r in records])
    return CameraEventPage(events=[CameraEventOut(id=r.id, at=r.at, camera_id=r.camera_id, gate_id=r.gate_id,
                                                  type=r.type, reason=r.reason, alert=r.alert,
                                                  alert_id=links.get(r.id)) for r in records],
                           next_cursor=str(records[-1].id) if len(records) == limit else None)
