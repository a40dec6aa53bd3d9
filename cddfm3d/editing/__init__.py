"""CDDFM3D's editing core (DESIGN.md steps 2-5): training pairs, the attribute predictor T and (later) the latent
manipulation networks F^i.

Public constants (notebooks and external checks use exactly these names):

* :data:`ATTRIBUTES` -- the five editable attributes, in the paper's order of presentation used across the package;
* :data:`ATTRIBUTE_SLICES` -- each attribute's slice of Deep3D's 257 coefficients (id 0:80, exp 80:144,
  tex 144:224, angles 224:227, gamma 227:254; the remaining trans 254:257 is not an editable attribute).
"""
from __future__ import annotations

from ..face3d.measures import ATTRIBUTE_GROUPS, ATTRIBUTES
from ..face3d.morphable import SLICES

ATTRIBUTE_SLICES: dict[str, slice] = {name: SLICES[ATTRIBUTE_GROUPS[name]] for name in ATTRIBUTES}

__all__ = ["ATTRIBUTES", "ATTRIBUTE_SLICES"]
