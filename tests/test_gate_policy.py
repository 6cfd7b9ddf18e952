"""How much a gate camera does per frame when a group stands in front of it: the tracker embeds at
most `max_embeds_per_frame` faces a frame, the tracks with the fewest votes first, so every face
still gets its turn (a still group photo of real people held as a camera's frames)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vision.face_tracks import GatePolicy, GateTracker
from vision.faces import FaceAnalyzer
from vision.streams import Frame


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
