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
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from ..progress import progress_bar

from .align import _check_landmarks, extract_5p, value_range_kind
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


def _not_a_tensor_hint(image) -> str:
    """The conversion of a numpy array or PIL image to fit's float [B, 3, S, S] tensor, by dtype and layout."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return ("a PIL image: pass align_image(image, landmarks).tensor(), or "
                "torch.from_numpy(np.asarray(image.convert('RGB'))).permute(2, 0, 1)[None].float() / 255")
    if not isinstance(image, np.ndarray):
        return "for an H x W x 3 uint8 array a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255"
    layout = {3: (".permute(2, 0, 1)[None]" if image.shape[-1] in (3, 4) else "[None]"),
              4: (".permute(0, 3, 1, 2)" if image.shape[-1] in (3, 4) else "")}.get(image.ndim, "")
    scale = " / 255" if image.dtype == np.uint8 else ""
    return f"pass torch.from_numpy(image){layout}.float(){scale}"


def _range_hint(lo: float, hi: float) -> str:
    """The fix for a float image whose values span [lo, hi] instead of [0, 1] (see ``value_range_kind``)."""
    kind = value_range_kind(lo, hi)
    if kind == "0_1_overshoot":
        hint = ("slightly outside [0, 1] (bicubic resampling or unclamped generator output)? pass image.clamp(0, 1)")
        if hi <= 1.05:
            hint += "; if it is a [-1, 1] image, pass (image + 1) / 2"
        return hint
    return {"-1_1": "for [-1, 1] images pass (image + 1) / 2",
            "-1_1_overshoot": "a [-1, 1] image with overshoot (unclamped generator output)? pass "
                              "((image + 1) / 2).clamp(0, 1); mean/std normalised? undo that instead",
            "0_255": "0..255 values? pass image / 255",
            "0_255_overshoot": "0..255 values with resampling overshoot? pass (image / 255).clamp(0, 1)",
            }.get(kind, "undo any mean/std normalisation first, or rescale the values to [0, 1]")


def _check_image(image, who: str) -> torch.Tensor:
    """-> float image [B, 3, S, S]; every other dtype, layout, channel count, range or NaN/Inf is a clear error."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{who}: image must be a float tensor [B, 3, S, S] in [0, 1], found {type(image).__name__}"
                        + (f" {image.dtype} {image.shape}" if isinstance(image, np.ndarray) else "")
                        + f" ({_not_a_tensor_hint(image)})")
    if not image.is_floating_point():
        raise TypeError(f"{who}: image must be a float tensor [B, 3, S, S] in [0, 1], found {image.dtype}"
                        + (" (pass image.float() / 255)" if image.dtype == torch.uint8 else ""))
    shape = tuple(image.shape)
    unbatched = image.ndim == 3
    if unbatched:
        image = image[None]
    if image.ndim == 4 and image.shape[1] != 3:
        if image.shape[-1] in (1, 3, 4) and image.shape[1] == image.shape[2]:
            hint = f" (channels last? pass image.permute({'2, 0, 1' if unbatched else '0, 3, 1, 2'}))"
        elif image.shape[1] == 1:
            hint = f" (grayscale? pass image.expand({'3' if unbatched else '-1, 3'}, -1, -1))"
        elif image.shape[1] == 4:
            hint = f" (RGBA? drop alpha with image[{'' if unbatched else ':, '}:3], or composite it over a background)"
        else:
            hint = ""
        raise ValueError(f"{who}: image must be square RGB [B, 3, S, S], found {shape}{hint}")
    if image.ndim != 4 or image.shape[2] != image.shape[3]:
        raise ValueError(f"{who}: image must be square RGB [B, 3, S, S], found {shape}")
    if image.numel() == 0:
        raise ValueError(f"{who}: image is empty, found shape {shape}")
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"{who}: image contains {_first_bad(image)} (index [b, c, y, x])")
    lo, hi = float(image.min()), float(image.max())
    if lo < -0.05 or hi > 1.05:
        raise ValueError(f"{who}: image must be in [0, 1], found range [{lo:.4g}, {hi:.4g}]; {_range_hint(lo, hi)}")
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
            _check_landmarks(landmarks[i], extract_5p(landmarks[i]), s, s, who, sample=i)
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


def _real(value, name: str, who: str = "fit") -> float:
    """A finite real number (Python, numpy or 0-d tensor; not bool) as float, else ValueError/TypeError naming it."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{who}: {name} must be a real number, found {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{who}: {name} must be finite, found {value}")
    return value


def _count(value, name: str, minimum: int, who: str = "fit") -> int:
    """A whole number >= minimum (int or numpy integer; floats and bools refused), else ValueError/TypeError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{who}: {name} must be an int, found {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{who}: {name} must be >= {minimum}, found {int(value)}")
    return int(value)


def _stage_steps(steps):
    """``steps`` (int >= 1, or (pose_steps, all_steps) of ints >= 0 with a sum >= 1) -> ((stage, n), (stage, n))."""
    if isinstance(steps, numbers.Integral) and not isinstance(steps, bool):
        steps = _count(steps, "steps", 1)
        first = max(1, round(steps * POSE_FRACTION)) if steps > 1 else 0
        return (("pose", first), ("all", steps - first))
    if isinstance(steps, np.ndarray):
        steps = steps.tolist()
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence):
        raise TypeError(f"fit: steps must be an int or (pose_steps, all_steps), found {type(steps).__name__} "
                        f"{steps!r}")
    if len(steps) != 2:
        raise ValueError(f"fit: steps must be an int or (pose_steps, all_steps), found {len(steps)} values {steps!r}")
    pose_n = _count(steps[0], "steps[0] (pose steps)", 0)
    all_n = _count(steps[1], "steps[1] (all steps)", 0)
    if pose_n + all_n < 1:
        raise ValueError(f"fit: steps must add up to >= 1, found {tuple(steps)}")
    return (("pose", pose_n), ("all", all_n))


