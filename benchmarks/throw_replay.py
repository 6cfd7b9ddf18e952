"""Record the motion blobs of bench_throws' scenes once, then re-score tracker and physics changes
on them in seconds instead of minutes.

    python -m benchmarks.throw_replay record --set tuning --n 30 --fa-minutes 3 [--cache DIR]
    python -m benchmarks.throw_replay score --set tuning [--verbose]

Rendering a scene and segmenting its motion take ~90 % of a benchmark run, and neither depends
on the tracker or the physics tests, so a recording of every frame's blobs replays exactly what
bench_throws would score, as long as vision/throws/motion.py and the generator are unchanged (record
again after changing either). A tuning aid only: the figures to report come from fresh
end-to-end runs of bench_throws, and the fresh seed set is never recorded here.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_throws import (
    REAL_CLIPS_DIR,
    ScenarioResult,
    distractor_suite,
    match,
    real_clip_facade,
    report,
    throw_suite,
)
from benchmarks.throw_scenarios import TUNING_SEEDS, VALIDATION_SEEDS, Scenario
from vision.cameras import FacadeSettings
from vision.throws import ThrowDetector, ThrowEvent
from vision.throws.motion import MotionFrame

TUNABLE_SETS = {"tuning": TUNING_SEEDS, "validation": VALIDATION_SEEDS}


@dataclass
class Recording:
    """One scene's (or real clip's) detector inputs: its calibration and every frame's motion."""

    name: str
    facade: FacadeSettings
    frame_size: tuple[int, int]
    fps: float
    motion: list[MotionFrame]
    scenario: Scenario | None = None  # None for a real clip


def record_scene(scenario: Scenario, frames) -> Recording:
    cam = scenario.camera()
    det = ThrowDetector(cam.facade, (scenario.width, scenario.height), scenario.fps, cam.id)
    motion = [det.motion.apply(frame) for frame in frames]
    return Recording(str(scenario.seed), cam.facade, (scenario.width, scenario.height), scenario.fps, motion, scenario)


def record_clip(clip: Path) -> Recording:
    cap = cv2.VideoCapture(str(clip))
    ok, frame = cap.read()
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    size = (frame.shape[1], frame.shape[0])
    facade = real_clip_facade(*size)
    det = ThrowDetector(facade, size, fps, clip.name)
    motion = []
    while ok:
        motion.append(det.motion.apply(frame))
        ok, frame = cap.read()
    cap.release()
    return Recording(clip.name, facade, size, fps, motion)


def replay(rec: Recording) -> list[ThrowEvent]:
    det = ThrowDetector(rec.facade, rec.frame_size, rec.fps, rec.name)
    events: list[ThrowEvent] = []
    for i, motion in enumerate(rec.motion):
        events += det.process_motion(motion, i)
    return events + det.finish()


def _path(cache: Path, set_name: str) -> Path:
    return cache / f"{set_name}.pkl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["record", "score"])
    ap.add_argument("--set", choices=[*TUNABLE_SETS, "real"], required=True)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--fa-minutes", type=float, default=3.0)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/throw_replay"))
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    path = _path(args.cache, args.set)
    if args.action == "record":
        args.cache.mkdir(parents=True, exist_ok=True)
        if args.set == "real":
            recs = [record_clip(c) for c in sorted(REAL_CLIPS_DIR.glob("*"))]
            data = {"throws": [], "distractors": [], "real": recs}
        else:
            seeds = TUNABLE_SETS[args.set]
            data = {
                "throws": [record_scene(*s) for s in throw_suite(seeds, args.n, 1280, 720)],
                "distractors": [record_scene(*s) for s in distractor_suite(seeds, args.fa_minutes, 1280, 720)],
                "real": [],
            }
        path.write_bytes(pickle.dumps(data))
    data = pickle.loads(path.read_bytes())
    t0 = time.perf_counter()
    for rec in data["real"]:
        print(f"  {rec.name}: {len(rec.motion)} frames, {len(replay(rec))} throw alert(s)")
    results = {}
    for kind in ("throws", "distractors"):
        results[kind] = []
        for rec in data[kind]:
            r = ScenarioResult(rec.scenario, replay(rec))
            match(r)
            results[kind].append(r)
            if args.verbose:
                for t, e in r.matched:
                    if e is None or e.floor != t.floor:
                        got = "MISSED" if e is None else f"f{e.floor} c{e.column}"
                        print(
                            f"   seed {rec.name} {rec.scenario.background[-24:]} {rec.scenario.distractors} "
                            f"f{t.floor} c{t.column} size {t.size_px:.1f} light {t.light} "
                            f"in view {t.visible_frames} frames "
                            f"frames {t.release_frame}-{t.end_frame} -> {got}"
                        )
                for e in r.false_alarms:
                    print(f"   seed {rec.name} FALSE ALARM f{e.floor} frames {e.start_frame}-{e.end_frame}")
    if data["throws"] or data["distractors"]:
        report(f"{args.set} (replayed)", results["throws"], results["distractors"])
    print(f"[replay {time.perf_counter() - t0:.1f} s]")


if __name__ == "__main__":
    main()
