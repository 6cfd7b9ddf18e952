"""API keys: who is calling, what their role allows, and how often they may call.

Keys travel as `X-API-Key: <key>` or `Authorization: Bearer <key>`. Every request looks its key up
in SQLite (by sha256, an indexed row), so a revoked key stops working at once, in every worker.

The guard console (api/console.py) logs in with a key once and then sends a session cookie: the
session maps a random token to the key's id (in this process's memory, never the key itself), the
key record is looked up again on every request (revocation still works at once), and any request
but GET/HEAD made with the cookie must carry the session's CSRF token in `X-CSRF-Token`.
"""

from __future__ import annotations

import hmac
import math
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from api.services import ServicesDep
from gates.service_store import ApiKey, Role

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")
_bearer = HTTPBearer(auto_error=False, description="the same API key as a bearer token")


SESSION_COOKIE = "gatewatch_console"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL_S = 12 * 3600
_SAFE_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class ConsoleSession:
    key_id: int
    csrf: str
    expires: float  # time.monotonic()


class ConsoleSessions:
    """The console's logged-in screens: random token -> key id, CSRF token and expiry."""

    def __init__(self, ttl_s: float = SESSION_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._sessions: dict[str, ConsoleSession] = {}

    def open(self, key_id: int) -> tuple[str, ConsoleSession]:
        token, now = secrets.token_urlsafe(32), time.monotonic()
        session = ConsoleSession(key_id, secrets.token_urlsafe(32), now + self.ttl_s)
        with self._lock:
            self._sessions = {t: s for t, s in self._sessions.items() if s.expires > now}  # forget expired ones
            self._sessions[token] = session
        return token, session

    def get(self, token: str | None) -> ConsoleSession | None:
        if not token:
            return None
        with self._lock:
            session = self._sessions.get(token)
            if session is not None and session.expires <= time.monotonic():
                del self._sessions[token]
                session = None
        return session

    def close(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)


_SESSIONS_LOCK = threading.Lock()


def console_sessions(request: Request) -> ConsoleSessions:
    """This app's sessions (one table per app, made on first use)."""
    state = request.app.state
    sessions = getattr(state, "console_sessions", None)
    if sessions is None:
        with _SESSIONS_LOCK:
            sessions = getattr(state, "console_sessions", None)
            if sessions is None:
                sessions = state.console_sessions = ConsoleSessions()
    return sessions


def session_key(request: Request, services: ServicesDep) -> tuple[ConsoleSession, ApiKey] | None:
    """The live session of this request's cookie and its key's current record, or None."""
    token = request.cookies.get(SESSION_COOKIE)
    sessions = console_sessions(request)
    session = sessions.get(token)
    if session is None:
        return None
    key = next((k for k in services.store.list_keys() if k.id == session.key_id), None)
    if key is None:  # revoked since the login
        sessions.close(token)
        return None
    return session, key


def _caller(request: Request, services: ServicesDep,
            header_key: Annotated[str | None, Security(_api_key_header)],
            bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> ApiKey:
    presented = header_key or (bearer.credentials if bearer else None)
    challenge = {"WWW-Authenticate": 'Bearer realm="gatewatch"'}
    if not presented and SESSION_COOKIE in request.cookies:
        found = session_key(request, services)
        if found is None:
            raise ApiError(401, "the console session has expired or its key was revoked; log in again",
                           reason="bad_key", headers=challenge)
        session, key = found
        if request.method not in _SAFE_METHODS and not hmac.compare_digest(
                request.headers.get(CSRF_HEADER, "").encode(), session.csrf.encode()):
            raise ApiError(403, f"a console request that changes something needs the session's {CSRF_HEADER}",
                           reason="forbidden")
    else:
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
