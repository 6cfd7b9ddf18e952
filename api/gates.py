"""Gates: the doors the service decides for, each created with its controller's key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from api.auth import AdminKey
from api.errors import AUTHENTICATED, ApiError, responses
from api.live import CameraInUseError
from api.schemas import API_PREFIX, MAX_ID, GateCreate, GateCreated, GateOut
from api.services import ServicesDep
from gates.service_store import Gate

router = APIRouter(prefix=f"{API_PREFIX}/gates", tags=["gates"], responses=responses(*AUTHENTICATED))
GateId = Annotated[int, Path(ge=1, le=MAX_ID)]


def gate_out(gate: Gate) -> GateOut:
    return GateOut(id=gate.id, name=gate.name, building=gate.building, kind=gate.kind,
                   created_at=gate.created_at)


@router.post("", status_code=201, response_model=GateCreated, summary="Add a gate and issue its key")
async def create_gate(body: GateCreate, services: ServicesDep, _: AdminKey) -> GateCreated:
    gate, key = await run_in_threadpool(services.store.create_gate, body.name, body.building, body.kind)
    return GateCreated(**gate_out(gate).model_dump(), api_key=key)


@router.get("", response_model=list[GateOut], summary="List gates")
async def list_gates(services: ServicesDep, _: AdminKey) -> list[GateOut]:
    return [gate_out(g) for g in await run_in_threadpool(services.store.list_gates)]


@router.get("/{gate_id}", response_model=GateOut, responses=responses(404), summary="One gate")
async def get_gate(gate_id: GateId, services: ServicesDep, _: AdminKey) -> GateOut:
    return gate_out(await run_in_threadpool(services.store.get_gate, gate_id))


@router.delete("/{gate_id}", status_code=204, responses=responses(404, 409),
               summary="Remove a gate; its keys are revoked and residents lose it from their allowed gates")
async def delete_gate(gate_id: GateId, services: ServicesDep, _: AdminKey) -> None:
    try:
        await run_in_threadpool(services.live.delete_gate, gate_id)
    except CameraInUseError as exc:
        raise ApiError(409, str(exc), reason="gate_in_use") from None
