"""Named assets: the shipped mini world and the user-supplied real world.

Two worlds, one loader:

* **shipped** (``"mini/..."``): small weights produced by the package's own training commands, stored in
  ``assets/`` at the repository root (override: ``$CDDFM3D_ASSETS``) and listed in ``assets/MANIFEST.json``
  with sha256, size, config, the exact command that built them and their metrics. Every load checks size and
  sha256, so a damaged or hand-edited file is reported instead of silently giving other results.
* **real** (``"real/..."``): FFHQ StyleGAN2, BFM09, Deep3DFaceRecon, VGG16 (LPIPS) and ArcFace weights. Their
  licences forbid shipping them and cddfm3d never downloads anything, so their paths come from environment
  variables or from ``[real]`` in ``~/.config/cddfm3d/config.toml`` (or the file named by
  ``$CDDFM3D_CONFIG``); every error names the file, where its path came from and how to obtain it.

``load(name)`` returns the ready object (modules in eval mode, without gradients); ``describe()`` gives a table
of every asset for notebooks.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .serialization import atomic_write

ASSETS_ENV = "CDDFM3D_ASSETS"
CONFIG_ENV = "CDDFM3D_CONFIG"
MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = "cddfm3d.assets"
MANIFEST_VERSION = 1
SHIPPED_KINDS = ("stylegan2.Generator", "face3d.ReconNet", "json")
REQUIRED_FIELDS = ("file", "kind", "sha256", "size")
VGG16_FILE = "vgg16-397923af.pth"
VGG16_KEY, VGG16_SHAPE = "features.0.weight", (64, 3, 3, 3)

DeviceLike = Optional[Any]  # str | torch.device | None


class AssetError(FileNotFoundError):
    """An asset is missing: not configured, not on disk, or not in the manifest. The message says what to do."""


class AssetValidationError(ValueError):
    """An asset file (or the manifest, or the config file) exists but its content is wrong."""


class AssetIntegrityError(AssetError, AssetValidationError):
    """A shipped file's size or sha256 differs from the manifest: the expected asset is missing *and* the file
    on disk is wrong, so both ``except AssetError`` and ``except AssetValidationError`` catch it."""


# =============================================================================================== shipped assets
def assets_dir() -> Path:
    """Folder of the shipped assets: ``$CDDFM3D_ASSETS`` if set, else ``assets/`` at the repository root."""
    env = os.environ.get(ASSETS_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent / "assets"


def manifest_path() -> Path:
    return assets_dir() / MANIFEST_NAME


def _read_manifest() -> dict:
    """The validated manifest (top level only; entries are checked when used, so one bad entry does not hide
    the others)."""
    mpath = manifest_path()
    if not mpath.is_file():
        raise AssetError(f"{mpath}: asset manifest not found. Shipped assets are read from {assets_dir()} "
                         f"(set {ASSETS_ENV} to use another folder); a fresh checkout of the repository has it.")
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
    """Names of the shipped assets (empty when there is no manifest)."""
    if not manifest_path().is_file():
        return []
    return sorted(_read_manifest()["assets"])


def entry(name: str) -> dict:
    """The manifest entry of shipped asset ``name`` (a copy), checked field by field."""
    if _is_real(name):
        raise AssetError(f"{name!r} is a user-supplied asset and has no manifest entry; use real_path({name!r}) "
                         f"or describe()")
    manifest = _read_manifest()
    assets = manifest["assets"]
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
    if e["kind"] not in SHIPPED_KINDS:
        raise AssetValidationError(f"{where}.kind is {e['kind']!r}, expected one of {list(SHIPPED_KINDS)}")
    if not isinstance(e["sha256"], str) or not re.fullmatch(r"[0-9a-f]{64}", e["sha256"]):
        raise AssetValidationError(f"{where}.sha256 is {e['sha256']!r}, expected 64 lowercase hex digits")
    if isinstance(e["size"], bool) or not isinstance(e["size"], int) or e["size"] < 0:
        raise AssetValidationError(f"{where}.size is {e['size']!r}, expected a byte count (int >= 0)")
    return dict(e)


def _is_inside_relative(file: str) -> bool:
    p = Path(file)
    return bool(file) and not p.is_absolute() and ".." not in p.parts


# ------------------------------------------------------------------------------------------- integrity
# (resolved path, size, mtime_ns) -> sha256 of the content: loading the same file twice in one process does
# not hash it twice, and any rewrite of the file changes the key.
_HASHES: dict[tuple[str, int, int], str] = {}


def clear_verification_cache() -> None:
    """Forget which files were hashed (for tests and for files edited within the file system's time
    resolution)."""
    _HASHES.clear()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _cached_sha256(path: Path) -> str:
    key = _stat_key(path)  # taken before hashing: a file changed meanwhile gets a new key next time
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def _verify(name: str, e: dict, file: Path) -> None:
    rebuild = (f"The file is damaged or was changed by hand. Restore it from the repository (git checkout -- "
               f"{file}) or rebuild it with: {e.get('command') or '(no command recorded in the manifest)'}")
    size = file.stat().st_size
    if size != e["size"]:
        raise AssetIntegrityError(f"{file}: shipped asset {name!r} has {size} bytes, expected {e['size']} "
                                  f"(from {manifest_path()}). {rebuild}")
    found = _cached_sha256(file)
    if found != e["sha256"]:
        raise AssetIntegrityError(f"{file}: sha256 mismatch for shipped asset {name!r}: expected {e['sha256']}, "
                                  f"found {found} (from {manifest_path()}). {rebuild}")


def _shipped_path(name: str, verify: bool = True) -> tuple[dict, Path]:
    e = entry(name)
    file = assets_dir() / e["file"]
    if not file.is_file():
        raise AssetError(f"{file}: file of shipped asset {name!r} not found (listed in {manifest_path()}). "
                         f"Restore it from the repository or rebuild it with: {e.get('command') or '(no command)'}")
    if verify:
        _verify(name, e, file)
    return e, file


# --------------------------------------------------------------------------------------------- loaders
def _load_shipped(name: str, kind: str, file: Path, device: DeviceLike) -> Any:
    if kind == "json":
        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise AssetValidationError(f"{name}: {file}: not valid JSON ({e})") from e
    if kind == "stylegan2.Generator":
        from .stylegan2.checkpoints import load_generator

        return _frozen(_wrapped(name, "manifest", lambda: load_generator(file, device)))
    from .face3d.recon import ReconNet

    return _frozen(_wrapped(name, "manifest", lambda: ReconNet.load(file, device)))


def _wrapped(name: str, source: str, loader: Callable[[], Any]) -> Any:
    """Run a loader; its content errors (CheckpointError, ReconCheckpointError, BFMFormatError: ValueErrors
    that already name the file and field) pass through with the asset name and the path's origin added."""
    try:
        return loader()
    except (AssetError, AssetValidationError):
        raise
    except FileNotFoundError as e:
        raise AssetError(f"{name} (path from {source}): {e}") from e
    except ValueError as e:
        raise AssetValidationError(f"{name} (path from {source}): {e}") from e


