"""Cross-domain editing (issue 12 §2 and §4): latent consistency per fine-tuning mode, and edits of inverted
out-of-domain renders scored against their true coefficients.

    python benchmarks/bench_cross_domain.py --domain toon --heldout out/world/heldout \
        --generator "affine=mini/generator_toon" --generator "none=out/adapt/x/generator.safetensors" \
        [--n-consistency 1000] [--n 24] [--steps 300] [--spaces w+ s] [--attributes pose expression] \
        [--fd-train-data out/adapt/world_toon --n-fd 2000]

Each ``--generator NAME=SOURCE`` is a fine-tuned generator: an asset name or a generator file (a ``finetune`` run's
``generator.safetensors``). For each the script prints

1. the latent consistency with ``mini/generator`` (:func:`cddfm3d.adapt.latent_consistency`: the same latent
   through both generators, read by ``mini/recon`` and ``mini/recon_<domain>``; EV and distance relative to random
   faces per attribute; the human generator's noise ceiling as the last row);
2. the cross-domain edit table (:func:`cddfm3d.adapt.evaluate_cross_domain`): ``--n`` held-out renders of the
   domain (``--heldout``, made by ``make-world`` with another seed than any training data), projected into the
   generator in each of ``--spaces`` with ``--steps`` steps, edited toward another source's true coefficients of
   each of ``--attributes`` by the human T and F^i, read by ``mini/recon_<domain>``;
3. with ``--fd-train-data`` (the renders the generators were fine-tuned on): each generator's Fréchet distance to
   ``--n-fd`` held-out renders in ``mini/recon_<domain>``'s features, as ``ship-domain`` measures it, with the floor
   (training renders against held-out renders) and the human generator's.

Prints markdown (paste it into benchmarks/README.md with the command).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from report import machine_line  # benchmarks/report.py


def load_generator_source(source: str):
    from cddfm3d import assets
    from cddfm3d.stylegan2 import load_generator

    return load_generator(source) if Path(source).is_file() else assets.load(source)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--domain", default="toon")
    p.add_argument("--heldout", required=True)
    p.add_argument("--generator", action="append", required=True, metavar="NAME=SOURCE")
    p.add_argument("--n-consistency", type=int, default=1000)
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--spaces", nargs="+", default=["w+", "s"])
    p.add_argument("--attributes", nargs="+", default=["pose", "expression"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-edits", action="store_true")
    p.add_argument("--fd-train-data", default=None)
    p.add_argument("--n-fd", type=int, default=2000)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from cddfm3d import assets
    from cddfm3d.adapt import (CrossDomainEditor, consistency_table, cross_domain_table, evaluate_cross_domain,
                               latent_consistency)
    from cddfm3d.editing import FaceEditor
    from cddfm3d.images import from_uint8
    from cddfm3d.world import mini_model
    from cddfm3d.world.datasets import WorldDataset

    editor = FaceEditor.load("mini")
    model = mini_model()
    net_h, net_d = assets.load("mini/recon"), assets.load(f"mini/recon_{args.domain}")
    gens = dict(g.split("=", 1) for g in args.generator)
    print(f"machine: {machine_line('cpu', f'{args.threads} thread(s)')}\n")
    t0 = time.perf_counter()
    cons = {name: latent_consistency(editor.G, load_generator_source(src), net_h, net_d, model,
                                     n=args.n_consistency, seed=1) for name, src in gens.items()}
    print(f"Latent consistency, {args.domain}, {args.n_consistency} latents ({time.perf_counter() - t0:.0f} s):\n")
    print(consistency_table(cons))
    if args.fd_train_data:
        print_fd(args, gens, editor.G, net_d)
    if args.skip_edits:
        return
    held = WorldDataset(args.heldout, args.domain, limit=args.n)
    images = from_uint8(held.images[:args.n])
    truth = held.coeffs[:args.n]
    results = {}
    for name, src in gens.items():
        xd = CrossDomainEditor(editor, load_generator_source(src))
        for space in args.spaces:
            t0 = time.perf_counter()
            results[f"{name}, {space}"] = r = evaluate_cross_domain(
                xd, net_d, model, images, truth, attributes=tuple(args.attributes), space=space, steps=args.steps,
                batch=8, seed=0)
            print(f"  {name}, {space}: {time.perf_counter() - t0:.0f} s", flush=True)
            del r["projections"]
    print(f"\nCross-domain edits, {args.domain}: {args.n} held-out renders ({args.heldout}), {args.steps} projection "
          f"steps, swap targets = another source's true coefficients, read by mini/recon_{args.domain}:\n")
    print(cross_domain_table(results))
    print("\nT(s) of the inversions against the true coefficients (EV per attribute):\n")
    print("| setting | " + " | ".join(next(iter(results.values()))["t_on_inverted"]) + " |")
    print("|---|" + "---:|" * 5)
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in r["t_on_inverted"].values()) + " |")


def print_fd(args, gens: dict, G_human, net_d) -> None:
    """Fréchet distances in the domain network's features (cddfm3d.world.quality.fd_table, as ship-domain measures
    them; ship-domain uses 2000 images per side)."""
    from cddfm3d.world.datasets import WorldDataset
    from cddfm3d.world.quality import fd_table, feature_spread, generate

    held = WorldDataset(args.heldout, args.domain, limit=args.n_fd)
    train = WorldDataset(args.fd_train_data, args.domain, limit=args.n_fd)
    if min(len(held), len(train)) < args.n_fd:
        raise SystemExit(f"--n-fd {args.n_fd}: {args.heldout} holds {len(held)} and {args.fd_train_data} "
                         f"{len(train)} {args.domain} renders")
    samples = {"floor (training renders)": train.images,
               "human generator (before fine-tuning)": generate(G_human, args.n_fd, seed=0),
               **{name: generate(load_generator_source(src), args.n_fd, seed=0) for name, src in gens.items()}}
    fds = fd_table(net_d, held.images, samples)
    spread = feature_spread(net_d, held.images)
    print(f"\nFréchet distance to {args.n_fd} held-out {args.domain} renders in mini/recon_{args.domain}'s features, "
          f"and the spread of {args.n_fd} samples in those features relative to the held-out renders' "
          f"(world.quality.feature_spread; a collapsed generator scores low):\n")
    print("| generator | FD | spread / renders' |\n|---|---:|---:|")
    for name, x in samples.items():
        print(f"| {name} | {fds[name]:.3f} | {feature_spread(net_d, x) / spread:.3f} |")


if __name__ == "__main__":
    main()
