"""A facade camera in the gate service: throws in its video become alerts with floor, column and
evidence that guards read through the API, and a camera over a real street clip raises none.

The footage is a generated scenario (benchmarks/throw_scenarios.py: real physics through a tilted
pinhole camera, exact ground truth) written to a video file that the camera plays frame by frame.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
from conftest import ADMIN_KEY, service_client
from fastapi.testclient import TestClient

from benchmarks.bench_throws import real_clip_facade
from benchmarks.throw_scenarios import VALIDATION_SEEDS, make_scenario, write_scenario
from vision.cameras import CAMERA_FOLDER, load_camera, save_camera
from vision.faces.analyzer import FaceAnalyzer

ADMIN = ADMIN_KEY
A = {"X-API-Key": ADMIN}


def _played(c: TestClient, camera_id: str, timeout_s: float = 120.0) -> dict:
    """The camera's status once its file has been played to the end and judged."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = c.get(f"/api/v1/cameras/{camera_id}", headers=A).json()["status"]
        if status["online"] is False and status["frames_processed"] == status["frames_decoded"] > 0:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.2)


def test_throws_on_a_facade_camera_are_alerts_with_evidence(tmp_path: Path, analyzer: FaceAnalyzer) -> None:
    scenario, frames = make_scenario(VALIDATION_SEEDS[3], width=960, height=540, duration_s=8, n_throws=2,
                                     distractors=("birds",), size_range=(6, 20))
    _, camera_file, _ = write_scenario(scenario, frames, tmp_path / "scene")
    camera = load_camera(camera_file).model_copy(update={"id": "tower-a", "playback": "every_frame"})
    save_camera(tmp_path / "data" / CAMERA_FOLDER, camera)  # a camera file found at start
    guard = None
    with service_client(tmp_path / "data", analyzer) as c:
        guard = {"X-API-Key": c.post("/api/v1/keys", json={"role": "guard"}, headers=A).json()["key"]}
        status = _played(c, "tower-a")
        throws = c.get("/api/v1/throws", headers=guard).json()["throws"]
        assert status["decisions"] == len(throws) == len(scenario.throws)
        # Newest first; the scenario's throws are in time order.
        for alert, truth in zip(reversed(throws), scenario.throws, strict=True):
            assert alert["camera_id"] == "tower-a" and alert["alert"] is True
            assert abs(alert["floor"] - truth.floor) <= 1 and abs(alert["column"] - truth.column) <= 1
            assert alert["released_at"] <= alert["at"]
            image = c.get(alert["image_url"], headers=guard)
            assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
            drawn = cv2.imdecode(np.frombuffer(image.content, np.uint8), cv2.IMREAD_COLOR)
            assert drawn is not None and drawn.shape[1] == 960
            clip = c.get(alert["clip_url"], headers=guard)
            assert clip.status_code == 200 and len(clip.content) > 10_000
        # Each throw is one critical alert of the feed, linked both ways, its evidence on the alert.
        alerts = c.get("/api/v1/alerts", params={"kind": "throw"}, headers=guard).json()["alerts"]
        assert [a["throw_id"] for a in alerts] == [t["id"] for t in throws]
        assert [t["alert_id"] for t in throws] == [a["id"] for a in alerts]
        for alert in alerts:
            assert alert["severity"] == "critical" and alert["source"] == {"type": "camera", "id": "tower-a"}
            assert alert["evidence"]["trajectory_url"] == f"/api/v1/throws/{alert['throw_id']}/image"
            assert c.get(alert["evidence"]["trajectory_url"], headers=guard).status_code == 200
        # Guards read throws; gate keys do not; unknown throws are 404s.
        gate_key = c.post("/api/v1/gates", json={"name": "Main", "kind": "main"}, headers=A).json()["api_key"]
        assert c.get("/api/v1/throws", headers={"X-API-Key": gate_key}).status_code == 403
        assert c.get("/api/v1/throws/999/image", headers=guard).status_code == 404
        metrics = c.get("/metrics").text
        assert f'gatewatch_camera_events_total{{camera_id="tower-a",type="throw"}} {len(throws)}.0' in metrics
    # The record outlives the process.
    with service_client(tmp_path / "data", analyzer) as c:
        assert len(c.get("/api/v1/throws", headers=guard).json()["throws"]) == len(scenario.throws)


def test_a_facade_camera_over_a_street_clip_raises_no_alert(tmp_path: Path, analyzer: FaceAnalyzer,
                                                           shared_data: Path) -> None:
    """People walking in a real clip, under the benchmark's virtual facade covering the whole frame."""
    clip = shared_data / "video" / "facenetpt_video.mp4"
    width, height = (int(cv2.VideoCapture(str(clip)).get(p)) for p in (cv2.CAP_PROP_FRAME_WIDTH,
                                                                          cv2.CAP_PROP_FRAME_HEIGHT))
    facade = real_clip_facade(width, height)
    with service_client(tmp_path, analyzer) as c:
        r = c.post("/api/v1/cameras", headers=A, json={
            "id": "street", "role": "facade", "source": str(clip), "playback": "every_frame",
            "facade": facade.model_dump(mode="json", exclude_none=True)})
        assert r.status_code == 201, r.text
        status = _played(c, "street")
        assert status["frames_processed"] > 100 and status["decisions"] == 0
        assert c.get("/api/v1/throws", headers=A).json()["throws"] == []
