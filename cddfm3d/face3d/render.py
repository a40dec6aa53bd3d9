"""Render a coloured mesh (or a morphable-model output) to an image with the differentiable rasterizer (``raster.py``).

Per-vertex lit colours are interpolated perspective-correctly (Gouraud, like Deep3D's nvdiffrast
renderer). Antialiasing is supersampling: rasterize at ``supersample`` times the size and average-pool,
so the mask is fractional at silhouettes. Gradients reach the colours and, through the interior
barycentrics, the vertex positions; the silhouette itself carries no position gradient.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .camera import PinholeCamera
from .mesh import ColoredMesh
from .morphable import FaceOutput
from .raster import interpolate_packed, rasterize

__all__ = ["render"]


def _background(background, batch: int, size: int, like: Tensor) -> Tensor | None:
    """Background as a tensor broadcastable to [B, 3, size, size], or None for black."""
    if background is None:
        return None
    if isinstance(background, (int, float)):
        return like.new_full((1, 3, 1, 1), float(background))
    if not isinstance(background, Tensor):
        raise TypeError(f"background: expected None, a float or a tensor, found {type(background).__name__}")
    bg = background.to(device=like.device, dtype=like.dtype)
    if bg.dim() == 1 and bg.shape[0] == 3:  # one RGB colour
        return bg.view(1, 3, 1, 1)
    if bg.dim() == 3 and tuple(bg.shape) == (3, size, size):
        return bg.unsqueeze(0)
    if bg.dim() == 4 and bg.shape[1:] == (3, size, size) and bg.shape[0] in (1, batch):
        return bg
    raise ValueError(
        f"background: expected a float, [3], [3, {size}, {size}] or [{batch}, 3, {size}, {size}], "
        f"found {list(bg.shape)}"
    )


def render(
    mesh: ColoredMesh | FaceOutput,
    camera=None,
    size: int = 224,
    supersample: int = 2,
    background=None,
    *,
    clamp: bool = True,
    return_depth: bool = False,
    backend: str = "auto",
):
    """Render lit per-vertex colours.

    Args:
        mesh: a :class:`~cddfm3d.face3d.mesh.ColoredMesh` (vertices [B, N, 3] in camera space, colours
            [B, N, 3] lit 0..1, faces [F, 3], optional camera), or a morphable model's ``FaceOutput``
            (rendered as ``output.mesh``).
        camera: object with ``scaled(size)`` returning a camera whose ``project(vertices)`` gives
            [B, N, 3] (x, y, depth) in the rasterizer's pixel convention (pixel centres on integers);
            default ``mesh.camera`` if set, else ``PinholeCamera()``.
        size: output resolution (square).
        supersample: k >= 1; rasterize at k*size and average-pool k x k (antialiasing).
        background: None (black), a float, an RGB [3], or an image [3|B, 3, size, size].
        clamp: clip the image to [0, 1] (lit colours are not clamped by the model); False keeps
            Deep3D's unclamped render.
        return_depth: also return the view depth [B, 1, size, size]: the mean interpolated depth of the
            covered sub-samples, 0 on the background (differentiable w.r.t. the vertices).
        backend: rasterizer visibility backend (see ``rasterize``).

    Returns:
        (image [B, 3, size, size], mask [B, 1, size, size]) or, with ``return_depth``, (image, mask, depth);
        the mask is the covered fraction of each pixel (no gradient).

    Raises:
        TypeError: ``mesh`` is neither a ColoredMesh nor a FaceOutput, or ``camera`` lacks scaled/project.
        ValueError: bad ``size``, ``supersample`` or ``background`` (mesh fields are checked by ColoredMesh).
    """
    if isinstance(mesh, FaceOutput):
        mesh = mesh.mesh
    if not isinstance(mesh, ColoredMesh):
        raise TypeError(f"mesh: expected a ColoredMesh(vertices, colors, faces, camera) or a FaceOutput, "
                        f"found {type(mesh).__name__}")
    verts, colors, faces = mesh.vertices, mesh.colors, mesh.faces
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size: expected a positive int, found {size!r}")
    if isinstance(supersample, bool) or not isinstance(supersample, int) or supersample < 1:
        raise ValueError(f"supersample: expected a positive int, found {supersample!r}")
    if camera is None:
        camera = mesh.camera if mesh.camera is not None else PinholeCamera()
    if not (hasattr(camera, "scaled") and hasattr(camera, "project")):
        raise TypeError(f"camera: expected an object with .scaled(size) and .project(v), found {type(camera).__name__}")
    B = verts.shape[0]
    bg = _background(background, B, size, colors)

    hi = size * supersample
    screen = camera.scaled(size).project(verts)
    if supersample > 1:
        # Output pixel (i, j) covers [j - 0.5, j + 0.5] x [i - 0.5, i + 0.5] around its integer centre; its
        # k x k sub-samples sit at j - 0.5 + (m + 0.5) / k. Mapping x -> k (x + 0.5) - 0.5 puts them on the
        # integers of the fine grid. (camera.scaled(k * size) would not: scaling the principal point with the
        # size assumes pixel corners on integers and shifts the samples by (k - 1) / 2k px.)
        xy = screen[..., :2] * supersample + (supersample - 1) / 2
        screen = torch.cat((xy, screen[..., 2:]), -1)
    rast = rasterize(screen, faces, hi, hi, backend=backend)
    color = interpolate_packed(colors, rast, faces)  # [P, 3] at the covered fine pixels
    # Box-filter straight into the output grid (index_add over the covered fine pixels) instead of building
    # the dense fine image and average-pooling it: at batch 8 the k^2-times larger dense buffers (and their
    # gradients) cost more than everything else.
    with torch.no_grad():
        pix = rast.pix_index
        b = pix // (hi * hi)
        rem = pix - b * (hi * hi)
        row = rem // hi
        col = rem - row * hi
        out_pix = (b * size + row // supersample) * size + col // supersample
        weight = 1.0 / (supersample * supersample)
        mask = torch.bincount(out_pix, minlength=B * size * size).to(colors.dtype).mul_(weight)
    image = colors.new_zeros(B * size * size, 3).index_add(0, out_pix, color, alpha=weight)
    image = image.view(B, size, size, 3).permute(0, 3, 1, 2)
    mask = mask.view(B, 1, size, size)
    if bg is not None:
        # The pooled colour is already premultiplied by coverage; the background fills the rest.
        image = image + bg * (1 - mask)
    if clamp:
        image = image.clamp(0, 1)
    if not return_depth:
        return image.contiguous(), mask
    depth = rast.pix_depth.new_zeros(B * size * size).index_add(0, out_pix, rast.pix_depth)
    depth = depth / (mask.reshape(-1) * (supersample * supersample)).clamp(min=1).to(depth.dtype)
    return image.contiguous(), mask, depth.view(B, 1, size, size)

