"""StyleSpace helpers: flatten/unflatten style lists, address a channel, edit in units of a channel's std.

Addresses are (layer, channel) in the 26-layer scheme (1024 px) that includes tRGB layers, the scheme of the
StyleSpace paper's channel ids such as "9_409".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from collections.abc import Sequence

import torch

if TYPE_CHECKING:
    from .generator import Generator


@dataclass(frozen=True)
class StyleLayer:
    """Metadata of one StyleSpace layer (one modulation affine)."""

    index: int          # position in the style list
    name: str           # module path, e.g. "b8.conv0"
    channels: int       # style dimension (= input channels of the layer)
    is_torgb: bool
    resolution: int     # output resolution of the layer
    w_index: int        # which W+ entry feeds it
    offset: int         # start in the flattened style vector
    noise_index: int | None  # position in the noise list (None for tRGB)



def flatten_styles(styles: Sequence[torch.Tensor]) -> torch.Tensor:
    """List of [B, C_l] -> [B, sum C_l]."""
    return torch.cat(list(styles), dim=1)


def unflatten_styles(flat: torch.Tensor, layers: Sequence[StyleLayer]) -> list[torch.Tensor]:
    """[B, sum C_l] -> list of [B, C_l] views, following the layer table."""
    total = sum(m.channels for m in layers)
    if flat.ndim != 2 or flat.shape[1] != total:
        raise ValueError(f"flat styles must have shape [B, {total}], found {tuple(flat.shape)}")
    return list(torch.split(flat, [m.channels for m in layers], dim=1))


def flat_index(layers: Sequence[StyleLayer], layer: int, channel: int) -> int:
    """Offset of (layer, channel) in the flattened style vector."""
    if not 0 <= layer < len(layers):
        raise IndexError(f"style layer {layer} out of range (the generator has {len(layers)} style layers)")
    if not 0 <= channel < layers[layer].channels:
        raise IndexError(f"channel {channel} out of range for layer {layer} ({layers[layer].name}, "
                         f"{layers[layer].channels} channels)")
    return layers[layer].offset + channel


def channel_address(layers: Sequence[StyleLayer], index: int) -> tuple[int, int]:
    """Inverse of `flat_index`: flat offset -> (layer, channel)."""
    for m in layers:
        if m.offset <= index < m.offset + m.channels:
            return m.index, index - m.offset
    raise IndexError(f"flat style index {index} out of range (dimension {sum(m.channels for m in layers)})")


def parse_channel_id(text: str) -> tuple[int, int]:
    """Paper channel id "9_409" -> (9, 409)."""
    try:
        layer, channel = text.split("_")
        return int(layer), int(channel)
    except ValueError:
        raise ValueError(f"channel id must look like 'LAYER_CHANNEL' (e.g. '9_409'), found {text!r}") from None


def layer_table(G: Generator) -> list[dict]:
    """One row per style layer: index, name, channels, is_torgb, resolution, W+ index, flat offset."""
    return [dict(layer=m.index, name=m.name, channels=m.channels, is_torgb=m.is_torgb, resolution=m.resolution,
                 w_index=m.w_index, offset=m.offset) for m in G.style_layers]


@dataclass
class StyleStats:
    """Per-channel mean and std of S over random samples, with the sampling settings that produced them."""

    mean: list[torch.Tensor]
    std: list[torch.Tensor]
    n: int
    seed: int
    truncation_psi: float

    def flat_mean(self) -> torch.Tensor:
        return torch.cat(self.mean)

    def flat_std(self) -> torch.Tensor:
        return torch.cat(self.std)


@torch.no_grad()
def style_stats(G: Generator, n: int = 10000, seed: int = 0, truncation_psi: float = 1.0,
                batch_size: int = 500) -> StyleStats:
    """Mean and std of every style channel over ``n`` samples z ~ N(0, I) (float64 accumulation)."""
    g = torch.Generator().manual_seed(seed)
    dev = G.w_avg.device
    s1 = [torch.zeros(m.channels, dtype=torch.float64) for m in G.style_layers]
    s2 = [torch.zeros(m.channels, dtype=torch.float64) for m in G.style_layers]
    for i in range(0, n, batch_size):
        z = torch.randn(min(batch_size, n - i), G.z_dim, generator=g).to(dev)
        for k, s in enumerate(G.w_to_styles(G.mapping(z, truncation_psi))):
            s = s.double().cpu()
            s1[k] += s.sum(0)
            s2[k] += s.square().sum(0)
    mean = [a / n for a in s1]
    std = [(b / n - m.square()).clamp_min(0).sqrt() for b, m in zip(s2, mean, strict=True)]
    return StyleStats([m.float() for m in mean], [s.float() for s in std], n, seed, truncation_psi)


def edit_channel(styles: Sequence[torch.Tensor], layer: int, channel: int, amount: float | torch.Tensor,
                 stats: StyleStats | None = None) -> list[torch.Tensor]:
    """Return a copy of ``styles`` with s[layer][:, channel] += amount (times the channel's std if ``stats``)."""
    out = [s.clone() for s in styles]
    if not 0 <= layer < len(out):
        raise IndexError(f"style layer {layer} out of range ({len(out)} layers)")
    if not 0 <= channel < out[layer].shape[1]:
        raise IndexError(f"channel {channel} out of range for layer {layer} ({out[layer].shape[1]} channels)")
    scale = stats.std[layer][channel].item() if stats is not None else 1.0
    out[layer][:, channel] = out[layer][:, channel] + torch.as_tensor(amount, dtype=out[layer].dtype,
                                                                        device=out[layer].device) * scale
    return out


def channel_sensitivity(G: Generator, n: int = 16, probes: int = 4, seed: int = 0, stats: StyleStats | None = None,
                        truncation_psi: float = 1.0, batch_size: int = 8, noise="const") -> list[torch.Tensor]:
    """First-order effect of each style channel on the image: the RMS pixel change per unit change of the channel
    (per 1 std if ``stats`` is given), averaged over ``n`` random samples.

    Uses random probes: for v ~ N(0, I) in image space, E[(v . J_c)^2] = ||J_c||^2, so ``probes`` backward passes
    per batch estimate every column norm of the Jacobian at once."""
    g = torch.Generator().manual_seed(seed)
    dev = G.w_avg.device
    acc = [torch.zeros(m.channels, dtype=torch.float64) for m in G.style_layers]
    pixels = 0
    for i in range(0, n, batch_size):
        z = torch.randn(min(batch_size, n - i), G.z_dim, generator=g).to(dev)
        with torch.no_grad():
            styles = G.w_to_styles(G.mapping(z, truncation_psi))
        styles = [s.detach().requires_grad_(True) for s in styles]
        img = G.synthesis_from_styles(styles, noise=noise)
        pixels = img[0].numel()
        for p in range(probes):
            v = torch.randn(img.shape, generator=g).to(dev)
            grads = torch.autograd.grad((img * v).sum(), styles, retain_graph=p < probes - 1)
            for k, gr in enumerate(grads):
                acc[k] += gr.double().square().sum(0).cpu()
    out = [(a / (n * probes * pixels)).sqrt().float() for a in acc]
    if stats is not None:
        out = [o * s for o, s in zip(out, stats.std, strict=True)]
    return out


def top_channels(sensitivity: list[torch.Tensor], layers: Sequence[StyleLayer], k: int = 8,
                 include_torgb: bool = False) -> list[tuple[int, int, float]]:
    """The ``k`` (layer, channel, score) with the largest score, tRGB layers excluded by default (as StyleSpace)."""
    cands = [(k, c, float(v)) for k, s in enumerate(sensitivity) if include_torgb or not layers[k].is_torgb
             for c, v in enumerate(s.tolist())]
    return sorted(cands, key=lambda t: (-t[2], t[0], t[1]))[:k]
