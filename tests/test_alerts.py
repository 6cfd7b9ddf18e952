"""The guard room's alert feed as its users meet it: other systems raise alerts, guards acknowledge
and resolve them, screens follow the live feed and pick up exactly what they missed, also across a
restart of the service; and each key role can do only its part."""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from conftest import ADMIN_KEY, service_client
from live_server import SseReader, live_service

from vision.faces.analyzer import FaceAnalyzer

A = {"X-API-Key": ADMIN_KEY}


def _key(c, role: str, label: str | None = None) -> dict:
    r = c.post("/api/v1/keys", json={"role": role, **({"label": label} if label else {})}, headers=A)
    assert r.status_code == 201, r.text
    return r.json()


def _smoke(c, key: str, n: int = 0, **extra: object):
    body = {"kind": "smoke", "source": {"type": "sensor", "id": f"b3-f{n % 30}-smoke"},
            "message": f"smoke detector {n} in building 3", **extra}
    return c.post("/api/v1/alerts", json=body, headers={"X-API-Key": key})


def test_lifecycle_who_and_when_and_one_alert_per_incident(tmp_path: Path, analyzer: FaceAnalyzer) -> None:
    with service_client(tmp_path, analyzer) as c:
        sensor = _key(c, "integration", "fire panel")["key"]
        guard = _key(c, "guard", "north desk: Wang")
        snapshot = base64.b64encode(cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))[1].tobytes()).decode()
        r = _smoke(c, sensor, severity="critical", image=snapshot)
        assert r.status_code == 201, r.text
        alert = r.json()
        assert (alert["status"], alert["severity"], alert["count"], alert["source"]) == (
            "new", "critical", 1, {"type": "sensor", "id": "b3-f0-smoke"})
        assert c.get(alert["evidence"]["image_url"], headers=A).headers["content-type"] == "image/jpeg"

        g = {"X-API-Key": guard["key"]}
        acked = c.post(f"/api/v1/alerts/{alert['id']}/ack", json={"note": "on my way"}, headers=g).json()
        assert acked["status"] == "acknowledged" and acked["acked_by"] == {"key_id": guard["id"],
                                                                          "label": "north desk: Wang"}
        assert acked["ack_note"] == "on my way" and acked["seconds_to_ack"] >= 0
        assert c.post(f"/api/v1/alerts/{alert['id']}/resolve", json={}, headers=g).status_code == 422  # note needed
        done = c.post(f"/api/v1/alerts/{alert['id']}/resolve", json={"note": "burnt toast, 6-602"}, headers=g).json()
        assert (done["status"], done["resolve_note"], done["resolved_by"]["label"]) == (
            "resolved", "burnt toast, 6-602", "north desk: Wang")
        assert done["seconds_to_resolve"] >= done["seconds_to_ack"] and not done["overdue"]
        r = c.post(f"/api/v1/alerts/{alert['id']}/resolve", json={"note": "again"}, headers=g)
        assert (r.status_code, r.json()["reason"]) == (409, "alert_state")
        assert c.get(f"/api/v1/alerts/{alert['id']}", headers=g).json() == done

        # One incident, three reports: one alert with a count; resolved, the next report opens a new one.
        ids = {_smoke(c, sensor, 1, incident="panel-7").json()["id"]
               for _ in range(3)}
        assert len(ids) == 1
        (one,) = ids
        assert c.get(f"/api/v1/alerts/{one}", headers=g).json()["count"] == 3
        c.post(f"/api/v1/alerts/{one}/resolve", json={"note": "tested panel"}, headers=g)
        assert _smoke(c, sensor, 1, incident="panel-7").json()["id"] != one

        listed = c.get("/api/v1/alerts", params={"status": "resolved", "kind": "smoke"}, headers=g).json()
        assert [a["id"] for a in listed["alerts"]] == [one, alert["id"]]
        critical = c.get("/api/v1/alerts", params={"severity": "critical"}, headers=g).json()["alerts"]
        assert [a["id"] for a in critical] == [alert["id"]]
        page = c.get("/api/v1/alerts", params={"limit": 1}, headers=g).json()
        assert len(page["alerts"]) == 1 and page["next_cursor"]
        rest = c.get("/api/v1/alerts", params={"limit": 10, "cursor": page["next_cursor"]}, headers=g).json()
        assert len(rest["alerts"]) == 2
        assert c.get("/api/v1/alerts/999", headers=g).status_code == 404
        assert _smoke(c, sensor, kind="throw").status_code == 422  # the system's own kinds are its own
        assert _smoke(c, sensor, image="not base64!").status_code == 422
        metrics = c.get("/metrics", headers=A).text
        assert 'gatewatch_alert_response_seconds_count{kind="smoke",step="resolved"} 2.0' in metrics
        assert 'gatewatch_alerts{kind="smoke",state="open"} 1.0' in metrics


