"""YuNet (libfacedetection) decoded in numpy on ONNX Runtime, rather than through cv2.FaceDetectorYN.

Running the graph on the project's OrtModel puts YuNet on the same providers, threads and
batching as every other model; OpenCV's wrapper would run it on OpenCV's own DNN engine. The
export is anchor-free: each stride's grid cell predicts a face-ness (cls × obj), a box as
offset + log-size in stride units, and five landmarks as offsets from the cell.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from models.runtime import OrtModel
from vision.detections import Detections
from vision.mtcnn import as_bgr_image, as_model
from vision.nms import nms

STRIDES = (8, 16, 32)


class YunetDetector:
    """Faces at any size in one pass over a letterboxed square input."""

    def __init__(self, model: OrtModel | str | Path, score_threshold: float = 0.6,
                 nms_threshold: float = 0.3, input_size: int = 640) -> None:
        self.model = as_model(model)
        fixed = [d for d in self.model.input_shape[2:4] if isinstance(d, int)]
        if any(d != input_size for d in fixed):
            raise ValueError(f"model input is {self.model.input_shape}, not {input_size}x{input_size}")
        if input_size % max(STRIDES):
            raise ValueError(f"input_size must be a multiple of {max(STRIDES)}, got {input_size}")
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.input_size = input_size

    def detect(self, image_bgr: np.ndarray) -> Detections:
        """Faces largest first, boxes clipped to the image as MTCNN's are (cv2.FaceDetectorYN
        leaves them unclipped), landmarks as predicted."""
        image = as_bgr_image(image_bgr)
        canvas, scale = self._letterbox(image)
        outputs = dict(zip(self.model.output_names, self.model.run(canvas.transpose(2, 0, 1)[None]),
                           strict=True))
        parts = [self._decode(outputs, stride) for stride in STRIDES]
        boxes, scores, landmarks = (np.concatenate(p) for p in zip(*parts, strict=True))
        keep = nms(boxes, scores, self.nms_threshold)
        height, width = image.shape[:2]
        boxes = np.clip(boxes[keep] / np.tile(scale, 2), 0, np.float32([width, height, width, height]))
        return Detections(boxes, scores[keep], landmarks[keep] / scale).largest_first()

    def _letterbox(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The image scaled so its longer side fills the input, zero-padded bottom and right, and
        the exact (x, y) scale applied, sizes being rounded."""
        height, width = image.shape[:2]
        ratio = self.input_size / max(height, width)
        size = (min(self.input_size, max(1, round(width * ratio))),
                min(self.input_size, max(1, round(height * ratio))))
        resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR)
        canvas = np.zeros((self.input_size, self.input_size, 3), np.uint8)
        canvas[:size[1], :size[0]] = resized
        return canvas, np.array([size[0] / width, size[1] / height], np.float32)

    def _decode(self, outputs: dict[str, np.ndarray],
                stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes, scores and landmarks (input-canvas pixels) of one stride's cells above threshold.

        Thresholding first means the exp() and offsets run on a handful of cells, not thousands.
        """
        cls = np.clip(outputs[f"cls_{stride}"][0, :, 0], 0, 1)
        obj = np.clip(outputs[f"obj_{stride}"][0, :, 0], 0, 1)
        scores = np.sqrt(cls * obj)
        cells = np.flatnonzero(scores >= self.score_threshold)
        rows, cols = np.divmod(cells, self.input_size // stride)
        origin = np.stack([cols, rows], axis=1).astype(np.float32)
        bbox = outputs[f"bbox_{stride}"][0, cells]
        centre = (origin + bbox[:, 0:2]) * stride
        half = np.exp(bbox[:, 2:4]) * stride / 2
        landmarks = (outputs[f"kps_{stride}"][0, cells].reshape(-1, 5, 2) + origin[:, None, :]) * stride
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        return boxes, scores[cells], landmarks
