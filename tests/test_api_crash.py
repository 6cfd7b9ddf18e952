"""A real `gatewatch serve` killed with SIGKILL in the middle of enrolments: after a restart,
everything it acknowledged with 2xx is there, and the FAISS index agrees with SQLite."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from gates.gallery import DB_NAME

ADMIN = "crash-admin-key-0123456789"
A = {"X-API-Key": ADMIN}
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(data_dir: Path, port: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "GATEWATCH_ADMIN_KEY": ADMIN}
    proc = subprocess.Popen([sys.executable, "-m", "gatewatch.cli", "serve", "--data-dir", str(data_dir),
                             "--port", str(port), "--log-level", "warning"], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, "gatewatch serve exited at start"
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail("gatewatch serve did not answer /healthz within 90 s")


def test_sigkill_during_enrolment_loses_nothing_acknowledged(tmp_path: Path, faces_dir: Path) -> None:
    photos = [sorted(d.glob("*.jpg"))[0] for d in sorted(faces_dir.iterdir()) if d.is_dir()]
    port = _free_port()
    proc, url = _serve(tmp_path, port)
    residents: set[int] = set()
    faces: dict[int, tuple[int, Path]] = {}  # face_id -> (resident_id, photo), as acknowledged
    stop = threading.Event()

    def enrol_forever() -> None:
        with httpx.Client(base_url=url, headers=A, timeout=30) as client:
            i = 0
            while not stop.is_set():
                try:
                    r = client.post("/api/v1/residents", json={"name": f"person {i}"})
                    if r.status_code == 201:
                        rid = r.json()["id"]
                        residents.add(rid)
                        path = photos[i % len(photos)]
                        r = client.post(f"/api/v1/residents/{rid}/faces",
                                        files={"file": (path.name, path.read_bytes(), "image/jpeg")})
                        if r.status_code == 201:
                            faces[r.json()["face_id"]] = (rid, path)
                except httpx.TransportError:
                    return
                i += 1

    worker = threading.Thread(target=enrol_forever)
    worker.start()
    deadline = time.monotonic() + 120
    while len(faces) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.13)  # somewhere inside a request
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    stop.set()
    worker.join(30)
    assert len(faces) >= 6

    proc, url = _serve(tmp_path, port)
    try:
        listed = {p["id"]: set(p["face_ids"]) for p in httpx.get(f"{url}/api/v1/residents", headers=A).json()}
        assert residents <= listed.keys()
        for face_id, (rid, _) in faces.items():
            assert face_id in listed[rid]
        with sqlite3.connect(tmp_path / DB_NAME) as db:
            stored = db.execute("SELECT count(*) FROM faces").fetchone()[0]
        assert httpx.get(f"{url}/healthz").json()["gallery_templates"] == stored
        # The rebuilt index answers for an acknowledged face.
        rid, path = faces[max(faces)]
        found = httpx.post(f"{url}/api/v1/identify", headers=A,
                           files={"file": (path.name, path.read_bytes(), "image/jpeg")}).json()["faces"]
        assert found and found[0]["match"]["resident_id"] == rid
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
