"""Perceptual distances for projection: LPIPS-VGG when its ImageNet backbone is present, else the world's own.

Both are :class:`PerceptualDistance` modules with two calls, so that the target side is computed once per
projection: ``prepare(targets) -> features`` and ``distance(images, features) -> [B]`` (one value per image; images
in the generator's [-1, 1] range, [B, 3, H, W]).

* :class:`LPIPSDistance` -- LPIPS v0.1 with the VGG16 trunk (Zhang et al., CVPR 2018, "The Unreasonable
  Effectiveness of Deep Features as a Perceptual Metric"): the ``lpips`` package's calibrated linear layers (shipped
  inside that package) on torchvision's ImageNet VGG16 features. The VGG16 weights are the user-supplied asset
  ``real/vgg16`` (torch hub cache or configured path, :mod:`cddfm3d.assets.real`); the trunk is built with random
  weights and the file's ``features.*`` tensors are copied in, so nothing is ever downloaded. Image size: LPIPS was
  calibrated on 64 x 64 patches and the StyleGAN2 projectors evaluate it at 256 x 256; images smaller than
  ``min_size`` (64) are upsampled bilinearly to it, images larger than ``max_size`` (256) are area-downsampled to it
  (as NVIDIA's projector does), sizes in between are used as they are.
* :class:`ReconFeatureDistance` -- the world's distance: LPIPS's formula without learned weights ("baseline" LPIPS)
  on the multi-scale features of a face reconstruction network (for the mini world the shipped ``mini/recon``):
  at each tapped layer every spatial feature vector is divided by its norm over channels, the squared difference is
  summed over channels and averaged over positions, and the layers are summed. Images are resized to the network's
  input size (area down, bilinear up). Each layer term lies in [0, 4].

:func:`choose_perceptual` implements the automatic choice of :func:`cddfm3d.adapt.project`.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

VGG16_ASSET = "real/vgg16"
WORLD_RECON_ASSET = "mini/recon"
PERCEPTUAL_CHOICES = ("auto", "lpips", "recon")


def _unit_channels(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Each spatial feature vector divided by its L2 norm over channels (LPIPS's normalisation)."""
    return f / (f.square().sum(1, keepdim=True).sqrt() + eps)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    if x.shape[-1] > size:
        return F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


