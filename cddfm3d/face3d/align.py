"""5-point face alignment to the reconstruction network's input, as Deep3DFaceRecon's ``align_img``
(reference face3d.md §3.2).

Pipeline: (68 landmarks -> 5 points) -> POS least-squares fit of an affine camera to the 5-point 3D
template -> scale s (pixels per dm) and the image position t of the template origin -> resize the whole
image by s' = rescale / s (102 px/dm at 224 px) -> crop size x size centred on t.

Coordinates. All landmarks given to and returned by this module use the package's image convention:
x right, y **down**, pixel centres on integers (as detectors and ``FaceOutput.landmarks``). Deep3D works
with y up (y' = H - 1 - y); we convert internally, so the numbers match Deep3D's exactly after that flip.
``trans_params = [w0, h0, s', t_x, t_y]`` as in Deep3D (t in Deep3D's y-up original-image coordinates).

Two implementations:

* :func:`align_image` -- numpy + PIL (bicubic resize, then crop), bit-for-bit Deep3D's procedure.
* :func:`align_tensor` -- batched torch, differentiable w.r.t. the images: one ``affine_grid`` /
  ``grid_sample`` per batch that samples the original image where PIL's resize-then-crop would. When the
  image is shrunk (s' < 1) and ``antialias=True`` it first resizes with ``F.interpolate(antialias=True)``
  (PIL-like filtering) and then crops with ``grid_sample`` at integer offsets (an exact copy).
  ``exact=False`` uses the untruncated geometry (no ``int()``), so gradients also reach the landmarks.

Bad input. Landmarks are checked before any geometry (:func:`landmark_problem`): NaN/Inf, placeholder rows that
video pipelines write for "no face" (all 0, all -1: the 5 points collapse to one), collinear points, and points that
all lie outside the image raise ``ValueError("degenerate landmarks: ...")``. The thresholds are relative (to the
image size and to the points' own spread), so a tiny but valid face in a small image passes. Images of another
dtype, layout or bit depth are refused with the conversion to use, chosen by the range of their values
(:func:`value_range_kind`) and written in numpy or torch form as given. Resampling never leaves the input's value
range: PIL clips its 8-bit output, and :func:`align_tensor` clamps the bicubic overshoot (``clamp=True``).

Landmarks follow Deep3D's formula ``(lm - t + (w0/2, h0/2)) * s' - (w/2 - size/2, h/2 - size/2)`` (in y-up
coordinates). Note: that formula and the image resampling disagree by up to ~1 px (half-pixel terms
and the int truncation of w, h, left, up); we keep it unchanged because the official network was trained
with it.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# The 5-point 3D template (dm, y up) in 5-point order: left eye, right eye, nose tip, left and right mouth
# corner (image-left/right). From Deep3D's similarity_Lm3D_all.mat (face3d.md §3.2).
TEMPLATE_5P = np.array([[-0.3115, 0.2904, 0.1338],
                        [0.3098, 0.2897, 0.1318],
                        [0.0033, -0.0462, 0.5524],
                        [-0.2522, -0.3813, 0.2241],
                        [0.2485, -0.3813, 0.2224]], dtype=np.float64)
DEEP3D_SIZE = 224
DEEP3D_RESCALE = 102.0


# Degeneracy thresholds of :func:`landmark_problem` (both scale-invariant). The 5 alignment points of a real face have
# a ratio of the two principal spreads >= 0.48 at any yaw in [-90, 90] and pitch in [-60, 60] degrees (the template
# rotated); 0.05 leaves a wide margin. The spread floor is 1e-4 of the image's larger side (0.06 px at 640 px).
MIN_SPREAD = 1e-4
MIN_FLATNESS = 0.05


def landmark_problem(landmarks, height: int, width: int) -> str | None:
    """Why 2D landmarks [K, 2] (pixels, any K >= 2; use the 5 alignment points) cannot be a face, or None.

    With the principal spreads s1 >= s2 of the centred points (singular values of the [K, 2] matrix):
    NaN/Inf -> "contain NaN/Inf"; s1 <= ``MIN_SPREAD`` * max(H, W) -> "are collapsed to one point" (placeholder
    rows); s2 <= ``MIN_FLATNESS`` * s1 -> "are collinear"; every point outside the image enlarged by 5% on each side
    -> "all lie outside the image" (each reads after "the landmarks ..."). All tests are ratios, so scaling image and
    landmarks together never changes the verdict.
    """
    p = np.asarray(landmarks.detach().cpu() if isinstance(landmarks, torch.Tensor) else landmarks, np.float64)
    bad = ~np.isfinite(p).all(-1)
    if bad.any():
        return f"contain NaN/Inf (points {np.flatnonzero(bad)[:8].tolist()})"
    c = p - p.mean(0)
    s1, s2 = np.linalg.svd(c, compute_uv=False)[:2]
    if s1 <= MIN_SPREAD * max(height, width):
        return (f"are collapsed to one point (spread {s1:.3g} px, image {width}x{height}; placeholder rows such as "
                f"all 0 or all -1 mean that no face was detected)")
    if s2 <= MIN_FLATNESS * s1:
        return f"are collinear (spread ratio {s2 / s1:.3g} < {MIN_FLATNESS}; not the eyes, nose and mouth of a face)"
    inside = ((p[:, 0] >= -0.05 * width) & (p[:, 0] <= 1.05 * width)
              & (p[:, 1] >= -0.05 * height) & (p[:, 1] <= 1.05 * height))
    if not inside.any():
        return (f"all lie outside the {width}x{height} image (x in [{p[:, 0].min():.4g}, {p[:, 0].max():.4g}], y in "
                f"[{p[:, 1].min():.4g}, {p[:, 1].max():.4g}]); landmarks of another image size, or (y, x) order?")
    return None


def _check_landmarks(lm, lm5, height: int, width: int, who: str, sample: int | None = None) -> None:
    """NaN/Inf anywhere in the K given points, then the geometry of the 5 alignment points."""
    where = "" if sample is None else f" of sample {sample}"
    lm = np.asarray(lm.detach().cpu() if isinstance(lm, torch.Tensor) else lm, np.float64)
    bad = ~np.isfinite(lm).all(-1)
    problem = (f"contain NaN/Inf (points {np.flatnonzero(bad)[:8].tolist()})" if bad.any()
               else landmark_problem(lm5, height, width))
    if problem is not None:
        raise ValueError(f"degenerate landmarks: the landmarks{where} given to {who} {problem}")


def default_rescale(size: int) -> float:
    """Pixels per dm of the aligned crop: 102 at 224 px, proportional at other sizes."""
    return DEEP3D_RESCALE * size / DEEP3D_SIZE


# --------------------------------------------------------------------------------------------- 68 -> 5
def extract_5p(landmarks):
    """68 iBUG landmarks [..., 68, 2] -> 5 points [..., 5, 2] (numpy or torch, same type out).

    Order (0-based ids): mean(36, 39) left eye, mean(42, 45) right eye, 30 nose tip, 48 and 54 mouth corners.
    """
    if tuple(landmarks.shape[-2:]) != (68, 2):
        raise ValueError(f"extract_5p: expected landmarks [..., 68, 2], found {tuple(landmarks.shape)}")
    lm = landmarks
    parts = [(lm[..., 36, :] + lm[..., 39, :]) / 2, (lm[..., 42, :] + lm[..., 45, :]) / 2,
             lm[..., 30, :], lm[..., 48, :], lm[..., 54, :]]
    if isinstance(lm, torch.Tensor):
        return torch.stack(parts, -2)
    return np.stack(parts, -2)


def _five(landmarks, who: str):
    shape = tuple(landmarks.shape)
    if len(shape) < 2 or shape[-1] != 2 or shape[-2] not in (5, 68):
        hint = ""
        if len(shape) >= 2 and shape[-1] == 3 and shape[-2] in (5, 68):
            hint = " (3D landmarks? pass the image coordinates landmarks[..., :2])"
        elif len(shape) >= 2 and shape[-2] == 2 and shape[-1] in (5, 68):
            hint = " (transposed? pass [K, 2] rows of (x, y))"
        elif len(shape) >= 2 and shape[-1] * shape[-2] in (10, 136) or len(shape) == 1 and shape[0] in (10, 136):
            hint = " (flat? reshape to [K, 2] rows of (x, y))"
        raise ValueError(f"{who}: expected landmarks [..., 5, 2] or [..., 68, 2], found {shape}{hint}")
    return landmarks if shape[-2] == 5 else extract_5p(landmarks)


# --------------------------------------------------------------------------------------------- POS
def pos(points_2d, points_3d=TEMPLATE_5P):
    """Least-squares affine camera (Deep3D's POS): points_2d [K, 2] ~ A @ [points_3d, 1]^T.

    Solves the 8 unknowns (two rows (r, t) of an affine camera) by least squares; the scale is the mean of
    the norms of the two 3-vectors r1, r2, the translation is (t1, t2) = the image of the 3D origin.
    Works in whatever 2D frame the points are given (Deep3D: y up). Returns (t [2], s) as float64 numpy.
    """
    xp = np.asarray(points_2d, dtype=np.float64)
    x = np.asarray(points_3d, dtype=np.float64)
    if xp.ndim != 2 or xp.shape[1] != 2 or x.shape != (xp.shape[0], 3) or xp.shape[0] < 4:
        raise ValueError(f"pos: expected points_2d [K, 2] and points_3d [K, 3] with K >= 4, found "
                         f"{xp.shape} and {x.shape}")
    k = xp.shape[0]
    a = np.zeros((2 * k, 8))
    a[0::2, 0:3], a[0::2, 3] = x, 1.0
    a[1::2, 4:7], a[1::2, 7] = x, 1.0
    b = xp.reshape(-1)
    sol = np.linalg.lstsq(a, b, rcond=None)[0]
    s = (np.linalg.norm(sol[0:3]) + np.linalg.norm(sol[4:7])) / 2.0
    return np.array([sol[3], sol[7]]), float(s)


def pos_torch(points_2d: torch.Tensor, points_3d=TEMPLATE_5P):
    """Batched, differentiable :func:`pos`: points_2d [B, K, 2] -> (t [B, 2], s [B]), computed in float64
    (normal equations; the template's 4 x 4 moment matrix is well conditioned) and cast back."""
    if points_2d.ndim != 3 or points_2d.shape[-1] != 2:
        raise ValueError(f"pos_torch: expected points_2d [B, K, 2], found {tuple(points_2d.shape)}")
    x = torch.as_tensor(np.asarray(points_3d, np.float64), device=points_2d.device)
    if x.shape != (points_2d.shape[1], 3):
        raise ValueError(f"pos_torch: points_3d must be [{points_2d.shape[1]}, 3], found {tuple(x.shape)}")
    xh = torch.cat([x, x.new_ones(x.shape[0], 1)], 1)                  # [K, 4]
    # The two rows decouple: [r1 t1] = lstsq(xh, u), [r2 t2] = lstsq(xh, v).
    rows = torch.linalg.solve(xh.T @ xh, xh.T @ points_2d.double())     # [B, 4, 2]
    r1, r2 = rows[:, :3, 0], rows[:, :3, 1]
    s = (r1.norm(dim=-1) + r2.norm(dim=-1)) / 2.0
    t = rows[:, 3, :]
    return t.to(points_2d.dtype), s.to(points_2d.dtype)


# --------------------------------------------------------------------------------------------- geometry
def crop_geometry(trans_params, size: int = DEEP3D_SIZE, exact: bool = True):
    """(w, h, left, up) of Deep3D's resize-and-crop for ``trans_params = [w0, h0, s', t_x, t_y]``.

    ``exact``: Deep3D's int() truncations (toward zero); otherwise the continuous values.
    """
    w0, h0, s, tx, ty = (float(v) for v in np.asarray(trans_params, np.float64).reshape(5))
    w, h = w0 * s, h0 * s
    if exact:
        w, h = int(w), int(h)
    left = w / 2 - size / 2 + (tx - w0 / 2) * s
    up = h / 2 - size / 2 + (h0 / 2 - ty) * s
    if exact:
        left, up = int(left), int(up)
    return w, h, left, up


def _to_up(lm, height):
    """y-down <-> y-up (an involution): (x, H - 1 - y)."""
    if isinstance(lm, torch.Tensor):
        return torch.stack([lm[..., 0], (height - 1) - lm[..., 1]], -1)
    lm = np.asarray(lm, np.float64)
    return np.stack([lm[..., 0], (height - 1) - lm[..., 1]], -1)


def align_landmarks(landmarks, trans_params, size: int = DEEP3D_SIZE):
    """Map landmarks [K, 2] (y down, original image) into the aligned crop (y down), Deep3D's formula."""
    w0, h0, s, tx, ty = np.asarray(trans_params, np.float64).reshape(5)
    w, h, _, _ = crop_geometry(trans_params, size)
    up = _to_up(np.asarray(landmarks, np.float64), h0)
    new = (up - np.array([tx, ty]) + np.array([w0 / 2, h0 / 2])) * s - np.array([w / 2 - size / 2, h / 2 - size / 2])
    return _to_up(new, size)


def unalign_landmarks(landmarks, trans_params, size: int = DEEP3D_SIZE):
    """Inverse of :func:`align_landmarks`: crop landmarks [..., K, 2] (y down) -> original image (y down).

    Accepts numpy or torch (differentiable) landmarks; ``trans_params`` [5] or [B, 5] for [B, K, 2].
    """
    tp = np.asarray(trans_params.detach().cpu() if isinstance(trans_params, torch.Tensor) else trans_params,
                    np.float64)
    single = tp.ndim == 1
    tp = tp.reshape(-1, 5)
    offs, scales, shifts, heights = [], [], [], []
    for row in tp:
        w0, h0, s, tx, ty = row
        w, h, _, _ = crop_geometry(row, size)
        offs.append([w / 2 - size / 2, h / 2 - size / 2])
        scales.append(s)
        shifts.append([tx - w0 / 2, ty - h0 / 2])
        heights.append(h0)
    offs, scales, shifts, heights = (np.array(v, np.float64) for v in (offs, scales, shifts, heights))
    if isinstance(landmarks, torch.Tensor):
        lm = landmarks if not single else landmarks[None]
        cv = lambda a: torch.as_tensor(a, dtype=lm.dtype, device=lm.device)  # noqa: E731
        up = _to_up(lm, size)
        orig = (up + cv(offs)[:, None]) / cv(scales)[:, None, None] + cv(shifts)[:, None]
        out = torch.stack([orig[..., 0], (cv(heights)[:, None] - 1) - orig[..., 1]], -1)
        return out[0] if single else out
    lm = np.asarray(landmarks, np.float64)
    lm = lm[None] if single else lm
    up = _to_up(lm, size)
    orig = (up + offs[:, None]) / scales[:, None, None] + shifts[:, None]
    out = np.stack([orig[..., 0], (heights[:, None] - 1) - orig[..., 1]], -1)
    return out[0] if single else out


# --------------------------------------------------------------------------------------------- PIL path
@dataclass
class Aligned:
    """Result of :func:`align_image`: the crop, the landmarks in it (y down), trans_params, and the mask."""

    image: object              # PIL.Image, size x size
    landmarks: np.ndarray        # [K, 2] float64, y down, crop pixels
    trans_params: np.ndarray     # [5] = [w0, h0, s', t_x, t_y]
    mask: object | None = None

    def tensor(self, device=None) -> torch.Tensor:
        """The crop as [1, 3, S, S] float32 RGB in [0, 1] (the official net's input)."""
        arr = np.asarray(self.image.convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous().to(device)


_PIL_KEEP = ("RGB", "RGBA", "L")
_PIL_REFUSE = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # high bit depth: converting to 8 bits would clip

# Value conventions of float images are told apart by the range [lo, hi] of their values. A 0..255 image with
# overshoot needs some content brighter than 20/255 to be recognised, so that mean/std normalised data (|x| < 3 for
# ImageNet statistics) is never mistaken for it.
def value_range_kind(lo: float, hi: float) -> str | None:
    """The value convention an image whose finite values span [lo, hi] most likely follows, or None.

    First match of: "0_1" [-0.05, 1.05] (rounding only); "0_1_overshoot" [-0.5, 1.5] (bicubic resampling or
    unclamped generator output around [0, 1]); "-1_1" [-1.05, 1.05]; "-1_1_overshoot" [-1.5, 1.5]; "0_255"
    [-0.5, 255.5] with hi > 1.5; "0_255_overshoot" [-127.5, 382.5] with hi > 20. The overshoot bounds are half
    the nominal range on each side, as ``cddfm3d.face3d.recon.ACCEPTED_VALUES`` for [0, 1]. Anything else (for
    example mean/std normalised data beyond [-1.5, 1.5]) is None.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        return None
    if lo >= -0.05 and hi <= 1.05:
        return "0_1"
    if lo >= -0.5 and hi <= 1.5:
        return "0_1_overshoot"
    if lo >= -1.05 and hi <= 1.05:
        return "-1_1"
    if lo >= -1.5 and hi <= 1.5:
        return "-1_1_overshoot"
    if lo >= -0.5 and 1.5 < hi <= 255.5:
        return "0_255"
    if lo >= -127.5 and 20 < hi <= 382.5:
        return "0_255_overshoot"
    return None


# How to make uint8 0..255 from a float numpy array {x} (index 0) or torch tensor {x} (index 1) of each kind.
_TO_UINT8 = {
    "0_1": ("(np.clip({x}, 0, 1) * 255).round().astype(np.uint8)",
            "({x}.clamp(0, 1) * 255).round().to(torch.uint8)"),
    "-1_1": ("((np.clip({x}, -1, 1) + 1) * 127.5).round().astype(np.uint8)",
             "(({x}.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)"),
    "0_255": ("np.clip({x}, 0, 255).round().astype(np.uint8)", "{x}.clamp(0, 255).round().to(torch.uint8)"),
}


def _uint8_hint(arr: np.ndarray, is_tensor: bool, x: str = "image") -> str:
    """Why a non-uint8 array (``arr``, from a numpy array or a torch tensor) is not 8-bit, and the conversion to use,
    chosen by the range of its values and written in numpy or torch form for the expression ``x``."""
    t = 1 if is_tensor else 0
    if arr.size == 0:
        return "it is empty"
    if arr.dtype.kind == "b":
        return f"boolean mask: pass {x}" + (".to(torch.uint8) * 255" if t else ".astype(np.uint8) * 255")
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            return f"it contains {int((~finite).sum())} NaN/Inf value(s); repair those first"
        lo, hi = float(arr.min()), float(arr.max())
        kind = value_range_kind(lo, hi)
        found = f"values in [{lo:.4g}, {hi:.4g}]"
        if kind is None:
            return f"{found}: rescale them to 0..255 yourself (undo any mean/std normalisation first)"
        base = kind.replace("_overshoot", "")
        name = {"0_1": "[0, 1]", "-1_1": "[-1, 1]", "0_255": "0..255"}[base]
        hint = f"{found}, a {name} image{' with overshoot' if base != kind else ''}: pass {_TO_UINT8[base][t]}"
        if kind == "0_1_overshoot" and hi <= 1.05:  # could also be a bright [-1, 1] image
            hint += f"; if it is a [-1, 1] image, pass {_TO_UINT8['-1_1'][t]}"
        return hint.format(x=x)
    if arr.dtype.kind in "iu":
        lo, hi = int(arr.min()), int(arr.max())
        found = f"{arr.dtype} values in [{lo}, {hi}]"
        if lo >= 0 and hi <= 1:
            return f"{found}, a 0/1 mask: pass {x}" + (".to(torch.uint8) * 255" if t else ".astype(np.uint8) * 255")
        if lo >= 0 and hi <= 255:
            return f"{found}, already 0..255: pass {x}" + (".to(torch.uint8)" if t else ".astype(np.uint8)")
        if lo >= 0 and hi <= 65535:
            return f"{found}, 16-bit: pass ({x} / 257).round()" + (".to(torch.uint8)" if t else ".astype(np.uint8)")
        return f"{found}: rescale them to 0..255 yourself"
    return f"dtype {arr.dtype} is not an image type"


def _as_pil(image, who: str):
    """PIL image, uint8 array or uint8 CPU/CUDA tensor [H, W], [H, W, 1|3|4] -> PIL image in mode RGB, RGBA or L.

    Other 8-bit PIL modes (P, 1, LA, CMYK, YCbCr, ...) are converted to RGB; 16-bit and float modes, other dtypes and
    channels-first layouts are refused with the conversion to use (its form chosen by the values' range, and written
    for numpy or torch as given)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        if image.mode in _PIL_KEEP:
            return image
        if image.mode in _PIL_REFUSE:
            raise ValueError(f"{who}: PIL image mode {image.mode!r} (16-bit or float) is not supported; convert it to "
                             f"8 bits first ({_uint8_hint(np.asarray(image), False, 'np.asarray(image)')}; then "
                             f"Image.fromarray(...))")
        return image.convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        raise ValueError(f"{who}: expected a PIL image or a uint8 array, found the path {str(image)!r} (a file? pass "
                         f"PIL.Image.open(path))")
    is_tensor = isinstance(image, torch.Tensor)
    if is_tensor:
        cpu = image.detach().cpu()
        arr = (cpu.float() if cpu.dtype == torch.bfloat16 else cpu).numpy()
    else:
        arr = np.asarray(image)
    what = f"torch.{str(image.dtype).removeprefix('torch.')} tensor" if is_tensor else f"{arr.dtype}"
    shape_ok = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4))
    if arr.dtype != np.uint8 or not shape_ok or arr.size == 0:
        hints = []
        if arr.dtype != np.uint8 or arr.size == 0:
            hints.append(_uint8_hint(arr, is_tensor))
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and not shape_ok:
            fix = "image.permute(1, 2, 0)" if is_tensor else "image.transpose(1, 2, 0)"
            hints.append(f"channels first? pass {fix}")
        if arr.ndim == 4 and arr.shape[0] == 1:
            hints.append("a batch of one? pass image[0]")
        if is_tensor and arr.dtype.kind == "f":
            hints.append("or give float [B, C, H, W] tensors to align_tensor directly")
        hint = "".join(f" ({h})" for h in hints)
        raise ValueError(f"{who}: expected a PIL image or a uint8 array [H, W] or [H, W, 1|3|4], found {what} "
                         f"{tuple(arr.shape)}{hint}")
    return Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)


