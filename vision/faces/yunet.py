"""YuNet (libfacedetection) decoded in numpy on ONNX Runtime, rather than through cv2.FaceDetectorYN.

Running the graph on the project's OrtModel puts YuNet on the same providers, threads and
batching as every other model; OpenCV's wrapper would run it on OpenCV's own DNN engine. The
export is anchor-free: each stride's grid cell predicts a face-ness (cls × obj), a box as
offset + log-size in stride units, and five landmarks as offsets from the cell.

The published file pins its input to 1x3x640x640, but the network is fully convolutional (its
upsampling is by scale, its heads reshape to (1, -1, k)), so it is loaded with the batch and the
spatial axes left free: a frame is fed at its own aspect ratio, no letterbox bars, and at the
size its smallest wanted face needs, which is what makes it cheap enough for many gate cameras.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import numpy_helper

from models.runtime import OrtModel
from vision.detections import Detections
from vision.faces.mtcnn import as_bgr_image
from vision.nms import nms

STRIDES = (8, 16, 32)
# The smallest face, in input pixels, that YuNet finds reliably. Measured on the walking clip
# against MTCNN (min face 20) at full resolution: faces that came out >= 16 px at the input were
# found 149/150 times, 11-16 px 86/91 times, 10 px or less about 3 in 4; but a 71 px face alone
# on a crop, shrunk to 19 px, was missed where it was found at 24 px. 20 px leaves a margin.
SMALLEST_FACE_PX = 20
# With min_face_size, faces whose shorter side is under this fraction of it are dropped: nobody
# decides on them (the gate policy embeds faces from min_face_size up), yet each would cost a
# track its landmarks and chip on every frame. The margin lets a track start before its face
# reaches the minimum, so the first frame big enough can already vote.
KEEP_FROM = 0.8


def dynamic_graph(path: str | Path) -> bytes:
    """The YuNet graph with batch, height and width left free; the weights are untouched."""
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for axis, name in ((0, "batch"), (2, "height"), (3, "width")):
        dims[axis].dim_param = name
    del model.graph.value_info[:]
    for output in model.graph.output:
        output.type.tensor_type.ClearField("shape")
    heads = {node.input[1] for node in model.graph.node if node.op_type == "Reshape"}
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name in heads:
            shape = numpy_helper.to_array(tensor).copy()
            shape[0] = 0  # "copy the batch axis" instead of a pinned 1
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(shape, tensor.name))
    return model.SerializeToString()


class YunetDetector:
    """Faces at any size in one pass.

    The frame is scaled so that its longer side is at most input_size and, given min_face_size,
    further so that a face of min_face_size pixels becomes SMALLEST_FACE_PX at the input: a gate
    camera that only decides on faces of 60 px or more runs YuNet on a ninth of its 720p pixels,
    and faces well under that size are not reported (KEEP_FROM). Boxes and landmarks come back in
    frame pixels, for alignment on the full-resolution frame.
    """

    def __init__(self, path: str | Path, score_threshold: float = 0.6, nms_threshold: float = 0.3,
                 input_size: int = 640, min_face_size: int | None = None, threads: int | None = None) -> None:
        if input_size <= 0 or input_size % max(STRIDES):
            raise ValueError(f"input_size must be a positive multiple of {max(STRIDES)}, got {input_size}")
        if min_face_size is not None and min_face_size <= 0:
            raise ValueError(f"min_face_size must be positive, got {min_face_size}")
        self.model = OrtModel(dynamic_graph(path), threads=threads)
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.input_size = input_size
        self.min_face_size = min_face_size

    def detect(self, image_bgr: np.ndarray) -> Detections:
        """Faces largest first, boxes clipped to the image as MTCNN's are (cv2.FaceDetectorYN
        leaves them unclipped), landmarks as predicted."""
        return self.detect_many([image_bgr])[0]

    def detect_many(self, images_bgr: Sequence[np.ndarray]) -> list[Detections]:
        """detect() for several frames; frames of one size (cameras of one model) share a batch."""
        images = [as_bgr_image(image) for image in images_bgr]
        found: list[Detections | None] = [None] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(index)
        for indices in by_shape.values():
            scale = self._scale(*images[indices[0]].shape[:2])
            batch = np.stack([self._canvas(images[i], scale) for i in indices])
            outputs = self.model.run(batch.transpose(0, 3, 1, 2))
            named = dict(zip(self.model.output_names, outputs, strict=True))
            for row, index in enumerate(indices):
                found[index] = self._faces(named, row, batch.shape[1:3], scale, images[index].shape[:2])
        return [f for f in found if f is not None]

    def _scale(self, height: int, width: int) -> np.ndarray:
        """The exact (x, y) factors from frame to input pixels.

        Without min_face_size the longer side is fitted to input_size (OpenCV's letterbox).
        With it, the frame is shrunk by a whole factor k, the largest that keeps min_face_size
        at SMALLEST_FACE_PX or more (and at least the one that fits input_size): INTER_AREA on a
        whole factor takes OpenCV's fast path, measured 3.0 vs 5.0 ms for 720p to a third.
        """
        if self.min_face_size is None:
            ratio = self.input_size / max(height, width)
            size = (min(self.input_size, max(1, round(width * ratio))),
                    min(self.input_size, max(1, round(height * ratio))))
            return np.array([size[0] / width, size[1] / height], np.float32)
        factor = max(1, self.min_face_size // SMALLEST_FACE_PX, math.ceil(max(height, width) / self.input_size))
        factor = min(factor, height, width)
        return np.full(2, 1 / factor, np.float32)

    def _canvas(self, image: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """The image at scale, zero-padded bottom and right to whole multiples of the largest stride.

        A whole-factor shrink drops the last (width mod k, height mod k) pixels, at most k-1."""
        height, width = image.shape[:2]
        factor = round(1 / float(scale[0]))
        if self.min_face_size is not None:
            width, height = width - width % factor, height - height % factor
            image = image[:height, :width]
        size = (max(1, round(width * float(scale[0]))), max(1, round(height * float(scale[1]))))
        ratio = min(float(scale[0]), float(scale[1]))
        resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR)
        step = max(STRIDES)
        canvas = np.zeros((math.ceil(size[1] / step) * step, math.ceil(size[0] / step) * step, 3), np.uint8)
        canvas[:size[1], :size[0]] = resized
        return canvas

    def _faces(self, outputs: dict[str, np.ndarray], row: int, canvas_hw: tuple[int, int], scale: np.ndarray,
               image_hw: tuple[int, int]) -> Detections:
        parts = [self._decode(outputs, row, stride, canvas_hw[1] // stride) for stride in STRIDES]
        boxes, scores, landmarks = (np.concatenate(p) for p in zip(*parts, strict=True))
        keep = nms(boxes, scores, self.nms_threshold)
        height, width = image_hw
        boxes = np.clip(boxes[keep] / np.tile(scale, 2), 0, np.float32([width, height, width, height]))
        faces = Detections(boxes, scores[keep], landmarks[keep] / scale)
        if self.min_face_size is not None:
            faces = faces[faces.shorter_side >= KEEP_FROM * self.min_face_size]
        return faces.largest_first()

    def _decode(self, outputs: dict[str, np.ndarray], row: int, stride: int,
                columns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes, scores and landmarks (input-canvas pixels) of one stride's cells above threshold.

        Thresholding first means the exp() and offsets run on a handful of cells, not thousands.
        """
        cls = np.clip(outputs[f"cls_{stride}"][row, :, 0], 0, 1)
        obj = np.clip(outputs[f"obj_{stride}"][row, :, 0], 0, 1)
        scores = np.sqrt(cls * obj)
        cells = np.flatnonzero(scores >= self.score_threshold)
        rows, cols = np.divmod(cells, columns)
        origin = np.stack([cols, rows], axis=1).astype(np.float32)
        bbox = outputs[f"bbox_{stride}"][row, cells]
        centre = (origin + bbox[:, 0:2]) * stride
        half = np.exp(bbox[:, 2:4]) * stride / 2
        landmarks = (outputs[f"kps_{stride}"][row, cells].reshape(-1, 5, 2) + origin[:, None, :]) * stride
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        return boxes, scores[cells], landmarks
