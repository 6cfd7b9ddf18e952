"""The guard room's alerts: one list for every source, their lifecycle, and a live feed.

Guards (and admins) read, acknowledge and resolve; integration keys (other systems of the compound)
and guards raise alerts of their own kinds. `GET /alerts/stream` sends every change as a server-sent
event whose id is the store's durable sequence: a screen that reconnects with `Last-Event-ID`, even
after a restart of the service, receives exactly what it missed, in order.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from api.auth import require
from api.errors import AUTHENTICATED, ApiError, responses
from api.schemas import (
    API_PREFIX,
    MAX_ID,
    ActorOut,
    AlertCreate,
    AlertEvidence,
    AlertNote,
    AlertOut,
    AlertPage,
    AlertResolve,
    AlertSourceIn,
    Instant,
)
from api.services import Services, ServicesDep
from gates.alerts import (
    DEFAULT_SEVERITY,
    Actor,
    Alert,
    AlertError,
    AlertFilter,
    AlertStateError,
    NewAlert,
    Severity,
    Source,
    SourceType,
    Status,
)
from gates.service_store import ApiKey
from vision.images import ImageError, decode_image

router = APIRouter(prefix=f"{API_PREFIX}/alerts", tags=["alerts"], responses=responses(*AUTHENTICATED))
GuardKey = Annotated[ApiKey, Depends(require("guard"))]
RaiserKey = Annotated[ApiKey, Depends(require("guard", "integration"))]
AlertId = Annotated[int, Path(ge=1, le=MAX_ID)]
_REPLAY_BATCH = 500


def alert_out(alert: Alert, overdue_after_s: float, now: datetime | None = None) -> AlertOut:
    base = f"{API_PREFIX}"
    evidence = AlertEvidence(
        image_url=f"{base}/alerts/{alert.id}/image" if alert.has_image else None,
        crop_url=f"{base}/events/{alert.access_event_id}/crop" if alert.access_event_id else None,
        trajectory_url=f"{base}/throws/{alert.throw_id}/image" if alert.throw_id else None,
        clip_url=f"{base}/throws/{alert.throw_id}/clip" if alert.throw_id else None)

    def actor(a: Actor | None) -> ActorOut | None:
        return None if a is None else ActorOut(key_id=a.key_id, label=a.label)

    return AlertOut(
        id=alert.id, kind=alert.kind, severity=alert.severity, status=alert.status,
        source=AlertSourceIn(type=alert.source.type, id=alert.source.id), message=alert.message, count=alert.count,
        first_at=alert.first_at, last_at=alert.last_at, access_event_id=alert.access_event_id,
        camera_event_id=alert.camera_event_id, throw_id=alert.throw_id, evidence=evidence,
        acked_at=alert.acked_at, acked_by=actor(alert.acked_by), ack_note=alert.ack_note,
        resolved_at=alert.resolved_at, resolved_by=actor(alert.resolved_by), resolve_note=alert.resolve_note,
        seconds_to_ack=alert.seconds_to(alert.acked_at), seconds_to_resolve=alert.seconds_to(alert.resolved_at),
        overdue=alert.overdue(now or datetime.now(UTC), overdue_after_s))


def _overdue_after(services: Services) -> float:
    return services.settings.alert_overdue_min * 60


def _actor(key: ApiKey) -> Actor:
    return Actor(key.id, key.label)


@router.post("", status_code=201, response_model=AlertOut, responses=responses(422),
             summary="Raise an alert from another system (smoke, water, an operator's call)")
async def raise_alert(body: AlertCreate, services: ServicesDep, key: RaiserKey) -> AlertOut:
    if body.kind in DEFAULT_SEVERITY:
        raise ApiError(422, f"kind {body.kind!r} is raised by gatewatch itself; use a kind of your own",
                       reason="reserved_kind")
    image = None
    if body.image is not None:
        try:
            image = base64.b64decode(body.image, validate=True)
            decode_image(image, max_bytes=services.settings.max_upload_bytes, max_pixels=services.settings.max_pixels)
        except (ValueError, ImageError) as exc:  # binascii.Error, non-ASCII text, a bad picture
            raise ApiError(422, f"image: {exc}", reason="bad_image") from None
    incident = None if body.incident is None else f"external:{key.id}:{body.incident}"
    try:
        new = NewAlert(body.kind, Source(body.source.type, body.source.id), body.message, body.severity, incident,
                       image_jpeg=image)
    except AlertError as exc:  # e.g. a message of control characters only
        raise ApiError(422, str(exc), reason="invalid_request") from None
    change = await run_in_threadpool(services.alerts.raise_alert, new)
    return alert_out(change.alert, _overdue_after(services))


@router.get("", response_model=AlertPage, summary="Alerts, newest first")
async def list_alerts(
        services: ServicesDep, _: GuardKey,
        kind: Annotated[str | None, Query(max_length=40)] = None,
        status: Annotated[Status | None, Query()] = None,
        severity: Annotated[Severity | None, Query()] = None,
        source_type: Annotated[SourceType | None, Query()] = None,
        source_id: Annotated[str | None, Query(max_length=100)] = None,
        since: Annotated[Instant | None, Query(description="last seen at or after, with timezone")] = None,
        until: Annotated[Instant | None, Query(description="first seen before, with timezone")] = None,
        overdue: Annotated[bool | None, Query(description="only those (not) overdue")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=20, description="a next_cursor")] = None,
) -> AlertPage:
    before = None
    if cursor is not None:
        if not cursor.isdigit() or not 1 <= int(cursor) <= MAX_ID:
            raise ApiError(422, "cursor: not a cursor returned by this endpoint", reason="invalid_request")
        before = int(cursor)
    where = AlertFilter(kind, status, severity, source_type, source_id, since, until)
    alerts = await run_in_threadpool(lambda: services.alerts.list(where, limit=limit, before_id=before))
    out = [alert_out(a, _overdue_after(services)) for a in alerts]
    page = AlertPage(alerts=[a for a in out if overdue is None or a.overdue == overdue],
                     next_cursor=str(alerts[-1].id) if len(alerts) == limit else None)
    return page


def _resume_from(services: ServicesDep, _: GuardKey,
                 last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
                 after: Annotated[int | None, Query(ge=0, le=MAX_ID, description="like Last-Event-ID")] = None,
                 ) -> int:
    """The sequence to send changes after; checked before the stream starts, so refusals are 4xx."""
    if last_event_id is not None:
        if not last_event_id.isdigit():
            raise ApiError(422, "Last-Event-ID: not an id sent by this stream", reason="invalid_request")
        return int(last_event_id)
    return services.alerts.last_seq() if after is None else after  # a new screen: from now on


@router.get("/stream", response_class=EventSourceResponse,
            summary="Server-sent events of every alert change; resumes after Last-Event-ID")
async def stream(services: ServicesDep, seq: Annotated[int, Depends(_resume_from)]) -> AsyncIterator[ServerSentEvent]:
    feed, keepalive = services.alert_feed, services.settings.commands_keepalive_s
    yield ServerSentEvent(comment="connected", retry=1000)
    while not feed.closed:
        waiter = feed.waiter()
        changes = await run_in_threadpool(services.alerts.changes_after, seq, _REPLAY_BATCH)
        for change in changes:
            yield ServerSentEvent(event=change.type, id=str(change.seq),
                                  data=alert_out(change.alert, _overdue_after(services)))
            seq = change.seq
        if changes:
            continue
        try:
            await asyncio.wait_for(waiter.wait(), keepalive)
        except TimeoutError:
            yield ServerSentEvent(comment="ping")


@router.get("/{alert_id}", response_model=AlertOut, responses=responses(404), summary="One alert")
async def get_alert(alert_id: AlertId, services: ServicesDep, _: GuardKey) -> AlertOut:
    return alert_out(await run_in_threadpool(services.alerts.get, alert_id), _overdue_after(services))


@router.get("/{alert_id}/image", response_class=Response, summary="The snapshot sent with an alert",
            responses={**responses(404), 200: {"content": {"image/jpeg": {"schema": {"type": "string",
                                                                                    "format": "binary"}}}}})
async def alert_image(alert_id: AlertId, services: ServicesDep, _: GuardKey) -> Response:
    return Response(await run_in_threadpool(services.alerts.image, alert_id), media_type="image/jpeg")


async def _step(services: Services, fn, alert_id: int, *args: object) -> AlertOut:
    try:
        change = await run_in_threadpool(fn, alert_id, *args)
    except AlertStateError as exc:
        raise ApiError(409, str(exc), reason="alert_state") from None
    alert = change.alert
    seconds = alert.seconds_to(alert.acked_at if change.type == "acknowledged" else alert.resolved_at)
    if seconds is not None:
        services.metrics.alert_response.labels(alert.kind, change.type).observe(seconds)
    return alert_out(alert, _overdue_after(services))


@router.post("/{alert_id}/ack", response_model=AlertOut, responses=responses(404, 409),
             summary="Acknowledge: a guard is on it")
async def acknowledge(alert_id: AlertId, services: ServicesDep, key: GuardKey,
                      body: AlertNote | None = None) -> AlertOut:
    return await _step(services, services.alerts.acknowledge, alert_id, _actor(key), body and body.note)


@router.post("/{alert_id}/resolve", response_model=AlertOut, responses=responses(404, 409),
             summary="Resolve, with a note of what was done")
async def resolve(alert_id: AlertId, body: AlertResolve, services: ServicesDep, key: GuardKey) -> AlertOut:
    return await _step(services, services.alerts.resolve, alert_id, _actor(key), body.note)
