"""Triton kernel for the rasterizer's visibility pass (Stage A), used on CUDA when Triton is importable.

Same inputs and the same int64 z-buffer as ``visibility.zbuffer_torch`` (bit-identical for float32 vertices),
but the (triangle, pixel) pair enumeration, edge functions, depth and z-test are fused into one kernel:
each program takes a contiguous block of pair indices, finds each pair's triangle by binary search in the
cumulative box counts (so big and tiny triangles balance evenly) and does ``atomic_min`` on the packed
(depth, face) key. Triangle setup (bounding boxes, table) stays in tensor ops and is shared
(``visibility.triangle_setup``).

Bit-identity with the tensor path needs unfused IEEE arithmetic: ``enable_fp_fusion=False`` (no FMA
contraction, which would also break the exact antisymmetry of the edge functions that keeps meshes
watertight) and ``div_rn`` (Triton's default fp32 division is approximate).

Tested on the CPU under Triton's interpreter (``TRITON_INTERPRET=1``). Float64 input uses the tensor path.
"""
from __future__ import annotations

import functools
import os
import warnings

import torch

from .visibility import SENTINEL, triangle_setup, zbuffer_torch

_BLOCK = 256


def available() -> bool:
    """True if Triton can be imported and a CUDA device exists (or the interpreter is switched on)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available() or interpreting()


def interpreting() -> bool:
    """True when ``TRITON_INTERPRET`` asks for Triton's CPU interpreter (1/true/yes/on)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


@functools.cache
def _kernel(interpret: bool):
    # Built lazily (and cached per mode) so that importing this module never needs Triton, and a test can
    # switch TRITON_INTERPRET on before the first call: triton.jit picks interpreter or compiler at decoration.
    import triton
    import triton.language as tl

    @triton.jit
    def zbuffer_kernel(table_ptr, T, ids_ptr, ends_ptr, counts_ptr, zbuf_ptr, total, F, H, W,
                       NSTEPS: tl.constexpr, PERSPECTIVE: tl.constexpr, BLOCK: tl.constexpr):
        p = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        valid = p < total
        # First triangle t with ends[t] > p (ends = inclusive cumsum of box sizes).
        # (p * 0, not tl.zeros: that is a @jit library function, which the interpreter cannot call when
        # Triton was first imported with the interpreter off.)
        lo = p * 0
        hi = p * 0 + T
        for _ in tl.static_range(NSTEPS):
            active = lo < hi
            mid = (lo + hi) // 2
            e = tl.load(ends_ptr + mid, mask=valid & active, other=0)
            right = e <= p
            lo = tl.where(active & right, mid + 1, lo)
            hi = tl.where(active & (e > p), mid, hi)
        t = tl.minimum(lo, T - 1)
        off = p - (tl.load(ends_ptr + t, mask=valid, other=0) - tl.load(counts_ptr + t, mask=valid, other=0))
        x0 = tl.load(table_ptr + t, mask=valid, other=0.0)
        # Masked-out lanes load a harmless unit triangle (no 0/0 in the interpreter's numpy arithmetic).
        x1 = tl.load(table_ptr + T + t, mask=valid, other=1.0)
        x2 = tl.load(table_ptr + 2 * T + t, mask=valid, other=0.0)
        y0 = tl.load(table_ptr + 3 * T + t, mask=valid, other=0.0)
        y1 = tl.load(table_ptr + 4 * T + t, mask=valid, other=0.0)
        y2 = tl.load(table_ptr + 5 * T + t, mask=valid, other=1.0)
        q0 = tl.load(table_ptr + 6 * T + t, mask=valid, other=1.0)
        q1 = tl.load(table_ptr + 7 * T + t, mask=valid, other=0.0)
        q2 = tl.load(table_ptr + 8 * T + t, mask=valid, other=0.0)
        s = tl.load(table_ptr + 9 * T + t, mask=valid, other=0.0)
        bx0 = tl.load(table_ptr + 10 * T + t, mask=valid, other=0.0).to(tl.int64)
        by0 = tl.load(table_ptr + 11 * T + t, mask=valid, other=0.0).to(tl.int64)
        bw = tl.load(table_ptr + 12 * T + t, mask=valid, other=1.0).to(tl.int64)
        row = off // bw
        py = by0 + row
        px = bx0 + (off - row * bw)
        pxf = px.to(tl.float32)
        pyf = py.to(tl.float32)
        X0 = x0 - pxf
        X1 = x1 - pxf
        X2 = x2 - pxf
        Y0 = y0 - pyf
        Y1 = y1 - pyf
        Y2 = y2 - pyf
        # Same expressions, same order of operations as visibility.edge_functions / zbuffer_torch.
        w0 = X1 * Y2 - X2 * Y1
        w1 = X2 * Y0 - X0 * Y2
        w2 = X0 * Y1 - X1 * Y0
        inside = (w0 * s >= 0) & (w1 * s >= 0) & (w2 * s >= 0)
        num = w0 * q0 + w1 * q1 + w2 * q2
        den = w0 + w1 + w2
        if PERSPECTIVE:
            d = tl.math.div_rn(den, num)
        else:
            d = tl.math.div_rn(num, den)
        bits = d.to(tl.int32, bitcast=True)
        if not PERSPECTIVE:
            bits = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
        gid = tl.load(ids_ptr + t, mask=valid, other=0)
        b = gid // F
        key = (bits.to(tl.int64) << 32) + (gid - b * F)
        flat = (b * H + py) * W + px
        tl.atomic_min(zbuf_ptr + flat, key, mask=valid & inside, sem="relaxed")  # order-free: min commutes

    return zbuffer_kernel


def zbuffer(verts: torch.Tensor, faces: torch.Tensor, height: int, width: int, perspective: bool) -> torch.Tensor:
    """Stage A with the Triton kernel; same contract as :func:`visibility.zbuffer_torch`."""
    if verts.dtype != torch.float32:  # the kernel's arithmetic is float32; float64 stays exact on the tensor path
        return zbuffer_torch(verts, faces, height, width, perspective)
    B = verts.shape[0]
    F = faces.shape[0]
    zbuf = torch.full((B * height * width,), SENTINEL, dtype=torch.int64, device=verts.device)
    ids, counts, table = triangle_setup(verts, faces, height, width, perspective)
    T = ids.numel()
    if T == 0:
        return zbuf
    ends = counts.cumsum(0)
    total = int(ends[-1])
    grid = ((total + _BLOCK - 1) // _BLOCK,)
    _kernel(interpreting())[grid](
        table.contiguous(), T, ids, ends, counts, zbuf, total, F, height, width,
        NSTEPS=max(1, T.bit_length()), PERSPECTIVE=bool(perspective), BLOCK=_BLOCK, enable_fp_fusion=False,
    )
    return zbuf


_warned = False


def zbuffer_or_fallback(verts, faces, height, width, perspective) -> torch.Tensor:
    """``zbuffer``, falling back to the tensor path (with one warning) if the kernel cannot be built/run."""
    global _warned
    try:
        return zbuffer(verts, faces, height, width, perspective)
    except Exception as exc:  # a broken Triton/driver setup must not break rendering
        if not _warned:
            warnings.warn(f"Triton rasterizer unavailable ({type(exc).__name__}: {exc}); using the tensor path",
                          RuntimeWarning, stacklevel=3)
            _warned = True
        return zbuffer_torch(verts, faces, height, width, perspective)
