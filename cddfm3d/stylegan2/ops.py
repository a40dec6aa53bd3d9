"""Functional StyleGAN2 ops in pure PyTorch (CPU and CUDA, nothing compiled at import).

Conventions follow StyleGAN2 config-f: FIR filters are applied as true convolutions, leaky ReLU uses slope
0.2 and gain sqrt(2), and the modulated convolution demodulates with an epsilon added to the sum of squares of
the *unscaled* modulated weight (NVIDIA's convention; rosinality/TF differ by ~1e-8 relative).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
DEMOD_EPS = 1e-8


def fir_filter(taps: Sequence[float] = (1, 3, 3, 1), device=None, dtype=torch.float32) -> torch.Tensor:
    """The separable 2-D FIR filter outer(k, k) normalised to sum 1 ([1,3,3,1] is StyleGAN2's blur)."""
    k = torch.as_tensor(taps, dtype=torch.float64)
    f = torch.outer(k, k)
    return (f / f.sum()).to(device=device, dtype=dtype)


def _as_padding(padding) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1) from an int, a pair (x, y) or a 4-tuple."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    if len(padding) == 4:
        return padding  # type: ignore[return-value]
    raise ValueError(f"padding must be an int, a pair or 4 values, found {padding!r}")


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1, padding=0,
              flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative pads crop), convolve with the 2-D FIR ``f``, keep every
    ``down``-th pixel. Output size: (H*up + py0 + py1 - fh + down) // down (same for x)."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects x of shape [B, C, H, W], found {tuple(x.shape)}")
    px0, px1, py0, py1 = _as_padding(padding)
    B, C, H, W = x.shape
    fh, fw = f.shape
    if up > 1:
        x = x.reshape(B, C, H, 1, W, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(B, C, H * up, W * up)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    f = f.to(dtype=x.dtype, device=x.device) * gain
    if not flip_filter:  # conv2d correlates; a true convolution needs the flipped kernel
        f = f.flip([0, 1])
    weight = f[None, None].expand(C, 1, fh, fw)
    x = F.conv2d(x, weight, groups=C)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Upsampling by ``up`` with the FIR filter (gain up^2 keeps the mean), as the ToRGB skip path does.

    Same result as ``upfirdn2d(x, f, up, padding=((fw+up-1)//2, (fw-up)//2, ...), gain=up**2)``, computed as a
    strided transposed convolution, which skips the multiplications by inserted zeros."""
    fh, fw = f.shape
    B, C, H, W = x.shape
    weight = (f.to(dtype=x.dtype, device=x.device) * (up * up))[None, None].expand(C, 1, fh, fw)
    y = F.conv_transpose2d(x, weight, stride=up, groups=C)  # full convolution of the zero-inserted signal
    # the full convolution corresponds to padding fw-1 before; the reference pads (fw+up-1)//2
    c = fw - 1 - (fw + up - 1) // 2
    return y[:, :, c: c + H * up, c: c + W * up]


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, act: str = "lrelu", gain: float | None = None,
             clamp: float | None = None) -> torch.Tensor:
    """Add a per-channel bias (dim 1), apply the activation, multiply by the gain, clamp to +-clamp."""
    if b is not None:
        x = x + b.reshape([1, -1] + [1] * (x.ndim - 2)).to(x.dtype)
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
        default_gain = LRELU_GAIN
    elif act == "linear":
        default_gain = 1.0
    else:
        raise ValueError(f"unsupported activation {act!r} (expected 'lrelu' or 'linear')")
    g = default_gain if gain is None else gain
    if g != 1:
        x = x * g
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """PixelNorm: x / sqrt(mean(x^2) + eps)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


# Auto policy for the modulated convolution, from benchmarks/README.md (CPU): the grouped (fused) path wins while
# the per-sample weight tensor is small (batch 1, or lean layers), the shared-weight path wins for wide layers at
# larger batches, where materialising B copies of the weight dominates.
FUSED_MAX_WEIGHT_ELEMENTS = 1 << 22


def prefer_fused(batch: int, out_channels: int, in_channels: int, kernel_size: int) -> bool:
    return batch == 1 or batch * out_channels * in_channels * kernel_size * kernel_size <= FUSED_MAX_WEIGHT_ELEMENTS


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     up: int = 1, padding: int = 0, resample_filter: torch.Tensor | None = None,
                     fused: bool | None = True) -> torch.Tensor:
    """StyleGAN2's modulated convolution.

    x [B, Cin, H, W], weight [Cout, Cin, k, k] (raw, unscaled: demodulation makes the scale irrelevant),
    styles [B, Cin]. ``up=2`` is a stride-2 transposed convolution followed by the FIR blur (pad 1 each side,
    gain 4). ``fused`` runs one grouped convolution with per-sample weights; otherwise the input is scaled
    by the styles, a shared-weight convolution runs, and the output is scaled by the demodulation factors
    (the same function; the unfused path is batch friendly). ``fused=None`` picks by `prefer_fused`."""
    B, Cin = x.shape[0], x.shape[1]
    Cout, wcin, kh, kw = weight.shape
    if fused is None:
        fused = prefer_fused(B, Cout, Cin, kh)
    if wcin != Cin or styles.shape != (B, Cin):
        raise ValueError(f"modulated_conv2d: x {tuple(x.shape)}, weight {tuple(weight.shape)} and styles "
                         f"{tuple(styles.shape)} do not agree (expected styles [{B}, {Cin}])")
    w = weight.unsqueeze(0) * styles.reshape(B, 1, Cin, 1, 1)  # [B, Cout, Cin, k, k]
    dcoefs = (w.square().sum(dim=[2, 3, 4]) + DEMOD_EPS).rsqrt() if demodulate else None  # [B, Cout]

    if fused:
        if dcoefs is not None:
            w = w * dcoefs.reshape(B, Cout, 1, 1, 1)
        xg = x.reshape(1, B * Cin, *x.shape[2:])
        if up == 1:
            y = F.conv2d(xg, w.reshape(B * Cout, Cin, kh, kw), padding=padding, groups=B)
        else:
            wt = w.transpose(1, 2).reshape(B * Cin, Cout, kh, kw)
            y = F.conv_transpose2d(xg, wt, stride=up, groups=B)
        y = y.reshape(B, Cout, *y.shape[2:])
    else:
        xs = x * styles.reshape(B, Cin, 1, 1).to(x.dtype)
        if up == 1:
            y = F.conv2d(xs, weight, padding=padding)
        else:
            y = F.conv_transpose2d(xs, weight.transpose(0, 1), stride=up)
    if up > 1:
        f = resample_filter if resample_filter is not None else fir_filter(device=x.device, dtype=x.dtype)
        fw = f.shape[1]
        # pads that bring the (H-1)*up + k transposed-conv output back to H*up (1, 1 for a 3x3 kernel)
        p0 = padding + (fw + up - 1) // 2 - (kw - 1)
        p1 = padding + (fw - up) // 2 - (kw - up)
        y = upfirdn2d(y, f, padding=(p0, p1, p0, p1), gain=up * up)
    if not fused and dcoefs is not None:
        y = y * dcoefs.reshape(B, Cout, 1, 1)
    return y


def minibatch_stddev(x: torch.Tensor, group_size: int = 4, num_channels: int = 1) -> torch.Tensor:
    """Append the minibatch standard deviation feature map(s) (StyleGAN2's D epilogue)."""
    N, C, H, W = x.shape
    G = min(group_size, N)
    if N % G != 0:
        raise ValueError(f"minibatch_stddev: batch size {N} is not divisible by the group size {G}")
    F_ = num_channels
    y = x.reshape(G, -1, F_, C // F_, H, W)
    y = y - y.mean(dim=0)
    y = y.square().mean(dim=0)
    y = (y + 1e-8).sqrt()
    y = y.mean(dim=[2, 3, 4])
    y = y.reshape(-1, F_, 1, 1).repeat(G, 1, H, W)
    return torch.cat([x, y], dim=1)
