"""Basel Face Model 2009 in the Deep3DFaceRecon layout: validated loading and conversion.

Nothing of BFM ships with this package (its licence forbids redistribution, reference face3d.md §1.4).
Users register at https://faces.dmi.unibas.ch/bfm/ for ``01_MorphableModel.mat``, get ``Exp_Pca.bin`` from
Guo et al.'s 3DFace CoarseData, take the index files (``BFM/std_exp.txt``, ``BFM_exp_idx.mat``,
``BFM_front_idx.mat``, ``facemodel_info.mat``) from sicxu/Deep3DFaceRecon_pytorch, and run
:func:`convert_bfm09` once to obtain ``BFM_model_front.mat``.

:func:`load_bfm_front` returns plain numpy arrays: float32 values, 0-based int64 indices.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

HOW_TO_GET = ("BFM_model_front.mat is built once with cddfm3d.face3d.convert_bfm09() from the BFM 2009 "
              "01_MorphableModel.mat (registration at https://faces.dmi.unibas.ch/bfm/) and Exp_Pca.bin "
              "(Guo et al. 3DFace CoarseData), plus the index files of sicxu/Deep3DFaceRecon_pytorch/BFM.")

N_ID, N_EXP, N_TEX = 80, 64, 80
REQUIRED = ("meanshape", "idBase", "exBase", "meantex", "texBase", "tri", "point_buf", "keypoints")
OPTIONAL = ("frontmask2_idx", "tri_mask2", "skinmask")


class BFMFormatError(ValueError):
    """A BFM-related file is missing a field or has a field of the wrong shape or content."""


def _load_mat(path: Path) -> dict:
    import scipy.io

    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found. {HOW_TO_GET}")
    try:
        return scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types for non-.mat input
        raise BFMFormatError(f"{path}: cannot be read as a MATLAB .mat file ({exc})") from exc


def _field(mat: dict, name: str, path: Path) -> np.ndarray:
    if name not in mat:
        present = sorted(k for k in mat if not k.startswith("__"))
        raise BFMFormatError(f"{path}: missing field '{name}' (fields present: {present}). {HOW_TO_GET}")
    return np.asarray(mat[name])


def _as_vector(arr: np.ndarray, name: str, length: int | None, path: Path, what: str) -> np.ndarray:
    # MATLAB stores vectors as (1, n) or (n, 1); accept both, nothing else.
    if arr.ndim > 2 or (arr.ndim == 2 and min(arr.shape) != 1):
        raise BFMFormatError(f"{path}: field '{name}': expected a vector (1, {length or 'n'}) ({what}), "
                             f"found shape {arr.shape}")
    flat = arr.reshape(-1)
    if length is not None and flat.size != length:
        raise BFMFormatError(f"{path}: field '{name}': expected (1, {length}) ({what}), found shape {arr.shape}")
    return flat


def _check_shape(arr: np.ndarray, name: str, expected: tuple, path: Path, what: str) -> np.ndarray:
    if arr.shape != expected:
        raise BFMFormatError(f"{path}: field '{name}': expected shape {expected} ({what}), found {arr.shape}")
    return arr


def _finite(arr: np.ndarray, name: str, path: Path) -> np.ndarray:
    # float32 fields stay float32; float64 ones (exBase) stay float64 until the model casts them.
    arr = arr.astype(np.promote_types(arr.dtype, np.float32), copy=False)
    if not np.isfinite(arr).all():
        raise BFMFormatError(f"{path}: field '{name}' contains NaN or Inf")
    return arr


def _index(arr: np.ndarray, name: str, upper: int, path: Path) -> np.ndarray:
    """1-based float index array -> 0-based int64, checking integrality and range [1, upper]."""
    if arr.size and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
        raise BFMFormatError(f"{path}: field '{name}': expected integer (1-based) indices, found non-integers")
    idx = arr.astype(np.int64)
    if idx.size and (idx.min() < 1 or idx.max() > upper):
        raise BFMFormatError(f"{path}: field '{name}': expected 1-based indices in [1, {upper}], "
                             f"found range [{idx.min()}, {idx.max()}]")
    return idx - 1


def load_bfm_front(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read and validate ``BFM_model_front.mat`` (reference face3d.md §1.2) of any vertex count N.

    Returns floating (float32, or float64 where the file has it) ``meanshape`` [3N], ``idBase`` [3N, 80],
    ``exBase`` [3N, 64], ``meantex`` [3N] (0-255),
    ``texBase`` [3N, 80]; 0-based int64 ``tri`` [F, 3], ``point_buf`` [N, K] (padding = F), ``keypoints`` [68];
    and when present ``frontmask2_idx`` [M], ``tri_mask2`` [F2, 3] (positions in ``frontmask2_idx``),
    ``skinmask`` [N] bool.
    """
    path = Path(path)
    mat = _load_mat(path)
    fields = {name: _field(mat, name, path) for name in REQUIRED}
    mean = _as_vector(fields["meanshape"], "meanshape", None, path, "mean shape, xyz interleaved, dm")
    if mean.size == 0 or mean.size % 3:
        raise BFMFormatError(f"{path}: field 'meanshape': expected length 3N, found {mean.size}")
    n3 = mean.size
    n = n3 // 3
    out = {"meanshape": _finite(mean, "meanshape", path)}
    for name, cols, what in (("idBase", N_ID, "identity basis"), ("exBase", N_EXP, "expression basis"),
                             ("texBase", N_TEX, "texture basis")):
        out[name] = _finite(_check_shape(fields[name], name, (n3, cols), path, f"3N={n3} rows, {what}"),
                            name, path)
    out["meantex"] = _finite(_as_vector(fields["meantex"], "meantex", n3, path, "mean albedo 0-255"),
                             "meantex", path)
    tri = fields["tri"]
    if tri.ndim != 2 or tri.shape[1] != 3 or tri.shape[0] == 0:
        raise BFMFormatError(f"{path}: field 'tri': expected shape (F, 3) (triangles), found {tri.shape}")
    n_faces = tri.shape[0]
    out["tri"] = _index(tri, "tri", n, path)
    pbuf = fields["point_buf"]
    if pbuf.ndim != 2 or pbuf.shape[0] != n:
        raise BFMFormatError(f"{path}: field 'point_buf': expected shape (N={n}, K) (incident triangles per "
                             f"vertex), found {pbuf.shape}")
    out["point_buf"] = _index(pbuf, "point_buf", n_faces + 1, path)  # F+1 pads to an appended zero normal
    out["keypoints"] = _index(_as_vector(fields["keypoints"], "keypoints", 68, path, "68 landmark vertex ids"),
                              "keypoints", n, path)
    if "frontmask2_idx" in mat:
        front = _as_vector(np.asarray(mat["frontmask2_idx"]), "frontmask2_idx", None, path, "front vertex ids")
        out["frontmask2_idx"] = _index(front, "frontmask2_idx", n, path)
        if "tri_mask2" in mat:
            tm = np.asarray(mat["tri_mask2"])
            if tm.ndim != 2 or tm.shape[1] != 3:
                raise BFMFormatError(f"{path}: field 'tri_mask2': expected shape (F2, 3), found {tm.shape}")
            out["tri_mask2"] = _index(tm, "tri_mask2", front.size, path)
    if "skinmask" in mat:
        skin = _as_vector(np.asarray(mat["skinmask"]), "skinmask", n, path, "0/1 per vertex")
        out["skinmask"] = skin > 0.5
    return out


