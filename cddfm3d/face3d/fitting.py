"""Analysis-by-synthesis fitting of morphable-model coefficients to images (no network, no checkpoint).

Adam on the 257 coefficients, minimising Deep3DFaceRecon's training objective (reference face3d.md §2.11)
for one batch of images:

    1.92 * photometric (render of the front region vs image; render mask x optional skin mask)
  + 1.6e-3 * landmark (68 points, weights 20 on the nose tip and inner lips; in 224-px units)
  + 3e-4 * coefficient regularisation (id 1.0, exp 0.8, tex 0.017)
  + 10 * gamma (monochrome light) + 5 * reflectance (skin albedo variance)

in two stages: ``pose`` (angles and translation only, landmark loss; photometric when no landmarks are
given) then ``all`` (every coefficient, every term). Each stage decays its learning rate with a cosine
schedule. Works with any :class:`~cddfm3d.face3d.morphable.MorphableModel` (BFM or MiniFace).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .align import extract_5p, landmark_problem
from .losses import (DEEP3D_WEIGHTS, coeff_reg_loss, gamma_loss, landmark_loss, photometric_loss,
                     reflectance_loss)
from .morphable import LAYOUT, N_COEFFS, SLICES

# Adam learning-rate multipliers per coefficient group (relative to ``lr``): angles are radians and
# translations dm, both needing smaller steps than the unit-variance shape/texture coefficients.
LR_SCALE = {"id": 1.0, "exp": 1.0, "tex": 1.0, "angle": 0.3, "gamma": 0.3, "trans": 0.3}
STAGE_GROUPS = {"pose": ("angle", "trans"), "all": tuple(SLICES)}
TERMS = ("color", "lm", "reg", "gamma", "reflc")
POSE_FRACTION = 0.12


@dataclass
class FitResult:
    """Output of :func:`fit`.

    coeffs: fitted coefficients [B, 257] (detached). history: per step, the weighted-free value of each
    loss term ('color', 'lm', 'reg', 'gamma', 'reflc'), the weighted 'total' and 'lm_px' (mean landmark
    distance in pixels of the input image), plus 'stage' (stage name of each step). initial_losses /
    losses: the same quantities at the start and at the returned coefficients. image, mask: final render
    [B, 3, S, S] and its coverage [B, 1, S, S]; landmarks: final projected landmarks [B, 68, 2].
    """

    coeffs: torch.Tensor
    history: dict = field(default_factory=dict)
    initial_losses: dict = field(default_factory=dict)
    losses: dict = field(default_factory=dict)
    image: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    landmarks: torch.Tensor | None = None
    stages: tuple = ()

    def summary(self) -> str:
        keys = [k for k in ("total", "color", "lm", "lm_px", "reg", "gamma", "reflc") if k in self.losses]
        return "\n".join(f"{k:>6}: {self.initial_losses.get(k, float('nan')):.5g} -> {self.losses[k]:.5g}"
                         for k in keys)


def _default_renderer(fm_output, camera, size):
    from .render import render

    return render(fm_output, camera, size)


def _first_bad(t: torch.Tensor) -> str:
    bad = ~torch.isfinite(t)
    n = int(bad.sum())
    return f"{n} NaN/Inf value(s), first at index {tuple(bad.nonzero()[0].tolist())}"


def _check_image(image, who: str) -> torch.Tensor:
    """-> float image [B, 3, S, S]; every other dtype, layout, channel count, range or NaN/Inf is a clear error."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{who}: image must be a float tensor [B, 3, S, S] in [0, 1], found {type(image).__name__} "
                        f"(for an HxWx3 uint8 array a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255)")
    if not image.is_floating_point():
        raise TypeError(f"{who}: image must be a float tensor [B, 3, S, S] in [0, 1], found {image.dtype}"
                        + (" (pass image.float() / 255)" if image.dtype == torch.uint8 else ""))
    if image.ndim == 3:
        image = image[None]
    shape = tuple(image.shape)
    if image.ndim == 4 and image.shape[1] != 3:
        if image.shape[-1] in (1, 3, 4) and image.shape[1] == image.shape[2]:
            hint = " (channels last? pass image.permute(0, 3, 1, 2))"
        elif image.shape[1] == 1:
            hint = " (grayscale? pass image.expand(-1, 3, -1, -1))"
        elif image.shape[1] == 4:
            hint = " (RGBA? drop alpha with image[:, :3], or composite it over a background first)"
        else:
            hint = ""
        raise ValueError(f"{who}: image must be square RGB [B, 3, S, S], found {shape}{hint}")
    if image.ndim != 4 or image.shape[2] != image.shape[3]:
        raise ValueError(f"{who}: image must be square RGB [B, 3, S, S], found {shape}")
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"{who}: image contains {_first_bad(image)} (index [b, c, y, x])")
    lo, hi = float(image.min()), float(image.max())
    if lo < -0.05 or hi > 1.05:
        if lo >= -0.05 and hi <= 255.5:
            hint = "; 0..255 values? pass image / 255"
        elif lo >= -1.05 and hi <= 1.05:
            hint = "; for [-1, 1] images pass (image + 1) / 2"
        else:
            hint = "; undo any mean/std normalisation first"
        raise ValueError(f"{who}: image must be in [0, 1], found range [{lo:.4g}, {hi:.4g}]{hint}")
    return image


