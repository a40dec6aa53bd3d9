"""The package's image value ranges and the one conversion between each pair of them.

Images are tensors of any shape (usually [B, 3, H, W] or [3, H, W], channels first) in one of three ranges:

* uint8 0..255: what datasets and pairs folders store;
* float in [-1, 1]: the generator's output and the mini world's network inputs (``value_range="-1_1"``);
* float in [0, 1]: Deep3D's network input and the renderer's colours (``value_range="0_1"``).

uint8 v and float x correspond by x = v / 127.5 - 1 (so 0 -> -1, 255 -> 1); the way back rounds to the nearest
level and clips, so float -> uint8 -> float moves a value in [-1, 1] by at most 0.5 / 127.5.

Image files are read here too, the one reader of the package (:func:`read_image`, :func:`decode_image`): imageio's
Pillow plugin, the first frame, turned upright by the file's EXIF orientation tag, 16-bit values reduced to 8 bits.
:func:`to_rgb` and :func:`rgb_uint8` bring grayscale and RGBA pixels to RGB (RGBA over a white background).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

VALUE_RANGES = ("0_1", "-1_1")


def _check_dtype(images, fn: str, want: str) -> None:
    ok = isinstance(images, torch.Tensor) and (images.dtype == torch.uint8 if want == "uint8" else
                                               images.dtype == torch.uint8 or images.is_floating_point())
    if not ok:
        found = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        expected = "a uint8 tensor (0..255)" if want == "uint8" else "a uint8 (0..255) or float ([-1, 1]) tensor"
        raise ValueError(f"{fn}: images must be {expected}, found {found}")


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 images 0..255 (any shape) -> float32 in [-1, 1] of the same shape and device:
    ``images.float() / 127.5 - 1``. Raises ``ValueError`` for another dtype."""
    _check_dtype(images, "from_uint8", "uint8")
    return images.float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in about [-1, 1] (any shape; the generator's output may overshoot) -> uint8 0..255 of the same
    shape and device: ``((x + 1) * 127.5).round().clamp(0, 255)`` (round half to even, then clip)."""
    return ((images + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def to_range(images: torch.Tensor, value_range: str) -> torch.Tensor:
    """Images (any shape, e.g. [B, 3, H, W]), uint8 0..255 or float in the generator's [-1, 1], as float32 in a
    network's ``value_range``: ``"0_1"`` (uint8 / 255, float (x + 1) / 2) or ``"-1_1"`` (uint8: :func:`from_uint8`;
    float: unchanged, as float32). Raises ``ValueError`` for another dtype or range name."""
    _check_dtype(images, "to_range", "uint8 or float")
    if value_range not in VALUE_RANGES:
        raise ValueError(f"to_range: value_range must be one of {VALUE_RANGES}, found {value_range!r}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0 if value_range == "0_1" else from_uint8(images)
    x = images.float()
    return (x + 1.0) * 0.5 if value_range == "0_1" else x


# ---------------------------------------------------------------------------------------------- files
def read_image(path, who: str = "read_image") -> np.ndarray:
    """The pixels of the image file ``path`` (``str`` or ``os.PathLike``; PNG, JPEG, WebP, BMP, TIFF, ... as
    imageio's Pillow plugin reads them; the first frame of an animation) as uint8 [H, W] or [H, W, C] (C = 3 RGB,
    4 RGBA; Pillow's own layout of other modes), upright: a file with an EXIF orientation tag 2..8 (a camera held
    sideways or upside down) comes out as it is meant to be seen, rotated and/or mirrored as the tag says (imageio's
    ``rotate=True``, the same result as ``PIL.ImageOps.exif_transpose``; EXIF 2.3 tag 0x0112). 16-bit files are
    rounded to 8 bits (``round(v / 257)``), 1-bit files become 0 / 255.

    Raises ``FileNotFoundError`` for a path that does not exist, ``ValueError`` for a folder or a file imageio
    cannot decode (naming it); messages start with ``who``."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{who}: image file {str(p)!r} not found")
    if p.is_dir():
        raise ValueError(f"{who}: {str(p)!r} is a folder, not an image file")
    return _decode(p, repr(str(p)), who)


