"""The two image domains of the mini world, rendered from the same coefficients.

* ``human``: the morphable model's lit albedo (SH lighting, Gouraud) over a smooth random background
  (a two-colour gradient with a soft blob), antialiased by supersampling.
* ``toon``: the same face drawn as a cartoon: eyes enlarged by a radial warp of the canonical shape, a
  stylised palette (flat skin tone from a small cartoon palette, saturated features), cel shading (the
  irradiance quantised to three bands), dark outlines at the silhouette, at depth creases (nose, open mouth)
  and around painted features (eyes, brows, lips), over a flat pastel background.

Both are returned in [-1, 1] (the generator's range). ``seed`` drives everything that is not in the
coefficients (backgrounds, palette choices), so a render is a pure function of (coeffs, domain, size, seed).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..face3d.camera import rotation_matrix
from ..face3d.lighting import INIT_AMBIENT, shade
from ..face3d.mesh import ColoredMesh
from ..face3d.morphable import MorphableModel
from ..face3d.render import render as render_face

DOMAINS = ("human", "toon")
MIN_SIZE, MAX_SIZE = 32, 256
SUPERSAMPLE = 2

# Toon style constants.
EYE_ENLARGE = 2.0          # magnification at the eye centres (1 = none)
EYE_RADIUS = 0.2           # dm: radius of the eye warp
CEL_LEVELS = (0.62, 0.88, 1.08)   # shade of each band, relative to the flat colour
CEL_THRESHOLDS = (0.55, 0.80)     # irradiance luminance at the band boundaries
TOON_SKIN = torch.tensor([   # cartoon skin palette (RGB 0-1)
    [1.00, 0.84, 0.72], [0.98, 0.76, 0.60], [0.90, 0.66, 0.48],
    [0.74, 0.52, 0.36], [0.56, 0.38, 0.26], [1.00, 0.88, 0.80],
])
TOON_BACKGROUNDS = torch.tensor([
    [0.62, 0.80, 0.95], [0.98, 0.86, 0.55], [0.70, 0.90, 0.70], [0.95, 0.70, 0.75],
    [0.80, 0.72, 0.95], [0.60, 0.88, 0.88], [0.98, 0.95, 0.80], [0.85, 0.85, 0.85],
])
OUTLINE_COLOR = torch.tensor([0.10, 0.06, 0.08])


def mini_model(device=None) -> MorphableModel:
    """The MiniFace model both domains (and the shipped networks) use, on ``device`` (default CPU).

    One shared instance per device and process: use it read-only and never ``.to()`` it (that would move the
    instance every other caller gets); ask for another device instead.
    """
    return _mini_model(str(torch.device(device or "cpu")))


@functools.lru_cache(maxsize=4)
def _mini_model(device: str) -> MorphableModel:
    return MorphableModel.mini().to(device)


def _check(coeffs, domain: str, size: int):
    if domain not in DOMAINS:
        raise ValueError(f"render: domain must be one of {DOMAINS}, found {domain!r}")
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"render: size must be an int in [{MIN_SIZE}, {MAX_SIZE}], found {size!r}")
    if not isinstance(coeffs, torch.Tensor) or coeffs.ndim != 2 or coeffs.shape[1] != 257:
        found = tuple(coeffs.shape) if isinstance(coeffs, torch.Tensor) else type(coeffs).__name__
        raise ValueError(f"render: coeffs must be a tensor [n, 257], found {found}")


def render(coeffs: torch.Tensor, domain: str = "human", size: int = 64, seed: int = 0,
           model: MorphableModel | None = None) -> torch.Tensor:
    """Images [n, 3, size, size] in [-1, 1] of ``coeffs`` [n, 257] in ``domain`` ("human" or "toon")."""
    _check(coeffs, domain, size)
    fm = model or mini_model()
    coeffs = coeffs.to(fm.mean_shape.device, fm.mean_shape.dtype)
    gen = torch.Generator().manual_seed(int(seed))
    if coeffs.shape[0] == 0:
        return coeffs.new_zeros(0, 3, size, size)
    with torch.no_grad():
        if domain == "human":
            image = _render_human(fm, coeffs, size, gen)
        else:
            image = _render_toon(fm, coeffs, size, gen)
    return image * 2.0 - 1.0


# ------------------------------------------------------------------------------------------------ human
def smooth_background(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """[n, 3, size, size] in [0, 1]: a linear two-colour gradient in a random direction plus a soft blob."""
    c0 = torch.rand(n, 3, 1, 1, generator=gen) * 0.8 + 0.1
    c1 = (c0 + (torch.rand(n, 3, 1, 1, generator=gen) - 0.5) * 0.6).clamp(0.02, 0.98)
    theta = torch.rand(n, 1, 1, generator=gen) * 6.2832
    ax = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    t = (xx * theta.cos() + yy * theta.sin()) * 0.5 + 0.5                 # [n, size, size]
    img = c0 + (c1 - c0) * t[:, None]
    centre = torch.rand(n, 2, 1, 1, generator=gen) * 2 - 1
    radius = torch.rand(n, 1, 1, generator=gen) * 0.5 + 0.3
    blob = torch.exp(-((xx - centre[:, 0]) ** 2 + (yy - centre[:, 1]) ** 2) / (2 * radius ** 2))
    blob_col = torch.rand(n, 3, 1, 1, generator=gen)
    strength = torch.rand(n, 1, 1, 1, generator=gen) * 0.5
    return (img + (blob_col - img) * strength * blob[:, None]).clamp(0, 1)


def _render_human(fm: MorphableModel, coeffs: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    out = fm(coeffs, image_size=size)
    bg = smooth_background(coeffs.shape[0], size, gen).to(coeffs)
    image, _ = render_face(out, size=size, supersample=SUPERSAMPLE, background=bg)
    return image


# ------------------------------------------------------------------------------------------------- toon
def enlarge_eyes(fm: MorphableModel, shape: torch.Tensor, factor: float = EYE_ENLARGE,
                 radius: float = EYE_RADIUS) -> torch.Tensor:
    """Canonical shape [B, N, 3] with both eye regions magnified in the image plane (x, y).

    A radial warp about each eye centre (mean of its six landmarks): p' = c + (p - c) g(r), with
    g = 1 + (factor - 1)(1 - r / radius)^2 inside the radius, 1 outside; monotone in r for factor < 4
    (d(r g)/dr = 1 + (factor - 1)(1 - u)(1 - 3u) with u = r / radius).
    """
    kp = fm.keypoints
    out = shape.clone()
    for ids in (kp[36:42], kp[42:48]):
        c = shape[:, ids, :2].mean(1, keepdim=True)                       # [B, 1, 2]
        d = out[..., :2] - c
        r = d.norm(dim=-1, keepdim=True)
        u = (1 - r / radius).clamp(min=0)
        out[..., :2] = c + d * (1 + (factor - 1) * u * u)
    return out


def toon_albedo(fm: MorphableModel, albedo: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Stylised albedo [B, N, 3]: flat skin from the cartoon palette, saturated painted features."""
    skin = fm.skin_mask.to(albedo.device)
    skin_mean = albedo[:, skin].mean(1, keepdim=True)                      # [B, 1, 3]
    # Nearest palette tone by lightness, jittered by one step now and then for variety.
    lum = lambda c: (c * torch.tensor([0.3, 0.59, 0.11], device=c.device)).sum(-1)  # noqa: E731
    order = torch.argsort(lum(TOON_SKIN))
    palette = TOON_SKIN[order].to(albedo)
    rank = (lum(skin_mean[:, 0])[:, None] - lum(palette)[None]).abs().argmin(1)
    jitter = torch.randint(-1, 2, rank.shape, generator=gen).to(rank.device)
    rank = (rank + jitter).clamp(0, len(palette) - 1)
    tone = palette[rank][:, None, :]                                       # [B, 1, 3]
    # Features keep their colour relative to the skin, with saturation boosted around their grey value.
    rel = albedo / skin_mean.clamp(min=1e-3) * tone
    grey = rel.mean(-1, keepdim=True)
    feat = (grey + 1.5 * (rel - grey)).clamp(0, 1)
    # Skin weight: the painted-feature mask is sharp; blend smoothly through the albedo's distance from skin.
    dist = (albedo - skin_mean).abs().amax(-1, keepdim=True)
    w_skin = torch.where(skin[None, :, None], torch.ones_like(dist), (1 - dist / 0.12).clamp(0, 1))
    return tone * w_skin + feat * (1 - w_skin)