def test_each_role_does_only_its_part(tmp_path: Path, analyzer: FaceAnalyzer, faces_dir: Path) -> None:
    with service_client(tmp_path, analyzer) as c:
        gate = c.post("/api/v1/gates", json={"name": "North", "kind": "main"}, headers=A).json()
        resident = c.post("/api/v1/residents", json={"name": "li"}, headers=A).json()
        guard = {"X-API-Key": _key(c, "guard")["key"]}
        sensor = {"X-API-Key": _key(c, "integration")["key"]}
        photo = sorted((faces_dir / "barack_obama").glob("*.jpg"))[0].read_bytes()
        writes = [("POST", "/api/v1/residents", {"json": {"name": "x"}}),
                  ("PATCH", f"/api/v1/residents/{resident['id']}", {"json": {"unit": "1"}}),
                  ("POST", f"/api/v1/residents/{resident['id']}/faces", {"files": {"file": ("p.jpg", photo)}}),
                  ("DELETE", f"/api/v1/residents/{resident['id']}", {}),
                  ("POST", "/api/v1/gates", {"json": {"name": "y", "kind": "main"}}),
                  ("DELETE", f"/api/v1/gates/{gate['id']}", {}),
                  ("POST", "/api/v1/keys", {"json": {"role": "admin"}}),
                  ("GET", "/api/v1/keys", {})]
        for method, url, kwargs in writes:
            for who in (guard, sensor):
                assert c.request(method, url, headers=who, **kwargs).status_code == 403, (method, url)
        for url in ("/api/v1/alerts", "/api/v1/events", "/api/v1/camera-events", "/api/v1/throws"):
            assert c.get(url, headers=sensor).status_code == 403, url
            assert c.get(url, headers=guard).status_code == 200, url
        r = c.post(f"/api/v1/gates/{gate['id']}/access", files={"file": ("p.jpg", photo)}, headers=sensor)
        assert r.status_code == 403
        alert = _smoke(c, sensor["X-API-Key"]).json()
        assert c.post(f"/api/v1/alerts/{alert['id']}/ack", headers=sensor).status_code == 403
        assert c.post(f"/api/v1/alerts/{alert['id']}/ack", headers=guard).status_code == 200


def test_a_blocklisted_face_at_the_gate_raises_one_alert_with_its_face(tmp_path: Path, analyzer: FaceAnalyzer,
                                                                       faces_dir: Path) -> None:
    photos = sorted((faces_dir / "matt_damon").glob("*.jpg"))
    with service_client(tmp_path, analyzer, retain_crops=True) as c:
        gate = c.post("/api/v1/gates", json={"name": "North", "kind": "main"}, headers=A).json()
        banned = c.post("/api/v1/residents", json={"name": "banned", "kind": "blocked"}, headers=A).json()
        for photo in (photos[0], photos[3]):
            assert c.post(f"/api/v1/residents/{banned['id']}/faces", files={"file": ("p.jpg", photo.read_bytes())},
                          headers=A).status_code == 201
        for photo in (photos[1], photos[1]):  # he tries twice
            r = c.post(f"/api/v1/gates/{gate['id']}/access", files={"file": ("p.jpg", photo.read_bytes())},
                       headers={"X-API-Key": gate["api_key"]}).json()
            assert (r["decision"], r["reason"]) == ("deny", "blocked")
        (alert,) = c.get("/api/v1/alerts", headers=A).json()["alerts"]
        assert (alert["kind"], alert["severity"], alert["count"], alert["source"]) == (
            "blocklisted", "high", 2, {"type": "gate", "id": str(gate["id"])})
        assert alert["access_event_id"] == r["event_id"] and "banned" in alert["message"]
        assert c.get(alert["evidence"]["crop_url"], headers=A).headers["content-type"] == "image/jpeg"
        events = c.get("/api/v1/events", headers=A).json()["events"]
        assert [e["alert_id"] for e in events] == [alert["id"], alert["id"]]  # the older list links to its alert


