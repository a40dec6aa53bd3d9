"""Image helpers shared by the CLI, notebooks and reports: tensors in [-1, 1] -> uint8 grids, PNG files."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch


def to_uint8(images: torch.Tensor, value_range=(-1.0, 1.0)) -> np.ndarray:
    """[B, 3, H, W] float in ``value_range`` -> [B, H, W, 3] uint8."""
    lo, hi = value_range
    x = ((images.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    return (x.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)


def grid(images: torch.Tensor, nrow: int, value_range=(-1.0, 1.0), padding: int = 2) -> np.ndarray:
    """Tile [B, 3, H, W] images row-major into one [H', W', 3] uint8 array (``nrow`` images per row)."""
    import torchvision

    x = ((images.detach().float().cpu() - value_range[0]) / (value_range[1] - value_range[0])).clamp(0, 1)
    g = torchvision.utils.make_grid(x, nrow=nrow, padding=padding, pad_value=1.0)
    return (g.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def save_png(array: np.ndarray, path) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def show(images: torch.Tensor | np.ndarray, nrow: int = 8, value_range=(-1.0, 1.0), scale: int = 1):
    """Display one composed PNG in a notebook (rather than many matplotlib figures)."""
    from IPython.display import Image, display

    arr = images if isinstance(images, np.ndarray) else grid(images, nrow, value_range)
    if scale > 1:
        arr = arr.repeat(scale, axis=0).repeat(scale, axis=1)
    display(Image(data=png_bytes(arr), format="png"))