def align_image(image, landmarks, mask=None, size: int = DEEP3D_SIZE, rescale: float | None = None,
                template=TEMPLATE_5P) -> Aligned:
    """Deep3D's ``align_img`` with numpy/PIL. ``image``: PIL image (RGB, RGBA, L kept; other 8-bit modes converted
    to RGB) or uint8 array [H, W(, 1|3|4)]; ``landmarks`` [68, 2] or [5, 2] (y down, pixels); optional ``mask`` (PIL
    or uint8 array) transformed the same way.

    Returns :class:`Aligned` with the size x size crop (bicubic resize by s' = rescale / s, then crop; the
    area outside the image is black), the transformed landmarks (all K given) and ``trans_params``.

    Raises ValueError for images of other dtypes, layouts or bit depths, landmarks of another shape, and
    ``degenerate landmarks`` (see :func:`landmark_problem`).
    """
    from PIL import Image

    img = _as_pil(image, "align_image")
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 2:
        hint = " (a batch? align one image at a time, or use align_tensor)" if lm.ndim == 3 else ""
        raise ValueError(f"align_image: expected landmarks [68, 2] or [5, 2], found {lm.shape}{hint}")
    lm5 = _five(lm, "align_image")
    w0, h0 = img.size
    _check_landmarks(lm, lm5, h0, w0, "align_image")
    rescale = default_rescale(size) if rescale is None else float(rescale)
    t, s = pos(_to_up(lm5, h0), template)
    if not s > 0:
        raise ValueError(f"align_image: degenerate landmarks (fitted scale {s}); check the 5 points {lm5.tolist()}")
    trans_params = np.array([w0, h0, rescale / s, t[0], t[1]], np.float64)
    w, h, left, up = crop_geometry(trans_params, size)
    box = (left, up, left + size, up + size)
    out = img.resize((w, h), resample=Image.BICUBIC).crop(box)
    out_mask = None
    if mask is not None:
        m = _as_pil(mask, "align_image (mask)")
        if m.size != img.size:
            raise ValueError(f"align_image: mask size {m.size} differs from the image size {img.size}")
        out_mask = m.resize((w, h), resample=Image.BICUBIC).crop(box)
    return Aligned(out, align_landmarks(lm, trans_params, size), trans_params, out_mask)


