"""PIE against plain projection on held-out mini-world renders (issue 13 §3): reconstruction and editability.

    python benchmarks/bench_pie.py [--n 16] [--steps 300] [--methods ...] [--attributes pose expression light]
        [--cache out/bench_pie] [--threads 1]

The targets are ``--n`` renders of the mini world (:func:`cddfm3d.world.render` of ``sample_coeffs(n, seed=2001)``,
human domain, 64 px): their true coefficients are known and the generator never produced them. Each method embeds
them into ``mini/generator`` with ``--steps`` steps:

* ``project W``, ``project W+``, ``project S``: :func:`cddfm3d.adapt.project` (Image2StyleGAN-style projection);
* ``PIE``: :func:`cddfm3d.adapt.pie_embed` with its default weights, ``PIE - <energy>`` with one energy switched
  off (weight 0), and ``W -> W+ (synth only)`` with all four rig energies off (PIE's schedule without its rig: the
  projector run in W, then in W+ from there).

Each embedding is then scored by :func:`cddfm3d.adapt.evaluate_cross_domain` with the human generator as the
"domain" generator: PSNR and perceptual distance of the embedding, and for each attribute of ``--attributes`` the
swap edit (toward another target's true coefficients) by T and F^i, read by ``mini/recon_independent`` (not by
``mini/recon``, the R that PIE optimises with): completion (vs the embedding's own reading), completion against
the truth, and leakage (mean over the other attributes, relative to two random faces). ``id`` is the identity
drift of the embedding: the mean over shape and albedo of ``mini/recon_independent``'s distance between the
embedding's image and the target, relative to two random faces.

Embeddings are cached per method in ``--cache`` (rerun to resume; delete the folder after changing the code).
Prints a markdown table (paste it into benchmarks/README.md with the command).

``--time``: instead, the wall time of one 64-px embedding with the default steps (the issue's budget: 60 s on 2 CPU
cores), PIE against the W+ projector measured in the same run, at each of ``--thread-counts`` (best of
``--repeats``; the first call's asset loading is left out).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from report import machine_line  # benchmarks/report.py

ENERGY_OFF = ("identity", "edit", "invariance", "recognition")
METHODS = ("project W", "project W+", "project S", "W -> W+ (synth only)", "PIE", *(f"PIE - {e}" for e in ENERGY_OFF))


def embed(method: str, G, editor, images, steps: int):
    from cddfm3d.adapt import pie_embed, project

    if method.startswith("project"):
        return project(G, images, space=method.split()[1].lower(), steps=steps, progress=False)
    if method.startswith("W -> W+"):
        weights = {e: 0.0 for e in ENERGY_OFF}
    else:
        weights = {method.split(" - ")[1]: 0.0} if " - " in method else None
    return pie_embed(G, images, steps=steps, weights=weights, editor=editor, progress=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, metavar="METHOD")
    p.add_argument("--attributes", nargs="+", default=["pose", "expression", "light"])
    p.add_argument("--cache", default="out/bench_pie")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--time", action="store_true")
    p.add_argument("--thread-counts", nargs="+", type=int, default=[1, 2])
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.time:
        return timing(args)

    from cddfm3d import assets
    from cddfm3d.adapt import CrossDomainEditor, evaluate_cross_domain
    from cddfm3d.editing import FaceEditor
    from cddfm3d.editing.evaluation import derangement
    from cddfm3d.face3d.measures import attribute_distance
    from cddfm3d.world import mini_model, render, sample_coeffs

    G = assets.load("mini/generator").eval()
    editor = FaceEditor.load("mini", generator=G)
    xd = CrossDomainEditor(editor, G)
    judge = assets.load("mini/recon_independent").eval()
    model = mini_model()
    truth = sample_coeffs(args.n, seed=2001)
    images = render(truth, "human", G.resolution, seed=2001).float()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine_line('cpu', f'{args.threads} thread(s)')}\n")
    rows = []
    for method in args.methods:
        slug = "".join(c if c.isalnum() else "_" for c in method.replace("+", "plus"))
        f = cache / f"{slug}_{args.n}_{args.steps}.pt"
        if f.is_file():
            r, sec = torch.load(f, weights_only=False)
        else:
            t0 = time.perf_counter()
            r = embed(method, G, editor, images, args.steps)
            sec = (time.perf_counter() - t0) / args.n
            torch.save((r, sec), f)
        ev = evaluate_cross_domain(xd, judge, model, images, truth, attributes=tuple(args.attributes),
                                   projections=[r], seed=0)
        P_r = ev["readings"]["reconstruction"]
        t = truth.double()
        pair = derangement(args.n, 0)
        ident = sum(float(attribute_distance(model, P_r, t, a).mean() / attribute_distance(model, t, t[pair], a).mean())
                    for a in ("shape", "albedo")) / 2
        rows.append((method, sec, ev, float(r.perceptual_distance.mean()), ident))
        print(f"  {method}: {sec:.1f} s per image", flush=True)
    attrs = args.attributes
    print(f"\n{args.n} held-out renders, {args.steps} steps, edits read by mini/recon_independent "
          f"(completion / vs truth / leakage):\n")
    print("| method | s / image | PSNR dB | perceptual | id | " + " | ".join(attrs) + " | mean completion | "
          "mean leakage |")
    print("|---|" + "---:|" * (6 + len(attrs)))
    for method, sec, ev, perc, ident in rows:
        e = ev["edits"]
        cells = [f"{e[a]['completion']:.3f} / {e[a]['completion_truth']:.3f} / {e[a]['leakage_mean']:.3f}"
                 for a in attrs]
        mc = sum(e[a]["completion"] for a in attrs) / len(attrs)
        ml = sum(e[a]["leakage_mean"] for a in attrs) / len(attrs)
        print(f"| {method} | {sec:.1f} | {ev['psnr']:.2f} | {perc:.3f} | {ident:.3f} | " + " | ".join(cells)
              + f" | {mc:.3f} | {ml:.3f} |")


def timing(args) -> None:
    from cddfm3d import assets
    from cddfm3d.adapt import pie, pie_embed, project
    from cddfm3d.adapt.projection import DEFAULT_STEPS
    from cddfm3d.editing import FaceEditor
    from cddfm3d.world import render, sample_coeffs

    G = assets.load("mini/generator").eval()
    editor = FaceEditor.load("mini", generator=G)
    x = render(sample_coeffs(1, seed=2001), "human", G.resolution, seed=2001).float()
    pie_embed(G, x, steps=2, editor=editor, progress=False)                 # warm-up: assets, caches
    print(f"machine: {machine_line('cpu', 'threads as below')}\n")
    print(f"| threads | PIE ({pie.DEFAULT_STEPS} steps) s | W+ projection ({DEFAULT_STEPS} steps) s | ratio |")
    print("|---:|---:|---:|---:|")
    for n in args.thread_counts:
        torch.set_num_threads(n)
        t_pie, t_proj = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            pie_embed(G, x, editor=editor, progress=False)
            t_pie.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            project(G, x, space="w+", progress=False)
            t_proj.append(time.perf_counter() - t0)
        print(f"| {n} | {min(t_pie):.1f} | {min(t_proj):.1f} | {min(t_pie) / min(t_proj):.2f} |", flush=True)


if __name__ == "__main__":
    main()
