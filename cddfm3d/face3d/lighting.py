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


def directional_light(elevation_deg, azimuth_deg, strength, ambient=0.0) -> torch.Tensor:
    """White SH gamma [..., 27] (float64) of an ambient light plus one directional light, the light model of the
    mini world's prior (:func:`cddfm3d.world.priors.light_gamma`) and the inverse of :func:`light_angles_deg`.

    Args (tensors or numbers, broadcast together): ``elevation_deg`` (positive: from above), ``azimuth_deg``
    (0: from the camera, positive: from the face's left, the viewer's right), ``strength`` (band-1 irradiance
    relative to the DC irradiance, e.g. 0.35), ``ambient`` (offset of the DC coefficient added to Deep3D's
    ``INIT_AMBIENT``; 0 = Deep3D's default ambient). Second-order terms are 0.

    The direction toward the light is d = (cos e sin a, sin e, cos e cos a) (x right, y up, z toward the camera);
    with the band-1 basis ``k1 * (-y, z, -x)`` (:func:`sh_basis`) its coefficients are
    ``strength * dc / k1 * (-d_y, d_z, -d_x)`` where dc = (INIT_AMBIENT + ambient) * A0 * C0 is the DC irradiance.
    """
    e, a, st, amb = (torch.as_tensor(x, dtype=torch.float64) for x in (elevation_deg, azimuth_deg, strength,
                                                                       ambient))
    e, a, st, amb = torch.broadcast_tensors(e, a, st, amb)
    e, a = torch.deg2rad(e), torch.deg2rad(a)
    d = torch.stack([torch.cos(e) * torch.sin(a), torch.sin(e), torch.cos(e) * torch.cos(a)], -1)
    dc_irradiance = (INIT_AMBIENT + amb) * 0.886227  # A0 * C0 = sqrt(pi) / 2
    first = (st * dc_irradiance / (A1 * C1))[..., None] * torch.stack([-d[..., 1], d[..., 2], -d[..., 0]], -1)
    gamma = torch.zeros(*e.shape, 3, 9, dtype=torch.float64)
    gamma[..., 0] = amb[..., None]
    gamma[..., 1:4] = first[..., None, :]
    return gamma.reshape(*e.shape, 27)


def light_direction(gamma: torch.Tensor) -> torch.Tensor:
    """Unit direction [..., 3] toward the light of SH ``gamma`` [..., 27], from its first-order (band-1) terms.

    The band-1 basis values are ``k1 * (-y, z, -x)`` of the normal (``sh_basis``), so the band-1 irradiance of a
    colour with coefficients ``g[1:4]`` is ``k1 * n . (-g3, -g1, g2)``: largest for the normal along
    ``d = (-g3, -g1, g2)`` (x right, y up, z toward the camera). The three colours are averaged first (a tint
    scales a colour's vector, which keeps its direction). Second-order terms are ignored. Raises ``ValueError``
    for a last dimension other than 27 and when the band-1 terms are all zero (no directional light).
    """
    if gamma.shape[-1] != 27:
        raise ValueError(f"light_direction: expected gamma [..., 27], found shape {tuple(gamma.shape)}")
    g = gamma.reshape(*gamma.shape[:-1], 3, 9).mean(-2)
    d = torch.stack([-g[..., 3], -g[..., 1], g[..., 2]], -1)
    norm = d.norm(dim=-1, keepdim=True)
    if bool((norm == 0).any()):
        raise ValueError("light_direction: gamma has no first-order SH terms (a purely ambient light has no "
                         "direction)")
    return d / norm


def light_angles_deg(gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(elevation, azimuth) in degrees [...] of ``light_direction(gamma)``.

    Elevation = asin(d_y) in [-90, 90] (positive: from above); azimuth = atan2(d_x, d_z) in (-180, 180]
    (0: from the camera, positive: from the face's left, the viewer's right). The inverse of the light prior's
    ``d = (cos e sin a, sin e, cos e cos a)`` (``cddfm3d.world.priors``).
    """
    d = light_direction(gamma)
    return torch.rad2deg(torch.asin(d[..., 1].clamp(-1, 1))), torch.rad2deg(torch.atan2(d[..., 0], d[..., 2]))
