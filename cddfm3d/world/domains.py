"""The three image domains of the mini world, rendered from the same coefficients.

* ``human``: the morphable model's lit albedo (SH lighting, Gouraud) over a smooth random background
  (a two-colour gradient with a soft blob), antialiased by supersampling.
* ``toon``: the same face drawn as a cartoon: eyes enlarged by a radial warp of the canonical shape, a
  stylised palette (flat skin tone from a small cartoon palette, saturated features), cel shading (the
  irradiance quantised to three bands), dark outlines at the silhouette, at depth creases (nose, open mouth)
  and around painted features (eyes, brows, lips), over a flat pastel background.
* ``sketch``: the same face (same geometry, no warp) drawn in pencil on off-white paper: monochrome graphite,
  tone (irradiance times the albedo's lightness) drawn as up to three layers of hatching attached to the face
  surface (strokes follow the mesh as it turns and deforms) that switch on one after the other as the tone gets
  darker, a faint graphite smudge under them, the toon's outlines (silhouette, creases, painted features) in
  graphite, and paper with a faint grain as the background.

All are returned in [-1, 1] (the generator's range). ``seed`` drives everything that is not in the
coefficients (backgrounds, palette choices), so a render is a pure function of (coeffs, domain, size, seed).
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ..face3d.camera import rotation_matrix
from ..face3d.lighting import INIT_AMBIENT, shade
from ..face3d.mesh import ColoredMesh
from ..face3d.morphable import MorphableModel
from ..face3d.render import render as render_face

DOMAINS = ("human", "toon", "sketch")
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
LUMA = (0.3, 0.59, 0.11)   # RGB weights of the lightness used for tones and feature edges

# Sketch style constants (colours RGB 0-1, lengths in dm of the canonical face).
PAPER = torch.tensor([0.95, 0.94, 0.90])   # off-white paper
PAPER_JITTER = 0.02        # per-image uniform shift of the paper's brightness (+-)
GRAIN = 0.025              # standard deviation of the paper grain
GRAPHITE = torch.tensor([0.24, 0.24, 0.26])  # colour of fully inked pencil strokes
HATCH_PERIOD = 0.10        # spacing of the hatching lines on the face
# Hatching layers: (direction in the canonical face frame (x right, y up), darkness at which the layer starts).
HATCH_LAYERS = (((0.7071, 0.7071, 0.0), 0.22), ((0.7071, -0.7071, 0.0), 0.45), ((0.1736, 0.9848, 0.0), 0.68))
HATCH_WIDTH = 0.55         # stroke width (fraction of the period) of a layer at full darkness
SMUDGE = 0.35              # soft graphite tone under the hatching (fraction of the graphite at darkness 1)
FEATURE_WEIGHTS = (0.0, 0.8, 0.2)   # RGB weights of the lightness whose edges are the outlined painted features
SKETCH_WHITE, SKETCH_BLACK = 1.05, 0.2   # tones (irradiance x albedo lightness) drawn as darkness 0 and 1


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
    """Images [n, 3, size, size] in [-1, 1] of ``coeffs`` [n, 257] in ``domain`` (one of ``DOMAINS``).

    Raises ``ValueError`` for an unknown domain, a size outside [MIN_SIZE, MAX_SIZE] or coeffs not [n, 257]."""
    _check(coeffs, domain, size)
    fm = model or mini_model()
    coeffs = coeffs.to(fm.mean_shape.device, fm.mean_shape.dtype)
    gen = torch.Generator().manual_seed(int(seed))
    if coeffs.shape[0] == 0:
        return coeffs.new_zeros(0, 3, size, size)
    with torch.no_grad():
        image = _RENDERERS[domain](fm, coeffs, size, gen)
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
    lum = lambda c: (c * torch.tensor(LUMA, device=c.device)).sum(-1)  # noqa: E731
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
    lum = (albedo_img * torch.tensor(LUMA, device=albedo_img.device).view(1, 3, 1, 1)).sum(1, True)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=lum.device) / 4
    gx = F.conv2d(F.pad(lum, (1, 1, 1, 1), mode="replicate"), kx.view(1, 1, 3, 3))
    gy = F.conv2d(F.pad(lum, (1, 1, 1, 1), mode="replicate"), kx.T.reshape(1, 1, 3, 3))
    feature = ((gx.hypot(gy) - 0.06) / 0.06).clamp(0, 1) * inside
    return torch.maximum(torch.maximum(sil, crease), feature)


# ------------------------------------------------------------------------------------ shared by toon, sketch
def _posed(fm: MorphableModel, p: dict, shape: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-space vertices and rotated unit normals [B, N, 3] of a canonical shape under the pose of ``p``."""
    rot = rotation_matrix(p["angle"])
    normals = fm.compute_normals(shape) @ rot.transpose(1, 2)
    vertices = shape @ rot.transpose(1, 2) + p["trans"][:, None, :]
    return vertices, normals


