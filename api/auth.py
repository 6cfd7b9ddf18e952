"""API keys: who is calling, what their role allows, and how often they may call.

Keys travel as `X-API-Key: <key>` or `Authorization: Bearer <key>`. Every request looks its key up
in SQLite (by sha256, an indexed row), so a revoked key stops working at once, in every worker.
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from api.services import ServicesDep
from gates.service_store import ApiKey, Role

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")
_bearer = HTTPBearer(auto_error=False, description="the same API key as a bearer token")


def _caller(services: ServicesDep, header_key: Annotated[str | None, Security(_api_key_header)],
            bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> ApiKey:
    presented = header_key or (bearer.credentials if bearer else None)
    challenge = {"WWW-Authenticate": 'Bearer realm="gatewatch"'}
    if not presented:
        raise ApiError(401, "missing API key: send it as X-API-Key: <key> or Authorization: Bearer <key>",
                       reason="no_key", headers=challenge)
    key = services.store.key_for(presented)
    if key is None:
        raise ApiError(401, "unknown or revoked API key", reason="bad_key", headers=challenge)
    wait = services.limiter.retry_after(key.id)
    if wait is not None:
        raise ApiError(429, f"rate limit of this key exceeded; retry in {wait:.1f} s", reason="rate_limited",
                       headers={"Retry-After": str(math.ceil(wait))})
    return key


def require(*roles: Role):
    """A dependency admitting keys of these roles (admin is always admitted)."""
    allowed = {"admin", *roles}

    def dependency(key: Annotated[ApiKey, Depends(_caller)]) -> ApiKey:
        if key.role not in allowed:
            raise ApiError(403, f"a {key.role} key may not do this; it needs the role "
                                f"{' or '.join(sorted(allowed))}", reason="forbidden")
        return key

    return dependency


AdminKey = Annotated[ApiKey, Depends(require("admin"))]
