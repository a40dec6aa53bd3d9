"""A photograph as the upright uint8 RGB array [H, W, 3] the detector and the alignment work on.

Files are read by the package's one reader (:func:`cddfm3d.images.read_image`: EXIF orientation applied, 16-bit
reduced to 8 bits) and brought to RGB by :func:`cddfm3d.images.rgb_uint8` (grayscale repeated, RGBA over white).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..images import decode_image, read_image, rgb_uint8

PHOTO_FORMS = ("the path of an image file (str or os.PathLike), the bytes of one, or a uint8 array [H, W, 3] "
               "(also [H, W, 4] RGBA, [H, W] / [H, W, 1] grayscale)")


def load_photo(photo, who: str = "read_photo") -> tuple[np.ndarray, str]:
    """(upright uint8 RGB [H, W, 3], a label for messages: the file's name in quotes, or ``"the given 640x480
    array"``). Raises as :func:`read_photo`."""
    if isinstance(photo, (str, os.PathLike)):
        return rgb_uint8(read_image(photo, who), who), repr(Path(photo).name)
    if isinstance(photo, (bytes, bytearray, memoryview)):
        return rgb_uint8(decode_image(photo, "image bytes", who), who), "the given image bytes"
    if isinstance(photo, np.ndarray):
        a = rgb_uint8(photo, who)
        return a, f"the given {a.shape[1]}x{a.shape[0]} array"
    hint = ""
    if type(photo).__module__.startswith("PIL."):
        hint = " (a PIL image: pass np.asarray(image.convert('RGB')), or the file's path to honour its EXIF rotation)"
    elif type(photo).__module__.startswith("torch"):
        hint = (" (a tensor [3, H, W] in [0, 1]: pass (x.permute(1, 2, 0) * 255).round().byte().numpy(); "
                "in [-1, 1]: cddfm3d.images.to_uint8(x).permute(1, 2, 0).numpy())")
    raise ValueError(f"{who}: photo must be {PHOTO_FORMS}; found {type(photo).__name__}{hint}")


def read_photo(photo, who: str = "read_photo") -> np.ndarray:
    """``photo`` (a path, the bytes of an image file, or a uint8 array [H, W(, 1|3|4)]) as an upright uint8 RGB
    array [H, W, 3], C-contiguous (what dlib and :func:`cddfm3d.face3d.align.align_image` take).

    Raises ``FileNotFoundError`` for a path that does not exist; ``ValueError`` for a folder, a file that cannot
    be decoded, an array of another dtype or shape, or another type (with the conversion for PIL images and
    tensors). Messages start with ``who``."""
    return load_photo(photo, who)[0]


__all__ = ["PHOTO_FORMS", "load_photo", "read_photo"]
