"""Editing generated faces by their 3DMM attributes: the generator G, the attribute predictor T and the editing
networks F^i in one object (``cddfm3d_method.md`` §5, "Inference")::

    editor = FaceEditor.load("mini")                       # the shipped mini world's G, T and five F^i
    s = editor.styles_from_seed(0)                         # flat StyleSpace styles [1, D]
    s_g = editor.edit(s, {"pose": {"delta": {1: 0.2}},     # yaw + 0.2 rad
                          "expression": {"target": {0: 2.0}}})
    image = editor.synthesize(s_g, noise_seeds=[0])        # uint8 [1, 3, 64, 64]

An edit of attribute i is ``s_g = F^i(s, P_t^i - P_s^i)`` with P_s = T(s) (the official ``forward_test``); the
caller gives, per attribute, absolute targets or offsets for any of its coefficients (the others keep P_s).
Several attributes are applied one after another, each F^i on its own layer set, with every delta taken against
the source's P_s (what the caller's values refer to). Decoding reuses the noise of the source (``noise_seeds``,
the gen-pairs convention of :func:`cddfm3d.editing.pairs.noise_for`), so an edit changes only what F changes.

Coefficient units are those of the 3DMM (Deep3D's layout): identity, expression and albedo coefficients in the
model's basis units (the mini world's prior has std ~1), pose angles in radians (pitch, yaw, roll), light in
SH coefficients.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from ..face3d.lighting import directional_light
from ..face3d.measures import ATTRIBUTES
from ..face3d.morphable import check_coeff_rows
from ..images import to_uint8
from . import ATTRIBUTE_SLICES
from .manipulator import LatentManipulator, attribute_width
from .pairs import noise_for

EDIT_KEYS = ("target", "delta")
SWEEP_STEPS = (-2, -1, 0, 1, 2)


class FaceEditor:
    """G, T and the F^i of a world (module docstring).

    Args:
        G: the generator (``synthesis_from_styles``, ``flatten_styles``, ``w_to_styles``).
        T: the attribute predictor, flat styles [B, D] -> [B, 257].
        manipulators: {attribute: :class:`~.manipulator.LatentManipulator`} (any subset of :data:`ATTRIBUTES`).

    Raises ``ValueError`` when a manipulator belongs to another attribute, or T or a manipulator to another style
    width than G's."""

    def __init__(self, G, T, manipulators: Mapping[str, LatentManipulator]):
        for name, F in manipulators.items():
            if name not in ATTRIBUTES:
                raise ValueError(f"FaceEditor: unknown attribute {name!r}; expected one of {ATTRIBUTES}")
            if getattr(F, "attribute", name) != name:
                raise ValueError(f"FaceEditor: the manipulator given for {name!r} edits {F.attribute!r}")
            if getattr(F, "style_dim", G.style_dim) != G.style_dim:
                raise ValueError(f"FaceEditor: F^{name} takes styles of width {F.style_dim}, the generator's are "
                                 f"{G.style_dim}")
        if getattr(T, "style_dim", G.style_dim) != G.style_dim:
            raise ValueError(f"FaceEditor: T takes styles of width {T.style_dim}, the generator's are {G.style_dim}")
        self.G, self.T, self.manipulators = G, T, dict(manipulators)

    @classmethod
    def load(cls, world: str = "mini", device=None, generator=None) -> FaceEditor:
        """The shipped networks of ``world``: ``<world>/generator``, ``<world>/attribute_predictor`` and every
        ``<world>/manipulator/<attribute>`` the manifest has. The package ships them for the mini world only
        (``"mini"``); the networks of another world (e.g. T and the F^i of the real FFHQ generator, trained with
        ``gen-pairs``, ``train-t`` and ``train-f`` on it) are not assets: build ``FaceEditor(G, T, manipulators)``
        from them.

        ``generator``: a :class:`cddfm3d.stylegan2.Generator` on ``device`` used instead of ``<world>/generator``
        (which is then not loaded), e.g. one fine-tuned to another domain; T and the F^i stay the world's.

        Raises the asset errors of :func:`cddfm3d.assets.load` (missing or corrupt files), ``ValueError`` for a
        world without any F^i (naming what is missing and where it comes from), and ``ValueError`` for a
        ``generator`` that is not a Generator or is on another device."""
        from .. import assets

        if generator is not None:
            _check_generator(generator, device)
        names = set(assets.available())
        found = {a: assets.load(f"{world}/manipulator/{a}", device) for a in ATTRIBUTES
                 if f"{world}/manipulator/{a}" in names}
        if not found:
            raise ValueError(
                f"FaceEditor.load: the assets have no {world}/manipulator/<attribute> (the package ships T and the "
                f"F^i of the mini world only, as mini/attribute_predictor and mini/manipulator/<attribute>; for "
                f"another world, train T and the F^i on its generator with gen-pairs, train-t and train-f and build "
                f"FaceEditor(G, T, manipulators) from the trained networks)")
        G = assets.load(f"{world}/generator", device) if generator is None else generator
        T = assets.load(f"{world}/attribute_predictor", device)
        return cls(G.eval(), T.eval(), found)

    @property
    def device(self) -> torch.device:
        return self.G.w_avg.device

    @property
    def attributes(self) -> list[str]:
        return [a for a in ATTRIBUTES if a in self.manipulators]

    # ----------------------------------------------------------------- sources
    @torch.no_grad()
    def styles_from_seed(self, seed: int, truncation_psi: float = 1.0) -> torch.Tensor:
        """Flat styles [1, D] of the face with latent z ~ N(0, I) drawn from a CPU generator seeded with ``seed``
        (W space, optional truncation toward the average w)."""
        z = torch.randn(1, self.G.z_dim, generator=torch.Generator().manual_seed(int(seed))).to(self.device)
        w = self.G.mapping(z, truncation_psi=truncation_psi)
        return self.G.flatten_styles(self.G.w_to_styles(w))

    @torch.no_grad()
    def predict(self, s: torch.Tensor) -> torch.Tensor:
        """P = T(s): coefficients [B, 257] of styles [B, D]."""
        return self.T(self._check_styles(s))

    # ----------------------------------------------------------------- editing
    def deltas(self, s: torch.Tensor, edits: Mapping[str, Mapping], P_s: torch.Tensor | None = None
               ) -> dict[str, torch.Tensor]:
        """{attribute: delta [B, k_i]} of ``edits`` (see :meth:`edit`) against P_s (default T(s)): ``target - P_s``
        where a target is set, 0 elsewhere, plus the offsets (an offset alone is passed on exactly as given)."""
        s = self._check_styles(s)
        P_s = self.predict(s) if P_s is None else self._check_coeffs(P_s, len(s))
        return {name: delta for name, (_, delta) in self._requests(edits, P_s).items()}

    def _requests(self, edits: Mapping[str, Mapping], P_s: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...]]:
        """{attribute: (goal [B, k_i], delta [B, k_i])}: the requested coefficients (targets as given, offsets
        added) and the delta F^i gets (see :meth:`deltas`), after checking ``edits``."""
        if not isinstance(edits, Mapping):
            raise ValueError(f"FaceEditor.edit: edits must be a dict {{attribute: {{'target': ..., 'delta': ...}}}}, "
                             f"found {type(edits).__name__}")
        out = {}
        for name, spec in edits.items():
            if name not in self.manipulators:
                have = self.attributes
                raise ValueError(f"FaceEditor.edit: no editing network for {name!r}; this editor has {have}")
            if not isinstance(spec, Mapping) or not spec or set(spec) - set(EDIT_KEYS):
                raise ValueError(f"FaceEditor.edit: the edit of {name!r} must be a dict with 'target' and/or "
                                 f"'delta', found {spec!r}")
            src = P_s[:, ATTRIBUTE_SLICES[name]]
            goal, delta = src.clone(), torch.zeros_like(src)
            if "target" in spec:
                goal = _assign(goal, spec["target"], name, "target", replace=True)
                delta = goal - src                  # exactly 0 where no target is set
            if "delta" in spec:
                goal = _assign(goal, spec["delta"], name, "delta", replace=False)
                delta = _assign(delta, spec["delta"], name, "delta", replace=False)
            out[name] = (goal, delta)
        return out

    @torch.no_grad()
    def edit(self, s: torch.Tensor, edits: Mapping[str, Mapping], P_s: torch.Tensor | None = None) -> torch.Tensor:
        """Edited styles [B, D] of styles ``s`` [B, D] (any float dtype; computed and returned in G's dtype).

        ``edits``: {attribute: {"target": T, "delta": d}} with either or both keys; each value is a tensor
        [B, k_i] or [k_i] (every coefficient of the attribute) or a dict {coefficient index within the attribute:
        number} (the others unchanged). "target" sets absolute values, "delta" adds to them (after the target).
        The attributes are applied in :data:`ATTRIBUTES` order, each by its F^i on its own layers.

        ``P_s``: the source's coefficients [B, 257] that targets are measured from; default T(s) (the official
        ``forward_test``), or e.g. the reconstruction network's reading of the source image
        (``label_images(recon, editor.synthesize(s, seeds), model)[0]``). Offsets do not depend on it. Measured on
        the mini world (``evaluate --read-deltas``, ``benchmarks/README.md``): the recon's own P_s brings swap
        targets much closer as the recon reads the edits, hardly at all as the independent evaluator reads them.

        Raises ``ValueError`` for an attribute without a network, a bad edit spec (unknown key, index out of range,
        non-finite value, wrong shape), styles of the wrong shape or a ``P_s`` that is not finite [B, 257]."""
        s = self._check_styles(s)
        return self.apply(s, self.deltas(s, edits, P_s))

    def apply(self, s: torch.Tensor, deltas: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The chain of :meth:`edit` for given deltas: each F^i of ``deltas`` ({attribute: delta [B, k_i] or [k_i]
        against the source's P_s, as :meth:`deltas` gives them}) applied to styles ``s`` [B, D] in
        :data:`ATTRIBUTES` order, each on its own layers (:meth:`step`); an attribute not in ``deltas`` is not
        passed through its F^i. Returns styles [B, D] in G's dtype (``s`` itself, checked, when ``deltas`` is
        empty). Runs in the caller's grad mode.

        Raises ``ValueError`` for styles of the wrong shape, an attribute without a network or a delta of another
        shape."""
        s = self._check_styles(s)
        if not isinstance(deltas, Mapping):
            raise ValueError(f"FaceEditor.apply: deltas must be a dict {{attribute: delta}}, found "
                             f"{type(deltas).__name__}")
        for name, d in deltas.items():
            if name not in self.manipulators:
                raise ValueError(f"FaceEditor.apply: no editing network for {name!r}; this editor has "
                                 f"{self.attributes}")
            k = attribute_width(name)
            if not isinstance(d, torch.Tensor) or tuple(d.shape) not in ((k,), (len(s), k)):
                found = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
                raise ValueError(f"FaceEditor.apply: the delta of {name!r} must be a tensor [{len(s)}, {k}] or "
                                 f"[{k}], found {found}")
        for name in ATTRIBUTES:
            if name in deltas:
                d = deltas[name]
                s = self.step(s, name, d.expand(len(s), -1) if d.ndim == 1 else d)
        return s

    def step(self, s: torch.Tensor, attribute: str, delta: torch.Tensor) -> torch.Tensor:
        """One link of :meth:`apply`'s chain: ``F^attribute(s, delta)`` for styles [B, D] (already checked, on G's
        device and dtype) and a delta [B, k_i] against the source's P_s, unchecked. Callers that cache the chain
        (the UI's :class:`cddfm3d.ui.EditorModel`) re-run only the links after a change and get what :meth:`apply`
        gives.
        Runs in the caller's grad mode (:meth:`edit` runs it under ``torch.no_grad``)."""
        return self.manipulators[attribute](s, delta)

    @torch.no_grad()
    def target_coeffs(self, s: torch.Tensor, edits: Mapping[str, Mapping], P_s: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """P_t [B, 257]: P_s (T(s) unless given) with the coefficients ``edits`` set (targets as given, then the
        offsets added; the others kept): what the edited face should show, e.g. to render the 3DMM next to the
        edit."""
        s = self._check_styles(s)
        P_t = (self.predict(s) if P_s is None else self._check_coeffs(P_s, len(s))).clone()
        for name, (goal, _) in self._requests(edits, P_t.clone()).items():
            P_t[:, ATTRIBUTE_SLICES[name]] = goal       # a target exactly as given (not P_s + (target - P_s))
        return P_t

    def sweep(self, attribute: str, steps=SWEEP_STEPS) -> tuple[list[str], list[dict]]:
        """(column labels, edits) of a one-attribute sweep for :meth:`series`: shape, expression, albedo: offsets of
        ``steps`` x the spread of their most varied coefficient (the spread of T's predictions that F^i was trained
        with, its ``p_scale``); pose: yaw offsets of ``steps`` x 10 degrees; light: a white light from 25 degrees
        above at azimuth ``steps`` x 25 degrees, strength 0.35 (absolute targets,
        :func:`cddfm3d.face3d.lighting.directional_light`)."""
        if attribute not in self.manipulators:
            raise ValueError(f"FaceEditor.sweep: no editing network for {attribute!r}; this editor has "
                             f"{self.attributes}")
        steps = [float(v) for v in steps]
        if attribute in ("shape", "expression", "albedo"):
            scale = self.manipulators[attribute].net.p_scale
            top = int(scale.argmax())
            return ([f"{attribute}[{top}] {v:+g} std" for v in steps],
                    [{attribute: {"delta": {top: v * float(scale[top])}}} for v in steps])
        if attribute == "pose":
            return ([f"yaw {10 * v:+g} deg" for v in steps],
                    [{attribute: {"delta": {1: math.radians(10 * v)}}} for v in steps])
        return ([f"light azimuth {25 * v:+g} deg" for v in steps],
                [{attribute: {"target": directional_light(25.0, 25 * v, 0.35).float()}} for v in steps])

    @torch.no_grad()
    def series(self, s: torch.Tensor, noise_seeds, edits_list) -> dict[str, torch.Tensor]:
        """Several edits of the same sources, e.g. a sweep of one coefficient: for each ``edits`` of ``edits_list``
        (K of them, see :meth:`edit`) the edited styles, their images and the target coefficients (T(s) is
        computed once). Returns {"styles": [K, B, D], "images": [K, B, 3, H, W] uint8, "targets": [K, B, 257]}."""
        s = self._check_styles(s)
        P_s = self.predict(s)
        styles, images, targets = [], [], []
        for edits in edits_list:
            s_g = self.apply(s, self.deltas(s, edits, P_s))
            styles.append(s_g)
            images.append(self.synthesize(s_g, noise_seeds))
            targets.append(self.target_coeffs(s, edits, P_s))
        return {"styles": torch.stack(styles), "images": torch.stack(images), "targets": torch.stack(targets)}

    @torch.no_grad()
    def synthesize(self, s: torch.Tensor, noise_seeds=None, noise: list[torch.Tensor] | None = None
                   ) -> torch.Tensor:
        """uint8 images [B, 3, H, W] of styles [B, D] with the noise of ``noise_seeds`` [B] (ints), in one batch.

        ``noise``: instead of the seeds, the noise maps themselves (``noise_for(G, noise_seeds)``, G.num_noise
        tensors [B, 1, r, r] on G's device), so that a caller that decodes one source many times draws them once;
        the image is the same as with the seeds. Give exactly one of the two. Raises ``ValueError`` for both or
        neither, a seed count other than B, seeds that are not ints, or noise maps of another count or batch."""
        s = self._check_styles(s)
        G = self.G
        if (noise_seeds is None) == (noise is None):
            raise ValueError("FaceEditor.synthesize: give exactly one of noise_seeds and noise")
        if noise is not None:
            if len(noise) != G.num_noise or any(n.ndim != 4 or n.shape[0] != len(s) for n in noise):
                found = [tuple(n.shape) for n in noise]
                raise ValueError(f"FaceEditor.synthesize: noise must be {G.num_noise} maps [{len(s)}, 1, r, r] "
                                 f"(noise_for), found {found}")
            return to_uint8(G.synthesis_from_styles(G.unflatten_styles(s), noise=list(noise)))
        seeds = noise_seeds.tolist() if isinstance(noise_seeds, torch.Tensor) else list(noise_seeds)
        if len(seeds) != len(s):
            raise ValueError(f"FaceEditor.synthesize: {len(seeds)} noise seeds for {len(s)} styles")
        bad = [x for x in seeds if isinstance(x, bool) or not isinstance(x, int)]
        if bad:
            raise ValueError(f"FaceEditor.synthesize: noise seeds must be ints, found {bad[:3]}")
        return to_uint8(G.synthesis_from_styles(G.unflatten_styles(s), noise=noise_for(G, seeds, self.device)))

    def _check_coeffs(self, P_s, b: int) -> torch.Tensor:
        return check_coeff_rows(P_s, b, "FaceEditor", "P_s").to(self.device, self.G.w_avg.dtype)

    def _check_styles(self, s) -> torch.Tensor:
        D = self.G.style_dim
        if not isinstance(s, torch.Tensor) or not s.is_floating_point() or s.ndim != 2 or s.shape[1] != D:
            found = (f"{s.dtype} {tuple(s.shape)}" if isinstance(s, torch.Tensor) else type(s).__name__)
            raise ValueError(f"FaceEditor: styles must be a float tensor [B, {D}] (G.flatten_styles), found {found}")
        return s.to(self.device, self.G.w_avg.dtype)      # float64 styles would fail in T and G's float32 layers


def _check_generator(generator, device) -> None:
    """ValueError unless ``generator`` is a :class:`cddfm3d.stylegan2.Generator` on ``device`` (default CPU)."""
    from ..stylegan2 import Generator

    if not isinstance(generator, Generator):
        raise ValueError(f"FaceEditor.load: generator must be a cddfm3d.stylegan2.Generator (e.g. "
                         f"cddfm3d.assets.load('mini/generator') fine-tuned), found {type(generator).__name__}")
    want, have = torch.device(device or "cpu"), generator.w_avg.device
    if have.type != want.type or (want.index is not None and have.index != want.index):
        raise ValueError(f"FaceEditor.load: the generator is on {have}, the networks are loaded on {want}; move "
                         f"it with generator.to({str(want)!r}) or pass device={str(have)!r}")


def _assign(goal: torch.Tensor, value, name: str, key: str, replace: bool) -> torch.Tensor:
    """``goal`` [B, k] with ``value`` (tensor [B, k] / [k] or {index: number}) written (replace) or added."""
    k = attribute_width(name)
    if isinstance(value, Mapping):
        for i, v in value.items():
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < k:
                raise ValueError(f"FaceEditor.edit: {name} {key} index {i!r} is out of range [0, {k})")
            v = float(v)
            if v != v or v in (float("inf"), float("-inf")):
                raise ValueError(f"FaceEditor.edit: {name} {key}[{i}] must be finite, found {v}")
            goal[:, i] = v if replace else goal[:, i] + v
        return goal
    t = torch.as_tensor(value, dtype=goal.dtype, device=goal.device)
    if t.shape not in ((k,), tuple(goal.shape)):
        raise ValueError(f"FaceEditor.edit: {name} {key} must be [{k}] or {list(goal.shape)}, found "
                         f"{list(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"FaceEditor.edit: {name} {key} has NaN or Inf")
    return t.expand_as(goal).clone() if replace else goal + t
