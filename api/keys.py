"""API keys: issued and revoked by admins; a key is shown once, at creation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from api.auth import AdminKey
from api.errors import AUTHENTICATED, ApiError, responses
from api.schemas import API_PREFIX, MAX_ID, KeyCreate, KeyCreated, KeyOut
from api.services import ServicesDep
from gates.service_store import ApiKey, LastAdminKeyError, UnknownGateError

router = APIRouter(prefix=f"{API_PREFIX}/keys", tags=["keys"], responses=responses(*AUTHENTICATED))
KeyId = Annotated[int, Path(ge=1, le=MAX_ID)]


def key_out(key: ApiKey) -> KeyOut:
    return KeyOut(id=key.id, role=key.role, gate_id=key.gate_id, prefix=key.prefix, created_at=key.created_at,
                  label=key.label)


@router.post("", status_code=201, response_model=KeyCreated, summary="Issue an API key")
async def create_key(body: KeyCreate, services: ServicesDep, _: AdminKey) -> KeyCreated:
    if body.gate_id is not None:
        try:
            await run_in_threadpool(services.store.get_gate, body.gate_id)
        except UnknownGateError as exc:
            raise ApiError(422, str(exc.args[0]), reason="unknown_gate") from None
    record, key = await run_in_threadpool(services.store.create_key, body.role, body.gate_id, body.label)
    return KeyCreated(**key_out(record).model_dump(), key=key)


@router.get("", response_model=list[KeyOut], summary="List API keys (never the keys themselves)")
async def list_keys(services: ServicesDep, _: AdminKey) -> list[KeyOut]:
    return [key_out(k) for k in await run_in_threadpool(services.store.list_keys)]


@router.delete("/{key_id}", status_code=204, responses=responses(404, 409),
               summary="Revoke an API key, effective at once")
async def delete_key(key_id: KeyId, services: ServicesDep, caller: AdminKey) -> None:
    if key_id == caller.id:
        raise ApiError(409, "a key cannot revoke itself; revoke it with another admin key", reason="own_key")
    try:
        await run_in_threadpool(services.store.delete_key, key_id)
    except LastAdminKeyError as exc:
        raise ApiError(409, str(exc), reason="last_admin_key") from None
