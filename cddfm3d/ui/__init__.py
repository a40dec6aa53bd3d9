"""The face editor (issue 11): :class:`EditorModel` (the state behind the sliders, no widgets), :class:`Control`
(one slider) and :class:`Editor` (the ipywidgets view of a model)::

    from cddfm3d.ui import EditorModel, Editor
    m = EditorModel.from_assets("mini")
    m.load_sample(0)
    m.load_image("toon.png", domain="toon")   # or an image, projected into its domain's generator (issue 12)
    Editor(m).widget            # in a notebook ("Load image" + "Project" do the same from the page)

``Editor`` is imported on first use, so ``import cddfm3d.ui`` does not need ipywidgets.
"""
from __future__ import annotations

import importlib

from .controls import Control
from .model import EditorModel

_LAZY = {"Editor": "view"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Control", "Editor", "EditorModel"]
