"""The gate service through HTTP (TestClient, real SQLite files in a temp dir, real photos):
auth and keys, residents and faces, the access decision with every rule, events, bad input."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ADMIN_KEY, service_client
from fastapi.testclient import TestClient

from gates.gallery import DB_NAME
from vision.faces.analyzer import FaceAnalyzer

ADMIN = ADMIN_KEY
A = {"X-API-Key": ADMIN}


@pytest.fixture()
def client(tmp_path: Path, analyzer: FaceAnalyzer, faces_dir: Path) -> Iterator[TestClient]:
    with service_client(tmp_path, analyzer, retain_crops=True) as c:
        yield c


def photo(faces_dir: Path, person: str, i: int) -> bytes:
    return sorted((faces_dir / person).glob("*.jpg"))[i].read_bytes()


def upload(data: bytes, content_type: str = "image/jpeg") -> dict:
    return {"file": ("photo.jpg", data, content_type)}


def gate(c: TestClient, name: str = "Main") -> dict:
    r = c.post("/api/v1/gates", json={"name": name, "kind": "main"}, headers=A)
    assert r.status_code == 201, r.text
    return r.json()


def enrol(c: TestClient, faces_dir: Path, person: str, **body: object) -> dict:
    """With two photos, as enrolment asks: the first two it accepts, never the second photo (the
    usual probe)."""
    r = c.post("/api/v1/residents", json={"name": person, **body}, headers=A)
    assert r.status_code == 201, r.text
    resident = r.json()
    accepted = []
    for i in (0, *range(2, len(list((faces_dir / person).glob("*.jpg"))))):
        r = c.post(f"/api/v1/residents/{resident['id']}/faces", files=upload(photo(faces_dir, person, i)),
                   headers=A)
        if r.status_code == 201:
            accepted.append(r.json())
            if len(accepted) == 2:
                break
    assert accepted[-1]["templates"]["weak"] is False, accepted
    return resident


def knock(c: TestClient, g: dict, data: bytes, key: str | None = None) -> dict:
    r = c.post(f"/api/v1/gates/{g['id']}/access", files=upload(data),
               headers={"X-API-Key": key or g["api_key"]})
    assert r.status_code == 200, r.text
    return r.json()


def test_auth_roles_and_key_revocation(client: TestClient) -> None:
    c = client
    assert c.get("/api/v1/residents").status_code == 401
    assert c.get("/api/v1/residents", headers={"X-API-Key": "nope"}).json()["reason"] == "bad_key"
    assert c.get("/api/v1/residents", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
    g1, g2 = gate(c, "North"), gate(c, "South")
    guard = c.post("/api/v1/keys", json={"role": "guard"}, headers=A).json()
    G = {"X-API-Key": guard["key"]}
    assert c.get("/api/v1/events", headers=G).status_code == 200
    assert c.get("/api/v1/residents", headers=G).status_code == 403
    # A gate key opens only its own gate's endpoint.
    r = c.post(f"/api/v1/gates/{g2['id']}/access", files=upload(b"x"), headers={"X-API-Key": g1["api_key"]})
    assert r.status_code == 403 and r.json()["reason"] == "wrong_gate"
    assert c.get("/api/v1/events", headers={"X-API-Key": g1["api_key"]}).status_code == 403
    # Keys are listed without their secret; revocation is immediate.
    listed = c.get("/api/v1/keys", headers=A).json()
    assert {k["role"] for k in listed} == {"admin", "gate", "guard"} and all("key" not in k for k in listed)
    assert c.delete(f"/api/v1/keys/{guard['id']}", headers=A).status_code == 204
    assert c.get("/api/v1/events", headers=G).status_code == 401
    own = next(k for k in listed if k["role"] == "admin")
    assert c.delete(f"/api/v1/keys/{own['id']}", headers=A).status_code == 409
    assert c.post("/api/v1/keys", json={"role": "gate"}, headers=A).status_code == 422
    assert c.post("/api/v1/keys", json={"role": "gate", "gate_id": 999}, headers=A).status_code == 422
    # Deleting a gate revokes its key.
    assert c.delete(f"/api/v1/gates/{g1['id']}", headers=A).status_code == 204
    assert c.get("/api/v1/gates", headers={"X-API-Key": g1["api_key"]}).status_code == 401


def test_rate_limit_per_key(tmp_path: Path, analyzer: FaceAnalyzer) -> None:
    with service_client(tmp_path, analyzer, rate_limit_burst=3, rate_limit_per_minute=1) as c:
        codes = [c.get("/api/v1/gates", headers=A).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        assert int(c.get("/api/v1/gates", headers=A).headers["Retry-After"]) > 0


def test_enrolment_refuses_unusable_photos_with_a_reason(client: TestClient, faces_dir: Path,
                                                         shared_data: Path) -> None:
    c = client
    rid = c.post("/api/v1/residents", json={"name": "Kit", "unit": "2-101"}, headers=A).json()["id"]
    blank = cv2.imencode(".jpg", 128 * np.ones((480, 640, 3), "uint8"))[1].tobytes()
    r = c.post(f"/api/v1/residents/{rid}/faces", files=upload(blank), headers=A)
    assert r.status_code == 422 and r.json()["reason"] == "no_face"
    image = cv2.imdecode(np.frombuffer(photo(faces_dir, "kit_harington", 0), "uint8"), 1)
    tiny = cv2.imencode(".jpg", cv2.resize(image, None, fx=0.12, fy=0.12))[1].tobytes()
    r = c.post(f"/api/v1/residents/{rid}/faces", files=upload(tiny), headers=A)
    assert r.status_code == 422 and r.json()["reason"] in {"too_small", "no_face"}
    blurred = cv2.imencode(".jpg", cv2.GaussianBlur(image, (0, 0), 9))[1].tobytes()
    r = c.post(f"/api/v1/residents/{rid}/faces", files=upload(blurred), headers=A)
    assert r.status_code == 422 and r.json()["reason"] in {"too_blurry", "no_face"}
    groups = sorted((shared_data / "groups").glob("*.jpg")) if (shared_data / "groups").is_dir() else []
    if groups:
        r = c.post(f"/api/v1/residents/{rid}/faces", files=upload(groups[0].read_bytes()), headers=A)
        assert r.status_code == 422 and r.json()["reason"] in {"several_faces", "no_face"}
    assert c.get(f"/api/v1/residents/{rid}", headers=A).json()["face_ids"] == []


def test_bad_input_is_refused_with_a_message_and_nothing_written(client: TestClient, faces_dir: Path) -> None:
    c = client
    rid = c.post("/api/v1/residents", json={"name": "X"}, headers=A).json()["id"]
    url = f"/api/v1/residents/{rid}/faces"
    cases = [
        (upload(b"not an image"), 422, "bad_image"),
        (upload(b""), 422, "bad_image"),
        (upload(b"GIF89a" + b"\0" * 100, "text/plain"), 415, "unsupported_media_type"),
        (upload(b"\xff" * (8 * 1024 * 1024 + 1)), 413, "too_large"),
    ]
    for files, status, reason in cases:
        r = c.post(url, files=files, headers=A)
        assert (r.status_code, r.json().get("reason")) == (status, reason), r.text
    huge = c.post(url, files=upload(b"\xff" * (9 * 1024 * 1024)), headers=A)
    assert huge.status_code == 413 and "larger than" in huge.json()["detail"]
    r = c.post("/api/v1/residents", content=b'{"name": ', headers={**A, "content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["detail"]
    assert c.post("/api/v1/residents", json={"name": "Y", "colour": "red"}, headers=A).status_code == 422
    assert c.post("/api/v1/residents", json={"name": "  "}, headers=A).status_code == 422
    unknown_gate = c.post("/api/v1/residents", json={"name": "Z", "allowed_gates": [42]}, headers=A)
    assert unknown_gate.json()["reason"] == "unknown_gate"
    endless_pass = c.post("/api/v1/residents", json={"name": "V", "kind": "visitor"}, headers=A)
    assert endless_pass.json()["reason"] == "invalid_rule"
    assert c.get("/api/v1/residents/999", headers=A).status_code == 404
    assert c.delete(f"/api/v1/residents/{rid}/faces/999", headers=A).status_code == 404
    assert c.post("/api/v1/gates/999/access", files=upload(b"x"), headers=A).status_code == 404
    assert [p["name"] for p in c.get("/api/v1/residents", headers=A).json()] == ["X"]
    assert c.get("/api/v1/residents/X", headers=A).status_code == 422


def test_residents_unlock_only_where_allowed_and_deletion_removes_everything(
        client: TestClient, faces_dir: Path, tmp_path: Path) -> None:
    c = client
    north, south = gate(c, "North"), gate(c, "South")
    matt = enrol(c, faces_dir, "matt_damon", allowed_gates=[north["id"]])
    probe = photo(faces_dir, "matt_damon", 1)
    at_north = knock(c, north, probe)
    assert at_north["decision"] == "unlock"
    assert at_north["resident"] == {"id": matt["id"], "name": "matt_damon"}
    at_south = knock(c, south, probe)
    assert (at_south["decision"], at_south["reason"]) == ("deny", "not_allowed")
    # Admin keys may ask for any gate; PATCH changes the rule at once.
    r = c.patch(f"/api/v1/residents/{matt['id']}", json={"allowed_gates": None, "unit": "9-901"}, headers=A)
    assert r.status_code == 200 and r.json()["allowed_gates"] is None and r.json()["unit"] == "9-901"
    assert knock(c, south, probe, key=ADMIN)["decision"] == "unlock"
    events = c.get("/api/v1/events", headers=A).json()["events"]
    assert [e["decision"] for e in events] == ["unlock", "deny", "unlock"]
    assert all(e["crop_url"] for e in events)
    assert c.get(events[0]["crop_url"], headers=A).headers["content-type"] == "image/jpeg"
    # Deleting the resident removes faces, rule, crops and index vectors; events keep the record.
    assert c.delete(f"/api/v1/residents/{matt['id']}", headers=A).status_code == 204
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        counts = [db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("residents", "faces", "access_rules", "allowed_gates", "event_crops", "events")]
    assert counts == [0, 0, 0, 0, 0, 3]
    assert c.get("/healthz").json()["gallery_templates"] == 0
    assert knock(c, north, probe)["reason"] in {"unknown", "no_face"}


def test_time_windows(client: TestClient, faces_dir: Path) -> None:
    c = client
    g = gate(c)
    today = datetime.now(UTC).weekday()
    other_days = [d for d in range(7) if d != today]
    person = enrol(c, faces_dir, "katy_perry",
                   schedule=[{"days": other_days, "start": "00:00", "end": "23:59"}])
    probe = photo(faces_dir, "katy_perry", 1)
    assert knock(c, g, probe)["reason"] == "not_allowed"
    whole_day = [{"days": [today], "start": "00:00", "end": "23:59:59.999999"}]
    r = c.patch(f"/api/v1/residents/{person['id']}", json={"schedule": whole_day}, headers=A)
    assert r.status_code == 200
    assert knock(c, g, probe)["decision"] == "unlock"
    bad = [{"days": [today], "start": "22:00", "end": "06:00"}]
    r = c.patch(f"/api/v1/residents/{person['id']}", json={"schedule": bad}, headers=A)
    assert r.status_code == 422 and "midnight" in r.json()["detail"]


def test_visitor_passes(client: TestClient, faces_dir: Path) -> None:
    c = client
    g = gate(c)
    visitor = enrol(c, faces_dir, "leonardo_dicaprio", kind="visitor", entries_left=1)
    probe = photo(faces_dir, "leonardo_dicaprio", 1)
    assert knock(c, g, probe)["decision"] == "unlock"
    assert (second := knock(c, g, probe))["reason"] == "expired" and second["decision"] == "deny"
    assert c.get(f"/api/v1/residents/{visitor['id']}", headers=A).json()["entries_left"] == 0
    now = datetime.now(UTC)
    hour, day = timedelta(hours=1), timedelta(days=1)
    window = {"valid_from": (now - hour).isoformat(), "valid_until": (now + hour).isoformat(),
              "entries_left": None}
    assert c.patch(f"/api/v1/residents/{visitor['id']}", json=window, headers=A).status_code == 200
    assert knock(c, g, probe)["decision"] == "unlock"
    past = {"valid_from": (now - 2 * day).isoformat(), "valid_until": (now - day).isoformat()}
    assert c.patch(f"/api/v1/residents/{visitor['id']}", json=past, headers=A).status_code == 200
    assert knock(c, g, probe)["reason"] == "expired"
    assert c.patch(f"/api/v1/residents/{visitor['id']}", json={"valid_until": "2030-01-01T00:00:00"},
                   headers=A).status_code == 422  # no timezone
    # A visitor made a resident loses the pass limits.
    r = c.patch(f"/api/v1/residents/{visitor['id']}", json={"kind": "resident"}, headers=A).json()
    assert (r["kind"], r["valid_until"], r["entries_left"]) == ("resident", None, None)


def test_blocked_faces_never_unlock_and_raise_an_alert(client: TestClient, faces_dir: Path) -> None:
    c = client
    g = gate(c)
    enrol(c, faces_dir, "mark_zuckerberg", kind="blocked")
    for i in range(1, 4):
        result = knock(c, g, photo(faces_dir, "mark_zuckerberg", i))
        assert result["decision"] == "deny"
    guard = c.post("/api/v1/keys", json={"role": "guard"}, headers=A).json()["key"]
    alerts = c.get("/api/v1/events?alert=true", headers={"X-API-Key": guard}).json()["events"]
    assert alerts and all(e["reason"] == "blocked" and e["alert"] for e in alerts)


def test_events_filter_and_page(client: TestClient, faces_dir: Path) -> None:
    c = client
    g1, g2 = gate(c, "A"), gate(c, "B")
    blank = cv2.imencode(".jpg", 255 * np.ones((120, 160, 3), "uint8"))[1].tobytes()
    for g in (g1, g2, g1, g1):
        assert knock(c, g, blank)["reason"] == "no_face"
    page = c.get(f"/api/v1/events?gate_id={g1['id']}&limit=2", headers=A).json()
    assert len(page["events"]) == 2 and page["next_cursor"]
    rest = c.get(f"/api/v1/events?gate_id={g1['id']}&limit=2&cursor={page['next_cursor']}", headers=A).json()
    assert len(rest["events"]) == 1 and rest["next_cursor"] is None
    assert c.get("/api/v1/events?decision=unlock", headers=A).json()["events"] == []
    assert c.get("/api/v1/events?since=2999-01-01T00:00:00Z", headers=A).json()["events"] == []
    assert len(c.get("/api/v1/events?until=2999-01-01T00:00:00Z", headers=A).json()["events"]) == 4
    assert c.get("/api/v1/events?cursor=abc", headers=A).status_code == 422
    assert c.get("/api/v1/events?since=yesterday", headers=A).status_code == 422


def test_fails_secure_on_internal_errors(client: TestClient, faces_dir: Path, monkeypatch) -> None:
    c = client
    g = gate(c)
    enrol(c, faces_dir, "scarlett_johansson")
    gallery = c.app.state.services.gallery

    def broken(*args: object) -> None:
        raise RuntimeError("index on fire")

    monkeypatch.setattr(gallery, "identify", broken)
    result = knock(c, g, photo(faces_dir, "scarlett_johansson", 1))
    assert (result["decision"], result["reason"], result["resident"]) == ("deny", "error", None)
    assert result["event_id"] is not None
    event = c.get("/api/v1/events", headers=A).json()["events"][0]
    assert (event["id"], event["reason"]) == (result["event_id"], "error")


def test_identify_health_and_metrics(client: TestClient, faces_dir: Path) -> None:
    c = client
    enrol(c, faces_dir, "barack_obama")
    r = c.post("/api/v1/identify", files=upload(photo(faces_dir, "barack_obama", 1)), headers=A)
    faces = r.json()["faces"]
    assert faces and faces[0]["match"]["name"] == "barack_obama" and len(faces[0]["landmarks"]) == 5
    health = c.get("/healthz").json()
    assert health == {"status": "ok", "model_id": "dlib_resnet_v1", "models_loaded": True,
                      "gallery_templates": 2, "db_ok": True, "liveness": "off", "cameras": 0, "cameras_online": 0}
    text = c.get("/metrics").text
    route = 'method="POST",route="/api/v1/identify",status="200"'
    assert f"gatewatch_http_request_duration_seconds_count{{{route}}} 1.0" in text
    assert 'gatewatch_stage_duration_seconds_count{stage="enrol_analyze"} 2.0' in text
    assert "gatewatch_gallery_templates 2.0" in text


def test_50_concurrent_access_requests_are_all_answered_and_recorded(client: TestClient,
                                                                     faces_dir: Path) -> None:
    c = client
    g = gate(c)
    enrol(c, faces_dir, "john_savage")
    probes = [photo(faces_dir, "john_savage", 1 + i % 10) for i in range(50)]
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda data: knock(c, g, data), probes))
    assert all(r["event_id"] for r in results) and len({r["event_id"] for r in results}) == 50
    assert all(r["reason"] != "error" for r in results)
    page = c.get("/api/v1/events?limit=1000", headers=A).json()["events"]
    assert sorted(e["id"] for e in page) == sorted(r["event_id"] for r in results)