def test_a_dead_camera_raises_an_offline_alert(tmp_path: Path, analyzer: FaceAnalyzer) -> None:
    with service_client(tmp_path, analyzer) as c:
        gate = c.post("/api/v1/gates", json={"name": "Door 3", "kind": "stairwell"}, headers=A).json()
        r = c.post("/api/v1/cameras", json={"id": "door-3", "role": "door", "source": "rtsp://127.0.0.1:9/none",
                                            "gate_id": gate["id"]}, headers=A)
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 30
        while not (alerts := c.get("/api/v1/alerts", params={"kind": "camera_offline"}, headers=A).json()["alerts"]):
            assert time.monotonic() < deadline, "no camera_offline alert"
            time.sleep(0.2)
        assert alerts[0]["source"] == {"type": "camera", "id": "door-3"} and alerts[0]["camera_event_id"]
        assert alerts[0]["severity"] == "medium" and "went dark" in alerts[0]["message"]
        events = c.get("/api/v1/camera-events", params={"camera_id": "door-3"}, headers=A).json()["events"]
        assert events[-1]["alert_id"] == alerts[0]["id"]


def test_a_reader_away_gets_every_change_in_order_also_across_a_restart(tmp_path: Path,
                                                                         analyzer: FaceAnalyzer) -> None:
    port = None
    with live_service(tmp_path, analyzer, commands_keepalive_s=0.3) as url:
        port = int(url.rsplit(":", 1)[1])
        with httpx.Client(base_url=url, headers=A, timeout=30) as api:
            sensor = api.post("/api/v1/keys", json={"role": "integration"}).json()["key"]
            reader = SseReader(f"{url}/api/v1/alerts/stream", ADMIN_KEY)
            assert reader.wait(lambda: "connected" in reader.comments, 10)
            first = _smoke(api, sensor, 0).json()
            assert reader.wait(lambda: len(reader.events) == 1, 5)
            assert reader.events[0]["event"] == "created" and reader.data()[0]["id"] == first["id"]
            last_seen = reader.events[-1]["id"]
            reader.close()
            raised = [_smoke(api, sensor, n).json()["id"] for n in range(1, 101)]
            again = SseReader(f"{url}/api/v1/alerts/stream", ADMIN_KEY, last_seen)
            assert again.wait(lambda: len(again.events) >= 100, 30), len(again.events)
            assert [a["id"] for a in again.data()] == raised
            ids = [int(e["id"]) for e in again.events]
            assert ids == sorted(ids) and len(set(ids)) == 100
            last_seen = again.events[-1]["id"]
            again.close()
    # Restarted on the same data dir and port: the screen resumes where it was.
    with (live_service(tmp_path, analyzer, port=port, commands_keepalive_s=0.3) as url,
          httpx.Client(base_url=url, headers=A, timeout=30) as api):
        raised = [_smoke(api, sensor, n).json()["id"] for n in range(101, 201)]
        acked = api.post(f"/api/v1/alerts/{raised[0]}/ack").json()
        resumed = SseReader(f"{url}/api/v1/alerts/stream", ADMIN_KEY, last_seen)
        assert resumed.wait(lambda: len(resumed.events) >= 101, 30), len(resumed.events)
        assert [a["id"] for a in resumed.data()[:100]] == raised
        assert resumed.events[100]["event"] == "acknowledged" and resumed.data()[100] == acked
        assert resumed.wait(lambda: "ping" in resumed.comments, 5)
        resumed.close()


def test_a_burst_of_1000_alerts_from_20_clients_loses_none(tmp_path: Path, analyzer: FaceAnalyzer) -> None:
    with live_service(tmp_path, analyzer, commands_keepalive_s=0.3) as url:
        with httpx.Client(base_url=url, headers=A, timeout=30) as api:
            keys = [api.post("/api/v1/keys", json={"role": "integration"}).json()["key"] for _ in range(20)]
        screens = [SseReader(f"{url}/api/v1/alerts/stream", ADMIN_KEY) for _ in range(3)]
        for screen in screens:
            assert screen.wait(lambda s=screen: "connected" in s.comments, 10)
        lock, created = threading.Lock(), []

        def client(k: int) -> None:
            with httpx.Client(base_url=url, timeout=60) as c:
                for n in range(50):
                    r = _smoke(c, keys[k], k * 50 + n)
                    assert r.status_code == 201, r.text
                    with lock:
                        created.append(r.json()["id"])

        with ThreadPoolExecutor(20) as pool:
            list(pool.map(client, range(20)))
        assert len(set(created)) == 1000
        with httpx.Client(base_url=url, headers=A, timeout=30) as api:
            stored, cursor = [], None
            while True:
                params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
                page = api.get("/api/v1/alerts", params=params).json()
                stored += [a["id"] for a in page["alerts"]]
                if not (cursor := page["next_cursor"]):
                    break
        assert sorted(stored) == sorted(created)
        for screen in screens:
            assert screen.wait(lambda s=screen: len(s.events) >= 1000, 60), len(screen.events)
            assert sorted(a["id"] for a in screen.data()) == sorted(created)
            seqs = [int(e["id"]) for e in screen.events]
            assert seqs == sorted(seqs)
            screen.close()


