"""Face quality for enrolment: a template is only as good as the photo it came from.

A resident enrolled from a tiny, blurred or turned-away face is matched poorly for years, so
enrolment refuses such photos with a reason the operator can act on (take another photo).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class QualityLimits:
    min_face_px: float = 60.0
    min_sharpness: float = 40.0
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
    return (min(face_px / (2 * limits.min_face_px), 1.0) * sharpness_factor
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
    if abs(yaw) > limits.max_yaw:
        problems.append(f"turned_away: yaw {yaw:+.2f}, limit {limits.max_yaw:.2f}")
    if abs(roll_deg) > limits.max_roll_deg:
        problems.append(f"tilted: roll {roll_deg:+.0f} deg, limit {limits.max_roll_deg:.0f}")
    score = _score(face_px, min(sharpness / (3 * limits.min_sharpness), 1.0), yaw, limits)
    return FaceQuality(face_px, sharpness, yaw, roll_deg, round(float(score), 4), tuple(problems))
