"""StyleSpace analysis (DESIGN.md step 4): how each style layer responds to each 3DMM attribute, and the
attribute-adaptive layer selection that gives each editing network F^i its reduced StyleSpace S^i.

* :mod:`.response` -- responses read by the reconstruction network on generated images: the layer x attribute
  matrix (:func:`layer_response`), localized channels (:func:`localized_channels`) and edit grids;
* :mod:`.rig` -- the paper's procedure: a mapping over the full S trained through T, then the per-layer response
  of its offsets (:func:`rig_response`);
* :mod:`.selection` -- the rule from a matrix to the sets (:func:`select_layers`), the paper's FFHQ-1024 sets on
  any generator (:func:`paper_layer_sets`), their overlap (:func:`jaccard`) and the layer-set file, asset kind
  ``"stylespace.LayerSets"`` (``cddfm3d.assets.load("mini/layer_sets")`` -> ``dict[str, list[int]]``).

:mod:`.response` and :mod:`.rig` are imported on first use of their names, so loading layer sets stays light.
"""
from __future__ import annotations

import importlib

from ..assets.kinds import register_kind
from .selection import (DEFAULT_SHARE, FFHQ1024_LAYER_NAMES, PAPER_LAYER_SETS_1024, LayerSetsError,
                        check_layer_names, jaccard, layer_set_report, load_layer_sets, paper_layer_sets,
                        read_layer_sets, save_layer_sets, select_layers)

register_kind("stylespace.LayerSets", load_layer_sets)

_LAZY = {"LayerResponse": "response", "layer_response": "response", "channel_screen": "response",
         "channel_response": "response", "localized_channels": "response", "channel_edit_grid": "response",
         "RigConfig": "rig", "train_rig": "rig", "rig_layer_response": "rig", "rig_response": "rig"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_SHARE", "FFHQ1024_LAYER_NAMES", "PAPER_LAYER_SETS_1024", "LayerSetsError", "check_layer_names",
           "jaccard", "layer_set_report", "load_layer_sets", "paper_layer_sets", "read_layer_sets", "save_layer_sets",
           "select_layers", *_LAZY]
