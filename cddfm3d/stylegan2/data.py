"""Image datasets for GAN training: a folder of images, or a tensor file, as tensors in [-1, 1]."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class ImageFolderDataset(Dataset):
    """Every image under ``root`` (recursively), RGB, resized to ``resolution`` (Lanczos), in [-1, 1]."""

    def __init__(self, root, resolution: int):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ValueError(f"{self.root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.files[i]) as im:
            im = im.convert("RGB")
            if im.size != (self.resolution, self.resolution):
                im = im.resize((self.resolution, self.resolution), Image.LANCZOS)
            arr = np.asarray(im, dtype=np.float32)
        return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0
