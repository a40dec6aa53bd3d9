"""Kinds for plain PyTorch state dicts ``{name: tensor}``, which have no cddfm3d type of their own:
``"arcface.state_dict"`` (any non-empty state dict of tensors) and ``"torchvision.vgg16"`` (one whose first
convolution is torchvision VGG16's)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .kinds import register_kind

VGG16_KEY, VGG16_SHAPE = "features.0.weight", (64, 3, 3, 3)


def load_state_dict(path: Path, device: Any = None) -> dict[str, torch.Tensor]:
    """A state dict ``{name: tensor}`` read with ``torch.load(weights_only=True)`` (no code runs), on ``device``
    (default CPU). ValueError names the file when it is not a readable checkpoint, not a non-empty dict, or holds
    non-tensors (a whole training checkpoint rather than a state dict)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for files that are not checkpoints
        first = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {first}); expected a "
                         f"state dict {{name: tensor}} written by torch.save") from e
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path}: expected a non-empty state dict {{name: tensor}}, found "
                         f"{type(obj).__name__}{' (empty)' if isinstance(obj, dict) else ''}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: expected a state dict of tensors, but {bad[:5]} are {type(obj[bad[0]]).__name__}, "
                         f"not tensors (a training checkpoint? save only the network's state_dict())")
    return {k: v.to(device) for k, v in obj.items()} if device is not None else obj


def load_vgg16(path: Path, device: Any = None) -> dict[str, torch.Tensor]:
    """:func:`load_state_dict` of torchvision ImageNet VGG16 weights: key ``features.0.weight`` of shape
    [64, 3, 3, 3] is required (ValueError naming the file, the key and the shapes otherwise)."""
    sd = load_state_dict(path, device)
    if VGG16_KEY not in sd:
        raise ValueError(f"{path}: expected torchvision VGG16 weights with key '{VGG16_KEY}' of shape "
                         f"{list(VGG16_SHAPE)}, found keys {sorted(sd)[:8]}")
    shape = tuple(sd[VGG16_KEY].shape)
    if shape != VGG16_SHAPE:
        raise ValueError(f"{path}: '{VGG16_KEY}' has shape {list(shape)}, expected {list(VGG16_SHAPE)}")
    return sd


register_kind("arcface.state_dict", load_state_dict)
register_kind("torchvision.vgg16", load_vgg16)

__all__ = ["load_state_dict", "load_vgg16", "VGG16_KEY", "VGG16_SHAPE"]
