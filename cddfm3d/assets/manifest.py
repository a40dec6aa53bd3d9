"""The shipped assets: where they are, their manifest (read and checked field by field), size and sha256
verification, and :func:`register` to add a file.

``MANIFEST.json`` lives in :func:`assets_dir`::

    {"format": "cddfm3d.assets", "version": 1,
     "assets": {"mini/generator": {"file": "mini/generator.safetensors", "kind": "stylegan2.Generator",
                                   "sha256": "<64 hex>", "size": <bytes>, "config": {...}, "command": "...",
                                   "metrics": {...}, "description": "...", "created": "<ISO 8601>"}}}

``kind`` selects the loader (see :mod:`cddfm3d.assets.kinds`); ``command`` records what built the file.
"""
from __future__ import annotations

import datetime
import importlib.resources
import json
import os
import re
from pathlib import Path
from typing import Any

from ..serialization import atomic_write
from .errors import AssetError, AssetIntegrityError, AssetValidationError
from .integrity import cached_sha256
from .kinds import PACKAGE, loader_for, unknown_kind_message
from .real import REAL_ASSETS, is_real

ASSETS_ENV = "CDDFM3D_ASSETS"
MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = "cddfm3d.assets"
MANIFEST_VERSION = 1
REQUIRED_FIELDS = ("file", "kind", "sha256", "size")
# An installed wheel carries assets/ as package data under cddfm3d/_shipped (pyproject.toml [tool.setuptools]).
INSTALLED_SUBDIR = "_shipped"
# Everything under assets/ together (tests/test_assets.py holds the repository to it; the ship commands refuse a
# file beyond it). Issue 12's networks fit by storage: domain generators as float16 deltas of mini/generator,
# evaluation-only reconstruction networks in float16.
BUDGET_BYTES = 30 * 2 ** 20


