"""Unlock delivery to gate controllers: a server-sent event stream each controller keeps open.

A controller connects with its gate key to `GET /gates/{id}/commands` and receives one `unlock`
event (id = the event id of the record) for every unlock decided from its gate's cameras, after the
event is committed. Idle streams carry a ping comment every `commands_keepalive_s`, so proxies keep
them open and a controller notices a dead connection. Missed unlocks are not replayed on reconnect
(Last-Event-ID is ignored): a door that opens late, for someone who has gone, is worse than one that
does not open; the person asks again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api.auth import require
from api.errors import AUTHENTICATED, ApiError, responses
from api.schemas import API_PREFIX, MAX_ID
from api.services import ServicesDep
from gates.service_store import ApiKey

router = APIRouter(prefix=API_PREFIX, tags=["gates"], responses=responses(*AUTHENTICATED))

def _controller(gate_id: Annotated[int, Path(ge=1, le=MAX_ID)], services: ServicesDep,
                key: Annotated[ApiKey, Depends(require("gate"))]) -> int:
    """Checked before the stream starts, so that refusals are plain 4xx answers."""
    if key.role == "gate" and key.gate_id != gate_id:
        raise ApiError(403, f"this key belongs to gate {key.gate_id}, not gate {gate_id}", reason="wrong_gate")
    services.store.get_gate(gate_id)
    return gate_id


@router.get("/gates/{gate_id}/commands", response_class=EventSourceResponse, responses=responses(404),
            summary="Server-sent events: an `unlock` for every unlock decided from this gate's cameras")
async def commands(gate_id: Annotated[int, Depends(_controller)],
                   services: ServicesDep) -> AsyncIterator[ServerSentEvent]:
    hub = services.live.commands
    queue = hub.subscribe(gate_id)
    keepalive = services.settings.commands_keepalive_s
    try:
        yield ServerSentEvent(comment="connected", retry=1000)
        while True:
            try:
                command = await asyncio.wait_for(queue.get(), keepalive)
            except TimeoutError:
                yield ServerSentEvent(comment="ping")
                continue
            if command is None:
                return
            yield ServerSentEvent(event="unlock", id=str(command.event_id), data=command)
    finally:
        hub.unsubscribe(gate_id, queue)
