"""cddfm3d: Cross-Domain and Disentangled Face Manipulation with 3D Guidance.

Subpackages are imported lazily so that `import cddfm3d` stays cheap:
`cddfm3d.stylegan2`, `cddfm3d.face3d`, ...
"""
import importlib

from .config import device, fast_mode, setup_notebook

__version__ = "0.1.0"

_SUBPACKAGES = ("stylegan2", "face3d", "world", "stylespace", "editing", "adapt", "ui", "assets", "viz", "demo", "config")


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'cddfm3d' has no attribute {name!r}")


__all__ = ["device", "fast_mode", "setup_notebook", "__version__", *_SUBPACKAGES]
