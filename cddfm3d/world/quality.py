"""Quality measures of the mini world's networks.

The generator is judged like FID, but in the feature space of the mini reconstruction network (the pooled
backbone features): a network trained on this world's faces sees what matters here (shape, pose, light, colour),
while Inception features of 64-px renders would mostly measure ImageNet texture statistics. The number only
means something next to its floor: the same distance between two disjoint sets of real renders.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from ..images import to_range


def feature_stats(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], covariance [D, D]) in float64 of features [N, D]."""
    f = features.detach().double().cpu().numpy()
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature_stats: expected features [N >= 2, D], found {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance of two Gaussians: |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), in float64."""
    mu1, mu2 = np.atleast_1d(np.float64(mu1)), np.atleast_1d(np.float64(mu2))
    s1, s2 = np.atleast_2d(np.float64(sigma1)), np.atleast_2d(np.float64(sigma2))
    # tr (S1 S2)^(1/2) = sum of the square roots of the eigenvalues of S1 S2, which are real and >= 0 for PSD S1, S2
    # (similar to S1^(1/2) S2 S1^(1/2)); clipping removes round-off below zero, and singular S need no special case.
    eig = np.linalg.eigvals(s1 @ s2).real
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


@torch.no_grad()
def recon_features(net, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Pooled reconstruction-network features [N, C] (float32, CPU) of images [N, 3, H, W] (uint8, or float in the
    generator's [-1, 1]), in batches: each batch is converted to the network's ``input_range`` and, when H, W differ
    from ``net.image_size``, area-resampled to it (whole images, no alignment)."""
    dev = next(net.parameters()).device
    s = net.image_size
    out = []
    for i in range(0, len(images), batch):
        x = to_range(images[i:i + batch].to(dev), net.input_range)
        if tuple(x.shape[2:]) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="area")
        out.append(net.features(x, check=False).flatten(1).cpu())
    return torch.cat(out)


@torch.no_grad()
def generate(G, n: int, seed: int = 0, batch: int = 100, truncation_psi: float = 1.0, device=None) -> torch.Tensor:
    """``n`` generator samples [n, 3, S, S] in [-1, 1] from seeded z (noise: random, seeded)."""
    dev = device or next(G.parameters()).device
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    for i in range(0, n, batch):
        z = torch.randn(min(batch, n - i), G.z_dim, generator=gen).to(dev)
        torch.manual_seed(int(seed) * 100_003 + i)  # the synthesis noise
        out.append(G(z, truncation_psi=truncation_psi, noise="random").clamp(-1, 1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 3, G.resolution, G.resolution)


def generator_fd(G, net, real: torch.Tensor, n: int, seed: int = 0) -> float:
    """Fréchet distance in ``net``'s features between ``n`` samples of ``G`` and the images ``real``."""
    fake = generate(G, n, seed=seed)
    return frechet_distance(*feature_stats(recon_features(net, fake)), *feature_stats(recon_features(net, real)))


def feature_spread(net, images: torch.Tensor) -> float:
    """Mean per-feature standard deviation of ``images`` [N, 3, H, W] in ``net``'s pooled features
    (:func:`recon_features`): how much a set of images varies as the network sees it. A collapsed generator, which
    draws nearly one picture, scores far below renders of its domain."""
    return float(recon_features(net, images).std(0).mean())


def fd_table(net, real: torch.Tensor, samples: dict) -> dict[str, float]:
    """Fréchet distance in ``net``'s features between the images ``real`` (their statistics computed once) and each
    entry of ``samples`` ({name: images [N, 3, H, W]}: a generator's samples from :func:`generate`, or other renders
    of ``real``'s distribution for the floor a perfect generator would score)."""
    ref = feature_stats(recon_features(net, real))
    return {name: frechet_distance(*feature_stats(recon_features(net, x)), *ref) for name, x in samples.items()}


@torch.no_grad()
def generator_latency_ms(G, repeats: int = 50, warmup: int = 5, threads: int | None = None) -> float:
    """Median wall time (ms) of one batch-1 image on G's device (synchronised on CUDA).

    ``threads``: CPU threads for the measurement (``torch.set_num_threads``, restored after); ``None`` keeps the
    current count. See ``cddfm3d.config.interactive_threads`` for why 1 thread is faster on a busy small machine.
    """
    from ..config import num_threads

    dev = next(G.parameters()).device
    z = torch.randn(1, G.z_dim, device=dev)
    with num_threads(threads):
        times = _latencies(G, z, dev, warmup, repeats)
    return float(np.median(times))


def _latencies(G, z, dev, warmup: int, repeats: int) -> list[float]:
    times = []
    for k in range(warmup + repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t = time.perf_counter()
        G(z, noise="const")
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if k >= warmup:
            times.append((time.perf_counter() - t) * 1000)
    return times
