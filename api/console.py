"""The guard console: one page for the guard room's screen, at /console.

A guard (or admin) logs in once with their key through the form; the service answers with an
HttpOnly, SameSite=Strict session cookie (api/auth.py keeps the sessions) and the page then uses
the ordinary API with it: the alert list and its live stream, acknowledge and resolve, cameras,
access decisions. The page's own files are plain JavaScript and CSS in api/console/, served from
here; nothing is loaded from elsewhere.
"""

from __future__ import annotations

import hmac
import html
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from api.auth import CSRF_HEADER, SESSION_COOKIE, console_sessions, session_key
from api.services import ServicesDep

router = APIRouter(prefix="/console", include_in_schema=False)
STATIC = Path(__file__).with_name("console")
_CONSOLE_ROLES = frozenset({"guard", "admin"})
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make the login post's Origin "null"
    "X-Content-Type-Options": "nosniff",
}
_FILES = {"console.js": "text/javascript", "console.css": "text/css"}

_LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>gatewatch guard console: log in</title><link rel="stylesheet" href="/console/console.css"></head>
<body class="login"><main class="login-box">
<h1>gatewatch guard console</h1>
<form method="post" action="/console/login" autocomplete="off">
<label for="key">Guard key</label>
<input id="key" name="key" type="password" required autofocus>
<button id="login" type="submit">Log in</button>
</form>
{error}
</main></body></html>
"""


def _login_page(error: str | None = None, status_code: int = 200) -> HTMLResponse:
    shown = f'<p class="error" id="login-error">{html.escape(error)}</p>' if error else ""
    return HTMLResponse(_LOGIN.format(error=shown), status_code=status_code, headers=_HEADERS)


def _same_origin(request: Request) -> bool:
    """A form posted from another site (login CSRF) carries that site's Origin."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host")


@router.get("", response_class=HTMLResponse)
async def console(request: Request, services: ServicesDep) -> HTMLResponse:
    found = await run_in_threadpool(session_key, request, services)
    if found is None:
        return _login_page()
    session, key = found
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    page = (page.replace("{{csrf}}", html.escape(session.csrf))
                .replace("{{who}}", html.escape(key.label or f"{key.role} key {key.prefix}…"))
                .replace("{{role}}", html.escape(key.role)))
    return HTMLResponse(page, headers=_HEADERS)


@router.post("/login")
async def login(request: Request, services: ServicesDep, key: Annotated[str, Form(max_length=200)] = "") -> Response:
    if not _same_origin(request):
        return _login_page("log in from the console's own page", 403)
    record = await run_in_threadpool(services.store.key_for, key.strip()) if key.strip() else None
    if record is None:
        return _login_page("unknown or revoked key", 401)
    if record.role not in _CONSOLE_ROLES:
        return _login_page(f"a {record.role} key cannot open the guard console; use a guard key", 403)
    sessions = console_sessions(request)
    token, _ = sessions.open(record.id)
    response = RedirectResponse("/console", status_code=303, headers=_HEADERS)
    response.set_cookie(SESSION_COOKIE, token, max_age=int(sessions.ttl_s), path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


@router.post("/logout")
async def logout(request: Request, csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
    sessions = console_sessions(request)
    token = request.cookies.get(SESSION_COOKIE)
    session = sessions.get(token)
    if session is not None:
        presented = csrf or request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(presented.encode(), session.csrf.encode()):
            return Response("logging out needs the session's CSRF token", status_code=403, headers=_HEADERS)
        sessions.close(token)
    response = RedirectResponse("/console", status_code=303, headers=_HEADERS)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/{name}")
async def static_file(name: str) -> Response:
    if name not in _FILES:
        return Response("not found", status_code=404)
    return FileResponse(STATIC / name, media_type=_FILES[name], headers={"Cache-Control": "no-cache"})
