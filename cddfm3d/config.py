"""Run-time configuration: FAST mode for CI, device choice, CPU threads, notebook setup.

FAST mode (``CDDFM3D_FAST=1``; on by default under pytest) shortens training loops and sample counts;
it never changes what a shipped asset is or how a result is computed.
"""
from __future__ import annotations

import contextlib
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


def device_of(module: torch.nn.Module) -> torch.device:
    """The device a module runs on: that of its first parameter, else of its first buffer (a module of buffers
    only, such as a generator's averaged W), else the CPU (a module with neither)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# plotly's mimetype bundle is what JupyterLab draws and nbval stores; the "notebook" renderer adds an HTML
# version with plotly.js embedded (offline, once per notebook) so that the figure survives an HTML export.
PLOTLY_RENDERER = "plotly_mimetype+notebook"


def cpu_count() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def interactive_threads() -> int:
    """CPU threads for small interactive work (batch-1 inference, a notebook cell): 1 on a small or busy machine.

    PyTorch's OpenMP threads spin-wait for each other at every operation, so when another process keeps a core
    busy, a multi-threaded batch-1 forward pass waits for its descheduled thread: the mini generator takes
    ~10 ms on 1 thread but 130-720 ms on 2 threads of a 2-core machine whose other core runs a PyTorch job
    (measured for issue 8). Returns 1 with <= 2 cores; otherwise the cores that the 1-minute load
    average leaves idle (at least 1, at most ``torch.get_num_threads()``).
    """
    cores = cpu_count()
    if cores <= 2:
        return 1
    try:
        idle = cores - os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this OS
        idle = cores
    return max(1, min(torch.get_num_threads(), int(idle)))


@contextlib.contextmanager
def num_threads(n: int | None):
    """Run the block with ``torch.set_num_threads(n)`` and restore the previous count after (``None``: unchanged)."""
    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"num_threads: expected a positive int or None, found {n!r}")
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def setup_notebook(seed: int = 0, threads: int | str | None = "auto") -> None:
    """Deterministic seeds, fixed figure size, the plotly renderer and CPU threads for an interactive notebook.

    ``threads``: ``"auto"`` sets ``interactive_threads()`` unless ``$OMP_NUM_THREADS`` states a count (an explicit
    choice is kept); an int sets that count; ``None`` leaves PyTorch's default. The plotly renderer is
    ``$PLOTLY_RENDERER`` when set, else :data:`PLOTLY_RENDERER` (stored by nbval, kept by HTML export).
    """
    seed_everything(seed)
    if threads == "auto":
        threads = None if os.environ.get("OMP_NUM_THREADS") else interactive_threads()
    elif threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"setup_notebook: threads must be 'auto', a positive int or None, found {threads!r}")
    if threads is not None:
        torch.set_num_threads(threads)
    os.environ.setdefault("PLOTLY_RENDERER", PLOTLY_RENDERER)
    try:
        import plotly.io as pio

        pio.renderers.default = os.environ["PLOTLY_RENDERER"]
    except ImportError:  # plotly is a dependency; this only guards odd environments
        pass
    try:
        import matplotlib

        matplotlib.rcParams.update({"figure.figsize": (8, 4), "figure.dpi": 80})
    except ImportError:  # matplotlib is a dependency; this only guards odd environments
        pass
