"""Differentiable triangle rasterizer in pure PyTorch (CPU and CUDA).

Design (see ``reference/face3d.md`` §4.4): visibility and differentiation are split.

* **Stage A — visibility, no autograd.** Every triangle's pixel bounding box is enumerated as a flat list
  of (triangle, pixel) candidate pairs (variable-length expansion, no per-triangle Python loop), edge
  functions decide coverage, and the z-test is a single ``scatter_reduce(amin)`` of packed int64 keys
  ``(float32 depth bits << 32) | face id`` into a per-pixel buffer. Ties resolve to the smaller face id, so
  the result is deterministic. The tensor-op version lives in ``visibility.py``; on CUDA with Triton
  importable this pass may run as a Triton kernel (``triton_raster.py``); the buffer it produces is identical.
* **Stage B — differentiable re-evaluation.** Only the winning triangle of each covered pixel is
  gathered and its (perspective-correct) barycentrics are recomputed with autograd, so the backward pass
  touches O(covered pixels) values. Gradients are the interior barycentric gradients (like nvdiffrast
  without its antialias op, which is what Deep3D trains with); the coverage mask has no gradient.

Conventions
-----------
``verts[..., :2]`` are pixel coordinates: pixel (row ``i``, column ``j``) is sampled at ``x = j, y = i``
(the sample point is the integer coordinate, not ``j + 0.5``). ``verts[..., 2]`` is the camera-space view
depth ``z > 0`` (smaller is nearer). Because screen positions are ``f * X / z + c``, quantities that are
linear in camera space are linear in screen space only after division by ``z``; the barycentrics returned
are therefore perspective-correct: with screen-space barycentrics ``l_i``,
``bary_i = (l_i / z_i) / sum_j (l_j / z_j)`` and ``depth = 1 / sum_j (l_j / z_j)``.
Triangles with a vertex at ``z <= 0`` (behind the camera) are not drawn (there is no near-plane clipping).
With ``perspective_correct=False`` (orthographic input) the third coordinate is any depth value, the
barycentrics are the screen-space ones and depth is interpolated linearly.

No back-face culling: both windings are drawn. A pixel centre exactly on a shared edge is covered by both
triangles (inclusive edge test, evaluated antisymmetrically so meshes are watertight) and the z-test decides.
"""
from __future__ import annotations

import os

import torch
from torch import Tensor

from . import triton_raster
from .visibility import LOW32, SENTINEL, edge_functions, zbuffer_torch

__all__ = ["Fragments", "rasterize", "interpolate", "interpolate_packed"]


class Fragments:
    """Rasterizer output.

    Dense per-pixel tensors (background: ``face_index == -1``, ``bary == 0``, ``depth == 0``), built on
    first access from the packed form (a render that only interpolates colours never pays for them):

    * ``face_index`` [B, H, W] long — index into ``faces`` of the visible triangle; ``mask`` = face_index >= 0.
    * ``bary`` [B, H, W, 3] — perspective-correct barycentrics of that triangle's vertices
      (differentiable w.r.t. ``verts``).
    * ``depth`` [B, H, W] — interpolated view depth (differentiable).

    Packed form of the P covered pixels (what ``interpolate`` uses, O(P) instead of O(B*H*W)):

    * ``pix_index`` [P] long — flat index into B*H*W, ascending.
    * ``pix_face`` [P] long — face index; ``pix_bary`` [P, 3]; ``pix_depth`` [P].
    """

    def __init__(self, size, pix_index, pix_face, pix_bary, pix_depth, num_vertices):
        self.size = tuple(size)  # (B, H, W)
        self.pix_index = pix_index
        self.pix_face = pix_face
        self.pix_bary = pix_bary
        self.pix_depth = pix_depth
        self.num_vertices = num_vertices
        self._dense = {}

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.size

    def _scatter(self, name, values, fill):
        if name not in self._dense:
            B, H, W = self.size
            out = values.new_full((B * H * W, *values.shape[1:]), fill)
            # index_copy (not advanced-index assignment): its backward is a plain gather.
            self._dense[name] = out.index_copy(0, self.pix_index, values).view(B, H, W, *values.shape[1:])
        return self._dense[name]

    @property
    def face_index(self) -> Tensor:
        return self._scatter("face_index", self.pix_face, -1)

    @property
    def mask(self) -> Tensor:
        """[B, H, W] bool, True where a triangle is visible."""
        return self._scatter("mask", torch.ones_like(self.pix_index, dtype=torch.bool), False)

    @property
    def bary(self) -> Tensor:
        return self._scatter("bary", self.pix_bary, 0)

    @property
    def depth(self) -> Tensor:
        return self._scatter("depth", self.pix_depth, 0)

    def __repr__(self) -> str:
        return f"Fragments(size={self.size}, covered={self.pix_index.numel()})"


