"""StyleGAN2 residual discriminator with minibatch standard deviation (config-f, 'resnet' architecture)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .generator import default_channels
from .layers import Conv2dLayer, FullyConnected
from .ops import minibatch_stddev


class DiscriminatorBlock(nn.Module):
    """conv3x3 -> conv3x3 (2x down), plus a 1x1 (2x down) skip; both branches scaled by sqrt(1/2)."""

    def __init__(self, in_channels: int, out_channels: int, conv_clamp: float | None = None):
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels, in_channels, 3, conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(in_channels, out_channels, 3, down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(in_channels, out_channels, 1, bias=False, activation="linear", down=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = math.sqrt(0.5)
        return self.skip(x, gain=g) + self.conv1(self.conv0(x), gain=g)


class Discriminator(nn.Module):
    """StyleGAN2 config-f discriminator ('resnet').

    ``mbstd_group_size``: samples per minibatch-std group (NVIDIA's ``epilogue_kwargs``; 4 in every official
    config); ``None`` makes the whole batch one group. A batch smaller than the group size is one group; otherwise
    the batch size must be divisible by it. ``mbstd_num_channels``: feature maps appended (channels split in that
    many groups).
    """

    def __init__(self, resolution: int = 1024, channels: dict[int, int] | None = None, channel_base: int = 32768,
                 channel_max: int = 512, mbstd_group_size: int | None = 4, mbstd_num_channels: int = 1,
                 conv_clamp: float | None = None, img_channels: int = 3):
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"resolution must be a power of two >= 8, found {resolution}")
        if mbstd_group_size is not None and (isinstance(mbstd_group_size, bool) or int(mbstd_group_size) < 1):
            raise ValueError(f"mbstd_group_size must be a positive int or None, found {mbstd_group_size!r}")
        if channels is None:
            channels = default_channels(resolution, channel_base, channel_max)
        channels = {int(k): int(v) for k, v in channels.items()}
        self.config = dict(resolution=resolution, channels={str(k): channels[k] for k in sorted(channels)
                                                            if k <= resolution},
                           mbstd_group_size=mbstd_group_size, mbstd_num_channels=mbstd_num_channels,
                           conv_clamp=conv_clamp, img_channels=img_channels)
        self.resolution = resolution
        self.mbstd_group_size, self.mbstd_num_channels = mbstd_group_size, mbstd_num_channels
        self.fromrgb = Conv2dLayer(img_channels, channels[resolution], 1, conv_clamp=conv_clamp)
        self.block_resolutions = [2 ** k for k in range(int(math.log2(resolution)), 2, -1)]
        for res in self.block_resolutions:
            setattr(self, f"b{res}", DiscriminatorBlock(channels[res], channels[res // 2], conv_clamp))
        c4 = channels[4]
        self.conv = Conv2dLayer(c4 + mbstd_num_channels, c4, 3, conv_clamp=conv_clamp)
        self.fc = FullyConnected(c4 * 16, c4, activation="lrelu")
        self.out = FullyConnected(c4, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """img [B, 3, R, R] in [-1, 1] -> logits [B, 1]."""
        if img.ndim != 4 or img.shape[2:] != (self.resolution, self.resolution):
            raise ValueError(f"discriminator expects images [B, C, {self.resolution}, {self.resolution}], "
                             f"found {tuple(img.shape)}")
        x = self.fromrgb(img.to(torch.float32))
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x)
        group = self.mbstd_group_size if self.mbstd_group_size is not None else x.shape[0]
        x = minibatch_stddev(x, group, self.mbstd_num_channels)
        x = self.conv(x)
        return self.out(self.fc(x.flatten(1)))
