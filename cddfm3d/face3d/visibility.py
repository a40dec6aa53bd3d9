"""Stage A of the rasterizer: which triangle is visible at each pixel (no autograd), in tensor ops.

Every drawable triangle's pixel bounding box is enumerated as a flat list of (triangle, pixel) candidate pairs
(variable-length expansion, no per-triangle Python loop), edge functions decide coverage, and the z-test is one
``scatter_reduce(amin)`` of packed int64 keys ``(float32 depth bits << 32) | face id`` into a per-pixel buffer.
Ties resolve to the smaller face id, so the result is deterministic. The Triton kernel (``triton_raster.py``)
computes the same buffer; both use :func:`triangle_setup` and the key layout defined here, and ``raster.py``
(Stage B) re-evaluates the winners with :func:`edge_functions`. Conventions: see ``raster.py``.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SENTINEL", "LOW32", "edge_functions", "triangle_setup", "zbuffer_torch"]

SENTINEL = torch.iinfo(torch.int64).max  # key of an empty pixel
LOW32 = 0xFFFFFFFF                        # mask of the face id in a key
# Candidate (triangle, pixel) pairs evaluated per pass. On the CPU small passes keep the ~40 temporaries
# in cache (2**17 measured 2-4x faster than 2**22 at 448 px, batch 8); on the GPU big passes amortise launches.
CHUNK_CPU = 1 << 17
CHUNK_GPU = 1 << 22


def edge_functions(x0, x1, x2, y0, y1, y2):
    """Edge functions w_i (= 2 * signed sub-area opposite vertex i) at the sample point.

    Arguments are vertex coordinates minus the sample coordinates. w_0 = E(v1, v2), w_1 = E(v2, v0),
    w_2 = E(v0, v1) with E(s, e) = xs*ye - xe*ys. E(e, s) == -E(s, e) exactly in floating point, so two
    triangles sharing an edge never both miss a sample: the mesh is watertight. Inputs are separate
    contiguous vectors (structure of arrays): strided [P, 3] columns made every op several times slower.
    """
    return x1 * y2 - x2 * y1, x2 * y0 - x0 * y2, x0 * y1 - x1 * y0


def _depth_key(depth: Tensor, positive: bool) -> Tensor:
    """Monotone int64 image of float32 depth, shifted to the high 32 bits (low bits hold the face id)."""
    bits = depth.float().view(torch.int32)
    if not positive:
        # Negative floats order backwards as ints; flipping the 31 magnitude bits makes the map monotone.
        bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return bits.long() * (1 << 32)  # multiply: int64 `<<` is unvectorized on CPU (10x slower)


def _corners(verts: Tensor, faces: Tensor) -> Tensor:
    """[3 coords, 3 corners, B*F] gathered vertex coordinates, every row contiguous."""
    B, N, _ = verts.shape
    F = faces.shape[0]
    vt = verts.permute(2, 0, 1).reshape(3 * B, N)  # [coord*B, N]
    g = vt.index_select(1, faces.t().reshape(-1))  # [coord*B, corner*F]
    return g.view(3, B, 3, F).transpose(1, 2).reshape(3, 3, B * F)


def triangle_setup(verts: Tensor, faces: Tensor, height: int, width: int, perspective: bool):
    """Bounding boxes and a structure-of-arrays table of the triangles that can cover a sample.

    ``verts`` [B, N, 3] (x, y, depth) in pixels and ``faces`` [F, 3] long, already validated (see
    ``raster.rasterize``). Triangles that are degenerate, non-finite, outside the image or (with
    ``perspective``) touch ``z <= 0`` are left out.

    Returns (ids, counts, table): ``ids`` [T] long, flat index b*F + f of drawable triangles; ``counts`` [T]
    samples in each box; ``table`` [13, T] rows (x0, x1, x2, y0, y1, y2, q0, q1, q2, sign(area),
    box x0, box y0, box width) with q = 1/z (perspective) or z.
    """
    c = _corners(verts, faces)
    x, y, z = c[0], c[1], c[2]
    # Sample points are integer coordinates: the box is [ceil(min), floor(max)], clamped to the image.
    # Clamping in float first keeps huge coordinates from overflowing the integer cast.
    bx0 = torch.minimum(torch.minimum(x[0], x[1]), x[2]).ceil_().clamp_(0, width)
    bx1 = torch.maximum(torch.maximum(x[0], x[1]), x[2]).floor_().clamp_(-1, width - 1)
    by0 = torch.minimum(torch.minimum(y[0], y[1]), y[2]).ceil_().clamp_(0, height)
    by1 = torch.maximum(torch.maximum(y[0], y[1]), y[2]).floor_().clamp_(-1, height - 1)
    bw = bx1.sub_(bx0).add_(1)
    bh = by1.sub_(by0).add_(1)
    area2 = (x[1] - x[0]) * (y[2] - y[0]) - (x[2] - x[0]) * (y[1] - y[0])
    # NaN/inf anywhere makes the area non-finite (inf - inf = nan), which the test below rejects.
    ok = (bw > 0) & (bh > 0) & (area2 != 0) & torch.isfinite(area2 + z.sum(0))
    if perspective:
        ok &= (z > 0).all(0)
    ids = ok.nonzero().squeeze(1)
    q = z.reciprocal() if perspective else z
    table = torch.cat((x, y, q, area2.sign().unsqueeze(0), bx0[None], by0[None], bw[None]), 0)
    table = table.index_select(1, ids)
    counts = (bw.index_select(0, ids) * bh.index_select(0, ids)).long()
    return ids, counts, table


def zbuffer_torch(verts: Tensor, faces: Tensor, height: int, width: int, perspective: bool) -> Tensor:
    """Stage A in tensor ops: int64 buffer [B*H*W] of packed (depth, face) keys, ``SENTINEL`` if empty.

    Arguments as :func:`triangle_setup`. A key is ``(depth_bits << 32) + f`` where ``depth_bits`` orders like
    the float32 depth (perspective: ``1 / sum(l_i / z_i)``; otherwise the linear ``sum(l_i z_i)``) and ``f`` is
    the face index; the minimum key per pixel is the nearest triangle (ties: the smaller face index).
    Candidate pairs are evaluated ``CHUNK_CPU`` / ``CHUNK_GPU`` at a time.
    """
    B = verts.shape[0]
    F = faces.shape[0]
    dev = verts.device
    zbuf = torch.full((B * height * width,), SENTINEL, dtype=torch.int64, device=dev)
    ids, counts, table = triangle_setup(verts, faces, height, width, perspective)
    if ids.numel() == 0:
        return zbuf
    ends = counts.cumsum(0)
    starts = ends - counts
    total = int(ends[-1])
    chunk = CHUNK_CPU if dev.type == "cpu" else CHUNK_GPU
    for p0 in range(0, total, chunk):
        p1 = min(p0 + chunk, total)
        if p0 == 0 and p1 == total:
            t0, t1 = 0, ids.numel()
        else:  # the triangles overlapping pair range [p0, p1); a big triangle may span several passes
            t0 = int(torch.searchsorted(ends, torch.tensor(p0, device=dev), right=True))
            t1 = int(torch.searchsorted(ends, torch.tensor(p1 - 1, device=dev), right=True)) + 1
        n = ends[t0:t1].clamp(max=p1) - starts[t0:t1].clamp(min=p0)
        t = torch.repeat_interleave(torch.arange(t0, t1, device=dev), n, output_size=p1 - p0)
        off = torch.arange(p0, p1, device=dev).sub_(starts.index_select(0, t))
        tt = table.index_select(1, t)  # [13, P]
        bw = tt[12].long()
        row = off.div(bw, rounding_mode="floor")
        py = tt[11].long().add_(row)
        px = tt[10].long().add_(off.sub_(row.mul_(bw)))
        pxf = px.to(tt.dtype)
        pyf = py.to(tt.dtype)
        w0, w1, w2 = edge_functions(tt[0] - pxf, tt[1] - pxf, tt[2] - pxf, tt[3] - pyf, tt[4] - pyf, tt[5] - pyf)
        s = tt[9]
        inside = torch.minimum(torch.minimum(w0 * s, w1 * s), w2 * s) >= 0  # 2x faster than three compares
        # depth = sum(l_i z_i) (linear) or 1 / sum(l_i / z_i) (perspective), with l_i = w_i / sum(w)
        num = w0 * tt[6] + w1 * tt[7] + w2 * tt[8]
        den = w0 + w1 + w2
        d = den.div_(num) if perspective else num.div_(den)
        gid = ids.index_select(0, t)
        b = gid.div(F, rounding_mode="floor")
        key = _depth_key(d, perspective).add_(gid - b * F)
        # Pairs outside the triangle get the empty key; arithmetic is 3x faster than torch.where here.
        # (key * in + S * out: no intermediate overflows, also for the negative keys of orthographic depth)
        keep = inside.long()
        key = key.mul_(keep).add_(keep.sub_(1).mul_(-SENTINEL))
        flat = b.mul_(height).add_(py).mul_(width).add_(px)
        zbuf.scatter_reduce_(0, flat, key, reduce="amin", include_self=True)
    return zbuf
