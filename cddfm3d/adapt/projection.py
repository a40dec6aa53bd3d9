"""Projection (inversion) of images into a StyleGAN2 generator: find the latent whose image matches a target.

The method is the StyleGAN2 projector (Karras et al., CVPR 2020, "Analyzing and Improving the Image Quality of
StyleGAN", §5 and appendix D; the same defaults in NVIDIA's TF and ADA-PyTorch ``projector.py`` and in rosinality's
``projector.py``; reference/stylegan2_formats.md §5), written for this package and extended to three spaces:

* **start**: the mean w of ``n_stats`` (10000) mapped z ~ N(0, I) (seed 123), in every layer; the spread
  σ = sqrt(E ||w − w̄||²) of the same samples scales the latent noise. (The mean is computed, not read from the
  ``w_avg`` buffer, as both reference projectors do; the buffer of a generator may be stale.)
* **optimised**: the latent (below) and one noise map per noise input of the synthesis network, per image, drawn
  from N(0, 1) and, after every step, re-normalised to zero mean and unit mean square (NVIDIA's form) per image.
* **loss per image** = perceptual distance (:mod:`.perceptual`) + ``pixel_weight`` · MSE (images in [-1, 1]) +
  ``noise_weight`` · noise regulariser (:func:`noise_regularization`, weight 1e5 in the references).
* **Adam** (β = 0.9, 0.999) with the learning-rate ramp :func:`lr_schedule` (linear ramp-up over the first 5 % of the
  steps, cosine ramp-down over the last 25 %, peak 0.1), and **latent noise**: Gaussian noise of standard deviation
  :func:`latent_noise_scale` (σ · 0.05 · max(0, 1 − t / 0.75)²) added to the latent each step, so it decays to 0
  at 75 % of the steps.

Spaces (``space``):

* ``"w"``: one w [B, w_dim] broadcast to all layers (NVIDIA's projector); the latent noise is one draw per image.
* ``"w+"``: one w per layer [B, num_ws, w_dim] (rosinality's ``--w_plus``); the noise is drawn per layer.
* ``"s"``: the flat StyleSpace vector [B, style_dim] (tRGB included, the layout of ``G.flatten_styles``) optimised
  directly and decoded with ``G.synthesis_from_styles``; it starts at the styles of the start W+ latent, and the
  latent noise is the W+ noise pushed through the modulation affines' linear parts (``A ε``), so that it has the
  same size and correlations as in W+. ``result.ws`` is then the W+ latent the optimisation **started from** (the
  mean w, or ``init_ws``); ``result.styles`` is the optimised s, which in general no W+ latent produces.

Batches: every image is optimised independently (its own latent, noise maps and random streams); the per-image
losses are **summed**, so each image gets the same Adam steps as when projected alone. Image ``i`` draws its
random numbers (noise-map start, latent noise) from ``torch.Generator`` seeded ``seed + i`` (or ``seed[i]``),
on the CPU, so results do not depend on the batch composition or the device's random generator.

Time (benchmarks/bench_project.py): see benchmarks/README.md; the default ``steps`` keep one 64-px image of the
mini generator within 30 s on 2 CPU cores.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from ..progress import progress_bar

from ..config import device_of
from .perceptual import PerceptualDistance, choose_perceptual

SPACES = ("w", "w+", "s")
DEFAULT_STEPS = 300
STATS_SEED = 123
RANGE_TOLERANCE = 1e-3


@dataclass
class ProjectionResult:
    """What :func:`project` returns (tensors on the generator's device, detached).

    Attributes:
        ws: [B, num_ws, w_dim] the projected W+ latent (space "w": all layers equal; space "s": the W+ latent the
            optimisation started from).
        styles: [B, style_dim] flat StyleSpace vector (tRGB included) that renders ``image``.
        noise: one tensor [B, 1, r, r] per noise input of the synthesis network (order j = 0 .. num_noise - 1).
        image: [B, 3, H, W] ``G.synthesis_from_styles(G.unflatten_styles(styles), noise=noise)`` clamped to [-1, 1].
        space: "w", "w+" or "s".
        perceptual: name of the perceptual distance used ("lpips-vgg" or "recon-features(mini/recon)", ...).
        perceptual_distance: [B] that distance between ``image`` and the target.
        mse: [B] mean squared error of ``image`` against the target (values in [-1, 1]).
        psnr: [B] dB, 10 log10(2² / mse) (peak-to-peak 2 of the [-1, 1] range; the same as on [0, 1] images).
        history: per-step values: "loss", "perceptual", "mse", "noise_reg" as [steps, B] tensors (CPU), "lr" [steps].
        steps, seeds, seconds: the number of steps, the per-image seeds and the wall time of the call.
    """

    ws: torch.Tensor
    styles: torch.Tensor
    noise: list[torch.Tensor]
    image: torch.Tensor
    space: str
    perceptual: str
    perceptual_distance: torch.Tensor
    mse: torch.Tensor
    psnr: torch.Tensor
    history: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: int = 0
    seeds: list[int] = field(default_factory=list)
    seconds: float = 0.0


# ----------------------------------------------------------------------------------------------- schedules


def lr_schedule(t: float, lr: float = 0.1, rampup: float = 0.05, rampdown: float = 0.25) -> float:
    """Learning rate at progress ``t`` = step / steps in [0, 1):
    ``lr · (0.5 − 0.5 cos(π · min(1, (1 − t) / rampdown))) · min(1, t / rampup)`` (StyleGAN2 projector)."""
    down = min(1.0, (1.0 - t) / rampdown)
    return lr * (0.5 - 0.5 * math.cos(math.pi * down)) * min(1.0, t / rampup)


def latent_noise_scale(t: float, sigma: float, factor: float = 0.05, ramp: float = 0.75) -> float:
    """Standard deviation of the latent noise at progress ``t``: ``sigma · factor · max(0, 1 − t / ramp)²``."""
    return sigma * factor * max(0.0, 1.0 - t / ramp) ** 2


# ----------------------------------------------------------------------------------------------- noise maps


def noise_regularization(noise: Sequence[torch.Tensor]) -> torch.Tensor:
    """The StyleGAN2 projector's noise regulariser, per image: for every map [B, 1, H, W], at its full size and at
    every 2x2-average-pooled size down to 8 x 8 (a map of 8 or less: its own size only), add the squares of the
    mean products of the map with itself shifted by one pixel (circularly) along x and along y. Returns [B]."""
    total = 0.0
    for n in noise:
        x = n
        while True:
            total = total + (x * x.roll(1, dims=3)).mean((1, 2, 3)).square() \
                + (x * x.roll(1, dims=2)).mean((1, 2, 3)).square()
            if x.shape[-1] <= 8:
                break
            x = F.avg_pool2d(x, 2)
    return total


@torch.no_grad()
def normalize_noise_(noise: Sequence[torch.Tensor]) -> None:
    """In place, per image: subtract each map's mean and divide by its root mean square."""
    for n in noise:
        n.sub_(n.mean((1, 2, 3), keepdim=True))
        n.div_(n.square().mean((1, 2, 3), keepdim=True).sqrt())


# ----------------------------------------------------------------------------------------------- W statistics


@torch.no_grad()
def w_statistics(G, n: int = 10000, seed: int = STATS_SEED, batch: int = 1000) -> tuple[torch.Tensor, float]:
    """(mean w [w_dim] on G's device, σ = sqrt(E ||w − w̄||²)) over ``n`` mapped z ~ N(0, I) (float64 sums)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n_stats must be an int >= 2, found {n!r}")
    dev = device_of(G)
    g = torch.Generator().manual_seed(int(seed))
    s1 = torch.zeros(G.w_dim, dtype=torch.float64)
    s2 = torch.zeros((), dtype=torch.float64)
    for i in range(0, n, batch):
        z = torch.randn(min(batch, n - i), G.z_dim, generator=g).to(dev)
        w = G.mapping(z).double().cpu()
        s1 += w.sum(0)
        s2 += w.square().sum()
    mean = s1 / n
    var = max(0.0, float(s2 / n - mean.square().sum()))
    return mean.float().to(dev), math.sqrt(var)


# ----------------------------------------------------------------------------------------------- checks


def _check_images(G, images) -> None:
    r = G.resolution
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor [B, 3, {r}, {r}] in [-1, 1], found {type(images).__name__}")
    shape = tuple(images.shape)
    if images.ndim != 4 or shape[1] != 3 or shape[2:] != (r, r) or shape[0] < 1:
        hint = "; add the batch dimension: images[None]" if shape == (3, r, r) else ""
        raise ValueError(f"images must have shape [B >= 1, 3, {r}, {r}] (the generator's resolution {r}), found "
                         f"{shape}{hint}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [-1, 1], found dtype {images.dtype} (for uint8 images "
                         f"use cddfm3d.images.from_uint8)")
    lo, hi = (float(v) for v in torch.aminmax(images.detach()))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("images must be finite, found NaN or Inf values")
    if lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise ValueError(f"images must have values in [-1, 1], found values in [{lo:.4g}, {hi:.4g}] (generator output: "
                         f".clamp(-1, 1); 0..255 values: x / 127.5 - 1)")


def _check_nonnegative(**values) -> None:
    """Each keyword a finite number >= 0 (the projector's lr, pixel_weight, noise_weight, initial_noise_factor);
    ``ValueError`` naming the first that is not."""
    for name, value in values.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, found {value!r}")


def check_on_step(on_step) -> None:
    """``on_step`` must be None or a callable ``on_step(step, steps)``; ``ValueError`` otherwise."""
    if on_step is not None and not callable(on_step):
        raise ValueError(f"on_step must be None or a callable on_step(step, steps), found {type(on_step).__name__}")


def _check_int(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an int >= {lo}, found {value!r}")
    return value


def _seeds(seed, B: int) -> list[int]:
    if isinstance(seed, int) and not isinstance(seed, bool):
        return [seed + i for i in range(B)]
    seeds = list(seed) if isinstance(seed, Sequence) else None
    if seeds is None or len(seeds) != B or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seed must be an int or a sequence of {B} ints (one per image), found {seed!r}")
    return seeds


def _start_ws(G, init_ws, mean_w: torch.Tensor, B: int, space: str) -> torch.Tensor:
    n, d = G.num_ws, G.w_dim
    if init_ws is None:
        return mean_w.expand(B, n, d).clone()
    if not isinstance(init_ws, torch.Tensor) or not init_ws.is_floating_point():
        raise ValueError(f"init_ws must be a float tensor [{B}, {n}, {d}] or [{B}, {d}], found "
                         f"{type(init_ws).__name__ if not isinstance(init_ws, torch.Tensor) else init_ws.dtype}")
    x = init_ws.detach().to(mean_w.device, torch.float32)
    if x.ndim == 2 and tuple(x.shape) == (B, d):
        x = x[:, None].expand(B, n, d)
    if x.ndim != 3 or tuple(x.shape) != (B, n, d):
        raise ValueError(f"init_ws must have shape [{B}, {n}, {d}] or [{B}, {d}], found {tuple(init_ws.shape)}")
    if space == "w" and not torch.equal(x, x[:, :1].expand_as(x)):
        raise ValueError("init_ws for space 'w' must have the same w in every layer (give [B, w_dim])")
    return x.clone()


# ----------------------------------------------------------------------------------------------- projection


def project(G, images: torch.Tensor, space: str = "w+", steps: int = DEFAULT_STEPS, *, perceptual="auto",
            lr: float = 0.1, pixel_weight: float = 1.0, noise_weight: float = 1e5, initial_noise_factor: float = 0.05,
            noise_ramp_length: float = 0.75, lr_rampup_length: float = 0.05, lr_rampdown_length: float = 0.25,
            init_ws: torch.Tensor | None = None, n_stats: int = 10000, seed: int | Sequence[int] = 0,
            progress: bool = True, on_step: Callable[[int, int], None] | None = None) -> ProjectionResult:
    """Project ``images`` into generator ``G`` (see the module docstring for the method).

    Args:
        G: a :class:`cddfm3d.stylegan2.Generator`; the work runs on its device and is returned there.
        images: [B, 3, R, R] float in [-1, 1] (R = ``G.resolution``), any device.
        space: "w", "w+" or "s".
        steps: optimisation steps (>= 1); the default suits the mini world on a CPU (the references use 1000).
        perceptual: "auto" (LPIPS-VGG when the ``real/vgg16`` weights are present, else the world's distance),
            "lpips", "recon", or a :class:`~cddfm3d.adapt.perceptual.PerceptualDistance`.
        lr: peak learning rate; pixel_weight: weight of the MSE; noise_weight: weight of the noise regulariser;
        initial_noise_factor, noise_ramp_length: latent noise; lr_rampup_length, lr_rampdown_length: lr ramp
            (fractions of ``steps``).
        init_ws: start latent [B, num_ws, w_dim] or [B, w_dim] instead of the mean w (e.g. a W+ projection to refine
            in S).
        n_stats: z samples for the mean w and σ.
        seed: int (image i uses seed + i) or one int per image.
        progress: tqdm bar.
        on_step: optional ``on_step(step, steps)`` called after each optimisation step (step = 1 .. steps), e.g. to
            show progress in a user interface.

    Returns a :class:`ProjectionResult`. Raises ValueError for images of another shape, dtype or range, an unknown
    space or perceptual distance, steps < 1, a bad seed or init_ws, naming the argument, expected and found.
    """
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, found {space!r}")
    _check_int("steps", steps, 1)
    _check_images(G, images)
    _check_nonnegative(lr=lr, pixel_weight=pixel_weight, noise_weight=noise_weight,
                       initial_noise_factor=initial_noise_factor)
    check_on_step(on_step)
    for name, value in (("noise_ramp_length", noise_ramp_length), ("lr_rampup_length", lr_rampup_length),
                        ("lr_rampdown_length", lr_rampdown_length)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 1:
            raise ValueError(f"{name} must be a number in (0, 1], found {value!r}")
    t0 = time.perf_counter()
    B = images.shape[0]
    seeds = _seeds(seed, B)
    dev = device_of(G)
    dist = choose_perceptual(perceptual, device=dev)
    target = images.detach().to(dev, torch.float32)
    prepared = dist.prepare(target)
    mean_w, sigma = w_statistics(G, n_stats)
    ws0 = _start_ws(G, init_ws, mean_w, B, space)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    noise = initial_noise(G, gens, dev)
    run = optimise(G, target, dist, prepared, space, steps, ws0, noise, gens, sigma, lr=lr, pixel_weight=pixel_weight,
                   noise_weight=noise_weight, initial_noise_factor=initial_noise_factor,
                   noise_ramp_length=noise_ramp_length, lr_rampup_length=lr_rampup_length,
                   lr_rampdown_length=lr_rampdown_length, progress=progress, desc=f"project ({space})",
                   on_step=None if on_step is None else (lambda k: on_step(k, steps)))
    return finish(G, run, target, dist, prepared, space, steps, seeds, t0)


@dataclass
class _Run:
    """What one :func:`optimise` stage leaves: the W+ latent (space "s": its start), the flat styles, the noise
    maps (detached) and the per-step history."""

    ws: torch.Tensor
    styles: torch.Tensor
    noise: list[torch.Tensor]
    history: dict[str, torch.Tensor]


def initial_noise(G, gens: Sequence[torch.Generator], device) -> list[torch.Tensor]:
    """One map [B, 1, r, r] per noise input of ``G``'s synthesis network, image i drawn from N(0, 1) with
    ``gens[i]`` (CPU), moved to ``device`` and normalised (:func:`normalize_noise_`)."""
    res = [m.resolution for m in G.style_layers if not m.is_torgb]
    noise = [torch.cat([torch.randn(1, 1, r, r, generator=g) for g in gens]).to(device) for r in res]
    normalize_noise_(noise)
    return noise


@torch.enable_grad()
def optimise(G, target: torch.Tensor, dist: PerceptualDistance, prepared, space: str, steps: int, ws0: torch.Tensor,
             noise: list[torch.Tensor], gens: Sequence[torch.Generator], sigma: float, *, lr: float,
             pixel_weight: float, noise_weight: float, initial_noise_factor: float, noise_ramp_length: float,
             lr_rampup_length: float, lr_rampdown_length: float, progress: bool, desc: str,
             extra: Callable | None = None, synth_weight: float = 1.0,
             on_step: Callable[[int], None] | None = None) -> _Run:
    """One optimisation stage of the projector (module docstring) from the W+ latent ``ws0`` [B, num_ws, w_dim] and
    the noise maps ``noise`` (copied; the caller's are not changed), with the latent noise drawn from ``gens``.

    ``extra(styles, image, noise, t)``, when given, adds energies to the loss: it gets the flat styles [B, D] of the
    step (latent noise included, with gradient), the synthesised image [B, 3, H, W], the noise maps and the progress
    t in [0, 1), and returns {name: per-image value [B]} already weighted; their sum joins the loss and each is
    recorded in the history under its name. ``synth_weight`` multiplies the image terms (perceptual + pixel);
    1 (the projector) leaves them exactly as they are. Used by :func:`cddfm3d.adapt.pie.pie_embed`.
    ``on_step(k)`` is called after step k = 1 .. ``steps``. Runs with gradients on, also inside an enclosing
    ``torch.no_grad()`` block."""
    dev = target.device
    with torch.no_grad():
        if space == "w":
            latent = ws0[:, 0].clone()
        elif space == "w+":
            latent = ws0.clone()
        else:
            latent = G.flatten_styles(G.w_to_styles(ws0)).clone()
            s_zero = G.flatten_styles(G.w_to_styles(torch.zeros(1, G.num_ws, G.w_dim, device=dev)))
    latent.requires_grad_(True)
    noise = [n.detach().clone().requires_grad_(True) for n in noise]
    params = [latent, *noise]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))

    def styles_of(lat: torch.Tensor, eps: torch.Tensor | None) -> list[torch.Tensor]:
        if space == "w":
            w = lat if eps is None else lat + eps[:, 0]
            return G.w_to_styles(w[:, None].expand(-1, G.num_ws, -1))
        if space == "w+":
            return G.w_to_styles(lat if eps is None else lat + eps)
        s = lat if eps is None else lat + (G.flatten_styles(G.w_to_styles(eps)) - s_zero)
        return G.unflatten_styles(s)

    hist: dict[str, list] = {"loss": [], "perceptual": [], "mse": [], "noise_reg": []}
    lrs = []
    bar = progress_bar(range(steps), desc=desc, unit="step", enabled=progress)
    for step in bar:
        t = step / steps
        lrs.append(lr_schedule(t, lr, lr_rampup_length, lr_rampdown_length))
        for group in opt.param_groups:
            group["lr"] = lrs[-1]
        scale = latent_noise_scale(t, sigma, initial_noise_factor, noise_ramp_length)
        eps = None
        if scale > 0:
            shape = (1, G.num_ws if space != "w" else 1, G.w_dim)
            eps = torch.cat([torch.randn(shape, generator=g) for g in gens]).to(dev) * scale
        styles = styles_of(latent, eps)
        img = G.synthesis_from_styles(styles, noise=noise)
        d = dist.distance(img, prepared)
        mse = (img - target).square().mean((1, 2, 3))
        reg = noise_regularization(noise)
        per_image = d + pixel_weight * mse
        if synth_weight != 1.0:
            per_image = synth_weight * per_image
        per_image = per_image + noise_weight * reg
        terms = {} if extra is None else extra(G.flatten_styles(styles), img, noise, t)
        for v in terms.values():
            per_image = per_image + v
        grads = torch.autograd.grad(per_image.sum(), params)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()
        normalize_noise_(noise)
        for key, v in (("loss", per_image), ("perceptual", d), ("mse", mse), ("noise_reg", reg), *terms.items()):
            hist.setdefault(key, []).append(v.detach())
        if progress and (step % 10 == 0 or step == steps - 1):
            bar.set_postfix(loss=f"{float(per_image.detach().mean()):.4f}")
        if on_step is not None:
            on_step(step + 1)

    with torch.no_grad():
        styles = G.flatten_styles(styles_of(latent, None)).detach().clone()
        if space == "w":
            ws = latent.detach()[:, None].expand(-1, G.num_ws, -1).clone()
        elif space == "w+":
            ws = latent.detach().clone()
        else:
            ws = ws0
    history = {k: torch.stack(v).cpu() for k, v in hist.items()}
    history["lr"] = torch.tensor(lrs, dtype=torch.float64)
    return _Run(ws=ws, styles=styles, noise=[n.detach().clone() for n in noise], history=history)


@torch.no_grad()
def finish(G, run: _Run, target: torch.Tensor, dist: PerceptualDistance, prepared, space: str, steps: int,
           seeds: list[int], t0: float, result_type: type | None = None, **fields):
    """The :class:`ProjectionResult` (or ``result_type`` with the extra ``fields``) of a finished run: the image
    re-synthesised from the styles and noise maps, and its distances to ``target``."""
    image = G.synthesis_from_styles(G.unflatten_styles(run.styles), noise=run.noise).clamp(-1, 1)
    final_d = dist.distance(image, prepared)
    final_mse = (image - target).square().mean((1, 2, 3))
    psnr = 10 * torch.log10(4.0 / final_mse)
    cls = ProjectionResult if result_type is None else result_type
    return cls(ws=run.ws, styles=run.styles, noise=run.noise, image=image, space=space, perceptual=dist.name,
               perceptual_distance=final_d.detach(), mse=final_mse, psnr=psnr, history=run.history, steps=steps,
               seeds=seeds, seconds=time.perf_counter() - t0, **fields)


__all__ = ["project", "ProjectionResult", "SPACES", "DEFAULT_STEPS", "lr_schedule", "latent_noise_scale",
           "noise_regularization", "normalize_noise_", "w_statistics", "initial_noise", "optimise", "finish"]
