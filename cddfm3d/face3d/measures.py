"""Each editable attribute measured in the space where a person sees it (DESIGN.md, "Measures").

Most of the 80/64/80 PCA components of a morphable model barely move the face, so coefficient errors say little
about what an image shows. Every stage (the reconstruction network, the attribute predictor T, the editing
networks F^i) is therefore measured on these features of the coefficients:

=========== ============ =======================================================================================
attribute   coefficients feature (per sample)
=========== ============ =======================================================================================
shape       id  [0:80]   the identity part of the vertex positions, ``id_base @ id``: [N * 3], dm
expression  exp [80:144] the expression part of the vertex positions, ``exp_base @ exp``: [N * 3], dm
albedo      tex [144:224] the per-vertex albedo colour ``(mean_tex + tex_base @ tex) / 255``: [N * 3], RGB 0-1
light       gamma        the SH irradiance (Deep3D's, +0.8 ambient) over :data:`LIGHT_NORMALS` unit normals that
            [227:254]    face the camera, per colour: [M * 3]
pose        angle        the rotation angles (pitch, yaw, roll) in degrees: [3]
            [224:227]
=========== ============ =======================================================================================

On these features: :func:`attribute_distance` (RMS over vertices / normals of the Euclidean difference per vertex,
in the feature's units; degrees per axis for pose) and :func:`explained_variance` (1 - SSE / SST, pooled over
the feature's entries: the share of the variation across faces that a prediction reproduces; 0 is predicting the
average, 1 is exact). :class:`ExplainedVariance` accumulates it over batches.
"""
from __future__ import annotations

import math

import torch

from .lighting import INIT_AMBIENT, sh_basis
from .morphable import SLICES, MorphableModel

ATTRIBUTES = ("shape", "expression", "albedo", "pose", "light")
ATTRIBUTE_GROUPS = {"shape": "id", "expression": "exp", "albedo": "tex", "pose": "angle", "light": "gamma"}
N_LIGHT_NORMALS = 256


def camera_facing_normals(n: int = N_LIGHT_NORMALS, dtype=torch.float64) -> torch.Tensor:
    """``n`` unit normals [n, 3] spread evenly (a Fibonacci lattice of equal-area cells) over the hemisphere that
    faces the camera (z > 0: x right, y up, z toward the camera, as the model's normals)."""
    k = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - k / n                                  # uniform in (0, 1]: equal area on the hemisphere
    r = torch.sqrt(1.0 - z * z)
    phi = k * math.pi * (3.0 - math.sqrt(5.0))       # golden angle
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1).to(dtype)


LIGHT_NORMALS = camera_facing_normals()


def attribute_features(model: MorphableModel, coeffs: torch.Tensor, attribute: str) -> torch.Tensor:
    """The features [B, K] of ``attribute`` (see the module docstring) for coefficients [B, 257].

    Raises ``ValueError`` for an unknown attribute or coefficients that are not [B, 257]."""
    if attribute not in ATTRIBUTE_GROUPS:
        raise ValueError(f"unknown attribute {attribute!r}; expected one of {ATTRIBUTES}")
    if coeffs.ndim != 2 or coeffs.shape[1] != 257:
        raise ValueError(f"attribute_features: coefficients must be [B, 257], found {tuple(coeffs.shape)}")
    part = coeffs[:, SLICES[ATTRIBUTE_GROUPS[attribute]]].to(model.mean_shape.dtype)
    if attribute == "shape":
        return part @ model.id_base.T
    if attribute == "expression":
        return part @ model.exp_base.T
    if attribute == "albedo":
        return model.compute_albedo(part).flatten(1)
    if attribute == "pose":
        return torch.rad2deg(part)
    basis = sh_basis(LIGHT_NORMALS.to(part))                                   # [M, 9]
    coef = part.reshape(-1, 3, 9).clone()
    coef[:, :, 0] += INIT_AMBIENT
    return torch.einsum("mk,bck->bmc", basis, coef).flatten(1)                 # [B, M * 3]


def _width(attribute: str) -> int:
    """Entries of the feature that form one point (xyz of a vertex, RGB of a vertex or normal; 1 for pose)."""
    return 1 if attribute == "pose" else 3


def attribute_distance(model: MorphableModel, a: torch.Tensor, b: torch.Tensor, attribute: str) -> torch.Tensor:
    """Distance [B] between coefficients ``a`` and ``b`` [B, 257] in ``attribute``'s space: the RMS over points
    (vertices, normals) of the Euclidean distance of their 3-vectors (dm for shape and expression, RGB 0-1 for
    albedo and light); for pose the RMS over the three angles, in degrees."""
    d = attribute_features(model, a, attribute) - attribute_features(model, b, attribute)
    w = _width(attribute)
    return d.reshape(d.shape[0], -1, w).square().sum(-1).mean(-1).sqrt()


class ExplainedVariance:
    """Explained variance of predicted features, accumulated over batches in float64.

    ``update(pred, true)`` with features [B, K]; ``value()`` = 1 - sum (pred - true)^2 / sum (true - mean(true))^2,
    sums over samples and entries, mean over all samples seen (per entry). ``nan`` when the truth does not vary."""

    def __init__(self):
        self.n = 0
        self.sse = 0.0
        self.sum: torch.Tensor | float = 0.0
        self.sumsq: torch.Tensor | float = 0.0

    def update(self, pred: torch.Tensor, true: torch.Tensor) -> None:
        if pred.shape != true.shape or pred.ndim != 2:
            raise ValueError(f"ExplainedVariance: expected two [B, K] tensors of one shape, found "
                             f"{tuple(pred.shape)} and {tuple(true.shape)}")
        p, t = pred.detach().double(), true.detach().double()
        self.n += t.shape[0]
        self.sse += float((p - t).square().sum())
        self.sum = self.sum + t.sum(0)
        self.sumsq = self.sumsq + t.square().sum(0)

    def value(self) -> float:
        if self.n == 0:
            raise ValueError("ExplainedVariance: no samples")
        sst = float((self.sumsq - self.sum ** 2 / self.n).sum()) if self.n > 1 else 0.0
        return 1.0 - self.sse / sst if sst > 0 else float("nan")


def explained_variance(pred: torch.Tensor, true: torch.Tensor) -> float:
    """1 - SSE / SST of features [B, K] (see :class:`ExplainedVariance`)."""
    acc = ExplainedVariance()
    acc.update(pred, true)
    return acc.value()


__all__ = ["ATTRIBUTES", "ATTRIBUTE_GROUPS", "LIGHT_NORMALS", "camera_facing_normals", "attribute_features",
           "attribute_distance", "ExplainedVariance", "explained_variance"]
