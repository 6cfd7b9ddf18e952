"""Cameras through the API (TestClient, real SQLite and camera files in a temp dir): CRUD with its
validation errors, persistence across a restart, a camera that cannot be opened recorded offline for
guards, camera files checked at start, metrics and health; liveness on the photo endpoint."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ADMIN_KEY, service_client
from fastapi.testclient import TestClient
from spoof_renders import screen_replay

from api.live import CameraError
from api.settings import SettingsError, load_settings
from vision.faces.analyzer import FaceAnalyzer

ADMIN = ADMIN_KEY
A = {"X-API-Key": ADMIN}
DEAD = "rtsp://127.0.0.1:9/stream"  # nothing listens on the discard port: the camera cannot be opened


@pytest.fixture()
def client(tmp_path: Path, analyzer: FaceAnalyzer) -> Iterator[TestClient]:
    with service_client(tmp_path, analyzer) as c:
        yield c


def _gate(c: TestClient, name: str = "Main") -> dict:
    r = c.post("/api/v1/gates", json={"name": name, "kind": "main"}, headers=A)
    assert r.status_code == 201, r.text
    return r.json()


def _wait_for(c: TestClient, path: str, found: object, headers: dict, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        body = c.get(path, headers=headers).json()
        if found(body):  # type: ignore[operator]
            return body
        assert time.monotonic() < deadline, f"{path}: still {body}"
        time.sleep(0.1)


def test_camera_crud_and_validation(client: TestClient, tmp_path: Path) -> None:
    c = client
    gate = _gate(c)
    camera = {"id": "main-gate", "role": "gate", "source": DEAD, "gate_id": gate["id"]}
    r = c.post("/api/v1/cameras", json=camera, headers=A)
    assert r.status_code == 201, r.text
    assert r.json()["status"]["running"] is True and r.json()["gate_id"] == gate["id"]
    assert (tmp_path / "cameras" / "main-gate.yaml").is_file()

    assert c.post("/api/v1/cameras", json=camera, headers=A).json()["reason"] == "duplicate"
    assert c.post("/api/v1/cameras", json=camera, headers=A).status_code == 409
    for body, status, reason in [
        ({**camera, "id": "other", "gate_id": 999}, 422, "unknown_gate"),
        ({**camera, "id": "other", "gate_id": None}, 422, "unknown_gate"),
        ({**camera, "id": "other", "source": str(tmp_path / "missing.mp4")}, 422, "bad_source"),
        ({**camera, "id": "../etc"}, 422, "invalid_request"),
        ({**camera, "id": "other", "role": "lift"}, 422, "invalid_request"),
        ({**camera, "id": "other", "zoom": 2}, 422, "invalid_request"),
    ]:
        r = c.post("/api/v1/cameras", json=body, headers=A)
        assert (r.status_code, r.json()["reason"]) == (status, reason), (body, r.text)
    assert not (tmp_path / "cameras" / "other.yaml").exists()

    gate_key = {"X-API-Key": gate["api_key"]}
    assert c.get("/api/v1/cameras", headers=gate_key).status_code == 403
    assert [x["id"] for x in c.get("/api/v1/cameras", headers=A).json()] == ["main-gate"]

    # A camera that cannot be opened goes offline, recorded as an alert for guards.
    guard = {"X-API-Key": c.post("/api/v1/keys", json={"role": "guard"}, headers=A).json()["key"]}
    events = _wait_for(c, "/api/v1/camera-events", lambda b: b["events"], guard)["events"]
    assert events[0]["camera_id"] == "main-gate" and events[0]["type"] == "camera_offline"
    assert events[0]["alert"] is True and events[0]["gate_id"] == gate["id"] and "cannot open" in events[0]["reason"]
    assert c.get("/api/v1/cameras/main-gate", headers=A).json()["status"]["online"] is False

    other_gate = _gate(c, "Side")
    moved = {**camera, "gate_id": other_gate["id"], "source": DEAD + "2"}
    r = c.put("/api/v1/cameras/main-gate", json=moved, headers=A)
    assert r.status_code == 200 and r.json()["gate_id"] == other_gate["id"], r.text
    assert c.put("/api/v1/cameras/main-gate", json={**moved, "id": "x"}, headers=A).status_code == 422
    assert c.put("/api/v1/cameras/nope", json={**moved, "id": "nope"}, headers=A).status_code == 404

    assert c.delete(f"/api/v1/gates/{other_gate['id']}", headers=A).json()["reason"] == "gate_in_use"
    assert c.delete(f"/api/v1/gates/{gate['id']}", headers=A).status_code == 204  # no camera left on it

    text = c.get("/metrics").text
    assert 'gatewatch_camera_online{camera_id="main-gate"} 0.0' in text
    assert 'gatewatch_camera_events_total{camera_id="main-gate",type="camera_offline"}' in text
    assert 'gatewatch_camera_frames_decoded_total{camera_id="main-gate"} 0.0' in text
    health = c.get("/healthz").json()
    assert (health["cameras"], health["cameras_online"], health["liveness"]) == (1, 0, "off")

    assert c.delete("/api/v1/cameras/main-gate", headers=A).status_code == 204
    assert c.get("/api/v1/cameras/main-gate", headers=A).status_code == 404
    assert c.delete("/api/v1/cameras/main-gate", headers=A).status_code == 404
    assert not (tmp_path / "cameras" / "main-gate.yaml").exists()


def test_cameras_survive_a_restart_and_bad_files_stop_the_start(tmp_path: Path, analyzer: FaceAnalyzer) -> None:
    with service_client(tmp_path, analyzer) as c:
        gate = _gate(c)
        facade = {"id": "tower-a", "role": "facade", "source": DEAD,
                  "facade": {"homography": [[10, 0, 0], [0, -10, 500], [0, 0, 1]], "floors": 30, "columns": 4}}
        assert c.post("/api/v1/cameras", json=facade, headers=A).status_code == 201
        camera = {"id": "door-1", "role": "door", "source": DEAD, "gate_id": gate["id"]}
        assert c.post("/api/v1/cameras", json=camera, headers=A).status_code == 201
    with service_client(tmp_path, analyzer) as c:
        cameras = {x["id"]: x for x in c.get("/api/v1/cameras", headers=A).json()}
        assert set(cameras) == {"door-1", "tower-a"}
        assert cameras["door-1"]["status"]["running"] and cameras["tower-a"]["status"]["running"]  # facade: throws
        assert cameras["tower-a"]["facade"]["floors"] == 30

    folder = tmp_path / "cameras"
    (folder / "door-2.yaml").write_text("id: door-3\nrole: door\nsource: 0\ngate_id: 1\n")
    with pytest.raises(SettingsError, match=r"door-2\.yaml"):
        load_settings(data_dir=tmp_path)
    (folder / "door-2.yaml").write_text("id: door-2\nrole: door\nsource: 0\ngate_id: 42\n")
    with pytest.raises(CameraError, match=r"door-2\.yaml: gate_id 42"), service_client(tmp_path, analyzer):
        pass


def test_liveness_on_the_photo_endpoint(tmp_path: Path, analyzer: FaceAnalyzer, faces_dir: Path,
                                        shared_models: Path) -> None:
    """A resident's photo re-shown on a phone screen is a spoof: deny with an alert, on record."""
    photo_path = sorted((faces_dir / "rose_leslie").glob("*.jpg"))[0]
    image = cv2.imread(str(photo_path))
    zoom = 640 / max(image.shape[:2])
    image = cv2.resize(image, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_AREA) if zoom < 1 else image
    replay = cv2.imencode(".jpg", screen_replay(image, np.random.default_rng(0)))[1].tobytes()
    with service_client(tmp_path, analyzer, liveness="required") as c:
        assert c.get("/healthz").json()["liveness"] == "ok"
        gate = _gate(c)
        resident = c.post("/api/v1/residents", json={"name": "rose_leslie"}, headers=A).json()
        r = c.post(f"/api/v1/residents/{resident['id']}/faces", files={"file": ("p.jpg", photo_path.read_bytes())},
                   headers=A)
        assert r.status_code == 201, r.text
        r = c.post(f"/api/v1/gates/{gate['id']}/access", files={"file": ("p.jpg", replay, "image/jpeg")},
                   headers={"X-API-Key": gate["api_key"]}).json()
        assert (r["decision"], r["reason"]) == ("deny", "spoof"), r
        event = c.get("/api/v1/events", headers=A).json()["events"][0]
        assert event["alert"] is True and event["liveness"] < 0.5 and event["camera_id"] is None


