"""CDDFM3D's editing core (DESIGN.md steps 2-5): training pairs, the attribute predictor T and the latent
manipulation networks.

Public constants (notebooks and external checks use exactly these names):

* :data:`ATTRIBUTES` -- the five editable attributes ``("shape", "expression", "albedo", "pose", "light")``;
* :data:`ATTRIBUTE_SLICES` -- each attribute's slice of Deep3D's 257 coefficients (id 0:80, exp 80:144,
  tex 144:224, angles 224:227, gamma 227:254; the remaining trans 254:257 is not an editable attribute).

Modules: :mod:`.latents` (the official 5-way W+ mixing), :mod:`.labels` (coefficients and landmarks of generated
images), :mod:`.pairs` (``gen-pairs`` folders and :class:`PairDataset`), :mod:`.predictor` (T, asset kind
``"editing.AttributePredictor"``: ``cddfm3d.assets.load("mini/attribute_predictor")``), :mod:`.losses` (PDC, VDC,
WPDC ...), :mod:`.t_training` (``train-t``, :func:`evaluate_t`), :mod:`.manipulator` (the per-layer latent
manipulation network; F^i is :class:`LatentManipulator`, asset kind ``"editing.LatentManipulator"``:
``cddfm3d.assets.load("mini/manipulator/shape")``), :mod:`.f_training` (``train-f``), :mod:`.evaluation`
(:func:`evaluate`: edits read from the generated images), :mod:`.baselines` (the linear-direction baseline) and
:mod:`.face_editor` (:class:`FaceEditor`: G, T and the F^i; edit by absolute targets or offsets).
Their names below are imported on first use.
"""
from __future__ import annotations

import importlib

from ..face3d.measures import ATTRIBUTE_GROUPS, ATTRIBUTES
from ..face3d.morphable import SLICES
from . import manipulator as _manipulator  # noqa: F401  (registers the asset kind "editing.LatentManipulator")
from . import predictor as _predictor  # noqa: F401  (registers the asset kind "editing.AttributePredictor")

ATTRIBUTE_SLICES: dict[str, slice] = {name: SLICES[ATTRIBUTE_GROUPS[name]] for name in ATTRIBUTES}

_LAZY = {"sample_latents": "latents", "label_images": "labels", "generate_pairs": "pairs", "PairDataset": "pairs",
         "noise_for": "pairs", "AttributePredictor": "predictor", "load_attribute_predictor": "predictor",
         "TTrainConfig": "t_training", "train_t": "t_training", "evaluate_t": "t_training",
         "StyleManipulator": "manipulator", "LatentManipulator": "manipulator", "FTrainConfig": "f_training",
         "train_f": "f_training", "evaluate": "evaluation", "EditingEvaluation": "evaluation",
         "AttributeScores": "evaluation", "derangement": "evaluation", "identity_editor": "baselines",
         "LinearDirections": "baselines", "fit_linear_directions": "baselines", "fit_linear_baseline": "baselines",
         "FaceEditor": "face_editor"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ATTRIBUTES", "ATTRIBUTE_SLICES", *_LAZY]
