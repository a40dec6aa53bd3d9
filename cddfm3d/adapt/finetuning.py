"""Latent-consistent fine-tuning of a StyleGAN2 generator to another image domain (CDDFM3D §3.4).

The paper adapts the human-face generator to an out-of-domain style (cartoons, paintings) by fine-tuning it on the
new images **with the mapping network and every modulation affine layer frozen**. Then ``w -> s`` is the same
function in both generators, so a StyleSpace vector ``s`` (and everything learnt on it: the attribute predictor T,
the layer sets, the editing networks F^i) means the same face in both, and only how ``s`` is drawn changes. (The
official code does otherwise: it trains every weight, and its FreezeG path crashes; see
``../shared/reference/cddfm3d_method.md`` §7.)

Freeze modes (:data:`FREEZE_MODES`):

* ``"affine"`` (the paper, default): the mapping network and all affines (convolution and tRGB layers) are frozen;
  every synthesis weight, bias, noise strength and the constant input train.
* ``"freeze-g"``: also the lowest ``freeze_g_blocks`` synthesis blocks (the constant input with them) are frozen
  (FreezeG, Kim 2020: coarse structure kept, textures adapted). With ``train_rgb`` the frozen blocks' tRGB layers
  (their 1x1 colour projections and biases, not their affines) still train: in StyleGAN2's skip generator every
  block adds its own tRGB image, so a style with other colours (a grey pencil sketch) needs them, while the frozen
  convolutions keep the face's geometry. Still latent-consistent: ``w -> s`` is untouched.
* ``"none"``: train everything, as the official code does; an ablation that breaks the shared ``w -> s``.

Training is StyleGAN2's (:class:`cddfm3d.stylegan2.training.GANTrainer`: non-saturating loss, lazy R1, EMA,
mixing, ADA-style augmentation for small sets) on the shared resumable run base, from the weights of the human
generator (``init_generator``, required) and a fresh or given discriminator (``init_discriminator``), with a
discriminator-only warm-up. ``n_images`` fine-tunes from the first N images of the domain's set (the paper's
domains are small collections).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, Subset

from ..stylegan2.generator import Generator
from ..stylegan2.training import GANTrainer, TrainConfig

FREEZE_MODES = ("affine", "freeze-g", "none")


def frozen_parameter_names(G: Generator, freeze: str = "affine", freeze_g_blocks: int = 0,
                           train_rgb: bool = False) -> list[str]:
    """Names of ``G``'s parameters (``G.named_parameters()``) that fine-tuning mode ``freeze`` keeps fixed.

    ``"affine"``: ``mapping_network.*`` and every ``*.affine.*`` (the ``w -> s`` map, tRGB affines included).
    ``"freeze-g"``: those and the synthesis blocks of the ``freeze_g_blocks`` lowest resolutions (4, 8, ... px;
    the constant input with the 4-px block), less their tRGB weights and biases when ``train_rgb``. ``"none"``:
    nothing. Raises ``ValueError`` for an unknown mode, a block count outside [1, number of blocks] with
    ``"freeze-g"``, or a non-zero block count or ``train_rgb`` with another mode."""
    if freeze not in FREEZE_MODES:
        raise ValueError(f"freeze must be one of {FREEZE_MODES}, found {freeze!r}")
    if freeze != "freeze-g" and (freeze_g_blocks or train_rgb):
        raise ValueError(f"freeze_g_blocks is {freeze_g_blocks!r} and train_rgb {train_rgb!r}: they apply only with "
                         f"freeze='freeze-g', found freeze={freeze!r}")
    names = [n for n, _ in G.named_parameters()]
    if freeze == "none":
        return []
    frozen = [n for n in names if n.startswith("mapping_network.") or ".affine." in n]
    if freeze == "freeze-g":
        resolutions = sorted({int(n.split(".")[1][1:]) for n in names
                              if n.startswith("synthesis_network.b") and n.split(".")[1][1:].isdigit()})
        k = freeze_g_blocks
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(resolutions):
            raise ValueError(f"freeze_g_blocks must be an int in [1, {len(resolutions)}] (the generator's blocks "
                             f"{resolutions}) with freeze='freeze-g', found {k!r}")
        prefixes = tuple(f"synthesis_network.b{r}." for r in resolutions[:k]) + ("synthesis_network.const",)
        frozen += [n for n in names if n.startswith(prefixes) and n not in frozen
                   and not (train_rgb and ".torgb." in n)]
    return frozen


def latent_inconsistency(G_base: Generator, G: Generator) -> list[str]:
    """Names of the ``w -> s`` tensors (mapping network, affines, the mapping's ``w_avg``) in which ``G``
    differs from ``G_base`` at all (bitwise). Empty means both generators turn every w into the same flat
    StyleSpace vector s, the paper's latent consistency. Raises ``ValueError`` when the architectures differ."""
    if G_base.config != G.config:
        raise ValueError(f"latent_inconsistency: architectures differ ({G_base.config} vs {G.config})")
    theirs = G.state_dict()
    return [k for k, v in G_base.state_dict().items()
            if (k.startswith("mapping_network.") or ".affine." in k) and not torch.equal(v, theirs[k])]


@dataclass
class FinetuneConfig(TrainConfig):
    """:class:`~cddfm3d.stylegan2.training.TrainConfig` plus what fine-tuning adds. ``init_generator`` (the human
    generator's file) is required; ``freeze``/``freeze_g_blocks``/``train_rgb`` as :func:`frozen_parameter_names`;
    ``n_images``: train on the first N images of the dataset only (``None``: all). Defaults differ from train-gan
    where fine-tuning needs it: a 200-step discriminator warm-up (a fresh D must first tell the domains apart) and
    ADA, whose probability stays at 0 while D does not overfit."""

    freeze: str = "affine"
    freeze_g_blocks: int = 0
    train_rgb: bool = False
    n_images: int | None = None
    d_warmup_steps: int = 200
    augment: str = "ada"


class FinetuneTrainer(GANTrainer):
    """The GAN trainer with G's frozen parameters (:func:`frozen_parameter_names`) left out of the optimizer and
    the EMA. Exports ``generator.safetensors`` (the EMA generator, full) and ``discriminator.safetensors``."""

    name = "finetune"
    arch_keys = GANTrainer.arch_keys + ("freeze", "freeze_g_blocks", "train_rgb", "n_images")

    def __init__(self, config: FinetuneConfig, out_dir, device=None):
        if not config.init_generator:
            raise ValueError("finetune: init_generator (the generator to adapt) is required")
        if config.n_images is not None and (isinstance(config.n_images, bool) or int(config.n_images) < 1):
            raise ValueError(f"finetune: n_images must be a positive int or None, found {config.n_images!r}")
        super().__init__(config, out_dir, device)

    def frozen_generator_parameters(self) -> list[str]:
        return frozen_parameter_names(self.G, self.cfg.freeze, self.cfg.freeze_g_blocks, self.cfg.train_rgb)

    def train(self, dataset: Dataset, progress: bool = True, max_steps: int | None = None) -> dict:
        n = self.cfg.n_images
        if n is not None:
            if n > len(dataset):
                raise ValueError(f"finetune: n_images is {n}, the dataset holds only {len(dataset)} images")
            dataset = Subset(dataset, range(n))
        return super().train(dataset, progress=progress, max_steps=max_steps)


def finetune(dataset: Dataset, config: FinetuneConfig, out_dir, device=None, resume: bool = True,
             progress: bool = True, max_steps: int | None = None, stop_at_step: int | None = None,
             command: list[str] | None = None) -> FinetuneTrainer:
    """Fine-tune (or resume fine-tuning) ``config.init_generator`` on ``dataset`` (image tensors in [-1, 1], or
    tuples starting with one) into ``out_dir`` (``checkpoint.pt``, ``generator.safetensors``,
    ``discriminator.safetensors``, ``log.json``, ``commands.txt``). As
    :func:`cddfm3d.stylegan2.training.train_gan` otherwise."""
    trainer = FinetuneTrainer(config, out_dir, device).start(resume, stop_at_step, command)
    trainer.train(dataset, progress=progress, max_steps=max_steps)
    return trainer


__all__ = ["FREEZE_MODES", "FinetuneConfig", "FinetuneTrainer", "finetune", "frozen_parameter_names",
           "latent_inconsistency"]
