"""Cross-domain adaptation (DESIGN.md step 6): latent-consistent fine-tuning, projection of images into a
generator, and editing out-of-domain faces with the human world's T and F^i.

Modules (names below are imported on first use):

* :mod:`.finetuning`: fine-tuning a generator to another domain with its mapping and affines frozen (the paper),
  FreezeG and train-everything as ablations (``python -m cddfm3d finetune``);
* :mod:`.delta`: a fine-tuned generator stored as float16 changes of its base (the shipped
  ``mini/generator_<domain>``, asset kind ``adapt.DomainGenerator``);
* :mod:`.consistency`: how far the same latent draws the same face in two generators, read by each domain's
  reconstruction network;
* :mod:`.projection` (:func:`project`: the StyleGAN2 projector in W, W+ or StyleSpace S, returning a
  :class:`ProjectionResult`) and :mod:`.perceptual` (its distances: LPIPS-VGG when the VGG16 weights are present,
  else the world's reconstruction-network features);
* :mod:`.cross_domain` (:class:`CrossDomainEditor`: image -> projection -> T -> F^i -> domain image) and
  :mod:`.evaluation` (the pipeline scored against the true coefficients of held-out renders);
* :mod:`.pie` (:func:`pie_embed`: PIE's embedding, the projector's energy plus the rig's identity, edit,
  invariance and recognition terms, optimised in W then W+, returning a :class:`PIEResult`);
* :mod:`.inversion`: embedding files (:func:`save_embedding`, :func:`load_embedding`) and ``python -m cddfm3d
  invert`` (image files or photographs -> PIE or the projector -> embedding files);
* :mod:`.ship`: ``python -m cddfm3d ship-domain``.
"""
from __future__ import annotations

import importlib

from ..assets.kinds import register_kind

_LAZY = {"project": "projection", "ProjectionResult": "projection", "PerceptualDistance": "perceptual",
         "LPIPSDistance": "perceptual", "ReconFeatureDistance": "perceptual", "choose_perceptual": "perceptual",
         "FREEZE_MODES": "finetuning", "FinetuneConfig": "finetuning", "FinetuneTrainer": "finetuning",
         "finetune": "finetuning", "frozen_parameter_names": "finetuning", "latent_inconsistency": "finetuning",
         "save_generator_delta": "delta", "load_generator_delta": "delta",
         "latent_consistency": "consistency", "compare_readings": "consistency",
         "consistency_table": "consistency", "CrossDomainEditor": "cross_domain",
         "CrossDomainResult": "cross_domain", "evaluate_cross_domain": "evaluation",
         "cross_domain_table": "evaluation", "ship_domain_generator": "ship",
         "pie_embed": "pie", "PIEResult": "pie", "save_embedding": "inversion", "load_embedding": "inversion"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _load_domain_generator(path, device=None):
    from .delta import load_generator_delta

    return load_generator_delta(path, device)


register_kind("adapt.DomainGenerator", _load_domain_generator)

__all__ = [*_LAZY]
