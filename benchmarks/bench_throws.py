"""Score the throw detector on generated scenarios, one seed set at a time.

    python -m benchmarks.bench_throws [--n 40] [--width 1280 --height 720] [--fa-minutes 20]
                                      [--only tuning|validation|fresh]

Prints the detection rate by object size and by floor band, floor/column error, duplicates and
false alarms per hour (on distractor-only scenes and on the throw scenes' non-throw time) for
each seed set: the tuning seeds, the validation seeds (the first held-out set, since looked at
and tuned on too) and the fresh seeds (run only for a final score, never tuned on); then the
throw alerts on every real clip in shared/data/video, each in full, under several plausible
calibrations (REAL_CLIP_CALIBRATIONS; there must be none under any).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.shared import SHARED
from benchmarks.throw_scenarios import (
    ALL_DISTRACTORS,
    FRESH_SEEDS,
    TUNING_SEEDS,
    VALIDATION_SEEDS,
    Scenario,
    ThrowTruth,
    make_scenario,
)
from vision.cameras import FacadeSettings
from vision.throws import ThrowDetector, ThrowEvent
from vision.throws.facade import homography_from_corners

SEED_SETS = {"tuning": TUNING_SEEDS, "validation": VALIDATION_SEEDS, "fresh": FRESH_SEEDS}
SIZE_BINS = ((2, 5), (5, 10), (10, 20), (20, 31))
FLOOR_BINS = ((2, 5), (6, 10), (11, 20), (21, 40))
REAL_CLIPS_DIR = SHARED / "data/video"


@dataclass
class ScenarioResult:
    scenario: Scenario
    events: list[ThrowEvent]
    matched: list[tuple[ThrowTruth, ThrowEvent | None]] = field(default_factory=list)
    false_alarms: list[ThrowEvent] = field(default_factory=list)
    duplicates: int = 0
    seconds: float = 0.0


def run_scenario(scenario: Scenario, frames, detector_kwargs: dict | None = None) -> ScenarioResult:
    cam = scenario.camera()
    det = ThrowDetector(
        cam.facade, (scenario.width, scenario.height), scenario.fps, cam.id, **(detector_kwargs or {})
    )
    t0 = time.perf_counter()
    events: list[ThrowEvent] = []
    for i, frame in enumerate(frames):
        events += det.process(frame, i)
    events += det.finish()
    result = ScenarioResult(scenario, events, seconds=time.perf_counter() - t0)
    match(result)
    return result


def match(result: ScenarioResult) -> None:
    """An event matches a throw when it overlaps the throw in time and follows its path in the
    image (median distance to the true position at the same frames within NEAR_PX, or twice the
    object's size); the closest such event matches, the others on the same path are duplicates.
    An event that only overlaps in time is a false alarm: an alert elsewhere on the facade while
    something falls must not pass for the throw (nor hide as a duplicate)."""
    used: set[int] = set()
    for truth in result.scenario.throws:
        near = {k: d for k, e in enumerate(result.events)
                if e.start_frame <= truth.end_frame + 2 and e.end_frame >= truth.release_frame - 2
                and (d := path_distance(e, truth)) <= max(NEAR_PX, 2 * truth.size_px)}
        free = [k for k in near if k not in used]
        first = min(free, key=near.get) if free else None
        result.matched.append((truth, None if first is None else result.events[first]))
        result.duplicates += max(len(free) - 1, 0)
        used.update(near)
    result.false_alarms = [e for k, e in enumerate(result.events) if k not in used]


NEAR_PX = 20.0
# A throw is scored when its object is in view (in the picture, not behind a tree) for at least
# this long: a fall seen for less is not a fall anyone could tell from a bird's swoop.
MIN_VISIBLE_S = 0.5


def path_distance(event: ThrowEvent, truth) -> float:
    """Median image distance between the event's detections and the truth at the same frames
    (infinite when they share no frame)."""
    gaps = [np.hypot(x - truth.path_px[f - truth.release_frame][0], y - truth.path_px[f - truth.release_frame][1])
            for f, x, y in event.trajectory_px if 0 <= f - truth.release_frame < len(truth.path_px)]
    return float(np.median(gaps)) if gaps else float("inf")


def throw_suite(seeds, n: int, width: int, height: int, real_every: int = 4) -> list[tuple[Scenario, object]]:
    """Throw scenes: mostly drawn facades with random distractors, every few on a real clip."""
    clips = sorted(REAL_CLIPS_DIR.glob("*")) if REAL_CLIPS_DIR.exists() else []
    out = []
    for k, seed in enumerate(list(seeds)[:n]):
        rng = np.random.default_rng(seed)
        kinds = tuple(d for d in ALL_DISTRACTORS if rng.random() < 0.35)
        background = str(clips[k % len(clips)]) if clips and k % real_every == real_every - 1 else None
        out.append(
            make_scenario(
                seed,
                width=width,
                height=height,
                duration_s=12,
                n_throws=3,
                distractors=kinds,
                background=background,
            )
        )
    return out


def distractor_suite(seeds, minutes: float, width: int, height: int) -> list[tuple[Scenario, object]]:
    out, total, per = [], 0.0, 30.0
    for seed in seeds:
        if total >= minutes * 60:
            break
        rng = np.random.default_rng(seed + 17)
        kinds = tuple(d for d in ALL_DISTRACTORS if rng.random() < 0.6) or ("birds",)
        out.append(
            make_scenario(
                seed + 50_000, width=width, height=height, duration_s=per, n_throws=0, distractors=kinds
            )
        )
        total += per
    return out


def real_clip_facade(w: int, h: int) -> FacadeSettings:
    """A virtual facade covering the whole clip, ~45 px per floor: the strictest setting, with
    every pedestrian and car inside the watched region and no mask zone to hide them."""
    floors, columns = max(4, round(0.96 * h / 45)), max(3, round(0.96 * w / 60))
    H = homography_from_corners(
        [[0.02 * w, 0.98 * h], [0.98 * w, 0.98 * h], [0.9 * w, 0.02 * h], [0.1 * w, 0.02 * h]],
        floors,
        columns,
    )
    return FacadeSettings(homography=H.tolist(), floors=floors, columns=columns)


def whole_frame_facade(floors: int, columns: int) -> Callable[[int, int], FacadeSettings]:
    """A facade filling the frame exactly, ``floors`` x ``columns``: the ground line is the bottom
    edge, so the street's people are "floors" up to a third of the way up the frame."""

    def facade(w: int, h: int) -> FacadeSettings:
        H = [[w / columns, 0.0, 0.0], [0.0, -h / floors, float(h)], [0.0, 0.0, 1.0]]
        return FacadeSettings(homography=H, floors=floors, columns=columns)

    return facade


def trapezoid_facade(px_per_floor: float) -> Callable[[int, int], FacadeSettings]:
    """The benchmark's trapezoid at another floor height in pixels."""

    def facade(w: int, h: int) -> FacadeSettings:
        floors, columns = max(4, round(0.96 * h / px_per_floor)), max(3, round(0.96 * w / 60))
        H = homography_from_corners(
            [[0.02 * w, 0.98 * h], [0.98 * w, 0.98 * h], [0.9 * w, 0.02 * h], [0.1 * w, 0.02 * h]],
            floors,
            columns,
        )
        return FacadeSettings(homography=H.tolist(), floors=floors, columns=columns)

    return facade


# Plausible calibrations of a camera looking at the real clips: the detector's false alarms on
# people must not depend on which one a surveyor happened to measure.
REAL_CLIP_CALIBRATIONS: dict[str, Callable[[int, int], FacadeSettings]] = {
    "trapezoid ~45 px/floor": real_clip_facade,
    "trapezoid ~25 px/floor": trapezoid_facade(25.0),
    "trapezoid ~70 px/floor": trapezoid_facade(70.0),
    "whole frame 20x10": whole_frame_facade(20, 10),
    "whole frame 10x5": whole_frame_facade(10, 5),
    "whole frame 30x12": whole_frame_facade(30, 12),
}


def real_clip_alerts(
    clip: Path,
    facade: Callable[[int, int], FacadeSettings] = real_clip_facade,
    max_frames: int | None = None,
) -> tuple[list[ThrowEvent], int, float]:
    """Throw alerts over a real clip (camera motion and cuts included; its first ``max_frames``
    when given) under a calibration made for its frame size: alerts, frames, seconds."""
    cap = cv2.VideoCapture(str(clip))
    ok, frame = cap.read()
    if not ok:
        raise FileNotFoundError(f"cannot read {clip}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    det = ThrowDetector(facade(frame.shape[1], frame.shape[0]), frame.shape[1::-1], fps, clip.name)
    events: list[ThrowEvent] = []
    i = 0
    while ok and (max_frames is None or i < max_frames):
        events += det.process(frame, i)
        i += 1
        ok, frame = cap.read()
    cap.release()
    return events + det.finish(), i, i / fps


def report_real_clips() -> None:
    clips = sorted(REAL_CLIPS_DIR.glob("*")) if REAL_CLIPS_DIR.exists() else []
    print(f"\n=== real clips ({REAL_CLIPS_DIR}), alerts per calibration ===")
    names = list(REAL_CLIP_CALIBRATIONS)
    print("  " + " | ".join(f"{n}" for n in names))
    totals = dict.fromkeys(names, 0)
    seconds = 0.0
    for clip in clips:
        row = []
        for name, facade in REAL_CLIP_CALIBRATIONS.items():
            events, frames, secs = real_clip_alerts(clip, facade)
            totals[name] += len(events)
            row.append(len(events))
        seconds += secs
        print(f"  {clip.name} ({frames} frames): {row}", flush=True)
    for name in names:
        print(f"  total {name}: {totals[name]} alert(s) in {len(clips)} clips, {seconds / 60:.1f} min")


def report(name: str, throw_results: list[ScenarioResult], fa_results: list[ScenarioResult]) -> dict:
    every = [(t, e, t.visible_frames >= MIN_VISIBLE_S * r.scenario.fps) for r in throw_results for t, e in r.matched]
    pairs = [(t, e) for t, e, in_view in every if in_view]
    hidden = [e for _, e, in_view in every if not in_view]
    print(f"\n=== {name} ===")
    print(
        f"throws: {len(every)} in {len(throw_results)} scenes; {len(hidden)} hidden behind trees "
        f"(in view < {MIN_VISIBLE_S} s, not scored; {sum(e is not None for e in hidden)} found anyway)"
    )

    def rate(sel):
        sel = list(sel)
        return (sum(e is not None for _, e in sel), len(sel))

    for lo, hi in SIZE_BINS:
        d, n = rate((t, e) for t, e in pairs if lo <= t.size_px < hi)
        print(f"  size {lo:>2}-{hi - 1:<2} px: {d}/{n} detected" + (f" = {100 * d / n:.1f} %" if n else ""))
    for lo, hi in FLOOR_BINS:
        d, n = rate((t, e) for t, e in pairs if lo <= t.floor <= hi and t.size_px >= 5)
        print(f"  floor {lo:>2}-{hi:<2} (size>=5): {d}/{n}" + (f" = {100 * d / n:.1f} %" if n else ""))
    big = [(t, e) for t, e in pairs if t.size_px >= 5]
    d, n = rate(big)
    det_rate = d / n if n else float("nan")
    found = [(t, e) for t, e in pairs if e is not None]
    ferr = np.array([e.floor - t.floor for t, e in found])
    cerr = np.array([e.column - t.column for t, e in found])
    print(f"  detection rate size>=5 px: {d}/{n} = {100 * det_rate:.1f} %")
    if len(found):
        print(
            f"  floor exact {100 * np.mean(ferr == 0):.1f} %, "
            f"within +-1 {100 * np.mean(np.abs(ferr) <= 1):.1f} %, "
            f"mean abs err {np.mean(np.abs(ferr)):.2f}, bias {np.mean(ferr):+.2f}"
        )
        print(
            f"  column exact {100 * np.mean(cerr == 0):.1f} %, "
            f"within +-1 {100 * np.mean(np.abs(cerr) <= 1):.1f} %"
        )
        rel = np.array([e.origin.release_frame - t.release_frame for t, e in found])
        print(f"  release time error: median {np.median(np.abs(rel)) / 25:.3f} s")
    dups = sum(r.duplicates for r in throw_results)
    fa_throw = sum(len(r.false_alarms) for r in throw_results)
    hours_t = sum(r.scenario.n_frames / r.scenario.fps for r in throw_results) / 3600
    fa = sum(len(r.false_alarms) for r in fa_results)
    hours = sum(r.scenario.n_frames / r.scenario.fps for r in fa_results) / 3600
    print(f"  duplicates: {dups}; false alarms in throw scenes: {fa_throw} ({hours_t * 60:.1f} min)")
    if fa_results:
        print(f"  distractor-only: {fa} false alarms in {hours * 60:.1f} min = {fa / hours:.2f} per hour")
    return {
        "detection": det_rate,
        "floor_exact": float(np.mean(ferr == 0)) if len(found) else 0.0,
        "false_alarms": fa,
    }


def run_suite(suite, label: str) -> list[ScenarioResult]:
    results = []
    t0 = time.perf_counter()
    for sc, frames in suite:
        results.append(run_scenario(sc, frames))
    print(f"[{label}: {len(results)} scenes in {time.perf_counter() - t0:.0f} s]", flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40, help="throw scenes per seed set")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--fa-minutes", type=float, default=15.0, help="distractor-only minutes per seed set")
    ap.add_argument("--only", choices=list(SEED_SETS), default=None)
    ap.add_argument("--no-real", action="store_true", help="skip the real-clip check")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    for key, seeds in SEED_SETS.items():
        if args.only and key != args.only:
            continue
        name = f"{key} seeds {seeds.start}-{seeds.start + args.n - 1}"
        throws = run_suite(throw_suite(seeds, args.n, args.width, args.height), "throw scenes")
        fas = run_suite(
            distractor_suite(seeds, args.fa_minutes, args.width, args.height), "distractor scenes"
        )
        if args.verbose:
            for r in throws + fas:
                for t, e in r.matched:
                    if e is None or e.floor != t.floor:
                        print(
                            f"   seed {r.scenario.seed} {r.scenario.background[-30:]} "
                            f"{r.scenario.distractors} "
                            f"truth f{t.floor} c{t.column} size {t.size_px:.1f} light {t.light} "
                            f"in view {t.visible_frames} frames "
                            f"frames {t.release_frame}-{t.end_frame} -> "
                            + (
                                "MISSED"
                                if e is None
                                else f"f{e.floor} c{e.column} v={e.origin.v:.2f} {e.start_frame}"
                            )
                        )
                for e in r.false_alarms:
                    print(
                        f"   seed {r.scenario.seed} {r.scenario.distractors} "
                        f"FALSE ALARM f{e.floor} c{e.column} "
                        f"frames {e.start_frame}-{e.end_frame} acc {e.accel_ratio:.2f}"
                    )
        report(name, throws, fas)
    if not args.no_real:
        report_real_clips()


if __name__ == "__main__":
    main()
