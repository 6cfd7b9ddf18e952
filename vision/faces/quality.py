"""Face quality for enrolment: a template is only as good as the photo it came from.

A resident enrolled from a tiny, blurred or turned-away face is matched poorly for years. What
poor quality does was measured (benchmarks/enrol_quality: every shared photo, also shrunk, blurred
and JPEG-compressed as a gate camera does): blur and small faces lower the person's own scores
step by step (at sharpness 10-20, 39 % of looks reach the default threshold; at 20-40, 62 %; above
80, 80 %) but do not raise strangers' (impostor p95 0.95 in every bin). So a soft photo makes a
weak template, not an unsafe one: enrolment refuses only where matching is all but hopeless
(sharpness under 10: 12 % or less; faces under 40 px) and names the rest as weaknesses, so that
the operator is told to add a better photo.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class QualityLimits:
    """Below min_*: refused. Below weak_*: accepted, named as a weakness. The score's scales
    (a full score from 2 x weak_face_px and 6 x weak_sharpness) are what gate tracks compare."""

    min_face_px: float = 40.0
    min_sharpness: float = 10.0
    weak_face_px: float = 60.0
    weak_sharpness: float = 20.0
    max_yaw: float = 0.45
    max_roll_deg: float = 30.0


@dataclass(frozen=True)
class FaceQuality:
    """face_px: the shorter side of the face box; sharpness: variance of the Laplacian of the
    aligned chip (scale-free because every chip has the same size); yaw: nose offset from the
    eyes' midline in eye-distance units (0 = frontal); roll_deg: eye-line angle."""

    face_px: float
    sharpness: float
    yaw: float
    roll_deg: float
    score: float
    problems: tuple[str, ...]
    weaknesses: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def _geometry(box: np.ndarray, landmarks: np.ndarray) -> tuple[float, float, float]:
    """face_px, yaw and roll_deg (see FaceQuality) from the box and the detector landmarks."""
    face_px = float(min(box[2] - box[0], box[3] - box[1]))
    right_eye, left_eye, nose = landmarks[0], landmarks[1], landmarks[2]
    eye_vec = left_eye - right_eye
    eye_dist = float(np.hypot(*eye_vec)) or 1e-6
    roll_deg = float(np.degrees(np.arctan2(eye_vec[1], eye_vec[0])))
    # Signed distance of the nose from the perpendicular bisector of the eyes, in eye distances.
    yaw = float(np.dot(nose - (right_eye + left_eye) / 2, eye_vec / eye_dist) / eye_dist)
    return face_px, yaw, roll_deg


def _score(face_px: float, sharpness_factor: float, yaw: float, limits: QualityLimits) -> float:
    return (min(face_px / (2 * limits.weak_face_px), 1.0) * sharpness_factor
            * max(0.0, 1.0 - abs(yaw) / (2 * limits.max_yaw)))


def score_ceiling(box: np.ndarray, landmarks: np.ndarray, limits: QualityLimits = QualityLimits()) -> float:
    """The best score `assess` could give this face, whatever its chip's sharpness (a factor of at
    most 1): a video pipeline skips aligning faces that could not be worth embedding anyway."""
    face_px, yaw, _ = _geometry(box, landmarks)
    return _score(face_px, 1.0, yaw, limits)


def assess(box: np.ndarray, landmarks: np.ndarray, chip_bgr: np.ndarray,
           limits: QualityLimits = QualityLimits()) -> FaceQuality:
    """Quality of one face from its box, its detector landmarks (ArcFace order) and its chip."""
    face_px, yaw, roll_deg = _geometry(box, landmarks)
    gray = cv2.cvtColor(chip_bgr, cv2.COLOR_BGR2GRAY)
    sharpness = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    problems = []
    if face_px < limits.min_face_px:
        problems.append(f"too_small: face is {face_px:.0f} px, need {limits.min_face_px:.0f}")
    if sharpness < limits.min_sharpness:
        problems.append(f"too_blurry: sharpness {sharpness:.0f}, need {limits.min_sharpness:.0f}")
    weaknesses = []
    if limits.min_face_px <= face_px < limits.weak_face_px:
        weaknesses.append(f"small: face is {face_px:.0f} px, {limits.weak_face_px:.0f} or more matches better")
    if limits.min_sharpness <= sharpness < limits.weak_sharpness:
        weaknesses.append(f"soft: sharpness {sharpness:.0f}, {limits.weak_sharpness:.0f} or more matches better")
    if abs(yaw) > limits.max_yaw:
        problems.append(f"turned_away: yaw {yaw:+.2f}, limit {limits.max_yaw:.2f}")
    if abs(roll_deg) > limits.max_roll_deg:
        problems.append(f"tilted: roll {roll_deg:+.0f} deg, limit {limits.max_roll_deg:.0f}")
    score = _score(face_px, min(sharpness / (6 * limits.weak_sharpness), 1.0), yaw, limits)
    return FaceQuality(face_px, sharpness, yaw, roll_deg, round(float(score), 4), tuple(problems), tuple(weaknesses))
