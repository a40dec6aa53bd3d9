"""FFHQ's alignment of a photographed face: the framing a real FFHQ StyleGAN2 generator was trained on.

The rule (Karras et al. 2019, the alignment of the FFHQ data set; the constants are the package's one copy in
:mod:`cddfm3d.editing.labels`), from the 68 iBUG landmarks (pixels, x right, y down):

* eye_left = mean of points 36-41, eye_right = mean of 42-47, mouth = mean of the corners 48 and 54;
  eye_avg = their eye mean, eye_to_eye = eye_right - eye_left, eye_to_mouth = mouth - eye_avg;
* x = eye_to_eye - rot90(eye_to_mouth) with rot90(a, b) = (-b, a), scaled to the length
  max(``FFHQ_EYE_FACTOR`` |eye_to_eye|, ``FFHQ_MOUTH_FACTOR`` |eye_to_mouth|); y = rot90(x) (x points to the
  image-right of the face, y down it);
* centre c = eye_avg + ``FFHQ_CENTRE_SHIFT`` eye_to_mouth; the crop is the square quad with corners c - x - y,
  c - x + y, c + x + y, c + x - y (top-left, bottom-left, bottom-right, top-right), side 2 |x|, resampled to
  size x size.

Pixel convention: as everywhere in the package, pixel centres sit on integer coordinates in the photo and in the
crop, so the quad's corners are the outer corners of the crop's corner pixels: crop point (u, v) is the photo point
TL + ((u + 1/2) / S) (TR - TL) + ((v + 1/2) / S) (BL - TL) (S = size). The quad's centre c is the crop's centre
((S - 1) / 2, (S - 1) / 2) and |x| is S / 2 crop pixels.

Resampling: when the quad is at least twice the crop's side, the photo region is first box-reduced by the integer
factor k = floor(2 |x| / S) (each output pixel the mean of k x k photo pixels), so that the final bicubic affine
resampling (Pillow's ``Image.transform``: cubic convolution with a = -1 on 4 x 4 pixels) shrinks by less than 2
and does not alias (FFHQ's own script also shrinks before it transforms). The area of the quad outside the photo
is filled by edge padding (the nearest photo pixel), not black, so that a generator is not asked to reproduce a
black border it never saw (FFHQ padded by reflection and blur; edge padding is the simpler choice made here).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..editing.labels import FFHQ_CENTRE_SHIFT, FFHQ_EYE_FACTOR, FFHQ_MOUTH_FACTOR
from ..face3d.align import _check_landmarks, extract_5p
from ..images import rgb_uint8

MAX_QUAD_RATIO = 8.0     # a quad wider than 8 x the photo's larger side comes from landmarks that are not a face


def _rot90(v: np.ndarray) -> np.ndarray:
    """(a, b) -> (-b, a) on the last axis."""
    return np.stack([-v[..., 1], v[..., 0]], -1)


def _landmarks68(landmarks, who: str) -> np.ndarray:
    lm = np.asarray(landmarks.detach().cpu() if hasattr(landmarks, "detach") else landmarks, np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"{who}: expected the 68 iBUG landmarks [68, 2] (x, y in pixels), found {lm.shape}")
    if not np.isfinite(lm).all():
        bad = np.flatnonzero(~np.isfinite(lm).all(-1))[:8].tolist()
        raise ValueError(f"degenerate landmarks: the landmarks given to {who} contain NaN/Inf (points {bad})")
    return lm


def ffhq_quad(landmarks) -> np.ndarray:
    """FFHQ's crop quad [4, 2] float64 of a face with 68 iBUG landmarks [68, 2] (numpy or torch; pixels, x right,
    y down): the corners top-left, bottom-left, bottom-right, top-right (c - x - y, c - x + y, c + x + y,
    c + x - y; the module docstring gives the rule), in the landmarks' pixels. A square of side 2 |x|.

    Raises ``ValueError`` for another shape, NaN/Inf, or landmarks whose eyes and mouth coincide (no square)."""
    lm = _landmarks68(landmarks, "ffhq_quad")
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (lm[48] + lm[54]) / 2 - eye_avg
    x = eye_to_eye - _rot90(eye_to_mouth)
    length = max(FFHQ_EYE_FACTOR * np.linalg.norm(eye_to_eye), FFHQ_MOUTH_FACTOR * np.linalg.norm(eye_to_mouth))
    norm = np.linalg.norm(x)
    if not (norm > 1e-9 and length > 1e-9):
        raise ValueError(f"degenerate landmarks: ffhq_quad found coinciding eyes and mouth (eyes {eye_left.tolist()}, "
                         f"{eye_right.tolist()}; mouth {(eye_avg + eye_to_mouth).tolist()}), so no crop square")
    x = x / norm * length
    y = _rot90(x)
    c = eye_avg + FFHQ_CENTRE_SHIFT * eye_to_mouth
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def _check_quad(quad) -> np.ndarray:
    q = np.asarray(quad, np.float64)
    if q.shape != (4, 2) or not np.isfinite(q).all():
        raise ValueError(f"expected an FFHQ quad [4, 2] of finite corners (top-left, bottom-left, bottom-right, "
                         f"top-right), found {q.shape}")
    return q


def quad_affine(quad, size: int) -> np.ndarray:
    """The affine map [2, 3] float64 from crop pixels to photo pixels (both with pixel centres on integers) of a
    crop of ``size`` x ``size`` cut from ``quad`` ([4, 2], :func:`ffhq_quad`'s corner order):
    photo = M[:, :2] @ (u, v) + M[:, 2]. The top-left, top-right and bottom-left corners define it (a square quad
    is a parallelogram)."""
    q = _check_quad(quad)
    tl, bl, tr = q[0], q[1], q[3]
    a = np.stack([(tr - tl) / size, (bl - tl) / size], 1)        # columns: photo step per crop pixel in u, in v
    return np.concatenate([a, (tl + a @ np.array([0.5, 0.5]))[:, None]], 1)


def crop_to_photo(points, quad, size: int) -> np.ndarray:
    """Crop pixel coordinates [..., 2] (x right, y down) of an FFHQ crop of ``size`` px cut from ``quad`` -> photo
    pixel coordinates, float64 (:func:`quad_affine`)."""
    m = quad_affine(quad, size)
    p = np.asarray(points, np.float64)
    return p @ m[:, :2].T + m[:, 2]


def photo_to_crop(points, quad, size: int) -> np.ndarray:
    """Photo pixel coordinates [..., 2] -> crop pixel coordinates of an FFHQ crop of ``size`` px cut from
    ``quad``, float64 (the inverse of :func:`crop_to_photo`)."""
    m = quad_affine(quad, size)
    p = np.asarray(points, np.float64)
    return (p - m[:, 2]) @ np.linalg.inv(m[:, :2]).T


@dataclass
class FfhqAligned:
    """Result of :func:`ffhq_align`. image: uint8 RGB [S, S, 3]; landmarks: [68, 2] float64 in the crop (y down);
    quad: [4, 2] float64 corners in the photo (:func:`ffhq_quad`); reduce: the integer box-reduction factor used
    before the affine resampling (1: none)."""

    image: np.ndarray
    landmarks: np.ndarray
    quad: np.ndarray
    reduce: int


def ffhq_align(image, landmarks, size: int) -> FfhqAligned:
    """Cut a face out of ``image`` (uint8 [H, W(, 1|3|4)] array: RGB, grayscale or RGBA) by FFHQ's alignment of its
    68 iBUG ``landmarks`` [68, 2] (pixels of ``image``, y down) at ``size`` x ``size`` px (a real generator's
    resolution: 1024 for FFHQ). Resampling and padding as the module docstring says.

    Returns :class:`FfhqAligned`. Raises ``ValueError`` for another image dtype or layout, landmarks of another
    shape, with NaN/Inf, collapsed, collinear or all outside the image, or whose quad is more than
    ``MAX_QUAD_RATIO`` times the image's larger side."""
    from PIL import Image

    who = "ffhq_align"
    img = rgb_uint8(image, who)
    lm = _landmarks68(landmarks, who)
    h, w = img.shape[:2]
    _check_landmarks(lm, extract_5p(lm), h, w, who)
    quad = ffhq_quad(lm)
    side = float(np.linalg.norm(quad[3] - quad[0]))
    if side > MAX_QUAD_RATIO * max(h, w):
        raise ValueError(f"{who}: the landmarks give a crop square of side {side:.4g} px, more than "
                         f"{MAX_QUAD_RATIO:g} x the {w}x{h} photo; landmarks of another image?")
    k = max(1, int(math.floor(side / size)))
    # the photo region under the quad (pixel-edge coordinates: centre + 1/2), with a margin for the bicubic kernel
    # (2 reduced pixels) and a width and height that are multiples of k, taken with edge padding
    edges = quad + 0.5
    margin = 2 * k + 2
    x0, y0 = (int(math.floor(v)) - margin for v in edges.min(0))
    x1, y1 = (int(math.ceil(v)) + margin for v in edges.max(0))
    x1, y1 = x0 + -(-(x1 - x0) // k) * k, y0 + -(-(y1 - y0) // k) * k
    cols, rows = np.clip(np.arange(x0, x1), 0, w - 1), np.clip(np.arange(y0, y1), 0, h - 1)
    region = Image.fromarray(np.ascontiguousarray(img[rows[:, None], cols[None, :]]))
    if k > 1:
        region = region.reduce(k)
    # output pixel-edge point (U, V) -> region pixel-edge point: ((photo centre coords + 1/2) - origin) / k
    m = quad_affine(quad, size)
    a = m[:, :2] / k
    t = (m[:, 2] + 0.5 - a @ np.array([0.5, 0.5]) * k - np.array([x0, y0])) / k
    data = (a[0, 0], a[0, 1], t[0], a[1, 0], a[1, 1], t[1])
    out = region.transform((size, size), Image.Transform.AFFINE, data, resample=Image.Resampling.BICUBIC)
    return FfhqAligned(np.array(out, np.uint8), photo_to_crop(lm, quad, size), quad, k)


__all__ = ["MAX_QUAD_RATIO", "FfhqAligned", "crop_to_photo", "ffhq_align", "ffhq_quad", "photo_to_crop",
           "quad_affine"]