# ============================================================================================= where they are
def assets_dir() -> Path:
    """Folder of the shipped assets, in this order: ``$CDDFM3D_ASSETS`` if set; ``assets/`` at the repository
    root in a source checkout or editable install (the folder next to ``pyproject.toml``); else the copy that
    a built wheel or ``pip install .`` installed as package data, ``<site-packages>/cddfm3d/_shipped``."""
    env = os.environ.get(ASSETS_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    root = Path(__file__).resolve().parent.parent.parent
    if (root / "pyproject.toml").is_file() and (root / "assets").is_dir():
        return root / "assets"
    installed = importlib.resources.files(PACKAGE) / INSTALLED_SUBDIR
    if not isinstance(installed, Path):
        raise AssetError(f"cddfm3d is installed inside an archive ({installed}); its shipped assets cannot be "
                         f"read from there. Install it unpacked (pip install) or set {ASSETS_ENV} to a copy of "
                         f"the repository's assets/ folder")
    return installed


def manifest_path() -> Path:
    """``assets_dir() / "MANIFEST.json"``."""
    return assets_dir() / MANIFEST_NAME


# ================================================================================================= reading
def read_manifest() -> dict:
    """The manifest, checked at the top level only (entries are checked when used, so that one bad entry does
    not hide the others). AssetError when absent, AssetValidationError naming the field when malformed."""
    mpath = manifest_path()
    if not mpath.is_file():
        raise AssetError(f"{mpath}: asset manifest not found. Shipped assets are read from {assets_dir()} "
                         f"(set {ASSETS_ENV} to use another folder); a checkout of the repository and an "
                         f"installed wheel have it.")
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AssetValidationError(f"{mpath}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from e
    except UnicodeDecodeError as e:
        raise AssetValidationError(f"{mpath}: not UTF-8 text ({e})") from e
    if not isinstance(data, dict):
        raise AssetValidationError(f"{mpath}: expected a JSON object at the top level, found {type(data).__name__}")
    _expect_field(mpath, data, "format", MANIFEST_FORMAT)
    _expect_field(mpath, data, "version", MANIFEST_VERSION)
    if not isinstance(data.get("assets"), dict):
        raise AssetValidationError(f"{mpath}: field 'assets' must be an object {{name: entry}}, found "
                                   f"{_found(data, 'assets')}")
    return data


def _expect_field(mpath: Path, data: dict, field: str, expected: Any) -> None:
    if data.get(field) != expected or type(data.get(field)) is not type(expected):
        raise AssetValidationError(f"{mpath}: field '{field}' is {_found(data, field)}, expected {expected!r}")


def _found(data: dict, field: str) -> str:
    return repr(data[field]) if field in data else "missing"


def available() -> list[str]:
    """Names of the shipped assets, sorted (empty when there is no manifest)."""
    if not manifest_path().is_file():
        return []
    return sorted(read_manifest()["assets"])


def entry(name: str) -> dict:
    """The manifest entry of shipped asset ``name`` (a copy), checked field by field: AssetError for an unknown
    name, AssetValidationError naming the manifest, the entry and the field for a malformed one (an unknown
    ``kind`` included)."""
    if is_real(name):
        raise AssetError(f"{name!r} is a user-supplied asset and has no manifest entry; use real_path({name!r}) "
                         f"or describe()")
    assets = read_manifest()["assets"]
    if name not in assets:
        raise AssetError(f"unknown asset {name!r}. Shipped assets (in {manifest_path()}): {sorted(assets)}; "
                         f"user-supplied assets: {sorted(REAL_ASSETS)}")
    return _check_entry(name, assets[name])


def _check_entry(name: str, e: Any) -> dict:
    where = f"{manifest_path()}: assets[{name!r}]"
    if not isinstance(e, dict):
        raise AssetValidationError(f"{where}: expected an object, found {type(e).__name__}")
    missing = [f for f in REQUIRED_FIELDS if f not in e]
    if missing:
        raise AssetValidationError(f"{where}: missing field(s) {missing} (required: {list(REQUIRED_FIELDS)})")
    if not isinstance(e["file"], str) or not _is_inside_relative(e["file"]):
        raise AssetValidationError(f"{where}.file is {e['file']!r}, expected a relative path inside {assets_dir()}")
    if loader_for(e["kind"]) is None:
        raise AssetValidationError(f"{where}.kind is {unknown_kind_message(e['kind'])}")
    if not isinstance(e["sha256"], str) or not re.fullmatch(r"[0-9a-f]{64}", e["sha256"]):
        raise AssetValidationError(f"{where}.sha256 is {e['sha256']!r}, expected 64 lowercase hex digits")
    if isinstance(e["size"], bool) or not isinstance(e["size"], int) or e["size"] < 0:
        raise AssetValidationError(f"{where}.size is {e['size']!r}, expected a byte count (int >= 0)")
    return dict(e)


def _is_inside_relative(file: str) -> bool:
    p = Path(file)
    return bool(file) and not p.is_absolute() and ".." not in p.parts


# ============================================================================================ verification
def shipped_path(name: str, verify: bool = True) -> tuple[dict, Path]:
    """(entry, file) of shipped asset ``name``; with ``verify`` the file's size and sha256 must match the entry
    (AssetIntegrityError otherwise, naming both hashes and the command that rebuilds the file)."""
    e = entry(name)
    file = assets_dir() / e["file"]
    if not file.is_file():
        raise AssetError(f"{file}: file of shipped asset {name!r} not found (listed in {manifest_path()}). "
                         f"Restore it from the repository or rebuild it with: {e.get('command') or '(no command)'}")
    if verify:
        _verify(name, e, file)
    return e, file


def _verify(name: str, e: dict, file: Path) -> None:
    rebuild = (f"The file is damaged or was changed by hand. Restore it from the repository (git checkout -- "
               f"{file}) or rebuild it with: {e.get('command') or '(no command recorded in the manifest)'}")
    size = file.stat().st_size
    if size != e["size"]:
        raise AssetIntegrityError(f"{file}: shipped asset {name!r} has {size} bytes, expected {e['size']} "
                                  f"(from {manifest_path()}). {rebuild}")
    found = cached_sha256(file)
    if found != e["sha256"]:
        raise AssetIntegrityError(f"{file}: sha256 mismatch for shipped asset {name!r}: expected {e['sha256']}, "
                                  f"found {found} (from {manifest_path()}). {rebuild}")


def check_budget(dest, new_size, who: str, budget: int | None = None) -> None:
    """Refuse (``ValueError`` naming ``who``, the file(s) and the sizes) new files that would take ``assets_dir()``
    beyond ``budget`` (default :data:`BUDGET_BYTES`) once written, each replacing the file at its path if present:
    one file ``dest`` of ``new_size`` bytes, or several as ``dest`` = {path: size} (``new_size`` None)."""
    budget = BUDGET_BYTES if budget is None else budget
    files = {Path(k): int(v) for k, v in dest.items()} if isinstance(dest, dict) else {Path(dest): int(new_size)}
    root = assets_dir()
    total = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) if root.is_dir() else 0
    after = total + sum(size - (path.stat().st_size if path.is_file() else 0) for path, size in files.items())
    if after > budget:
        what = (f"{next(iter(files))} ({next(iter(files.values()))} bytes)" if len(files) == 1 else
                f"{len(files)} files ({sum(files.values())} bytes)")
        raise ValueError(f"{who}: {what} would take {root} to {after} bytes, beyond the budget of {budget} bytes "
                         f"({total} now)")


# ============================================================================================ registration
def register(name: str, file, kind: str, config: Any, command: str, metrics: Any, description: str = "") -> dict:
    """Add or replace the manifest entry of shipped asset ``name`` for ``assets_dir()/file`` (a path relative to
    the assets folder, or an absolute one inside it); its sha256 and size are computed here. ``kind`` must be a
    registered kind (ValueError listing them otherwise); ``config`` and ``metrics`` must be JSON-serialisable.
    Other entries are kept, names sorted; the manifest is rewritten atomically. Returns the new entry."""
    if not isinstance(name, str) or not name or is_real(name):
        raise ValueError(f"register: name must be a non-empty string not starting with 'real/', found {name!r}")
    if loader_for(kind) is None:
        raise ValueError(f"register: kind of {name!r} is {unknown_kind_message(kind)}")
    rel = _relative_to_assets(file)
    target = assets_dir() / rel
    if not target.is_file():
        raise AssetError(f"register: {target} does not exist")
    for field, value in (("config", config), ("metrics", metrics)):
        try:
            json.dumps(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"register: {field} of {name!r} must be JSON-serialisable ({err})") from err
    new = {"file": rel, "kind": kind, "sha256": cached_sha256(target), "size": target.stat().st_size,
           "config": config, "command": command, "metrics": metrics, "description": description,
           "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    manifest = read_manifest() if manifest_path().is_file() else \
        {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "assets": {}}
    assets = dict(manifest["assets"], **{name: new})
    manifest["assets"] = {k: assets[k] for k in sorted(assets)}  # sorted names: stable diffs
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"   # indent 1: the assets budget counts it
    atomic_write(manifest_path(), lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return dict(new)


def _relative_to_assets(file) -> str:
    p = Path(file)
    if p.is_absolute():
        root = assets_dir().resolve()
        try:
            p = p.resolve().relative_to(root)
        except ValueError:
            raise ValueError(f"register: {file} is not inside the assets folder {root}") from None
    if not _is_inside_relative(p.as_posix()):
        raise ValueError(f"register: file must be a relative path inside {assets_dir()}, found {str(file)!r}")
    return p.as_posix()


__all__ = ["ASSETS_ENV", "BUDGET_BYTES", "check_budget", "MANIFEST_NAME", "assets_dir", "manifest_path",
           "read_manifest", "available", "entry", "shipped_path", "register"]