def _draw(fm: MorphableModel, vertices: torch.Tensor, layers, size: int, clamp: bool = True):
    """Rasterise one posed mesh ``SUPERSAMPLE`` times finer than ``size`` (one sample a pixel, so the mask is 0/1)
    with several per-vertex colourings ``layers`` ([B, N, 3] each). Returns (images list, mask, depth)."""
    hi = size * SUPERSAMPLE
    images = []
    for k, colours in enumerate(layers):
        mesh = ColoredMesh(vertices, colours, fm.faces, fm.camera)
        if k == 0:
            image, mask, depth = render_face(mesh, size=hi, supersample=1, return_depth=True, clamp=clamp)
        else:
            image, _ = render_face(mesh, size=hi, supersample=1, clamp=clamp)
        images.append(image)
    return images, mask, depth


def _ink(image: torch.Tensor, lines: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Draw ``lines`` (weight [B, 1, H, W] in [0, 1]) in ``colour`` [3] over a fine image, then average-pool the
    supersampling away: [B, 3, H / SUPERSAMPLE, W / SUPERSAMPLE] in [0, 1]."""
    image = image * (1 - lines) + colour.to(image).view(1, 3, 1, 1) * lines
    return F.avg_pool2d(image, SUPERSAMPLE).clamp(0, 1)


def _render_toon(fm: MorphableModel, coeffs: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    n = coeffs.shape[0]
    p = fm.split(coeffs)
    vertices, normals = _posed(fm, p, enlarge_eyes(fm, fm.compute_shape(p["id"], p["exp"])))
    flat = toon_albedo(fm, fm.compute_albedo(p["tex"]), gen)
    irradiance = shade(torch.ones_like(flat), normals, p["gamma"], INIT_AMBIENT)
    light_colour = irradiance.mean(1, keepdim=True)
    light_colour = light_colour / light_colour.mean(-1, keepdim=True).clamp(min=1e-3)
    lum = irradiance.mean(-1, keepdim=True)
    band = torch.full_like(lum, CEL_LEVELS[0])
    band = torch.where(lum >= CEL_THRESHOLDS[0], torch.full_like(lum, CEL_LEVELS[1]), band)
    band = torch.where(lum >= CEL_THRESHOLDS[1], torch.full_like(lum, CEL_LEVELS[2]), band)
    shaded = flat * band * (0.7 + 0.3 * light_colour)

    # Two colourings of one posed mesh.
    (flat_img, shaded_img), mask, depth = _draw(fm, vertices, (flat, shaded), size)
    lines = _outline_edges(flat_img, mask, depth)
    bg = TOON_BACKGROUNDS[torch.randint(len(TOON_BACKGROUNDS), (n,), generator=gen)].to(coeffs)
    image = shaded_img + bg.view(n, 3, 1, 1) * (1 - mask)
    return _ink(image, lines, OUTLINE_COLOR)


# ----------------------------------------------------------------------------------------------- sketch
def paper(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Paper [n, 3, size, size] in [0, 1]: ``PAPER`` shifted by a uniform +-``PAPER_JITTER`` per image, with a
    faint grain (white noise of std ``GRAIN``, stretched 2:1 along a random axis per image like fibres)."""
    shift = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * PAPER_JITTER
    noise = torch.randn(n, 1, size, size + 1, generator=gen)
    horizontal = torch.rand(n, 1, 1, 1, generator=gen) < 0.5
    fibre_x = (noise[..., 1:] + noise[..., :-1]) / math.sqrt(2)          # neighbours along x averaged
    fibre_y = fibre_x.transpose(-1, -2)
    grain = torch.where(horizontal, fibre_x, fibre_y) * GRAIN
    return (PAPER.view(1, 3, 1, 1) + shift + grain).clamp(0, 1)


def hatching(darkness: torch.Tensor, surface: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Pencil hatching: ink coverage [B, 1, H, W] in [0, 1] for a darkness map [B, 1, H, W] in [0, 1].

    ``surface`` [B, 3, H, W] is the canonical (mean-shape) position of the face point seen at each pixel, so the
    strokes are attached to the face; ``phase`` [B, L] shifts the lines of each layer (fractions of a period).
    Layer k of ``HATCH_LAYERS`` (direction d_k, threshold t_k) draws the lines where the triangle wave
    tri(<surface, d_k> / HATCH_PERIOD + phase_k) (0 on a line, 1 midway between lines) is below the stroke width
    w_k = HATCH_WIDTH * clamp((darkness - t_k) / (1 - t_k), 0, 1), with a soft edge of 0.1 period; each line is
    drawn with its own pressure in [0.7, 1] (a hash of its index and layer, like a hand that never presses twice
    the same). Coverage is therefore 0 below t_1 and grows monotonically with the darkness: each layer widens its
    strokes, and the next layer starts at its own threshold.
    """
    ink = torch.zeros_like(darkness)
    for k, (direction, threshold) in enumerate(HATCH_LAYERS):
        d = torch.tensor(direction, dtype=surface.dtype, device=surface.device).view(1, 3, 1, 1)
        s = (surface * d).sum(1, keepdim=True) / HATCH_PERIOD + phase[:, k].view(-1, 1, 1, 1)
        tri = (s - s.floor() - 0.5).abs() * 2
        width = HATCH_WIDTH * ((darkness - threshold) / (1 - threshold)).clamp(0, 1)
        line = (s + 0.5).floor()                                         # index of the nearest line
        pressure = 0.7 + 0.3 * torch.frac((line * 12.9898 + k * 78.233).sin().abs() * 43758.5453)
        stroke = ((width - tri) / 0.1 + 0.5).clamp(0, 1) * (width > 0) * pressure
        ink = torch.maximum(ink, stroke)
    return ink


def sketch_tone(fm: MorphableModel, albedo: torch.Tensor, irradiance: torch.Tensor) -> torch.Tensor:
    """Tone [B, N] of each vertex: the square of the irradiance's luminance (a contrast boost: the light is
    what the hatching draws), times the feature lightness (:func:`sketch_features`) relative to the average
    skin's (painted features: brows, eyes, lips darker), times a compressed skin lightness ((skin / 0.6)^0.25 of
    the plain lightness, so dark skin is drawn somewhat darker but never solid). Monochrome: hue is dropped."""
    on_skin = fm.skin_mask.to(albedo.device)
    luma = torch.tensor(LUMA, dtype=albedo.dtype, device=albedo.device)
    skin = (albedo @ luma)[:, on_skin].mean(1, keepdim=True).clamp(min=1e-3)            # [B, 1]
    feature = sketch_features(albedo)                                                    # [B, N]
    relative = feature / feature[:, on_skin].mean(1, keepdim=True).clamp(min=1e-3)
    return irradiance.mean(-1).square() * relative * (skin / 0.6) ** 0.25


def sketch_features(albedo: torch.Tensor) -> torch.Tensor:
    """Painted-feature map [B, N] whose edges the pencil outlines: the albedo's lightness as seen through a green
    filter (weights ``FEATURE_WEIGHTS``), so that red lips stand out against the skin by more than their plain
    lightness would (as they do on orthochromatic film); skin's blotches of colour do not."""
    return albedo @ torch.tensor(FEATURE_WEIGHTS, dtype=albedo.dtype, device=albedo.device)


