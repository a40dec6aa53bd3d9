"""Images a person gives the editor (:meth:`cddfm3d.ui.EditorModel.load_image`): read, checked and brought to the
generator's input, a float32 tensor [1, 3, R, R] in [-1, 1] (R = the generator's resolution).

Accepted forms (:func:`generator_input`):

* a numpy ``uint8`` array [H, W, 3] (RGB), [H, W, 4] (RGBA), [H, W] or [H, W, 1] (grayscale), 0..255;
* a torch float tensor [3, H, W] or [1, 3, H, W] (also 1 or 4 channels: grayscale, RGBA) in [-1, 1] (the
  generator's range; values up to 1e-3 outside it are clipped, as the projector allows);
* a path (``str`` or ``os.PathLike``) of an image file that imageio reads with its Pillow plugin (PNG, JPEG, WebP,
  BMP, ...; the first frame of an animation, turned upright by its EXIF orientation tag), and through
  :func:`decode_image` the bytes of such a file (an upload). The package's one file reader is
  :func:`cddfm3d.images.read_image` / :func:`cddfm3d.images.decode_image`; this module re-exports both.

Conversion, in this order, all in float32 on [-1, 1] values (a uint8 value v is ``v / 127.5 - 1``,
:func:`cddfm3d.images.from_uint8`, so a uint8 array and ``from_uint8`` of it give the same result bit for bit):

1. **channels**: grayscale is repeated into R, G and B; RGBA is composited over a white background,
   ``rgb * a + 1 * (1 - a)`` with the opacity ``a`` in [0, 1] (uint8 alpha / 255), so an opaque image is
   unchanged and a transparent pixel becomes white;
2. **square**: a non-square image is centre-cropped to its shorter side (rows or columns dropped equally from both
   ends, one more from the end when the difference is odd), as face crops are square;
3. **size**: a side S larger than R is reduced by area averaging (``F.interpolate(mode="area")``, the antialiased
   reduction of the package's perceptual distances and of NVIDIA's projector): output pixel (i, j) is the mean of
   the input rows floor(i S / R) .. ceil((i + 1) S / R) - 1 and the same columns, an exact box filter when R
   divides S; a side smaller than R is enlarged bilinearly (half-pixel centres, ``align_corners=False``); S = R
   is left untouched. The result is clipped to [-1, 1].

Errors name the caller (``who``), what was expected and what was found: ``FileNotFoundError`` for a path that does
not exist, ``ValueError`` for a folder, a file imageio cannot decode, an unsupported type, dtype or shape, an
empty image, non-finite values or float values outside [-1, 1].
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..images import CHANNELS, decode_image, from_uint8, read_image, to_rgb

RANGE_TOLERANCE = 1e-3      # float inputs may overshoot [-1, 1] by this much (the projector's tolerance); clipped
FORMS = ("a numpy uint8 array [H, W, 3] (or [H, W, 4] RGBA, [H, W] / [H, W, 1] grayscale), a torch float tensor "
         "[3, H, W] or [1, 3, H, W] in [-1, 1], or the path of an image file (PNG, JPEG)")


def generator_input(image, resolution: int, who: str = "generator_input") -> tuple[torch.Tensor, str]:
    """``image`` (module docstring: array, tensor or path) as the generator's input: (float32 [1, 3, R, R] in
    [-1, 1] on the CPU, a short description of what was given, e.g. ``"uint8 array 128x96 RGBA"`` or
    ``"file face.png"``). R = ``resolution``. Raises as the module docstring says."""
    if isinstance(image, (str, os.PathLike)):
        a = read_image(image, who)
        x, what = _from_array(a, who, f"file {Path(image).name!r}")
    elif isinstance(image, np.ndarray):
        x, what = _from_array(image, who, "uint8 array")
    elif isinstance(image, torch.Tensor):
        x, what = _from_tensor(image, who)
    else:
        raise ValueError(f"{who}: image must be {FORMS}; found {type(image).__name__}")
    return to_resolution(x, resolution), what


def _from_array(a: np.ndarray, who: str, label: str) -> tuple[torch.Tensor, str]:
    if a.dtype != np.uint8:
        hint = (" (for a float image give a torch tensor [3, H, W] in [-1, 1]; for 0..255 values use "
                "a.astype(np.uint8))" if a.dtype.kind == "f" else "")
        raise ValueError(f"{who}: a numpy image must be uint8 0..255, found {a.dtype} {a.shape}{hint}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in CHANNELS:
        raise ValueError(f"{who}: a numpy image must be [H, W, 3] (or [H, W, 4] RGBA, [H, W] / [H, W, 1] "
                         f"grayscale), found shape {a.shape}")
    _check_size(a.shape[0], a.shape[1], who, a.shape)
    x = from_uint8(torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None])
    return to_rgb(x), f"{label} {a.shape[1]}x{a.shape[0]} {CHANNELS[a.shape[2]]}"


def _from_tensor(t: torch.Tensor, who: str) -> tuple[torch.Tensor, str]:
    shape = tuple(t.shape)
    if not t.is_floating_point():
        hint = " (uint8 0..255: cddfm3d.images.from_uint8(x), or give the numpy array [H, W, 3])" \
            if t.dtype == torch.uint8 else ""
        raise ValueError(f"{who}: a tensor image must be floating point in [-1, 1], found {t.dtype} {shape}{hint}")
    x = t.detach()
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] not in CHANNELS:
        hint = "; one image at a time" if x.ndim == 4 and x.shape[0] > 1 else ""
        hint += "; channels first: x.permute(2, 0, 1)" if x.ndim == 4 and x.shape[-1] in CHANNELS \
            and x.shape[1] not in CHANNELS else ""
        raise ValueError(f"{who}: a tensor image must be [3, H, W] or [1, 3, H, W] (1 or 4 channels: grayscale, "
                         f"RGBA), found {shape}{hint}")
    _check_size(x.shape[2], x.shape[3], who, shape)
    x = x.to("cpu", torch.float32)
    lo, hi = (float(v) for v in torch.aminmax(x))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{who}: the tensor image has NaN or Inf values")
    if lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise ValueError(f"{who}: a tensor image must have values in [-1, 1], found [{lo:.4g}, {hi:.4g}] (from "
                         f"[0, 1]: x * 2 - 1; from 0..255: x / 127.5 - 1)")
    x = x.clamp(-1, 1)
    return to_rgb(x), f"float tensor {x.shape[3]}x{x.shape[2]} {CHANNELS[x.shape[1]]}"


def _check_size(h: int, w: int, who: str, shape) -> None:
    if h < 1 or w < 1:
        raise ValueError(f"{who}: the image is empty, shape {tuple(shape)}")


def to_resolution(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """[1, 3, H, W] in [-1, 1] -> [1, 3, R, R] (R = ``resolution``): centre-cropped to a square, then reduced by
    area averaging or enlarged bilinearly (module docstring), clipped to [-1, 1]; float32, contiguous."""
    h, w = x.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = x[..., top:top + s, left:left + s].float()
    if s > resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="area")
    elif s < resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x.clamp(-1, 1).contiguous()


__all__ = ["FORMS", "decode_image", "generator_input", "read_image", "to_resolution"]
