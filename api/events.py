"""The record of every gate decision, newest first, for guards and operators."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from starlette.concurrency import run_in_threadpool

from api.auth import require
from api.errors import AUTHENTICATED, ApiError, responses
from api.schemas import API_PREFIX, MAX_ID, EventOut, EventPage, Id, Instant
from api.services import ServicesDep
from gates.access import DecisionKind
from gates.service_store import ApiKey, Event, EventFilter
from vision.cameras import CAMERA_ID_PATTERN

router = APIRouter(prefix=f"{API_PREFIX}/events", tags=["events"], responses=responses(*AUTHENTICATED))
GuardKey = Annotated[ApiKey, Depends(require("guard"))]


def event_out(e: Event, alert_id: int | None = None) -> EventOut:
    return EventOut(id=e.id, at=e.at, gate_id=e.gate_id, decision=e.decision, reason=e.reason,
                    resident_id=e.resident_id, resident_name=e.resident_name, similarity=e.similarity,
                    latency_ms=round(e.latency_ms, 2), alert=e.alert,
                    crop_url=f"{API_PREFIX}/events/{e.id}/crop" if e.has_crop else None,
                    camera_id=e.camera_id, liveness=e.liveness, alert_id=alert_id)


@router.get("", response_model=EventPage, summary="Access decisions, newest first")
async def list_events(
        services: ServicesDep, _: GuardKey,
        gate_id: Annotated[Id | None, Query()] = None,
        camera_id: Annotated[str | None, Query(pattern=CAMERA_ID_PATTERN,
                                               description="decisions made on this camera's video")] = None,
        decision: Annotated[DecisionKind | None, Query()] = None,
        alert: Annotated[bool | None, Query(description="true: only alerts (blocked faces, spoofs)")] = None,
        since: Annotated[Instant | None, Query(description="inclusive, with timezone")] = None,
        until: Annotated[Instant | None, Query(description="exclusive, with timezone")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=20, description="a next_cursor")] = None,
) -> EventPage:
    before = None
    if cursor is not None:
        if not cursor.isdigit() or not 1 <= int(cursor) <= MAX_ID:
            raise ApiError(422, "cursor: not a cursor returned by this endpoint", reason="invalid_request")
        before = int(cursor)
    where = EventFilter(gate_id=gate_id, camera_id=camera_id, decision=decision, alert=alert, since=since, until=until)
    events = await run_in_threadpool(lambda: services.store.list_events(where, limit=limit, before_id=before))
    links = await run_in_threadpool(services.alerts.alert_ids_for, "access_event_id", [e.id for e in events])
    return EventPage(events=[event_out(e, links.get(e.id)) for e in events],
                     next_cursor=str(events[-1].id) if len(events) == limit else None)


@router.get("/{event_id}/crop", response_class=Response, summary="The face crop of an event",
            responses={**responses(404), 200: {"content": {"image/jpeg": {"schema": {"type": "string",
                                                                                    "format": "binary"}}}}})
async def event_crop(event_id: Annotated[int, Path(ge=1, le=MAX_ID)], services: ServicesDep,
                     _: GuardKey) -> Response:
    return Response(await run_in_threadpool(services.store.event_crop, event_id), media_type="image/jpeg")
