"""Head pose (Euler angles -> rotation) and the Deep3DFaceRecon pinhole camera.

World frame (dm): x right, y up, z toward the camera. The camera sits at (0, 0, distance) looking down -z,
so a posed vertex V projects to

    d = distance - V_z                      (depth: positive, smaller is nearer)
    u = focal * V_x / d + center            (Deep3D's u, grows to the right)
    v = focal * V_y / d + center            (Deep3D's v, grows *upward*)

and we return pixel coordinates  x = u,  y = (H - 1) - v,  i.e. y grows downward and the pixel in row i,
column j is the point (x=j, y=i): pixel *centres* sit on integers.

Half-pixel decision (reference face3d.md §2.7): Deep3DFaceRecon_pytorch uses two conventions at once --
its landmarks are (u, H-1-v) (as here), while its nvdiffrast images put the centre of pixel (r, c) at
u = c + 0.5, v = H - 0.5 - r, i.e. half a pixel away from its own landmarks, in opposite directions in x and y.
We keep the landmark convention exactly (so detector landmarks and Deep3D landmark losses carry over
unchanged) and let the rasterizer sample at the same integer centres, so our landmarks and our renders agree
with each other. The price is that our renders are shifted by (0.5, 0.5) px against nvdiffrast's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# The Deep3DFaceRecon camera at 224 px (reference face3d.md §2.6).
DEEP3D_FOCAL = 1015.0
DEEP3D_CENTER = 112.0
DEEP3D_IMAGE_SIZE = 224
DEEP3D_DISTANCE = 10.0


def rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices R = Rz(z) @ Ry(y) @ Rx(x) for Euler angles [..., 3] = (x, y, z) in radians.

    A point rotates as v' = R @ v (Deep3D stores R^T and right-multiplies row vectors; same thing).
    Equal to scipy ``Rotation.from_euler('xyz', angles).as_matrix()``.
    """
    if angles.shape[-1] != 3:
        raise ValueError(f"rotation_matrix: expected angles [..., 3], found shape {tuple(angles.shape)}")
    x, y, z = angles.unbind(-1)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    cx, sx, cy, sy, cz, sz = x.cos(), x.sin(), y.cos(), y.sin(), z.cos(), z.sin()
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).unflatten(-1, (3, 3))
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).unflatten(-1, (3, 3))
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).unflatten(-1, (3, 3))
    return rz @ ry @ rx


@dataclass(frozen=True)
class PinholeCamera:
    """Deep3DFaceRecon's pinhole camera; ``scaled(size)`` gives the same field of view at another size."""

    focal: float = DEEP3D_FOCAL
    center: float = DEEP3D_CENTER
    image_size: int = DEEP3D_IMAGE_SIZE
    distance: float = DEEP3D_DISTANCE

    def __post_init__(self):
        if int(self.image_size) != self.image_size or self.image_size < 1:
            raise ValueError(f"PinholeCamera: image_size must be a positive integer, found {self.image_size!r}")
        if not self.focal > 0 or not self.distance > 0:
            raise ValueError(f"PinholeCamera: focal and distance must be > 0, found {self.focal}, {self.distance}")
        object.__setattr__(self, "image_size", int(self.image_size))

    def scaled(self, image_size: int) -> PinholeCamera:
        """The same camera rendered at ``image_size`` px: focal and centre scale with size/self.image_size."""
        s = image_size / self.image_size
        return PinholeCamera(self.focal * s, self.center * s, image_size, self.distance)

    @property
    def fov_degrees(self) -> float:
        """Full field of view (12.59 degrees for Deep3D's camera)."""
        import math

        return math.degrees(2.0 * math.atan(self.center / self.focal))

    def project(self, vertices: torch.Tensor) -> torch.Tensor:
        """World-frame points [..., 3] -> [..., 3] = (x, y, depth) in the pixel convention of this module."""
        if vertices.shape[-1] != 3:
            raise ValueError(f"PinholeCamera.project: expected vertices [..., 3], found {tuple(vertices.shape)}")
        x, y, z = vertices.unbind(-1)
        depth = self.distance - z
        u = self.focal * x / depth + self.center
        v = self.focal * y / depth + self.center
        return torch.stack([u, (self.image_size - 1) - v, depth], -1)

    def unproject(self, screen: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`project`: (x, y, depth) [..., 3] -> world-frame points [..., 3]."""
        x, y, depth = screen.unbind(-1)
        u, v = x, (self.image_size - 1) - y
        return torch.stack([(u - self.center) * depth / self.focal, (v - self.center) * depth / self.focal,
                            self.distance - depth], -1)
