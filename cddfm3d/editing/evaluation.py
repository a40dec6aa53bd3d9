"""Evaluation of editing methods on generated images (issue 10 §3): ``python -m cddfm3d evaluate``.

Everything is measured on the **images** the edits produce, read by reconstruction networks (*evaluators*),
never by the attribute predictor T that the F^i were trained against: T only turns targets into the editors'
input ``delta``. Every number is computed for every evaluator given (the shipped reconstruction network and an
independent second one), so that an edit that pleases one network without changing the face shows up as a
disagreement.

Editors and methods (see :mod:`cddfm3d.editing.baselines`): an editor for attribute i is ``F(s, delta) -> s_g``
with ``s`` flat styles [B, D], ``delta = P_t^i - P_s^i`` [B, k_i] and ``s_g`` [B, D]; a method is
``{attribute: editor}`` (attributes without an editor are skipped).

**Sources.** N held-out samples, each its styles ``s`` [D] and noise seed (as a ``gen-pairs`` folder stores them:
``PairDataset(root, fields=("styles", "noise_seed"))``). A source image is
``G.synthesis_from_styles(G.unflatten_styles(s), noise=noise_for(G, seed))`` as uint8, and **the edited image reuses
the source's noise**: only the styles change.

**Targets** of attribute i (``targets``):

* ``"swap"``: the attribute of another source, as in training. The sources are paired by a fixed derangement
  ``v = pairing[n]`` (:func:`derangement`: one seeded random cycle through all sources, so v != n); the editor's
  delta is ``T(s_v)^i - T(s_n)^i`` and the measured target ``P_t`` is the evaluator's reading of v's image.
* ``"prior"``: coefficients drawn from the world's prior (default :func:`cddfm3d.world.priors.sample_coeffs`
  ``(N, seed)``, the mini world's; pass ``prior`` for another world); the editor's delta is
  ``P_prior^i - T(s_n)^i`` and the measured target is the prior sample itself.

**Where P_s comes from** (``delta_readers``). By default T gives both ends of the editors' delta, as the official
``forward_test`` does (P_s = T(s)). A method named in ``delta_readers`` instead takes P_s, and the swap target
P_v, from an evaluator's readings of the unedited source images (the readings every measure starts from), so its
delta is what that evaluator sees: ``P_v^i - P_n^i`` (swap) or ``P_prior^i - P_n^i`` (prior). With T's delta an
exact editor misses the measured target by T's deviation from the evaluator on both faces; with the evaluator's
own readings it does not, but the delta then carries that evaluator's per-image reading errors, which the edit
may reproduce and the same evaluator reads back. The measures are unchanged; judge such a method by the other
evaluators (on the mini world the gain is large as the recon reads it and small as the independent evaluator
reads it: ``benchmarks/README.md``).

**Measures** (per method, evaluator, target kind and edited attribute i; ``d_j`` is
:func:`cddfm3d.face3d.measures.attribute_distance`: vertex RMS in dm for shape and expression, RGB 0-1 for albedo
and for the SH shading of light, degrees for pose; ``P_s`` / ``P_g`` the evaluator's readings of the source / edited
image; means over the N sources, accumulated in float64):

* completion_i = 1 - mean d_i(P_g, P_t) / mean d_i(P_s, P_t): 1 = the edited images show exactly the targets,
  0 = no closer than the sources, < 0 = farther. A **ratio of means**, not a mean of ratios: a source that happens
  to be close to its target (small d_i(P_s, P_t)) would make its own ratio explode and dominate a mean of ratios;
  the ratio of means weighs every source by how far it had to go. NaN when every source already equals its target.
* leakage[i, j] = mean d_j(P_g, P_s) / mean d_j(P_s, P_v) for every other attribute j: how far the edit moved
  attribute j, in units of the mean distance between two random sources (the derangement pairs, read by the same
  evaluator): 0 = untouched, 1 = as different as another face. The diagonal (j = i) is NaN in
  :meth:`EditingEvaluation.leakage_matrix` (attribute i is meant to move; its movement is kept as
  ``moved[i]`` and judged by completion); the off-diagonal leakage is the mean over j != i.
* identity = leakage[i, "shape"] for i != shape (NaN for shape edits): the mini world's identity measure, 0 = the
  identity is kept.
* fd: the Fréchet distance (:func:`cddfm3d.world.quality.frechet_distance`) between the Gaussians of the
  evaluator's pooled backbone features (``net.features``) of the N edited images and of the N source images
  (0 = same statistics; clipped at 0, which rounding can undercut). With N samples of C features (C = 128 for the
  mini recon) the estimate is biased upward for small N (it is not 0 for two independent samples of one
  distribution), so compare values at equal N only; ``n`` is reported with it.

**The perfect-edit reference** (``reference``; method :data:`PERFECT`): what the measures read when an edit is
exactly right. Given world coefficients of the sources (``reference`` [N, 257], e.g. the shipped reconstruction
network's labels of the source images, a ``gen-pairs`` folder's ``coeffs``), its source images are the world's
renders of them (``render_fn``, default the mini world's human renderer at G's resolution) and its edit of attribute
i renders the same coefficients with slice i set to the target (the partner's ``reference`` row for swap, the prior
draw for prior), with the same background (each row rendered alone, seeded by its index, so the images do not
depend on ``batch``). The renders are read by every evaluator and scored like every method, except that its
leakage is normalised by the mean distance between its own paired sources (the renders' readings;
``reference_random_distance``). Its completion falls short of 1 and its leakage exceeds 0 only by the evaluators'
reading errors: an estimate of the ceiling of the measures with these evaluators, the number to read a method's
scores against. It is an estimate, not a bound: it is measured on renders, not on the generator's images, and an
editor trained through one evaluator (``train-f --through image``) can exploit that evaluator's reading biases.

Determinism: batches of ``batch`` sources go through G and the evaluators together. PyTorch's CPU kernels give
results that depend on the batch at the float-rounding level (see :mod:`cddfm3d.editing.pairs`), so numbers can
move in the last digits with ``batch``; with ``batch=1`` every image and reading is that of the sample alone
(identical to :func:`cddfm3d.editing.pairs.resynthesize` and a one-image :func:`~cddfm3d.editing.labels.label_images`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..face3d.measures import ATTRIBUTES, attribute_distance
from ..face3d.morphable import check_coeff_rows
from ..images import to_uint8
from ..serialization import check_json_header
from ..world.quality import feature_stats, frechet_distance, recon_features
from . import ATTRIBUTE_SLICES
from .labels import ALIGNS, SELF_ALIGN_ROUNDS, label_images
from .pairs import noise_for

TARGETS = ("swap", "prior")
PERFECT = "perfect"        # the method name of the perfect-edit reference (``evaluate(..., reference=...)``)
GOAL_COMPLETION = 0.7      # issue 10's goals for the shipped F^i
GOAL_LEAKAGE = 0.15
FORMAT = "cddfm3d.editing_evaluation"
VERSION = 1

Editor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------------------------ results
@dataclass
class AttributeScores:
    """The measures of one (method, evaluator, target kind, edited attribute) (see the module docstring).

    completion: 1 - target_distance / source_distance. offdiag_leakage: mean of ``leakage`` over the other
    attributes. identity: ``leakage["shape"]`` (NaN for shape edits). fd: Fréchet distance of the edited vs source
    images in the evaluator's features. leakage: {attribute j: mean d_j(P_g, P_s) / mean d_j(random pairs)}, NaN
    for the edited attribute. moved: {attribute j: mean d_j(P_g, P_s)} in the attribute's units, every j.
    target_distance: mean d_i(P_g, P_t); source_distance: mean d_i(P_s, P_t)."""

    completion: float
    offdiag_leakage: float
    identity: float
    fd: float
    leakage: dict[str, float]
    moved: dict[str, float]
    target_distance: float
    source_distance: float

    def to_dict(self) -> dict:
        return {"completion": _j(self.completion), "offdiag_leakage": _j(self.offdiag_leakage),
                "identity": _j(self.identity), "fd": _j(self.fd),
                "leakage": {k: _j(v) for k, v in self.leakage.items()},
                "moved": {k: _j(v) for k, v in self.moved.items()},
                "target_distance": _j(self.target_distance), "source_distance": _j(self.source_distance)}

    @classmethod
    def from_dict(cls, d: dict) -> AttributeScores:
        return cls(completion=_f(d["completion"]), offdiag_leakage=_f(d["offdiag_leakage"]),
                   identity=_f(d["identity"]), fd=_f(d["fd"]), leakage={k: _f(v) for k, v in d["leakage"].items()},
                   moved={k: _f(v) for k, v in d["moved"].items()}, target_distance=_f(d["target_distance"]),
                   source_distance=_f(d["source_distance"]))


def _j(x: float):
    """float -> JSON value (NaN / Inf -> None)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _f(x) -> float:
    return float("nan") if x is None else float(x)