# --------------------------------------------------------------------------------------------------
# input checks


def _check_verts(verts: Tensor, name: str = "verts") -> None:
    if not isinstance(verts, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, found {type(verts).__name__}")
    if verts.dim() != 3 or verts.shape[-1] != 3:
        raise ValueError(f"{name}: expected shape [B, N, 3] (x, y, depth), found {list(verts.shape)}")
    if verts.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name}: expected dtype float32 or float64, found {verts.dtype}")
    if verts.shape[0] == 0 or verts.shape[1] == 0:
        raise ValueError(f"{name}: expected B >= 1 and N >= 1, found shape {list(verts.shape)}")


def _check_faces(faces: Tensor, num_vertices: int, device: torch.device) -> Tensor:
    if not isinstance(faces, Tensor):
        raise TypeError(f"faces: expected a torch.Tensor, found {type(faces).__name__}")
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces: expected shape [F, 3], found {list(faces.shape)}")
    if faces.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"faces: expected dtype int64 or int32, found {faces.dtype}")
    if faces.device != device:
        raise ValueError(f"faces: expected device {device} (same as the vertices), found {faces.device}")
    if faces.shape[0] == 0:
        raise ValueError("faces: expected at least one triangle, found F = 0")
    lo, hi = int(faces.min()), int(faces.max())
    if lo < 0 or hi >= num_vertices:
        raise ValueError(f"faces: expected vertex indices in [0, {num_vertices - 1}], found range [{lo}, {hi}]")
    return faces.long()


def _check_size(height, width) -> tuple[int, int]:
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive int, found {v!r}")
    if height * width >= 2**31:
        raise ValueError(f"height*width: expected < 2**31 pixels per image, found {height * width}")
    return height, width


# --------------------------------------------------------------------------------------------------
# Stage A: visibility (tensor ops in visibility.py, or the Triton kernel in triton_raster.py)


def _select_backend(backend: str, device: torch.device) -> str:
    if backend not in ("auto", "torch", "triton"):
        raise ValueError(f"backend: expected 'auto', 'torch' or 'triton', found {backend!r}")
    if backend == "auto":
        # Triton on CUDA when importable (CDDFM3D_RASTER_BACKEND=torch opts out); falls back if it fails.
        opted_out = os.environ.get("CDDFM3D_RASTER_BACKEND", "") == "torch"
        if device.type == "cuda" and not opted_out and triton_raster.available():
            return "triton_auto"
        return "torch"
    runnable = device.type == "cuda" or triton_raster.interpreting()
    if backend == "triton" and not (triton_raster.available() and runnable):
        raise RuntimeError(
            f"backend='triton': needs Triton and a CUDA tensor (or TRITON_INTERPRET=1 for CPU tensors); "
            f"found device {device}, Triton importable: {triton_raster.available()}"
        )
    return backend


def _zbuffer(verts, faces, height, width, perspective, backend) -> Tensor:
    if backend in ("triton", "triton_auto"):
        run = triton_raster.zbuffer if backend == "triton" else triton_raster.zbuffer_or_fallback
        return run(verts, faces, height, width, perspective)
    return zbuffer_torch(verts, faces, height, width, perspective)


# --------------------------------------------------------------------------------------------------
# Stage B: differentiable barycentrics of the winners