# --------------------------------------------------------------------------------------------- torch path
def _theta(w, h, left, up, size, dtype, device):
    """affine_grid matrix (align_corners=False) that samples, for crop pixel (r, c), the original image at
    ((c + left + 0.5) w0 / w - 0.5, (r + up + 0.5) h0 / h - 0.5): PIL's resize-then-crop geometry."""
    return torch.tensor([[size / w, 0.0, (size + 2 * left) / w - 1.0],
                         [0.0, size / h, (size + 2 * up) / h - 1.0]], dtype=dtype, device=device)


def _clamp_to_source(crop, source, sampled, grid, mode: str):
    """Clamp a resampled crop [1, C, S, S] to the value range of what it was interpolated from.

    Bounds, per channel of the one image: the channel's min and max over ``source`` [1, C, H, W]; at crop pixels
    whose interpolation taps reach outside ``sampled`` (the zero fill), 0 is included in the range. The taps are found
    by resampling a ones image with the same grid: the in-image weights sum to 1 exactly when no tap falls outside.
    The bounds are detached, so the crop's gradient is unchanged where it is not clamped and 0 where it is."""
    with torch.no_grad():
        lo = source.amin(dim=(2, 3), keepdim=True)                        # [1, C, 1, 1]
        hi = source.amax(dim=(2, 3), keepdim=True)
        ones = sampled.new_ones(1, 1, *sampled.shape[2:])
        inside = F.grid_sample(ones, grid.detach(), mode=mode, padding_mode="zeros", align_corners=False)
        fill = (inside - 1).abs() > 1e-4                                  # [1, 1, S, S]
        lo = torch.where(fill, lo.clamp(max=0), lo)
        hi = torch.where(fill, hi.clamp(min=0), hi)
    return torch.maximum(torch.minimum(crop, hi), lo)


