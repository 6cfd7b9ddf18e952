"""Face alignment: each embedder gets chips cut the way its training chips were cut.

* dlib's ResNet: 150x150 chips from dlib's 5 landmarks, padding 0.25, cut like dlib's
  get_face_chip_details + extract_image_chip (dlib/image_transforms/interpolation.h), including
  its quirks: the chip rectangle spans (size*scale - 1) pixels over size-1 chip pixels, samples
  are bilinear and truncated (not rounded) to uint8, a sample whose 2x2 neighbourhood leaves the
  image is black, and a face much larger than the chip is first shrunk with dlib's 5-tap image
  pyramid (the pyramid changes the chip by several grey levels, enough to move the embedding).
* ArcFace-format models: 112x112 chips from the detector's 5 points by a least-squares
  similarity onto the ArcFace template, as insightface's norm_crop does.

Transforms are (N,2,3) affine matrices mapping image pixels to chip pixels (cv2.warpAffine's
convention), so callers can also map points or use OpenCV with them.
"""

from __future__ import annotations

import cv2
import numpy as np

# dlib's mean 5-point face in its unit chip (get_face_chip_details), in its predictor's order:
# image-right eye outer then inner corner, image-left eye outer then inner corner, base of nose.
DLIB_CHIP_TEMPLATE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)

# insightface's arcface_dst for 112x112 chips, in the detector's order: right eye (image left),
# left eye, nose tip, right mouth corner, left mouth corner.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)


def similarity_transforms(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarities (N,2,3) taking points src (N,P,2) onto dst (N,P,2); either may
    be one shared (P,2) set.

    This is Umeyama's estimate (what dlib's find_similarity_transform and skimage compute) in
    its closed 2-D form: with centred points x, y, the linear part is [[a,-b],[b,a]] with
    a = sum(x.y)/sum|x|^2 and b = sum(x cross y)/sum|x|^2. It never reflects.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    src, dst = np.broadcast_arrays(src if src.ndim == 3 else src[None], dst if dst.ndim == 3 else dst[None])
    src_mean, dst_mean = src.mean(axis=1), dst.mean(axis=1)
    x, y = src - src_mean[:, None], dst - dst_mean[:, None]
    norm = np.sum(x * x, axis=(1, 2))
    norm = np.where(norm > 0, norm, 1.0)
    a = np.sum(x * y, axis=(1, 2)) / norm
    b = np.sum(x[..., 0] * y[..., 1] - x[..., 1] * y[..., 0], axis=1) / norm
    linear = np.stack([np.stack([a, -b], -1), np.stack([b, a], -1)], -2)
    offset = dst_mean - np.einsum("nij,nj->ni", linear, src_mean)
    return np.concatenate([linear, offset[..., None]], axis=-1)


def invert_affine(transforms: np.ndarray) -> np.ndarray:
    transforms = np.asarray(transforms, np.float64)
    linear_inv = np.linalg.inv(transforms[..., :2])
    offset = -np.einsum("...ij,...j->...i", linear_inv, transforms[..., 2])
    return np.concatenate([linear_inv, offset[..., None]], axis=-1)


