"""How each style layer and each style channel moves each 3DMM attribute, read by the reconstruction network on
generated images (DESIGN.md step 4; issue 9 section 2).

Layer response (:func:`layer_response`)
=======================================
For style layer l and attribute a, over n random faces (plain W: w = mapping(z), z ~ N(0, I), no truncation):

1. styles s = w_to_styles(w); the image G(s) with per-sample noise drawn once from ``seed`` and reused for every
   render of that face (noise is *fixed*, so only the style change shows);
2. s' = s with layer l moved by delta_l (all other layers unchanged); G(s') with the same noise;
3. P = estimate(G(s)), P' = estimate(G(s')) -- the reconstruction network on the generated images;
4. R[l, a] = mean over faces of ``attribute_distance(model, P, P', a)`` / D_a, where D_a is the attribute's mean
   distance between two random faces (the n faces paired with the next one, read by the same network), so the
   five attributes share one unit: 1 = "as different as two random faces".

The perturbation delta_l (``direction``):

* ``"random"`` (default): delta = amount * sigma ⊙ u / rms(u), u ~ N(0, I_C): each channel moves, in RMS over
  the layer, by exactly ``amount`` of its own std (:class:`~cddfm3d.stylegan2.stylespace.StyleStats`). The step
  has the same size per channel in every layer, so a layer's response measures how strongly its channels act on
  the attribute (the RMS column norm of the std-scaled Jacobian, to first order), not how many channels it has;
  a layer whose C channels are duplicated into 2C copies that share the work responds 1/sqrt(2) as strongly,
  never twice.
* ``"mix"``: delta = amount * (s_l(w2) - s_l(w)) toward the layer's styles of another random face w2: a step
  along the data's own variation (amount 1 swaps the layer, as style mixing does). Its size per channel is
  sqrt(2) * amount stds in RMS in every layer as well, and a duplicated layer responds exactly as the original.

Channel response ("localized channels", :func:`localized_channels`)
===================================================================
A cheap first-order screen (:func:`channel_screen`: the norm of the gradient of each attribute's features with
respect to every style channel, times the channel's std, estimated with random probes) picks candidates; single-
channel edits of +-``amount`` stds (:func:`channel_response`) confirm them with the network's actual reading.
A channel is *localized* to attribute a when a's share of its (normalised) response over the five attributes is
at least ``min_specificity`` -- the StyleSpace paper's idea of channels that control one thing, with the five
attributes in place of face regions. :func:`channel_edit_grid` renders single-channel edits for a notebook.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from ..progress import progress_bar

from ..face3d.measures import ATTRIBUTES, attribute_distance, attribute_features
from ..stylegan2.stylespace import StyleStats, channel_address, style_stats

DIRECTIONS = ("random", "mix")
Estimator = Callable[[torch.Tensor], torch.Tensor]


# ============================================================================================ helpers
def default_estimator(recon, model, align: str = "auto") -> Estimator:
    """images [B, 3, H, W] in [-1, 1] (generator output) -> coefficients [B, 257] read by ``recon``.

    A :class:`~cddfm3d.face3d.ReconNet` reads as the pairs' labelling :func:`cddfm3d.editing.labels.label_images`
    does: ``align`` "none" converts the whole image to the network's input range
    (:func:`cddfm3d.images.to_range`) and reads it -- differentiably, which the channel screen needs;
    "self" aligns larger generated faces first (``label_images``, no gradients); "auto" picks "none" when the
    images have the network's size, else "self". Any other callable is given the [-1, 1] images as they are."""
    if not hasattr(recon, "input_range"):
        return recon
    from ..editing.labels import label_images
    from ..images import to_range

    def estimate(images: torch.Tensor) -> torch.Tensor:
        mode = align if align != "auto" else ("none" if images.shape[-1] == recon.image_size else "self")
        if mode == "none":
            return recon(to_range(images, recon.input_range), check=False).float()
        return label_images(recon, images, model, align=mode)[0]

    return estimate


def sample_styles(G, n: int, gen: torch.Generator, mixing: str = "w") -> list[torch.Tensor]:
    """Styles of ``n`` random faces drawn from ``gen`` (CPU) by :func:`cddfm3d.editing.latents.sample_latents`:
    ``mixing`` "w" (plain W, the default here: one face per sample) or "official5" (the pairs' 5-way mixing);
    no truncation."""
    from ..editing.latents import sample_latents

    with torch.no_grad():
        return [s.detach() for s in G.w_to_styles(sample_latents(G, n, gen, mixing=mixing))]


