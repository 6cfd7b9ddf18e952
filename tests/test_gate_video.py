"""Offline gate analysis on a real clip of people walking: with nobody enrolled nobody gets in;
with one walker enrolled from a still, that walker's track unlocks once and everyone else is unknown,
with the liveness check on as the service runs it (real people must not be called spoofs).

Every second frame is analysed (about 25 s per pass on 2 cores); the clip has 105 frames at 25 fps.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from walker_clip import VIDEO, walker_embeddings

from gates.analysis import analyze_gate_video, open_gallery
from models import registry
from vision.cameras import CameraConfig
from vision.faces.analyzer import FaceAnalyzer, for_gate_cameras
from vision.faces.liveness import LivenessChecker
from vision.faces.tracks import GateDecision, GatePolicy

pytestmark = pytest.mark.skipif(not VIDEO.is_file(), reason="shared video not available")


@pytest.fixture(scope="module")
def camera() -> CameraConfig:
    return CameraConfig(id="gate-cam", role="gate", source=str(VIDEO))


def _accept_threshold() -> float:
    return registry.get_entry(registry.get_pack("open").embedder).accept_threshold


def _enrol_walker(analyzer: FaceAnalyzer, data_dir: Path) -> None:
    with open_gallery(data_dir, analyzer) as gallery:
        gallery.add_resident_with_faces("walker", walker_embeddings(analyzer))


def _run(analyzer: FaceAnalyzer, camera: CameraConfig, data_dir: Path,
         liveness: LivenessChecker | None = None) -> tuple[list[GateDecision], list[GateDecision]]:
    """The clip as the service's gate cameras see it (their detector, no flip averaging), against
    templates enrolled from photos."""
    gate = for_gate_cameras(analyzer, min_face_size=int(GatePolicy().min_face_px))
    events = list(analyze_gate_video(VIDEO, camera, data_dir, analyzer=gate, liveness=liveness, stride=2))
    return events, [e for e in events if e.decision == "unlock"]


def test_empty_gallery_unlocks_nobody(analyzer: FaceAnalyzer, camera: CameraConfig, tmp_path: Path) -> None:
    events, unlocks = _run(analyzer, camera, tmp_path)
    assert unlocks == []
    assert len(events) >= 4  # several people walk through
    assert all(e.decision == "deny" and e.reason == "unknown" and e.match is None for e in events)
    assert max(Counter(e.track_id for e in events).values()) == 1  # one decision per track


def test_enrolled_walker_unlocks_once(analyzer: FaceAnalyzer, camera: CameraConfig,
                                     liveness_pair: LivenessChecker,
                                     tmp_path: Path) -> None:
    _enrol_walker(analyzer, tmp_path)
    events, unlocks = _run(analyzer, camera, tmp_path, liveness_pair)
    assert len(unlocks) == 1
    unlock = unlocks[0].to_json()
    assert unlock["type"] == "access" and unlock["reason"] == "matched"
    assert unlock["resident"]["name"] == "walker" and unlock["similarity"] >= _accept_threshold()
    assert unlocks[0].liveness is not None and unlocks[0].liveness >= 0.5
    others = [e for e in events if e.track_id != unlocks[0].track_id]
    assert len(others) >= 4
    assert all(e.decision == "deny" and e.reason == "unknown" for e in others)  # real people: never "spoof"
    assert max(Counter(e.track_id for e in events).values()) == 1


def test_analyze_command_prints_access_json_lines(tmp_path: Path) -> None:
    """`gatewatch analyze VIDEO --camera gate.yaml --json` as a forensic user runs it (first 50 frames)."""
    import json
    import os
    import subprocess
    import sys

    camera_file = tmp_path / "gate.yaml"
    camera_file.write_text("id: gate-cam\nrole: gate\nsource: rtsp://camera.invalid/stream\n")
    result = subprocess.run([sys.executable, "-m", "gatewatch.cli", "analyze", str(VIDEO), "--camera", str(camera_file),
                             "--data-dir", str(tmp_path / "data"), "--json", "--max-frames", "50",
                             "--unlocks", str(tmp_path / "unlocks.json")],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events, "a gate camera over people walking must decide something"
    for event in events:
        assert set(event) == {"type", "frame", "time", "track_id", "decision", "reason", "resident", "similarity"}
        assert event["type"] == "access" and event["decision"] == "deny" and event["resident"] is None
    assert json.loads((tmp_path / "unlocks.json").read_text()) == []


def test_a_guard_enrols_the_walker_from_gate_snapshots_with_the_cli(tmp_path: Path, analyzer: FaceAnalyzer) -> None:
    """The snapshots saved as files and enrolled with `gatewatch enroll` (accepted, named as weak:
    soft 70-px faces); the gate camera over the whole video then unlocks for him once, nobody else."""
    import os
    import subprocess
    import sys

    from walker_clip import walker_snapshots

    folder = tmp_path / "visitors" / "walker"
    folder.mkdir(parents=True)
    for frame, jpeg in walker_snapshots(analyzer).items():
        (folder / f"frame{frame}.jpg").write_bytes(jpeg)
    result = subprocess.run([sys.executable, "-m", "gatewatch.cli", "enroll", str(folder.parent), "--quiet",
                             "--data-dir", str(tmp_path / "data")], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert result.returncode == 0, result.stderr
    assert "enrolled 1 people" in result.stdout and "walker (2 photo(s), 2 of them weak" in result.stdout
    events, unlocks = _run(analyzer, CameraConfig(id="gate-cam", role="gate", source=str(VIDEO)), tmp_path / "data")
    assert [u.match.name for u in unlocks if u.match] == ["walker"]
    assert all(e.decision == "deny" and e.reason == "unknown" for e in events if e is not unlocks[0])
