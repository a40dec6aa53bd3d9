"""Per-loss ablation of the attribute predictor T: the same pairs, steps and seed, one loss at a time.

    python tools/analysis/t_loss_ablation.py --pairs out/pairs --heldout out/pairs_heldout --out out/ablation \
        [--steps 3000] [--losses pdc vdc wpdc official "feature pdc=0.1"] [--train-args "--weight-decay 0.05"]

Each loss trains T with ``python -m cddfm3d train-t`` (resumable; re-running skips finished runs) into
``OUT/<loss>``, then :func:`cddfm3d.editing.evaluate_t` measures it on the held-out pairs (another seed) against the
reconstruction network's labels: explained variance per attribute (the measures of ``cddfm3d.face3d.measures``),
the predicted/label variance ratio (collapse) and the angle errors. Prints a markdown table with the wall time of
each training run.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from cddfm3d.editing import ATTRIBUTES, PairDataset, evaluate_t
from cddfm3d.editing.predictor import load_attribute_predictor
from cddfm3d.editing.t_training import EXPORT_FILE
from cddfm3d.world import mini_model


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", required=True, help="gen-pairs folder T trains on")
    p.add_argument("--heldout", required=True, help="gen-pairs folder of another seed (evaluation)")
    p.add_argument("--out", required=True, help="folder of the runs (one sub-folder per loss)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--losses", nargs="+", default=["pdc", "vdc", "wpdc", "official", "feature pdc=0.1"],
                   help="one train-t --loss value per run (quote several terms: 'feature pdc=0.1')")
    p.add_argument("--train-args", default="", help="further train-t options shared by every run, one quoted "
                   "string (e.g. '--weight-decay 0.05', the shipped recipe's)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = PairDataset(args.heldout).load_fields(["styles", "coeffs"])
    fm = mini_model()
    rows = []
    for loss in args.losses:
        terms = shlex.split(loss)
        run = Path(args.out) / "_".join(t.replace("=", "") for t in terms)
        cmd = [sys.executable, "-m", "cddfm3d", "train-t", "--pairs", args.pairs, "--out", str(run), "--steps",
               str(args.steps), "--loss", *terms, "--device", "cpu", *shlex.split(args.train_args)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, TQDM_DISABLE="1"))
        seconds = time.perf_counter() - t0
        T = load_attribute_predictor(run / EXPORT_FILE).eval()
        with torch.no_grad():
            r = evaluate_t(T, data["styles"], data["coeffs"], fm)
        rows.append((loss, seconds, r))
        print(f"{loss}: done in {seconds:.0f} s", file=sys.stderr)
    print(f"T per loss: {args.steps} steps {args.train_args} on {args.pairs}, evaluated on {len(data['styles'])} "
          f"pairs of {args.heldout}; EV (variance ratio) per attribute, angle MAE pitch / yaw / roll in degrees\n")
    print("| loss | " + " | ".join(ATTRIBUTES) + " | angles (deg) | train time |")
    print("|---|" + "---:|" * (len(ATTRIBUTES) + 2))
    for loss, seconds, r in rows:
        cells = [f"{r[f'ev_{a}']:.3f} ({r[f'var_ratio_{a}']:.2f})" for a in ATTRIBUTES]
        angles = " / ".join(f"{r[f'angle_deg_{k}']:.2f}" for k in ("pitch", "yaw", "roll"))
        print(f"| {loss} | " + " | ".join(cells) + f" | {angles} | {seconds:.0f} s |")


if __name__ == "__main__":
    main()
