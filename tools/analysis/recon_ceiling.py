"""How much of each attribute a 64-px render of the mini world holds: analysis-by-synthesis from the truth.

    OMP_NUM_THREADS=1 python tools/analysis/recon_ceiling.py --n 64            # ~10 min on one CPU core

Draws ``--n`` faces from the world's prior (``cddfm3d.world.sample_coeffs``, a seed no shipped dataset uses),
renders them clean in the "human" domain at ``--size`` px, and fits coefficients to each image with
:func:`cddfm3d.face3d.fitting.fit` (photometric + 68-landmark losses at the true landmarks; the prior terms --
coefficient, monochrome-light and skin-reflectance regularisers -- are off unless ``--deep3d-weights``; with
``--no-landmarks`` the photometric loss alone, as a network sees only pixels), twice:

* ``truth``: starting from the true coefficients. If the image pins an attribute, the fit stays there; if it
  drifts, the image does not hold that attribute at this size, and no network can read it from the image either.
* ``mean``: starting from the mean face (zeros), as a plain fit would.

For each start it prints, as a markdown table, the explained variance of the fitted coefficients in the space
where each attribute is seen (:mod:`cddfm3d.face3d.measures`: ``ev_shape`` ... ``ev_pose``), the mean absolute
pose error per angle, the mean landmark error and the photometric loss at the truth and at the fit (a fit that
ends below the truth's loss while it drifts away from it shows the image prefers other coefficients).
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from cddfm3d.face3d.fitting import fit
from cddfm3d.face3d.measures import ATTRIBUTES, attribute_features, explained_variance
from cddfm3d.face3d.morphable import SLICES
from cddfm3d.world import mini_model, render, sample_coeffs


def run_fit(images, landmarks, init, steps, lr, weights, batch):
    """Fit in batches (``landmarks`` None: photometric only); -> (fitted coeffs [N, 257], photometric loss at the
    start, at the end), averaged over the images."""
    fm = mini_model()
    out, first, last = [], {}, {}
    for i in range(0, len(images), batch):
        sl = slice(i, i + batch)
        res = fit(images[sl], fm, landmarks=None if landmarks is None else landmarks[sl],
                  init=None if init is None else init[sl], steps=steps, lr=lr, weights=weights, progress=False)
        out.append(res.coeffs)
        n = len(res.coeffs)
        first["color"] = first.get("color", 0.0) + res.initial_losses["color"] * n
        last["color"] = last.get("color", 0.0) + res.losses["color"] * n
    total = len(images)
    return torch.cat(out), {k: v / total for k, v in first.items()}, {k: v / total for k, v in last.items()}


def scores(pred: torch.Tensor, true: torch.Tensor, size: int) -> dict:
    """ev_<attribute> (explained variance in each attribute's space), the mean absolute angle errors (deg) and the
    mean 68-landmark error (px at ``size``)."""
    fm = mini_model()
    with torch.no_grad():
        lm = (fm(pred.float(), image_size=size).landmarks - fm(true.float(), image_size=size).landmarks)
    out = {"lm_px": float(lm.norm(dim=-1).mean())}
    for a in ATTRIBUTES:
        out[f"ev_{a}"] = explained_variance(attribute_features(fm, pred.float(), a),
                                            attribute_features(fm, true.float(), a))
    err = (pred[:, SLICES["angle"]] - true[:, SLICES["angle"]]).abs().rad2deg().mean(0)
    out.update({f"{k}_deg": float(v) for k, v in zip(("pitch", "yaw", "roll"), err, strict=True)})
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=64, help="faces (default 64)")
    p.add_argument("--size", type=int, default=64, help="image size in px (default 64)")
    p.add_argument("--seed", type=int, default=90210, help="coefficient seed (default 90210)")
    p.add_argument("--render-seed", type=int, default=7, help="background seed of the renders (default 7)")
    p.add_argument("--truth-steps", type=int, default=300, help="steps of the fit from the truth (no pose stage)")
    p.add_argument("--mean-steps", type=int, nargs=2, default=(50, 350), metavar=("POSE", "ALL"),
                   help="pose-stage and all-stage steps of the fit from the mean face (default 50 350)")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate of fit (default 0.05, fit's own)")
    p.add_argument("--batch", type=int, default=32, help="images per fit call (default 32)")
    p.add_argument("--deep3d-weights", action="store_true",
                   help="keep Deep3D's regularisers (reg, gamma, reflc) instead of photometric + landmark only")
    p.add_argument("--no-landmarks", action="store_true", help="photometric loss only (no landmark targets)")
    p.add_argument("--starts", nargs="+", default=("truth", "mean"), choices=("truth", "mean"))
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    fm = mini_model()
    true = sample_coeffs(args.n, seed=args.seed)
    images = ((render(true, "human", args.size, seed=args.render_seed) + 1) / 2).clamp(0, 1)
    with torch.no_grad():
        landmarks = fm(true, image_size=args.size).landmarks
    weights = None if args.deep3d_weights else {"reg": 0.0, "gamma": 0.0, "reflc": 0.0}
    if args.no_landmarks:
        landmarks = None
    rows = []
    for start in args.starts:
        t0 = time.perf_counter()
        if start == "truth":
            fitted, first, last = run_fit(images, landmarks, true, (0, args.truth_steps), args.lr, weights, args.batch)
        else:
            fitted, first, last = run_fit(images, landmarks, None, tuple(args.mean_steps), args.lr, weights,
                                          args.batch)
        row = {"start": start, **scores(fitted, true, args.size), "color_truth": float("nan"),
               "color_fit": last["color"], "seconds": time.perf_counter() - t0}
        if start == "truth":
            row["color_truth"] = first["color"]
        rows.append(row)
        print(f"[{start}] done in {row['seconds']:.0f} s", flush=True)

    weights_name = ("Deep3D weights" if args.deep3d_weights else "no prior terms") + (
        ", photometric loss only" if args.no_landmarks else ", photometric + true 68-landmark losses")
    print(f"\n{args.n} clean {args.size}-px 'human' renders (coefficient seed {args.seed}), fit lr {args.lr}, "
          f"{weights_name}\n")
    cols = ["start", "ev_shape", "ev_expression", "ev_albedo", "ev_light", "ev_pose", "pitch_deg", "yaw_deg",
            "roll_deg", "lm_px", "color_truth", "color_fit", "seconds"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        cells = [row[c] if isinstance(row[c], str) else
                 ("-" if math.isnan(row[c]) else f"{row[c]:.0f}" if c == "seconds" else f"{row[c]:.3f}")
                 for c in cols]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
