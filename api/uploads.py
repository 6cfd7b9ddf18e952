"""Image uploads: bounded in bytes before they are read, typed, then decoded with pixel limits.

The body limit is enforced while the request streams in (BodyLimit), so a client cannot make the
server spool gigabytes before a handler gets to look at the size. (FastAPI's own max_body_size
answers in plain text; this one answers with the service's JSON error body.)
"""

from __future__ import annotations

import json

from fastapi import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ApiError

# Room for the multipart boundaries and part headers around the file itself.
MULTIPART_OVERHEAD = 64 * 1024


async def read_image(file: UploadFile, max_bytes: int) -> bytes:
    content_type = (file.content_type or "").split(";")[0].strip().lower()
    if not (content_type.startswith("image/") or content_type == "application/octet-stream"):
        raise ApiError(415, f"the file part has content type {content_type or 'none'!r}; send an image/* "
                            "or application/octet-stream part", reason="unsupported_media_type")
    data = await file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ApiError(413, f"the image is larger than {max_bytes} bytes", reason="too_large")
    return data


class BodyLimit:
    """ASGI middleware: 413 for any request body over the upload limit (plus multipart framing),
    from its Content-Length at once, or as soon as a chunked body grows past it."""

    def __init__(self, app: ASGIApp, max_upload_bytes: int) -> None:
        self.app = app
        self.limit = max_upload_bytes + MULTIPART_OVERHEAD

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            body = json.dumps({"detail": self._message(), "reason": "too_large"}).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                # An HTTPException passes through FastAPI's body parsing to the error handlers.
                raise ApiError(413, self._message(), reason="too_large")
            return message

        await self.app(scope, counting_receive, send)

    def _message(self) -> str:
        return f"request body larger than {self.limit} bytes"
