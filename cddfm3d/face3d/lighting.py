"""Second-order spherical-harmonics (SH9) lighting, exactly as Deep3DFaceRecon (reference face3d.md §2.8).

Gamma is 27 numbers, colour-major [R0..R8, G0..G8, B0..B8]; ``init_ambient`` (0.8) is added to each colour's
DC coefficient so that gamma = 0 means a plain ambient light (colour = 0.886 * 0.8 * albedo = 0.709 * albedo).
Colours are per vertex and not clamped (the model must stay linear in gamma).
"""
from __future__ import annotations

import math

import torch

# Lambertian band factors a_l and SH normalisation constants c_l.
A0, A1, A2 = math.pi, 2.0 * math.pi / math.sqrt(3.0), 2.0 * math.pi / math.sqrt(8.0)
C0, C1, C2 = 1.0 / math.sqrt(4.0 * math.pi), math.sqrt(3.0) / math.sqrt(4.0 * math.pi), \
    3.0 * math.sqrt(5.0) / math.sqrt(12.0 * math.pi)
INIT_AMBIENT = 0.8


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """The 9 (irradiance-weighted) SH basis values for unit normals [..., 3] -> [..., 9]."""
    if normals.shape[-1] != 3:
        raise ValueError(f"sh_basis: expected normals [..., 3], found shape {tuple(normals.shape)}")
    x, y, z = normals.unbind(-1)
    k1, k2 = A1 * C1, A2 * C2
    return torch.stack([
        torch.full_like(x, A0 * C0),
        -k1 * y,
        k1 * z,
        -k1 * x,
        k2 * x * y,
        -k2 * y * z,
        k2 / (2.0 * math.sqrt(3.0)) * (3.0 * z * z - 1.0),
        -k2 * x * z,
        k2 / 2.0 * (x * x - y * y),
    ], -1)


def shade(albedo: torch.Tensor, normals: torch.Tensor, gamma: torch.Tensor,
          init_ambient: float = INIT_AMBIENT) -> torch.Tensor:
    """Lit colours [B, N, 3] from albedo [B, N, 3], rotated unit normals [B, N, 3] and gamma [B, 27]."""
    if gamma.ndim != 2 or gamma.shape[1] != 27:
        raise ValueError(f"shade: expected gamma [B, 27], found shape {tuple(gamma.shape)}")
    coef = gamma.reshape(-1, 3, 9)
    # Out-of-place DC offset: never touch the caller's gamma.
    coef = coef + torch.nn.functional.pad(coef.new_full((1, 3, 1), init_ambient), (0, 8))
    irradiance = torch.einsum("bnk,bck->bnc", sh_basis(normals), coef)
    return albedo * irradiance
