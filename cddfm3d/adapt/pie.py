"""PIE: embedding a portrait so that 3DMM-driven edits of the embedding behave (Tewari et al., "PIE: Portrait Image
Embedding for Semantic Control", SIGGRAPH Asia 2020; reference/face3d.md §6.2), with this package's T and F^i as
the rig (PIE used StyleRig's RigNet) and a face reconstruction network R as the image's 3D reading.

The embedding minimises, per image I, over the latent and the noise maps (the projector's variables,
:mod:`.projection`):

* ``synth``: the projector's loss, perceptual distance + ``pixel_weight`` · MSE of G(s) against I
  (Image2StyleGAN / PIE's E_synth); the projector's noise regulariser is kept alongside, unweighted by this term.
* ``identity``: the embedding is a fixed point of the rig: editing it by the 3DMM parameters it already has
  returns it. With F^i(s, ΔP) = s + D^i(E^i(s), ΔP) that is ΔP = 0, so the energy is the mean over the edit
  attributes of ``mean_k ((F^i(s, 0) − s)_k / σ_k)²`` over the dimensions k of F^i's layers, σ the per-dimension
  style spread F^i was trained with (PIE's ‖w − RigNet(w, θ_w)‖²).
* ``edit`` and ``invariance``: for a random other face v of a fixed pool (faces of G drawn from z ~ N(0, I), read by
  R), edit the embedding toward v's attribute i: s_e = F^i(s, P_v^i − T(s)^i). R's reading of G(s_e) should have
  v's attribute i (``edit``: d_i(R(G(s_e)), P_v) / c_i) and the input's other attributes (``invariance``: the mean
  over j ≠ i of d_j(R(G(s_e)), R(I)) / c_j). d_j is :func:`cddfm3d.face3d.measures.attribute_distance` (the
  attribute in the space where it is seen) and c_j the mean d_j between two faces of the pool, so every term is a
  fraction of the difference between two random faces. PIE's E_edit and E_inv compare renders of parameter mixtures
  with the images (StyleRig's loss); here the edited image itself is re-read, which is what the evaluation measures.
  Each step edits one attribute, cycling through ``attributes``; image b uses pool face (step + seed_b) mod n.
* ``recognition``: identity features of the input against the embedding and its edit, Ψ(I) vs Ψ(G(s)) and vs
  Ψ(G(s_e)) (PIE's E_recog with λ_rw = λ_rŵ). The default Ψ is R's identity, the ``shape`` and ``albedo``
  attributes (mean of d_j / c_j); ``recognizer=callable`` replaces it with any differentiable face-recognition network
  images [B, 3, H, W] in [-1, 1] -> features [B, K] (then the squared Euclidean distance). dlib's descriptor is not
  differentiable, so it measures photographs' embeddings (:mod:`cddfm3d.photo`) but cannot be optimised here.

Every term is computed per image and multiplied by its weight (:data:`DEFAULT_WEIGHTS`; 0 switches a term off and
skips its work). The optimisation is hierarchical as PIE's: first in W (one w for every layer, ``w_fraction`` of the
steps; PIE: 2000 of 3000), then in W+ from that result, each stage with the projector's learning-rate ramp and
decaying latent noise, the noise maps carried from the first stage to the second.
"""
from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import device_of
from ..editing import ATTRIBUTE_SLICES
from ..face3d.measures import ATTRIBUTES, attribute_distance
from ..images import to_range
from .projection import (ProjectionResult, _check_images, _check_int, _check_nonnegative, _seeds, _start_ws,
                         check_on_step, choose_perceptual, finish, initial_noise, optimise, w_statistics)

ENERGIES = ("synth", "identity", "edit", "invariance", "recognition")
# Chosen on 6 renders (sample_coeffs seed 1001; the benchmark uses others) among rig weights 0.1 / 0.3 / 1 and
# identity 1 / 100: 0.3 raised pose completion from 0.50 to 0.74 for 2.3 dB of PSNR, 1 cost 4.1 dB for no more.
DEFAULT_WEIGHTS = {"synth": 1.0, "identity": 100.0, "edit": 0.3, "invariance": 0.3, "recognition": 0.3}
EDIT_ATTRIBUTES = ("pose", "expression", "light")     # PIE's rig attributes (StyleRig: pose, expression, illumination)
IDENTITY_ATTRIBUTES = ("shape", "albedo")
DEFAULT_STEPS = 300
W_FRACTION = 2 / 3
POOL_SIZE = 16
POOL_SEED = 0


