"""Coefficient priors of the mini world: which faces, expressions, poses and lights the datasets contain.

All draws are in MiniFace's 257-coefficient layout (id 80, exp 64, tex 80, angle 3, gamma 27, trans 3), whose
shape and texture bases are scaled by their standard deviations (unit coefficients are one standard deviation).

* identity, expression, texture: N(0, s^2 I) with s = ID_SCALE, EXP_SCALE, TEX_SCALE (below 1: the tails of
  MiniFace's synthetic population look caricatured or blotchy at 64 px);
* pose (radians): yaw, pitch, roll from normals truncated to +-35, +-20, +-8 degrees;
* light: one dominant light from the front-top (elevation ~ N(25, 15) deg, azimuth ~ N(0, 30) deg) written as
  first-order SH, an ambient level, a slightly tinted colour per light, and small second-order terms;
* translation: a few pixels of jitter in x, y and a few percent of scale through z.

:func:`prior_std` gives the standard deviation of each of the 257 coefficients under these priors.
"""
from __future__ import annotations

import functools
import math

import torch

from ..face3d.morphable import N_COEFFS, SLICES
from ..face3d.lighting import INIT_AMBIENT, directional_light

ID_SCALE = 0.9    # the outer tails of MiniFace identity look caricatured
EXP_SCALE = 0.8
TEX_SCALE = 0.7   # full-std texture detail reads as blotches at 64 px
# (std, limit) in degrees for pitch (x), yaw (y), roll (z): Deep3D's Euler order.
POSE_DEG = {"pitch": (10.0, 20.0), "yaw": (18.0, 35.0), "roll": (4.0, 8.0)}
LIGHT_ELEVATION_DEG = (25.0, 15.0)   # mean, std (positive: from above)
LIGHT_AZIMUTH_DEG = (0.0, 30.0)      # mean, std (positive: from the face's left, the viewer's right)
LIGHT_STRENGTH = (0.35, 0.10)        # first-order magnitude (in units of the DC term), mean, std
AMBIENT_STD = 0.02                   # std of the DC offset added to Deep3D's 0.8 (small: a darker light and a
                                     # darker skin look alike at 64 px; the skin tone carries overall brightness;
                                     # 0.05 before the world-v2 re-ship, when no network could split the two)
TINT_STD = 0.01                      # per-channel colour variation of the light (0.02 before world-v2)
SECOND_ORDER_STD = 0.01              # second-order SH terms (0.03 before world-v2: 15-19 % of the light's variance
                                     # that a 64 px network did not read; benchmarks/README.md, light at 0.80)
TRANS_STD = (0.06, 0.06, 0.25)       # dm: x, y (about 1.7 px at 64 px per 0.06) and z (2.5 % scale per 0.25)
TRANS_LIMIT = (0.15, 0.15, 0.6)


def _truncated_normal(n: int, std: float, limit: float, gen: torch.Generator) -> torch.Tensor:
    """Normal(0, std) conditioned on |x| <= limit (rejection by redraw; cheap for limit >= std)."""
    out = torch.randn(n, generator=gen, dtype=torch.float64) * std
    bad = out.abs() > limit
    while bool(bad.any()):
        out[bad] = torch.randn(int(bad.sum()), generator=gen, dtype=torch.float64) * std
        bad = out.abs() > limit
    return out


def light_gamma(n: int, gen: torch.Generator) -> torch.Tensor:
    """SH gamma [n, 27] (colour-major R0..R8, G0..G8, B0..B8) of the light prior."""
    elev_deg = torch.randn(n, generator=gen, dtype=torch.float64) * LIGHT_ELEVATION_DEG[1] + LIGHT_ELEVATION_DEG[0]
    azim_deg = torch.randn(n, generator=gen, dtype=torch.float64) * LIGHT_AZIMUTH_DEG[1] + LIGHT_AZIMUTH_DEG[0]
    strength = (torch.randn(n, generator=gen, dtype=torch.float64) * LIGHT_STRENGTH[1]
                + LIGHT_STRENGTH[0]).clamp(0.05, 0.8)
    ambient = torch.randn(n, generator=gen, dtype=torch.float64) * AMBIENT_STD
    tint = 1.0 + torch.randn(n, 3, generator=gen, dtype=torch.float64) * TINT_STD
    gamma = directional_light(elev_deg, azim_deg, strength, ambient).reshape(n, 3, 9)   # white, then tinted
    gamma[:, :, 4:] = torch.randn(n, 3, 5, generator=gen, dtype=torch.float64) * SECOND_ORDER_STD
    # Tint scales each colour's whole SH vector (DC offset included: INIT_AMBIENT is added inside shade()).
    gamma = gamma * tint[:, :, None]
    gamma[:, :, 0] += (tint - 1.0) * INIT_AMBIENT
    return gamma.reshape(n, 27)