def _read_exp_pca(path: Path, n_vertices: int) -> np.ndarray:
    """``Exp_Pca.bin`` -> PCs [3M, n_pc]: int32 n_pc, float32 mean (3M, unused), float32 PCs PC-major."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found (Exp_Pca.bin from Guo et al. 3DFace CoarseData)")
    raw = path.read_bytes()
    if len(raw) < 4:
        raise BFMFormatError(f"{path}: too short for Exp_Pca.bin ({len(raw)} bytes)")
    n_pc = int(np.frombuffer(raw[:4], "<i4")[0])
    expected = 4 + 4 * 3 * n_vertices * (1 + n_pc)
    if n_pc < N_EXP or len(raw) != expected:
        raise BFMFormatError(f"{path}: expected int32 n_pc >= {N_EXP} then float32 mean and PCs for "
                             f"{n_vertices} vertices ({expected} bytes for n_pc={n_pc}), found {len(raw)} bytes")
    pcs = np.frombuffer(raw, "<f4", offset=4 + 12 * n_vertices)
    return pcs.reshape(n_pc, 3 * n_vertices).T


def _select_vertices(a: np.ndarray, vertex_ids: np.ndarray) -> np.ndarray:
    """Rows of an xyz-interleaved [3V, K] (or [3V]) array for the given vertices, keeping xyz together."""
    k = a.shape[1:] if a.ndim > 1 else ()
    return a.reshape(-1, 3, *k)[vertex_ids].reshape(-1, *k)


def convert_bfm09(morphable_model_mat, exp_pca_bin, std_exp_txt, exp_idx_mat, front_idx_mat,
                  facemodel_info_mat, out_path) -> Path:
    """Build ``BFM_model_front.mat`` from BFM09 + the Guo expression basis (recipe: face3d.md §1.3).

    ``morphable_model_mat``: ``01_MorphableModel.mat``; ``exp_pca_bin``: ``Exp_Pca.bin``; ``std_exp_txt``:
    ``std_exp.txt``; ``exp_idx_mat``: ``BFM_exp_idx.mat`` (trimIndex); ``front_idx_mat``: ``BFM_front_idx.mat``
    (idx); ``facemodel_info_mat``: ``facemodel_info.mat``. Writes ``out_path`` and returns it.
    """
    paths = [Path(p) for p in (morphable_model_mat, exp_pca_bin, std_exp_txt, exp_idx_mat, front_idx_mat,
                               facemodel_info_mat)]
    mm_path, exp_path, std_path, trim_path, front_path, info_path = paths
    mm = _load_mat(mm_path)
    shape_mu = _as_vector(_field(mm, "shapeMU", mm_path), "shapeMU", None, mm_path, "mean shape, micrometres")
    if shape_mu.size % 3:
        raise BFMFormatError(f"{mm_path}: field 'shapeMU': expected length 3V, found {shape_mu.size}")
    n3_full = shape_mu.size
    shape_pc = _field(mm, "shapePC", mm_path)
    tex_pc = _field(mm, "texPC", mm_path)
    for name, pc in (("shapePC", shape_pc), ("texPC", tex_pc)):
        if pc.ndim != 2 or pc.shape[0] != n3_full or pc.shape[1] < N_ID:
            raise BFMFormatError(f"{mm_path}: field '{name}': expected shape ({n3_full}, >= {N_ID}), "
                                 f"found {pc.shape}")
    shape_ev = _as_vector(_field(mm, "shapeEV", mm_path), "shapeEV", shape_pc.shape[1], mm_path, "std per PC")
    tex_ev = _as_vector(_field(mm, "texEV", mm_path), "texEV", tex_pc.shape[1], mm_path, "std per PC")
    tex_mu = _as_vector(_field(mm, "texMU", mm_path), "texMU", n3_full, mm_path, "mean texture 0-255")

    trim = _index(_as_vector(_field(_load_mat(trim_path), "trimIndex", trim_path), "trimIndex", None, trim_path,
                             "expression-model vertex ids into BFM09"), "trimIndex", n3_full // 3, trim_path)
    front = _index(_as_vector(_field(_load_mat(front_path), "idx", front_path), "idx", None, front_path,
                              "front vertex ids into the expression model"), "idx", trim.size, front_path)
    exp_pc = _read_exp_pca(exp_path, trim.size)
    if not std_path.is_file():
        raise FileNotFoundError(f"{std_path}: file not found (BFM/std_exp.txt of Deep3DFaceRecon_pytorch)")
    std_exp = np.loadtxt(std_path).reshape(-1)
    if std_exp.size < N_EXP:
        raise BFMFormatError(f"{std_path}: expected >= {N_EXP} standard deviations, found {std_exp.size}")

    shape_ids = trim[front]  # front vertices -> BFM09 vertices (= select_vertex_id.mat)
    # PCs are scaled by their std so that coefficients are ~N(0, 1); shape is micrometres -> dm (1e5).
    id_base = _select_vertices(shape_pc[:, :N_ID] * shape_ev[:N_ID], shape_ids) / 1e5
    ex_base = _select_vertices(exp_pc[:, :N_EXP] * std_exp[:N_EXP], front) / 1e5  # float64, as Deep3D saves it
    tex_base = _select_vertices(tex_pc[:, :N_TEX] * tex_ev[:N_TEX], shape_ids)
    mean_shape = _select_vertices(shape_mu, shape_ids) / 1e5
    mean_tex = _select_vertices(tex_mu, shape_ids)

    info = _load_mat(info_path)
    out = {
        "meanshape": mean_shape.reshape(1, -1).astype(np.float32),
        "meantex": mean_tex.reshape(1, -1).astype(np.float32),
        "idBase": id_base.astype(np.float32),
        "exBase": ex_base.astype(np.float64),
        "texBase": tex_base.astype(np.float32),
    }
    for name in ("tri", "point_buf", "tri_mask2", "keypoints", "frontmask2_idx", "skinmask"):
        out[name] = _field(info, name, info_path)  # copied unchanged (1-based)
    import scipy.io

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp.mat")
    scipy.io.savemat(str(tmp), out)
    os.replace(tmp, out_path)  # atomic: never leave a half-written model behind
    load_bfm_front(out_path)  # validate what we wrote
    return out_path


def convert_bfm09_dir(bfm_dir, out_path=None) -> Path:
    """:func:`convert_bfm09` with Deep3DFaceRecon's file names inside one folder (its ``BFM/``)."""
    d = Path(bfm_dir)
    return convert_bfm09(d / "01_MorphableModel.mat", d / "Exp_Pca.bin", d / "std_exp.txt",
                         d / "BFM_exp_idx.mat", d / "BFM_front_idx.mat", d / "facemodel_info.mat",
                         out_path or d / "BFM_model_front.mat")
