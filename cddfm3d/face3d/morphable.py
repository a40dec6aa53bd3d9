"""Linear 3D morphable model in the Deep3DFaceRecon 257-coefficient layout (reference face3d.md §2).

One class serves BFM (``MorphableModel.from_bfm``) and the built-in MiniFace (``MorphableModel.mini()``).
The forward model follows Deep3DFaceRecon_pytorch exactly:

    shape    S = (mean - centroid(mean)) + idBase @ id + exBase @ exp        [N, 3], dm
    albedo   T = (meantex + texBase @ tex) / 255
    normals  unit sum of the unit normals of the incident faces (point_buf), rotated with R
    pose     V = R @ S + t,  R = Rz @ Ry @ Rx
    colours  SH9 lighting with +0.8 on each colour's DC coefficient
    camera   focal 1015, centre 112, 224 px, camera at z = 10 (any image size: see camera.py)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .camera import PinholeCamera, rotation_matrix
from .lighting import INIT_AMBIENT, shade
from .mesh import ColoredMesh, point_buffer

# (name, size) of the coefficient groups, in order (reference face3d.md §2.1).
LAYOUT = (("id", 80), ("exp", 64), ("tex", 80), ("angle", 3), ("gamma", 27), ("trans", 3))
N_COEFFS = sum(n for _, n in LAYOUT)
SLICES = {}
_start = 0
for _name, _size in LAYOUT:
    SLICES[_name] = slice(_start, _start + _size)
    _start += _size
del _start, _name, _size


@dataclass
class FaceOutput:
    """Everything one forward pass computes. Batched tensors are [B, ...]; N vertices, F faces."""

    shape: torch.Tensor       # [B, N, 3] canonical shape (centred, before pose), dm
    vertices: torch.Tensor    # [B, N, 3] posed R @ S + t in the world frame (camera at (0, 0, distance))
    normals: torch.Tensor     # [B, N, 3] rotated unit vertex normals
    albedo: torch.Tensor      # [B, N, 3] RGB, ~[0, 1]
    colors: torch.Tensor      # [B, N, 3] lit RGB (not clamped)
    rotation: torch.Tensor    # [B, 3, 3] R with v' = R @ v
    screen: torch.Tensor      # [B, N, 3] (x, y, depth): pixels (x right, y down, centres on integers), depth dm
    landmarks: torch.Tensor   # [B, 68, 2] screen x, y of the 68 keypoints (= Deep3D's (u, H-1-v))
    faces: torch.Tensor       # [F, 3] long, counter-clockwise seen from the camera (y up)
    camera: PinholeCamera     # the camera that produced `screen`
    params: dict = field(default_factory=dict)  # the six coefficient groups (views of the input)

    @property
    def image_size(self) -> int:
        return self.camera.image_size

    @property
    def mesh(self) -> ColoredMesh:
        """The lit, posed mesh as a :class:`ColoredMesh` (vertices, colors, faces, camera; no copy), e.g. to
        render part of the batch: ``render(out.mesh[:k])``."""
        return ColoredMesh(self.vertices, self.colors, self.faces, self.camera)


def _tensor(a, dtype) -> torch.Tensor:
    # Copy: the model must never share memory with (and so never mutate) arrays it was built from.
    return torch.tensor(np.asarray(a), dtype=dtype)


class MorphableModel(nn.Module):
    """Linear 3DMM with Deep3DFaceRecon's 257 coefficients. ``out = fm(coeffs)`` -> :class:`FaceOutput`.

    Arrays are numpy or tensors, vertex-major xyz interleaved (3N rows), 0-based indices:
    mean_shape [3N] (dm, need not be centred), id_base [3N, 80], exp_base [3N, 64], mean_tex [3N] (0-255),
    tex_base [3N, 80], faces [F, 3], keypoints [68]; optional point_buf [N, K] (padding = F; built from faces
    when omitted), skin_mask [N] bool, front_faces [F2, 3] (photometric region), named_directions
    {name: (group, coefficients)}. ``dtype`` of the floating buffers (float32; float64 for exact checks).
    """

    def __init__(self, mean_shape, id_base, exp_base, mean_tex, tex_base, faces, keypoints, point_buf=None,
                 skin_mask=None, front_faces=None, camera: PinholeCamera | None = None,
                 named_directions: dict | None = None, name: str = "morphable model",
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.name = name
        mean = np.asarray(mean_shape, dtype=np.float64).reshape(-1)
        n3 = mean.size
        if n3 == 0 or n3 % 3:
            raise ValueError(f"{name}: mean_shape must have 3N entries, found {n3}")
        n = n3 // 3
        expect = {"id_base": (n3, 80), "exp_base": (n3, 64), "tex_base": (n3, 80)}
        for key, arr in (("id_base", id_base), ("exp_base", exp_base), ("tex_base", tex_base)):
            if tuple(np.shape(arr)) != expect[key]:
                raise ValueError(f"{name}: {key} expected shape {expect[key]}, found {tuple(np.shape(arr))}")
        if np.size(mean_tex) != n3:
            raise ValueError(f"{name}: mean_tex expected {n3} entries, found {np.size(mean_tex)}")
        faces = np.asarray(faces, dtype=np.int64)
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.min() < 0 or faces.max() >= n:
            raise ValueError(f"{name}: faces expected [F, 3] with indices in [0, {n}), found shape "
                             f"{faces.shape}, range [{faces.min()}, {faces.max()}]")
        keypoints = np.asarray(keypoints, dtype=np.int64).reshape(-1)
        if keypoints.shape != (68,) or keypoints.min() < 0 or keypoints.max() >= n:
            raise ValueError(f"{name}: keypoints expected 68 vertex ids in [0, {n}), found {keypoints.shape}")
        if point_buf is None:
            point_buf = point_buffer(faces, n)
        point_buf = np.asarray(point_buf, dtype=np.int64)
        if point_buf.ndim != 2 or point_buf.shape[0] != n or point_buf.min() < 0 or point_buf.max() > len(faces):
            raise ValueError(f"{name}: point_buf expected [N={n}, K] with entries in [0, F={len(faces)}], "
                             f"found shape {point_buf.shape}")

        # Centre once on the mean shape's centroid (a constant), as Deep3D does at load time.
        mean = mean.reshape(n, 3)
        mean = mean - mean.mean(0, keepdims=True)
        f32 = dtype  # float64 keeps a file's float64 fields exact (tests against float64 references)
        np_dtype = np.float64 if dtype == torch.float64 else np.float32
        self.register_buffer("mean_shape", _tensor(mean, f32))                       # [N, 3]
        # id and exp share one matrix so shape is one matmul; id_base/exp_base are views of it.
        self.register_buffer("shape_base", _tensor(np.concatenate([np.asarray(id_base, np_dtype),
                                                                   np.asarray(exp_base, np_dtype)], 1), f32))
        self.register_buffer("mean_tex", _tensor(np.reshape(mean_tex, (n, 3)), f32))  # [N, 3], 0-255
        self.register_buffer("tex_base", _tensor(tex_base, f32))                     # [3N, 80]
        self.register_buffer("faces", _tensor(faces, torch.long))
        self.register_buffer("point_buf", _tensor(point_buf, torch.long))
        self.register_buffer("keypoints", _tensor(keypoints, torch.long))
        skin = np.ones(n, bool) if skin_mask is None else np.asarray(skin_mask, bool).reshape(-1)
        if skin.shape != (n,):
            raise ValueError(f"{name}: skin_mask expected [{n}], found {skin.shape}")
        self.register_buffer("skin_mask", _tensor(skin, torch.bool))
        front = faces if front_faces is None else np.asarray(front_faces, np.int64)
        if front.ndim != 2 or front.shape[1] != 3 or front.min() < 0 or front.max() >= n:
            raise ValueError(f"{name}: front_faces expected [F2, 3] vertex ids in [0, {n}), found {front.shape}")
        self.register_buffer("front_faces", _tensor(front, torch.long))
        self.camera = camera or PinholeCamera()
        # Named variations (MiniFace): name -> (group, coefficient vector for +1 std of that variation).
        self.named_directions = {k: (g, torch.tensor(np.array(v), dtype=torch.float32))
                                 for k, (g, v) in (named_directions or {}).items()}
        for key, (group, vec) in self.named_directions.items():
            if group not in SLICES or vec.shape != (SLICES[group].stop - SLICES[group].start,):
                raise ValueError(f"{name}: named direction {key!r}: bad group {group!r} or shape {tuple(vec.shape)}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_bfm(cls, path, camera: PinholeCamera | None = None, compat_sicxu_front_mask: bool = False,
                 dtype: torch.dtype = torch.float32) -> MorphableModel:
        """Load ``BFM_model_front.mat`` (validated field by field, see :func:`cddfm3d.face3d.bfm.load_bfm_front`).

        ``front_faces`` is ``frontmask2_idx[tri_mask2]`` (the correct map, face3d.md §1.6-a); with
        ``compat_sicxu_front_mask=True`` it is ``tri_mask2`` used as raw vertex ids, as the released
        Deep3DFaceRecon_pytorch training did.
        """
        from .bfm import load_bfm_front

        m = load_bfm_front(path)
        front = None
        if "tri_mask2" in m:
            front = m["tri_mask2"] if compat_sicxu_front_mask else m["frontmask2_idx"][m["tri_mask2"]]
        return cls(m["meanshape"], m["idBase"], m["exBase"], m["meantex"], m["texBase"], m["tri"],
                   m["keypoints"], point_buf=m["point_buf"], skin_mask=m.get("skinmask"), front_faces=front,
                   camera=camera, name=f"BFM ({path})", dtype=dtype)

    @classmethod
    def mini(cls, camera: PinholeCamera | None = None, dtype: torch.dtype = torch.float32) -> MorphableModel:
        """The built-in procedural MiniFace (no external data); see :mod:`cddfm3d.face3d.miniface`."""
        from .miniface import build_miniface

        m = build_miniface()
        return cls(m["meanshape"], m["idBase"], m["exBase"], m["meantex"], m["texBase"], m["tri"],
                   m["keypoints"], point_buf=m["point_buf"], skin_mask=m["skinmask"],
                   front_faces=m["front_faces"], camera=camera, named_directions=m["named_directions"],
                   name="MiniFace", dtype=dtype)

    # ------------------------------------------------------------------ layout helpers
    layout = LAYOUT
    slices = SLICES
    n_coeffs = N_COEFFS

    @property
    def n_vertices(self) -> int:
        return self.mean_shape.shape[0]

    @property
    def id_base(self) -> torch.Tensor:
        return self.shape_base[:, :80]

    @property
    def exp_base(self) -> torch.Tensor:
        return self.shape_base[:, 80:]

    @property
    def image_size(self) -> int:
        return self.camera.image_size

    @image_size.setter
    def image_size(self, size: int) -> None:
        self.camera = self.camera.scaled(size)

    @staticmethod
    def split(coeffs: torch.Tensor) -> dict:
        """[B, 257] -> {'id', 'exp', 'tex', 'angle', 'gamma', 'trans'} (views, no copy)."""
        _check_coeffs(coeffs, check_finite=False)
        return {name: coeffs[:, s] for name, s in SLICES.items()}

    @staticmethod
    def join(groups: dict) -> torch.Tensor:
        """Inverse of :meth:`split`: all six groups [B, n_group] -> [B, 257]."""
        missing = [k for k, _ in LAYOUT if k not in groups]
        if missing:
            raise ValueError(f"join: missing coefficient groups {missing}")
        return torch.cat([groups[k] for k, _ in LAYOUT], -1)

    def zeros(self, batch_size: int = 1) -> torch.Tensor:
        """Neutral coefficients [B, 257]: mean face, frontal, ambient light, centred."""
        return self.mean_shape.new_zeros(batch_size, N_COEFFS)

    def direction(self, name: str, amount: float = 1.0) -> torch.Tensor:
        """Coefficients [257] of ``amount`` standard deviations of the named variation ``name``."""
        if name not in self.named_directions:
            raise KeyError(f"{self.name}: no named variation {name!r}; available: {sorted(self.named_directions)}")
        group, vec = self.named_directions[name]
        out = self.mean_shape.new_zeros(N_COEFFS)
        out[SLICES[group]] = amount * vec.to(out)
        return out

    def compose(self, batch_size: int = 1, **amounts: float) -> torch.Tensor:
        """Coefficients [B, 257] summing named variations, e.g. ``fm.compose(jaw_open=2, smile=1)``."""
        total = self.mean_shape.new_zeros(N_COEFFS)
        for name, amount in amounts.items():
            total = total + self.direction(name, amount)
        return total.expand(batch_size, -1).clone()

    # ------------------------------------------------------------------ the forward model
    def compute_shape(self, id_coeff: torch.Tensor, exp_coeff: torch.Tensor) -> torch.Tensor:
        """[B, 80], [B, 64] -> centred shape [B, N, 3]."""
        offset = torch.cat([id_coeff, exp_coeff], -1) @ self.shape_base.T
        return self.mean_shape + offset.reshape(offset.shape[0], -1, 3)

    def compute_albedo(self, tex_coeff: torch.Tensor) -> torch.Tensor:
        """[B, 80] -> albedo [B, N, 3] in ~[0, 1]."""
        offset = (tex_coeff @ self.tex_base.T).reshape(tex_coeff.shape[0], -1, 3)
        return (self.mean_tex + offset) / 255.0

    def compute_normals(self, shape: torch.Tensor) -> torch.Tensor:
        """Unit vertex normals [B, N, 3] of (un-rotated) shape [B, N, 3]."""
        f = self.faces
        v1, v2, v3 = shape[:, f[:, 0]], shape[:, f[:, 1]], shape[:, f[:, 2]]
        face_n = nn.functional.normalize(torch.cross(v1 - v2, v2 - v3, dim=-1), dim=-1)
        # Append a zero normal for point_buf's padding index F.
        face_n = torch.cat([face_n, face_n.new_zeros(face_n.shape[0], 1, 3)], 1)
        return nn.functional.normalize(face_n[:, self.point_buf].sum(2), dim=-1)

    def forward(self, coeffs: torch.Tensor, image_size: int | None = None,
                camera: PinholeCamera | None = None, check: bool = True) -> FaceOutput:
        """coeffs [B, 257] -> :class:`FaceOutput`. Camera: ``camera``, else ``self.camera`` scaled to
        ``image_size`` when given. ``check=False`` skips the NaN/Inf scan (it synchronises a GPU)."""
        _check_coeffs(coeffs, check_finite=check, who=self.name)
        coeffs = coeffs.to(self.mean_shape.dtype)
        cam = camera or self.camera
        if image_size is not None:
            cam = cam.scaled(image_size)
        p = self.split(coeffs)
        shape = self.compute_shape(p["id"], p["exp"])
        albedo = self.compute_albedo(p["tex"])
        rot = rotation_matrix(p["angle"])
        normals = self.compute_normals(shape) @ rot.transpose(1, 2)
        vertices = shape @ rot.transpose(1, 2) + p["trans"][:, None, :]
        colors = shade(albedo, normals, p["gamma"], INIT_AMBIENT)
        screen = cam.project(vertices)
        return FaceOutput(shape=shape, vertices=vertices, normals=normals, albedo=albedo, colors=colors,
                          rotation=rot, screen=screen, landmarks=screen[:, self.keypoints, :2],
                          faces=self.faces, camera=cam, params=p)

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, vertices={self.n_vertices}, faces={self.faces.shape[0]}, "
                f"camera={self.camera}")


def check_coeff_rows(x, n: int, who: str, what: str) -> torch.Tensor:
    """``x`` itself when it is a finite floating-point tensor of ``n`` coefficient rows [n, 257]; otherwise
    ``ValueError("{who}: {what} must be finite float coefficients [n, 257] (one row per source), found ...")``
    with the shape and dtype found (or the type of a non-tensor) and the number of NaN/Inf values. For inputs
    given per source (a target, a reading, a reference); :class:`MorphableModel` itself checks any batch size and
    names the first NaN/Inf."""
    if (not isinstance(x, torch.Tensor) or tuple(x.shape) != (n, N_COEFFS) or not x.is_floating_point()
            or not bool(torch.isfinite(x).all())):
        found = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        if isinstance(x, torch.Tensor) and x.is_floating_point() and not bool(torch.isfinite(x).all()):
            found += f" with {int((~torch.isfinite(x)).sum())} NaN/Inf values"
        raise ValueError(f"{who}: {what} must be finite float coefficients [{n}, {N_COEFFS}] (one row per source), "
                         f"found {found}")
    return x


def _check_coeffs(coeffs, check_finite: bool = True, who: str = "MorphableModel") -> None:
    if not isinstance(coeffs, torch.Tensor):
        raise TypeError(f"{who}: coefficients must be a torch.Tensor [B, {N_COEFFS}], found {type(coeffs).__name__}")
    if coeffs.ndim != 2 or coeffs.shape[1] != N_COEFFS:
        raise ValueError(f"{who}: coefficients must be [B, {N_COEFFS}] (id 80, exp 64, tex 80, angle 3, "
                         f"gamma 27, trans 3), found shape {tuple(coeffs.shape)}")
    if not coeffs.is_floating_point():
        raise ValueError(f"{who}: coefficients must be floating point, found {coeffs.dtype}")
    if check_finite and not bool(torch.isfinite(coeffs).all()):
        bad = (~torch.isfinite(coeffs)).nonzero()[0].tolist()
        group = next(k for k, s in SLICES.items() if s.start <= bad[1] < s.stop)
        raise ValueError(f"{who}: coefficients contain NaN/Inf (first at sample {bad[0]}, index {bad[1]}, "
                         f"group '{group}')")
