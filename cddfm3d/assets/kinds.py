"""The table from an asset's ``kind`` to the function that loads a file of that kind.

Each module registers the kinds of its own types, one line where the type lives::

    # cddfm3d/stylegan2/__init__.py
    register_kind("stylegan2.Generator", load_generator)

A loader is called as ``loader(path, device)`` with ``path`` a :class:`pathlib.Path` to an existing file and
``device`` a torch device (or ``None``: CPU); it returns the loaded object. It raises ``FileNotFoundError`` for a
missing file and a ``ValueError`` (or subclass) naming the file and the field for wrong content; :func:`load_as`
adds the asset's name and where its path came from. :func:`load_as` puts returned ``torch.nn.Module`` objects in
eval mode without gradients, on ``device`` when one is given.

Kinds are resolved lazily, so that ``import cddfm3d.assets`` imports none of the subpackages: the part of a kind
before its first dot names the cddfm3d subpackage that registers it (``"face3d.ReconNet"`` ->
``cddfm3d.face3d``), which is imported the first time the kind is looked up. Kinds of types that have no
cddfm3d subpackage (``"json"``, plain state dicts) are registered by this package itself.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import AssetError, AssetValidationError

Loader = Callable[[Path, Any], Any]
PACKAGE = "cddfm3d"
_KIND_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")

_LOADERS: dict[str, Loader] = {}


def register_kind(kind: str, loader: Loader) -> Loader:
    """Make ``loader(path, device)`` the loader of asset kind ``kind`` (dotted identifiers, e.g.
    ``"face3d.ReconNet"``; the first part names the cddfm3d subpackage that registers it, see the module
    docstring). Registering the same kind again from the same module replaces the loader (module reloads);
    from another module it raises ``ValueError``, as do a malformed kind and a loader that is not callable.
    Returns ``loader``."""
    if not isinstance(kind, str) or not _KIND_RE.fullmatch(kind):
        raise ValueError(f"register_kind: kind must be dotted identifiers like 'face3d.ReconNet', found {kind!r}")
    if not callable(loader):
        raise ValueError(f"register_kind({kind!r}): loader must be callable as loader(path, device), found "
                         f"{type(loader).__name__}")
    previous = _LOADERS.get(kind)
    if previous is not None and _owner(previous) != _owner(loader):
        raise ValueError(f"register_kind: kind {kind!r} is already registered by {_owner(previous)} "
                         f"({_qualname(previous)}); {_owner(loader)} cannot register it too")
    _LOADERS[kind] = loader
    return loader


def _owner(loader: Loader) -> str:
    return getattr(loader, "__module__", None) or type(loader).__module__


def _qualname(loader: Loader) -> str:
    return getattr(loader, "__qualname__", None) or repr(loader)


def loader_for(kind: Any) -> Loader | None:
    """The loader registered for ``kind`` (importing the subpackage its prefix names first), or ``None``."""
    if not isinstance(kind, str):
        return None
    if kind not in _LOADERS and "." in kind:
        provider = f"{PACKAGE}.{kind.split('.', 1)[0]}"
        if importlib.util.find_spec(provider) is not None:
            importlib.import_module(provider)  # it registers its kinds; its own import errors propagate
    return _LOADERS.get(kind)


def known_kinds() -> list[str]:
    """Every registered kind, sorted, after importing each cddfm3d subpackage (so the list is complete; meant for
    error messages and tests, it may take a second). A subpackage that fails to import is left out."""
    package = importlib.import_module(PACKAGE)
    for info in pkgutil.iter_modules(package.__path__, prefix=f"{PACKAGE}."):
        if info.ispkg:
            try:
                importlib.import_module(info.name)
            except ImportError:
                continue
    return sorted(_LOADERS)


def unknown_kind_message(found: Any) -> str:
    """``"found 'x', expected one of [...]"`` with every registered kind, and how to add one."""
    return (f"{found!r}, expected one of {known_kinds()} (a new kind is registered with "
            f"cddfm3d.assets.register_kind(kind, loader) in the module that defines its type)")


def load_as(kind: str, path: Path, device: Any = None, *, name: str, origin: str) -> Any:
    """Load ``path`` with the loader of ``kind``; errors name asset ``name`` and ``origin`` (where the path came
    from). Modules come back in eval mode, without gradients, on ``device`` when given.

    Raises AssetValidationError for an unregistered kind or wrong content, AssetError for a missing file."""
    loader = loader_for(kind)
    if loader is None:
        raise AssetValidationError(f"{name} (path from {origin}): kind is {unknown_kind_message(kind)}")
    try:
        obj = loader(path, device)
    except (AssetError, AssetValidationError):
        raise
    except FileNotFoundError as e:
        raise AssetError(f"{name} (path from {origin}): {e}") from e
    except ValueError as e:  # CheckpointError, ReconCheckpointError, BFMFormatError: they name file and field
        raise AssetValidationError(f"{name} (path from {origin}): {e}") from e
    if isinstance(obj, torch.nn.Module):
        obj = obj.eval().requires_grad_(False)
        if device is not None:
            obj = obj.to(device)
    return obj


# ------------------------------------------------------------------------------ kinds without a subpackage
def load_json(path: Path, device: Any = None) -> Any:
    """The parsed content of a UTF-8 JSON file (``device`` is ignored). ValueError names the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


register_kind("json", load_json)

__all__ = ["register_kind", "loader_for", "known_kinds", "load_as", "load_json"]
