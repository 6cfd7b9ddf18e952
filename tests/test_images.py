"""Bad input gets a clear error, never a crash or a half-decoded image."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vision.images import ImageError, decode_image, load_image


def _jpeg(width: int, height: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty file"),
    (b"GIF89a this is not really an image", "not a decodable image"),
    (b"%PDF-1.4 a document", "not a decodable image"),
    (_jpeg(640, 480)[:200], "not a decodable image"),
    (_jpeg(8, 8), "too small"),
])
def test_bad_bytes_are_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        decode_image(data)


def test_decompression_bomb_is_refused_before_allocation() -> None:
    ok, buf = cv2.imencode(".png", np.zeros((8000, 8000), np.uint8))
    assert ok and len(buf) < 200_000
    with pytest.raises(ImageError, match="pixels"):
        decode_image(buf.tobytes())


def test_size_limit_in_bytes() -> None:
    with pytest.raises(ImageError, match="limit"):
        decode_image(_jpeg(64, 64), max_bytes=100)


def test_grey_and_alpha_images_become_bgr(tmp_path: Path) -> None:
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((40, 50), 200, np.uint8))
    rgba = tmp_path / "rgba.png"
    cv2.imwrite(str(rgba), np.full((40, 50, 4), 90, np.uint8))
    for path in (grey, rgba):
        image = load_image(path)
        assert image.shape == (40, 50, 3) and image.dtype == np.uint8


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "absent.jpg")
