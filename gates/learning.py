"""Learning at the gate: a certain pass adds its gate-camera face to the resident's templates.

Residents are enrolled from phone photos and recognised by gate cameras, which see them smaller,
softer and from above; templates taken from the gate itself close that gap. But a template the
gate adds also lets in whoever it came from, so only passes that leave no doubt may teach:

- the track's agreeing votes number at least `min_votes` and their mean similarity reaches
  `threshold`, set above the accept threshold and above every stranger's score in the benchmark
  (dlib: 0.975 against the highest stranger 0.966 to a two-photo template, benchmarks/face_accuracy);
- the face is checked against the resident's *enrolled* templates alone, at the same threshold: a
  learned template can never be the reason the next one is learned, so a chain of look-alikes
  cannot walk the template away from the person an operator enrolled;
- liveness said "real" (no learning where liveness is off or unavailable);
- at most `keep` learned templates per resident, the oldest replaced, each recorded with the access
  event it came from, and all of them removable at once (Gallery.forget_learned).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gates.gallery import Gallery


@dataclass(frozen=True)
class LearningPolicy:
    threshold: float
    min_votes: int = 3
    keep: int = 3
    min_liveness: float = 0.5

    def __post_init__(self) -> None:
        if self.min_votes < 1 or self.keep < 1:
            raise ValueError(f"need min_votes >= 1 and keep >= 1, got {self.min_votes} and {self.keep}")


@dataclass(frozen=True)
class Pass:
    """What a gate camera's unlock brings: whom it matched, the mean of the agreeing votes'
    embeddings and of their similarities, how many agreed, and liveness (None: not checked)."""

    resident_id: int
    embedding: np.ndarray
    similarity: float
    votes: int
    liveness: float | None
    event_id: int
    camera_id: str


@dataclass(frozen=True)
class Lesson:
    """Whether the pass taught a template: its face_id, or why not."""

    face_id: int | None
    reason: str

    @property
    def learned(self) -> bool:
        return self.face_id is not None


def learn_from_pass(gallery: Gallery, policy: LearningPolicy, passed: Pass) -> Lesson:
    if passed.liveness is None or passed.liveness < policy.min_liveness:
        return Lesson(None, "liveness not confirmed")
    if passed.votes < policy.min_votes:
        return Lesson(None, f"{passed.votes} agreeing votes, need {policy.min_votes}")
    if passed.similarity < max(policy.threshold, gallery.accept_threshold):
        return Lesson(None, f"similarity {passed.similarity:.3f} below the learning threshold {policy.threshold}")
    anchor = gallery.enrolled_template(passed.resident_id)
    if anchor is None:
        return Lesson(None, "no enrolled template to check against")
    embedding = passed.embedding / np.linalg.norm(passed.embedding)
    to_enrolled = float(anchor @ embedding)
    if to_enrolled < policy.threshold:
        return Lesson(None, f"similarity to the enrolled photos {to_enrolled:.3f} below {policy.threshold}")
    face_id = gallery.learn_face(passed.resident_id, embedding, passed.event_id,
                                 f"gate:{passed.camera_id}", policy.keep)
    return Lesson(face_id, "learned")