def align_tensor(images: torch.Tensor, landmarks: torch.Tensor, size: int = DEEP3D_SIZE,
                 rescale: float | None = None, template=TEMPLATE_5P, mode: str = "bicubic",
                 antialias: bool = True, exact: bool = True, clamp: bool = True):
    """Batched, differentiable :func:`align_image`.

    Args:
        images: [B, C, H, W] float (any range; zeros outside the image).
        landmarks: [B, 68, 2] or [B, 5, 2], y down, pixels.
        mode: grid_sample interpolation ("bicubic", "bilinear", "nearest").
        antialias: when shrinking (s' < 1) and ``exact``, resize with ``F.interpolate(antialias=True)`` first.
        exact: Deep3D's integer sizes/offsets (matches :func:`align_image`); False: continuous geometry,
            differentiable w.r.t. the landmarks as well.
        clamp: keep the output in the input's value range (default). Bicubic kernels have negative lobes, so
            unclamped resampling of sharp edges overshoots (a 0/1 checkerboard of 2-px squares comes out in
            [-0.45, 1.45]), which :func:`cddfm3d.face3d.fitting.fit` would refuse as outside [0, 1]. The bounds
            are per image and per channel: that channel's [min, max] over the input image, widened to include 0
            at crop pixels whose interpolation reaches the zero fill outside the image. They are constants for
            autograd: the gradient is unchanged where the output is not clamped and 0 where it is. ``False``
            returns the raw resampling, which is linear in the pixels. (:func:`align_image` needs no such
            option: PIL resamples 8-bit images and clips the overshoot to 0..255.)

    Returns: (aligned [B, C, size, size], landmarks in the crop [B, K, 2] (y down), trans_params [B, 5]).

    Raises ValueError (before any work) for images that are not float [B, C, H, W] (uint8, channels-last and
    unbatched layouts are named with the fix), empty, or containing NaN/Inf; landmarks of another shape or batch
    size; and ``degenerate landmarks`` (see :func:`landmark_problem`).
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        found = (f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor)
                 else type(images).__name__)
        hint = ""
        if isinstance(images, torch.Tensor) and not images.is_floating_point():
            hint = " (uint8 images: pass images.float() / 255)"
        elif isinstance(images, torch.Tensor) and images.ndim == 3:
            hint = " (one image? pass images[None])"
        raise ValueError(f"align_tensor: expected float images [B, C, H, W], found {found}{hint}")
    if images.shape[1] not in (1, 3, 4) and images.shape[-1] in (1, 3, 4):
        raise ValueError(f"align_tensor: expected images [B, C, H, W], found {tuple(images.shape)} (channels last? "
                         f"pass images.permute(0, 3, 1, 2))")
    if not isinstance(landmarks, torch.Tensor) or landmarks.ndim != 3 or landmarks.shape[0] != images.shape[0]:
        found = f"{type(landmarks).__name__} {tuple(getattr(landmarks, 'shape', ()))}"
        raise ValueError(f"align_tensor: expected a landmark tensor [B={images.shape[0]}, 68|5, 2], found {found}")
    lm5 = _five(landmarks, "align_tensor")
    b, c, h0, w0 = images.shape
    if images.numel() == 0:
        raise ValueError(f"align_tensor: images are empty, found shape {tuple(images.shape)}")
    finite = torch.isfinite(images.detach())
    if not bool(finite.all()):
        first = tuple((~finite).nonzero()[0].tolist())
        raise ValueError(f"align_tensor: images contain {int((~finite).sum())} NaN/Inf value(s), first at index "
                         f"{first} ([b, c, y, x]); repair or drop those images first")
    for i in range(b):
        _check_landmarks(landmarks[i], lm5[i], h0, w0, "align_tensor", sample=i)
    rescale = default_rescale(size) if rescale is None else float(rescale)
    t, s = pos_torch(_to_up(lm5.double(), h0), template)
    if not bool((s > 0).all()):
        raise ValueError(f"align_tensor: degenerate landmarks (fitted scales {s.tolist()})")
    sp = rescale / s                                                   # [B]
    trans_params = torch.stack([torch.full_like(sp, w0), torch.full_like(sp, h0), sp, t[:, 0], t[:, 1]], 1)
    out, lms = [], []
    for i in range(b):
        tp = trans_params[i].detach().cpu().numpy()
        w, h, left, up = crop_geometry(tp, size, exact=exact)
        img = images[i:i + 1]
        if exact:
            if antialias and tp[2] < 1.0:
                img = F.interpolate(img, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
            # Normalised coordinates of the resized image equal those of the original, so the same matrix
            # crops either; on the resized image it lands on pixel centres (an exact copy).
            theta = _theta(w, h, left, up, size, img.dtype, img.device)
        else:
            # Continuous geometry, differentiable in (s', t): the same formulas with tensors.
            spi, txi, tyi = sp[i].to(img.dtype), t[i, 0].to(img.dtype), t[i, 1].to(img.dtype)
            wt, ht = w0 * spi, h0 * spi
            lt = wt / 2 - size / 2 + (txi - w0 / 2) * spi
            ut = ht / 2 - size / 2 + (h0 / 2 - tyi) * spi
            z = torch.zeros_like(wt)
            theta = torch.stack([torch.stack([size / wt, z, (size + 2 * lt) / wt - 1]),
                                 torch.stack([z, size / ht, (size + 2 * ut) / ht - 1])])
        grid = F.affine_grid(theta[None], [1, c, size, size], align_corners=False)
        crop = F.grid_sample(img, grid, mode=mode, padding_mode="zeros", align_corners=False)
        out.append(_clamp_to_source(crop, images[i:i + 1], img, grid, mode) if clamp else crop)
        # Landmarks (Deep3D's formula, y up), differentiable in the landmarks.
        lm_up = _to_up(landmarks[i], h0)
        if exact:
            off = lm_up.new_tensor([w / 2 - size / 2, h / 2 - size / 2])
            ti, spi = t[i].to(lm_up).detach(), sp[i].to(lm_up).detach()
            new = (lm_up - ti + lm_up.new_tensor([w0 / 2, h0 / 2])) * spi - off
        else:
            spi = sp[i].to(lm_up)
            off = torch.stack([w0 * spi / 2 - size / 2, h0 * spi / 2 - size / 2])
            new = (lm_up - t[i].to(lm_up) + lm_up.new_tensor([w0 / 2, h0 / 2])) * spi - off
        lms.append(_to_up(new, size))
    return torch.cat(out), torch.stack(lms), trans_params.to(images.dtype)
