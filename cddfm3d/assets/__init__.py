"""Named assets: the shipped mini world and the user-supplied real world, one loader for both.

* **shipped** (``"mini/..."``): small weights produced by the package's own training commands, kept in
  ``assets/`` at the repository root (a built wheel carries them as package data; override: ``$CDDFM3D_ASSETS``)
  and listed in ``MANIFEST.json`` with sha256, size, kind, config, the exact command that built them and their
  metrics. Every load checks size and sha256, so a damaged or hand-edited file is reported instead of silently
  giving other results (:mod:`.manifest`).
* **real** (``"real/..."``): FFHQ StyleGAN2, BFM09, Deep3DFaceRecon, VGG16 (LPIPS) and ArcFace weights, whose
  paths come from environment variables or the ``[real]`` table of a config file (:mod:`.real`).

An asset's ``kind`` selects its loader from a table that each module fills for its own types
(:func:`register_kind`, :mod:`.kinds`); ``import cddfm3d.assets`` itself imports none of the subpackages.

``load(name)`` returns the ready object (modules in eval mode, without gradients); ``describe()`` gives a table of
every asset for notebooks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from . import state_dicts  # noqa: F401 - registers the state-dict kinds
from .errors import AssetError, AssetIntegrityError, AssetValidationError
from .integrity import clear_verification_cache, sha256_file
from .kinds import known_kinds, load_as, register_kind
from .manifest import (ASSETS_ENV, BUDGET_BYTES, MANIFEST_NAME, assets_dir, available, check_budget, entry,
                       manifest_path, register, shipped_path)
from .real import (CONFIG_ENV, REAL_ASSETS, RealAsset, checked_location, config_path, is_real, locate, real_asset,
                   real_path)


def load(name: str, device: Any = None, verify: bool = True) -> Any:
    """Load asset ``name``: a module (eval mode, no gradients, on ``device``; default CPU), a state dict or parsed
    JSON, as its kind's loader returns it.

    Shipped assets are checked against the manifest (size, sha256) unless ``verify=False``; user-supplied ones are
    located (env var, config file) and validated by their loaders. Raises AssetError (missing: not configured,
    not on disk, unknown name), AssetValidationError (wrong content, naming the file and field) or
    AssetIntegrityError (size or sha256 differs from the manifest)."""
    if is_real(name):
        loc = checked_location(name)
        return load_as(real_asset(name).kind, loc.path, device, name=name, origin=loc.origin)
    e, file = shipped_path(name, verify)
    return load_as(e["kind"], file, device, name=name, origin="manifest")


def path(name: str, verify: bool = True) -> Path:
    """Path of asset ``name``: shipped (verified against the manifest unless ``verify=False``) or user-supplied
    (see :func:`real_path`)."""
    if is_real(name):
        return real_path(name)
    return shipped_path(name, verify)[1]


def describe() -> list[dict]:
    """One row per known asset (shipped, then user-supplied): name, kind, source ("shipped", "env", "config",
    "default" or "unset"), path, ok, message. ``ok`` means: shipped file present and matching the manifest;
    user-supplied file configured and present (its content is checked by :func:`load`, which may read
    gigabytes). Never raises: problems are reported in ``message``."""
    return _describe_shipped() + [_describe_real(a) for a in REAL_ASSETS.values()]


def _describe_shipped() -> list[dict]:
    try:
        names = available()
    except Exception as e:  # noqa: BLE001 - describe() reports, it never raises
        return [_row("mini/*", "manifest", "shipped", manifest_path(), False, str(e))]
    if not names:
        return [_row("mini/*", "manifest", "shipped", manifest_path(), False,
                     f"no asset manifest at {manifest_path()}")]
    rows = []
    for name in names:
        try:
            e, file = shipped_path(name)
            rows.append(_row(name, e["kind"], "shipped", file, True, e.get("description") or "verified"))
        except Exception as err:  # noqa: BLE001
            rows.append(_row(name, "?", "shipped", None, False, str(err)))
    return rows


def _describe_real(asset: RealAsset) -> dict:
    try:
        loc = locate(asset)
    except Exception as e:  # noqa: BLE001
        return _row(asset.name, asset.kind, "config", config_path(), False, str(e))
    try:
        p = real_path(asset.name)
        return _row(asset.name, asset.kind, loc.source, p, True, f"found (path from {loc.origin})")
    except Exception as e:  # noqa: BLE001
        return _row(asset.name, asset.kind, loc.source, loc.path, False, str(e))


def _row(name: str, kind: str, source: str, p: Path | None, ok: bool, message: str) -> dict:
    return {"name": name, "kind": kind, "source": source, "path": None if p is None else str(p), "ok": ok,
            "message": message}


__all__ = ["AssetError", "AssetValidationError", "AssetIntegrityError", "RealAsset", "REAL_ASSETS",
           "ASSETS_ENV", "BUDGET_BYTES", "check_budget", "CONFIG_ENV", "MANIFEST_NAME", "assets_dir", "manifest_path",
           "config_path", "available",
           "entry", "load", "path", "real_path", "register", "register_kind", "known_kinds", "describe",
           "sha256_file", "clear_verification_cache"]
