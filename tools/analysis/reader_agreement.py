"""Which readers describe the generated faces: T(s), the shipped recon and the independent evaluator, compared.

    OMP_NUM_THREADS=1 python tools/analysis/reader_agreement.py --heldout out/pairs2_heldout --n 1000   # ~2 min

For ``--n`` held-out sources (a ``gen-pairs`` folder: styles and noise seeds) it synthesises each image with the
source's noise and once more with other noise (seed + ``--other-noise``), reads both with the shipped recon (R, R')
and the independent evaluator (I, I'), and predicts the styles' coefficients with T. It prints the explained
variance (:func:`cddfm3d.face3d.measures.explained_variance`, in the space where each attribute is seen) of one
reading predicting another: R -> I and T -> I (which of the two describes what a network that never saw the recon's
readings sees), T -> R (T's accuracy against its labels) and R' -> R, I' -> I (each network against itself under
other noise: its per-image reading noise). The networks disagree on generated images by offsets and scales (both
were trained on renders), so it prints the same after removing each reading's mean and fitting one least-squares
scale per attribute (``affine EV``: what one reading says about the other's variation), and the share of T's miss
of R that R's own per-image noise explains, (1 - EV(R' -> R)) / 2 / (1 - EV(T -> R)) (R' and R each carry that noise
once). Used in ``benchmarks/README.md`` ("Where P_s comes from").
"""
from __future__ import annotations

import argparse

import torch

from cddfm3d import assets
from cddfm3d.editing import ATTRIBUTES
from cddfm3d.editing.evaluation import synthesize
from cddfm3d.editing.labels import label_images
from cddfm3d.editing.pairs import PairDataset
from cddfm3d.face3d.measures import attribute_features, explained_variance
from cddfm3d.face3d.morphable import MorphableModel
from cddfm3d.world.domains import mini_model

PAIRS = (("R", "I"), ("T", "I"), ("T", "R"), ("R'", "R"), ("I'", "I"))


def affine_ev(pred: torch.Tensor, true: torch.Tensor) -> float:
    """1 - SSE / SST after centring both [B, K] feature sets and scaling ``pred`` by one least-squares factor."""
    p, t = pred - pred.mean(0), true - true.mean(0)
    a = (p * t).sum() / (p * p).sum().clamp_min(1e-30)
    return float(1 - (t - a * p).square().sum() / t.square().sum().clamp_min(1e-30))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--heldout", required=True, help="gen-pairs folder of sources no training saw")
    p.add_argument("--n", type=int, default=1000, help="sources (default 1000)")
    p.add_argument("--other-noise", type=int, default=7_777_777, help="offset of the second noise seed")
    p.add_argument("--batch", type=int, default=100)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    G = assets.load("mini/generator").eval()
    T = assets.load("mini/attribute_predictor").eval()
    R = assets.load("mini/recon").eval()
    I = assets.load("mini/recon_independent").eval()    # noqa: E741 (the evaluator's letter in the tables)
    fm = mini_model()
    held = PairDataset(args.heldout, fields=("styles", "noise_seed")).load_fields(("styles", "noise_seed"))
    s, seeds = held["styles"][:args.n], held["noise_seed"][:args.n].tolist()
    got: dict[str, list] = {k: [] for k in ("T", "R", "I", "R'", "I'")}
    with torch.no_grad():
        for i in range(0, len(s), args.batch):
            rows, sd = s[i:i + args.batch], seeds[i:i + args.batch]
            x = synthesize(G, rows, sd, "cpu")
            x2 = synthesize(G, rows, [q + args.other_noise for q in sd], "cpu")
            got["T"].append(T(rows))
            for name, net in (("R", R), ("I", I)):
                got[name].append(label_images(net, x, fm)[0])
                got[name + "'"].append(label_images(net, x2, fm)[0])
    readings = {k: torch.cat(v).double() for k, v in got.items()}
    fm64 = MorphableModel.mini(dtype=torch.float64)
    print(f"{len(s)} sources of {args.heldout}\n")
    feats = {attr: {k: attribute_features(fm64, v, attr) for k, v in readings.items()} for attr in ATTRIBUTES}
    for title, ev in (("explained variance", explained_variance), ("affine explained variance", affine_ev)):
        print(f"{title}:\n\n| attribute | " + " | ".join(f"{a} -> {b}" for a, b in PAIRS) + " |")
        print("|---|" + "---|" * len(PAIRS))
        for attr, f in feats.items():
            print(f"| {attr} | " + " | ".join(f"{ev(f[a], f[b]):.3f}" for a, b in PAIRS) + " |")
        print()
    shares = []
    for attr, f in feats.items():
        own_noise = (1 - explained_variance(f["R'"], f["R"])) / 2
        shares.append(f"{attr} {own_noise / (1 - explained_variance(f['T'], f['R'])):.2f}")
    print("share of T's miss of R explained by R's per-image noise: " + ", ".join(shares))


if __name__ == "__main__":
    main()
