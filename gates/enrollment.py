"""Enrolment: from a person's photos to templates in the gallery, all or nothing per person.

An enrolment photo must show exactly one usable face: a group photo would enrol a stranger, a
tiny or blurred face would make a template that fails at the gate for years.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gates.gallery import Gallery, Resident
from vision.faces.analyzer import FaceAnalyzer
from vision.faces.quality import FaceQuality
from vision.images import ImageError, load_image


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


def enrolment_face(analyzer: FaceAnalyzer, image_bgr: np.ndarray) -> EnrolmentFace:
    """The single usable face of an enrolment photo, or an EnrolmentError saying what is wrong."""
    faces = analyzer.analyze(image_bgr)
    if len(faces) == 0:
        raise EnrolmentError("no_face", "no face found")
    if len(faces) > 1:
        raise EnrolmentError("several_faces",
                             f"{len(faces)} faces found; an enrolment photo must show one person")
    quality = faces.quality[0]
    if not quality.ok:
        code = quality.problems[0].split(":", 1)[0]
        raise EnrolmentError(code, "; ".join(quality.problems))
    return EnrolmentFace(faces.embeddings[0], quality, faces.detections.boxes[0])


def enroll_person(gallery: Gallery, analyzer: FaceAnalyzer, name: str,
                  photos: Iterable[Path]) -> PersonResult:
    """Store every usable photo of one person in one transaction; report the others."""
    good: list[tuple[str, EnrolmentFace]] = []
    problems: list[Problem] = []
    for photo in photos:
        try:
            good.append((str(photo), enrolment_face(analyzer, load_image(photo))))
        except ImageError as exc:
            problems.append(Problem(str(photo), "bad_image", str(exc)))
        except EnrolmentError as exc:
            problems.append(Problem(str(photo), exc.reason, str(exc)))
    if not good:
        return PersonResult(name, None, (), tuple(problems))
    embeddings = np.stack([face.embedding for _, face in good])
    qualities = [face.quality.score for _, face in good]
    sources = [source for source, _ in good]
    existing = gallery.find_resident_by_name(name)
    if existing is None:
        resident, face_ids = gallery.add_resident_with_faces(name, embeddings, qualities, sources)
    else:
        resident, face_ids = existing, gallery.add_faces(existing.id, embeddings, qualities, sources)
    return PersonResult(name, resident, tuple(face_ids), tuple(problems))
