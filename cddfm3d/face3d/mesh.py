"""Triangle meshes: topology tables shared by the morphable models (BFM and the built-in MiniFace), and the
batched coloured mesh that the renderer draws."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["ColoredMesh", "point_buffer"]


def point_buffer(faces, n_vertices: int) -> np.ndarray:
    """Incident-face table of a triangle mesh, in the layout of BFM's ``point_buf`` (0-based).

    Args:
        faces: [F, 3] integer vertex indices in [0, n_vertices).
        n_vertices: N, the number of vertices (vertices no face uses get an all-padding row).

    Returns:
        int64 [N, K] with K = max(1, largest valence): row v lists the faces incident to v in ascending
        order, padded with F (the index of the zero normal that ``MorphableModel.compute_normals`` appends).

    Raises:
        ValueError: ``faces`` is not [F, 3] or holds an index outside [0, n_vertices).
    """
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"point_buffer: faces expected an integer array [F, 3], found {faces.dtype} {faces.shape}")
    faces = faces.astype(np.int64)
    if faces.size and (faces.min() < 0 or faces.max() >= n_vertices):
        raise ValueError(f"point_buffer: faces expected vertex indices in [0, {n_vertices}), found range "
                         f"[{faces.min()}, {faces.max()}]")
    n_faces = faces.shape[0]
    vert = faces.reshape(-1)
    face_id = np.repeat(np.arange(n_faces), 3)
    order = np.argsort(vert, kind="stable")
    vert, face_id = vert[order], face_id[order]
    counts = np.bincount(vert, minlength=n_vertices)
    k = max(int(counts.max()) if counts.size else 0, 1)
    slot = np.arange(vert.size) - np.repeat(np.cumsum(counts) - counts, counts)
    buf = np.full((n_vertices, k), n_faces, dtype=np.int64)
    buf[vert, slot] = face_id
    return buf


@dataclass(frozen=True)
class ColoredMesh:
    """A batch of posed meshes with per-vertex colours: what :func:`cddfm3d.face3d.render.render` draws.

    Fields:
        vertices: [B, N, 3] float, camera-space positions (the frame ``camera.project`` expects; dm for the
            package's models).
        colors: [B, N, 3] float, lit RGB, nominally 0..1 (not clamped here).
        faces: [F, 3] integer vertex indices, shared by the batch.
        camera: the camera to render with by default (``None``: the caller or ``render`` chooses).

    ``mesh[a:b]`` (or an index tensor/list) selects samples of the batch; ``mesh[i]`` keeps a batch of one.
    ``MorphableModel`` outputs convert with ``FaceOutput.mesh``.

    Raises:
        TypeError / ValueError: a field is not a tensor or has a shape other than the above.
    """

    vertices: torch.Tensor
    colors: torch.Tensor
    faces: torch.Tensor
    camera: Any = None

    def __post_init__(self):
        v, c, f = self.vertices, self.colors, self.faces
        for name, x in (("vertices", v), ("colors", c), ("faces", f)):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"ColoredMesh.{name}: expected a torch.Tensor, found {type(x).__name__}")
        if v.dim() != 3 or v.shape[-1] != 3 or not v.is_floating_point():
            raise ValueError(f"ColoredMesh.vertices: expected a float tensor [B, N, 3], found {v.dtype} "
                             f"{list(v.shape)}")
        if tuple(c.shape) != tuple(v.shape):
            raise ValueError(f"ColoredMesh.colors: expected shape {list(v.shape)} (like vertices), found "
                             f"{list(c.shape)}")
        if f.dim() != 2 or f.shape[1] != 3:
            raise ValueError(f"ColoredMesh.faces: expected shape [F, 3], found {list(f.shape)}")

    def __len__(self) -> int:
        return self.vertices.shape[0]

    def __getitem__(self, index) -> ColoredMesh:
        if isinstance(index, int) and not isinstance(index, bool):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f"ColoredMesh: sample {index} out of range for a batch of {n}")
            index = slice(index % n, index % n + 1)
        return ColoredMesh(self.vertices[index], self.colors[index], self.faces, self.camera)