def _check_options(steps, lr, weights, fit_groups):
    """Validate fit's numeric and choice arguments -> (stages, lr, loss weights, groups of the 'all' stage)."""
    stages = _stage_steps(steps)
    lr = _real(lr, "lr")
    if not lr > 0:
        raise ValueError(f"fit: lr must be > 0, found {lr}")
    w = dict(DEEP3D_WEIGHTS)
    if weights is not None:
        if not isinstance(weights, Mapping):
            raise TypeError(f"fit: weights must be a dict of loss weights (keys from {TERMS}), found "
                            f"{type(weights).__name__}")
        unknown = set(weights) - set(TERMS)
        if unknown:
            raise ValueError(f"fit: unknown loss weights {sorted(unknown, key=str)}; expected keys from {TERMS}")
        for k, v in weights.items():
            v = _real(v, f"weights[{k!r}]")
            if v < 0:
                raise ValueError(f"fit: weights[{k!r}] must be >= 0 (a negative weight maximises that loss), found {v}")
            w[k] = v
    if fit_groups is None:
        groups = STAGE_GROUPS["all"]
    else:
        if isinstance(fit_groups, str):
            raise TypeError(f"fit: fit_groups must be a sequence of group names, found the string {fit_groups!r} "
                            f"(one group? pass ({fit_groups!r},))")
        groups = tuple(fit_groups)
        bad = [g for g in groups if g not in SLICES]
        if bad:
            raise ValueError(f"fit: unknown coefficient groups {bad}; expected from {tuple(SLICES)}")
        if not groups and stages[1][1] > 0:
            raise ValueError(f"fit: fit_groups is empty but the 'all' stage has {stages[1][1]} steps; name at least "
                             f"one group from {tuple(SLICES)}")
    return stages, lr, w, groups


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
        steps: total steps, an int >= 1 (12% go to the pose stage), or (pose_steps, all_steps): ints >= 0 with a
            sum >= 1.
        lr: Adam learning rate, finite and > 0 (scaled per group by ``LR_SCALE``), cosine-decayed in each stage.
        device: where to run (default: the image's device). A model on another device is copied there.
        progress: show a tqdm bar.
        renderer: ``renderer(fm_output, camera, size) -> (image, mask)``; default
            :func:`cddfm3d.face3d.render.render`. It is given the output restricted to the model's front
            faces (the photometric region).
        weights: overrides of ``DEEP3D_WEIGHTS`` (keys 'color', 'lm', 'reg', 'gamma', 'reflc'; finite, >= 0).
        fit_groups: coefficient groups optimised in the 'all' stage (default all six; a sequence, not a string).

    Raises (before any work):
        TypeError: ``image`` is not a float tensor (the conversion is named for uint8 tensors, numpy arrays by dtype
            and layout, and PIL images); ``steps`` not an int or a pair of ints (floats are refused, not
            truncated); ``lr`` or a weight not a real number; ``weights`` not a dict; ``fit_groups`` a string.
        ValueError: ``lr`` NaN/Inf or <= 0; a weight NaN/Inf or < 0; ``steps`` < 1 (pair: an entry < 0 or a sum
            < 1); ``image`` not [B, 3, S, S] (channels-last, grayscale and RGBA layouts are named with the
            conversion to use), empty, containing NaN/Inf, or outside [0, 1] by more than 0.05: the range found is
            reported with the fix its range suggests (:func:`cddfm3d.face3d.align.value_range_kind`):
            ``image.clamp(0, 1)`` for a small overshoot (within [-0.5, 1.5], e.g. bicubic resampling),
            ``(image + 1) / 2`` for [-1, 1], ``image / 255`` for 0..255, else undoing a mean/std normalisation;
            ``landmarks`` of another shape, with NaN/Inf, or degenerate
            (``"degenerate landmarks: ..."``, :func:`cddfm3d.face3d.align.landmark_problem`: placeholder rows such
            as all 0 or all -1, collinear points); ``mask`` of another shape, NaN/Inf or outside [0, 1]; ``init``
            of another width (e.g. 256) or NaN/Inf; unknown ``weights`` keys or ``fit_groups``; empty
            ``fit_groups`` with 'all' steps to run.
    """
    stages, lr, w, groups_all = _check_options(steps, lr, weights, fit_groups)
    image, landmarks, mask, init = _check_inputs(image, landmarks, mask, init)
    device = torch.device(device) if device is not None else image.device
    if model.mean_shape.device != device:
        model = copy.deepcopy(model).to(device)  # never move the caller's model
    dtype = model.mean_shape.dtype
    image = image.to(device, dtype)
    b, _, size, _ = image.shape
    landmarks = None if landmarks is None else landmarks.to(device, dtype)
    mask = None if mask is None else mask.to(device, dtype)
    renderer = renderer or _default_renderer
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

    history: dict = {}
    with torch.no_grad():
        initial = measure(*evaluate("all")[:3])
    n_total = sum(n for _, n in stages)
    bar = progress_bar(total=n_total, desc="fit", enabled=progress, leave=False)
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
