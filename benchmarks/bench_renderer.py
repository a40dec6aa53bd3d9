"""Benchmark of the pure-PyTorch differentiable rasterizer (cddfm3d.face3d.raster / render).

Mesh: a BFM-sized face-like sheet (189 x 189 grid = 35,721 vertices, 70,688 triangles; BFM front: 35,709 /
70,789) bent into a dome of the size of the BFM mean face, seen by the package's Deep3D camera (focal 1015 at
224 px, distance 10 dm), with random jitter so the grid is not perfectly regular. fwd+bwd backpropagates
image.sum() to vertex positions and colours. Times are for the whole batch: median (min) over repeats.

    python benchmarks/bench_renderer.py [--threads 2] [--repeats 10] [--device cpu]

Prints a markdown table: what, mesh, resolution, batch, fwd ms, fwd+bwd ms, device (CUDA: torch and
Triton visibility backends).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cddfm3d.face3d import triton_raster  # noqa: E402
from cddfm3d.face3d.camera import PinholeCamera  # noqa: E402
from cddfm3d.face3d.mesh import ColoredMesh  # noqa: E402
from cddfm3d.face3d.raster import interpolate, rasterize  # noqa: E402
from cddfm3d.face3d.render import render  # noqa: E402


def face_like_mesh(n: int = 189, seed: int = 0):
    """World-frame vertices [N, 3] (x right, y up, z toward the camera) and faces [F, 3] of a dome."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linspace(-1, 1, n, dtype=torch.float64)
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    r2 = (xx**2 + yy**2).clamp(max=1)
    X = 0.75 * xx + 0.004 * torch.randn(n, n, generator=g, dtype=torch.float64)
    Y = 0.9 * yy + 0.004 * torch.randn(n, n, generator=g, dtype=torch.float64)
    Z = 0.55 * (1 - r2) ** 0.5 + 0.01 * torch.randn(n, n, generator=g, dtype=torch.float64)
    verts = torch.stack((X, Y, Z), -1).reshape(-1, 3).float()
    i = torch.arange(n - 1)
    a = (i[:, None] * n + i[None, :]).reshape(-1)
    quads = torch.stack((a, a + 1, a + n, a + n + 1), 1)
    faces = torch.cat((quads[:, [0, 2, 1]], quads[:, [1, 2, 3]]), 0)
    return verts, faces


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn, repeats, device):
    fn()  # warm-up
    _sync(device)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3, min(ts) * 1e3


def bench(verts_world, faces, colors, size, batch, device, repeats, supersample=None, backend="auto"):
    """supersample None: rasterize + interpolate colours at ``size``; else the full render() pipeline."""
    vw = verts_world.to(device).expand(batch, -1, -1).contiguous()
    col = colors.to(device).expand(batch, -1, -1).contiguous()
    fc = faces.to(device)
    camera = PinholeCamera()

    def forward(requires_grad):
        v = vw.clone().requires_grad_(requires_grad)
        c = col.clone().requires_grad_(requires_grad)
        if supersample is None:
            rast = rasterize(camera.scaled(size).project(v), fc, size, size, backend=backend)
            return interpolate(c, rast, fc), rast.mask
        out = ColoredMesh(v, c, fc, camera)
        image, mask = render(out, size=size, supersample=supersample, backend=backend)
        return image, mask

    def fwd():
        with torch.no_grad():
            forward(False)

    def fwd_bwd():
        img, _ = forward(True)
        img.sum().backward()

    covered = float(forward(False)[1].sum()) / batch
    return time_it(fwd, repeats, device), time_it(fwd_bwd, repeats, device), covered


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="1,8")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    verts, faces = face_like_mesh()
    colors = torch.rand(verts.shape[0], 3, generator=torch.Generator().manual_seed(1))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}, "
          f"load average at start {load:.2f}; cells: median (min) of {args.repeats} runs")
    print()
    print("| what | mesh (V / F) | output px | batch | covered px / image | fwd ms | fwd+bwd ms | "
          "fwd+bwd ms / image | device |")
    # cells: median (min) over the repeats; the min is the better estimate on a contended machine
    print("|---|---|---|---|---|---|---|---|---|")
    cases = [("rasterize + interpolate", 224, None), ("render(), supersample 2 (raster 448)", 224, 2),
             ("rasterize + interpolate", 512, None)]
    backends = ["torch"] + (["triton"] if device.type == "cuda" and triton_raster.available() else [])
    for backend in backends:
        for what, size, ss in cases:
            for batch in [int(b) for b in args.batches.split(",")]:
                f_ms, fb_ms, cov = bench(verts, faces, colors, size, batch, device, args.repeats, ss, backend)
                dev = device.type + (f" ({backend})" if device.type == "cuda" else f", {args.threads} threads")
                print(
                    f"| {what} | {verts.shape[0]:,} / {faces.shape[0]:,} | {size} | {batch} | {cov:,.0f} | "
                    f"{f_ms[0]:.1f} ({f_ms[1]:.1f}) | {fb_ms[0]:.1f} ({fb_ms[1]:.1f}) | "
                    f"{fb_ms[0] / batch:.1f} ({fb_ms[1] / batch:.1f}) | {dev} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
