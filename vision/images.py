"""Decoding images from files and uploads, with the limits a door-opening service needs.

Every failure is an ImageError whose message says what is wrong, so that callers (CLI, API)
can report it and move on instead of crashing on a corrupt, empty, huge or non-image file.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
# OpenCV refuses, from the header and before allocating, images above this many pixels: a small
# PNG that inflates to gigabytes (a decompression bomb) then fails like any undecodable file.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

MIN_SIDE = 16


class ImageError(ValueError):
    """The input is not an image gatewatch can use; the message says why."""


def decode_image(data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Bytes of a JPEG/PNG/... -> BGR uint8 (H,W,3); grey and alpha images are converted."""
    if not data:
        raise ImageError("empty file")
    if len(data) > max_bytes:
        raise ImageError(f"file is {len(data)} bytes, more than the limit of {max_bytes}")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageError(f"image refused by the decoder: more than {MAX_PIXELS} pixels or malformed "
                         f"({str(exc).strip().splitlines()[-1][:120]})") from None
    if image is None:
        raise ImageError("not a decodable image (corrupt, truncated, not an image format, "
                         f"or over {MAX_PIXELS} pixels)")
    height, width = image.shape[:2]
    if height * width > max_pixels:
        raise ImageError(f"image is {width}x{height}, more than {max_pixels} pixels")
    if min(height, width) < MIN_SIDE:
        raise ImageError(f"image is {width}x{height}, too small to hold a face")
    return image


def load_image(path: str | Path, **limits: int) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        return decode_image(data, **limits)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from None


def face_crop_jpeg(chip_bgr: np.ndarray) -> bytes:
    """An aligned face chip as the JPEG kept with an access event (setting retain_crops)."""
    ok, encoded = cv2.imencode(".jpg", chip_bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise ValueError(f"cannot encode a {chip_bgr.dtype} {chip_bgr.shape} chip as JPEG")
    return encoded.tobytes()
