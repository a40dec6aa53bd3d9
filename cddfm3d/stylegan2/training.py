"""StyleGAN2 training: non-saturating logistic loss, lazy R1, EMA generator, style mixing, optional augmentation.

Resumable through the shared run base (:mod:`cddfm3d.training`): snapshots are atomic and hold the networks,
optimizer states, counters and every random state, so an interrupted run continues exactly where it stopped. Runs
on CUDA when given, on the CPU otherwise, and on several GPUs under ``torchrun`` (gradients are all-reduced across
ranks after every backward pass, i.e. data-parallel training).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..training import ResumableRun, allreduce_gradients
from .checkpoints import load_discriminator, load_generator, save_discriminator, save_generator
from .discriminator import Discriminator
from .generator import Generator


@dataclass
class TrainConfig:
    resolution: int = 64
    # The mini world's CPU-sized networks: 128 channels up to 16 px, then 64 at 32 px and 32 at 64 px (the
    # high-resolution layers dominate the cost; 2048 / 128 trains about 2x faster than 4096 / 128 on 2 cores).
    generator: dict = field(default_factory=lambda: dict(z_dim=128, w_dim=128, mapping_layers=4, channel_base=2048,
                                                         channel_max=128))
    discriminator: dict = field(default_factory=lambda: dict(channel_base=2048, channel_max=128))
    batch_size: int = 16
    lr: float = 0.002
    betas: tuple = (0.0, 0.99)
    r1_gamma: float = 0.1
    r1_every: int = 16
    ema_kimg: float = 10.0          # EMA half-life in thousands of images (rosinality: 0.5 ** (32 / 10000) per step)
    ema_rampup: float | None = 0.05  # half-life <= this fraction of images seen so far (NVIDIA's ramp-up)
    mixing_prob: float = 0.9
    augment: str = "none"           # "none" | "translate_flip" (x-flip and integer translations, applied to D inputs)
    #                                 | "ada" (adaptive discriminator augmentation, below)
    # ADA (Karras et al. 2020, "Training GANs with limited data"): each augmentation is applied to each D input with
    # probability p, and every ``ada_interval`` steps p moves by sign(r_t - ada_target) * (images in the interval) /
    # (ada_kimg * 1000), with r_t = E[sign(D(real))] over the interval; p starts at 0 and stays in [0, 1].
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 100.0
    total_kimg: float = 100.0
    snapshot_kimg: float = 5.0
    seed: int = 0
    # Fine-tuning: start weights (a generator / discriminator file any loader of stylegan2.checkpoints reads) and
    # discriminator-only warm-up steps (G frozen, EMA untouched) so that a fresh D does not push G around first.
    init_generator: str | None = None
    init_discriminator: str | None = None
    d_warmup_steps: int = 0


# ------------------------------------------------------------------------------------------------ helpers
AUGMENT_MODES = ("none", "translate_flip", "ada")


def augment(images: torch.Tensor, mode: str, generator: torch.Generator | None = None, p: float = 1.0) -> torch.Tensor:
    """Differentiable augmentation shared by real and fake D inputs ``images`` [B, C, H, W] in [-1, 1].

    ``"translate_flip"``: a random x-flip per image and one integer translation (up to H / 16, reflected border)
    for the batch. ``"ada"``: :func:`ada_augment` with probability ``p``. ``"none"``: the images themselves."""
    if mode == "none":
        return images
    if mode == "ada":
        return ada_augment(images, p, generator)
    if mode != "translate_flip":
        raise ValueError(f"unknown augmentation {mode!r} (expected one of {AUGMENT_MODES})")
    B, _, H, W = images.shape
    flip = torch.rand(B, 1, 1, 1, generator=generator).to(images.device) < 0.5
    images = torch.where(flip, images.flip(3), images)
    shift = max(1, H // 16)
    dx, dy = torch.randint(-shift, shift + 1, (2,), generator=generator).tolist()
    padded = F.pad(images, [shift] * 4, mode="reflect")
    return padded[:, :, shift + dy: shift + dy + H, shift + dx: shift + dx + W]


# ADA's default strengths (its "bgc" pipeline, reduced to the operations that keep a face a face): translation
# as a fraction of the image size, brightness as an additive std, contrast and saturation as log2 stds.
ADA_TRANSLATE, ADA_BRIGHTNESS, ADA_CONTRAST, ADA_SATURATION = 0.125, 0.2, 0.5, 1.0


def ada_augment(images: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """ADA-style augmentation (Karras et al. 2020): each of x-flip, integer translation (up to 1/8 of the size,
    reflected border), brightness (+N(0, 0.2)), contrast (x 2^N(0, 0.5) about the image mean) and saturation
    (x 2^N(0, 1) about the per-pixel grey) is applied to each image independently with probability ``p`` in
    [0, 1]. Differentiable in ``images`` (gradients reach G through it). Raises ``ValueError`` for ``p`` outside
    [0, 1]."""
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"ada_augment: p must be in [0, 1], found {p!r}")
    if p == 0:
        return images
    B, C, H, W = images.shape
    dev = images.device

    def chosen() -> torch.Tensor:
        return (torch.rand(B, generator=generator) < p).to(dev)

    def normal(std: float) -> torch.Tensor:
        return (torch.randn(B, generator=generator) * std).to(dev, images.dtype)

    flip = chosen()
    x = torch.where(flip[:, None, None, None], images.flip(3), images)
    use = chosen()
    shift = max(1, round(H * ADA_TRANSLATE))
    t = torch.randint(-shift, shift + 1, (2, B), generator=generator).to(dev) * use.long()
    padded = F.pad(x, [shift] * 4, mode="reflect")
    rows = (torch.arange(H, device=dev)[None, :] + shift + t[1][:, None])            # [B, H]
    cols = (torch.arange(W, device=dev)[None, :] + shift + t[0][:, None])            # [B, W]
    x = padded[torch.arange(B, device=dev)[:, None, None, None], torch.arange(C, device=dev)[None, :, None, None],
               rows[:, None, :, None], cols[:, None, None, :]]
    x = x + (normal(ADA_BRIGHTNESS) * chosen())[:, None, None, None]
    gain = torch.where(chosen(), torch.exp2(normal(ADA_CONTRAST)), torch.ones(B, device=dev, dtype=x.dtype))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * gain[:, None, None, None] + mean
    if C == 3:
        gain = torch.where(chosen(), torch.exp2(normal(ADA_SATURATION)), torch.ones(B, device=dev, dtype=x.dtype))
        grey = x.mean(dim=1, keepdim=True)
        x = (x - grey) * gain[:, None, None, None] + grey
    return x


def sample_ws(G: Generator, batch: int, mixing_prob: float, device, generator: torch.Generator) -> torch.Tensor:
    """W+ latents with style mixing: with probability ``mixing_prob`` the layers from a random cutoff on use a
    second z."""
    z = torch.randn(2, batch, G.z_dim, generator=generator).to(device)
    w = G.mapping_network(z.reshape(-1, G.z_dim)).reshape(2, batch, -1)
    ws = w[0].unsqueeze(1).repeat(1, G.num_ws, 1)
    if mixing_prob > 0:
        cut = torch.randint(1, G.num_ws, (batch,), generator=generator).to(device)
        use = (torch.rand(batch, generator=generator).to(device) < mixing_prob)
        layer = torch.arange(G.num_ws, device=device)[None, :]
        mask = (use[:, None] & (layer >= cut[:, None]))[..., None]
        ws = torch.where(mask, w[1].unsqueeze(1), ws)
    return ws


def _item(dataset: Dataset, i: int) -> torch.Tensor:
    x = dataset[i]
    return x[0] if isinstance(x, (tuple, list)) else x


# ------------------------------------------------------------------------------------------------ training
class GANTrainer(ResumableRun):
    """StyleGAN2 training on the shared resumable run (:class:`cddfm3d.training.ResumableRun`): G, D, the EMA
    generator, both optimizers and the batch/latent generator are the run's named state; the export is the EMA
    generator (``generator.safetensors``)."""

    name = "train-gan"
    arch_keys = ("resolution", "generator", "discriminator")

    def __init__(self, config: TrainConfig, out_dir, device=None):
        super().__init__(config, out_dir, device)
        torch.manual_seed(config.seed)
        self.G = Generator(config.resolution, **config.generator).to(self.device).train()
        self.D = Discriminator(config.resolution, **config.discriminator).to(self.device).train()
        self.G_ema = Generator(config.resolution, **config.generator).to(self.device).eval().requires_grad_(False)
        self.G_ema.load_state_dict(self.G.state_dict())
        if config.augment not in AUGMENT_MODES:
            raise ValueError(f"augment must be one of {AUGMENT_MODES}, found {config.augment!r}")
        frozen = set(self.frozen_generator_parameters())
        for name, param in self.G.named_parameters():
            param.requires_grad_(name not in frozen)
        ratio = config.r1_every / (config.r1_every + 1)  # lazy regularisation: rescale lr and betas
        self.opt_G = torch.optim.Adam([p for p in self.G.parameters() if p.requires_grad], lr=config.lr,
                                      betas=config.betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=config.lr * ratio,
                                      betas=tuple(b ** ratio for b in config.betas))
        self.images_seen = 0
        self.ada_p = 0.0                    # ADA's augmentation probability (augment="ada")
        self._ada_signs: list[float] = []   # sign(D(real)) means since the last adjustment
        self.rng = torch.Generator().manual_seed(config.seed + 1000 * self.rank)
        self.track(G=self.G, D=self.D, G_ema=self.G_ema, opt_G=self.opt_G, opt_D=self.opt_D, rng=self.rng)
        self._dataset: Dataset | None = None

    def start(self, resume: bool = True, stop_at_step: int | None = None,
              command: list[str] | None = None) -> GANTrainer:
        """As :meth:`ResumableRun.start`; a run that starts afresh (no checkpoint resumed) first loads the start
        weights of ``init_generator`` (into G and the EMA generator) and ``init_discriminator``, if set. A resumed
        run takes every weight from its checkpoint."""
        super().start(resume, stop_at_step, command)
        if self.step == 0:
            self._load_init()
        return self

    def _load_init(self) -> None:
        cfg = self.cfg
        for path, loader, targets, what in ((cfg.init_generator, load_generator, (self.G, self.G_ema), "generator"),
                                            (cfg.init_discriminator, load_discriminator, (self.D,), "discriminator")):
            if not path:
                continue
            src = loader(path)
            if src.config != targets[0].config:
                raise ValueError(f"init_{what} {path}: architecture {src.config} differs from the run's "
                                 f"{targets[0].config}")
            for module in targets:
                module.load_state_dict(src.state_dict())

    def frozen_generator_parameters(self) -> list[str]:
        """Names of G's parameters that this run does not train (none here; fine-tuning freezes some). They get
        no gradient and no optimizer state, and the EMA generator keeps them equal to G's."""
        return []

    def extra_state(self) -> dict:
        return {"images_seen": self.images_seen, "ada_p": self.ada_p, "ada_signs": list(self._ada_signs)}

    def load_extra_state(self, state: dict) -> None:
        self.images_seen = int(state["images_seen"])
        self.ada_p = float(state.get("ada_p", 0.0))
        self._ada_signs = [float(v) for v in state.get("ada_signs", [])]

    def export(self) -> None:
        save_generator(self.G_ema, self.out / "generator.safetensors")
        save_discriminator(self.D, self.out / "discriminator.safetensors")

    @property
    def total_steps(self) -> int:
        """Steps until ``total_kimg`` thousand images (all ranks together) have been shown."""
        return math.ceil(self.cfg.total_kimg * 1000 / self.cfg.batch_size)

    def progress_position(self) -> int:
        return self.images_seen

    def log_fields(self) -> dict:
        fields = {"kimg": self.images_seen / 1000}
        if self.cfg.augment == "ada":
            fields["ada_p"] = self.ada_p
        return fields

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        return augment(images, self.cfg.augment, self.rng, p=self.ada_p)

    def _adjust_ada(self, logits_real: torch.Tensor) -> None:
        """ADA's overfitting heuristic r_t = E[sign(D(real))]: every ``ada_interval`` steps p moves toward more
        augmentation when r_t > target and less when below, at a rate that crosses [0, 1] in ``ada_kimg``."""
        cfg = self.cfg
        sign = torch.sign(logits_real.detach()).mean()
        if self.world > 1:  # every rank adjusts p from the same all-rank mean, so the ranks keep one p
            torch.distributed.all_reduce(sign)
            sign = sign / self.world
        self._ada_signs.append(float(sign))
        if len(self._ada_signs) >= cfg.ada_interval:
            r_t = sum(self._ada_signs) / len(self._ada_signs)
            step = len(self._ada_signs) * cfg.batch_size / (cfg.ada_kimg * 1000)
            self.ada_p = min(1.0, max(0.0, self.ada_p + math.copysign(step, r_t - cfg.ada_target)))
            self._ada_signs = []

    # ----------------------------------------------------------- one iteration
    def d_step(self, real: torch.Tensor) -> dict:
        cfg = self.cfg
        B = real.shape[0]
        with torch.no_grad():
            fake = self.G.synthesis(sample_ws(self.G, B, cfg.mixing_prob, self.device, self.rng), noise="random")
        logits_fake = self.D(self._augment(fake))
        logits_real = self.D(self._augment(real))
        loss = F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean()
        stats = dict(loss_D=loss.item(), real_score=logits_real.mean().item(), fake_score=logits_fake.mean().item())
        if cfg.augment == "ada":
            self._adjust_ada(logits_real)
        if cfg.r1_gamma > 0 and self.step % cfg.r1_every == 0:
            real_r1 = real.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.D(self._augment(real_r1)).sum(), real_r1,
                                          create_graph=True)
            penalty = grad.square().sum(dim=[1, 2, 3]).mean()
            loss = loss + cfg.r1_gamma / 2 * penalty * cfg.r1_every
            stats["r1"] = penalty.item()
        self.opt_D.zero_grad(set_to_none=True)
        loss.backward()
        allreduce_gradients(self.D)
        self.opt_D.step()
        return stats

    def g_step(self, batch: int) -> dict:
        cfg = self.cfg
        fake = self.G.synthesis(sample_ws(self.G, batch, cfg.mixing_prob, self.device, self.rng), noise="random")
        loss = F.softplus(-self.D(self._augment(fake))).mean()
        self.opt_G.zero_grad(set_to_none=True)
        loss.backward()
        allreduce_gradients(self.G)
        self.opt_G.step()
        return dict(loss_G=loss.item())

    @torch.no_grad()
    def update_ema(self, batch_total: int) -> None:
        cfg = self.cfg
        half_life = cfg.ema_kimg * 1000
        if cfg.ema_rampup is not None:
            half_life = min(half_life, self.images_seen * cfg.ema_rampup)
        beta = 0.5 ** (batch_total / max(half_life, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
            if p.requires_grad:  # frozen parameters stay exactly equal to G's (and to the start weights)
                p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            b_ema.copy_(b)

    def train_step(self) -> dict:
        cfg, dataset = self.cfg, self._dataset
        per_rank = cfg.batch_size // self.world
        # batches are drawn from the saved generator, so a resumed run sees exactly the same data
        idx = torch.randint(len(dataset), (per_rank,), generator=self.rng).tolist()
        real = torch.stack([_item(dataset, i) for i in idx]).to(self.device, torch.float32)
        stats = self.d_step(real)
        self.images_seen += cfg.batch_size
        if self.step >= cfg.d_warmup_steps:
            stats.update(self.g_step(per_rank))
            self.update_ema(cfg.batch_size)
        return stats

    # ----------------------------------------------------------- loop
    def train(self, dataset: Dataset, progress: bool = True, max_steps: int | None = None) -> dict:
        """Train until ``total_kimg`` images (all ranks together) have been shown, or ``max_steps`` more steps."""
        cfg = self.cfg
        if cfg.batch_size % self.world:
            raise ValueError(f"batch size {cfg.batch_size} is not divisible by the number of processes {self.world}")
        if len(dataset) == 0:
            raise ValueError("the training dataset is empty")
        self._dataset = dataset
        snapshot = max(1, math.ceil(cfg.snapshot_kimg * 1000 / cfg.batch_size))
        done_before = self.step
        result = self.run_loop(snapshot_every=snapshot, progress=progress, max_steps=max_steps, unit="img",
                               scale=cfg.batch_size)
        kimg = (self.step - done_before) * cfg.batch_size / 1000
        return dict(step=self.step, kimg=self.images_seen / 1000, seconds=result["seconds"],
                    kimg_per_hour=kimg / max(result["seconds"], 1e-9) * 3600)


def train_gan(dataset: Dataset, config: TrainConfig, out_dir, device=None, resume: bool = True,
              progress: bool = True, max_steps: int | None = None, stop_at_step: int | None = None,
              command: list[str] | None = None) -> GANTrainer:
    """Train (or resume) a StyleGAN2 on ``dataset`` (items: image tensors in [-1, 1], or tuples starting with one).
    Writes ``out_dir/checkpoint.pt`` (full state), ``generator.safetensors`` (EMA generator),
    ``discriminator.safetensors`` and ``log.json``.
    ``stop_at_step`` ends the run at that absolute step (the schedule stays that of ``total_kimg``)."""
    trainer = GANTrainer(config, out_dir, device).start(resume, stop_at_step, command)
    trainer.train(dataset, progress=progress, max_steps=max_steps)
    return trainer


__all__ = ["TrainConfig", "GANTrainer", "train_gan", "augment", "ada_augment", "sample_ws", "AUGMENT_MODES"]
