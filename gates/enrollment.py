"""Enrolment: from a person's photos to templates in the gallery, all or nothing per person.

An enrolment photo must show one face that clearly dominates it (the person it was taken of): a
group photo of equals would enrol a stranger. A face too small or blurred to match is refused
unless an operator overrides it (a guard enrolling a visitor from a gate camera's snapshot), and
the override is kept with the template. Each resident should have 2-5 photos: a fused template of
two photos let in a third more residents than one photo at the same (safe) threshold
(benchmarks/face_accuracy); a resident with fewer good photos is named as weak, so that somebody
asks them for another.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gates.gallery import FaceTemplate, Gallery, Resident
from vision.faces.analyzer import FaceAnalyzer
from vision.faces.quality import FaceQuality
from vision.images import ImageError, load_image

MIN_PHOTOS, MAX_PHOTOS = 2, 5
# The largest face's shorter side over the next one's: the subject of a photo, not a bystander.
DOMINANT_RATIO = 1.5


class EnrolmentError(ValueError):
    """A photo cannot be used for enrolment. `reason` is a stable code, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class EnrolmentFace:
    embedding: np.ndarray
    quality: FaceQuality
    box: np.ndarray
    overridden: tuple[str, ...] = ()  # quality problems an operator chose to enrol anyway

    @property
    def note(self) -> str | None:
        """What is kept with the template: overridden problems, then weaknesses."""
        parts = [f"override: {p}" for p in self.overridden] + list(self.quality.weaknesses)
        return "; ".join(parts) or None


@dataclass(frozen=True)
class TemplateStrength:
    """How well a resident's templates can be expected to match. `good`: enrolled photos without a
    weakness or override; weak when fewer than MIN_PHOTOS of them, with `advice` saying what to do."""

    enrolled: int
    good: int
    learned: int
    weak: bool
    advice: str | None


def template_strength(faces: Sequence[FaceTemplate]) -> TemplateStrength:
    enrolled = [f for f in faces if not f.learned]
    good = sum(f.note is None for f in enrolled)
    advice = None
    if not enrolled:
        advice = "no photo enrolled"
    elif good < MIN_PHOTOS:
        poor = len(enrolled) - good
        advice = (f"{len(enrolled)} photo(s), {poor} of them weak: enrol {MIN_PHOTOS - good} more clear, "
                  f"frontal photo(s)")
    return TemplateStrength(len(enrolled), good, len(faces) - len(enrolled), advice is not None, advice)


@dataclass(frozen=True)
class Problem:
    source: str
    reason: str
    message: str


@dataclass(frozen=True)
class PersonResult:
    name: str
    resident: Resident | None
    face_ids: tuple[int, ...]
    problems: tuple[Problem, ...]
    strength: TemplateStrength | None = None


def enrolment_face(analyzer: FaceAnalyzer, image_bgr: np.ndarray, *,
                   override_quality: bool = False) -> EnrolmentFace:
    """The face an enrolment photo was taken of, or an EnrolmentError saying what is wrong.
    `override_quality`: enrol a face whose quality would be refused (the problems are kept)."""
    faces = analyzer.analyze(image_bgr)  # largest first
    if len(faces) == 0:
        raise EnrolmentError("no_face", "no face found")
    sides = faces.detections.shorter_side
    if len(faces) > 1 and sides[0] < DOMINANT_RATIO * sides[1]:
        sizes = ", ".join(f"{s:.0f}" for s in sides[:5])
        raise EnrolmentError("several_faces",
                             f"{len(faces)} faces of similar size ({sizes} px): crop the photo to the person "
                             f"to enrol (the largest face must be {DOMINANT_RATIO:g} x the next)")
    quality = faces.quality[0]
    if not quality.ok and not override_quality:
        code = quality.problems[0].split(":", 1)[0]
        raise EnrolmentError(code, "; ".join(quality.problems) + " (an operator may override)")
    return EnrolmentFace(faces.embeddings[0], quality, faces.detections.boxes[0], quality.problems)


def enroll_person(gallery: Gallery, analyzer: FaceAnalyzer, name: str, photos: Iterable[Path], *,
                  override_quality: bool = False) -> PersonResult:
    """Store the usable photos of one person in one transaction (the MAX_PHOTOS best, counting
    those already enrolled); report the others."""
    good: list[tuple[str, EnrolmentFace]] = []
    problems: list[Problem] = []
    for photo in photos:
        try:
            good.append((str(photo), enrolment_face(analyzer, load_image(photo), override_quality=override_quality)))
        except ImageError as exc:
            problems.append(Problem(str(photo), "bad_image", str(exc)))
        except EnrolmentError as exc:
            problems.append(Problem(str(photo), exc.reason, str(exc)))
    existing = gallery.find_resident_by_name(name)
    room = MAX_PHOTOS - (0 if existing is None else template_strength(gallery.faces_of(existing.id)).enrolled)
    good.sort(key=lambda item: (item[1].overridden != (), -item[1].quality.score))
    for source, _ in good[max(room, 0):]:
        problems.append(Problem(source, "enough_photos", f"{MAX_PHOTOS} better photos are enrolled; not used"))
    good = good[:max(room, 0)]
    if not good:
        return PersonResult(name, existing, (), tuple(problems))
    embeddings = np.stack([face.embedding for _, face in good])
    qualities = [face.quality.score for _, face in good]
    sources = [source for source, _ in good]
    notes = [face.note for _, face in good]
    if existing is None:
        resident, face_ids = gallery.add_resident_with_faces(name, embeddings, qualities, sources, notes=notes)
    else:
        resident, face_ids = existing, gallery.add_faces(existing.id, embeddings, qualities, sources, notes)
    return PersonResult(name, resident, tuple(face_ids), tuple(problems),
                        template_strength(gallery.faces_of(resident.id)))
