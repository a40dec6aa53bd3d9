"""cddfm3d: Cross-Domain and Disentangled Face Manipulation with 3D Guidance.

Submodules (``cddfm3d.stylegan2``, ``cddfm3d.face3d``, ``cddfm3d.world``, ...) are imported lazily, on first
attribute access, so that ``import cddfm3d`` stays cheap. ``__all__`` lists the run-time helpers from
``cddfm3d.config`` and every submodule that exists in the installed package (found by listing the package
folder, never by importing), so ``from cddfm3d import *`` imports exactly what is there.
"""
import importlib
import pkgutil

from .config import device, fast_mode, setup_notebook

__version__ = "0.1.0"

# Public submodules: every module or subpackage next to this file whose name does not start with "_".
_SUBMODULES = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'cddfm3d' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))


__all__ = ["device", "fast_mode", "setup_notebook", "__version__", *_SUBMODULES]
