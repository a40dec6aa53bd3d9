"""Generator throughput on this machine: images/s by resolution, batch size and modulation path.

    python benchmarks/bench_generator.py [--threads 2] [--repeats 3] [--out benchmarks/results_generator.md]

Fused = one grouped convolution with per-sample weights; unfused = shared-weight convolution with the input
scaled by the styles and the output by the demodulation factors. `auto` is what `G.synthesis` does by default.
All variants are timed in the same run, alternating round by round, so the ratios are meaningful even on a
busy machine.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from cddfm3d.stylegan2 import Generator

CONFIGS = [  # (label, constructor kwargs)
    ("64 px config-f (27.0 M params)", dict(resolution=64)),
    ("64 px lean (channel_max 128)", dict(resolution=64, channel_max=128, w_dim=128, z_dim=128, mapping_layers=4)),
    ("64 px mini (shipped: channel_base 2048, max 128)", dict(resolution=64, channel_base=2048, channel_max=128,
                                                              w_dim=128, z_dim=128, mapping_layers=4)),
    ("256 px config-f (30.0 M params)", dict(resolution=256)),
]


def time_interleaved(fns: dict, repeats: int) -> dict:
    """Best time of each function; the variants alternate within every round, so a slow phase of a shared
    machine hits all of them alike."""
    for fn in fns.values():
        fn()  # warm-up (allocator, oneDNN primitive cache)
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="also write the markdown table to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    rows = [f"device: {dev} ({platform.processor() or platform.machine()}, {args.threads} threads), "
            f"torch {torch.__version__}; best of {args.repeats}", "",
            "| generator | batch | fused img/s | unfused img/s | auto img/s | fused speed-up | auto vs best |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for label, kw in CONFIGS:
        torch.manual_seed(0)
        G = Generator(**kw).eval().requires_grad_(False).to(dev)
        for b in args.batches:
            ws = G.mapping(torch.randn(b, G.z_dim, device=dev))
            noise = G.make_noise("const", b)
            sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

            def run(fused, G=G, ws=ws, noise=noise, sync=sync):
                G.synthesis(ws, noise=noise, fused=fused)
                sync()

            with torch.inference_mode():
                t = time_interleaved({"fused": lambda: run(True), "unfused": lambda: run(False),
                                      "auto": lambda: run(None)}, args.repeats)
            tf, tu, ta = t["fused"], t["unfused"], t["auto"]
            rows.append(f"| {label} | {b} | {b / tf:.2f} | {b / tu:.2f} | {b / ta:.2f} | {tu / tf:.2f} | "
                        f"{min(tf, tu) / ta:.2f} |")
            print(rows[-1], flush=True)
    text = "\n".join(rows)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
