"""The main job on the embedded default: sample grid and StyleSpace single-channel edit grid, written to out/.

Until the shipped mini-world generator exists, the default generator is a small, seeded, *untrained* StyleGAN2
(its images are abstract patterns); pass ``generator=`` (any checkpoint `load_generator` reads) for a real one.
"""
from __future__ import annotations

import html
import json
import time
from pathlib import Path

import torch

from . import viz
from .stylegan2 import Generator, channel_sensitivity, edit_channel, load_generator, style_stats, top_channels

EDIT_SIGMAS = (-10.0, -5.0, 0.0, 5.0, 10.0)


def default_generator(seed: int = 0) -> Generator:
    """A lean 64 px generator with seeded random weights (stand-in until a trained one ships)."""
    torch.manual_seed(seed)
    G = Generator(64, z_dim=128, w_dim=128, mapping_layers=4, channel_max=128)
    with torch.no_grad():
        G.mapping_network.w_avg.copy_(G.mean_w(2000, seed=seed))
    return G.eval().requires_grad_(False)


def run_demo(out_dir="out", generator: str | None = None, n_samples: int = 16, n_channels: int = 4, seed: int = 0,
             truncation_psi: float = 0.7, device: str | None = None) -> dict:
    """Write ``samples.png``, ``stylespace_edits.png``, ``demo.json`` and ``index.html`` to ``out_dir``."""
    t0 = time.perf_counter()
    dev = torch.device(device or "cpu")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    G = (load_generator(generator, device=dev) if generator else default_generator(seed).to(dev))
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_samples, G.z_dim, generator=g).to(dev)
    with torch.no_grad():
        ws = G.mapping(z, truncation_psi=truncation_psi)
        samples = G.synthesis(ws, noise="const")
    viz.save_png(viz.grid(samples, nrow=min(8, n_samples)), out / "samples.png")

    stats = style_stats(G, n=2000, seed=seed)
    sens = channel_sensitivity(G, n=8, probes=2, seed=seed, stats=stats)
    chosen = top_channels(sens, G.style_layers, k=n_channels)
    rows = []
    with torch.no_grad():
        base = G.w_to_styles(ws[:1])
        for layer, channel, _ in chosen:
            for a in EDIT_SIGMAS:
                rows.append(G.synthesis_from_styles(edit_channel(base, layer, channel, a, stats), noise="const"))
    viz.save_png(viz.grid(torch.cat(rows), nrow=len(EDIT_SIGMAS)), out / "stylespace_edits.png")

    report = dict(generator=generator or "untrained lean 64 px StyleGAN2 (seeded)", resolution=G.resolution,
                  style_layers=len(G.style_layers), style_dim=G.style_dim, truncation_psi=truncation_psi,
                  edit_sigmas=list(EDIT_SIGMAS),
                  edited_channels=[dict(layer=l, channel=c, name=G.style_layers[l].name,
                                        rms_change_per_sigma=round(s, 5)) for l, c, s in chosen],
                  seconds=round(time.perf_counter() - t0, 2))
    (out / "demo.json").write_text(json.dumps(report, indent=2))
    items = "".join(f"<li>{html.escape(G.style_layers[l].name)} (layer {l}), channel {c}</li>" for l, c, _ in chosen)
    (out / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>cddfm3d demo</title>"
        f"<h1>cddfm3d demo</h1><p>Generator: {html.escape(report['generator'])}, {G.resolution} px, "
        f"{len(G.style_layers)} style layers, {G.style_dim} StyleSpace dims.</p>"
        "<h2>Samples</h2><img src='samples.png' style='image-rendering:pixelated;width:100%;max-width:1100px'>"
        f"<h2>Single-channel StyleSpace edits</h2><p>Rows: the channels with the largest image effect per std; "
        f"columns: {', '.join(f'{a:+g}' for a in EDIT_SIGMAS)} std.</p><ul>{items}</ul>"
        "<img src='stylespace_edits.png' style='image-rendering:pixelated;width:60%;max-width:700px'>")
    return report
