"""Run-time configuration: FAST mode for CI, device choice, notebook setup.

FAST mode (``CDDFM3D_FAST=1``; on by default under pytest) shortens training loops and sample counts;
it never changes what a shipped asset is or how a result is computed.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def fast_mode() -> bool:
    """True when CI-sized runs are requested (``CDDFM3D_FAST=1``, or running under pytest)."""
    value = os.environ.get("CDDFM3D_FAST")
    if value is not None:
        return value.strip().lower() not in ("", "0", "false", "no")
    return "PYTEST_CURRENT_TEST" in os.environ or "CDDFM3D_CI" in os.environ


def steps(full: int, fast: int) -> int:
    """Iteration count: ``fast`` in FAST mode, ``full`` otherwise."""
    return fast if fast_mode() else full


def device(name: str | None = None) -> torch.device:
    """The device to run on: ``name`` if given, else ``$CDDFM3D_DEVICE``, else CUDA when available, else CPU."""
    name = name or os.environ.get("CDDFM3D_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_notebook(seed: int = 0) -> None:
    """Deterministic seeds, fixed figure size and the plotly renderer that nbval can store."""
    seed_everything(seed)
    os.environ.setdefault("PLOTLY_RENDERER", "plotly_mimetype")
    try:
        import matplotlib

        matplotlib.rcParams.update({"figure.figsize": (8, 4), "figure.dpi": 80})
    except ImportError:  # matplotlib is a dependency; this only guards odd environments
        pass