def decode_image(data, name: str = "image", who: str = "decode_image") -> np.ndarray:
    """:func:`read_image` of the bytes of an image file (``bytes``, ``bytearray`` or ``memoryview``, e.g. an
    ipywidgets ``FileUpload`` value's ``content``); ``name`` (the file's name) is used in messages. Raises
    ``ValueError`` for empty data or data imageio cannot decode."""
    raw = bytes(data)
    if not raw:
        raise ValueError(f"{who}: {name!r} is empty (0 bytes)")
    return _decode(io.BytesIO(raw), repr(name), who)


def _decode(source, label: str, who: str) -> np.ndarray:
    import imageio.v3 as iio

    try:
        a = np.asarray(iio.imread(source, index=0, plugin="pillow", rotate=True))
    except Exception as e:  # noqa: BLE001 -- imageio raises many types for undecodable data; report them all alike
        raise ValueError(f"{who}: cannot read {label} as an image ({type(e).__name__}: {e})") from None
    if a.dtype == np.uint16:
        a = np.round(a / 257.0).astype(np.uint8)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8:
        raise ValueError(f"{who}: {label} has pixels of type {a.dtype}; expected an 8-bit (or 16-bit) image")
    return np.ascontiguousarray(a)


# ---------------------------------------------------------------------------------------------- channels
CHANNELS = {1: "grayscale", 3: "RGB", 4: "RGBA"}


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Float images [..., C, H, W] in [-1, 1] with C = 1 (grayscale), 3 (RGB) or 4 (RGBA) -> [..., 3, H, W]:
    grayscale repeated into R, G and B; RGBA composited over a white background, ``rgb * a + 1 * (1 - a)`` with
    the opacity a = (alpha + 1) / 2 in [0, 1] (so an opaque image is unchanged and a transparent pixel is white);
    RGB returned as given. Raises ``ValueError`` for another channel count."""
    c = x.shape[-3] if x.ndim >= 3 else None
    if c == 1:
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).clone()
    if c == 4:
        a = (x[..., 3:, :, :] + 1) * 0.5
        return x[..., :3, :, :] * a + (1 - a)
    if c == 3:
        return x
    raise ValueError(f"to_rgb: expected images [..., C, H, W] with C in {sorted(CHANNELS)}, found {tuple(x.shape)}")


def rgb_uint8(a: np.ndarray, who: str = "rgb_uint8") -> np.ndarray:
    """A uint8 image [H, W], [H, W, 1] (grayscale), [H, W, 3] (RGB) or [H, W, 4] (RGBA) -> uint8 RGB [H, W, 3],
    C-contiguous: :func:`to_rgb` on ``from_uint8`` of it, back through :func:`to_uint8` (RGB and grayscale values
    are kept exactly). Raises ``ValueError`` (starting with ``who``) for another dtype, shape, or an empty image."""
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8:
        found = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
        hint = " (0..255 floats: a.round().astype(np.uint8); [0, 1] floats: (a * 255).round().astype(np.uint8))" \
            if isinstance(a, np.ndarray) and a.dtype.kind == "f" else ""
        raise ValueError(f"{who}: expected a uint8 image [H, W] or [H, W, 1|3|4], found {found}{hint}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in CHANNELS:
        raise ValueError(f"{who}: expected a uint8 image [H, W] or [H, W, 1|3|4], found shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{who}: the image is empty, shape {a.shape}")
    if a.shape[2] == 3:
        return np.ascontiguousarray(a)
    x = to_rgb(from_uint8(torch.from_numpy(np.array(a)).permute(2, 0, 1)))      # a copy: ``a`` may be read-only
    return np.ascontiguousarray(to_uint8(x).permute(1, 2, 0).numpy())


__all__ = ["CHANNELS", "VALUE_RANGES", "decode_image", "from_uint8", "read_image", "rgb_uint8", "to_range", "to_rgb",
           "to_uint8"]