@dataclass
class PIEResult(ProjectionResult):
    """What :func:`pie_embed` returns: a :class:`~cddfm3d.adapt.projection.ProjectionResult` of the final W+
    stage (``ws`` [B, num_ws, w_dim], ``styles`` [B, D], ``noise``, ``image``, ``psnr``, ...; ``history`` covers both
    stages, W first: [steps, B] per entry, ``lr`` [steps]), plus:

    Attributes:
        energies: {energy: [steps, B]} the unweighted per-step value of each active term of :data:`ENERGIES`
            (a switched-off term is absent; ``synth`` is always there, whatever its weight); ``history`` holds the
            weighted ones under the same names.
        weights: the weight of every term of :data:`ENERGIES` (0 = off).
        stages: [("w", steps_w), ("w+", steps_wplus)].
        attributes: the edit attributes of ``edit`` / ``invariance`` / ``identity``.
        w_ws: [B, num_ws, w_dim] the W stage's result (every layer equal), where the W+ stage started.
    """

    energies: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    stages: list[tuple[str, int]] = field(default_factory=list)
    attributes: tuple[str, ...] = ()
    w_ws: torch.Tensor | None = None


READ_FRAMINGS = ("whole", "ffhq")


def recon_reader(recon, framing: str = "whole") -> Callable[[torch.Tensor], torch.Tensor]:
    """R as a differentiable function: images [B, 3, H, W] in [-1, 1] -> coefficients [B, 257] of the
    reconstruction network ``recon`` (a :class:`cddfm3d.face3d.ReconNet` in eval mode).

    ``framing``:

    * ``"whole"`` (the mini world, whose generator draws Deep3D-framed faces): the whole image, converted to R's
      ``input_range`` and area-resampled (bilinear when enlarging) to its ``image_size`` when H differs;
    * ``"ffhq"`` (a real FFHQ generator with Deep3DFaceRecon): Deep3D's 5-point alignment
      (:func:`cddfm3d.face3d.align.align_tensor`, differentiable in the pixels) at the 5 points where FFHQ's
      alignment puts a frontal face (:func:`cddfm3d.editing.labels.ffhq_template_5p`), i.e. round 0 of the pairs'
      self-alignment (:func:`cddfm3d.editing.labels.self_align`) with fixed points, so that the crop does not move
      between optimisation steps. FFHQ-aligned photographs (:func:`cddfm3d.photo.align_photo` with
      ``framing="ffhq"``) and the generator's faces are framed alike; turned heads are read from a slightly
      shifted crop.

    Raises ``ValueError`` for another framing."""
    if framing not in READ_FRAMINGS:
        raise ValueError(f"recon_reader: framing must be one of {READ_FRAMINGS}, found {framing!r}")
    size = recon.image_size

    def read_whole(images: torch.Tensor) -> torch.Tensor:
        x = images
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="area" if x.shape[-1] > size else "bilinear",
                              **({} if x.shape[-1] > size else {"align_corners": False}))
        return recon(to_range(x, recon.input_range), check=False).float()

    def read_ffhq(images: torch.Tensor) -> torch.Tensor:
        from ..editing.labels import ffhq_points, read_aligned

        unit = to_range(images, "0_1")
        return read_aligned(recon, unit, ffhq_points(unit))[0]

    return read_whole if framing == "whole" else read_ffhq


