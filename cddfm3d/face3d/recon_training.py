"""Training and evaluating a reconstruction network on renders with known coefficients.

Supervision (available only because the data is rendered from coefficients we know):

* coefficient loss: squared error of each coefficient in units of its prior standard deviation (so the 257
  outputs are on one scale whatever their group);
* landmark loss: Deep3D-weighted squared distance of the 68 projected landmarks, in pixels of the image;
* photometric loss: Deep3D's masked colour distance between the re-rendered prediction and the input;
* attribute losses (``attribute_weights``, off by default): for each attribute, the squared distance of its
  features (:mod:`cddfm3d.face3d.measures`: identity / expression vertex parts, albedo colours, SH irradiance,
  angles) divided by their variance over the training coefficients (:func:`attribute_scale`), i.e. a batch
  estimate of 1 - explained variance in the space where the attribute is seen, as 3DDFA's VDC is for vertices.

Resumable like every trainer here (:mod:`cddfm3d.training`): the full state (network, optimizer, step, every
random state) is saved atomically every ``checkpoint_every`` steps and when the run is interrupted, and a second
call continues exactly where it stopped.

Fine-tuning: a run can start from the weights of another network of the same architecture (``init``, e.g. the
shipped ``mini/recon`` on renders of a changed world) with a fresh optimizer and learning-rate schedule. The start
file's path and its state sha256 are kept in the checkpoint (``init_file``, ``init_sha256``): a resume cannot
silently switch starts, and shipping checks that the file still holds that start before it records how the start
was made (:func:`cddfm3d.world.ship.init_provenance`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from ..progress import progress_bar

from ..images import from_uint8, to_range
from ..serialization import state_sha256
from ..training import ScheduledRun, config_differences
from .losses import landmark_loss, photometric_loss
from .measures import ATTRIBUTES, ExplainedVariance, attribute_features, coefficient_scale
from .morphable import SLICES, MorphableModel
from .recon import ReconNet
from .render import render


@dataclass
class ReconTrainConfig:
    image_size: int = 64
    width: int = 16
    norm: str = "batch"
    batch_size: int = 32
    photo_batch: int = 16          # images of each batch that are re-rendered for the photometric loss (cost)
    steps: int = 4000
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    w_coeff: float = 1.0
    w_landmark: float = 0.05
    w_photo: float = 2.0
    noise_std: float = 0.02        # Gaussian pixel noise on inputs (robustness to generator artefacts)
    checkpoint_every: int = 250
    seed: int = 0
    # weights of the losses in the space where each attribute is seen ({"shape": 1.0, ...}; see attribute_scale)
    attribute_weights: dict = field(default_factory=dict)


@torch.no_grad()
def attribute_scale(model: MorphableModel, coeffs: torch.Tensor, n: int = 2000) -> torch.Tensor:
    """Per-sample total variance [5] of each attribute's features (order ``ATTRIBUTES``) over the first ``n`` rows
    of a coefficient sample: the mean over samples of sum_k (f_k - mean_k)^2. An attribute loss divided by it is a
    batch estimate of 1 - explained variance (0: exact, 1: as good as predicting the average face)."""
    if len(coeffs) < 2:
        raise ValueError(f"attribute_scale: need at least 2 coefficient rows, found {len(coeffs)}")
    c = coeffs[:n].to(model.mean_shape)
    out = []
    for a in ATTRIBUTES:
        f = attribute_features(model, c, a).double()
        out.append(float((f - f.mean(0)).square().sum(1).mean()))
    return torch.tensor(out).clamp_min(1e-12).float()


class ReconTrainer(ScheduledRun):
    """Trains ``ReconNet("small")`` on ``(images [-1, 1], coeffs)`` pairs (see the module docstring) on the shared
    resumable run: the network, its optimizer and the batch generator are the run's named state, the coefficient
    scale is extra state, the export is ``recon.safetensors``.

    ``init``: start weights, the path of a ``ReconNet.save`` file (recorded as ``init_file``, as given: relative
    paths are relative to the working directory, and ``ship-mini`` must run in the same one) or a
    :class:`~.recon.ReconNet` (recorded by its state sha256 only, which ship refuses); loaded here, and replaced by
    the checkpoint's weights when the run resumes. Raises ``ValueError`` for an init of another architecture (any
    field of the run's network config: ``backbone``, ``image_size``, ``width``, ``n_stages``, ``norm``,
    ``input_range``), and on resume for a checkpoint that started from other weights than the init given (or from
    none); ``FileNotFoundError`` / ``ReconCheckpointError`` for a missing or unreadable file."""

    name = "train-recon"
    export_file = "recon.safetensors"
    arch_keys = ("image_size", "width", "norm")

    def __init__(self, config: ReconTrainConfig, model: MorphableModel, coeff_scale: torch.Tensor, out_dir,
                 device=None, attr_scale: torch.Tensor | None = None, init: ReconNet | str | Path | None = None):
        bad = {a: w for a, w in config.attribute_weights.items()
               if a not in ATTRIBUTES or isinstance(w, bool) or not isinstance(w, (int, float))
               or not math.isfinite(w) or w < 0}
        if bad:
            raise ValueError(f"ReconTrainConfig.attribute_weights: expected {{attribute: weight >= 0}} with "
                             f"attributes from {ATTRIBUTES}, found {bad}")
        if any(config.attribute_weights.values()) and attr_scale is None:
            raise ValueError("ReconTrainer: attribute_weights need attr_scale (attribute_scale(model, coeffs))")
        super().__init__(config, out_dir, device)
        torch.manual_seed(config.seed)
        self.fm = model.to(self.device)
        self.net = ReconNet("small", image_size=config.image_size, width=config.width, norm=config.norm,
                            input_range="-1_1").to(self.device)
        self.scale = coeff_scale.to(self.device)
        self.attr_scale = (torch.ones(len(ATTRIBUTES)) if attr_scale is None else attr_scale).to(self.device)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.rng = torch.Generator().manual_seed(config.seed)
        self.track(net=self.net, opt=self.opt, rng=self.rng)
        self._data: tuple[torch.Tensor, torch.Tensor] | None = None
        self.init_file = str(init) if isinstance(init, (str, Path)) else None
        self.init_sha256 = self._given_init_sha256 = None
        if init is not None:      # a resumed run overwrites these weights with its checkpoint's
            start = ReconNet.load(init) if isinstance(init, (str, Path)) else init
            self._check_init(start)
            self.net.load_state_dict(start.state_dict())
            self.init_sha256 = self._given_init_sha256 = state_sha256(self.net)   # the weights as trained (float32)

    def _check_init(self, init: ReconNet) -> None:
        if not isinstance(init, ReconNet):
            raise ValueError(f"ReconTrainer: init must be a ReconNet or the path of its file, found "
                             f"{type(init).__name__}")
        diff = config_differences(self.net.config, init.config)
        if diff:
            raise ValueError(f"ReconTrainer: {self.init_file or 'init'} differs from this run's network in {diff}")

    # ----------------------------------------------------------- run state
    def extra_state(self) -> dict:
        out = {"scale": self.scale.cpu(), "attr_scale": self.attr_scale.cpu()}
        if self.init_sha256 is not None:
            out["init_sha256"] = self.init_sha256
        if self.init_file is not None:
            out["init_file"] = self.init_file
        return out

    def load_extra_state(self, state: dict) -> None:
        init = self.resumed_start(state, self._given_init_sha256)
        self.scale = state["scale"].to(self.device)
        if "attr_scale" in state:   # (absent in checkpoints written before the attribute losses)
            self.attr_scale = state["attr_scale"].to(self.device)
        self.init_sha256, self.init_file = init

    # ----------------------------------------------------------- one iteration
    def losses(self, images: torch.Tensor, target: torch.Tensor) -> dict:
        cfg = self.cfg
        pred = self.net(images, check=False)  # inputs carry training noise on purpose
        coeff = (((pred - target) / self.scale) ** 2).mean()
        out_p = self.fm(pred, image_size=cfg.image_size, check=False)
        with torch.no_grad():
            lm_target = self.fm(target, image_size=cfg.image_size, check=False).landmarks
        lm = landmark_loss(out_p.landmarks, lm_target)
        k = min(cfg.photo_batch, len(images))
        if k > 0:
            rendered, mask = render(out_p.mesh[:k], size=cfg.image_size, supersample=1, clamp=False)
            photo = photometric_loss(rendered, (images[:k] + 1) / 2, mask)
        else:   # photo_batch 0: no photometric term (nothing rendered)
            photo = pred.new_zeros(())
        total = cfg.w_coeff * coeff + cfg.w_landmark * lm + cfg.w_photo * photo
        terms = dict(coeff=coeff, landmark=lm, photo=photo)
        for i, a in enumerate(ATTRIBUTES):
            w = cfg.attribute_weights.get(a, 0.0)
            if w > 0:   # batch estimate of 1 - explained variance in the attribute's space
                d = attribute_features(self.fm, pred, a) - attribute_features(self.fm, target, a)
                terms[f"attr_{a}"] = d.square().sum(1).mean() / self.attr_scale[i]
                total = total + w * terms[f"attr_{a}"]
        return dict(total=total, **terms)

    def train_step(self) -> dict:
        cfg = self.cfg
        images_u8, coeffs = self._data
        idx = torch.randint(len(images_u8), (cfg.batch_size,), generator=self.rng)
        x = from_uint8(images_u8[idx].to(self.device))
        x = x + torch.randn(x.shape, generator=self.rng).to(x) * cfg.noise_std
        y = coeffs[idx].to(self.device, torch.float32)
        self.apply_lr(self.opt)
        terms = self.losses(x, y)
        self.opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        self.opt.step()
        return {k: float(v.detach()) for k, v in terms.items()}

    def train(self, images_u8: torch.Tensor, coeffs: torch.Tensor, progress: bool = True,
              max_steps: int | None = None) -> dict:
        """``images_u8`` [N, 3, S, S] uint8 and ``coeffs`` [N, 257]; trains until ``cfg.steps``."""
        if len(images_u8) == 0 or len(images_u8) != len(coeffs):
            raise ValueError(f"train: need as many images as coefficient rows (>0), found {len(images_u8)} "
                             f"and {len(coeffs)}")
        self._data = (images_u8, coeffs)
        return self.run_in_train_mode(self.net, snapshot_every=self.cfg.checkpoint_every, progress=progress,
                                      max_steps=max_steps)


def train_recon(images_u8: torch.Tensor, coeffs: torch.Tensor, config: ReconTrainConfig, out_dir,
                model: MorphableModel | None = None, device=None, resume: bool = True, progress: bool = True,
                max_steps: int | None = None, stop_at_step: int | None = None,
                command: list[str] | None = None, init: ReconNet | str | Path | None = None) -> ReconTrainer:
    """Train (or resume) a small ReconNet; writes ``out_dir/{checkpoint.pt, recon.safetensors, log.json}``.
    ``stop_at_step`` ends the run at that absolute step (the learning-rate schedule stays that of ``steps``);
    ``init``: start weights (:class:`ReconTrainer`)."""
    fm = model or MorphableModel.mini()
    attr = attribute_scale(fm, coeffs) if any(config.attribute_weights.values()) else None
    trainer = ReconTrainer(config, fm, coefficient_scale(coeffs), out_dir, device, attr_scale=attr, init=init)
    trainer.start(resume, stop_at_step, command)
    trainer.train(images_u8, coeffs, progress=progress, max_steps=max_steps)
    return trainer


# ------------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate_recon(net: nn.Module, model: MorphableModel, images: torch.Tensor, coeffs: torch.Tensor | None = None,
                   batch: int = 256, progress: bool = False) -> dict:
    """Metrics of ``net`` on images [N, 3, S, S] in [-1, 1] (float, or uint8 in [0, 255]); ``progress`` shows a
    tqdm bar over the batches. ``net`` is a :class:`ReconNet` taking [-1, 1] images (or a module whose
    ``forward(images, check=False)`` returns [B, 257]); its per-batch value scan is skipped.

    Always: ``photometric`` -- Deep3D's masked colour distance (0-1 RGB units) between each image and the
    render of its predicted coefficients, averaged over images. With ground-truth ``coeffs`` also:
    ``landmark_px`` (mean 68-landmark distance in pixels), per-group coefficient RMSE ``rmse_<group>`` (id, exp,
    tex, gamma in coefficient units; ``angle_deg`` mean absolute angle error per axis; ``trans`` RMSE in dm), and
    per-group ``r2_<group>`` = 1 - SSE / SST, the fraction of the coefficients' variance (around the evaluation
    set's mean) that the predictions explain: 0 is no better than always predicting the average face; and the
    same explained variance in the space where each attribute is seen (:mod:`cddfm3d.face3d.measures`), which is
    what matters, because most components barely move the face: ``ev_shape`` (identity part of the vertex
    positions), ``ev_expression`` (expression part), ``ev_albedo`` (per-vertex albedo colour), ``ev_light`` (SH
    irradiance over camera-facing normals), ``ev_pose`` (angles).
    """
    if len(images) == 0:
        raise ValueError("evaluate_recon: no images")
    size = images.shape[-1]
    dev = next(net.parameters()).device
    sums: dict[str, float] = {}
    r2 = {g: ExplainedVariance() for g in GROUPS + ("angle",)}
    ev = {a: ExplainedVariance() for a in ATTRIBUTES}
    n = len(images)
    for i in progress_bar(range(0, n, batch), unit="batch", desc="evaluate_recon", enabled=progress):
        x = images[i:i + batch]
        x = to_range(x, "-1_1").to(dev)
        pred = net(x, check=False).float()
        out_p = model(pred, image_size=size, check=False)
        rendered, mask = render(out_p, size=size, supersample=2)
        per_image = [float(photometric_loss(rendered[k:k + 1], (x[k:k + 1] + 1) / 2, mask[k:k + 1]))
                     for k in range(len(x))]
        _acc(sums, "photometric", sum(per_image))
        if coeffs is not None:
            y = coeffs[i:i + batch].to(dev).float()
            lm_t = model(y, image_size=size, check=False).landmarks
            _acc(sums, "landmark_px", float((out_p.landmarks - lm_t).norm(dim=-1).mean(1).sum()))
            for g in GROUPS:
                _acc(sums, f"sq_{g}", float(((pred[:, SLICES[g]] - y[:, SLICES[g]]) ** 2).mean(1).sum()))
            for g in r2:
                r2[g].update(pred[:, SLICES[g]], y[:, SLICES[g]])
            for a in ATTRIBUTES:
                ev[a].update(attribute_features(model, pred, a), attribute_features(model, y, a))
            ang = (pred[:, SLICES["angle"]] - y[:, SLICES["angle"]]).abs().rad2deg()
            for k, name in enumerate(("pitch", "yaw", "roll")):
                _acc(sums, f"angle_deg_{name}", float(ang[:, k].sum()))
    out = {"n": n, "photometric": sums["photometric"] / n}
    if coeffs is not None:
        out["landmark_px"] = sums["landmark_px"] / n
        for g in GROUPS:
            out[f"rmse_{g}"] = math.sqrt(sums[f"sq_{g}"] / n)
        out.update({f"r2_{g}": acc.value() for g, acc in r2.items()})
        out.update({f"ev_{a}": acc.value() for a, acc in ev.items()})
        for name in ("pitch", "yaw", "roll"):
            out[f"angle_deg_{name}"] = sums[f"angle_deg_{name}"] / n
    return out


GROUPS = ("id", "exp", "tex", "gamma", "trans")


def _acc(sums: dict, key: str, value) -> None:
    sums[key] = sums.get(key, 0.0) + value