def test_required_liveness_without_a_model_denies_everything(tmp_path: Path, analyzer: FaceAnalyzer,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "no-models"
    empty.mkdir()
    monkeypatch.setenv("GATEWATCH_MODEL_MIRROR", str(empty))
    monkeypatch.setenv("GATEWATCH_MODEL_CACHE", str(empty))
    photo = np.full((240, 320, 3), 128, np.uint8)
    with service_client(tmp_path / "data", analyzer, liveness="required") as c:
        health = c.get("/healthz").json()
        assert (health["status"], health["liveness"]) == ("degraded", "unavailable")
        gate = _gate(c)
        r = c.post(f"/api/v1/gates/{gate['id']}/access",
                   files={"file": ("p.jpg", cv2.imencode(".jpg", photo)[1].tobytes(), "image/jpeg")},
                   headers={"X-API-Key": gate["api_key"]}).json()
        assert (r["decision"], r["reason"]) == ("deny", "liveness_unavailable")  # not "error": nothing crashed
        event = c.get("/api/v1/events", headers=A).json()["events"][0]
        assert (event["id"], event["reason"]) == (r["event_id"], "liveness_unavailable")
        assert (f'gatewatch_access_decisions_total{{decision="deny",gate_id="{gate["id"]}",'
                f'reason="liveness_unavailable"}} 1.0') in c.get("/metrics", headers=A).text
    with service_client(tmp_path / "data", analyzer, liveness="if_available") as c:
        health = c.get("/healthz").json()
        assert (health["status"], health["liveness"]) == ("ok", "unavailable")