class PIEEnergies:
    """The four energies beyond ``synth`` (module docstring) of one batch of targets, as the projector's ``extra``.

    Args:
        editor: a :class:`cddfm3d.editing.FaceEditor` with T and an F^i for every attribute of ``attributes``
            (its G is the generator being embedded into).
        read: R, images [B, 3, H, W] in [-1, 1] -> coefficients [B, 257], differentiable (:func:`recon_reader`).
        model: the morphable model of R's coefficients (for the attribute distances).
        target: [B, 3, H, W] the images being embedded.
        weights: {energy: weight} for ENERGIES[1:].
        seeds: the per-image seeds (pool face order).
        attributes: the edit attributes.
        recognizer: None (R's shape and albedo) or a differentiable face-recognition features function (module
            docstring).
        pool_size, pool_seed: the random faces v.
    """

    def __init__(self, editor, read, model, target: torch.Tensor, weights: Mapping[str, float], seeds: Sequence[int],
                 attributes: Sequence[str] = EDIT_ATTRIBUTES, recognizer: Callable | None = None,
                 pool_size: int = POOL_SIZE, pool_seed: int = POOL_SEED):
        self.editor, self.read, self.model = editor, read, model
        self.weights = dict(weights)
        self.attributes = tuple(attributes)
        self.seeds = [int(s) for s in seeds]
        self.recognizer = recognizer
        self.step = 0
        G = editor.G
        dev = device_of(G)
        self.pool, self.scale = None, {}
        self.R_input = self.psi_input = None
        if any(self.weights.get(k, 0) > 0 for k in ("edit", "invariance", "recognition")):
            with torch.no_grad():
                self.R_input = read(target)
                self.psi_input = None if recognizer is None else recognizer(target)
                z = torch.randn(pool_size, G.z_dim, generator=torch.Generator().manual_seed(int(pool_seed))).to(dev)
                s_pool = G.flatten_styles(G.w_to_styles(G.mapping(z)))
                g = torch.Generator().manual_seed(int(pool_seed) + 1)
                res = [m.resolution for m in G.style_layers if not m.is_torgb]
                noise = [torch.randn(pool_size, 1, r, r, generator=g).to(dev) for r in res]
                self.pool = read(G.synthesis_from_styles(G.unflatten_styles(s_pool), noise=noise))
                i, k = torch.triu_indices(pool_size, pool_size, 1)
                self.scale = {a: float(attribute_distance(model, self.pool[i], self.pool[k], a).double().mean())
                              for a in ATTRIBUTES}
        self.columns = {}
        for a in self.attributes if self.weights.get("identity", 0) > 0 else ():
            net = getattr(editor.manipulators[a], "net", None)
            if not all(hasattr(net, k) for k in ("edited_columns", "style_std", "p_dim")):
                raise ValueError(f"pie_embed: the identity energy needs every F^i to be a LatentManipulator (its layer "
                                 f"set and style spread); the F^i of {a!r} is a {type(editor.manipulators[a]).__name__}"
                                 f". Switch the term off with weights={{'identity': 0}}")
            self.columns[a] = (net.edited_columns(dev), net.style_std.to(dev))

    def _d(self, a: torch.Tensor, b: torch.Tensor, attribute: str) -> torch.Tensor:
        return attribute_distance(self.model, a, b, attribute).float() / self.scale[attribute]

    def _recognition(self, images: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        if self.recognizer is None:
            return sum(self._d(R, self.R_input, a) for a in IDENTITY_ATTRIBUTES) / len(IDENTITY_ATTRIBUTES)
        return (self.recognizer(images) - self.psi_input).square().sum(1)

    def energies(self, s: torch.Tensor, image: torch.Tensor, noise: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Unweighted per-image energies {name: [B]} of flat styles ``s`` [B, D] (with gradient) whose image is
        ``image``; advances the step counter (which attribute and pool face are used)."""
        ed, w = self.editor, self.weights
        out: dict[str, torch.Tensor] = {}
        if w.get("identity", 0) > 0:
            terms = []
            for a in self.attributes:
                net = ed.manipulators[a].net
                cols, std = self.columns[a]
                ds = net(s, s.new_zeros(len(s), net.p_dim))
                terms.append((ds / std)[:, cols].square().mean(1))
            out["identity"] = sum(terms) / len(terms)
        edit_on = any(w.get(k, 0) > 0 for k in ("edit", "invariance"))
        if edit_on or w.get("recognition", 0) > 0:
            a = self.attributes[self.step % len(self.attributes)]
            idx = torch.tensor([(self.step + sd) % len(self.pool) for sd in self.seeds], device=self.pool.device)
            P_v = self.pool[idx]
            sl = ATTRIBUTE_SLICES[a]
            P_s = ed.T(s)
            s_e = ed.manipulators[a](s, (P_v[:, sl] - P_s[:, sl]).to(s.dtype))
            img_e = ed.G.synthesis_from_styles(ed.G.unflatten_styles(s_e), noise=noise)
            R_e = self.read(img_e)
            if w.get("edit", 0) > 0:
                out["edit"] = self._d(R_e, P_v, a)
            if w.get("invariance", 0) > 0:
                others = [j for j in ATTRIBUTES if j != a]
                out["invariance"] = sum(self._d(R_e, self.R_input, j) for j in others) / len(others)
            if w.get("recognition", 0) > 0:
                R_0 = self.read(image) if self.recognizer is None else None
                out["recognition"] = 0.5 * (self._recognition(image, R_0) + self._recognition(img_e, R_e))
        self.step += 1
        return out


def _check_weights(weights) -> dict[str, float]:
    if weights is None:
        return dict(DEFAULT_WEIGHTS)
    if not isinstance(weights, Mapping):
        raise ValueError(f"pie_embed: weights must be a dict {{energy: weight}} over {ENERGIES}, found "
                         f"{type(weights).__name__}")
    unknown = set(weights) - set(ENERGIES)
    if unknown:
        raise ValueError(f"pie_embed: unknown energies {sorted(unknown)} in weights; expected names from {ENERGIES}")
    out = dict(DEFAULT_WEIGHTS)
    for k, v in weights.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
            raise ValueError(f"pie_embed: the weight of {k!r} must be a finite number >= 0, found {v!r}")
        out[k] = float(v)
    return out


def pie_embed(G, images: torch.Tensor, steps: int = DEFAULT_STEPS, *, weights: Mapping[str, float] | None = None,
              w_fraction: float = W_FRACTION, editor=None, recon=None, model=None, read: Callable | None = None,
              recognizer: Callable | None = None, attributes: Sequence[str] = EDIT_ATTRIBUTES, perceptual="auto",
              lr: float = 0.1, pixel_weight: float = 1.0, noise_weight: float = 1e5,
              initial_noise_factor: float = 0.05, init_ws: torch.Tensor | None = None, n_stats: int = 10000,
              pool_size: int = POOL_SIZE, pool_seed: int = POOL_SEED, seed: int | Sequence[int] = 0,
              progress: bool = True, on_step: Callable[[int, int], None] | None = None) -> PIEResult:
    """Embed ``images`` into ``G`` with PIE's energies and its W -> W+ schedule (module docstring).

    Args:
        G: the generator (a :class:`cddfm3d.stylegan2.Generator`); work runs on its device.
        images: [B, 3, R, R] float in [-1, 1], R = ``G.resolution``.
        steps: total optimisation steps (>= 2): round(w_fraction · steps) in W (at least 1), the rest in W+ (at
            least 1). The default keeps one 64-px mini-world embedding near 60 s on 2 CPU cores
            (benchmarks/bench_pie.py).
        weights: {energy: weight} overriding :data:`DEFAULT_WEIGHTS` (names from :data:`ENERGIES`, finite, >= 0;
            0 switches a term off).
        w_fraction: share of the steps in W, in (0, 1).
        editor: a :class:`cddfm3d.editing.FaceEditor` whose G is ``G`` (T and the F^i of ``attributes``); default
            ``FaceEditor.load("mini", generator=G)``.
        recon, model: R and its morphable model; default the shipped ``mini/recon`` and MiniFace.
        read: images -> coefficients, differentiable; default :func:`recon_reader` of ``recon``, framing "whole"
            when the generator's resolution is R's input size (the mini world), else "ffhq" (a real generator).
        recognizer: a differentiable face-recognition features function for ``recognition`` (images [B, 3, H, W]
            in [-1, 1] -> [B, K]; default R's identity: shape and albedo).
        attributes: the edit attributes (names from :data:`cddfm3d.face3d.measures.ATTRIBUTES`, each with an F^i).
        perceptual, lr, pixel_weight, noise_weight, initial_noise_factor, init_ws, n_stats, seed, progress, on_step: as
            :func:`cddfm3d.adapt.project` (``init_ws`` starts the W stage: [B, w_dim] or [B, num_ws, w_dim] with
            one w in every layer; ``on_step(step, steps)`` counts both stages, step = 1 .. steps).
        pool_size, pool_seed: the random faces v of ``edit`` / ``invariance`` (>= 2 faces).

    Returns a :class:`PIEResult`. Raises ``ValueError`` (before any work) for bad images (shape, dtype, range), steps,
    weights, lr, pixel_weight, noise_weight, initial_noise_factor, w_fraction, attributes, pool size or seeds, and
    (after the rig's networks and the W statistics are loaded) for bad init_ws, naming the argument, expected and
    found."""
    t0 = time.perf_counter()
    _check_int("steps", steps, 2)
    _check_images(G, images)
    weights = _check_weights(weights)
    _check_nonnegative(lr=lr, pixel_weight=pixel_weight, noise_weight=noise_weight,
                       initial_noise_factor=initial_noise_factor)
    check_on_step(on_step)
    if isinstance(w_fraction, bool) or not isinstance(w_fraction, (int, float)) or not 0 < w_fraction < 1:
        raise ValueError(f"pie_embed: w_fraction must be a number in (0, 1), found {w_fraction!r}")
    _check_int("pool_size", pool_size, 2)
    attributes = tuple(attributes) if not isinstance(attributes, str) else (attributes,)
    bad = [a for a in attributes if a not in ATTRIBUTES]
    if not attributes or bad:
        raise ValueError(f"pie_embed: attributes must be a non-empty sequence of {ATTRIBUTES}, found {attributes!r}")
    B = images.shape[0]
    seeds = _seeds(seed, B)
    dev = device_of(G)
    rig_on = any(weights[k] > 0 for k in ENERGIES[1:])
    if rig_on:
        editor, read, model = _defaults(G, editor, recon, model, read, dev)
        missing = [a for a in attributes if a not in editor.manipulators]
        if missing:
            raise ValueError(f"pie_embed: the editor has no F^i for {missing} (it has {editor.attributes})")
    steps_w = min(steps - 1, max(1, round(w_fraction * steps)))
    steps_p = steps - steps_w
    dist = choose_perceptual(perceptual, device=dev)
    target = images.detach().to(dev, torch.float32)
    prepared = dist.prepare(target)
    mean_w, sigma = w_statistics(G, n_stats)
    ws0 = _start_ws(G, init_ws, mean_w, B, "w")
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    noise = initial_noise(G, gens, dev)
    rig = PIEEnergies(editor, read, model, target, weights, seeds, attributes, recognizer, pool_size, pool_seed) \
        if rig_on else None

    def extra(s, image, noise_maps, t):
        if rig is None:
            return {}
        return {k: weights[k] * v for k, v in rig.energies(s, image, noise_maps).items()}

    common = dict(lr=lr, pixel_weight=pixel_weight, noise_weight=noise_weight,
                  initial_noise_factor=initial_noise_factor, noise_ramp_length=0.75, lr_rampup_length=0.05,
                  lr_rampdown_length=0.25, progress=progress, extra=extra, synth_weight=weights["synth"])
    def stage_steps(offset: int):
        return None if on_step is None else (lambda k: on_step(offset + k, steps))

    run_w = optimise(G, target, dist, prepared, "w", steps_w, ws0, noise, gens, sigma, desc="PIE (W)",
                     on_step=stage_steps(0), **common)
    run = optimise(G, target, dist, prepared, "w+", steps_p, run_w.ws, run_w.noise, gens, sigma, desc="PIE (W+)",
                   on_step=stage_steps(steps_w), **common)
    history = {k: torch.cat([run_w.history[k], run.history[k]]) for k in run.history}
    synth = weights["synth"] * (history["perceptual"] + pixel_weight * history["mse"])
    history["synth"] = synth
    energies = {"synth": history["perceptual"] + pixel_weight * history["mse"]}
    for k in ENERGIES[1:]:
        if k in history and weights[k] > 0:
            energies[k] = history[k] / weights[k]
    run.history = history
    return finish(G, run, target, dist, prepared, "w+", steps, seeds, t0, result_type=PIEResult, energies=energies,
                  weights=weights, stages=[("w", steps_w), ("w+", steps_p)], attributes=attributes, w_ws=run_w.ws)


def _defaults(G, editor, recon, model, read, dev):
    """The rig's parts, the shipped mini world's where not given."""
    from .. import assets
    from ..editing import FaceEditor
    from ..world import mini_model

    if editor is None:
        editor = FaceEditor.load("mini", dev, generator=G)
    elif editor.G is not G:
        raise ValueError("pie_embed: editor.G must be the generator being embedded into (G)")
    if read is None:
        recon = (assets.load("mini/recon", dev) if recon is None else recon).eval()
        read = recon_reader(recon, "whole" if G.resolution == recon.image_size else "ffhq")
    if model is None:
        model = mini_model(dev)
    return editor, read, model


__all__ = ["pie_embed", "PIEResult", "PIEEnergies", "recon_reader", "READ_FRAMINGS", "ENERGIES", "DEFAULT_WEIGHTS",
           "EDIT_ATTRIBUTES", "DEFAULT_STEPS", "W_FRACTION"]
