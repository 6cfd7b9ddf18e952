"""`gatewatch analyze VIDEO --camera CAMERA.yaml`: run a camera's pipeline over a recorded video.

Gate and door cameras print their access decisions, facade cameras their throws. With --json,
one JSON object per event is printed on its own line as soon as it is known, so the output can
be piped; these are the events the live service records for the same camera.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2

from vision.cameras import CameraConfig, CameraConfigError, load_camera
from vision.throws import ThrowDetector
from vision.throws.evidence import EvidenceRecorder


def add_analyze_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="video file to analyse")
    parser.add_argument("--camera", required=True, help="camera YAML file (role, calibration)")
    parser.add_argument("--data-dir", default="./gatewatch-data", help="evidence goes to DATA_DIR/evidence/")
    parser.add_argument("--json", action="store_true", help="one JSON line per event on stdout")
    parser.add_argument("--no-evidence", action="store_true", help="do not write images and clips")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--unlocks", type=Path, default=None,
                        help="gate cameras: also write the unlock decisions to this JSON file (a list)")
    parser.add_argument("--liveness", choices=("auto", "on", "off"), default="auto",
                        help="gate cameras: presentation-attack check with the MiniFASNet pair; auto uses it "
                             "when its weights are available (as the service does), on requires it")


def _error(message: str) -> int:
    print(f"gatewatch analyze: error: {message}", file=sys.stderr)
    return 2


def run_analyze(args: argparse.Namespace) -> int:
    try:
        camera = load_camera(args.camera)
    except CameraConfigError as exc:
        return _error(str(exc))
    if not Path(args.video).is_file():
        return _error(f"video {args.video} not found")
    if camera.role in ("gate", "door"):
        return _run_gate(args, camera)
    cap = cv2.VideoCapture(str(args.video))
    if not cap.isOpened():
        return _error(f"cannot open video {args.video}")
    ok, frame = cap.read()
    if not ok:
        return _error(f"no frames in video {args.video}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    if not 1.0 <= fps <= 240.0:
        fps = 25.0
    size = (frame.shape[1], frame.shape[0])
    detector = ThrowDetector(camera.facade, size, fps, camera.id)
    recorder = None
    if not args.no_evidence:
        recorder = EvidenceRecorder(Path(args.data_dir) / "evidence", detector.calib, fps, size)
    count, index = 0, 0
    try:
        while ok:
            if recorder is not None:
                recorder.push(frame, index)
            events = detector.process(frame, index)
            index += 1
            if args.max_frames is not None and index >= args.max_frames:
                break
            if not events:
                ok, frame = cap.read()
                continue
            count += _emit(events, recorder, args.json)
            ok, frame = cap.read()
        count += _emit(detector.finish(), recorder, args.json)
    finally:
        cap.release()
        if recorder is not None:
            recorder.close()
    if not args.json:
        print(f"{count} throw(s) in {index} frames of {args.video}")
    return 0


def _emit(events: list, recorder: EvidenceRecorder | None, as_json: bool) -> int:
    for event in events:
        if recorder is not None:
            recorder.record(event)
        if as_json:
            print(json.dumps(event.alert()), flush=True)
        else:
            print(
                f"THROW floor {event.floor} column {event.column} at {event.release_time_s:.1f} s "
                f"(frames {event.start_frame}-{event.end_frame}, confidence {event.confidence:.2f})"
                + (f" evidence {event.image_path}" if event.image_path else ""),
                flush=True,
            )
    return len(events)


def _run_gate(args: argparse.Namespace, camera: CameraConfig) -> int:
    """Access decisions of a gate camera over the video, against the gallery in --data-dir."""
    from gates.analysis import analyze_gate_video
    from models.registry import ModelNotFoundError
    from vision.faces.liveness import LivenessChecker

    liveness = None
    if args.liveness != "off":
        try:
            liveness = LivenessChecker.from_registry()
        except ModelNotFoundError as exc:
            if args.liveness == "on":
                return _error(str(exc))
            print(f"gatewatch analyze: liveness off, its model is not available: {exc}", file=sys.stderr)
    unlocks = []
    try:
        for decision in analyze_gate_video(args.video, camera, args.data_dir, liveness=liveness,
                                           max_frames=args.max_frames):
            event = decision.to_json()
            if decision.decision == "unlock":
                unlocks.append(event)
            if args.json:
                print(json.dumps(event), flush=True)
            else:
                who = event["resident"]["name"] if event["resident"] else "unknown"
                print(f"frame {event['frame']} ({event['time']:.1f} s) track {event['track_id']}: "
                      f"{event['decision']} ({event['reason']}, {who})", flush=True)
    except FileNotFoundError as exc:
        return _error(str(exc))
    if args.unlocks is not None:
        args.unlocks.write_text(json.dumps(unlocks, indent=1) + "\n", encoding="utf-8")
    return 0