def dlib_chip_transforms(landmarks5_dlib: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """Image->chip affines (N,2,3) of dlib's get_face_chip_details for 5-point dlib shapes.

    dlib fits the similarity from its template to the landmarks but keeps only its angle and
    scale: the chip rectangle is centred on the fitted image of chip point (size//2, size//2),
    has size*scale pixels a side counted inclusively, and chip pixels 0 and size-1 land on its
    edges. The transform returned is that exact sampling geometry.
    """
    points = np.asarray(landmarks5_dlib, np.float64).reshape(-1, 5, 2)
    template = (padding + DLIB_CHIP_TEMPLATE) / (2 * padding + 1) * size
    fit = similarity_transforms(template, points)
    angle = np.arctan2(fit[:, 1, 0], fit[:, 0, 0])
    scale = np.hypot(fit[:, 0, 0], fit[:, 1, 0])
    center = fit[:, :, :2] @ np.array([size // 2, size // 2], np.float64) + fit[:, :, 2]
    half = (size * scale - 1) / 2
    step = 2 * half / (size - 1)
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    linear = rotation * step[:, None, None]
    offset = center - np.einsum("nij,nj->ni", rotation, np.stack([half, half], -1))
    return invert_affine(np.concatenate([linear, offset[..., None]], axis=-1))


def arcface_transforms(landmarks5: np.ndarray, size: int = 112) -> np.ndarray:
    """Image->chip affines (N,2,3) putting the detector's 5 points on the ArcFace template.

    Sizes other than 112 follow insightface's estimate_norm: multiples of 112 scale the
    template, other sizes scale it as a 128 chip with the 8-pixel horizontal margin. insightface
    cuts its chips with a plain cv2.warpAffine (vision.faces.ArcFaceAligner does the same).
    """
    points = np.asarray(landmarks5, np.float64).reshape(-1, 5, 2)
    if size % 112 == 0:
        template = ARCFACE_TEMPLATE * (size / 112)
    else:
        template = ARCFACE_TEMPLATE * (size / 128) + np.array([8 * size / 128, 0.0])
    return similarity_transforms(points, template)


def warp_chips(
    image_bgr: np.ndarray, transforms: np.ndarray, size: int, *, pyramid: bool = True
) -> np.ndarray:
    """Cut (N,size,size,C) uint8 chips, same channel order as the image, the way dlib's
    extract_image_chip samples: bilinear, truncated, black outside, and (with `pyramid`) from
    dlib's 2x image pyramid level that is still at least the chip's resolution.

    The bilinear samples come from cv2.warpAffine on the float image (weights in 1/32 steps, a
    few hundred-thousandths of a grey level from dlib's double arithmetic before truncation;
    measured 1 pixel in ~14,000 one level off) at a ninth of the cost of sampling in numpy."""
    image = np.asarray(image_bgr)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 (H,W) or (H,W,C) image, got {image.dtype} {image.shape}")
    chip_to_image = invert_affine(np.asarray(transforms, np.float64).reshape(-1, 2, 3))
    chips = np.zeros((len(chip_to_image), size, size, *image.shape[2:]), np.uint8)
    for chip, tform in zip(chips, chip_to_image, strict=True):
        source, tform = _chip_source(image, tform, size, pyramid)
        chip[...] = _sample_bilinear(source, tform, size)
    return chips


def _chip_source(image: np.ndarray, tform: np.ndarray, size: int, pyramid: bool) -> tuple[np.ndarray, np.ndarray]:
    """dlib's extract_image_chips choice of source: crop the chip's rotated rectangle (plus a
    margin), shrink it with pyramid_down<2> while the next level would still have more pixels
    than the chip (with `pyramid`), and re-express the chip->source mapping on that level."""
    corners = np.array([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]], np.float64)
    rotated = corners @ tform[:, :2].T + tform[:, 2]
    # dlib's rectangles count pixels inclusively: rect_down takes a w-wide one to (w-1)/2 + 1.
    width, height = (np.linalg.norm(tform[:, :2], axis=0) * (size - 1)) / 2 + 1
    depth, grow = 0, 2.0
    while pyramid and width * height > size * size:
        width, height = (width - 1) / 2 + 1, (height - 1) / 2 + 1
        depth, grow = depth + 1, grow * 2 + 2
    rows, cols = image.shape[:2]
    low = np.maximum(rotated.min(axis=0) - grow, 0)
    high = np.minimum(rotated.max(axis=0) + grow, [cols - 1, rows - 1])
    left, top = np.floor(low + 0.5).astype(int)
    right, bottom = np.floor(high + 0.5).astype(int)
    source = image[top : max(bottom + 1, top), left : max(right + 1, left)]
    tform = tform - np.array([[0, 0, left], [0, 0, top]], np.float64)
    for _ in range(depth):
        source = pyramid_down(source)
        tform = tform / 2 - np.array([[0, 0, 1.25], [0, 0, 0.75]])
    return source, tform


def pyramid_down(image: np.ndarray) -> np.ndarray:
    """dlib's pyramid_down<2>: separable [1 4 6 4 1] filter, every other pixel, integer /256.

    Output pixel (r, c) is centred on input (2r+2, 2c+2); images of 8 pixels or fewer a side
    vanish, as in dlib. The filter runs in float32, where these integer sums (at most
    16*16*255) are exact, so the result is dlib's bit for bit.
    """
    rows, cols = image.shape[:2]
    if rows <= 8 or cols <= 8:
        return np.zeros((0, 0, *image.shape[2:]), np.uint8)
    out_rows, out_cols = (rows - 3) // 2, (cols - 3) // 2
    taps = np.array([1, 4, 6, 4, 1], np.float32)
    summed = cv2.sepFilter2D(image, cv2.CV_32F, taps, taps, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
    return (summed[0 : 2 * out_rows : 2, 0 : 2 * out_cols : 2] / 256).astype(np.uint8)


def _sample_bilinear(image: np.ndarray, tform: np.ndarray, size: int) -> np.ndarray:
    """dlib's interpolate_bilinear at the chip's pixel centres (tform: chip -> image): truncated
    to uint8, and black where a sample's 2x2 neighbourhood leaves the image."""
    rows, cols = image.shape[:2]
    if rows < 2 or cols < 2:
        return np.zeros((size, size, *image.shape[2:]), np.uint8)
    sampled = cv2.warpAffine(image.astype(np.float32), tform, (size, size),
                             flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
    grid = np.arange(size, dtype=np.float64)
    x = (tform[0, 0] * grid)[None, :] + (tform[0, 1] * grid)[:, None] + tform[0, 2]
    y = (tform[1, 0] * grid)[None, :] + (tform[1, 1] * grid)[:, None] + tform[1, 2]
    inside = (x >= 0) & (y >= 0) & (x < cols - 1) & (y < rows - 1)
    chip = np.clip(sampled, 0, 255).astype(np.uint8)
    chip[~inside] = 0
    return chip


# dlib's frontal (HOG) face detector box around a face, in ArcFace-template pixels (the frame in
# which a detector's 5 points best match ARCFACE_TEMPLATE by a similarity): centre and half side.
# Fitted on 158 faces of shared/data (faces_east_asian/ and groups/, images scaled to <= 1024 px):
# dlib.get_frontal_face_detector() boxes (upsample 1) paired by IoU >= 0.3 with YuNet
# (yunet_s_640_640) detections; each box mapped into the template frame by the inverse of that
# face's similarity; the constants are the medians. Per-face scatter is about 3-4 template px on
# the centre and 10% on the size; a linear model on the normalised points did no better. Held out
# on faces/ (95 faces), dlib's predictor from these boxes lands 0.46 px (0.6% of the inter-ocular
# distance) from where it lands from dlib's own detector boxes.
DLIB_BOX_CENTRE = np.array([54.71, 69.76])
DLIB_BOX_HALF_SIDE = 45.26


def rect_from_landmarks(landmarks5_detector: np.ndarray) -> np.ndarray:
    """The box (N,4) left, top, right, bottom (dlib's inclusive rectangle) that dlib's frontal
    face detector would put around each face, from a detector's 5 points in ArcFace order.

    dlib's shape predictor was trained on its own detector's boxes and starts its cascade from
    the box, so another detector's box (tighter, taller, shifted) would bias its landmarks.
    The box stays axis-aligned, as dlib's is, whatever the roll of the face.
    """
    points = np.asarray(landmarks5_detector, np.float64).reshape(-1, 5, 2)
    to_image = similarity_transforms(ARCFACE_TEMPLATE, points)
    centre = to_image[:, :, :2] @ DLIB_BOX_CENTRE + to_image[:, :, 2]
    half = DLIB_BOX_HALF_SIDE * np.hypot(to_image[:, 0, 0], to_image[:, 1, 0])
    return np.concatenate([centre - half[:, None], centre + half[:, None]], axis=1)
