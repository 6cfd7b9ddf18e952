"""How much a gate camera does per frame when a group stands in front of it: the tracker embeds at
most `max_embeds_per_frame` faces a frame, the tracks with the fewest votes first, so every face
still gets its turn; strangers stop being embedded once their votes say unknown, and only faces
that name a resident are checked for liveness (a still group photo of real people held as a
camera's frames)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from gates.gallery import Match
from vision.faces.analyzer import FaceAnalyzer
from vision.faces.liveness import LivenessChecker, LivenessResult
from vision.faces.tracks import GateDecision, GatePolicy, GateTracker
from vision.frames import Frame


@pytest.fixture(scope="module")
def group(shared_data: Path) -> np.ndarray:
    image = cv2.imread(str(shared_data / "groups" / "insightface_t1.jpg"))
    if image is None:
        pytest.skip("groups/insightface_t1.jpg not readable")
    return image


def _nobody(embeddings: np.ndarray) -> list[None]:
    return [None] * len(embeddings)


@pytest.mark.parametrize("cap", [1, 2])
def test_a_group_is_embedded_a_few_faces_a_frame_fewest_votes_first(
        analyzer: FaceAnalyzer, group: np.ndarray, cap: int) -> None:
    faces = analyzer.detector.detect(group)
    policy = GatePolicy(min_face_px=float(faces.shorter_side.min()), max_embeds_per_frame=cap, refresh_s=0.0,
                        near_best=0.0)
    tracker = GateTracker("cam", analyzer, _nobody, policy=policy, fps=10.0)
    per_frame = []
    for index in range(8):
        before = tracker.embeddings_computed
        tracker.step(Frame("cam", index, index / 10, group))
        per_frame.append(tracker.embeddings_computed - before)
    votes = sorted(len(track.votes) for track in tracker.tracks.values())
    assert len(faces) >= 4 and len(votes) == len(faces)
    assert max(per_frame) == cap and sum(per_frame) >= 6 * cap
    assert votes[0] >= 1 and votes[-1] - votes[0] <= 1, f"every face takes its turn: votes {votes}"


def _everyone_is_alice(embeddings: np.ndarray) -> list[Match]:
    return [Match(1, "alice", 0.9, 0.5, 1) for _ in embeddings]


class _CountingLiveness(LivenessChecker):
    """The real MiniFASNet pair, counting the faces it is asked about."""

    def __init__(self, pair: LivenessChecker) -> None:
        super().__init__(pair.members)
        self.faces = 0

    def check(self, image_bgr: np.ndarray, boxes: np.ndarray) -> LivenessResult:
        self.faces += len(boxes)
        return super().check(image_bgr, boxes)


def _hold(tracker: GateTracker, image: np.ndarray, seconds: float, start: float = 0.0) -> list[GateDecision]:
    """The image as a 10 fps camera's frames for `seconds`, from `start`; the decisions made."""
    decisions = []
    first = round(start * 10)
    for index in range(first, first + round(seconds * 10)):
        decisions += tracker.step(Frame("cam", index, index / 10, image))
    return decisions


def test_strangers_standing_still_are_embedded_only_until_their_votes_say_unknown(
        analyzer: FaceAnalyzer, group: np.ndarray) -> None:
    faces = analyzer.detector.detect(group)
    policy = GatePolicy(min_face_px=float(faces.shorter_side.min()))
    tracker = GateTracker("cam", analyzer, _nobody, policy=policy, fps=10.0)
    decisions = _hold(tracker, group, policy.deny_after_s - 0.2)  # the same faces, the same quality
    votes = [len(track.votes) for track in tracker.tracks.values()]
    assert len(votes) == len(faces) >= 4
    assert votes == [policy.votes_needed] * len(faces), votes
    assert tracker.embeddings_computed == policy.votes_needed * len(faces)
    assert decisions == []
    # Not embedded any more, still denied on time: deny_after_s after each one's first vote.
    decisions = _hold(tracker, group, 0.6, start=policy.deny_after_s - 0.2)
    assert sorted(d.track_id for d in decisions) == sorted(tracker.tracks)
    assert all(d.decision == "deny" and d.reason == "unknown" for d in decisions)
    assert tracker.embeddings_computed == policy.votes_needed * len(faces)


@pytest.mark.parametrize(("identify", "checked"), [(_nobody, False), (_everyone_is_alice, True)])
def test_only_faces_that_name_a_resident_are_checked_for_liveness(
        analyzer: FaceAnalyzer, group: np.ndarray, liveness_pair: LivenessChecker, identify, checked: bool) -> None:
    faces = analyzer.detector.detect(group)
    liveness = _CountingLiveness(liveness_pair)
    tracker = GateTracker("cam", analyzer, identify, policy=GatePolicy(min_face_px=float(faces.shorter_side.min())),
                          fps=10.0, liveness=liveness)
    _hold(tracker, group, 1.5)
    if checked:
        # The pooled verdict needs three frames of every face; a printed group photo is what it sees.
        assert liveness.faces >= 3 * len(faces)
        assert all(len(track.real) >= 3 for track in tracker.tracks.values())
    else:
        assert liveness.faces == 0 and len(tracker.tracks) == len(faces)


@pytest.mark.parametrize("clock", ["index", "running sum"])
def test_a_still_face_is_re_embedded_every_refresh_period_whatever_the_clock_rounding(
        analyzer: FaceAnalyzer, group: np.ndarray, clock: str) -> None:
    """0.3 s at 10 fps is every third frame, though 1.2 - 0.9 < 0.3 in floating point and a
    running sum of 0.1 drifts the other way."""
    x1, y1, x2, y2 = analyzer.detector.detect(group).boxes[0].astype(int)
    pad = x2 - x1
    face = np.ascontiguousarray(group[max(0, y1 - pad):y2 + pad, max(0, x1 - pad):x2 + pad])
    policy = GatePolicy(min_face_px=10.0, votes_needed=5, window=5, better_by=10.0, near_best=0.0, refresh_s=0.3,
                        deny_after_s=10.0)
    tracker = GateTracker("cam", analyzer, _nobody, policy=policy, fps=10.0)
    embedded, now = [], 0.0
    for index in range(15):
        before = tracker.embeddings_computed
        tracker.step(Frame("cam", index, index / 10 if clock == "index" else now, face))
        now += 0.1
        if tracker.embeddings_computed > before:
            embedded.append(index)
    assert embedded == [1, 4, 7, 10, 13]  # ByteTrack confirms a track on its second frame


def test_an_empty_view_is_looked_at_every_other_frame_and_a_face_from_its_first_frames(
        analyzer: FaceAnalyzer, group: np.ndarray) -> None:
    """An empty doorway costs detection on one frame in idle_detect_every; a group stepping in is
    detected one frame later at most, then on every frame while anyone is in view."""
    faces = analyzer.detector.detect(group)
    tracker = GateTracker("cam", analyzer, _nobody, policy=GatePolicy(min_face_px=float(faces.shorter_side.min())),
                          fps=10.0)
    doorway = np.full_like(group, 128)
    detected = []
    for index, image in enumerate([doorway] * 5 + [group] * 6 + [doorway] * 6):
        before = tracker.detections_run
        tracker.step(Frame("cam", index, index / 10, image))
        if tracker.detections_run > before:
            detected.append(index)
    # The group is in frames 5-10. Frame 5 follows an empty detection (4) and is skipped: the group
    # is found on frame 6. Frame 11, the first empty one, is still looked at; then every other.
    assert detected == [0, 2, 4, *range(6, 12), 13, 15]
    assert len(tracker.tracks) == len(faces)
