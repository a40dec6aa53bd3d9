"""Training and editing speed of the editing networks F^i on the shipped mini world.

    python benchmarks/bench_f.py [--pairs 1000] [--steps 100] [--device cpu|cuda] [--threads 1] [--attributes A ...]

* ``train-f``: the real command for every attribute of ``--attributes`` (default per-vertex loss, batch 64) and for
  expression with the rasterised render loss, ``--steps`` steps on ``--pairs`` pairs made by ``gen-pairs`` in a
  temporary folder; steps/s measured after start-up (two runs of different lengths, their difference) and the
  extrapolated time of 1000 steps (issue goal: each F^i trains to the goals in <= 10 min on 2 CPU cores);
* the shipped recipe of one F^i (``make editing-assets``): expression at batch 32 through T, then through the images
  (``--through image``), and the extrapolated time of its 1000 + 400 steps;
* one edit at batch 1: ``FaceEditor.edit`` (T + F^i) and ``FaceEditor.synthesize`` on the shipped networks, median
  and minimum of 50 after 5 warm-up calls (issue goal: <= 10 ms for T + F^i + synthesis on the CPU).

Prints a markdown table (paste it into benchmarks/README.md with the machine's description).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from report import machine_line, print_table, timed  # benchmarks/report.py
ATTRIBUTES = ("shape", "expression", "albedo", "pose", "light")
RECIPE_STEPS = 1000
RECIPE_BATCH = 32          # the shipped recipe: 1000 steps through T, then 400 through the images, batch 32
RECIPE_IMAGE_STEPS = 400


def edit_latency(device: str, threads: int, repeats: int = 50) -> tuple[float, float, float, float]:
    """(edit median, edit min, edit + synthesis median, edit + synthesis min) in ms at batch 1."""
    import torch

    from cddfm3d.editing import FaceEditor

    torch.set_num_threads(threads)
    editor = FaceEditor.load("mini", device)
    s = editor.styles_from_seed(0)
    edits = {"pose": {"delta": {1: 0.2}}}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run(with_image: bool) -> list[float]:
        out = []
        for i in range(repeats + 5):
            sync()
            t = time.perf_counter()
            s_g = editor.edit(s, edits)
            if with_image:
                editor.synthesize(s_g, [0])
            sync()
            if i >= 5:
                out.append((time.perf_counter() - t) * 1000)
        return out

    a, b = run(False), run(True)
    return statistics.median(a), min(a), statistics.median(b), min(b)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=1000, help="pairs made for the runs (default 1000)")
    p.add_argument("--steps", type=int, default=100, help="train-f steps of the longer run (default 100)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--attributes", nargs="+", default=list(ATTRIBUTES), choices=ATTRIBUTES,
                   help="attributes of the batch-64 per-vertex rows (default: all five)")
    args = p.parse_args(argv)
    py = [sys.executable, "-m", "cddfm3d"]
    dev = ["--device", args.device]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        timed(py + ["gen-pairs", "--out", str(tmp / "pairs"), "--count", str(args.pairs), "--seed", "5",
                    "--threads", str(args.threads)] + dev, args.threads)
        short = max(args.steps // 5, 2)
        runs = ([(a, "param", "T", 64) for a in args.attributes] + [("expression", "render", "T", 64)]
                + [("expression", "param", through, RECIPE_BATCH) for through in ("T", "image")])
        rates = {}
        for attribute, mode, through, batch in runs:
            t = {}
            for n in (short, args.steps):
                out = tmp / f"f_{attribute}_{mode}_{through}_{batch}_{n}"
                t[n] = timed(py + ["train-f", "--attribute", attribute, "--pairs", str(tmp / "pairs"), "--out",
                                   str(out), "--steps", str(n), "--loss-mode", mode, "--through", through,
                                   "--batch", str(batch), "--eval-every", str(10 ** 6),
                                   "--checkpoint-every", str(10 ** 6)] + dev, args.threads)
            rate = rates[(attribute, mode, through, batch)] = (args.steps - short) / max(t[args.steps] - t[short],
                                                                                         1e-9)
            steps = RECIPE_IMAGE_STEPS if through == "image" else RECIPE_STEPS
            rows.append(("train-f", f"{attribute}, --loss-mode {mode}, --through {through}, batch {batch}",
                         f"{rate:.2f} steps/s", f"{steps / rate / 60:.1f} min for {steps} steps"))
        recipe = (RECIPE_STEPS / rates[("expression", "param", "T", RECIPE_BATCH)]
                  + RECIPE_IMAGE_STEPS / rates[("expression", "param", "image", RECIPE_BATCH)])
        rows.append(("train-f recipe", f"expression: {RECIPE_STEPS} steps through T + {RECIPE_IMAGE_STEPS} through "
                                       f"the images, batch {RECIPE_BATCH}", "", f"{recipe / 60:.1f} min"))
    e_med, e_min, g_med, g_min = edit_latency(args.device, args.threads)
    rows.append(("FaceEditor.edit", "T + F^pose, batch 1", f"{e_med:.2f} ms ({e_min:.2f})", ""))
    rows.append(("edit + synthesize", "T + F^pose + G, batch 1", f"{g_med:.2f} ms ({g_min:.2f})", ""))
    print_table(machine_line(args.device, f"{args.threads} thread(s); {args.pairs} pairs; latency: median (min) "
                                          f"of 50"),
                ("what", "run", "rate / latency", "extrapolated"), rows, numeric_from=2)

if __name__ == "__main__":
    main()
