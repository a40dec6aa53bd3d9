"""Projection (cddfm3d.adapt.project, issue 12 §3): seconds per image and reconstruction quality per space.

    python benchmarks/bench_project.py [--n 8] [--steps 300] [--threads 1] [--device cpu] [--data out/world/heldout]

Sources: ``--n`` held-out renders of the mini world's ``human`` and ``toon`` domains (``--data``, made by
``make-world``; the generator never saw them, and toons are out of its domain) and ``--n`` of the shipped
generator's own samples (z seeded, random synthesis noise), whose true latent is known. For each source and space
(w, w+, s) the images are projected together (one batched call; every image is optimised independently) into
``mini/generator`` with the default settings, and the table gives

* s/img: the batched call's wall time divided by ``--n``;
* PSNR (dB, images in [-1, 1] clamped) and the perceptual distance the projection used, mean over the images;
* for generator samples: the distance of the recovered latent to the truth, in W+ as the RMS over layers of
  ||w_l − w_true|| / σ (σ = sqrt E ||w − w̄||², so two random w are about 1.41 apart) and in S as the RMS over style
  channels of the difference in units of each channel's std (two random s: about 1.41). For space "s" the W+ column
  is not meaningful (ws is the start) and is left out;
* a "start" row: the mean-w image the projection starts from.

A second table times one image alone per space (the issue's budget: <= 30 s on 2 CPU cores), with ``--threads``.
Prints markdown (paste it into benchmarks/README.md with the command).
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from report import machine_line, print_table  # benchmarks/report.py

SPACES = ("w", "w+", "s")


def psnr(img: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(4.0 / (img.clamp(-1, 1) - target).square().mean((1, 2, 3)))


def sources(G, n: int, data: str, seed: int = 1000):
    """{name: (images [n, 3, R, R], true ws [n, num_ws, w_dim] or None)}."""
    from cddfm3d.world.datasets import WorldDataset

    out = {}
    for domain in ("human", "toon"):
        ds = WorldDataset(data, domain)
        out[f"held-out {domain} renders"] = (ds.image_batch(torch.arange(n)), None)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.z_dim, generator=g)
    with torch.no_grad():
        w = G.mapping(z)
        torch.manual_seed(seed)
        img = G.synthesis(w, noise="random").clamp(-1, 1)
    out["generator samples"] = (img, w[:, None].expand(-1, G.num_ws, -1))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=8, help="images per source (default 8)")
    p.add_argument("--steps", type=int, default=None, help="projection steps (default: project's default)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data", default="out/world/heldout", help="held-out world dataset with human and toon")
    p.add_argument("--skip-single", action="store_true", help="leave out the single-image timing")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from cddfm3d import assets
    from cddfm3d.adapt.projection import DEFAULT_STEPS, project, w_statistics
    from cddfm3d.stylegan2.stylespace import style_stats

    steps = args.steps or DEFAULT_STEPS
    G = assets.load("mini/generator", device=args.device)
    mean_w, sigma = w_statistics(G)
    s_std = style_stats(G, n=10000).flat_std().to(args.device)
    rows, perceptual = [], None
    for name, (images, ws_true) in sources(G, args.n, args.data).items():
        images = images.to(args.device)
        with torch.no_grad():
            torch.manual_seed(0)
            start = G.synthesis(mean_w.expand(len(images), G.num_ws, -1), noise="random")
        rows.append([name, "start (mean w)", "", f"{psnr(start, images).mean():.2f}", "", "", ""])
        for space in SPACES:
            r = project(G, images, space, steps, progress=False)
            perceptual = r.perceptual
            dw = ds = ""
            if ws_true is not None:
                with torch.no_grad():
                    s_true = G.flatten_styles(G.w_to_styles(ws_true.to(args.device)))
                dist_s = ((r.styles - s_true) / s_std).square().mean(1).sqrt().mean()
                ds = f"{dist_s:.3f}"
                if space != "s":
                    dist_w = ((r.ws - ws_true.to(args.device)).square().sum(2).mean(1).sqrt() / sigma).mean()
                    dw = f"{dist_w:.3f}"
            rows.append([name, space, f"{r.seconds / len(images):.2f}", f"{r.psnr.mean():.2f}",
                         f"{r.perceptual_distance.mean():.4f}", dw, ds])
    print_table(f"{machine_line(args.device, f'{args.threads} thread(s), steps {steps}, n {args.n} per source')}; "
                f"perceptual distance: {perceptual}",
                ["source", "space", "s/img (batched)", "PSNR dB", "perceptual", "W+ dist to truth",
                 "S dist to truth"], rows, numeric_from=2)
    if args.skip_single:
        return
    print()
    images = sources(G, 1, args.data)["held-out human renders"][0].to(args.device)
    single = []
    for space in SPACES:
        t = time.perf_counter()
        r = project(G, images, space, steps, progress=False)
        single.append([space, f"{time.perf_counter() - t:.1f}", f"{r.psnr.item():.2f}"])
    print_table(f"one held-out human render alone, {args.threads} thread(s), {steps} steps (call included: W "
                f"statistics, perceptual network)", ["space", "seconds", "PSNR dB"], single, numeric_from=1)
    assert all(math.isfinite(float(x[1])) for x in single)


if __name__ == "__main__":
    main()
