"""Throw detection end to end on generated scenes (held-out seeds), distractors and real clips.

The scenes are small (960x540, a few seconds) to keep the suite fast; benchmarks/bench_throws.py
scores the detector on many more. Seeds here come from HELDOUT_SEEDS: the detector was never
tuned on them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.throw_scenarios import ALL_DISTRACTORS, HELDOUT_SEEDS, make_scenario, write_scenario
from vision.analyze import add_analyze_arguments, run_analyze
from vision.cameras import FacadeSettings
from vision.facade import homography_from_corners
from vision.throws import ThrowDetector, ThrowEvent

REAL_CLIP_SECONDS = 6.0
SEEDS = list(HELDOUT_SEEDS)


def _detect(scenario, frames) -> list[ThrowEvent]:
    cam = scenario.camera()
    det = ThrowDetector(cam.facade, (scenario.width, scenario.height), scenario.fps, cam.id)
    events: list[ThrowEvent] = []
    for i, frame in enumerate(frames):
        events += det.process(frame, i)
    return events + det.finish()


@pytest.fixture(scope="module")
def throw_results() -> list[tuple]:
    out = []
    for seed, kinds in (
        (SEEDS[0], ()),
        (SEEDS[1], ("birds", "shake")),
        (SEEDS[2], ("rain", "windows", "clouds")),
    ):
        scenario, frames = make_scenario(
            seed, width=960, height=540, duration_s=9, n_throws=2, distractors=kinds, size_range=(5, 30)
        )
        out.append((scenario, _detect(scenario, frames)))
    return out


def test_throws_are_detected_with_their_floor(throw_results) -> None:
    exact = total = 0
    for scenario, events in throw_results:
        assert scenario.throws, "the scenario should contain throws"
        for truth in scenario.throws:
            hits = [
                e for e in events if e.start_frame <= truth.end_frame and e.end_frame >= truth.release_frame
            ]
            assert hits, (
                f"seed {scenario.seed}: throw from floor {truth.floor} (size {truth.size_px:.0f} px) missed"
            )
            assert abs(hits[0].floor - truth.floor) <= 1, (
                f"seed {scenario.seed}: floor {hits[0].floor} vs {truth.floor}"
            )
            assert abs(hits[0].column - truth.column) <= 1
            exact += hits[0].floor == truth.floor
            total += 1
        assert len(events) == len(scenario.throws), f"seed {scenario.seed}: {len(events)} events"
    assert exact >= 0.75 * total


def test_release_time_is_close(throw_results) -> None:
    for scenario, events in throw_results:
        for truth, event in zip(scenario.throws, events, strict=False):
            assert abs(event.release_frame - truth.release_frame) <= 0.5 * scenario.fps


@pytest.mark.parametrize("seed", SEEDS[10:12])
def test_distractors_alone_raise_no_alarm(seed: int) -> None:
    scenario, frames = make_scenario(
        seed + 50_000, width=960, height=540, duration_s=15, n_throws=0, distractors=ALL_DISTRACTORS
    )
    events = _detect(scenario, frames)
    assert events == [], [e.alert() for e in events]


def _real_clip_camera(w: int, h: int) -> FacadeSettings:
    """A virtual facade covering the whole clip, ~45 px per floor: the strictest setting, with
    every pedestrian and car inside the watched region and no mask zone to hide them."""
    floors, columns = max(4, round(0.96 * h / 45)), max(3, round(0.96 * w / 60))
    H = homography_from_corners(
        [[0.02 * w, 0.98 * h], [0.98 * w, 0.98 * h], [0.9 * w, 0.02 * h], [0.1 * w, 0.02 * h]],
        floors,
        columns,
    )
    return FacadeSettings(homography=H.tolist(), floors=floors, columns=columns)


def test_real_clips_give_no_throw_alert(shared_data: Path) -> None:
    clips = sorted((shared_data / "video").glob("*"))
    if not clips:
        pytest.skip(f"no clips in {shared_data / 'video'}")
    for clip in clips:
        cap = cv2.VideoCapture(str(clip))
        ok, frame = cap.read()
        assert ok, f"cannot read {clip}"
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        det = ThrowDetector(
            _real_clip_camera(frame.shape[1], frame.shape[0]), frame.shape[1::-1], fps, clip.name
        )
        events, i = [], 0
        while ok and i < REAL_CLIP_SECONDS * fps:
            events += det.process(frame, i)
            i += 1
            ok, frame = cap.read()
        events += det.finish()
        cap.release()
        assert events == [], f"{clip.name}: {[e.alert() for e in events]}"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_analyze_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_prints_one_json_line_per_throw(tmp_path: Path, capsys) -> None:
    scenario, frames = make_scenario(
        SEEDS[3], width=960, height=540, duration_s=8, n_throws=2, distractors=("birds",), size_range=(6, 20)
    )
    video, camera, _ = write_scenario(scenario, frames, tmp_path / "scene")
    code = run_analyze(
        _args(str(video), "--camera", str(camera), "--data-dir", str(tmp_path / "data"), "--json")
    )
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == len(scenario.throws)
    for line, truth in zip(lines, scenario.throws, strict=True):
        assert line["type"] == "throw"
        assert {"start_frame", "end_frame", "floor", "column", "confidence", "release_time_s"} <= set(line)
        assert abs(line["floor"] - truth.floor) <= 1
        assert Path(line["image"]).is_file() and Path(line["clip"]).is_file()
        assert Path(line["image"]).parent == tmp_path / "data" / "evidence"
        assert cv2.VideoCapture(line["clip"]).read()[0]


def test_cli_rejects_other_roles_and_bad_files(tmp_path: Path, capsys) -> None:
    gate = tmp_path / "gate.yaml"
    gate.write_text("id: g1\nrole: gate\nsource: 0\n", encoding="utf-8")
    video = tmp_path / "v.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 48))
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    assert run_analyze(_args(str(video), "--camera", str(gate))) == 2
    assert "role 'gate' is not supported by analyze yet" in capsys.readouterr().err

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "id: f\nrole: facade\nsource: x\nfacade: {homography: [[1, 0], [0, 1]], floors: 2, columns: 2}\n"
    )
    assert run_analyze(_args(str(video), "--camera", str(bad))) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "homography" in err