def _as_tensor(x, name: str, who: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(np.asarray(x, np.float64))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{who}: {name} must be a tensor or array, found {type(x).__name__}") from e


def _check_inputs(image, landmarks, mask, init, who="fit"):
    """Validate and broadcast the inputs of :func:`fit` (see its docstring for the errors)."""
    image = _check_image(image, who)
    b, _, s, _ = image.shape
    if landmarks is not None:
        landmarks = _as_tensor(landmarks, "landmarks", who)
        if landmarks.ndim == 2:
            landmarks = landmarks[None]
        if tuple(landmarks.shape) != (b, 68, 2):
            raise ValueError(f"{who}: landmarks must be [B={b}, 68, 2] pixels (x right, y down), found "
                             f"{tuple(landmarks.shape)}")
        if not bool(torch.isfinite(landmarks).all()):
            raise ValueError(f"{who}: landmarks contain {_first_bad(landmarks)} (index [b, point, xy])")
        for i in range(b):
            problem = landmark_problem(extract_5p(landmarks[i]), s, s)
            if problem is not None:
                raise ValueError(f"degenerate landmarks: the landmarks of sample {i} given to {who} {problem}")
    if mask is not None:
        mask = _as_tensor(mask, "mask", who)
        if mask.ndim == 3:
            mask = mask[None] if mask.shape[0] == 1 else mask[:, None]
        if mask.ndim != 4 or mask.shape[1] != 1 or tuple(mask.shape[2:]) != (s, s) or mask.shape[0] not in (1, b):
            raise ValueError(f"{who}: mask must be [B={b}, 1, {s}, {s}] (skin/attention weights in [0, 1]), "
                             f"found {tuple(mask.shape)}")
        if not bool(torch.isfinite(mask).all()):
            raise ValueError(f"{who}: mask contains {_first_bad(mask)}")
        lo, hi = float(mask.min()), float(mask.max())
        if lo < 0 or hi > 1.0 + 1e-6:
            raise ValueError(f"{who}: mask weights must be in [0, 1], found range [{lo:.4g}, {hi:.4g}]"
                             + ("; 0..255 values? pass mask / 255" if lo >= 0 and hi <= 255.5 else ""))
    if init is not None:
        init = _as_tensor(init, "init", who)
        if init.ndim == 1:
            init = init[None]
        if init.ndim != 2 or init.shape[1] != N_COEFFS or init.shape[0] not in (1, b):
            raise ValueError(f"{who}: init must be [B={b}, {N_COEFFS}] coefficients, found {tuple(init.shape)}")
        if not init.is_floating_point() or not bool(torch.isfinite(init).all()):
            raise ValueError(f"{who}: init must be finite floating-point coefficients, found "
                             + (f"{init.dtype}" if not init.is_floating_point() else _first_bad(init)))
        init = init.expand(b, -1)
    return image, landmarks, mask, init


def _stage_steps(steps):
    if isinstance(steps, int):
        if steps < 1:
            raise ValueError(f"fit: steps must be >= 1, found {steps}")
        first = max(1, round(steps * POSE_FRACTION)) if steps > 1 else 0
        return (("pose", first), ("all", steps - first))
    steps = tuple(int(v) for v in steps)
    if len(steps) != 2 or min(steps) < 0 or sum(steps) < 1:
        raise ValueError(f"fit: steps must be an int or (pose_steps, all_steps), found {steps}")
    return (("pose", steps[0]), ("all", steps[1]))


def fit(image: torch.Tensor, model, landmarks: torch.Tensor | None = None, mask: torch.Tensor | None = None,
        init: torch.Tensor | None = None, steps: int | Sequence[int] = (60, 440), lr: float = 0.05,
        device=None, progress: bool = True, renderer: Callable | None = None,
        weights: dict | None = None, fit_groups: Sequence[str] | None = None) -> FitResult:
    """Fit coefficients to ``image`` by analysis-by-synthesis.

    Args:
        image: [B, 3, S, S] (or [3, S, S]) RGB in [0, 1].
        model: a MorphableModel; it is rendered with its camera scaled to S.
        landmarks: optional [B, 68, 2] target landmarks in pixels of ``image`` (x right, y down, pixel
            centres on integers: the convention of ``FaceOutput.landmarks``).
        mask: optional skin/attention mask [B, 1, S, S] multiplying the photometric term.
        init: starting coefficients [B, 257] (default zeros: mean face, frontal, ambient light).
        steps: total steps (12% go to the pose stage) or (pose_steps, all_steps).
        lr: Adam learning rate (scaled per group by ``LR_SCALE``), cosine-decayed in each stage.
        device: where to run (default: the image's device). A model on another device is copied there.
        progress: show a tqdm bar.
        renderer: ``renderer(fm_output, camera, size) -> (image, mask)``; default
            :func:`cddfm3d.face3d.render.render`. It is given the output restricted to the model's front
            faces (the photometric region).
        weights: overrides of ``DEEP3D_WEIGHTS`` (keys 'color', 'lm', 'reg', 'gamma', 'reflc').
        fit_groups: coefficient groups optimised in the 'all' stage (default all six).

    Raises (before any work):
        TypeError: ``image`` is not a float tensor (uint8 tensors: pass ``image.float() / 255``).
        ValueError: ``image`` not [B, 3, S, S] (channels-last, grayscale and RGBA layouts are named with the
            conversion to use), containing NaN/Inf, or outside [0, 1] (the range found is reported, with
            "pass image / 255" for 0..255 data); ``landmarks`` of another shape, with NaN/Inf, or degenerate
            (``"degenerate landmarks: ..."``, :func:`cddfm3d.face3d.align.landmark_problem`: placeholder rows such
            as all 0 or all -1, collinear points); ``mask`` of another shape, NaN/Inf or outside [0, 1]; ``init``
            of another width (e.g. 256) or NaN/Inf; unknown ``weights`` keys or ``fit_groups``.
    """
    image, landmarks, mask, init = _check_inputs(image, landmarks, mask, init)
    device = torch.device(device) if device is not None else image.device
    if model.mean_shape.device != device:
        model = copy.deepcopy(model).to(device)  # never move the caller's model
    dtype = model.mean_shape.dtype
    image = image.to(device, dtype)
    b, _, size, _ = image.shape
    landmarks = None if landmarks is None else landmarks.to(device, dtype)
    mask = None if mask is None else mask.to(device, dtype)
    w = dict(DEEP3D_WEIGHTS)
    if weights:
        unknown = set(weights) - set(TERMS)
        if unknown:
            raise ValueError(f"fit: unknown loss weights {sorted(unknown)}; expected keys from {TERMS}")
        w.update(weights)
    renderer = renderer or _default_renderer
    groups_all = tuple(fit_groups) if fit_groups is not None else STAGE_GROUPS["all"]
    bad = [g for g in groups_all if g not in SLICES]
    if bad:
        raise ValueError(f"fit: unknown coefficient groups {bad}; expected from {tuple(SLICES)}")
    lm_scale = 224.0 / size  # landmark loss in 224-px units (Deep3D's weight refers to 224 px)

    coeffs = (init.to(device, dtype).clone() if init is not None else model.zeros(b).to(device))
    params = {g: coeffs[:, s].clone().requires_grad_(True) for g, s in SLICES.items()}

    def evaluate(stage: str):
        c = torch.cat([params[g] for g, _ in LAYOUT], 1)
        out = model(c, image_size=size, check=False)
        terms = {}
        front = dataclasses.replace(out, faces=model.front_faces) if dataclasses.is_dataclass(out) else out
        render_out = renderer(front, out.camera, size)
        terms["color"] = photometric_loss(render_out[0], image, render_out[1], mask)
        if landmarks is not None:
            terms["lm"] = landmark_loss(out.landmarks * lm_scale, landmarks * lm_scale)
        terms["reg"] = coeff_reg_loss(c)
        terms["gamma"] = gamma_loss(c)
        terms["reflc"] = reflectance_loss(out.albedo, model.skin_mask)
        if stage == "pose":
            active = ["lm"] if landmarks is not None else ["color"]
        else:
            active = [k for k in TERMS if k in terms]
        total = sum(w[k] * terms[k] for k in active)
        return total, terms, out, render_out

    def measure(total, terms, out) -> dict:
        vals = {k: float(v.detach()) for k, v in terms.items()}
        vals["total"] = float(total)
        if landmarks is not None:
            vals["lm_px"] = float((out.landmarks.detach() - landmarks).norm(dim=-1).mean())
        return vals

    stages = _stage_steps(steps)
    history: dict = {}
    with torch.no_grad():
        initial = measure(*evaluate("all")[:3])
    n_total = sum(n for _, n in stages)
    bar = tqdm(total=n_total, desc="fit", disable=not progress, leave=False)
    try:
        for stage, n in stages:
            if n == 0:
                continue
            active = STAGE_GROUPS["pose"] if stage == "pose" else groups_all
            opt = torch.optim.Adam([{"params": [params[g]], "lr": lr * LR_SCALE[g]} for g in active])
            base = [grp["lr"] for grp in opt.param_groups]
            for i in range(n):
                decay = 0.5 * (1.0 + math.cos(math.pi * i / n))  # cosine from 1 to ~0
                for grp, lr0 in zip(opt.param_groups, base, strict=True):
                    grp["lr"] = lr0 * (0.05 + 0.95 * decay)
                opt.zero_grad(set_to_none=True)
                total, terms, out, _ = evaluate(stage)
                total.backward()
                opt.step()
                for k, v in measure(total.detach(), terms, out).items():
                    history.setdefault(k, []).append(v)
                history.setdefault("stage", []).append(stage)
                bar.update(1)
                bar.set_postfix(stage=stage, loss=f"{history['total'][-1]:.4g}",
                                **({"lm_px": f"{history['lm_px'][-1]:.2f}"} if landmarks is not None else {}))
    finally:
        bar.close()
    with torch.no_grad():
        total, terms, out, rend = evaluate("all")
        final = measure(total, terms, out)
    coeffs = torch.cat([params[g].detach() for g, _ in LAYOUT], 1)
    return FitResult(coeffs=coeffs, history=history, initial_losses=initial, losses=final,
                     image=rend[0], mask=rend[1], landmarks=out.landmarks.detach(), stages=tuple(stages))