def _render_sketch(fm: MorphableModel, coeffs: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    n = coeffs.shape[0]
    hi = size * SUPERSAMPLE
    # Random draws (paper, line phases, pencil pressure) in a fixed order, independent of the coefficients.
    background = paper(n, hi, gen).to(coeffs)
    phase = torch.rand(n, len(HATCH_LAYERS), generator=gen).to(coeffs)
    pressure = (0.85 + 0.15 * torch.rand(n, 1, 1, 1, generator=gen)).to(coeffs)

    p = fm.split(coeffs)
    vertices, normals = _posed(fm, p, fm.compute_shape(p["id"], p["exp"]))
    albedo = fm.compute_albedo(p["tex"])
    irradiance = shade(torch.ones_like(albedo), normals, p["gamma"], INIT_AMBIENT)
    tone = sketch_tone(fm, albedo, irradiance)
    grey = torch.stack((tone, sketch_features(albedo), torch.zeros_like(tone)), -1)
    surface = fm.mean_shape.to(coeffs).expand(n, -1, -1)
    (grey_img, surface_img), mask, depth = _draw(fm, vertices, (grey, surface), size, clamp=False)

    darkness = ((SKETCH_WHITE - grey_img[:, :1]) / (SKETCH_WHITE - SKETCH_BLACK)).clamp(0, 1) * mask
    ink = torch.maximum(hatching(darkness, surface_img, phase), SMUDGE * darkness) * mask
    lines = _outline_edges(grey_img[:, 1:2].expand(-1, 3, -1, -1), mask, depth)
    image = background * (1 - pressure * ink) + GRAPHITE.to(coeffs).view(1, 3, 1, 1) * pressure * ink
    return _ink(image, lines * pressure, GRAPHITE)


_RENDERERS = {"human": _render_human, "toon": _render_toon, "sketch": _render_sketch}