@pytest.mark.parametrize("bad", ["abc", "-1"])
def test_a_bad_last_event_id_is_refused(tmp_path: Path, analyzer: FaceAnalyzer, bad: str) -> None:
    with service_client(tmp_path, analyzer) as c:
        r = c.get("/api/v1/alerts/stream", headers={**A, "Last-Event-ID": bad})
        assert r.status_code == 422


def test_every_alert_change_is_posted_signed_to_the_alert_webhook(tmp_path: Path, analyzer: FaceAnalyzer) -> None:
    import hashlib
    import hmac
    import json
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from api.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER

    secret, got, bad = "alert-webhook-secret-0123", [], []
    arrived = threading.Condition()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            stamp = self.headers[TIMESTAMP_HEADER]
            expected = "sha256=" + hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
            ok = hmac.compare_digest(expected, self.headers[SIGNATURE_HEADER])
            with arrived:
                (got if ok else bad).append(json.loads(body))
                arrived.notify_all()
            self.send_response(204 if ok else 401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    receiver = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_port}/alerts"
    try:
        with service_client(tmp_path, analyzer, alert_webhook_url=url, alert_webhook_secret=secret) as c:
            sensor = _key(c, "integration")["key"]
            alert = _smoke(c, sensor).json()
            c.post(f"/api/v1/alerts/{alert['id']}/ack", headers=A)
            c.post(f"/api/v1/alerts/{alert['id']}/resolve", json={"note": "checked"}, headers=A)
            with arrived:
                assert arrived.wait_for(lambda: len(got) >= 3, 10), got
    finally:
        receiver.shutdown()
    assert not bad
    assert [(n["type"], n["alert"]["id"]) for n in got] == [("created", alert["id"]), ("acknowledged", alert["id"]),
                                                            ("resolved", alert["id"])]
    assert [n["seq"] for n in got] == sorted(n["seq"] for n in got)
    assert got[-1]["alert"]["resolve_note"] == "checked"


def test_retention_deletes_old_resolved_alerts_and_their_throw_evidence(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from gates.alerts import Actor, AlertStore, NewAlert, Source
    from gates.gallery import DB_NAME
    from gates.retention import sweep
    from gates.service_store import ServiceStore

    db = tmp_path / DB_NAME
    store, alerts = ServiceStore(db, "dlib_resnet_v1"), AlertStore(db)
    try:
        evidence = tmp_path / "throw.jpg"
        evidence.write_bytes(b"jpeg")
        old = datetime.now(UTC) - timedelta(days=100)
        throw = store.record_throw(at=old, released_at=old, camera_id="facade-1", floor=17, column=4, confidence=0.9,
                                   image_path=str(evidence), clip_path=None, detail={})
        guard = Actor(1, "desk")
        stale = alerts.raise_alert(NewAlert("throw", Source("camera", "facade-1"), "floor 17", throw_id=throw.id), old)
        alerts.resolve(stale.alert.id, guard, "bottle removed")
        still_open = alerts.raise_alert(NewAlert("smoke", Source("sensor", "s1"), "smoke"), old).alert.id
        recent = alerts.raise_alert(NewAlert("smoke", Source("sensor", "s2"), "smoke")).alert.id
        alerts.resolve(recent, guard, "false alarm")
        assert sweep(alerts, store, days=90) == 1
        from gates.alerts import AlertFilter

        left = {a.id for a in alerts.list(AlertFilter(), limit=10)}
        assert left == {still_open, recent}  # an open alert is never deleted, however old
        assert not evidence.exists() and store.get_throw(throw.id).floor == 17
        assert all(c.alert.id != stale.alert.id for c in alerts.changes_after(0))
    finally:
        store.close()
        alerts.close()
