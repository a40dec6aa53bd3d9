"""Cross-domain adaptation (DESIGN.md step 6): projection of images into a generator, latent-consistent fine-tuning.

Modules: :mod:`.projection` (:func:`project`: the StyleGAN2 projector in W, W+ or StyleSpace S, returning a
:class:`ProjectionResult`) and :mod:`.perceptual` (the perceptual distances it uses: LPIPS-VGG when the VGG16
weights are present, else the world's reconstruction-network features). Names below are imported on first use.
"""
from __future__ import annotations

import importlib

_LAZY = {"project": "projection", "ProjectionResult": "projection", "PerceptualDistance": "perceptual",
         "LPIPSDistance": "perceptual", "ReconFeatureDistance": "perceptual", "choose_perceptual": "perceptual"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_LAZY]