class PerceptualDistance(nn.Module):
    """Base class: ``prepare(targets)`` once, then ``distance(images, prepared)`` -> [B] per step.
    ``name`` says which distance it is (stored in the projection result)."""

    name = "perceptual"

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def prepare(self, targets: torch.Tensor) -> list[torch.Tensor]:
        """Target features (no gradient), to pass to :meth:`distance`."""
        with torch.no_grad():
            return [f.detach() for f in self.features(targets)]

    def distance(self, images: torch.Tensor, prepared: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Distance [B] between images and targets, both [B, 3, H, W] in [-1, 1]."""
        return self.distance(images, self.prepare(targets))


class ReconFeatureDistance(PerceptualDistance):
    """LPIPS without learned weights on a :class:`~cddfm3d.face3d.recon.ReconNet`'s multi-scale features.

    Taps: for the ``"small"`` backbone, the activation entering every stride-2 convolution and the last activation
    (5 maps at 64 px: 64, 32, 16, 8 and 4 px); for ``"resnet50"``, the stem's ReLU and the outputs of layer1-4.
    The network is put in eval mode (its batch norms must use their running statistics) and is not trained.
    ``name`` defaults to ``"recon-features"``; :func:`choose_perceptual` names it after the asset.
    """

    def __init__(self, net, name: str = "recon-features"):
        super().__init__()
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.name = name
        self.size = int(net.image_size)
        self.native_range = net.native_range

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = _resize(images, self.size)
        if self.native_range == "0_1":
            x = (x + 1.0) * 0.5
        bb = self.net.backbone
        taps = []
        if hasattr(bb, "features"):                      # SmallBackbone
            for m in bb.features:
                if isinstance(m, nn.Conv2d) and m.stride[0] == 2:
                    taps.append(x)
                x = m(x)
            taps.append(x)
        else:                                            # torchvision ResNet-50
            x = bb.relu(bb.bn1(bb.conv1(x)))
            taps.append(x)
            x = bb.maxpool(x)
            for layer in (bb.layer1, bb.layer2, bb.layer3, bb.layer4):
                x = layer(x)
                taps.append(x)
        return [_unit_channels(t) for t in taps]

    def distance(self, images: torch.Tensor, prepared: list[torch.Tensor]) -> torch.Tensor:
        total = 0.0
        for f, g in zip(self.features(images), prepared, strict=True):
            total = total + (f - g).square().sum(1).mean((1, 2))
        return total


class LPIPSDistance(PerceptualDistance):
    """LPIPS v0.1, VGG16 trunk, with the ImageNet VGG16 weights given as a torchvision state dict.

    Args:
        vgg_state: torchvision VGG16 state dict (``features.<i>.weight`` / ``.bias``; classifier keys ignored),
            e.g. ``cddfm3d.assets.load("real/vgg16")``.
        min_size, max_size: working-size range (see the module docstring).
        source: where the weights came from (for messages).

    Raises ValueError naming the key when a ``features`` tensor is missing or has another shape.
    """

    name = "lpips-vgg"

    def __init__(self, vgg_state: dict, min_size: int = 64, max_size: int = 256, source: str = VGG16_ASSET):
        super().__init__()
        import lpips

        with warnings.catch_warnings():  # lpips asks torchvision for vgg16(pretrained=False): deprecated keyword
            warnings.filterwarnings("ignore", message=".*(pretrained|weights).*", category=UserWarning)
            model = lpips.LPIPS(pretrained=True, net="vgg", pnet_rand=True, verbose=False)
        for k, block in enumerate((model.net.slice1, model.net.slice2, model.net.slice3, model.net.slice4,
                                   model.net.slice5)):
            for idx, m in block.named_children():
                if not isinstance(m, nn.Conv2d):
                    continue
                for attr in ("weight", "bias"):
                    key = f"features.{idx}.{attr}"
                    if key not in vgg_state:
                        raise ValueError(f"{source}: VGG16 weights lack '{key}' (LPIPS slice {k + 1})")
                    src, dst = vgg_state[key], getattr(m, attr)
                    if tuple(src.shape) != tuple(dst.shape):
                        raise ValueError(f"{source}: '{key}' has shape {list(src.shape)}, expected "
                                         f"{list(dst.shape)} (torchvision VGG16)")
                    with torch.no_grad():
                        dst.copy_(src.to(dst.dtype))
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.scaling = model.scaling_layer
        self.trunk = model.net
        self.lins = model.lins
        self.min_size, self.max_size = int(min_size), int(max_size)

    def working_size(self, size: int) -> int:
        """The size LPIPS is evaluated at for images of side ``size``."""
        return min(max(size, self.min_size), self.max_size)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = _resize(images, self.working_size(images.shape[-1]))
        return [_unit_channels(f) for f in self.trunk(self.scaling(x))]

    def distance(self, images: torch.Tensor, prepared: list[torch.Tensor]) -> torch.Tensor:
        total = 0.0
        for f, g, lin in zip(self.features(images), prepared, self.lins, strict=True):
            total = total + lin((f - g).square()).mean((1, 2, 3))
        return total


def vgg16_present() -> bool:
    """True when the ``real/vgg16`` weights file is configured (or in the torch hub cache) and exists."""
    from ..assets.real import REAL_ASSETS, locate

    loc = locate(REAL_ASSETS[VGG16_ASSET])
    return loc.path is not None and loc.path.is_file()


def choose_perceptual(perceptual="auto", device=None) -> PerceptualDistance:
    """The perceptual distance for ``perceptual``:

    * ``"auto"``: :class:`LPIPSDistance` when :func:`vgg16_present`, else ``"recon"``;
    * ``"lpips"``: :class:`LPIPSDistance` (the asset loader's errors when the VGG16 file is missing or wrong);
    * ``"recon"``: :class:`ReconFeatureDistance` on the shipped ``mini/recon`` (named ``"recon-features(mini/recon)"``);
    * a :class:`PerceptualDistance` instance: used as it is.

    Returned on ``device``. ValueError for anything else."""
    from .. import assets

    if isinstance(perceptual, PerceptualDistance):
        return perceptual.to(device) if device is not None else perceptual
    if not isinstance(perceptual, str) or perceptual not in PERCEPTUAL_CHOICES:
        raise ValueError(f"perceptual must be one of {PERCEPTUAL_CHOICES} or a PerceptualDistance, found "
                         f"{perceptual!r}")
    if perceptual == "auto":
        perceptual = "lpips" if vgg16_present() else "recon"
    if perceptual == "lpips":
        dist = LPIPSDistance(assets.load(VGG16_ASSET), source=str(assets.path(VGG16_ASSET)))
    else:
        dist = ReconFeatureDistance(assets.load(WORLD_RECON_ASSET), name=f"recon-features({WORLD_RECON_ASSET})")
    return dist.to(device) if device is not None else dist


__all__ = ["PerceptualDistance", "ReconFeatureDistance", "LPIPSDistance", "choose_perceptual", "vgg16_present",
           "PERCEPTUAL_CHOICES"]
