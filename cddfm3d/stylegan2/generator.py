"""StyleGAN2 generator (config-f semantics, 'skip' architecture) with StyleSpace as its native interface.

The synthesis network is *defined* as ``synthesis_from_styles(w_to_styles(ws))``, so the W path and the S path
are the same computation. Style layers are ordered as in the official StyleSpace code: 4x4 conv, 4x4 tRGB, then
per block: up-conv, conv, tRGB.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .layers import MappingNetwork, SynthesisLayer, ToRGBLayer
from .ops import fir_filter, upsample2d
from .stylespace import StyleLayer, channel_address, flat_index, flatten_styles, unflatten_styles


def default_channels(resolution: int, channel_base: int = 32768, channel_max: int = 512) -> dict[int, int]:
    """Channels per resolution: min(channel_base / res, channel_max). 32768/512 is config-f (rosinality cm=2)."""
    return {2 ** k: min(channel_base // 2 ** k, channel_max) for k in range(2, int(math.log2(resolution)) + 1)}


class SynthesisNetwork(nn.Module):
    def __init__(self, resolution: int, w_dim: int, channels: dict[int, int], conv_clamp: float | None = None,
                 img_channels: int = 3):
        super().__init__()
        self.resolution, self.w_dim, self.img_channels = resolution, w_dim, img_channels
        self.channels = dict(channels)
        self.log2 = int(math.log2(resolution))
        c4 = channels[4]
        self.const = nn.Parameter(torch.randn(c4, 4, 4))
        layers: list[tuple[str, nn.Module, int]] = []  # (name, module, w_index)
        self.b4 = nn.Module()
        self.b4.conv1 = SynthesisLayer(c4, c4, w_dim, 4, conv_clamp=conv_clamp)
        self.b4.torgb = ToRGBLayer(c4, w_dim, img_channels, conv_clamp=conv_clamp)
        layers += [("b4.conv1", self.b4.conv1, 0), ("b4.torgb", self.b4.torgb, 1)]
        for k in range(3, self.log2 + 1):
            res = 2 ** k
            block = nn.Module()
            block.conv0 = SynthesisLayer(channels[res // 2], channels[res], w_dim, res, up=2, conv_clamp=conv_clamp)
            block.conv1 = SynthesisLayer(channels[res], channels[res], w_dim, res, conv_clamp=conv_clamp)
            block.torgb = ToRGBLayer(channels[res], w_dim, img_channels, conv_clamp=conv_clamp)
            setattr(self, f"b{res}", block)
            layers += [(f"b{res}.conv0", block.conv0, 2 * k - 5), (f"b{res}.conv1", block.conv1, 2 * k - 4),
                       (f"b{res}.torgb", block.torgb, 2 * k - 3)]
        self._layer_modules = [m for _, m, _ in layers]
        meta, offset, noise_j = [], 0, 0
        for i, (name, m, wi) in enumerate(layers):
            res = int(name.split(".")[0][1:])  # the block's resolution, e.g. 8 for 'b8.torgb'
            meta.append(StyleLayer(i, name, m.in_channels, m.is_torgb, res, wi, offset,
                                   None if m.is_torgb else noise_j))
            offset += m.in_channels
            noise_j += 0 if m.is_torgb else 1
        self.style_layers: tuple[StyleLayer, ...] = tuple(meta)
        self.num_ws = 2 * self.log2 - 2
        self.num_noise = noise_j  # = 2 * log2 - 3
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    # ---------------------------------------------------------------- styles
    def w_to_styles(self, ws: torch.Tensor) -> list[torch.Tensor]:
        """W+ [B, num_ws, w_dim] (or W [B, w_dim], broadcast) -> StyleSpace: list of [B, C_l] affine outputs."""
        ws = self._check_ws(ws)
        return [m.affine(ws[:, meta.w_index]) for m, meta in zip(self._layer_modules, self.style_layers, strict=True)]

    def _check_ws(self, ws: torch.Tensor) -> torch.Tensor:
        if ws.ndim == 2:
            ws = ws.unsqueeze(1).expand(-1, self.num_ws, -1)
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must have shape [B, {self.num_ws}, {self.w_dim}] (or [B, {self.w_dim}]), "
                             f"found {tuple(ws.shape)}")
        return ws

    # ---------------------------------------------------------------- noise
    def make_noise(self, mode, batch_size: int, device=None, dtype=torch.float32) -> list[torch.Tensor | None]:
        """Noise maps in the standard order j = 0 .. num_noise-1, each [B or 1, 1, H, W] (None for 'zero')."""
        convs = [m for m in self._layer_modules if not m.is_torgb]
        if isinstance(mode, str):
            if mode == "random":
                return [torch.randn(batch_size, 1, m.resolution, m.resolution, device=device, dtype=dtype)
                        for m in convs]
            if mode == "const":
                return [m.noise_const.to(dtype)[None, None] for m in convs]
            if mode in ("zero", "none"):
                return [None] * len(convs)
            raise ValueError(f"noise must be 'random', 'const', 'zero' or a list of tensors, found {mode!r}")
        noise = list(mode)
        if len(noise) != len(convs):
            raise ValueError(f"expected {len(convs)} noise tensors (one per conv layer), found {len(noise)}")
        for j, (n, m) in enumerate(zip(noise, convs, strict=True)):
            if n is None:
                continue
            r = m.resolution
            if n.ndim != 4 or n.shape[1] != 1 or tuple(n.shape[2:]) != (r, r) or n.shape[0] not in (1, batch_size):
                raise ValueError(f"noise[{j}] must have shape [{batch_size} or 1, 1, {r}, {r}], found {tuple(n.shape)}")
        return noise

    # ---------------------------------------------------------------- synthesis
    def synthesis_from_styles(self, styles: Sequence[torch.Tensor], noise="random", fused: bool | None = None
                              ) -> torch.Tensor:
        """Render from StyleSpace: ``styles`` is the list of [B, C_l] tensors that `w_to_styles` returns.
        ``fused``: True/False forces the modulated-convolution path; None picks the faster one per layer."""
        if len(styles) != len(self.style_layers):
            raise ValueError(f"expected {len(self.style_layers)} style tensors, found {len(styles)}")
        B = styles[0].shape[0]
        for s, meta in zip(styles, self.style_layers, strict=True):
            if s.ndim != 2 or s.shape != (B, meta.channels):
                raise ValueError(f"style of layer {meta.index} ({meta.name}) must have shape [{B}, {meta.channels}], "
                                 f"found {tuple(s.shape)}")
        dtype = styles[0].dtype if styles[0].is_floating_point() else torch.float32
        noise = self.make_noise(noise, B, device=styles[0].device, dtype=dtype)
        x = self.const.to(dtype).unsqueeze(0).expand(B, -1, -1, -1)
        img = None
        for m, s, meta in zip(self._layer_modules, styles, self.style_layers, strict=True):
            s = s.to(dtype)
            if m.is_torgb:
                y = m(x, s, fused=fused)
                img = y if img is None else upsample2d(img, self.resample_filter.to(dtype)) + y
            else:
                x = m(x, s, noise[meta.noise_index], fused=fused)
        return img

    def forward(self, ws: torch.Tensor, noise="random", fused: bool | None = None) -> torch.Tensor:
        return self.synthesis_from_styles(self.w_to_styles(ws), noise=noise, fused=fused)


class Generator(nn.Module):
    """StyleGAN2 generator: ``mapping`` (z -> w), ``synthesis`` (W+ -> image) and the StyleSpace API.

    Args:
        resolution: output size, a power of two from 4 (16 and up in practice) to 1024.
        z_dim, w_dim: latent and style dimensions.
        mapping_layers: depth of the mapping MLP (8 in config-f).
        channels: {resolution: channels}; default ``default_channels(resolution, channel_base, channel_max)``.
        lr_multiplier: mapping learning-rate multiplier (0.01).
        conv_clamp: clamp activations to +-conv_clamp (NVIDIA ADA checkpoints use 256; None for config-f).
    """

    def __init__(self, resolution: int = 1024, z_dim: int = 512, w_dim: int = 512, mapping_layers: int = 8,
                 channels: dict[int, int] | None = None, channel_base: int = 32768, channel_max: int = 512,
                 lr_multiplier: float = 0.01, conv_clamp: float | None = None, img_channels: int = 3):
        super().__init__()
        if resolution < 4 or resolution & (resolution - 1):
            raise ValueError(f"resolution must be a power of two >= 4, found {resolution}")
        if channels is None:
            channels = default_channels(resolution, channel_base, channel_max)
        channels = {int(k): int(v) for k, v in channels.items()}
        missing = [2 ** k for k in range(2, int(math.log2(resolution)) + 1) if 2 ** k not in channels]
        if missing:
            raise ValueError(f"channel table misses resolutions {missing}")
        self.config = dict(resolution=resolution, z_dim=z_dim, w_dim=w_dim, mapping_layers=mapping_layers,
                           channels={str(k): channels[k] for k in sorted(channels) if k <= resolution},
                           lr_multiplier=lr_multiplier, conv_clamp=conv_clamp, img_channels=img_channels)
        self.resolution, self.z_dim, self.w_dim = resolution, z_dim, w_dim
        self.mapping_network = MappingNetwork(z_dim, w_dim, mapping_layers, lr_multiplier)
        self.synthesis_network = SynthesisNetwork(resolution, w_dim, channels, conv_clamp, img_channels)
        self.num_ws = self.synthesis_network.num_ws
        self.n_latent = self.num_ws

    # ------------------------------------------------------------ mapping
    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping_network.w_avg

    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                update_w_avg: bool = False) -> torch.Tensor:
        """z [B, z_dim] -> w [B, w_dim]; with a ``truncation_cutoff`` the result is W+ [B, num_ws, w_dim], truncated
        only in the layers below the cutoff (NVIDIA's semantics)."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [B, {self.z_dim}], found {tuple(z.shape)}")
        w = self.mapping_network(z, update_w_avg=update_w_avg)
        if truncation_cutoff is None:
            return self.w_avg.to(w.dtype).lerp(w, truncation_psi) if truncation_psi != 1 else w
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            ws[:, :truncation_cutoff] = self.w_avg.to(w.dtype).lerp(ws[:, :truncation_cutoff], truncation_psi)
        return ws

    # ------------------------------------------------------------ synthesis / StyleSpace
    def synthesis(self, ws: torch.Tensor, noise="random", fused: bool | None = None) -> torch.Tensor:
        """W+ [B, num_ws, w_dim] or W [B, w_dim] -> image [B, 3, H, W] in about [-1, 1]."""
        return self.synthesis_network(ws, noise=noise, fused=fused)

    def w_to_styles(self, ws: torch.Tensor) -> list[torch.Tensor]:
        return self.synthesis_network.w_to_styles(ws)

    def synthesis_from_styles(self, styles: Sequence[torch.Tensor], noise="random", fused: bool | None = None
                              ) -> torch.Tensor:
        return self.synthesis_network.synthesis_from_styles(styles, noise=noise, fused=fused)

    @property
    def style_layers(self) -> tuple[StyleLayer, ...]:
        return self.synthesis_network.style_layers

    @property
    def style_dim(self) -> int:
        """Total StyleSpace dimension (9088 at 1024 config-f)."""
        return sum(m.channels for m in self.style_layers)

    @property
    def num_noise(self) -> int:
        return self.synthesis_network.num_noise

    def flatten_styles(self, styles: Sequence[torch.Tensor]) -> torch.Tensor:
        """List of [B, C_l] -> [B, style_dim]."""
        return flatten_styles(styles)

    def unflatten_styles(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """[B, style_dim] -> list of [B, C_l]."""
        return unflatten_styles(flat, self.style_layers)

    def style_index(self, layer: int, channel: int) -> int:
        """Flat offset of channel ``channel`` of style layer ``layer``."""
        return flat_index(self.style_layers, layer, channel)

    def style_address(self, index: int) -> tuple[int, int]:
        """Flat offset -> (layer, channel)."""
        return channel_address(self.style_layers, index)

    def make_noise(self, mode="random", batch_size: int = 1, device=None) -> list[torch.Tensor | None]:
        return self.synthesis_network.make_noise(mode, batch_size, device=device or self.w_avg.device)

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                noise="random") -> torch.Tensor:
        """Convenience sampling: z -> image."""
        return self.synthesis(self.mapping(z, truncation_psi, truncation_cutoff), noise=noise)

    @torch.no_grad()
    def mean_w(self, n: int = 10000, seed: int = 0, batch_size: int = 1000) -> torch.Tensor:
        """Mean of mapped random z (for checkpoints that carry no w_avg)."""
        g = torch.Generator().manual_seed(seed)
        total = torch.zeros(self.w_dim, dtype=torch.float64)
        for i in range(0, n, batch_size):
            z = torch.randn(min(batch_size, n - i), self.z_dim, generator=g).to(self.w_avg.device)
            total += self.mapping_network(z).double().sum(0).cpu()
        return (total / n).float()