def _outline_edges(albedo_img: torch.Tensor, mask: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """Line weight [B, 1, H, W] in [0, 1]: silhouette, depth creases and feature boundaries."""
    inside = (mask > 0.5).float()
    sil = F.max_pool2d(inside, 3, 1, 1) - (-F.max_pool2d(-inside, 3, 1, 1))  # dilate - erode: 2 px band
    d = depth + (1 - inside) * 1e3
    crease = (F.max_pool2d(d, 3, 1, 1) - (-F.max_pool2d(-d, 3, 1, 1)) > 0.08).float() * inside
    lum = (albedo_img * torch.tensor([0.3, 0.59, 0.11], device=albedo_img.device).view(1, 3, 1, 1)).sum(1, True)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=lum.device) / 4
    gx = F.conv2d(F.pad(lum, (1, 1, 1, 1), mode="replicate"), kx.view(1, 1, 3, 3))
    gy = F.conv2d(F.pad(lum, (1, 1, 1, 1), mode="replicate"), kx.T.reshape(1, 1, 3, 3))
    feature = ((gx.hypot(gy) - 0.06) / 0.06).clamp(0, 1) * inside
    return torch.maximum(torch.maximum(sil, crease), feature)


def _render_toon(fm: MorphableModel, coeffs: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    n = coeffs.shape[0]
    p = fm.split(coeffs)
    shape = enlarge_eyes(fm, fm.compute_shape(p["id"], p["exp"]))
    rot = rotation_matrix(p["angle"])
    normals = fm.compute_normals(shape) @ rot.transpose(1, 2)
    vertices = shape @ rot.transpose(1, 2) + p["trans"][:, None, :]
    flat = toon_albedo(fm, fm.compute_albedo(p["tex"]), gen)
    irradiance = shade(torch.ones_like(flat), normals, p["gamma"], INIT_AMBIENT)
    light_colour = irradiance.mean(1, keepdim=True)
    light_colour = light_colour / light_colour.mean(-1, keepdim=True).clamp(min=1e-3)
    lum = irradiance.mean(-1, keepdim=True)
    band = torch.full_like(lum, CEL_LEVELS[0])
    band = torch.where(lum >= CEL_THRESHOLDS[0], torch.full_like(lum, CEL_LEVELS[1]), band)
    band = torch.where(lum >= CEL_THRESHOLDS[1], torch.full_like(lum, CEL_LEVELS[2]), band)
    shaded = flat * band * (0.7 + 0.3 * light_colour)

    hi = size * SUPERSAMPLE
    cam = fm.camera
    # Two colourings of one posed mesh.
    flat_img, mask, depth = render_face(ColoredMesh(vertices, flat, fm.faces, cam), size=hi, supersample=1,
                                        return_depth=True)
    shaded_img, _ = render_face(ColoredMesh(vertices, shaded, fm.faces, cam), size=hi, supersample=1)
    lines = _outline_edges(flat_img, mask, depth)
    bg = TOON_BACKGROUNDS[torch.randint(len(TOON_BACKGROUNDS), (n,), generator=gen)].to(coeffs)
    image = shaded_img + bg.view(n, 3, 1, 1) * (1 - mask)
    image = image * (1 - lines) + OUTLINE_COLOR.to(coeffs).view(1, 3, 1, 1) * lines
    return F.avg_pool2d(image, SUPERSAMPLE).clamp(0, 1)
