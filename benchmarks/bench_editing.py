"""Throughput of the editing stage's two commands on the shipped mini world: gen-pairs and train-t.

    python benchmarks/bench_editing.py [--pairs 4000] [--steps 600] [--device cpu|cuda]

Runs the real commands in a temporary folder, as a user would (so start-up and file writing count):

* ``gen-pairs`` with ``--pairs`` pairs: one process with one thread, one process with two threads, and (CPU) two
  torchrun ranks with one thread each; pairs/s and the extrapolated wall time of 50k pairs (issue goal: <= 15 min
  on 2 CPU cores);
* ``train-t`` for ``--steps`` steps (batch 256) on those pairs with the PDC loss and with the default loss
  (feature + pdc 0.1): steps/s and the time of the shipped recipe's 3000 steps.

Prints a markdown table (paste it into benchmarks/README.md with the machine's description).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from report import machine_line, print_table, timed  # benchmarks/report.py


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=4000, help="pairs per gen-pairs run (default 4000)")
    p.add_argument("--steps", type=int, default=600, help="train-t steps per run (default 600)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    args = p.parse_args(argv)
    py = [sys.executable, "-m", "cddfm3d"]
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--nnodes", "1", "--nproc_per_node", "2",
                "--master_port", "29733", "-m", "cddfm3d"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        layouts = [("1 process x 1 thread", py, 1, ["--threads", "1"]),
                   ("1 process x 2 threads", py, 2, ["--threads", "2"])]
        if args.device == "cpu":
            layouts.append(("2 torchrun ranks x 1 thread", torchrun, 1, ["--threads", "1"]))
        for k, (label, launcher, threads, extra) in enumerate(layouts):
            out = tmp / f"pairs{k}"
            s = timed(launcher + ["gen-pairs", "--out", str(out), "--count", str(args.pairs), "--seed", "0",
                                  "--device", args.device] + extra, threads)
            rate = args.pairs / s
            rows.append(("gen-pairs", label, f"{rate:.1f} pairs/s", f"{50000 / rate / 60:.1f} min for 50k"))
        for loss in (["pdc"], ["feature", "pdc=0.1"]):
            s = timed(py + ["train-t", "--pairs", str(tmp / "pairs0"), "--out", str(tmp / f"t-{loss[0]}"), "--steps",
                            str(args.steps), "--loss", *loss, "--eval-every", str(10 * args.steps), "--device",
                            args.device], 1)
            rows.append(("train-t", f"--loss {' '.join(loss)}, 1 thread", f"{args.steps / s:.1f} steps/s",
                         f"{3000 / (args.steps / s) / 60:.1f} min for 3000 steps"))
    print_table(machine_line(args.device, "wall times include start-up and writing"),
                ("command", "layout", "rate", "extrapolated"), rows, numeric_from=2)

if __name__ == "__main__":
    main()
