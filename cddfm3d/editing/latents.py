"""Latents of the training pairs: the official code's 5-way contiguous W+ style mixing, or plain W.

The official data generator (reference cddfm3d_method.md §1, "Style mixing") draws five z ~ N(0, I), maps each to
w, and splits the ``num_ws`` W+ slots into 5 contiguous, non-empty chunks at 4 distinct cut points drawn uniformly
from 1 .. num_ws - 1; chunk k (slots [c_k, c_{k+1}) with c_0 = 0, c_5 = num_ws) takes the k-th w. No truncation.
With 18 slots (1024 px) the cut points lie in 1..17; the mini generator (64 px) has 10 slots, cut points in 1..9.

Random draws come from the ``torch.Generator`` passed in and from nothing else, in this order: the z of all samples
(``randn`` [n, 5, z_dim], or [n, z_dim] for plain W), then one ``randperm(num_ws - 1)`` per sample whose first 4
entries (+1) are its cut points. The same generator state therefore gives the same latents on every call.
"""
from __future__ import annotations

import torch

MIXINGS = ("official5", "w")
N_SOURCES = 5  # the official --counts 5


def _check(G, n, generator, mixing) -> None:
    if mixing not in MIXINGS:
        raise ValueError(f"sample_latents: mixing must be one of {MIXINGS}, found {mixing!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"sample_latents: n must be a positive int, found {n!r}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"sample_latents: generator must be a torch.Generator, found {type(generator).__name__}")
    if mixing == "official5" and G.num_ws < N_SOURCES:
        raise ValueError(f"sample_latents: 'official5' mixing needs at least {N_SOURCES} W+ slots, the generator has "
                         f"num_ws={G.num_ws} (resolution {G.resolution}); use mixing='w'")


def _check_device(G, device) -> torch.device:
    """G's device; ``device`` (None, a name or a torch.device) must be it ("cuda" without an index matches G's
    CUDA device)."""
    here = G.w_avg.device
    if device is None:
        return here
    want = torch.device(device)
    if want.type != here.type or (want.index is not None and here.index is not None and want.index != here.index):
        raise ValueError(f"sample_latents: device must be the generator's device (its mapping runs there): "
                         f"expected {here}, found {want}; move the generator first (G.to({str(want)!r}))")
    return here


def mixing_sources(num_ws: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """Source index (0..4) of every W+ slot: [n, num_ws] int64, non-decreasing along a row, every value present.

    Per sample, the cut points are the first 4 entries of ``randperm(num_ws - 1) + 1`` drawn from ``generator``
    (4 distinct values in 1 .. num_ws - 1, uniformly); slot l takes source = number of cut points <= l."""
    if num_ws < N_SOURCES:
        raise ValueError(f"mixing_sources: need num_ws >= {N_SOURCES}, found {num_ws}")
    cuts = torch.stack([torch.randperm(num_ws - 1, generator=generator, device=generator.device)[:N_SOURCES - 1] + 1
                        for _ in range(n)])                                           # [n, 4]
    slots = torch.arange(num_ws, device=cuts.device)
    return (slots[None, :, None] >= cuts[:, None, :]).sum(-1)                         # [n, num_ws]


def sample_latents(G, n: int, generator: torch.Generator, mixing: str = "official5", device=None,
                   return_sources: bool = False):
    """Random W+ latents of ``G`` (a :class:`cddfm3d.stylegan2.Generator`) as the training pairs use them.

    Args:
        G: the generator; its ``mapping`` (z [B, z_dim] -> w [B, w_dim], no truncation) and ``num_ws`` are used.
        n: number of latents (>= 1).
        generator: the only source of randomness (see the module docstring for the draw order); a CPU generator
            gives the same latents on every device.
        mixing: ``"official5"`` -- five mapped z spread over 5 contiguous non-empty chunks of W+ (the official
            code's scheme); ``"w"`` -- one mapped z repeated in every slot (plain W).
        device: G's device (where its mapping runs and the result lives), the default; the z are drawn with
            ``generator`` and moved there. Any other device is refused: move ``G`` first (``G.to(device)``).
        return_sources: also return the [n, num_ws] source index of every slot (all 0 for ``"w"``).

    Returns:
        ws [n, num_ws, w_dim] in G's dtype (and the sources when asked).

    Raises ValueError for an unknown ``mixing``, a bad ``n``, ``"official5"`` on a generator with fewer than 5
    W+ slots, or a ``device`` other than G's; TypeError when ``generator`` is not a ``torch.Generator``.
    """
    _check(G, n, generator, mixing)
    device = _check_device(G, device)
    k = N_SOURCES if mixing == "official5" else 1
    z = torch.randn(n, k, G.z_dim, generator=generator, device=generator.device)
    if mixing == "official5":
        sources = mixing_sources(G.num_ws, n, generator)
    else:
        sources = torch.zeros(n, G.num_ws, dtype=torch.long)
    z, sources = z.to(device), sources.to(device)
    w = G.mapping(z.reshape(n * k, G.z_dim).to(G.w_avg.dtype)).reshape(n, k, G.w_dim)
    ws = torch.gather(w, 1, sources[:, :, None].expand(-1, -1, G.w_dim))            # [n, num_ws, w_dim]
    return (ws, sources) if return_sources else ws


__all__ = ["MIXINGS", "N_SOURCES", "mixing_sources", "sample_latents"]