@dataclass
class EvaluationReadings:
    """The evaluators' readings behind an evaluation (``evaluate(..., keep_readings=True)``), CPU float32.

    source: {evaluator: [N, 257]} readings of the source images; edited: {(method, evaluator, target, attribute):
    [N, 257]} readings of the edited images; prior: [N, 257] the prior targets (None without "prior");
    deltas: {(target, attribute): [N, k]} the editors' input from T (a method in ``delta_readers`` got, instead, its
    evaluator's ``source`` readings: partner minus source for swap, prior draw minus source for prior; those deltas
    are not kept here); pairing: [N] the swap partner of each source;
    reference_source: {evaluator: [N, 257]} readings of the perfect-edit reference's source renders (None without
    ``reference``; its edits are in ``edited`` under method :data:`PERFECT`)."""

    source: dict[str, torch.Tensor]
    edited: dict[tuple[str, str, str, str], torch.Tensor]
    prior: torch.Tensor | None
    deltas: dict[tuple[str, str], torch.Tensor]
    pairing: torch.Tensor
    reference_source: dict[str, torch.Tensor] | None = None


@dataclass
class EditingEvaluation:
    """The result of :func:`evaluate`.

    Fields: ``n`` sources, ``seed``, ``align``; the names ``methods``, ``evaluators``, ``targets``, ``attributes``
    (the edited attributes, in order); ``pairing`` [N] (swap partner of each source); ``random_distance``
    {evaluator: {attribute: mean d between the paired sources}} (the leakage normaliser of the generated methods,
    and the swap target's source distance); ``reference_random_distance``: the same for the perfect-edit
    reference's source renders, its leakage normaliser (None without a reference); ``scores`` {method: {evaluator:
    {target: {attribute: AttributeScores}}}} (attributes the method has no editor for are absent); ``readings``
    (:class:`EvaluationReadings` or None; not serialised); ``delta_readers`` {method: evaluator} the methods whose
    deltas came from an evaluator's readings instead of T (:func:`evaluate`).
    """

    n: int
    seed: int
    align: str
    methods: tuple[str, ...]
    evaluators: tuple[str, ...]
    targets: tuple[str, ...]
    attributes: tuple[str, ...]
    pairing: list[int]
    random_distance: dict[str, dict[str, float]]
    scores: dict[str, dict[str, dict[str, dict[str, AttributeScores]]]]
    reference_random_distance: dict[str, dict[str, float]] | None = None
    delta_readers: dict[str, str] = field(default_factory=dict)
    readings: EvaluationReadings | None = field(default=None, repr=False, compare=False)

    # ---------------------------------------------------------------------------------------- access
    def _check_names(self, method: str, evaluator: str, target: str) -> None:
        for what, name, known in (("method", method, self.methods), ("evaluator", evaluator, self.evaluators),
                                  ("target", target, self.targets)):
            if name not in known:
                raise ValueError(f"EditingEvaluation: unknown {what} {name!r}; this evaluation has {list(known)}")

    def score(self, method: str, evaluator: str, target: str, attribute: str) -> AttributeScores | None:
        """The :class:`AttributeScores` of one edit, None when the method has no editor for ``attribute``.
        Raises ``ValueError`` for a name the evaluation does not have."""
        self._check_names(method, evaluator, target)
        if attribute not in self.attributes:
            raise ValueError(f"EditingEvaluation: attribute {attribute!r} was not evaluated; this evaluation has "
                             f"{list(self.attributes)}")
        return self.scores[method][evaluator][target].get(attribute)

    def leakage_matrix(self, method: str, evaluator: str, target: str) -> np.ndarray:
        """Leakage float64 [len(attributes), 5]: row = edited attribute (``self.attributes``), column = measured
        attribute (:data:`ATTRIBUTES` order). NaN on the diagonal (the edited attribute itself) and in the rows of
        attributes the method has no editor for."""
        out = np.full((len(self.attributes), len(ATTRIBUTES)), np.nan)
        for r, a in enumerate(self.attributes):
            sc = self.score(method, evaluator, target, a)
            if sc is not None:
                out[r] = [sc.leakage[b] for b in ATTRIBUTES]
        return out

    def offdiag_leakage(self, method: str, evaluator: str, target: str) -> float:
        """Mean of the off-diagonal entries of :meth:`leakage_matrix` (over the edited attributes present)."""
        m = self.leakage_matrix(method, evaluator, target)
        return float(np.nanmean(m)) if np.isfinite(m).any() else float("nan")

    def goal_failures(self, method: str, evaluators: Sequence[str] | None = None,
                      targets: Sequence[str] | None = None, completion: float = GOAL_COMPLETION,
                      leakage: float = GOAL_LEAKAGE) -> list[str]:
        """What keeps ``method`` from issue 10's goals: for every evaluator and target kind (default: all) and every
        evaluated attribute, completion >= ``completion`` and off-diagonal leakage <= ``leakage``. Returns one line
        per miss (a missing editor and a NaN count as misses); empty when the goals are met."""
        out = []
        for e in self.evaluators if evaluators is None else evaluators:
            for t in self.targets if targets is None else targets:
                for a in self.attributes:
                    sc = self.score(method, e, t, a)
                    where = f"{method} / {e} / {t} / {a}"
                    if sc is None:
                        out.append(f"{where}: no editor")
                        continue
                    if not sc.completion >= completion:
                        out.append(f"{where}: completion {sc.completion:.3f} < {completion}")
                    if not sc.offdiag_leakage <= leakage:
                        out.append(f"{where}: off-diagonal leakage {sc.offdiag_leakage:.3f} > {leakage}")
        return out

    def goals_met(self, method: str, evaluators: Sequence[str] | None = None, targets: Sequence[str] | None = None,
                  completion: float = GOAL_COMPLETION, leakage: float = GOAL_LEAKAGE) -> bool:
        """True when :meth:`goal_failures` is empty (same arguments)."""
        return not self.goal_failures(method, evaluators, targets, completion, leakage)

    # ---------------------------------------------------------------------------------------- output
    def table(self, targets: Sequence[str] | None = None, digits: int = 3) -> str:
        """Markdown tables, one per target kind: a row per method x edited attribute (and a "mean" row per method:
        mean completion, mean off-diagonal leakage, mean identity and mean FD over its attributes) and, for each
        evaluator, the columns completion, off-diagonal leakage, identity (shape leakage) and FD. Missing values
        (no editor, the identity of shape edits) read "-"."""
        def fmt(x) -> str:
            return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"

        cols = ["completion", "leakage", "identity", "FD"]
        head = ["method", "attribute"] + [f"{e}: {c}" for e in self.evaluators for c in cols]
        parts = []
        for t in self.targets if targets is None else targets:
            if t not in self.targets:
                raise ValueError(f"EditingEvaluation.table: unknown target {t!r}; this evaluation has "
                                 f"{list(self.targets)}")
            read = "".join(f"; {m}: P_s read by {e}" for m, e in self.delta_readers.items())
            lines = [f"target: {t} (n = {self.n}, seed {self.seed}{read})", "",
                     "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for m in self.methods:
                means = {e: [[] for _ in cols] for e in self.evaluators}
                for a in self.attributes:
                    row = [m, a]
                    for e in self.evaluators:
                        sc = self.scores[m][e][t].get(a)
                        vals = [None] * 4 if sc is None else [sc.completion, sc.offdiag_leakage, sc.identity, sc.fd]
                        row += [fmt(v) for v in vals]
                        for acc, v in zip(means[e], vals, strict=True):
                            if v is not None and math.isfinite(v):
                                acc.append(v)
                    lines.append("| " + " | ".join(row) + " |")
                row = [m, "mean"]
                for e in self.evaluators:
                    row += [fmt(float(np.mean(acc)) if acc else None) for acc in means[e]]
                lines.append("| " + " | ".join(row) + " |")
            parts.append("\n".join(lines))
        return "\n\n".join(parts) + "\n"

    def to_dict(self) -> dict:
        """A JSON-able dict (NaN -> None) that :meth:`from_dict` reads back; ``readings`` are not included."""
        return {"format": FORMAT, "version": VERSION, "n": self.n, "seed": self.seed, "align": self.align,
                "methods": list(self.methods), "evaluators": list(self.evaluators), "targets": list(self.targets),
                "attributes": list(self.attributes), "pairing": [int(v) for v in self.pairing],
                "random_distance": {e: {a: _j(v) for a, v in d.items()} for e, d in self.random_distance.items()},
                "reference_random_distance": None if self.reference_random_distance is None else {
                    e: {a: _j(v) for a, v in d.items()} for e, d in self.reference_random_distance.items()},
                "delta_readers": dict(self.delta_readers),
                "scores": {m: {e: {t: {a: sc.to_dict() for a, sc in per_a.items()} for t, per_a in per_t.items()}
                               for e, per_t in per_e.items()} for m, per_e in self.scores.items()},
                "goals": {"completion": GOAL_COMPLETION, "leakage": GOAL_LEAKAGE,
                          "met": {m: self.goals_met(m) for m in self.methods}}}

    @classmethod
    def from_dict(cls, d: dict, where: str = "evaluation") -> EditingEvaluation:
        """The evaluation of a :meth:`to_dict` dict (e.g. a parsed JSON file). Raises ``ValueError`` naming
        ``where`` and the field for another format or version or a missing field."""
        check_json_header(d, where, FORMAT, VERSION)
        try:
            return cls(n=int(d["n"]), seed=int(d["seed"]), align=str(d["align"]), methods=tuple(d["methods"]),
                       evaluators=tuple(d["evaluators"]), targets=tuple(d["targets"]),
                       attributes=tuple(d["attributes"]), pairing=[int(v) for v in d["pairing"]],
                       random_distance={e: {a: _f(v) for a, v in r.items()} for e, r in d["random_distance"].items()},
                       reference_random_distance=None if d.get("reference_random_distance") is None else {
                           e: {a: _f(v) for a, v in r.items()} for e, r in d["reference_random_distance"].items()},
                       delta_readers={str(m): str(e) for m, e in (d.get("delta_readers") or {}).items()},
                       scores={m: {e: {t: {a: AttributeScores.from_dict(sc) for a, sc in per_a.items()}
                                       for t, per_a in per_t.items()} for e, per_t in per_e.items()}
                               for m, per_e in d["scores"].items()})
        except KeyError as err:
            raise ValueError(f"{where}: missing field {err.args[0]!r}") from err


# ------------------------------------------------------------------------------------------------ helpers
def derangement(n: int, seed: int = 0) -> torch.Tensor:
    """A seeded permutation [n] (int64) without fixed points: one cycle through all ``n`` items in the order of
    ``torch.randperm(n)`` drawn from a CPU generator seeded with ``seed`` (item ``order[m]`` is paired with
    ``order[m + 1]``, the last with the first). Raises ``ValueError`` for n < 2."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"derangement: n must be an int >= 2, found {n!r}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    out = torch.empty(n, dtype=torch.int64)
    out[order] = order.roll(-1)
    return out


def synthesize(G, styles: torch.Tensor, noise_seeds, device=None) -> torch.Tensor:
    """uint8 images [B, 3, H, W] of flat ``styles`` [B, D] with the noise of ``noise_seeds`` [B]
    (:func:`cddfm3d.editing.pairs.noise_for`), in one batch on G's device (or ``device``)."""
    device = G.w_avg.device if device is None else torch.device(device)
    st = G.unflatten_styles(styles.to(device))
    return to_uint8(G.synthesis_from_styles(st, noise=noise_for(G, noise_seeds, device)))


def pooled_features(net, images: torch.Tensor) -> torch.Tensor:
    """The reconstruction network's pooled backbone features [B, C] (float64, CPU) of images [B, 3, H, W] (uint8
    or float in [-1, 1]): :func:`cddfm3d.world.quality.recon_features` (converted to the network's
    ``input_range``, area-resampled to its size)."""
    return recon_features(net, images).double()


def _device(module) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def _mean_distance(model, a: torch.Tensor, b: torch.Tensor, attribute: str, chunk: int) -> float:
    total = 0.0
    for i in range(0, len(a), chunk):
        total += float(attribute_distance(model, a[i:i + chunk], b[i:i + chunk], attribute).double().sum())
    return total / len(a)


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def _check_module_mode(module, what: str) -> None:
    if isinstance(module, torch.nn.Module) and module.training:
        raise ValueError(f"evaluate: {what} is in training mode; call .eval() first (batch norm and dropout would "
                         f"make readings depend on the batch)")


# ------------------------------------------------------------------------------------------------ evaluate
@torch.no_grad()
def evaluate(G, T, methods: Mapping[str, Mapping[str, Editor]], styles: torch.Tensor, noise_seeds,
             evaluators: Mapping[str, torch.nn.Module], *, model=None, targets: Sequence[str] = TARGETS,
             attributes: Sequence[str] = ATTRIBUTES, batch: int = 64, seed: int = 0, align: str = "none",
             rounds: int = SELF_ALIGN_ROUNDS, prior: Callable[[int, int], torch.Tensor] | None = None,
             reference: torch.Tensor | None = None,
             render_fn: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
             delta_readers: Mapping[str, str] | None = None,
             keep_readings: bool = False, progress: bool = False) -> EditingEvaluation:
    """Evaluate editing methods on the same sources and targets (see the module docstring for every measure).

    Args:
        G: the generator (eval mode); its device is where sources and edits are synthesised and where editors get
            their inputs.
        T: the attribute predictor (``T(s) -> [B, 257]``, eval mode), used only for the editors' ``delta`` (of the
            methods not in ``delta_readers``).
        methods: ``{method name: {attribute: editor}}``, at least one method; editors are called
            ``editor(s [b, D], delta [b, k_i])`` on G's device and must return float styles [b, D].
        styles: [N, D] float source styles (N >= 2, D = ``G.style_dim``).
        noise_seeds: [N] int noise seeds of the sources (tensor or sequence).
        evaluators: ``{name: ReconNet}`` (eval mode), at least one; each reads the images on its own device.
        model: the morphable model of the evaluators' coefficients, on their device (default: the mini world's
            MiniFace, :func:`cddfm3d.world.domains.mini_model`, on each evaluator's device).
        targets: a non-empty subset of :data:`TARGETS`.
        attributes: the attributes to edit (a non-empty subset of :data:`ATTRIBUTES`).
        batch: sources per synthesis / reading batch (>= 1).
        seed: seeds the swap pairing (:func:`derangement`) and the prior draw.
        align, rounds: how the evaluators read images (:func:`cddfm3d.editing.labels.label_images`).
        prior: ``prior(n, seed) -> [n, 257]`` coefficients (default :func:`cddfm3d.world.priors.sample_coeffs`).
        reference: [N, 257] finite float world coefficients of the sources; adds the perfect-edit reference, method
            :data:`PERFECT` (module docstring). None (default): no reference.
        render_fn: ``render_fn(coeffs [b, 257], seed) -> images [b, 3, H, W]`` float in [-1, 1] or uint8, the same
            background for the same ``seed`` and row count (default: :func:`cddfm3d.world.domains.render` of the
            human domain at G's resolution, on the CPU). Used only with ``reference``.
        delta_readers: ``{method: evaluator}``: these methods' deltas come from that evaluator's readings of the
            source images instead of T (module docstring, "Where P_s comes from"). Default: none.
        keep_readings: keep every reading in ``result.readings`` (:class:`EvaluationReadings`; N x 257 floats per
            edit and evaluator).
        progress: a tqdm bar over the batches.

    Returns:
        :class:`EditingEvaluation`.

    Raises:
        ValueError: naming the argument: no methods / evaluators, an unknown attribute or target kind, an editor
            that is not callable, styles that are not float [N, D] with N >= 2, noise seeds that are not N ints,
            a batch < 1, an unknown ``align``, a network in training mode, prior coefficients or ``reference``
            that are not finite [N, 257], a method named :data:`PERFECT` next to ``reference``, a
            ``delta_readers`` entry naming an unknown method or evaluator; and while running, an editor that
            returns something other than finite float styles of its input's shape (naming the method and the
            attribute).
    """
    from ..progress import progress_bar

    who = "evaluate"
    # ---- arguments
    if not isinstance(methods, Mapping) or not methods:
        raise ValueError(f"{who}: methods must be a non-empty dict {{name: {{attribute: editor}}}}, found "
                         f"{methods!r}")
    if not isinstance(evaluators, Mapping) or not evaluators:
        raise ValueError(f"{who}: evaluators must be a non-empty dict {{name: ReconNet}}, found {evaluators!r}")
    targets = tuple(targets)
    if not targets or len(set(targets)) != len(targets) or any(t not in TARGETS for t in targets):
        raise ValueError(f"{who}: targets must be distinct names from {TARGETS}, found {list(targets)}")
    attributes = tuple(attributes)
    if not attributes or len(set(attributes)) != len(attributes) or any(a not in ATTRIBUTES for a in attributes):
        raise ValueError(f"{who}: attributes must be distinct names from {ATTRIBUTES}, found {list(attributes)}")
    for m, method in methods.items():
        if not isinstance(m, str) or not isinstance(method, Mapping):
            raise ValueError(f"{who}: methods must map a name (str) to {{attribute: editor}}, found {m!r}: "
                             f"{type(method).__name__}")
        for a, editor in method.items():
            if a not in ATTRIBUTES:
                raise ValueError(f"{who}: method {m!r} has an editor for unknown attribute {a!r}; expected one of "
                                 f"{ATTRIBUTES}")
            if not callable(editor):
                raise ValueError(f"{who}: method {m!r}, attribute {a!r}: the editor must be callable "
                                 f"F(s, delta) -> s_g, found {type(editor).__name__}")
            _check_module_mode(editor, f"the {a} editor of method {m!r}")
    for e in evaluators:
        if not isinstance(e, str):
            raise ValueError(f"{who}: evaluator names must be str, found {e!r}")
        _check_module_mode(evaluators[e], f"evaluator {e!r}")
    _check_module_mode(G, "G")
    _check_module_mode(T, "T")
    if align not in ALIGNS:
        raise ValueError(f"{who}: align must be one of {ALIGNS}, found {align!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"{who}: batch must be an int >= 1, found {batch!r}")
    delta_readers = dict(delta_readers or {})
    for m, e in delta_readers.items():
        if m not in methods or not isinstance(e, str) or e not in evaluators:
            raise ValueError(f"{who}: delta_readers must map method names {list(methods)} to evaluator names "
                             f"{list(evaluators)}, found {m!r}: {e!r}")
    d_style = G.style_dim
    if (not isinstance(styles, torch.Tensor) or not styles.is_floating_point() or styles.ndim != 2
            or styles.shape[1] != d_style):
        found = f"{tuple(styles.shape)} {styles.dtype}" if isinstance(styles, torch.Tensor) else type(styles).__name__
        raise ValueError(f"{who}: styles must be float [N, {d_style}] (G.style_dim), found {found}")
    n = styles.shape[0]
    if n < 2:
        raise ValueError(f"{who}: styles must hold N >= 2 sources (swap targets and leakage need pairs), "
                         f"found N = {n}")
    seeds = noise_seeds.tolist() if isinstance(noise_seeds, torch.Tensor) else list(noise_seeds)
    if len(seeds) != n or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise ValueError(f"{who}: noise_seeds must be N = {n} ints (one per source), found {len(seeds)} values")

    if reference is not None:
        if PERFECT in methods:
            raise ValueError(f"{who}: the method name {PERFECT!r} is the perfect-edit reference's (reference=...); "
                             f"rename that method")
        reference = check_coeff_rows(reference, n, who, "reference").detach().float().cpu()
        if render_fn is None:
            from ..world.domains import render as world_render

            size = int(G.resolution)

            def render_fn(coeffs: torch.Tensor, seed: int) -> torch.Tensor:
                return world_render(coeffs, "human", size=size, seed=seed)

    dev = G.w_avg.device
    styles = styles.detach().to(dev, torch.float32)
    pairing = derangement(n, seed)
    p_t = torch.cat([T(styles[i:i + batch].to(_device(T))).float().to(dev) for i in range(0, n, batch)])
    prior_coeffs = None
    if "prior" in targets:
        if prior is None:
            from ..world.priors import sample_coeffs as prior
        prior_coeffs = check_coeff_rows(prior(n, seed), n, who, "prior(n, seed)'s result")
        prior_coeffs = prior_coeffs.detach().float().to(dev)

    readers = {}
    for e, net in evaluators.items():
        edev = _device(net)
        if model is None:
            from ..world.domains import mini_model
            emodel = mini_model(edev)
        else:
            emodel = model
        readers[e] = (net, edev, emodel)

    def read_all(images: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        out = {}
        for e, (net, edev, emodel) in readers.items():
            x = images.to(edev)
            coeffs, _ = label_images(net, x, emodel, align=align, rounds=rounds)
            out[e] = (coeffs.float(), pooled_features(net, x))
        return out

    starts = list(range(0, n, batch))
    jobs = sum(1 for _ in targets for a in attributes for m in methods if a in methods[m])
    if reference is not None:
        jobs += 1 + len(targets) * len(attributes)
    bar = progress_bar(total=len(starts) * (1 + jobs), unit="batch", desc="evaluate", enabled=progress)

    def run(images_of: Callable[[int, int], torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        parts: dict[str, list] = {e: ([], []) for e in readers}
        for i in starts:
            j = min(i + batch, n)
            got = read_all(images_of(i, j))
            for e, (c, f) in got.items():
                parts[e][0].append(c)
                parts[e][1].append(f)
            bar.update(1)
        return {e: (torch.cat(c), torch.cat(f)) for e, (c, f) in parts.items()}

    def generated(styles_of: Callable[[int, int], torch.Tensor]) -> Callable[[int, int], torch.Tensor]:
        return lambda i, j: synthesize(G, styles_of(i, j), seeds[i:j], dev)

    def rendered(coeffs: torch.Tensor) -> Callable[[int, int], torch.Tensor]:
        def images(i: int, j: int) -> torch.Tensor:   # row k alone, seeded by k: one background per source
            x = torch.cat([render_fn(coeffs[k:k + 1], int(seed) * 1_000_003 + k) for k in range(i, j)])
            return (x if x.dtype == torch.uint8 else to_uint8(x)).to(dev)
        return images

    def scored(edited, source, source_stats, normaliser, a: str, t: str) -> dict[str, AttributeScores]:
        out = {}
        for e, (pg, fg) in edited.items():
            emodel = readers[e][2]
            ps = source[e][0]
            pt = ps[pairing.to(ps.device)] if t == "swap" else prior_coeffs.to(ps.device)
            d_gt = _mean_distance(emodel, pg, pt, a, batch)
            d_st = _mean_distance(emodel, ps, pt, a, batch)
            moved = {b: _mean_distance(emodel, pg, ps, b, batch) for b in ATTRIBUTES}
            leak = {b: float("nan") if b == a else _ratio(moved[b], normaliser[e][b]) for b in ATTRIBUTES}
            off = [v for b, v in leak.items() if b != a]
            out[e] = AttributeScores(
                completion=1.0 - _ratio(d_gt, d_st), offdiag_leakage=float(np.mean(off)), identity=leak["shape"],
                fd=max(0.0, frechet_distance(*feature_stats(fg), *source_stats[e])),
                leakage=leak, moved=moved, target_distance=d_gt, source_distance=d_st)
        return out

    def pair_distances(source) -> dict[str, dict[str, float]]:
        return {e: {a: _mean_distance(readers[e][2], c, c[pairing.to(c.device)], a, batch) for a in ATTRIBUTES}
                for e, (c, _) in source.items()}

    source = run(generated(lambda i, j: styles[i:j]))
    source_stats = {e: feature_stats(f) for e, (_, f) in source.items()}
    random_distance = pair_distances(source)
    all_methods = tuple(methods) + ((PERFECT,) if reference is not None else ())
    scores = {m: {e: {t: {} for t in targets} for e in readers} for m in all_methods}
    kept_edited, kept_deltas = {}, {}
    ref_source = ref_random = None
    if reference is not None:
        ref_source = run(rendered(reference))
        ref_stats = {e: feature_stats(f) for e, (_, f) in ref_source.items()}
        ref_random = pair_distances(ref_source)
    # P_s of each delta source: T's predictions, or an evaluator's readings of the source images
    p_from = {None: p_t} | {e: source[e][0].to(dev) for e in set(delta_readers.values())}
    for t in targets:
        for a in attributes:
            sl = ATTRIBUTE_SLICES[a]
            deltas = {}
            for r, p in p_from.items():
                goal = p[pairing.to(dev), sl] if t == "swap" else prior_coeffs[:, sl]
                deltas[r] = goal - p[:, sl]
            if keep_readings:
                kept_deltas[(t, a)] = deltas[None].cpu()
            for m, method in methods.items():
                if a not in method:
                    continue
                editor = method[a]
                delta = deltas[delta_readers.get(m)]

                def edited_styles(i: int, j: int, editor=editor, m=m, a=a, delta=delta) -> torch.Tensor:
                    s = styles[i:j].clone()            # an editor that writes into s cannot touch the sources
                    out = editor(s, delta[i:j].clone())
                    if (not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(s.shape)
                            or not out.is_floating_point()):
                        found = (f"{tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor)
                                 else type(out).__name__)
                        raise ValueError(f"{who}: method {m!r}, attribute {a!r}: the editor returned {found}, "
                                         f"expected float styles {tuple(s.shape)} (the shape of its input s)")
                    if not bool(torch.isfinite(out).all()):
                        raise ValueError(f"{who}: method {m!r}, attribute {a!r}: the editor returned NaN/Inf styles")
                    return out.float()

                edited = run(generated(edited_styles))
                for e, sc in scored(edited, source, source_stats, random_distance, a, t).items():
                    scores[m][e][t][a] = sc
                    if keep_readings:
                        kept_edited[(m, e, t, a)] = edited[e][0].cpu()
            if reference is not None:       # the perfect edit: the world's render of the target coefficients
                target = reference[pairing, sl] if t == "swap" else prior_coeffs[:, sl].cpu()
                perfect = reference.clone()
                perfect[:, sl] = target
                edited = run(rendered(perfect))
                for e, sc in scored(edited, ref_source, ref_stats, ref_random, a, t).items():
                    scores[PERFECT][e][t][a] = sc
                    if keep_readings:
                        kept_edited[(PERFECT, e, t, a)] = edited[e][0].cpu()
    bar.close()
    readings = None
    if keep_readings:
        readings = EvaluationReadings(source={e: c.cpu() for e, (c, _) in source.items()}, edited=kept_edited,
                                      prior=None if prior_coeffs is None else prior_coeffs.cpu(),
                                      deltas=kept_deltas, pairing=pairing.clone(),
                                      reference_source=None if ref_source is None else {
                                          e: c.cpu() for e, (c, _) in ref_source.items()})
    return EditingEvaluation(n=n, seed=int(seed), align=align, methods=all_methods, evaluators=tuple(readers),
                             targets=targets, attributes=attributes, pairing=pairing.tolist(),
                             random_distance=random_distance, scores=scores, readings=readings,
                             reference_random_distance=ref_random, delta_readers=delta_readers)


__all__ = ["TARGETS", "PERFECT", "GOAL_COMPLETION", "GOAL_LEAKAGE", "AttributeScores", "EvaluationReadings",
           "EditingEvaluation", "derangement", "synthesize", "pooled_features", "evaluate"]
