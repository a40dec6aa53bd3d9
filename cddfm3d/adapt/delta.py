"""A fine-tuned generator stored as its difference from the generator it was fine-tuned from.

Latent-consistent fine-tuning leaves the mapping network and every affine bitwise unchanged, and moves the other
weights by a small amount, so a domain generator is stored as: the base asset's name and sha256, and the
difference of every tensor that changed (unchanged tensors, the frozen ``w -> s`` map among them, are not stored
and so are exactly the base's). Loading adds the differences to the base in float32. Two precisions
(:data:`DELTA_PRECISIONS`):

* ``"float16"`` (default): every difference in float16. The rounding error per weight is at most 2**-11 of that
  weight's change (float16's relative precision), far below the change itself.
* ``"int8"``: the differences of tensors of 2 or more dimensions (convolution weights, the constant input) as
  symmetric int8 with one float32 scale per row (dimension 0, a convolution's output channels):
  ``q = round(d / s)``, ``s = max |d| of the row / 127``, so the error per weight is at most ``s / 2`` (1/254 of
  the row's largest change); biases and noise strengths (1-D and 0-D) stay float16. Half the size of float16,
  for assets that must fit a tight budget (the usual post-training weight quantisation, applied to the change
  rather than to the weights).

The largest absolute weight error of the stored file is measured at save time and recorded in its metadata
(``max_abs_error``); a shipped file's metrics are measured on the stored file, rounding included. A float16 domain
generator that changes every synthesis block is about a third of a full generator's size; an int8 FreezeG one
that changes the last block and the tRGB layers, under 1 %.

File: safetensors, metadata ``format`` = :data:`DELTA_FORMAT`, ``version``, ``base`` (asset name), ``base_sha256``,
``config`` (the generator's JSON config), ``precision``, ``max_abs_error``; tensors ``delta.<state-dict key>``
(float16, or int8 with ``scale.<state-dict key>`` [rows] float32). Files written before ``precision`` existed are
float16.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..serialization import read_native_safetensors, save_safetensors
from ..stylegan2.checkpoints import CheckpointError
from ..stylegan2.generator import Generator

DELTA_FORMAT = "cddfm3d.generator-delta"
DELTA_VERSION = "1"
PREFIX = "delta."
SCALE_PREFIX = "scale."
DELTA_PRECISIONS = ("float16", "int8")


def _quantise_rows(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one float32 scale per row (dimension 0) of ``d``: (q [same shape] int8, scale [rows]).
    A row without change gets scale 1 and zeros."""
    rows = d.reshape(d.shape[0], -1)
    scale = rows.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(rows / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.reshape(d.shape), scale.float()


def _dequantise_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (q.float().reshape(q.shape[0], -1) * scale.float()[:, None]).reshape(q.shape)


def save_generator_delta(G: Generator, base: Generator, base_name: str, base_sha256: str, path,
                         precision: str = "float16") -> dict:
    """Write ``G`` as differences from ``base`` (same architecture; ``base_name``/``base_sha256``: the asset it is,
    checked when loading) in ``precision`` (module docstring: ``"float16"`` or ``"int8"``). Returns
    ``{"changed": n tensors, "unchanged": n, "max_abs_error": e, "precision": precision}``, ``e`` the largest
    absolute weight error of the stored file. Raises ``ValueError`` for different architectures, an unknown
    precision, or a change that is not finite or beyond float16's range."""
    if G.config != base.config:
        raise ValueError(f"save_generator_delta: architectures differ ({G.config} vs {base.config})")
    if precision not in DELTA_PRECISIONS:
        raise ValueError(f"save_generator_delta: precision must be one of {DELTA_PRECISIONS}, found {precision!r}")
    mine, theirs = G.state_dict(), base.state_dict()
    tensors, err, unchanged = {}, 0.0, 0
    for k, v in mine.items():
        if torch.equal(v, theirs[k]):
            unchanged += 1
            continue
        d = (v.detach().float().cpu() - theirs[k].detach().float().cpu())
        if not torch.isfinite(d).all():
            raise ValueError(f"save_generator_delta: the change of {k!r} is not finite (NaN or inf weights)")
        if float(d.abs().max()) > torch.finfo(torch.float16).max:
            raise ValueError(f"save_generator_delta: the change of {k!r} exceeds float16's range")
        if precision == "int8" and d.ndim >= 2:
            q, scale = _quantise_rows(d)
            tensors[PREFIX + k], tensors[SCALE_PREFIX + k] = q, scale
            stored = _dequantise_rows(q, scale)
        else:
            tensors[PREFIX + k] = d.to(torch.float16)
            stored = tensors[PREFIX + k].float()
        err = max(err, float((theirs[k].float().cpu() + stored - v.float().cpu()).abs().max()))
    meta = {"format": DELTA_FORMAT, "version": DELTA_VERSION, "base": base_name, "base_sha256": base_sha256,
            "config": json.dumps(G.config), "precision": precision, "max_abs_error": repr(err)}
    save_safetensors(tensors, path, meta)
    changed = sum(k.startswith(PREFIX) for k in tensors)
    return {"changed": changed, "unchanged": unchanged, "max_abs_error": err, "precision": precision}


def load_generator_delta(path, device=None, base: Generator | None = None) -> Generator:
    """The generator stored in ``path`` (written by :func:`save_generator_delta`), in eval mode without gradients,
    on ``device``. ``base``: the generator it was made from; by default the shipped asset named in the file, whose
    manifest sha256 must equal the recorded one. Raises ``FileNotFoundError`` for a missing file and
    :class:`~cddfm3d.stylegan2.checkpoints.CheckpointError` (a ``ValueError``) naming the file and field for another
    format, a base of another sha256 or architecture, an unknown ``precision``, tensors that do not belong to the
    generator, differences of another dtype than the precision stores (float16; or int8 of 2 or more dimensions with
    a finite float32 scale per row), non-finite differences, or scales of no int8 difference."""
    from .. import assets

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_generator_delta: {path} does not exist")
    tensors, meta = read_native_safetensors(path, DELTA_FORMAT, "cddfm3d.adapt.save_generator_delta",
                                            CheckpointError, version=DELTA_VERSION)
    try:
        config = json.loads(meta["config"])
        base_name, base_sha = meta["base"], meta["base_sha256"]
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: metadata field {e} is missing or not JSON") from e
    precision = meta.get("precision", "float16")     # files written before the field existed are float16
    if precision not in DELTA_PRECISIONS:
        raise CheckpointError(f"{path}: metadata field 'precision' is {precision!r}, expected one of "
                              f"{DELTA_PRECISIONS}")
    if base is None:
        found = assets.entry(base_name)["sha256"]
        if found != base_sha:
            raise CheckpointError(f"{path}: metadata field 'base_sha256' is {base_sha}, but the shipped {base_name!r} "
                                  f"has sha256 {found}: this file was fine-tuned from another version of it")
        base = assets.load(base_name)
    base_config = json.loads(json.dumps(base.config))
    if base_config != config:
        raise CheckpointError(f"{path}: metadata field 'config' is {config}, the base generator's is {base_config}")
    G = Generator(**{**base.config})
    sd = {k: v.detach().clone().float().cpu() for k, v in base.state_dict().items()}
    for key, t in tensors.items():
        if key.startswith(SCALE_PREFIX) and tensors.get(PREFIX + key[len(SCALE_PREFIX):], t).dtype != torch.int8:
            raise CheckpointError(f"{path}: tensor {key!r} is the scale of no stored int8 difference")
    for key, d in tensors.items():
        if key.startswith(SCALE_PREFIX):
            continue
        k = key[len(PREFIX):] if key.startswith(PREFIX) else None
        if k not in sd or tuple(d.shape) != tuple(sd[k].shape):
            raise CheckpointError(f"{path}: tensor {key!r} does not match any {base_name!r} tensor of its shape")
        sd[k] = sd[k] + _stored_change(path, key, d, tensors.get(SCALE_PREFIX + k), precision)
    G.load_state_dict(sd)
    for attr in ("weights_source", "w_avg_source"):
        if hasattr(base, attr):
            setattr(G, attr, getattr(base, attr))
    G.eval().requires_grad_(False)
    return G.to(device) if device is not None else G


def _stored_change(path, key: str, d: torch.Tensor, scale: torch.Tensor | None, precision: str) -> torch.Tensor:
    """The float32 change stored as ``d`` (and its row ``scale`` when int8), checked against ``precision``."""
    if d.dtype == torch.int8 and precision == "int8":
        if d.ndim < 2:
            raise CheckpointError(f"{path}: tensor {key!r} is int8 with shape {tuple(d.shape)}; int8 is stored only "
                                  f"for tensors of 2 or more dimensions")
        rows = (d.shape[0],)
        if scale is None or scale.dtype != torch.float32 or tuple(scale.shape) != rows \
                or not torch.isfinite(scale).all():
            found = "missing" if scale is None else f"{scale.dtype} {tuple(scale.shape)}"
            raise CheckpointError(f"{path}: int8 tensor {key!r} needs a finite float32 scale "
                                  f"'{SCALE_PREFIX}{key[len(PREFIX):]}' of shape {rows}, found {found}")
        return _dequantise_rows(d, scale)
    if d.dtype != torch.float16:
        allowed = "float16 or int8" if precision == "int8" else "float16"
        raise CheckpointError(f"{path}: tensor {key!r} is {d.dtype}; a {precision} delta stores {allowed}")
    if not torch.isfinite(d).all():
        raise CheckpointError(f"{path}: tensor {key!r} holds NaN or inf")
    return d.float()


__all__ = ["DELTA_FORMAT", "DELTA_PRECISIONS", "save_generator_delta", "load_generator_delta"]
