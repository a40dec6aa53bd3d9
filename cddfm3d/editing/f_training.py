"""Training the latent manipulation network F^i of one attribute (``train-f``; ``cddfm3d_method.md`` §5).

The frozen attribute predictor T stands in, differentiably, for "generate the image, then reconstruct it". Each
step draws two halves of a batch of pairs, sources w and targets v, and with P = T(.) computes (the official
``modelsRig.py`` recipe, with the differences listed below)::

    s_hat  = F(w, P_v^i - P_w^i)                      edit w's attribute i toward v's
    P_hat  = T(s_hat)
    P_edit = P_v  with slice i from P_hat             "ce": must look like v's image
    P_cons = P_hat with slice i from P_w              "cc": must look like w's image (nothing else moved)

Losses (weights in :attr:`FTrainConfig.weights`, each term logged):

* ``rec``: F(w, 0) must not move: mean over the **edited** dimensions of ((F(w, 0) - w) / sigma_s)^2 (the
  official code averages over all of S, which dilutes the term by the share of S that is never edited);
* ``render``: ``loss_mode="render"``: Deep3D's masked photometric distance (:func:`~cddfm3d.face3d.losses.
  photometric_loss`) between the rasterised P_edit and v's image, and between P_cons and w's image, each masked by
  the render of the reference coefficients (P_v, P_w) as the official code does; ``loss_mode="param"`` (the fast
  variant, nothing rasterised): the same comparison per vertex, against the reconstruction network's labels of
  the two images (the pairs' ``coeffs``): mean over vertices of the lit-colour distance (RGB, the photometric
  distance's form) plus :data:`DENSE_GEOMETRY_WEIGHT` x the mean squared screen distance of the vertices
  (pixels);
* ``landmark``: the official 68-point loss on (P_edit vs P_v) and (P_cons vs P_w): [MSE of the mouth points 48-67
  + 20 x MSE of points 0-47] / 68, in pixels of the world's image size;
* ``edge`` (shape only): the official jaw-contour term, the mean squared distance of the 17 contour keypoints
  (0-16, x and y) of the canonical shape (before pose) of P_edit and P_v, in dm (x :data:`EDGE_SCALE` to bring it
  to the landmarks' pixel scale). The official code compares P_hat's canonical shape, whose expression is (and
  must stay) w's, with v's: it pulls the expression toward v's; P_edit carries P_hat's identity with v's
  expression, so only the shape is compared. The official second term has no gradient (both sides come from T on
  data) and is left out.

**Through the images** (``through="image"``, an option beyond the paper): ``P_hat`` is not T's prediction but the
reconstruction network's reading of the image the generator makes from ``s_hat`` (with the source's stored noise):
"generate, then reconstruct" itself, the quantity the evaluation measures, at the cost of a generator and network
pass per step. The references are then the reconstruction network's labels of the pairs' images (``labels``), not
T's predictions (P_w, P_v in ``P_edit`` / ``P_cons``, the landmark and edge references); T still gives the
editor's input ``delta = P_v^i - P_w^i``, as at inference with P_s = T(s) -- or, with ``delta_from="labels"``, the
labels give it (the editor then learns the deltas of P_s read from the source image, ``evaluate(...,
delta_readers=...)``; the network's input normalisation stays T's, so that ``--init`` networks fit, and the label
deltas are somewhat wider). Meant as a fine-tuning of a T-trained F^i (``init``); the independent evaluator, which
no training sees, tells a real gain from an edit that only pleases the reconstruction network. The labels must be
the network's readings of the **whole** images (``gen-pairs`` without self-alignment), the way image mode reads the
edited ones. The logged held-out evaluation stays T's view (below, T's deltas) in both modes, so in image mode it is
not what the run optimises.

``edit_weight`` weighs the edit half (``P_edit`` against v) of the ``render`` and ``landmark`` terms against the
consistency half (``P_cons`` against w): each term is (edit_weight x edit + consistency) / 2, the official recipe
at 1. The ``edge`` term (edit side only) is not scaled, so a larger edit weight makes it relatively smaller.

Differences from the official code, each one of its weak points (``cddfm3d_method.md`` §5, "weak points"): the
network writes only the attribute's layer set (:class:`~.manipulator.LatentManipulator`), standardises its
inputs and outputs; AdamW with a warm-up and cosine decay replaces SGD with momentum 0.99 and x0.01 steps; the
reconstruction term is not diluted; the run is resumable and torchrun-ready like every trainer
(:mod:`cddfm3d.training`): the network, optimizer and batch generator are the run's state.

During training, every ``eval_every`` steps the log gets T's view of the edit on held-out pairs (``completion_T``
= 1 - |P_hat^i - P_v^i| / |P_w^i - P_v^i| in the attribute's space, ``leakage_T`` = the other attributes' mean
distance moved, divided by their mean distance between two faces). The real evaluation reads the generated images
with reconstruction networks (:mod:`cddfm3d.editing.evaluation`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..face3d.losses import photometric_loss
from ..face3d.measures import ATTRIBUTE_GROUPS, ATTRIBUTES, attribute_distance
from ..face3d.morphable import N_COEFFS, SLICES, MorphableModel
from ..face3d.render import render
from ..images import from_uint8, to_range
from ..training import ScheduledRun, allreduce_gradients, config_differences
from .labels import project_landmarks
from .manipulator import ACTIVATIONS, LatentManipulator
from ..serialization import state_sha256
from .pairs import noise_for
from .t_training import labels_sha256, split_indices

EXPORT_FILE = "manipulator.safetensors"
LOSS_MODES = ("param", "render")
THROUGH = ("T", "image")
DELTA_FROM = ("T", "labels")
LOSS_TERMS = ("rec", "render", "landmark", "edge")
DEFAULT_WEIGHTS = {"rec": 1.0, "render": 10.0, "landmark": 0.05, "edge": 1.0}
MOUTH = slice(48, 68)
NON_MOUTH = slice(0, 48)
JAW = slice(0, 17)
LANDMARK_OTHER_WEIGHT = 20.0     # official: points 0-47 x 20, mouth x 1
DENSE_GEOMETRY_WEIGHT = 0.01     # param mode: per-vertex screen distance (px^2) next to the colour distance
EDGE_SCALE = 100.0               # dm^2 -> the order of px^2 at 64 px (about 29 px per dm at the face)
IMAGE_SIZE = 64                  # pixels of the landmark and screen distances without images: the mini world's size
STD_FLOOR = 1e-6
P_SCALE_FLOOR = 1e-3


@dataclass
class FTrainConfig:
    """Configuration of one F^i run.

    ``attribute``: one of :data:`ATTRIBUTES`; ``edit_layers``: its layer set (style-layer indices). ``batch_size``:
    pairs per step, split into sources and targets (even). ``activation``: ``None`` (linear, the paper) or one of
    :data:`~.manipulator.ACTIVATIONS` (the small-MLP option). ``loss_mode``: ``"param"`` or ``"render"`` (module
    docstring). ``render_batch``: images of each half rasterised per step in render mode (cost). ``weights``:
    {term: weight} over :data:`LOSS_TERMS` (missing terms take :data:`DEFAULT_WEIGHTS`; 0 removes a term).
    ``val_fraction``: share of the pairs held out for the logged T-view evaluation (``eval_every`` steps,
    ``eval_max`` pairs). ``through``: ``"T"`` (the paper: P_hat = T(s_hat)) or ``"image"`` (P_hat read from the
    generated image; module docstring). ``edit_weight``: weight (>= 0, finite) of the edit half of the render and
    landmark terms against the consistency half (module docstring). ``delta_from``: ``"T"`` (the editor's input
    delta from T's predictions, as the paper) or ``"labels"`` (from the labels; image mode only)."""

    attribute: str
    edit_layers: list
    steps: int = 1000
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup: int = 100
    code_dim: int = 32
    activation: str | None = None
    loss_mode: str = "param"
    render_batch: int = 8
    weights: dict = field(default_factory=dict)
    through: str = "T"
    edit_weight: float = 1.0
    delta_from: str = "T"
    val_fraction: float = 0.05
    eval_every: int = 250
    eval_max: int = 512
    checkpoint_every: int = 250
    seed: int = 0

    def __post_init__(self):
        if self.attribute not in ATTRIBUTES:
            raise ValueError(f"FTrainConfig.attribute: expected one of {ATTRIBUTES}, found {self.attribute!r}")
        for name in ("steps", "batch_size", "code_dim", "render_batch", "eval_every", "eval_max",
                     "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"FTrainConfig.{name} must be an int >= 1, found {v!r}")
        if self.batch_size % 2 or self.batch_size < 4:
            raise ValueError(f"FTrainConfig.batch_size must be even and >= 4 (sources and targets), found "
                             f"{self.batch_size}")
        if self.activation is not None and self.activation not in ACTIVATIONS:
            raise ValueError(f"FTrainConfig.activation must be None or one of {sorted(ACTIVATIONS)}, found "
                             f"{self.activation!r}")
        if self.through not in THROUGH:
            raise ValueError(f"FTrainConfig.through must be one of {THROUGH}, found {self.through!r}")
        if self.delta_from not in DELTA_FROM or (self.delta_from == "labels" and self.through != "image"):
            raise ValueError(f"FTrainConfig.delta_from must be one of {DELTA_FROM} ('labels' only with "
                             f"through='image', whose references are the labels), found {self.delta_from!r} with "
                             f"through={self.through!r}")
        if (isinstance(self.edit_weight, bool) or not isinstance(self.edit_weight, (int, float))
                or not 0 <= self.edit_weight < float("inf")):
            raise ValueError(f"FTrainConfig.edit_weight must be a finite number >= 0, found {self.edit_weight!r}")
        if self.loss_mode not in LOSS_MODES:
            raise ValueError(f"FTrainConfig.loss_mode must be one of {LOSS_MODES}, found {self.loss_mode!r}")
        bad = {k: v for k, v in self.weights.items() if k not in LOSS_TERMS or isinstance(v, bool)
               or not isinstance(v, (int, float)) or not 0 <= v < float("inf")}
        if bad:
            raise ValueError(f"FTrainConfig.weights: expected {{term: finite weight >= 0}} with terms from "
                             f"{LOSS_TERMS}, found {bad}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"FTrainConfig.val_fraction must be in (0, 1), found {self.val_fraction!r}")
        if not self.lr > 0 or not self.weight_decay >= 0:
            raise ValueError(f"FTrainConfig: lr must be > 0 and weight_decay >= 0, found {self.lr!r}, "
                             f"{self.weight_decay!r}")
        self.edit_layers = sorted(int(k) for k in self.edit_layers)

    def weight(self, term: str) -> float:
        w = float(self.weights.get(term, DEFAULT_WEIGHTS[term]))
        return 0.0 if term == "edge" and self.attribute != "shape" else w


def landmark_term(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The official landmark loss: [MSE(mouth 48-67) + 20 MSE(points 0-47)] / 68 for [B, 68, 2] pixels, where MSE
    is the mean over points, batch and x/y of the squared difference (``modelsRig.py``)."""
    d2 = (pred - target).square()
    return (d2[:, MOUTH].mean() + LANDMARK_OTHER_WEIGHT * d2[:, NON_MOUTH].mean()) / 68


def jaw_contour(model: MorphableModel, coeffs: torch.Tensor) -> torch.Tensor:
    """x, y [B, 17, 2] (dm) of the 17 jaw-contour keypoints (0-16) of the canonical shape (mean + identity +
    expression, before pose) of coefficients [B, 257], computed on those vertices only."""
    kp = model.keypoints[JAW]
    rows = (3 * kp[:, None] + torch.arange(3, device=kp.device)).reshape(-1)
    c = coeffs.to(model.mean_shape.dtype)
    shape = model.mean_shape[kp] + (c[:, :144] @ model.shape_base[rows].T).reshape(len(c), -1, 3)
    return shape[..., :2]


class FTrainer(ScheduledRun):
    """Trains one :class:`~.manipulator.LatentManipulator` (module docstring); export ``manipulator.safetensors``.

    Args:
        config: :class:`FTrainConfig`.
        T: the frozen attribute predictor, flat styles [B, D] -> [B, 257] (its parameters are not trained; a copy
            is kept in eval mode with gradients off).
        styles: flat styles [N, D] of the pairs; ``labels``: the reconstruction network's coefficients [N, 257] of
            their images; ``images``: the images [N, 3, S, S] uint8 (needed by ``loss_mode="render"``, else None).
        layer_channels: channels of every style layer (``[m.channels for m in G.style_layers]``).
        model: the 3DMM of the labels (default: the mini world's MiniFace).
        image_size: the side (pixels) in which the landmark and screen distances are measured: the images' side
            when ``images`` are given (it must then agree), else this, default :data:`IMAGE_SIZE` (the mini world's
            64 px; pass the pairs' resolution for another generator), so that both loss modes weigh the same
            distances.
        G, recon, noise_seeds: needed by ``through="image"`` (ignored otherwise): the generator of the pairs, the
            reconstruction network of their labels (both frozen; copies in eval mode without gradients; the
            network reads the whole generated image, so its ``image_size`` must be G's resolution) and the pairs'
            noise seeds [N] (ints; :func:`~.pairs.noise_for`).
        init: a :class:`~.manipulator.LatentManipulator`, or the path of its ``manipulator.safetensors`` (recorded in
            the checkpoint as ``init_file``, so that ``ship-f`` can list the commands of the run that made it), to
            start from (a fresh run only; a resumed run continues
            from its checkpoint): the same attribute, layer set, code size and activation, and the normalisation
            this trainer computes from the pairs and T (it must have been trained on them).

    Raises ``ValueError`` for inputs of mismatched shapes, a layer set outside the generator's layers, images
    missing in render mode, a batch larger than the training split, a missing or mismatched G, recon or noise
    seeds in image mode, and an ``init`` that is not a LatentManipulator or has another architecture or
    normalisation; on resume (``start``), a checkpoint of other pairs, another T, G or recon, or another init."""

    name = "train-f"
    export_file = EXPORT_FILE
    arch_keys = ("attribute", "edit_layers", "code_dim", "activation", "val_fraction", "seed", "through",
                 "delta_from")

    def __init__(self, config: FTrainConfig, T: torch.nn.Module, styles: torch.Tensor, labels: torch.Tensor,
                 layer_channels, out_dir, images: torch.Tensor | None = None, model: MorphableModel | None = None,
                 device=None, image_size: int | None = None, G=None, recon=None,
                 noise_seeds: torch.Tensor | None = None, init: LatentManipulator | str | Path | None = None):
        D = sum(int(c) for c in layer_channels)
        if not isinstance(styles, torch.Tensor) or styles.ndim != 2 or styles.shape[1] != D:
            found = tuple(styles.shape) if isinstance(styles, torch.Tensor) else type(styles).__name__
            raise ValueError(f"FTrainer: styles must be [N, {D}] (the layer table's flat styles), found {found}")
        if not isinstance(labels, torch.Tensor) or labels.shape != (len(styles), N_COEFFS):
            found = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"FTrainer: labels must be [{len(styles)}, {N_COEFFS}] (one row per style row), "
                             f"found {found}")
        if config.loss_mode == "render":
            if images is None:
                raise ValueError("FTrainer: loss_mode 'render' needs the pairs' images")
            if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[0] != len(styles) \
                    or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
                raise ValueError(f"FTrainer: images must be uint8 [{len(styles)}, 3, S, S], found "
                                 f"{images.dtype} {tuple(images.shape)}")
        if any(not 0 <= k < len(layer_channels) for k in config.edit_layers) or not config.edit_layers:
            raise ValueError(f"FTrainer: edit_layers {config.edit_layers} must be a non-empty subset of the "
                             f"{len(layer_channels)} style layers")
        super().__init__(config, out_dir, device)
        if config.batch_size % (2 * self.world):
            raise ValueError(f"batch size {config.batch_size} must split into two halves divisible by the "
                             f"number of processes {self.world}")
        self.train_idx, self.val_idx = split_indices(len(styles), config.val_fraction, config.seed)
        if config.batch_size // 2 > len(self.train_idx):
            raise ValueError(f"half a batch ({config.batch_size // 2}) is larger than the training split "
                             f"({len(self.train_idx)} pairs)")
        if model is None:
            from ..world.domains import mini_model

            model = mini_model(self.device)
        self.fm = model if model.mean_shape.device == self.device else copy.deepcopy(model).to(self.device)
        if images is not None and image_size is not None and int(image_size) != images.shape[-1]:
            raise ValueError(f"FTrainer: image_size {image_size} differs from the images' side {images.shape[-1]}")
        self.image_size = int(images.shape[-1]) if images is not None else int(image_size or IMAGE_SIZE)
        self.T = copy.deepcopy(T).to(self.device).eval().requires_grad_(False)
        self.styles = styles.float()
        self.labels = labels.float()
        # provenance, checked on resume and by ship-f: which pairs (their labels) and which T
        self.labels_sha256 = labels_sha256(self.labels)
        self.predictor_sha256 = state_sha256(self.T)
        self.images = images
        with torch.no_grad():   # T is frozen: its predictions of the pairs are computed once
            self.P = torch.cat([self.T(self.styles[i:i + 1024].to(self.device)).cpu()
                                for i in range(0, len(self.styles), 1024)])
        self.sl = SLICES[ATTRIBUTE_GROUPS[config.attribute]]
        tr = self.styles[self.train_idx]
        std = tr.std(0).clamp_min(STD_FLOOR)
        p_scale = self.P[self.train_idx][:, self.sl].std(0)
        p_scale = p_scale.clamp_min(P_SCALE_FLOOR * float(p_scale.max()) + 1e-12)
        torch.manual_seed(config.seed)
        self.net = LatentManipulator(config.attribute, layer_channels, config.edit_layers, style_mean=tr.mean(0),
                                     style_std=std, p_scale=p_scale, code_dim=config.code_dim,
                                     activation=config.activation).to(self.device)
        self.init_sha256 = self._given_init_sha256 = self.init_file = None
        if isinstance(init, (str, Path)):
            self.init_file = str(init)
            init = LatentManipulator.load(init, self.device)
        if init is not None:
            self._load_init(init)
        self.edited = self.net.net.edited_columns(self.device)
        self.G = self.recon = self.noise_seeds = None
        if config.through == "image":
            self._image_parts(G, recon, noise_seeds)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.rng = torch.Generator().manual_seed(config.seed)   # the same on every rank: one global batch
        self.track(net=self.net, opt=self.opt, rng=self.rng)

    def _load_init(self, init: LatentManipulator) -> None:
        """Start from ``init``'s weights (class docstring); records its state sha256."""
        if not isinstance(init, LatentManipulator):
            raise ValueError(f"FTrainer: init must be a LatentManipulator, found {type(init).__name__}")
        diff = config_differences(self.net.config, init.config)
        if diff:
            raise ValueError(f"FTrainer: init differs from this run's network in {diff}")
        own = self.net.state_dict()
        for key, value in init.state_dict().items():
            if key in own and not key.endswith(("weight", "bias")) and not torch.allclose(
                    value.to(own[key].device, own[key].dtype), own[key], rtol=1e-4, atol=1e-6):
                raise ValueError(f"FTrainer: init's normalisation {key!r} differs from the one computed from these "
                                 f"pairs and T: it was trained on other pairs or through another T")
        self.net.load_state_dict(init.state_dict())
        self.init_sha256 = self._given_init_sha256 = state_sha256(self.net)

    def _image_parts(self, G, recon, noise_seeds) -> None:
        """Frozen copies of G and the reconstruction network on the run's device, and the noise seeds (image mode)."""
        if G is None or recon is None or noise_seeds is None:
            raise ValueError("FTrainer: through='image' needs G, recon and noise_seeds (the pairs' generator, "
                             "reconstruction network and noise seeds)")
        seeds = torch.as_tensor(noise_seeds)
        if seeds.shape != (len(self.styles),) or seeds.is_floating_point():
            raise ValueError(f"FTrainer: noise_seeds must be [{len(self.styles)}] ints (one per pair), found "
                             f"{seeds.dtype} {tuple(seeds.shape)}")
        if sum(m.channels for m in G.style_layers) != self.styles.shape[1]:
            raise ValueError(f"FTrainer: G's style dimension {sum(m.channels for m in G.style_layers)} is not the "
                             f"pairs' {self.styles.shape[1]}")
        if int(recon.image_size) != int(G.resolution):
            raise ValueError(f"FTrainer: through='image' reads the whole generated image: the reconstruction "
                             f"network's image_size {recon.image_size} must be G's resolution {G.resolution}")
        self.G = copy.deepcopy(G).to(self.device).eval().requires_grad_(False)
        self.recon = copy.deepcopy(recon).to(self.device).eval().requires_grad_(False)
        self.noise_seeds = seeds.long()
        self.world_sha256 = {"generator_sha256": state_sha256(self.G), "recon_sha256": state_sha256(self.recon)}

    def read_edit(self, s_hat: torch.Tensor, w_rows: torch.Tensor) -> torch.Tensor:
        """P_hat [B, 257] of edited styles ``s_hat`` [B, D] of sources ``w_rows`` (indices of the pairs):
        T(s_hat), or (image mode) the reconstruction network's reading of G's image of ``s_hat`` on the sources'
        noise (:func:`~.pairs.noise_for`), clamped to [-1, 1] as the stored images are but not rounded to 8 bits
        as they are (rounding has no gradient; the difference is below one grey level), converted to the network's
        ``input_range``. G must offer ``unflatten_styles`` and ``synthesis_from_styles``, the network ``image_size``,
        ``input_range`` and ``forward(images, check=False)``."""
        if self.cfg.through == "T":
            return self.T(s_hat)
        noise = noise_for(self.G, self.noise_seeds[w_rows.cpu()], self.device)
        image = self.G.synthesis_from_styles(self.G.unflatten_styles(s_hat), noise=noise).clamp(-1, 1)
        return self.recon(to_range(image, self.recon.input_range), check=False)

    # ----------------------------------------------------------- run state
    def extra_state(self) -> dict:
        out = {"n_pairs": len(self.styles), "labels_sha256": self.labels_sha256,
               "predictor_sha256": self.predictor_sha256}
        if self.init_sha256 is not None:
            out["init_sha256"] = self.init_sha256
        if self.init_file is not None:
            out["init_file"] = self.init_file
        if self.G is not None:
            out.update(self.world_sha256)
        return out

    def load_extra_state(self, state: dict) -> None:
        again = ("use the same pairs, T (and G and recon), another output directory, or start afresh (--no-resume / "
                 "resume=False)")
        if int(state["n_pairs"]) != len(self.styles):
            raise ValueError(f"{self.checkpoint_path}: the checkpoint was trained on {int(state['n_pairs'])} pairs, "
                             f"{len(self.styles)} given; {again}")
        checked = [("labels_sha256", self.labels_sha256, "pairs"), ("predictor_sha256", self.predictor_sha256, "T")]
        if self.G is not None:
            checked += [("generator_sha256", self.world_sha256["generator_sha256"], "G"),
                        ("recon_sha256", self.world_sha256["recon_sha256"], "recon")]
        for key, now, what in checked:
            saved = state.get(key)
            if saved is not None and saved != now:
                raise ValueError(f"{self.checkpoint_path}: field {key!r} is {saved[:12]}... in the checkpoint, "
                                 f"{now[:12]}... given (other {what}); {again}")
        self.init_sha256, self.init_file = self.resumed_start(state, self._given_init_sha256)

    # ----------------------------------------------------------- losses
    def losses(self, w_rows: torch.Tensor, v_rows: torch.Tensor) -> dict:
        """The loss terms (module docstring) for source rows ``w_rows`` and target rows ``v_rows`` of the pairs."""
        cfg, dev, sl = self.cfg, self.device, self.sl
        s_w = self.styles[w_rows].to(dev)
        P_w, P_v = self.P[w_rows].to(dev), self.P[v_rows].to(dev)
        terms: dict[str, torch.Tensor] = {}
        std = self.net.net.style_std[self.edited]
        zero = torch.zeros(len(s_w), self.net.p_dim, device=dev)
        terms["rec"] = (self.net.offset(s_w, zero)[:, self.edited] / std).square().mean()
        if cfg.through == "image":      # the labels: the reconstruction network's readings of the images
            L_w, L_v = self.labels[w_rows].to(dev), self.labels[v_rows].to(dev)
        D_w, D_v = (L_w, L_v) if cfg.delta_from == "labels" else (P_w, P_v)
        s_hat = self.net(s_w, (D_v - D_w)[:, sl])
        P_hat = self.read_edit(s_hat, w_rows)
        if cfg.through == "image":      # ... are the references too
            P_w, P_v = L_w, L_v
        P_edit = torch.cat([P_v[:, :sl.start], P_hat[:, sl], P_v[:, sl.stop:]], 1)
        P_cons = torch.cat([P_hat[:, :sl.start], P_w[:, sl], P_hat[:, sl.stop:]], 1)
        size = self.image_size
        ew = float(cfg.edit_weight)
        out_e = self.fm(P_edit, image_size=size, check=False)
        out_c = self.fm(P_cons, image_size=size, check=False)
        if cfg.weight("render") > 0:
            if cfg.loss_mode == "render":
                terms["render"] = (ew * self._photo(out_e, P_v, v_rows) + self._photo(out_c, P_w, w_rows)) / 2
            else:
                terms["render"] = (ew * self._param(out_e, v_rows) + self._param(out_c, w_rows)) / 2
        with torch.no_grad():
            lm_v, lm_w = project_landmarks(self.fm, P_v, size), project_landmarks(self.fm, P_w, size)
        terms["landmark"] = (ew * landmark_term(out_e.landmarks, lm_v) + landmark_term(out_c.landmarks, lm_w)) / 2
        if cfg.weight("edge") > 0:
            hat = jaw_contour(self.fm, P_edit)   # P_v with P_hat's identity: the shape alone is compared
            with torch.no_grad():
                ref = jaw_contour(self.fm, P_v)
            terms["edge"] = EDGE_SCALE * (hat - ref).square().mean()
        total = sum(cfg.weight(k) * v for k, v in terms.items())
        return dict(total=total, **terms)

    def _photo(self, out, P_ref: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        k = min(self.cfg.render_batch, len(rows))
        rendered, _ = render(out.mesh[:k], size=self.image_size, supersample=1, clamp=False)
        with torch.no_grad():
            ref = self.fm(P_ref[:k], image_size=self.image_size, check=False)
            _, mask = render(ref.mesh, size=self.image_size, supersample=1, clamp=False)
        target = (from_uint8(self.images[rows[:k]].to(self.device)) + 1) / 2
        return photometric_loss(rendered, target, mask)

    def _param(self, out, rows: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ref = self.fm(self.labels[rows].to(self.device), image_size=self.image_size, check=False)
        colour = torch.sqrt(1e-6 + (out.colors - ref.colors).square().sum(-1)).mean()
        geometry = (out.screen[..., :2] - ref.screen[..., :2]).square().sum(-1).mean()
        return colour + DENSE_GEOMETRY_WEIGHT * geometry

    # ----------------------------------------------------------- one iteration
    def _draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's source and target rows of the next global batch (with replacement, as the official)."""
        half = self.cfg.batch_size // 2
        pick = torch.randint(len(self.train_idx), (2, half), generator=self.rng)
        w, v = self.train_idx[pick[0]], self.train_idx[pick[1]]
        per = half // self.world
        r = slice(self.rank * per, (self.rank + 1) * per)
        return w[r], v[r]

    def train_step(self) -> dict:
        cfg = self.cfg
        w_rows, v_rows = self._draw()
        self.apply_lr(self.opt)
        terms = self.losses(w_rows, v_rows)
        self.opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        allreduce_gradients(self.net)
        self.opt.step()
        stats = {k: float(v.detach()) for k, v in terms.items()}
        done = self.step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            self.log.append({"step": done, "val": self.evaluate(cfg.eval_max)})
        return stats

    @torch.no_grad()
    def evaluate(self, max_pairs: int | None = None) -> dict:
        """T's view of the edit on held-out pairs (module docstring): each held-out source edited toward the next
        one's attribute. Returns {"completion_T", "leakage_T": {other attribute: ratio}, "leakage_T_mean", "n"}."""
        idx = self.val_idx if max_pairs is None else self.val_idx[:max_pairs]
        if len(idx) < 2:
            return {"n": len(idx)}
        was = self.net.training
        self.net.eval()
        try:
            return t_view(self.net, self.T, self.styles[idx].to(self.device), self.fm)
        finally:
            self.net.train(was)

    def train(self, progress: bool = True, max_steps: int | None = None) -> dict:
        """Run until ``cfg.steps`` (or ``stop_at_step`` / ``max_steps`` more steps)."""
        return self.run_in_train_mode(self.net, snapshot_every=self.cfg.checkpoint_every, progress=progress,
                                      max_steps=max_steps)


@torch.no_grad()
def t_view(F: LatentManipulator, T, styles: torch.Tensor, model: MorphableModel) -> dict:
    """Completion and leakage of F's edits as T reads them, for sources ``styles`` [N >= 2, D] each edited toward
    the next one's (cyclically) attribute; distances of :func:`~cddfm3d.face3d.measures.attribute_distance`,
    ratios of means. T's view only (it is what F was trained against): the evaluation proper reads images."""
    a = F.attribute
    sl = SLICES[ATTRIBUTE_GROUPS[a]]
    P_s = T(styles)
    P_t = P_s.roll(-1, 0)
    P_g = T(F(styles, (P_t - P_s)[:, sl]))
    before = attribute_distance(model, P_s, P_t, a).mean()
    after = attribute_distance(model, P_g, P_t, a).mean()
    leak = {}
    for b in ATTRIBUTES:
        if b != a:
            moved = attribute_distance(model, P_g, P_s, b).mean()
            spread = attribute_distance(model, P_s, P_t, b).mean().clamp_min(1e-12)
            leak[b] = float(moved / spread)
    return {"completion_T": float(1 - after / before.clamp_min(1e-12)), "leakage_T": leak,
            "leakage_T_mean": sum(leak.values()) / len(leak), "n": len(styles)}


def train_f(config: FTrainConfig, T, styles: torch.Tensor, labels: torch.Tensor, layer_channels, out_dir,
            images: torch.Tensor | None = None, model: MorphableModel | None = None, device=None,
            resume: bool = True, progress: bool = True, max_steps: int | None = None,
            stop_at_step: int | None = None, command: list[str] | None = None,
            image_size: int | None = None, G=None, recon=None, noise_seeds: torch.Tensor | None = None,
            init: LatentManipulator | str | Path | None = None) -> FTrainer:
    """Train (or resume) F^i; writes ``out_dir/{checkpoint.pt, manipulator.safetensors, log.json}``. Returns the
    trainer (``trainer.net`` is F^i, ``trainer.evaluate()`` T's view of it on the held-out pairs). Arguments as
    :class:`FTrainer`."""
    trainer = FTrainer(config, T, styles, labels, layer_channels, out_dir, images, model, device, image_size,
                       G=G, recon=recon, noise_seeds=noise_seeds, init=init)
    trainer.start(resume, stop_at_step, command)
    trainer.train(progress=progress, max_steps=max_steps)
    return trainer
