"""The gate service on a real port (uvicorn on a thread), for tests of what streams and restarts."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from conftest import ADMIN_KEY

from api.app import create_app
from api.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_service(data_dir: Path, analyzer, port: int | None = None, **settings: object) -> Iterator[str]:
    """The service's base URL while it runs; stopped (its streams closed) on exit."""
    settings.setdefault("liveness", "off")
    settings.setdefault("timezone", "UTC")
    port = port or free_port()
    app = create_app(Settings(data_dir=data_dir, admin_key=ADMIN_KEY, **settings), analyzer=analyzer)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


class SseReader:
    """Reads a server-sent event stream on a thread: events as dicts of their fields."""

    def __init__(self, url: str, key: str, last_event_id: str | None = None) -> None:
        self.events: list[dict[str, str]] = []
        self.comments: list[str] = []
        self.changed = threading.Condition()
        self._stop = threading.Event()
        headers = {"X-API-Key": key, **({"Last-Event-ID": last_event_id} if last_event_id else {})}
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()

    def _run(self, url: str, headers: dict[str, str]) -> None:
        try:
            with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(5, read=None)) as response:
                fields: dict[str, str] = {}
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    with self.changed:
                        if line.startswith(":"):
                            self.comments.append(line[1:].strip())
                        elif not line:
                            if "data" in fields:  # not a bare `retry:`
                                self.events.append(fields)
                            fields = {}
                        else:
                            name, _, value = line.partition(":")
                            fields[name] = value.removeprefix(" ")
                        self.changed.notify_all()
        except httpx.HTTPError:
            pass

    def wait(self, predicate, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def data(self) -> list[dict]:
        with self.changed:
            return [json.loads(e["data"]) for e in self.events if "data" in e]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
