"""Face quality: the gate tracker skips aligning faces whose best possible score could not earn an
embedding, so that bound must never be below the score `assess` gives once the chip is cut."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from vision.faces.analyzer import build_analyzer
from vision.faces.quality import assess, score_ceiling


def test_the_ceiling_bounds_the_score_on_real_faces(faces_dir: Path) -> None:
    analyzer = build_analyzer("open")
    pairs = []
    for person in sorted(d for d in faces_dir.iterdir() if d.is_dir())[:6]:
        for path in sorted(person.iterdir())[:3]:
            image = cv2.imread(str(path))
            image = cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)  # some faces small
            faces = analyzer.detector.detect(image)
            if not len(faces):
                continue
            chips = analyzer.aligner.chips(image, faces)
            for box, points, chip in zip(faces.boxes, faces.landmarks, chips, strict=True):
                pairs.append((score_ceiling(box, points, analyzer.quality_limits),
                              assess(box, points, chip, analyzer.quality_limits).score))
    ceilings, scores = np.array(pairs).T
    assert len(pairs) >= 15
    assert np.all(ceilings + 1e-4 >= scores)
    assert np.any(ceilings > scores + 0.05)  # blur does cost some faces: the bound is not the score itself
