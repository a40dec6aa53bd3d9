"""A fine-tuned generator stored as its difference from the generator it was fine-tuned from.

Latent-consistent fine-tuning leaves the mapping network and every affine bitwise unchanged, and moves the other
weights by a small amount, so a domain generator is stored as: the base asset's name and sha256, and the float16
difference of every tensor that changed (unchanged tensors, the frozen ``w -> s`` map among them, are not stored
and so are exactly the base's). Loading adds the differences to the base in float32. The rounding error per weight
is at most 2**-11 of that weight's change (float16's relative precision), far below the change itself; it is
measured at save time and recorded in the file's metadata (``max_abs_error``). A shipped domain generator is about
a third of a full generator's size, which keeps the shipped assets within their budget.

File: safetensors, metadata ``format`` = :data:`DELTA_FORMAT`, ``version``, ``base`` (asset name), ``base_sha256``,
``config`` (the generator's JSON config), ``max_abs_error``; tensors ``delta.<state-dict key>`` in float16.
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


def save_generator_delta(G: Generator, base: Generator, base_name: str, base_sha256: str, path) -> dict:
    """Write ``G`` as float16 differences from ``base`` (same architecture; ``base_name``/``base_sha256``: the
    asset it is, checked when loading). Returns ``{"changed": n tensors, "unchanged": n, "max_abs_error": e}``,
    ``e`` the largest absolute weight error of the stored file. Raises ``ValueError`` for different
    architectures or a difference beyond float16's range."""
    if G.config != base.config:
        raise ValueError(f"save_generator_delta: architectures differ ({G.config} vs {base.config})")
    mine, theirs = G.state_dict(), base.state_dict()
    tensors, err, unchanged = {}, 0.0, 0
    for k, v in mine.items():
        if torch.equal(v, theirs[k]):
            unchanged += 1
            continue
        d = (v.detach().float().cpu() - theirs[k].detach().float().cpu())
        if float(d.abs().max()) > torch.finfo(torch.float16).max:
            raise ValueError(f"save_generator_delta: the change of {k!r} exceeds float16's range")
        h = d.to(torch.float16)
        tensors[PREFIX + k] = h
        err = max(err, float((theirs[k].float().cpu() + h.float() - v.float().cpu()).abs().max()))
    meta = {"format": DELTA_FORMAT, "version": DELTA_VERSION, "base": base_name, "base_sha256": base_sha256,
            "config": json.dumps(G.config), "max_abs_error": repr(err)}
    save_safetensors(tensors, path, meta)
    return {"changed": len(tensors), "unchanged": unchanged, "max_abs_error": err}


def load_generator_delta(path, device=None, base: Generator | None = None) -> Generator:
    """The generator stored in ``path`` (written by :func:`save_generator_delta`), in eval mode without gradients,
    on ``device``. ``base``: the generator it was made from; by default the shipped asset named in the file, whose
    manifest sha256 must equal the recorded one. Raises ``FileNotFoundError`` for a missing file and
    :class:`~cddfm3d.stylegan2.checkpoints.CheckpointError` (a ``ValueError``) naming the file and field for another
    format, a base of another sha256 or architecture, or tensors that do not belong to the generator."""
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
    for key, d in tensors.items():
        k = key[len(PREFIX):] if key.startswith(PREFIX) else None
        if k not in sd or tuple(d.shape) != tuple(sd[k].shape):
            raise CheckpointError(f"{path}: tensor {key!r} does not match any {base_name!r} tensor of its shape")
        sd[k] = sd[k] + d.float()
    G.load_state_dict(sd)
    for attr in ("weights_source", "w_avg_source"):
        if hasattr(base, attr):
            setattr(G, attr, getattr(base, attr))
    G.eval().requires_grad_(False)
    return G.to(device) if device is not None else G


__all__ = ["DELTA_FORMAT", "save_generator_delta", "load_generator_delta"]