def _frozen(module: torch.nn.Module) -> torch.nn.Module:
    return module.eval().requires_grad_(False)


# =============================================================================================== real assets
@dataclass(frozen=True)
class RealAsset:
    name: str
    kind: str
    env: str            # environment variable holding the path
    key: str            # key in the [real] table of the config file
    what: str           # one line: what the file is
    how: str            # how to obtain it (never downloaded by cddfm3d)
    default: Optional[Callable[[], Path]] = None  # conventional location tried when nothing is configured


def _vgg16_default() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


REAL_ASSETS: dict[str, RealAsset] = {a.name: a for a in (
    RealAsset("real/generator", "stylegan2.Generator", "CDDFM3D_FFHQ_GENERATOR", "generator",
              "FFHQ StyleGAN2 generator checkpoint (rosinality .pt, NVIDIA .pkl or cddfm3d .safetensors)",
              "e.g. rosinality's stylegan2-ffhq-config-f.pt (converted from NVIDIA's official "
              "stylegan2-ffhq-config-f.pkl with rosinality/stylegan2-pytorch's convert_weight.py), or NVIDIA's "
              "stylegan2-ffhq-1024x1024.pkl from the StyleGAN2-ADA (NVlabs/stylegan2-ada-pytorch) release"),
    RealAsset("real/bfm", "face3d.MorphableModel", "CDDFM3D_BFM", "bfm",
              "BFM_model_front.mat in Deep3DFaceRecon's layout",
              "register at https://faces.dmi.unibas.ch/bfm/ for the Basel Face Model 2009 (01_MorphableModel.mat), "
              "get Exp_Pca.bin from Guo et al.'s 3DFace CoarseData (3DDFA), put both into the BFM/ folder of "
              "sicxu/Deep3DFaceRecon_pytorch (which holds std_exp.txt, BFM_exp_idx.mat, BFM_front_idx.mat, "
              "facemodel_info.mat) and run cddfm3d.face3d.convert_bfm09_dir('BFM') once, as that repository's "
              "README describes"),
    RealAsset("real/recon", "face3d.ReconNet", "CDDFM3D_DEEP3D", "recon",
              "Deep3DFaceRecon_pytorch reconstruction checkpoint epoch_20.pth",
              "the pretrained model checkpoints/<name>/epoch_20.pth linked from sicxu/Deep3DFaceRecon_pytorch's "
              "README"),
    RealAsset("real/vgg16", "torchvision.vgg16", "CDDFM3D_VGG16", "vgg16",
              f"torchvision ImageNet VGG16 weights {VGG16_FILE} (the LPIPS backbone)",
              f"torchvision's VGG16_Weights.IMAGENET1K_V1; running torchvision.models.vgg16(weights='IMAGENET1K_V1') "
              f"once on a machine with internet access stores it in the torch hub cache "
              f"(torch.hub.get_dir()/checkpoints/{VGG16_FILE}), which is also looked up by default",
              default=_vgg16_default),
    RealAsset("real/arcface", "arcface.state_dict", "CDDFM3D_ARCFACE", "arcface",
              "ArcFace backbone state dict",
              "e.g. InsightFace's ms1mv3_arcface_r100_fp16/backbone.pth from the arcface_torch model zoo "
              "(deepinsight/insightface, recognition/arcface_torch)"),
)}