def rasterize(
    verts: Tensor,
    faces: Tensor,
    height: int,
    width: int,
    *,
    perspective_correct: bool = True,
    backend: str = "auto",
) -> Fragments:
    """Rasterize triangles given in pixel coordinates.

    Args:
        verts: [B, N, 3] float32/float64, (x, y, depth) per vertex: pixel (row i, col j) is sampled at
            x = j, y = i; depth is the camera-space view depth z > 0 (smaller is nearer).
        faces: [F, 3] int64/int32 vertex indices, shared by the batch.
        height, width: output size in pixels.
        perspective_correct: interpolate with 1/z weights (True, for projected camera-space meshes) or
            linearly in screen space (False, orthographic input; then depth may be any value).
        backend: 'auto' (Triton visibility pass on CUDA when importable, tensor ops otherwise), 'torch'
            or 'triton'. Only the non-differentiable visibility pass differs; outputs are identical.

    Returns:
        ``Fragments`` with ``face_index`` [B, H, W] (-1 = background), ``bary`` [B, H, W, 3],
        ``depth`` [B, H, W] (0 = background); ``bary`` and ``depth`` carry gradients to ``verts``.
    """
    _check_verts(verts)
    B, N, _ = verts.shape
    faces = _check_faces(faces, N, verts.device)
    height, width = _check_size(height, width)
    backend = _select_backend(backend, verts.device)
    with torch.no_grad():
        zbuf = _zbuffer(verts.detach(), faces, height, width, perspective_correct, backend)
        pix = (zbuf != SENTINEL).nonzero().squeeze(1)
        face = zbuf[pix] & LOW32
        hw = height * width
        b = pix // hw
        rem = pix - b * hw
        py = rem // width
        px = rem - py * width
        # corner-major vertex ids: [corner, P] flattened
        vid = (faces.index_select(0, face).t() + b * N).reshape(-1)
    P = pix.numel()
    # [coord, corner, P] with contiguous rows (see edge_functions for why structure of arrays).
    tv = verts.reshape(B * N, 3).t().contiguous().index_select(1, vid).view(3, 3, P)
    x, y, z = tv[0], tv[1], tv[2]
    pxf = px.to(verts.dtype)
    pyf = py.to(verts.dtype)
    # Same arithmetic as Stage A, so the winners' barycentrics are >= 0 exactly as tested there.
    w = edge_functions(x[0] - pxf, x[1] - pxf, x[2] - pxf, y[0] - pyf, y[1] - pyf, y[2] - pyf)
    inv_area = (w[0] + w[1] + w[2]).reciprocal()
    if perspective_correct:
        lz = [w[k] / z[k] for k in range(3)]  # l_k / z_k up to the common factor 1/area
        inv_s = (lz[0] + lz[1] + lz[2]).reciprocal()
        bary = torch.stack([lz[k] * inv_s for k in range(3)]).t()  # [P, 3] view of contiguous rows
        depth = inv_s / inv_area
    else:
        bary = torch.stack([w[k] * inv_area for k in range(3)]).t()
        depth = (w[0] * z[0] + w[1] * z[1] + w[2] * z[2]) * inv_area
    return Fragments((B, height, width), pix, face, bary, depth, N)


def interpolate(attr: Tensor, rast: Fragments, faces: Tensor) -> Tensor:
    """Interpolate per-vertex attributes at every pixel: [B, N, C] (or [N, C], shared) -> [B, H, W, C].

    Background pixels get 0. Differentiable w.r.t. ``attr`` and (through ``rast``) the vertex positions.
    """
    B, H, W = rast.size if isinstance(rast, Fragments) else (0, 0, 0)
    val = interpolate_packed(attr, rast, faces)
    out = val.new_zeros(B * H * W, val.shape[1]).index_copy(0, rast.pix_index, val)
    return out.view(B, H, W, -1)


def interpolate_packed(attr: Tensor, rast: Fragments, faces: Tensor) -> Tensor:
    """Like ``interpolate`` but only at the covered pixels: [P, C], row k at flat pixel ``rast.pix_index[k]``.

    Saves the dense [B, H, W, C] buffer when the caller reduces the pixels anyway (e.g. supersampling).
    """
    if not isinstance(rast, Fragments):
        raise TypeError(f"rast: expected the Fragments returned by rasterize(), found {type(rast).__name__}")
    if not isinstance(attr, Tensor):
        raise TypeError(f"attr: expected a torch.Tensor, found {type(attr).__name__}")
    B, H, W = rast.size
    N = rast.num_vertices
    if attr.dim() == 2:
        attr = attr.unsqueeze(0).expand(B, -1, -1)
    if attr.dim() != 3 or attr.shape[0] != B or attr.shape[1] != N:
        raise ValueError(f"attr: expected shape [{B}, {N}, C] or [{N}, C], found {list(attr.shape)}")
    if not attr.is_floating_point():
        raise TypeError(f"attr: expected a floating dtype, found {attr.dtype}")
    if attr.device != rast.pix_index.device:
        raise ValueError(f"attr: expected device {rast.pix_index.device}, found {attr.device}")
    faces = _check_faces(faces, N, attr.device)
    C = attr.shape[2]
    pix = rast.pix_index
    P = pix.numel()
    with torch.no_grad():
        b = pix // (H * W)
        vid = (faces.index_select(0, rast.pix_face).t() + b * N).reshape(-1)  # corner-major
    a = attr.reshape(B * N, C).index_select(0, vid).view(3, P, C)
    bary = rast.pix_bary.to(attr.dtype).t()  # [3, P]; rows are contiguous when it comes from rasterize()
    return a[0] * bary[0].unsqueeze(1) + a[1] * bary[1].unsqueeze(1) + a[2] * bary[2].unsqueeze(1)
