"""The package's image value ranges and the one conversion between each pair of them.

Images are tensors of any shape (usually [B, 3, H, W] or [3, H, W], channels first) in one of three ranges:

* uint8 0..255: what datasets and pairs folders store;
* float in [-1, 1]: the generator's output and the mini world's network inputs (``value_range="-1_1"``);
* float in [0, 1]: Deep3D's network input and the renderer's colours (``value_range="0_1"``).

uint8 v and float x correspond by x = v / 127.5 - 1 (so 0 -> -1, 255 -> 1); the way back rounds to the nearest
level and clips, so float -> uint8 -> float moves a value in [-1, 1] by at most 0.5 / 127.5.
"""
from __future__ import annotations

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


__all__ = ["VALUE_RANGES", "from_uint8", "to_uint8", "to_range"]