def _sample_noise(G, n: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Per-sample noise maps [n, 1, r, r] for every conv layer, in noise order, from ``gen`` (CPU)."""
    convs = sorted((m for m in G.style_layers if m.noise_index is not None), key=lambda m: m.noise_index)
    return [torch.randn(n, 1, m.resolution, m.resolution, generator=gen).to(G.w_avg.device) for m in convs]


def _check_common(G, n: int, batch_size: int, who: str) -> None:
    for name, v, lo in (("n", n, 2), ("batch_size", batch_size, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{who}: {name} must be an int >= {lo}, found {v!r}")
    if not getattr(G, "style_layers", None):
        raise ValueError(f"{who}: G has no style layers (expected a cddfm3d.stylegan2.Generator)")


def _stats(G, stats: StyleStats | None, seed: int) -> StyleStats:
    if stats is None:
        return style_stats(G, n=4096, seed=seed + 1)
    if len(stats.std) != len(G.style_layers):
        raise ValueError(f"stats has {len(stats.std)} layers, the generator {len(G.style_layers)}")
    return stats


def pair_scale(model, coeffs: torch.Tensor, attributes: Sequence[str] = ATTRIBUTES) -> dict[str, float]:
    """Each attribute's mean distance between two random faces: ``attribute_distance`` of coefficients [n, 257]
    (n >= 2) paired with the next row (cyclically). Units: dm (shape, expression), RGB 0-1 (albedo, light),
    degrees (pose). Raises ``ValueError`` for fewer than two faces."""
    if coeffs.ndim != 2 or coeffs.shape[0] < 2:
        raise ValueError(f"pair_scale: need coefficients [n >= 2, 257], found {tuple(coeffs.shape)}")
    other = coeffs.roll(1, 0)
    return {a: float(attribute_distance(model, coeffs, other, a).double().mean()) for a in attributes}


# ============================================================================================ layer response
@dataclass
class LayerResponse:
    """Result of :func:`layer_response`.

    ``matrix`` [L, A] float64: mean attribute change per layer perturbation, in units of ``scale`` (the mean
    distance between two random faces); ``stderr`` [L, A]: its standard error over the faces; ``scale``:
    {attribute: mean distance between two random faces in the attribute's units}; ``layer_names``;
    ``attributes``; ``settings`` (n, seed, amount, direction, noise)."""

    matrix: torch.Tensor
    stderr: torch.Tensor
    scale: dict[str, float]
    layer_names: list[str]
    attributes: tuple[str, ...] = ATTRIBUTES
    settings: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: lists of floats."""
        return {"matrix": self.matrix.tolist(), "stderr": self.stderr.tolist(), "scale": dict(self.scale),
                "layers": list(self.layer_names), "attributes": list(self.attributes), "settings": dict(self.settings)}


def layer_response(G, recon, model, n: int = 64, seed: int = 0, amount: float = 1.0, direction: str = "random",
                   stats: StyleStats | None = None, batch_size: int = 32, layers: Sequence[int] | None = None,
                   estimate: Estimator | None = None, progress: bool = False) -> LayerResponse:
    """The layer x attribute response matrix (module docstring, "Layer response").

    Args:
        G: a StyleGAN2 :class:`~cddfm3d.stylegan2.Generator` (or an object with its ``z_dim``, ``w_avg``,
            ``mapping``, ``w_to_styles``, ``synthesis_from_styles`` and ``style_layers``).
        recon: the reconstruction network (images -> [B, 257]); used through ``estimate`` when that is given.
        model: the :class:`~cddfm3d.face3d.morphable.MorphableModel` whose measures read the coefficients.
        n: faces (>= 2); seed: of faces, noise and perturbation directions.
        amount: step size (> 0): stds per channel in RMS ("random"), fraction of the way to another face ("mix").
        direction: "random" or "mix" (module docstring).
        stats: per-channel std for "random" (default: ``style_stats(G, 4096, seed + 1)``).
        batch_size: faces per forward pass.
        layers: which style layers to perturb (default all); rows of the others are NaN.
        estimate: images [B, 3, H, W] in [-1, 1] -> coefficients [B, 257]; default :func:`default_estimator`.
        progress: show a tqdm bar over batches.

    Returns:
        :class:`LayerResponse` with ``matrix`` [len(G.style_layers), 5].

    Raises:
        ValueError: bad ``n``, ``batch_size``, ``amount``, ``direction``, ``layers`` or ``stats``.
    """
    who = "layer_response"
    _check_common(G, n, batch_size, who)
    if direction not in DIRECTIONS:
        raise ValueError(f"{who}: direction must be one of {DIRECTIONS}, found {direction!r}")
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not amount > 0:
        raise ValueError(f"{who}: amount must be a number > 0, found {amount!r}")
    L = len(G.style_layers)
    todo = list(range(L)) if layers is None else sorted({int(k) for k in layers})
    if not todo or any(not 0 <= k < L for k in todo):
        raise ValueError(f"{who}: layers must be indices in [0, {L}), found {layers!r}")
    st = _stats(G, stats, seed) if direction == "random" else None
    std = [s.to(G.w_avg.device) for s in st.std] if st is not None else None
    estimate = estimate or default_estimator(recon, model)
    gen = torch.Generator().manual_seed(seed)
    A = len(ATTRIBUTES)
    s1 = torch.zeros(L, A, dtype=torch.float64)
    s2 = torch.zeros(L, A, dtype=torch.float64)
    base_all = []
    for i in progress_bar(range(0, n, batch_size), desc=who, unit="batch", enabled=progress):
        b = min(batch_size, n - i)
        styles = sample_styles(G, b, gen)
        noise = _sample_noise(G, b, gen)
        other = sample_styles(G, b, gen) if direction == "mix" else None
        with torch.no_grad():
            p0 = estimate(G.synthesis_from_styles(styles, noise=noise)).double()
            base_all.append(p0.cpu())
            for k in todo:
                if direction == "random":
                    u = torch.randn(b, styles[k].shape[1], generator=gen, dtype=torch.float64)
                    u = u / u.square().mean(1, keepdim=True).sqrt()
                    delta = amount * std[k].double() * u.to(std[k].device)
                else:
                    delta = amount * (other[k] - styles[k]).double()
                moved = list(styles)
                moved[k] = (styles[k].double() + delta).to(styles[k].dtype)
                p1 = estimate(G.synthesis_from_styles(moved, noise=noise)).double()
                for a, name in enumerate(ATTRIBUTES):
                    d = attribute_distance(model, p0.to(model.mean_shape.dtype), p1.to(model.mean_shape.dtype),
                                           name).double().cpu()
                    s1[k, a] += d.sum()
                    s2[k, a] += d.square().sum()
    scale = pair_scale(model, torch.cat(base_all).to(model.mean_shape.device, model.mean_shape.dtype))
    unit = torch.tensor([scale[a] for a in ATTRIBUTES], dtype=torch.float64).clamp_min(1e-300)
    mean = s1 / n
    var = (s2 / n - mean.square()).clamp_min(0) * n / (n - 1)
    matrix = mean / unit
    stderr = (var / n).sqrt() / unit
    skipped = [k for k in range(L) if k not in todo]
    matrix[skipped] = float("nan")
    stderr[skipped] = float("nan")
    settings = {"n": n, "seed": seed, "amount": float(amount), "direction": direction, "noise": "fixed per face",
                "latents": "plain W (sample_latents mixing='w'), no truncation"}
    if st is not None:
        settings["stats"] = {"n": st.n, "seed": st.seed, "truncation_psi": st.truncation_psi}
    return LayerResponse(matrix, stderr, scale, [m.name for m in G.style_layers], ATTRIBUTES, settings)


# ============================================================================================ channel response
def channel_screen(G, recon, model, n: int = 16, seed: int = 0, probes: int = 4, stats: StyleStats | None = None,
                   batch_size: int = 8, scale: dict[str, float] | None = None, estimate: Estimator | None = None
                   ) -> torch.Tensor:
    """First-order response of every attribute to every style channel: [5, G.style_dim] float64 (flat channel
    order of ``G.flatten_styles``).

    Entry [a, c] = sigma_c * RMS over faces of ||d f_a / d s_c|| / sqrt(points_a) / D_a: the attribute distance
    (``attribute_distance``'s RMS over points) that one std of channel c moves, to first order, in units of the
    mean distance between two random faces ``scale`` (default: measured on the same n faces). The column norms of
    the Jacobian come from ``probes`` random projections per attribute and batch (E[(v . J_c)^2] = ||J_c||^2 for
    v ~ N(0, I)), so the cost is 5 * probes backward passes per batch, independent of the number of channels.
    ``estimate`` must be differentiable (the default is)."""
    who = "channel_screen"
    _check_common(G, n, batch_size, who)
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"{who}: probes must be an int >= 1, found {probes!r}")
    std = torch.cat([s.cpu() for s in _stats(G, stats, seed).std]).double()   # acc and the result live on the CPU
    estimate = estimate or default_estimator(recon, model)
    gen = torch.Generator().manual_seed(seed)
    acc = torch.zeros(len(ATTRIBUTES), int(std.numel()), dtype=torch.float64)
    base_all = []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        styles = [s.requires_grad_(True) for s in sample_styles(G, b, gen)]
        noise = _sample_noise(G, b, gen)
        with torch.enable_grad():
            p = estimate(G.synthesis_from_styles(styles, noise=noise))
            base_all.append(p.detach().double().cpu())
            feats = [attribute_features(model, p.to(model.mean_shape.dtype), a) for a in ATTRIBUTES]
            for a, f in enumerate(feats):
                points = f.shape[1] // (1 if ATTRIBUTES[a] == "pose" else 3)
                for q in range(probes):
                    v = torch.randn(f.shape, generator=gen, dtype=f.dtype).to(f.device)
                    last = a == len(feats) - 1 and q == probes - 1
                    grads = torch.autograd.grad((f * v).sum(), styles, retain_graph=not last)
                    acc[a] += torch.cat(grads, 1).double().square().sum(0).cpu() / points
    if scale is None:
        scale = pair_scale(model, torch.cat(base_all).to(model.mean_shape.device, model.mean_shape.dtype))
    unit = torch.tensor([scale[a] for a in ATTRIBUTES], dtype=torch.float64).clamp_min(1e-300)
    return (acc / (n * probes)).sqrt() * std[None] / unit[:, None]


def channel_response(G, recon, model, channels: Sequence[tuple[int, int]], n: int = 16, seed: int = 0,
                     amount: float = 3.0, stats: StyleStats | None = None, batch_size: int = 16,
                     scale: dict[str, float] | None = None, estimate: Estimator | None = None) -> torch.Tensor:
    """Measured response of the five attributes to single-channel edits: [len(channels), 5] float64.

    For each (layer, channel): s[layer][:, channel] += +-``amount`` * sigma (both signs, fixed noise), and the
    entry is the mean over faces and signs of ``attribute_distance`` between the network's readings of the edited
    and the unedited image, in units of ``scale`` (default: measured on the same n faces)."""
    who = "channel_response"
    _check_common(G, n, batch_size, who)
    L = len(G.style_layers)
    for layer, ch in channels:
        if not 0 <= layer < L or not 0 <= ch < G.style_layers[layer].channels:
            raise ValueError(f"{who}: channel ({layer}, {ch}) out of range ({L} layers)")
    std = _stats(G, stats, seed).std
    estimate = estimate or default_estimator(recon, model)
    gen = torch.Generator().manual_seed(seed)
    out = torch.zeros(len(channels), len(ATTRIBUTES), dtype=torch.float64)
    base_all = []
    dt = model.mean_shape.dtype
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        styles = sample_styles(G, b, gen)
        noise = _sample_noise(G, b, gen)
        with torch.no_grad():
            p0 = estimate(G.synthesis_from_styles(styles, noise=noise)).to(dt)
            base_all.append(p0.cpu())
            for j, (layer, ch) in enumerate(channels):
                for sign in (1.0, -1.0):
                    moved = list(styles)
                    moved[layer] = styles[layer].clone()
                    moved[layer][:, ch] += sign * amount * float(std[layer][ch])
                    p1 = estimate(G.synthesis_from_styles(moved, noise=noise)).to(dt)
                    for a, name in enumerate(ATTRIBUTES):
                        out[j, a] += float(attribute_distance(model, p0, p1, name).double().sum())
    if scale is None:
        scale = pair_scale(model, torch.cat(base_all).to(model.mean_shape.device, dt))
    unit = torch.tensor([scale[a] for a in ATTRIBUTES], dtype=torch.float64).clamp_min(1e-300)
    return out / (2 * n) / unit


def localized_channels(G, recon, model, k: int = 5, candidates: int = 4, n_screen: int = 16, n_confirm: int = 16,
                       seed: int = 0, amount: float = 3.0, probes: int = 4, min_specificity: float = 0.5,
                       include_torgb: bool = False, stats: StyleStats | None = None,
                       scale: dict[str, float] | None = None, estimate: Estimator | None = None
                       ) -> dict[str, list[dict[str, Any]]]:
    """The top-``k`` channels of each attribute, screened then confirmed (module docstring).

    The screen (:func:`channel_screen`, ``n_screen`` faces) proposes ``k * candidates`` channels per attribute
    (tRGB layers left out unless ``include_torgb``, as in the StyleSpace paper); every proposed channel is then
    edited (:func:`channel_response`, ``n_confirm`` faces, +-``amount`` stds) and each attribute keeps its ``k``
    largest confirmed responses.

    Returns:
        {attribute: [ {"layer", "channel", "name" (e.g. "b8.conv1:17"), "id" (paper style "2_17"), "screen",
        "response" (the attribute's confirmed response), "responses" ({attribute: confirmed response}),
        "specificity" (the attribute's share of the five responses), "localized" (specificity >=
        ``min_specificity``)}, ... ]}, best first. Responses are in units of the mean distance between two random
        faces per ``amount`` stds.
    """
    if not 0 <= min_specificity <= 1:
        raise ValueError(f"localized_channels: min_specificity must be in [0, 1], found {min_specificity!r}")
    stats = _stats(G, stats, seed)
    screen = channel_screen(G, recon, model, n=n_screen, seed=seed, probes=probes, stats=stats, scale=scale,
                            estimate=estimate)
    layers = G.style_layers
    allowed = torch.cat([torch.full((m.channels,), include_torgb or not m.is_torgb) for m in layers])
    masked = screen.masked_fill(~allowed[None], -1.0)
    proposals: dict[str, list[int]] = {}
    for a, name in enumerate(ATTRIBUTES):
        order = sorted(range(masked.shape[1]), key=lambda c: (-float(masked[a, c]), c))
        proposals[name] = [c for c in order[:k * candidates] if float(masked[a, c]) >= 0]
    flat = sorted({c for v in proposals.values() for c in v})
    addr = [channel_address(layers, c) for c in flat]
    measured = channel_response(G, recon, model, addr, n=n_confirm, seed=seed + 7, amount=amount, stats=stats,
                                scale=scale, estimate=estimate)
    row = {c: j for j, c in enumerate(flat)}
    out = {}
    for a, name in enumerate(ATTRIBUTES):
        ranked = sorted(proposals[name], key=lambda c: (-float(measured[row[c], a]), c))[:k]
        items = []
        for c in ranked:
            layer, ch = addr[row[c]]
            r = measured[row[c]]
            spec = float(r[a] / r.sum()) if float(r.sum()) > 0 else 0.0
            items.append({"layer": layer, "channel": ch, "name": f"{layers[layer].name}:{ch}", "id": f"{layer}_{ch}",
                          "screen": float(screen[a, c]), "response": float(r[a]),
                          "responses": {b: float(r[j]) for j, b in enumerate(ATTRIBUTES)},
                          "specificity": spec, "localized": spec >= min_specificity})
        out[name] = items
    return out


def channel_edit_grid(G, channels: Sequence[tuple[int, int]], amounts: Sequence[float] = (-10, -5, 0, 5, 10),
                      n_faces: int = 1, seed: int = 0, stats: StyleStats | None = None) -> torch.Tensor:
    """Images of single-channel edits: [len(channels), n_faces, len(amounts), 3, H, W] in about [-1, 1].

    Face f of row j is random face f (``seed``; fixed noise) with s[layer][:, channel] += amount * sigma for each
    ``amounts`` entry (stds of the channel). To show one channel's rows: ``cddfm3d.viz.show(images[j].flatten(0,
    1), nrow=len(amounts))``."""
    if isinstance(n_faces, bool) or not isinstance(n_faces, int) or n_faces < 1:
        raise ValueError(f"channel_edit_grid: n_faces must be an int >= 1, found {n_faces!r}")
    L = len(G.style_layers)
    for layer, ch in channels:
        if not 0 <= layer < L or not 0 <= ch < G.style_layers[layer].channels:
            raise ValueError(f"channel_edit_grid: channel ({layer}, {ch}) out of range ({L} layers)")
    std = _stats(G, stats, seed).std
    gen = torch.Generator().manual_seed(seed)
    styles = sample_styles(G, n_faces, gen)
    noise = _sample_noise(G, n_faces, gen)
    rows = []
    with torch.no_grad():
        for layer, ch in channels:
            cols = []
            for amt in amounts:
                moved = list(styles)
                moved[layer] = styles[layer].clone()
                moved[layer][:, ch] += float(amt) * float(std[layer][ch])
                cols.append(G.synthesis_from_styles(moved, noise=noise).cpu())
            rows.append(torch.stack(cols, 1))                        # [n_faces, A, 3, H, W]
    return torch.stack(rows)
