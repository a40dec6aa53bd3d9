"""Training and evaluating the attribute predictor T on (styles, coefficients) pairs.

The library takes tensors (styles [N, D], coefficients [N, 257]); only the command line reads a pairs folder.

**The collapse to the mean face** that users of the official code report (cassiePython/cddfm3d#3) is measured by
:func:`evaluate_t` as ``var_ratio_<attribute>``: the total variance of T's predicted features divided by the
labels' (1: T varies as much as the faces do; 0: the mean face for every input; goal 0.8-1.2). It is prevented
by what differs from the official recipe:

* standardised inputs and outputs (:mod:`.predictor`): every style channel and every coefficient enters on the
  scale of its spread, so no group is a rounding error of the loss and the first layer does not saturate;
* losses normalised by the labels' variance (:mod:`.losses`: ``feature`` and ``vdc`` are batch estimates of
  1 - explained variance), so predicting the mean costs 1 per attribute, not a tiny number dominated by the few
  components with large raw values;
* AdamW with a linear warm-up and a cosine decay (the official schedule divides the rate by 100 at epoch 20,
  which freezes the network early), true passes over the data (each epoch a fresh permutation, not draws with
  replacement), and a held-out split evaluated during training, whose variance ratio shows a collapse as it
  happens.

Resumable like every trainer (:mod:`cddfm3d.training`): network, optimizer, batch generator, the epoch's order
and position are the run's state; an interrupted and resumed run equals an uninterrupted one bit for bit.
torchrun-ready: every rank draws the same global batch order and takes its slice; gradients are averaged.
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field

import torch
from torch import nn
from ..progress import progress_bar

from ..config import device_of
from ..face3d.measures import ATTRIBUTES, ExplainedVariance, Moments, attribute_features
from ..face3d.morphable import N_COEFFS, SLICES, MorphableModel
from ..training import ScheduledRun, allreduce_gradients, warmup_cosine
from .losses import TLoss, check_loss_weights
from .predictor import AttributePredictor, scaled_hidden

EXPORT_FILE = "attribute_predictor.safetensors"
EV_GOALS = {"shape": 0.85, "expression": 0.9, "albedo": 0.85, "pose": 0.9, "light": 0.9}
VAR_RATIO_GOAL = (0.8, 1.2)
ANGLE_NAMES = ("pitch", "yaw", "roll")
SCALE_SOURCES = ("prior", "labels")


@dataclass
class TTrainConfig:
    """Configuration of a T training run.

    ``style_dim``: D. ``hidden``: hidden widths (empty: :func:`~.predictor.scaled_hidden`). ``losses``: ``{name:
    weight}`` (:data:`~.losses.LOSS_NAMES`). ``coeff_scale``: ``"prior"`` (the mini world's prior std) or
    ``"labels"`` (the training labels' std). ``val_fraction``: share of the pairs held out (fixed by ``seed``).
    ``eval_every``: steps between evaluations of up to ``eval_max`` held-out pairs (logged)."""

    style_dim: int
    hidden: list = field(default_factory=list)
    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    losses: dict = field(default_factory=lambda: {"feature": 1.0, "pdc": 0.1})
    coeff_scale: str = "prior"
    val_fraction: float = 0.1
    eval_every: int = 500
    eval_max: int = 2000
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self):
        if not self.hidden:
            self.hidden = list(scaled_hidden(self.style_dim))
        check_loss_weights(self.losses)
        if self.coeff_scale not in SCALE_SOURCES:
            raise ValueError(f"TTrainConfig.coeff_scale: expected one of {SCALE_SOURCES}, found {self.coeff_scale!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"TTrainConfig.val_fraction: expected a number in (0, 1), found {self.val_fraction!r}")
        for name in ("steps", "batch_size", "eval_every", "eval_max", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"TTrainConfig.{name}: expected a positive int, found {v!r}")


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) row indices of ``n`` pairs: a permutation fixed by ``seed``; the first
    ``max(1, round(n * val_fraction))`` rows are held out. Raises ``ValueError`` when fewer than 2 rows remain
    for training."""
    n_val = max(1, round(n * val_fraction))
    if n - n_val < 2:
        raise ValueError(f"split: {n} pairs with val_fraction {val_fraction} leave {n - n_val} for training "
                         f"(need >= 2)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def labels_sha256(coeffs: torch.Tensor) -> str:
    """Which pairs T was trained on: the sha256 (hex) of the labels [N, 257] as contiguous float32 bytes on the CPU,
    recorded as ``labels_sha256`` in the train-t checkpoint (a resume and ship-editing compare it)."""
    return hashlib.sha256(coeffs.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


class TTrainer(ScheduledRun):
    """Trains an :class:`AttributePredictor` on (styles [N, D], coeffs [N, 257]) with :class:`~.losses.TLoss`;
    export ``attribute_predictor.safetensors``. See the module docstring."""

    name = "train-t"
    export_file = EXPORT_FILE
    arch_keys = ("style_dim", "hidden", "coeff_scale", "val_fraction", "seed")

    def __init__(self, config: TTrainConfig, styles: torch.Tensor, coeffs: torch.Tensor, out_dir,
                 model: MorphableModel | None = None, device=None):
        if not isinstance(styles, torch.Tensor) or styles.ndim != 2 or styles.shape[1] != config.style_dim:
            found = tuple(styles.shape) if isinstance(styles, torch.Tensor) else type(styles).__name__
            raise ValueError(f"TTrainer: styles must be [N, {config.style_dim}] (config.style_dim), found {found}")
        if not isinstance(coeffs, torch.Tensor) or coeffs.ndim != 2 or coeffs.shape[1] != N_COEFFS:
            found = tuple(coeffs.shape) if isinstance(coeffs, torch.Tensor) else type(coeffs).__name__
            raise ValueError(f"TTrainer: coeffs must be [N, {N_COEFFS}], found {found}")
        if len(styles) != len(coeffs):
            raise ValueError(f"TTrainer: {len(styles)} style rows but {len(coeffs)} coefficient rows")
        super().__init__(config, out_dir, device)
        if config.batch_size % self.world:
            raise ValueError(f"batch size {config.batch_size} is not divisible by the number of processes "
                             f"{self.world}")
        self.styles, self.coeffs = styles.float(), coeffs.float()
        # which pairs these are: a resumed run must continue on the same ones (the labels identify them)
        self.labels_sha256 = labels_sha256(self.coeffs)
        self.train_idx, self.val_idx = split_indices(len(styles), config.val_fraction, config.seed)
        if config.batch_size > len(self.train_idx):
            raise ValueError(f"batch size {config.batch_size} is larger than the training split "
                             f"({len(self.train_idx)} pairs)")
        if model is None:
            from ..world.domains import mini_model

            model = mini_model(self.device)
        # a model on another device is copied, never moved (it may be a shared instance, as mini_model's)
        self.fm = model if model.mean_shape.device == self.device else copy.deepcopy(model).to(self.device)
        torch.manual_seed(config.seed)
        self.net = AttributePredictor(config.style_dim, config.hidden)
        tr_s, tr_c = self.styles[self.train_idx], self.coeffs[self.train_idx]
        self.net.fit_normalisation(tr_s, tr_c, _prior_scale() if config.coeff_scale == "prior" else None)
        self.net.to(self.device)
        stats = TLoss.label_stats(self.fm, tr_c.to(self.device), config.losses)
        self.loss = TLoss(self.fm, self.net.coeff_scale, config.losses, stats).to(self.device)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.rng = torch.Generator().manual_seed(config.seed)   # the same on every rank: one global batch order
        self.track(net=self.net, opt=self.opt, rng=self.rng)
        self.order = torch.zeros(0, dtype=torch.long)            # the current epoch's permutation of train_idx
        self.cursor = 0

    # ----------------------------------------------------------- run state
    def extra_state(self) -> dict:
        return {"order": self.order.clone(), "cursor": self.cursor, "n_pairs": len(self.styles),
                "labels_sha256": self.labels_sha256}

    def load_extra_state(self, state: dict) -> None:
        again = "use the same pairs, another output directory, or start afresh (--no-resume / resume=False)"
        if int(state["n_pairs"]) != len(self.styles):
            raise ValueError(f"{self.checkpoint_path}: the checkpoint was trained on {int(state['n_pairs'])} pairs, "
                             f"{len(self.styles)} given; {again}")
        saved = state.get("labels_sha256")   # (absent in checkpoints written before it was recorded)
        if saved is not None and saved != self.labels_sha256:
            raise ValueError(f"{self.checkpoint_path}: the checkpoint was trained on other pairs of the same count "
                             f"(field 'labels_sha256': {saved[:12]}... in the checkpoint, {self.labels_sha256[:12]}... "
                             f"given); {again}")
        self.order, self.cursor = state["order"].clone(), int(state["cursor"])

    # ----------------------------------------------------------- one iteration
    def _next_batch(self) -> torch.Tensor:
        """This rank's rows of the next global batch; a new permutation when the epoch has too few rows left."""
        b = self.cfg.batch_size
        if self.cursor + b > len(self.order):
            self.order = self.train_idx[torch.randperm(len(self.train_idx), generator=self.rng)]
            self.cursor = 0
        rows = self.order[self.cursor:self.cursor + b]
        self.cursor += b
        per_rank = b // self.world
        return rows[self.rank * per_rank:(self.rank + 1) * per_rank]

    def train_step(self) -> dict:
        cfg = self.cfg
        rows = self._next_batch()
        s = self.styles[rows].to(self.device)
        y = self.coeffs[rows].to(self.device)
        self.apply_lr(self.opt)
        terms = self.loss(self.net(s, check=False), y, generator=self.rng)
        self.opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        allreduce_gradients(self.net)
        self.opt.step()
        stats = {k: float(v.detach()) for k, v in terms.items()}
        done = self.step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            self.log.append({"step": done, "val": self.evaluate(cfg.eval_max)})
        return stats

    def evaluate(self, max_pairs: int | None = None, progress: bool = False) -> dict:
        """:func:`evaluate_t` on (the first ``max_pairs`` of) the held-out split."""
        idx = self.val_idx if max_pairs is None else self.val_idx[:max_pairs]
        was_training = self.net.training
        self.net.eval()
        try:
            return evaluate_t(self.net, self.styles[idx], self.coeffs[idx], self.fm, progress=progress)
        finally:
            self.net.train(was_training)

    def train(self, progress: bool = True, max_steps: int | None = None) -> dict:
        """Run until ``cfg.steps`` (or ``stop_at_step`` / ``max_steps`` more steps)."""
        return self.run_in_train_mode(self.net, snapshot_every=self.cfg.checkpoint_every, progress=progress,
                                      max_steps=max_steps)


def _prior_scale() -> torch.Tensor:
    from ..world.priors import prior_std

    return prior_std()


def train_t(styles: torch.Tensor, coeffs: torch.Tensor, config: TTrainConfig, out_dir,
            model: MorphableModel | None = None, device=None, resume: bool = True, progress: bool = True,
            max_steps: int | None = None, stop_at_step: int | None = None,
            command: list[str] | None = None) -> TTrainer:
    """Train (or resume) T on styles [N, D] and coefficients [N, 257]; writes ``out_dir/{checkpoint.pt,
    attribute_predictor.safetensors, log.json}``. ``stop_at_step`` ends the run at that absolute step (the
    schedule stays that of ``config.steps``). Returns the trainer (``trainer.net`` is T, ``trainer.evaluate()``
    its held-out evaluation)."""
    trainer = TTrainer(config, styles, coeffs, out_dir, model, device)
    trainer.start(resume, stop_at_step, command)
    trainer.train(progress=progress, max_steps=max_steps)
    return trainer


# ------------------------------------------------------------------------------------------------ evaluation
class VarianceRatio:
    """Total variance of predicted features over that of the labels, accumulated over batches in float64:
    ``sum_k Var(pred_k) / sum_k Var(true_k)`` (k over the feature's entries; the same sample count on both sides,
    so population or sample variance give the same ratio; :class:`~cddfm3d.face3d.measures.Moments` of each side).
    ``nan`` when the labels do not vary."""

    def __init__(self):
        self.pred, self.true = Moments("VarianceRatio"), Moments("VarianceRatio")

    @property
    def n(self) -> int:
        return self.true.n

    def update(self, pred: torch.Tensor, true: torch.Tensor) -> None:
        if pred.shape != true.shape or pred.ndim != 2:
            raise ValueError(f"VarianceRatio: expected two [B, K] tensors of one shape, found {tuple(pred.shape)} "
                             f"and {tuple(true.shape)}")
        self.pred.update(pred)
        self.true.update(true)

    def total_variances(self) -> tuple[float, float]:
        """(predicted, label) total population variance; raises ``ValueError`` for fewer than 2 samples."""
        if self.n < 2:
            raise ValueError(f"VarianceRatio: need at least 2 samples, found {self.n}")
        return self.pred.total_variance(), self.true.total_variance()

    def value(self) -> float:
        vp, vt = self.total_variances()
        return vp / vt if vt > 0 else float("nan")


@torch.no_grad()
def evaluate_t(T: nn.Module, styles: torch.Tensor, coeffs: torch.Tensor, model: MorphableModel, batch: int = 500,
               progress: bool = False) -> dict:
    """Accuracy of a predictor ``T(s) -> [B, 257]`` against labels, in the space where each attribute is seen
    (:mod:`cddfm3d.face3d.measures`), over styles [N, D] and labels [N, 257], ``batch`` rows at a time.

    Returns ``n`` and, for each attribute a of ``ATTRIBUTES``:

    * ``ev_<a>``: explained variance of the attribute's features (1 - SSE / SST; 0 = the average face);
    * ``var_ratio_<a>``: total variance of the predicted features / the labels' (0 = collapsed to one face;
      goal 0.8-1.2);

    and ``angle_deg_pitch``, ``angle_deg_yaw``, ``angle_deg_roll``: mean absolute angle error in degrees, and
    ``pdc``: the mean squared coefficient error in units of the labels' std over these pairs. Goals:
    :data:`EV_GOALS`, :data:`VAR_RATIO_GOAL` (see :func:`check_goals`).

    Raises ``ValueError`` for fewer than 2 pairs or mismatched row counts."""
    if len(styles) != len(coeffs) or len(styles) < 2:
        raise ValueError(f"evaluate_t: need as many style rows as coefficient rows (>= 2), found {len(styles)} and "
                         f"{len(coeffs)}")
    dev = device_of(T)
    fdev = model.mean_shape.device
    ev = {a: ExplainedVariance() for a in ATTRIBUTES}
    vr = {a: VarianceRatio() for a in ATTRIBUTES}
    angle_sum = torch.zeros(3, dtype=torch.float64)
    label_std = coeffs.double().std(0).clamp_min(1e-12).cpu()     # the squared errors are summed on the CPU
    sq = 0.0
    for i in progress_bar(range(0, len(styles), batch), unit="batch", desc="evaluate_t", enabled=progress):
        pred = T(styles[i:i + batch].to(dev).float()).to(fdev).float()
        y = coeffs[i:i + batch].to(fdev).float()
        for a in ATTRIBUTES:
            fp, fy = attribute_features(model, pred, a), attribute_features(model, y, a)
            ev[a].update(fp, fy)
            vr[a].update(fp, fy)
        ang = SLICES["angle"]
        angle_sum += (pred[:, ang] - y[:, ang]).double().abs().rad2deg().sum(0).cpu()
        sq += float((((pred.double() - y.double()).cpu()) / label_std).square().sum())
    n = len(styles)
    out: dict = {"n": n}
    out.update({f"ev_{a}": acc.value() for a, acc in ev.items()})
    out.update({f"var_ratio_{a}": acc.value() for a, acc in vr.items()})
    out.update({f"angle_deg_{name}": float(angle_sum[k]) / n for k, name in enumerate(ANGLE_NAMES)})
    out["pdc"] = sq / (n * N_COEFFS)
    return out


def check_goals(report: dict) -> dict[str, bool]:
    """``{"ev_<a>": met, "var_ratio_<a>": met}`` for each attribute: EV >= :data:`EV_GOALS` and the variance ratio
    within :data:`VAR_RATIO_GOAL`."""
    lo, hi = VAR_RATIO_GOAL
    out = {}
    for a in ATTRIBUTES:
        out[f"ev_{a}"] = bool(report[f"ev_{a}"] >= EV_GOALS[a])
        out[f"var_ratio_{a}"] = bool(lo <= report[f"var_ratio_{a}"] <= hi)
    return out


__all__ = ["TTrainConfig", "TTrainer", "train_t", "evaluate_t", "check_goals", "split_indices", "warmup_cosine",
           "labels_sha256", "VarianceRatio", "EV_GOALS", "VAR_RATIO_GOAL", "EXPORT_FILE"]
