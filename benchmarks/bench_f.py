"""Training and editing speed of the editing networks F^i on the shipped mini world.

    python benchmarks/bench_f.py [--pairs 1000] [--steps 100] [--device cpu|cuda] [--threads 1]

* ``train-f``: the real command for every attribute (default per-vertex loss) and for one attribute with the
  rasterised render loss, ``--steps`` steps on ``--pairs`` pairs made by ``gen-pairs`` in a temporary folder;
  steps/s measured after start-up (two runs of different lengths, their difference) and the extrapolated time of
  the shipped recipe's 1000 steps (issue goal: each F^i trains to the goals in <= 10 min on 2 CPU cores);
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
    args = p.parse_args(argv)
    py = [sys.executable, "-m", "cddfm3d"]
    dev = ["--device", args.device]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        timed(py + ["gen-pairs", "--out", str(tmp / "pairs"), "--count", str(args.pairs), "--seed", "5",
                    "--threads", str(args.threads)] + dev, args.threads)
        short = max(args.steps // 5, 2)
        runs = [(a, "param") for a in ATTRIBUTES] + [("expression", "render")]
        for attribute, mode in runs:
            t = {}
            for n in (short, args.steps):
                out = tmp / f"f_{attribute}_{mode}_{n}"
                t[n] = timed(py + ["train-f", "--attribute", attribute, "--pairs", str(tmp / "pairs"), "--out",
                                   str(out), "--steps", str(n), "--loss-mode", mode, "--eval-every", str(10 ** 6),
                                   "--checkpoint-every", str(10 ** 6)] + dev, args.threads)
            rate = (args.steps - short) / max(t[args.steps] - t[short], 1e-9)
            rows.append(("train-f", f"{attribute}, --loss-mode {mode}", f"{rate:.2f} steps/s",
                         f"{RECIPE_STEPS / rate / 60:.1f} min for {RECIPE_STEPS} steps"))
    e_med, e_min, g_med, g_min = edit_latency(args.device, args.threads)
    rows.append(("FaceEditor.edit", "T + F^pose, batch 1", f"{e_med:.2f} ms ({e_min:.2f})", ""))
    rows.append(("edit + synthesize", "T + F^pose + G, batch 1", f"{g_med:.2f} ms ({g_min:.2f})", ""))
    print_table(machine_line(args.device, f"{args.threads} thread(s); {args.pairs} pairs; latency: median (min) "
                                          f"of 50"),
                ("what", "run", "rate / latency", "extrapolated"), rows, numeric_from=2)

if __name__ == "__main__":
    main()
