"""The currency of the face pipeline: one batch of faces found in one image.

Every stage (detector, landmark refiner, aligner, embedder, matcher) takes and returns these
arrays rather than lists of dicts, so a batch can be sliced, sorted and filtered in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Detections:
    """N faces: boxes (N,4) x1,y1,x2,y2 pixels; scores (N,); landmarks (N,5,2) or None.

    Landmarks are the detector's own five points in the ArcFace order: right eye (image left),
    left eye, nose tip, right mouth corner, left mouth corner.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray | None = None
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(scores) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        if self.landmarks is not None:
            landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(-1, 5, 2)
            if len(landmarks) != len(boxes):
                raise ValueError(f"{len(boxes)} boxes but {len(landmarks)} landmark sets")
            object.__setattr__(self, "landmarks", landmarks)
        for key, value in self.data.items():
            if len(value) != len(boxes):
                raise ValueError(f"data[{key!r}] has {len(value)} rows for {len(boxes)} boxes")

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: int | slice | np.ndarray) -> Detections:
        if isinstance(index, int | np.integer):
            index = np.array([index])
        return Detections(
            self.boxes[index],
            self.scores[index],
            None if self.landmarks is None else self.landmarks[index],
            {k: v[index] for k, v in self.data.items()},
        )

    @property
    def area(self) -> np.ndarray:
        wh = np.clip(self.boxes[:, 2:] - self.boxes[:, :2], 0, None)
        return wh[:, 0] * wh[:, 1]

    @property
    def shorter_side(self) -> np.ndarray:
        """Each box's shorter side, the face size that gate policies and quality limits use."""
        wh = np.clip(self.boxes[:, 2:] - self.boxes[:, :2], 0, None)
        return wh.min(axis=1)

    def largest_first(self) -> Detections:
        return self[np.argsort(-self.area, kind="stable")]

    def with_data(self, **columns: np.ndarray) -> Detections:
        return Detections(self.boxes, self.scores, self.landmarks, {**self.data, **columns})
