"""Schemathesis against the live service's /openapi.json, with an admin key: no request it
generates may get a 5xx, or a status, content type or body the document does not declare."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.settings import Settings
from vision.faces.analyzer import build_analyzer

ADMIN = "schema-admin-key-0123456789"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, shared_models: Path) -> Iterator[str]:
    settings_ = Settings(data_dir=tmp_path_factory.mktemp("schema"), admin_key=ADMIN, timezone="UTC",
                         rate_limit_burst=100_000, rate_limit_per_minute=1_000_000)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings_, analyzer=build_analyzer("open")),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    # Something to find for the generated ids: a gate, a resident, a guard key.
    headers = {"X-API-Key": ADMIN}
    httpx.post(f"{url}/api/v1/gates", json={"name": "Main", "kind": "main"}, headers=headers)
    httpx.post(f"{url}/api/v1/residents", json={"name": "Someone"}, headers=headers)
    httpx.post(f"{url}/api/v1/keys", json={"role": "guard"}, headers=headers)
    yield url
    server.should_exit = True
    thread.join(10)


def test_no_server_errors_and_no_undocumented_responses(base_url: str) -> None:
    """Every operation, each with a few dozen generated requests (schemathesis's pytest plugin
    does not run on this pytest, so hypothesis drives each operation's strategy directly)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.endswith(("/commands", "/alerts/stream")):
            continue  # streams that stay open by design: tests/test_commands.py, tests/test_alerts.py

        @given(case=operation.as_strategy())
        @settings(max_examples=100, deadline=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck), database=None)
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={**(case.headers or {}), "X-API-Key": ADMIN}, checks=CHECKS)

        try:
            call()
        except Exception as exc:  # every operation is tried; all failures are reported
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
