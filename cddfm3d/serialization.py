"""File writing shared by every stage: atomic writes and safetensors files with JSON metadata."""
from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Callable

import torch


def atomic_write(path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it onto ``path``: an interrupted
    write never leaves a half-written file under the real name."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_safetensors(module_or_tensors, path, metadata: dict[str, str]) -> Path:
    """Write a state dict (or a tensor dict) as safetensors with string ``metadata``, atomically."""
    from safetensors.torch import save_file

    sd = module_or_tensors.state_dict() if isinstance(module_or_tensors, torch.nn.Module) else module_or_tensors
    tensors = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_safetensors(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; safetensors' own errors propagate for the caller to word."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
