"""The user-supplied real assets: FFHQ StyleGAN2, BFM09, Deep3DFaceRecon, VGG16 (LPIPS) and ArcFace weights.

Their licences forbid shipping them and cddfm3d never downloads anything, so each path comes from, in this
order: an environment variable, the ``[real]`` table of ``~/.config/cddfm3d/config.toml`` (or of the file named by
``$CDDFM3D_CONFIG``; relative paths are relative to that file's folder), or a conventional default location.
Every error names the file, where its path came from and how to obtain it. The ``kind`` of each entry selects
its loader from :mod:`cddfm3d.assets.kinds`, as for shipped assets.
"""
from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import AssetError, AssetValidationError

CONFIG_ENV = "CDDFM3D_CONFIG"
REAL_PREFIX = "real/"
VGG16_FILE = "vgg16-397923af.pth"


@dataclass(frozen=True)
class RealAsset:
    """One user-supplied asset: its name, kind (loader), where its path is configured and how to obtain it."""
    name: str
    kind: str
    env: str            # environment variable holding the path
    key: str            # key in the [real] table of the config file
    what: str           # one line: what the file is
    how: str            # how to obtain it (never downloaded by cddfm3d)
    default: Callable[[], Path] | None = None  # conventional location tried when nothing is configured


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
    RealAsset("real/recon", "face3d.Deep3DFaceRecon", "CDDFM3D_DEEP3D", "recon",
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


def is_real(name: str) -> bool:
    """True for names of user-supplied assets (``"real/..."``)."""
    return isinstance(name, str) and name.startswith(REAL_PREFIX)


def real_asset(name: str) -> RealAsset:
    """The table row of user-supplied asset ``name`` (AssetError listing the known ones otherwise)."""
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
class Located:
    """Where a user-supplied asset's path came from (the file may not exist)."""
    path: Path | None
    source: str   # "env" | "config" | "default" | "unset"
    origin: str   # for messages: where the path came from


def locate(asset: RealAsset) -> Located:
    """The configured path of ``asset`` (environment variable, then config file, then default location), without
    checking that it exists. AssetValidationError for a malformed config file or value."""
    env = os.environ.get(asset.env, "").strip()
    if env:
        return Located(Path(env).expanduser(), "env", f"environment variable {asset.env}")
    cpath, table = _config_real_table()
    if asset.key in table:
        value = table[asset.key]
        if not isinstance(value, str) or not value.strip():
            raise AssetValidationError(f"{cpath}: [real] {asset.key} must be a non-empty path string, "
                                       f"found {value!r}")
        p = Path(value).expanduser()
        # relative paths are relative to the config file's folder, not to the working directory
        return Located(p if p.is_absolute() else cpath.parent / p, "config",
                       f"config file {cpath}, key [real] {asset.key}")
    if asset.default is not None and asset.default().is_file():
        return Located(asset.default(), "default", "its default location")
    return Located(None, "unset", "nowhere")


def _unset_message(asset: RealAsset) -> str:
    default = f" It was not found at its default location {asset.default()} either." if asset.default else ""
    return (f"{asset.name}: {asset.what} is not configured. Set the environment variable {asset.env}=/path/to/file, "
            f"or add  {asset.key} = \"/path/to/file\"  to the [real] table of {config_path()} (or of the file "
            f"named by {CONFIG_ENV}).{default} How to obtain it: {asset.how}. cddfm3d never downloads it.")


def checked_location(name: str) -> Located:
    """:func:`locate` for ``name``, requiring a configured path to an existing file (AssetError naming the
    variable, config key and how to obtain the file otherwise; AssetValidationError for a directory)."""
    asset = real_asset(name)
    loc = locate(asset)
    if loc.path is None:
        raise AssetError(_unset_message(asset))
    if not loc.path.exists():
        raise AssetError(f"{name}: {loc.path} does not exist (path from {loc.origin}). Expected {asset.what}; "
                         f"how to obtain it: {asset.how}.")
    if not loc.path.is_file():
        raise AssetValidationError(f"{name}: {loc.path} is not a file (path from {loc.origin}); expected "
                                   f"{asset.what}")
    return loc


def real_path(name: str) -> Path:
    """Path of user-supplied asset ``name``: configured, existing and a file (the content is checked when it is
    loaded)."""
    return checked_location(name).path


__all__ = ["CONFIG_ENV", "RealAsset", "REAL_ASSETS", "Located", "config_path", "is_real", "locate",
           "checked_location", "real_path", "real_asset"]