def sample_coeffs(n: int, seed: int = 0) -> torch.Tensor:
    """Coefficients [n, 257] (float32) drawn from the mini world's priors; deterministic in ``seed``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"sample_coeffs: n must be a non-negative int, found {n!r}")
    gen = torch.Generator().manual_seed(int(seed))
    out = torch.zeros(n, N_COEFFS, dtype=torch.float64)
    out[:, SLICES["id"]] = torch.randn(n, 80, generator=gen, dtype=torch.float64) * ID_SCALE
    out[:, SLICES["exp"]] = torch.randn(n, 64, generator=gen, dtype=torch.float64) * EXP_SCALE
    out[:, SLICES["tex"]] = torch.randn(n, 80, generator=gen, dtype=torch.float64) * TEX_SCALE
    angle = [_truncated_normal(n, math.radians(POSE_DEG[k][0]), math.radians(POSE_DEG[k][1]), gen)
             for k in ("pitch", "yaw", "roll")]
    out[:, SLICES["angle"]] = torch.stack(angle, -1)
    out[:, SLICES["gamma"]] = light_gamma(n, gen)
    out[:, SLICES["trans"]] = torch.stack(
        [_truncated_normal(n, s, lim, gen) for s, lim in zip(TRANS_STD, TRANS_LIMIT, strict=True)], -1)
    return out.float()


GAMMA_STD_SAMPLES = 200_000   # draws of the light prior behind prior_std's gamma entries
GAMMA_STD_SEED = 20240        # fixed, so prior_std is deterministic


def truncated_normal_std(std: float, limit: float) -> float:
    """Standard deviation of Normal(0, std^2) conditioned on |x| <= limit (std > 0, limit > 0).

    With a = limit / std, phi / Phi the standard normal density / distribution: the symmetric truncation keeps
    the mean at 0 and Var = std^2 (1 - 2 a phi(a) / (2 Phi(a) - 1)) (the second moment of a truncated normal,
    e.g. Johnson, Kotz & Balakrishnan, Continuous Univariate Distributions vol. 1, ch. 13.10.1)."""
    if not (math.isfinite(std) and math.isfinite(limit)) or std <= 0 or limit <= 0:
        raise ValueError(f"truncated_normal_std: std and limit must be finite and > 0, found {std}, {limit}")
    a = limit / std
    phi = math.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    mass = math.erf(a / math.sqrt(2.0))                    # 2 Phi(a) - 1
    return std * math.sqrt(1.0 - 2.0 * a * phi / mass)


def prior_std() -> torch.Tensor:
    """Standard deviation [257] (float64) of each coefficient under :func:`sample_coeffs`'s priors.

    id, exp, tex: ``ID_SCALE``, ``EXP_SCALE``, ``TEX_SCALE`` (exact); angles (radians) and translation (dm): the
    truncated normals' std (:func:`truncated_normal_std`, exact); gamma: the sample std of ``GAMMA_STD_SAMPLES``
    draws of :func:`light_gamma` with a fixed seed (the light prior is not Gaussian; relative error about
    ``1 / sqrt(2 * GAMMA_STD_SAMPLES)`` = 0.16 %). The gamma entries vary around a non-zero mean (the light comes
    from the front-top); their std is the spread around it."""
    return _prior_std().clone()


@functools.lru_cache(maxsize=1)
def _prior_std() -> torch.Tensor:
    out = torch.zeros(N_COEFFS, dtype=torch.float64)
    out[SLICES["id"]] = ID_SCALE
    out[SLICES["exp"]] = EXP_SCALE
    out[SLICES["tex"]] = TEX_SCALE
    angle = [truncated_normal_std(math.radians(POSE_DEG[k][0]), math.radians(POSE_DEG[k][1]))
             for k in ("pitch", "yaw", "roll")]
    out[SLICES["angle"]] = torch.tensor(angle, dtype=torch.float64)
    trans = [truncated_normal_std(sd, lim) for sd, lim in zip(TRANS_STD, TRANS_LIMIT, strict=True)]
    out[SLICES["trans"]] = torch.tensor(trans, dtype=torch.float64)
    gen = torch.Generator().manual_seed(GAMMA_STD_SEED)
    out[SLICES["gamma"]] = light_gamma(GAMMA_STD_SAMPLES, gen).std(0)
    return out