def _is_real(name: str) -> bool:
    return name.startswith("real/")


def _real(name: str) -> RealAsset:
    if name not in REAL_ASSETS:
        raise AssetError(f"unknown asset {name!r}; user-supplied assets: {sorted(REAL_ASSETS)}")
    return REAL_ASSETS[name]


def config_path() -> Path:
    """The config file: ``$CDDFM3D_CONFIG`` if set, else ``~/.config/cddfm3d/config.toml``."""
    env = os.environ.get(CONFIG_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".config" / "cddfm3d" / "config.toml"


def _config_real_table() -> tuple[Path, dict]:
    """(config file, its [real] table); an absent default file is an empty table."""
    cpath = config_path()
    if not cpath.is_file():
        if os.environ.get(CONFIG_ENV, "").strip():
            raise AssetError(f"{cpath}: config file not found (named by {CONFIG_ENV})")
        return cpath, {}
    try:
        data = tomllib.loads(cpath.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise AssetValidationError(f"{cpath}: not a valid TOML config file ({e})") from e
    table = data.get("real", {})
    if not isinstance(table, dict):
        raise AssetValidationError(f"{cpath}: 'real' must be a table ([real]), found {type(table).__name__}")
    return cpath, table


@dataclass(frozen=True)
class _Located:
    path: Optional[Path]
    source: str   # "env" | "config" | "default" | "unset"
    origin: str   # for messages: where the path came from


def _locate(asset: RealAsset) -> _Located:
    # precedence: environment variable, then config file, then the conventional default location
    env = os.environ.get(asset.env, "").strip()
    if env:
        return _Located(Path(env).expanduser(), "env", f"environment variable {asset.env}")
    cpath, table = _config_real_table()
    if asset.key in table:
        value = table[asset.key]
        if not isinstance(value, str) or not value.strip():
            raise AssetValidationError(f"{cpath}: [real] {asset.key} must be a non-empty path string, "
                                       f"found {value!r}")
        p = Path(value).expanduser()
        # relative paths are relative to the config file's folder, not to the working directory
        return _Located(p if p.is_absolute() else cpath.parent / p, "config",
                        f"config file {cpath}, key [real] {asset.key}")
    if asset.default is not None and asset.default().is_file():
        return _Located(asset.default(), "default", "its default location")
    return _Located(None, "unset", "nowhere")


def _unset_message(asset: RealAsset) -> str:
    default = f" It was not found at its default location {asset.default()} either." if asset.default else ""
    return (f"{asset.name}: {asset.what} is not configured. Set the environment variable {asset.env}=/path/to/file, "
            f"or add  {asset.key} = \"/path/to/file\"  to the [real] table of {config_path()} (or of the file "
            f"named by {CONFIG_ENV}).{default} How to obtain it: {asset.how}. cddfm3d never downloads it.")


def real_path(name: str) -> Path:
    """Path of user-supplied asset ``name``: configured, existing and a file (the content is checked by
    :func:`load`)."""
    return _checked_location(name).path


def _checked_location(name: str) -> _Located:
    asset = _real(name)
    loc = _locate(asset)
    if loc.path is None:
        raise AssetError(_unset_message(asset))
    if not loc.path.exists():
        raise AssetError(f"{name}: {loc.path} does not exist (path from {loc.origin}). Expected {asset.what}; "
                         f"how to obtain it: {asset.how}.")
    if not loc.path.is_file():
        raise AssetValidationError(f"{name}: {loc.path} is not a file (path from {loc.origin}); expected "
                                   f"{asset.what}")
    return loc


def _load_real(name: str, device: DeviceLike) -> Any:
    loc = _checked_location(name)
    file, origin = loc.path, loc.origin
    if name == "real/generator":
        from .stylegan2.checkpoints import load_generator

        return _frozen(_wrapped(name, origin, lambda: load_generator(file, device)))
    if name == "real/bfm":
        from .face3d.morphable import MorphableModel

        model = _wrapped(name, origin, lambda: MorphableModel.from_bfm(file))
        return _frozen(model.to(device) if device is not None else model)
    if name == "real/recon":
        from .face3d.recon import ReconNet

        return _frozen(_wrapped(name, origin, lambda: ReconNet.from_deep3d(file, device)))
    sd = _torch_state_dict(name, file, origin)
    if name == "real/vgg16":
        _check_vgg16(name, file, sd)
    return {k: v.to(device) for k, v in sd.items()} if device is not None else sd


def _torch_state_dict(name: str, file: Path, origin: str) -> dict:
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for files that are not checkpoints
        first = str(e).splitlines()[0] if str(e) else ""
        raise AssetValidationError(f"{name}: {file} (path from {origin}) is not a readable PyTorch checkpoint "
                                   f"({type(e).__name__}: {first}); expected {REAL_ASSETS[name].what}") from e
    if not isinstance(obj, dict) or not obj:
        raise AssetValidationError(f"{name}: {file}: expected a non-empty state dict {{name: tensor}}, found "
                                   f"{type(obj).__name__}{' (empty)' if isinstance(obj, dict) else ''}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise AssetValidationError(f"{name}: {file}: expected a state dict of tensors, but {bad[:5]} are "
                                   f"{type(obj[bad[0]]).__name__}, not tensors (a training checkpoint? save only "
                                   f"the backbone's state_dict())")
    return obj


def _check_vgg16(name: str, file: Path, sd: dict) -> None:
    if VGG16_KEY not in sd:
        raise AssetValidationError(f"{name}: {file}: expected torchvision VGG16 weights with key '{VGG16_KEY}' "
                                   f"of shape {list(VGG16_SHAPE)}, found keys {sorted(sd)[:8]}")
    shape = tuple(sd[VGG16_KEY].shape)
    if shape != VGG16_SHAPE:
        raise AssetValidationError(f"{name}: {file}: '{VGG16_KEY}' has shape {list(shape)}, expected "
                                   f"{list(VGG16_SHAPE)}")


# =============================================================================================== public
def load(name: str, device: DeviceLike = None, verify: bool = True) -> Any:
    """Load asset ``name``: a module (eval mode, no gradients, on ``device``), a state dict or parsed JSON.

    Shipped assets are checked against the manifest (size, sha256) unless ``verify=False``; user-supplied ones
    are located (env var, config file) and validated by their loaders."""
    if _is_real(name):
        return _load_real(name, device)
    e, file = _shipped_path(name, verify)
    return _load_shipped(name, e["kind"], file, device)


def path(name: str, verify: bool = True) -> Path:
    """Path of asset ``name``: shipped (verified against the manifest) or user-supplied (see real_path)."""
    if _is_real(name):
        return real_path(name)
    return _shipped_path(name, verify)[1]


def register(name: str, file, kind: str, config: Any, command: str, metrics: Any, description: str = "") -> dict:
    """Add or replace the manifest entry of shipped asset ``name`` for ``assets_dir()/file`` (its sha256 and size
    are computed here). Other entries are kept; the manifest is rewritten atomically. Returns the entry."""
    if not isinstance(name, str) or not name or _is_real(name):
        raise ValueError(f"register: name must be a non-empty string not starting with 'real/', found {name!r}")
    if kind not in SHIPPED_KINDS:
        raise ValueError(f"register: kind must be one of {list(SHIPPED_KINDS)}, found {kind!r}")
    rel = _relative_to_assets(file)
    target = assets_dir() / rel
    if not target.is_file():
        raise AssetError(f"register: {target} does not exist")
    for field, value in (("config", config), ("metrics", metrics)):
        try:
            json.dumps(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"register: {field} of {name!r} must be JSON-serialisable ({err})") from err
    new = {"file": rel, "kind": kind, "sha256": _cached_sha256(target), "size": target.stat().st_size,
           "config": config, "command": command, "metrics": metrics, "description": description,
           "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    manifest = _read_manifest() if manifest_path().is_file() else \
        {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "assets": {}}
    assets = dict(manifest["assets"], **{name: new})
    manifest["assets"] = {k: assets[k] for k in sorted(assets)}  # sorted names: stable diffs
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
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
            e, file = _shipped_path(name)
            rows.append(_row(name, e["kind"], "shipped", file, True, e.get("description") or "verified"))
        except Exception as err:  # noqa: BLE001
            rows.append(_row(name, "?", "shipped", None, False, str(err)))
    return rows


def _describe_real(asset: RealAsset) -> dict:
    try:
        loc = _locate(asset)
    except Exception as e:  # noqa: BLE001
        return _row(asset.name, asset.kind, "config", config_path(), False, str(e))
    try:
        p = real_path(asset.name)
        return _row(asset.name, asset.kind, loc.source, p, True, f"found (path from {loc.origin})")
    except Exception as e:  # noqa: BLE001
        return _row(asset.name, asset.kind, loc.source, loc.path, False, str(e))


def _row(name: str, kind: str, source: str, p: Optional[Path], ok: bool, message: str) -> dict:
    return {"name": name, "kind": kind, "source": source, "path": None if p is None else str(p), "ok": ok,
            "message": message}


__all__ = ["AssetError", "AssetValidationError", "AssetIntegrityError", "RealAsset", "REAL_ASSETS",
           "SHIPPED_KINDS", "assets_dir", "manifest_path", "config_path", "available", "entry", "load", "path",
           "real_path", "register", "describe", "sha256_file", "clear_verification_cache"]
