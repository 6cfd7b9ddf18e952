"""One error body for every 4xx/5xx the service sends, and the responses each route documents.

Clients (gate controllers, admin tools) get `{"detail": "..."}` with a message that says what is
wrong, plus a stable `reason` code where they can act on it (e.g. enrolment: too_blurry) and the
field problems of an invalid request.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from gates.alerts import UnknownAlertError
from gates.service_store import UnknownEventError, UnknownGateError, UnknownKeyError
from gates.store import UnknownFaceError, UnknownResidentError

log = logging.getLogger(__name__)


class FieldProblem(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    detail: str
    reason: str | None = None
    errors: list[FieldProblem] | None = None


class ApiError(HTTPException):
    def __init__(self, status_code: int, detail: str, *, reason: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code, detail, headers)
        self.reason = reason


_DESCRIPTIONS = {
    400: "Bad request", 401: "Missing, unknown or revoked API key", 403: "The key's role may not do this",
    404: "No such resource", 409: "Conflicts with the current state", 413: "Upload too large",
    415: "Not an image content type", 422: "Invalid request, or an image that cannot be used",
    429: "Rate limit of this key exceeded", 503: "Not ready",
}
AUTHENTICATED = (401, 403, 422, 429)


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Problem, "description": _DESCRIPTIONS[code]} for code in codes}


def _body(detail: str, reason: str | None = None, errors: list[FieldProblem] | None = None) -> dict:
    return Problem(detail=detail, reason=reason, errors=errors).model_dump(exclude_none=True)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONResponse(_body(detail, getattr(exc, "reason", None)), exc.status_code, headers=exc.headers)


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [FieldProblem(loc=[p for p in e.get("loc", ()) if isinstance(p, str | int)],
                           msg=e.get("msg", "")) for e in exc.errors()]
    summary = "; ".join(f"{'.'.join(map(str, f.loc))}: {f.msg}" for f in errors[:5])
    return JSONResponse(_body(f"invalid request: {summary}", "invalid_request", errors), 422)


async def _not_found(request: Request, exc: KeyError) -> JSONResponse:
    """Unknown ids raised by the stores: residents and faces carry the id, the others a message."""
    what = exc.args[0] if exc.args else "?"
    if isinstance(exc, UnknownResidentError):
        what = f"no resident with id {what}"
    elif isinstance(exc, UnknownFaceError):
        what = f"no face with id {what}"
    return JSONResponse(_body(str(what), "not_found"), 404)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(_body("internal error; nothing was changed by the failed step"), 500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    for unknown in (UnknownResidentError, UnknownFaceError, UnknownGateError, UnknownKeyError,
                    UnknownEventError, UnknownAlertError):
        app.add_exception_handler(unknown, _not_found)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
