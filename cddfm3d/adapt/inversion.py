"""Embeddings on disk and the ``python -m cddfm3d invert`` command: image files (or photographs, detected and
aligned) -> :func:`~cddfm3d.adapt.project` or :func:`~cddfm3d.adapt.pie_embed` -> one embedding file each.

An embedding file (:func:`save_embedding`, safetensors, metadata ``format`` = ``cddfm3d.embedding``, version 1)
holds, for B images, ``styles`` [B, D] (the flat StyleSpace vector, tRGB included), ``ws`` [B, num_ws, w_dim],
the noise maps ``noise.<j>`` [B, 1, r, r] and the embedding's ``image`` [B, 3, R, R] in [-1, 1], all float32,
plus metadata: ``method`` ("project" or "pie"), ``space``, ``steps``, ``psnr`` (JSON list, dB), ``perceptual``
(the distance's name) and ``generator`` (what it was embedded into). :func:`load_embedding` returns a
:class:`~cddfm3d.adapt.projection.ProjectionResult` (``history`` empty), so an embedding is edited exactly as a
fresh one: ``FaceEditor.edit(r.styles, ...)`` decoded with ``r.noise``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..serialization import read_native_safetensors, save_safetensors
from .projection import ProjectionResult

FORMAT = "cddfm3d.embedding"
VERSION = "1"
METHODS = ("project", "pie")


class EmbeddingFileError(ValueError):
    """An embedding file that is unreadable, of another format or version, or missing a field."""


def save_embedding(result: ProjectionResult, path, method: str, generator: str = "") -> Path:
    """Write ``result`` (a :class:`ProjectionResult` or :class:`~cddfm3d.adapt.pie.PIEResult`) to ``path``
    (module docstring), atomically. ``method``: "project" or "pie"; ``generator``: a note of the generator used.
    Returns the path. Raises ``ValueError`` for another method name."""
    if method not in METHODS:
        raise ValueError(f"save_embedding: method must be one of {METHODS}, found {method!r}")
    tensors = {"styles": result.styles, "ws": result.ws, "image": result.image}
    tensors.update({f"noise.{j}": n for j, n in enumerate(result.noise)})
    meta = {"format": FORMAT, "version": VERSION, "method": method, "space": result.space,
            "steps": str(int(result.steps)), "psnr": json.dumps([float(v) for v in result.psnr.cpu()]),
            "perceptual": result.perceptual, "generator": str(generator)}
    return save_safetensors({k: v.float() for k, v in tensors.items()}, Path(path), meta)


def load_embedding(path, device=None) -> ProjectionResult:
    """Read an embedding file written by :func:`save_embedding` as a :class:`ProjectionResult` on ``device``
    (default CPU; ``history`` empty, ``perceptual_distance`` and ``mse`` NaN, ``psnr`` as stored, ``seconds`` 0).

    Raises ``FileNotFoundError`` for a missing file and :class:`EmbeddingFileError` naming the file and the field for
    an unreadable file, another format or version, or missing / inconsistent tensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_embedding: {path} does not exist")
    tensors, meta = read_native_safetensors(path, FORMAT, "cddfm3d.adapt.inversion.save_embedding",
                                            EmbeddingFileError, version=VERSION)
    for key in ("styles", "ws", "image", "noise.0"):
        if key not in tensors:
            raise EmbeddingFileError(f"{path}: tensor {key!r} is missing (expected styles, ws, image, noise.0 ...)")
    n_noise = sum(1 for k in tensors if k.startswith("noise."))
    noise = []
    for j in range(n_noise):
        if f"noise.{j}" not in tensors:
            raise EmbeddingFileError(f"{path}: tensor 'noise.{j}' is missing (the noise maps are numbered 0 .. "
                                     f"{n_noise - 1})")
        noise.append(tensors[f"noise.{j}"].to(device))
    B = tensors["styles"].shape[0]
    bad = [k for k, v in tensors.items() if v.shape[0] != B]
    if bad:
        raise EmbeddingFileError(f"{path}: tensors {bad} do not have the {B} images of 'styles'")
    try:
        psnr = torch.tensor(json.loads(meta.get("psnr", "[]")), dtype=torch.float32)
        steps = int(meta.get("steps", "0"))
    except (ValueError, TypeError) as e:
        raise EmbeddingFileError(f"{path}: metadata field 'psnr' or 'steps' is invalid ({e})") from None
    if psnr.shape != (B,):
        raise EmbeddingFileError(f"{path}: metadata field 'psnr' has {tuple(psnr.shape)} values, expected {B}")
    nan = torch.full((B,), math.nan)
    return ProjectionResult(ws=tensors["ws"].to(device), styles=tensors["styles"].to(device), noise=noise,
                            image=tensors["image"].to(device), space=meta.get("space", "?"),
                            perceptual=meta.get("perceptual", "?"), perceptual_distance=nan.to(device),
                            mse=nan.to(device), psnr=psnr.to(device), history={}, steps=steps)


def embed_image(G, x: torch.Tensor, method: str = "pie", space: str = "w+", steps: int | None = None, editor=None,
                seed: int = 0, progress: bool = True) -> ProjectionResult:
    """One call for both methods: ``pie_embed`` (``space`` must be "w+", where PIE ends) or ``project`` in ``space``
    of images ``x`` [B, 3, R, R] in [-1, 1]; ``steps`` None: the method's default. Raises ``ValueError`` for an
    unknown method or PIE with another space."""
    from .pie import DEFAULT_STEPS as PIE_STEPS
    from .pie import pie_embed
    from .projection import DEFAULT_STEPS, project

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, found {method!r}")
    if method == "pie":
        if space != "w+":
            raise ValueError(f"PIE optimises in W, then W+: space must be 'w+' for method 'pie', found {space!r}")
        return pie_embed(G, x, steps=PIE_STEPS if steps is None else steps, editor=editor, seed=seed,
                         progress=progress)
    return project(G, x, space=space, steps=DEFAULT_STEPS if steps is None else steps, seed=seed, progress=progress)


def read_input(path, resolution: int, photo: bool, face="largest", upsample: int = 0, framing: str = "deep3d"
               ) -> tuple[torch.Tensor, np.ndarray | None]:
    """The generator input [1, 3, R, R] in [-1, 1] of an image file, and (photographs) the crop's 68 landmarks at
    R px. ``photo``: detect the face with dlib (``face``: "largest" or an index; ``upsample``: the detector's
    upsampling, 1 finds faces down to about 40 px) and cut it out (:func:`cddfm3d.photo.align_photo`) with
    ``framing`` "deep3d" (the mini world's: Deep3D's 5-point alignment at 128 px, area-reduced to R) or "ffhq" (a
    real FFHQ generator's: FFHQ's alignment, at R); otherwise the whole image, centre-cropped to a square
    (:func:`cddfm3d.ui.image_input.generator_input`). Raises the readers' errors (``FileNotFoundError``,
    ``ValueError``, :class:`cddfm3d.photo.NoFaceError`, ...)."""
    from ..ui.image_input import generator_input

    if not photo:
        return generator_input(path, resolution, "invert")[0], None
    from ..photo import align_photo

    size = resolution if framing == "ffhq" else None
    aligned = align_photo(path, face=face, upsample=upsample, framing=framing,
                          **({} if size is None else {"size": size}))
    x = generator_input(aligned.crop, resolution, "invert")[0]
    scale = resolution / aligned.size
    return x, (np.asarray(aligned.landmarks) + 0.5) * scale - 0.5


__all__ = ["save_embedding", "load_embedding", "embed_image", "read_input", "EmbeddingFileError", "FORMAT",
           "METHODS"]
