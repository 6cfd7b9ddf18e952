"""The live gate runtime on a real video file played as a camera: one unlock for the enrolled walker,
the strangers denied, camera events, per-camera stats and frame-to-decision latency; a camera that
cannot be opened goes offline without stopping the others; stale frames are skipped, not decided."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from walker_clip import VIDEO, walker_embeddings, write_clip

from gates.analysis import open_gallery
from vision.cameras import CameraConfig
from vision.faces.analyzer import FaceAnalyzer
from vision.faces.tracks import GateDecision
from vision.streams.gate_runtime import GateRuntime
from vision.streams.readers import Backoff, CameraEvent
from vision.streams.stats import CameraStats

pytestmark = pytest.mark.skipif(not VIDEO.is_file(), reason=f"shared video not available at {VIDEO}")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "gate.mp4")


class Recorder:
    def __init__(self) -> None:
        self.decisions: list[tuple[GateDecision, float]] = []
        self.threads: dict[str, set[str]] = {}  # camera -> the threads its decisions came from
        self.events: list[CameraEvent] = []
        self._cond = threading.Condition()

    def decision(self, decision: GateDecision, latency_ms: float) -> None:
        with self._cond:
            self.decisions.append((decision, latency_ms))
            self.threads.setdefault(decision.camera_id, set()).add(threading.current_thread().name)
            self._cond.notify_all()

    def event(self, event: CameraEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for_event(self, camera_id: str, kind: str, timeout_s: float = 60.0) -> bool:
        with self._cond:
            return self._cond.wait_for(
                lambda: any(e.camera_id == camera_id and e.type == kind for e in self.events), timeout_s)


def _wait_until_ended(runtime: GateRuntime, camera_id: str, timeout_s: float = 120.0) -> dict[str, CameraStats]:
    """Until the file camera has played and its last tracks are decided."""
    deadline = time.monotonic() + timeout_s
    while not (stats := {s.camera_id: s for s in runtime.stats()})[camera_id].ended:
        assert time.monotonic() < deadline, f"camera {camera_id} did not end"
        time.sleep(0.05)
    return stats


def test_walker_unlocks_once_strangers_denied_dead_camera_offline(analyzer: FaceAnalyzer, clip: Path,
                                                                   tmp_path: Path) -> None:
    with open_gallery(tmp_path, analyzer) as gallery:
        walker, _ = gallery.add_resident_with_faces("walker", walker_embeddings(analyzer))
        seen = Recorder()
        gate = CameraConfig(id="gate-cam", role="gate", source=str(clip), gate_id=1, playback="every_frame")
        dead = CameraConfig(id="dead-cam", role="door", source="rtsp://127.0.0.1:9/none", gate_id=2)
        runtime = GateRuntime([gate, dead], analyzer, gallery.identify, on_decision=seen.decision,
                              on_camera_event=seen.event, backoff=Backoff(initial_s=5.0))
        with runtime:
            assert seen.wait_for_event("dead-cam", "camera_offline", 30)
            stats = _wait_until_ended(runtime, "gate-cam")

    unlocks = [d for d, _ in seen.decisions if d.decision == "unlock"]
    assert len(unlocks) == 1 and unlocks[0].match is not None and unlocks[0].match.resident_id == walker.id
    assert unlocks[0].camera_id == "gate-cam"
    others = [d for d, _ in seen.decisions if d.track_id != unlocks[0].track_id]
    assert others and all(d.decision == "deny" and d.reason == "unknown" for d in others)
    assert max(Counter(d.track_id for d, _ in seen.decisions).values()) == 1
    assert [e.type for e in seen.events if e.camera_id == "gate-cam"] == ["camera_online", "camera_offline"]

    gate_stats = stats["gate-cam"]
    assert gate_stats.frames_decoded == gate_stats.frames_processed == 24  # every_frame: none skipped
    assert gate_stats.frames_dropped == 0 and gate_stats.decisions == len(seen.decisions)
    unlock_latency = next(ms for d, ms in seen.decisions if d.decision == "unlock")
    assert 0 < unlock_latency < 5000
    assert gate_stats.latency_p50_ms is not None and gate_stats.latency_p99_ms is not None
    print(f"\nframe arrival -> unlock {unlock_latency:.0f} ms; per camera p50 {gate_stats.latency_p50_ms} ms, "
          f"p99 {gate_stats.latency_p99_ms} ms over {gate_stats.decisions} decisions")
    assert stats["dead-cam"].online is False and stats["dead-cam"].frames_decoded == 0


def test_two_workers_decide_two_cameras_each_as_alone(analyzer: FaceAnalyzer, clip: Path, tmp_path: Path) -> None:
    """Cameras are spread over the workers, and a camera's decisions do not depend on which
    worker runs it or what the other worker is doing at the same time."""
    with open_gallery(tmp_path, analyzer) as gallery:
        gallery.add_resident_with_faces("walker", walker_embeddings(analyzer))
        seen = Recorder()
        cameras = [CameraConfig(id=f"cam-{k}", role="gate", source=str(clip), gate_id=k, playback="every_frame")
                   for k in (1, 2)]
        with GateRuntime(cameras, analyzer, gallery.identify, on_decision=seen.decision, workers=2) as runtime:
            for camera in cameras:
                _wait_until_ended(runtime, camera.id)
    outcomes = {c.id: Counter((d.decision, d.reason) for d, _ in seen.decisions if d.camera_id == c.id)
                for c in cameras}
    assert outcomes["cam-1"] == outcomes["cam-2"] and outcomes["cam-1"][("unlock", "matched")] == 1
    assert all(len(names) == 1 for names in seen.threads.values())
    assert seen.threads["cam-1"] != seen.threads["cam-2"], "each worker runs one camera"


def test_stale_frames_are_skipped_not_decided(analyzer: FaceAnalyzer, clip: Path, tmp_path: Path) -> None:
    """A runtime that cannot keep up (here: any frame is too old) decides nothing on old frames."""
    with open_gallery(tmp_path, analyzer) as gallery:
        seen = Recorder()
        camera = CameraConfig(id="gate-cam", role="gate", source=str(clip), gate_id=1)
        with GateRuntime([camera], analyzer, gallery.identify, on_decision=seen.decision,
                         on_camera_event=seen.event, max_frame_age_s=-1.0) as runtime:
            stats = _wait_until_ended(runtime, "gate-cam")["gate-cam"]
    assert stats.frames_processed == 0 and stats.frames_stale > 0 and seen.decisions == []


def test_cameras_are_added_replaced_and_removed_while_running(analyzer: FaceAnalyzer, tmp_path: Path) -> None:
    with open_gallery(tmp_path, analyzer) as gallery:
        seen = Recorder()
        with GateRuntime([], analyzer, gallery.identify, on_decision=seen.decision, on_camera_event=seen.event,
                         backoff=Backoff(initial_s=5.0)) as runtime:
            runtime.put(CameraConfig(id="a", role="gate", source="rtsp://127.0.0.1:9/a", gate_id=1))
            assert seen.wait_for_event("a", "camera_offline", 30)
            runtime.put(CameraConfig(id="a", role="gate", source="rtsp://127.0.0.1:9/b", gate_id=1))
            assert [s.camera_id for s in runtime.stats()] == ["a"]
            runtime.remove("a")
            assert runtime.stats() == []
        with pytest.raises(ValueError, match="role 'facade'"):
            runtime.put(CameraConfig.model_validate({
                "id": "f", "role": "facade", "source": "rtsp://x/y",
                "facade": {"homography": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "floors": 3, "columns": 2}}))
