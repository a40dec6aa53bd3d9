"""Morphable model: forward model vs an independent float64 numpy implementation, BFM file I/O, camera, SH.

The BFM files used here are tiny synthetic ones written by the tests (nothing of BFM is shipped).
"""
from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import scipy.io
import torch
from scipy.spatial.transform import Rotation

from cddfm3d.face3d import (BFMFormatError, MorphableModel, PinholeCamera, convert_bfm09, load_bfm_front,
                            rotation_matrix, sh_basis, shade)

RNG_SEED = 1234


# ----------------------------------------------------------------------------------- synthetic mesh + files
def cap_mesh(n=7, radius=1.0):
    """A spherical cap over an n x n grid: vertices [n*n, 3], triangles CCW seen from +z."""
    g = np.linspace(-0.5, 0.5, n)
    x, y = np.meshgrid(g, g)
    z = np.sqrt(radius ** 2 - x ** 2 - y ** 2)
    verts = np.stack([x, y, z], -1).reshape(-1, 3)
    idx = np.arange(n * n).reshape(n, n)  # row = y index (up), col = x index (right)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    tris = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return verts, tris


def padded_point_buf(tris, n_vertices, width=8):
    """1-based incident-face table padded with F+1, built the slow obvious way."""
    rows = [[] for _ in range(n_vertices)]
    for f, tri in enumerate(tris):
        for v in tri:
            rows[v].append(f + 1)
    pb = np.full((n_vertices, width), len(tris) + 1, np.float32)
    for v, r in enumerate(rows):
        pb[v, :len(r)] = r
    return pb


def write_front_mat(path, rng, **override):
    """A small file in the BFM_model_front.mat layout (1-based float32 indices, float64 exBase)."""
    verts, tris = cap_mesh()
    n = len(verts)
    mean = (verts + np.array([0.1, -0.2, 0.3])).reshape(1, -1)  # not centred, like BFM
    front = np.arange(8, n - 6)  # a band of rows, 1-based vertex ids
    pos = {v: i + 1 for i, v in enumerate(front)}  # tri_mask2 indexes positions in frontmask2_idx
    tri_mask2 = np.array([[pos[v] for v in t + 1] for t in tris if all((v + 1) in pos for v in t)], np.float32)
    fields = {
        "meanshape": mean.astype(np.float32),
        "idBase": (0.01 * rng.standard_normal((3 * n, 80))).astype(np.float32),
        "exBase": 0.01 * rng.standard_normal((3 * n, 64)),
        "meantex": rng.uniform(50, 200, (1, 3 * n)).astype(np.float32),
        "texBase": rng.standard_normal((3 * n, 80)).astype(np.float32),
        "tri": (tris + 1).astype(np.float32),
        "point_buf": padded_point_buf(tris, n),
        "keypoints": rng.integers(1, n + 1, (1, 68)).astype(np.float32),
        "frontmask2_idx": front.reshape(-1, 1).astype(np.float32),
        "tri_mask2": tri_mask2,
        "skinmask": (rng.uniform(size=(1, n)) > 0.5).astype(np.float32),
    }
    for key, value in override.items():
        if value is None:
            fields.pop(key)
        else:
            fields[key] = value
    scipy.io.savemat(str(path), fields)
    return fields


@pytest.fixture()
def bfm_file(tmp_path):
    path = tmp_path / "BFM_model_front.mat"
    fields = write_front_mat(path, np.random.default_rng(RNG_SEED))
    return path, fields


# ------------------------------------------------------------------------------ float64 numpy reference
def euler_np(ax, ay, az):
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def sh_np(n):
    """The 9 SH basis values with the constants written out (face3d.md §2.8)."""
    a0, a1, a2 = math.pi, 2 * math.pi / math.sqrt(3), 2 * math.pi / math.sqrt(8)
    c0, c1, c2 = 1 / math.sqrt(4 * math.pi), math.sqrt(3) / math.sqrt(4 * math.pi), \
        3 * math.sqrt(5) / math.sqrt(12 * math.pi)
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    return np.stack([np.full_like(x, a0 * c0), -a1 * c1 * y, a1 * c1 * z, -a1 * c1 * x, a2 * c2 * x * y,
                     -a2 * c2 * y * z, a2 * c2 / (2 * math.sqrt(3)) * (3 * z ** 2 - 1), -a2 * c2 * x * z,
                     a2 * c2 / 2 * (x ** 2 - y ** 2)], -1)


def reference_forward(f, coeff, size=224):
    """Deep3DFaceRecon's forward model for one coefficient vector, float64 numpy, from the raw .mat fields."""
    n = f["meanshape"].size // 3
    a, b, d = coeff[:80], coeff[80:144], coeff[144:224]
    ang, gamma, t = coeff[224:227], coeff[227:254], coeff[254:257]
    mean = f["meanshape"].astype(np.float64).reshape(n, 3)
    shape = mean - mean.mean(0) + (f["idBase"].astype(np.float64) @ a + f["exBase"] @ b).reshape(n, 3)
    albedo = (f["meantex"].astype(np.float64).reshape(n, 3) + (f["texBase"].astype(np.float64) @ d).reshape(n, 3)) / 255
    tri = f["tri"].astype(np.int64) - 1
    v1, v2, v3 = shape[tri[:, 0]], shape[tri[:, 1]], shape[tri[:, 2]]
    fn = np.cross(v1 - v2, v2 - v3)
    fn /= np.linalg.norm(fn, axis=1, keepdims=True)
    vn = np.zeros((n, 3))
    for k in range(3):
        np.add.at(vn, tri[:, k], fn)
    vn /= np.linalg.norm(vn, axis=1, keepdims=True)
    rot = euler_np(*ang)
    normals = vn @ rot.T
    verts = shape @ rot.T + t
    g = gamma.reshape(3, 9).copy()
    g[:, 0] += 0.8
    colors = albedo * (sh_np(normals) @ g.T)
    focal, center = 1015.0 * size / 224, 112.0 * size / 224
    depth = 10.0 - verts[:, 2]
    u = focal * verts[:, 0] / depth + center
    v = focal * verts[:, 1] / depth + center
    screen = np.stack([u, size - 1 - v, depth], -1)
    kp = f["keypoints"].astype(np.int64).reshape(-1) - 1
    return dict(shape=shape, albedo=albedo, normals=normals, vertices=verts, colors=colors, rotation=rot,
                screen=screen, landmarks=screen[kp, :2])


def random_coeffs(batch, rng, scale=1.0):
    c = rng.standard_normal((batch, 257)) * scale
    c[:, 224:227] *= 0.4           # angles of a few tens of degrees
    c[:, 227:254] *= 0.2
    c[:, 254:257] *= 0.3
    return c


# ---------------------------------------------------------------------------------------------- tests
def test_forward_matches_numpy_reference(bfm_file):
    path, fields = bfm_file
    fm = MorphableModel.from_bfm(path, dtype=torch.float64)
    rng = np.random.default_rng(0)
    coeffs = random_coeffs(3, rng)
    for size in (224, 64):
        out = fm(torch.from_numpy(coeffs), image_size=size)
        for i in range(3):
            ref = reference_forward(fields, coeffs[i], size)
            for key, value in ref.items():
                got = getattr(out, key)[i].numpy()
                np.testing.assert_allclose(got, value, rtol=1e-9, atol=1e-9, err_msg=f"{key} (size {size})")
        assert out.image_size == size and out.landmarks.shape == (3, 68, 2) and out.screen.shape[-1] == 3


def test_from_bfm_fields_and_front_mask(bfm_file):
    path, fields = bfm_file
    fm = MorphableModel.from_bfm(path)
    n = fields["meanshape"].size // 3
    assert fm.n_vertices == n and fm.faces.dtype == torch.long and fm.faces.shape == (len(fields["tri"]), 3)
    assert int(fm.faces.min()) == 0 and torch.equal(fm.keypoints, torch.from_numpy(
        fields["keypoints"].astype(np.int64).reshape(-1) - 1))
    # Centred on the mean shape's centroid.
    assert float(fm.mean_shape.mean(0).abs().max()) < 1e-6
    # front faces = frontmask2_idx[tri_mask2] (the correct map), each a triangle of the mesh.
    front = fields["frontmask2_idx"].astype(np.int64).reshape(-1) - 1
    expect = front[fields["tri_mask2"].astype(np.int64) - 1]
    assert np.array_equal(fm.front_faces.numpy(), expect)
    tri_set = {tuple(sorted(t)) for t in fm.faces.tolist()}
    assert all(tuple(sorted(t)) in tri_set for t in fm.front_faces.tolist())
    compat = MorphableModel.from_bfm(path, compat_sicxu_front_mask=True)
    assert np.array_equal(compat.front_faces.numpy(), fields["tri_mask2"].astype(np.int64) - 1)
    assert torch.equal(fm.skin_mask, torch.from_numpy(fields["skinmask"].reshape(-1) > 0.5))
    assert fm.mean_shape.dtype == torch.float32  # exBase float64 in the file is cast


def test_split_join_compose_and_no_mutation(bfm_file):
    fm = MorphableModel.from_bfm(bfm_file[0])
    c = torch.randn(2, 257)
    parts = fm.split(c)
    assert list(parts) == ["id", "exp", "tex", "angle", "gamma", "trans"]
    assert [p.shape[1] for p in parts.values()] == [80, 64, 80, 3, 27, 3]
    assert torch.equal(fm.join(parts), c)
    before = c.clone()
    fm(c)
    assert torch.equal(c, before)  # inputs are never modified (Deep3D's to_camera does)
    assert torch.equal(fm.zeros(3), torch.zeros(3, 257))


def test_gradients_reach_every_group(bfm_file):
    fm = MorphableModel.from_bfm(bfm_file[0], dtype=torch.float64)
    c = torch.from_numpy(random_coeffs(2, np.random.default_rng(1))).requires_grad_()
    out = fm(c)
    (out.colors.sum() + out.landmarks.sum() + out.screen[..., 2].sum()).backward()
    for name, s in fm.slices.items():
        assert c.grad[:, s].abs().sum() > 0, name
    # ... and the gradients are right: float64 central differences of a random linear read-out of the outputs
    g = torch.Generator().manual_seed(2)
    w_col, w_lm, w_z = (torch.rand(shape, generator=g, dtype=torch.float64)
                        for shape in (out.colors.shape, out.landmarks.shape, out.screen[..., 2].shape))

    def readout(coeffs):
        o = fm(coeffs)
        return (o.colors * w_col).sum() + (o.landmarks * w_lm).sum() + (o.screen[..., 2] * w_z).sum()

    # (atol: the read-out is ~1.5e4, so float64 central differences carry ~3e-6 of rounding)
    assert torch.autograd.gradcheck(readout, (c.detach().requires_grad_(),), eps=1e-6, atol=2e-5, rtol=1e-5)


def test_rotation_matches_scipy():
    rng = np.random.default_rng(2)
    angles = rng.uniform(-math.pi, math.pi, (1000, 3))
    r = rotation_matrix(torch.from_numpy(angles)).numpy()
    np.testing.assert_allclose(r, Rotation.from_euler("xyz", angles).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    np.testing.assert_allclose(r.transpose(0, 2, 1) @ r, np.broadcast_to(np.eye(3), r.shape), atol=1e-12)


def test_sh_basis_and_shading():
    rng = np.random.default_rng(3)
    n = rng.standard_normal((10000, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    np.testing.assert_allclose(sh_basis(torch.from_numpy(n)).numpy(), sh_np(n), atol=1e-12)
    # Documented numeric factors (face3d.md §2.8).
    y = sh_basis(torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64))
    assert abs(float(y[0, 0]) - 0.886227) < 1e-6 and abs(float(y[0, 2]) - 1.772454) < 1e-6
    assert abs(float(y[0, 6]) - 2 * 0.700624) < 1e-6 and abs(float(y[1, 8]) - 1.213516) < 1e-6
    albedo = torch.from_numpy(rng.uniform(size=(2, 10000, 3)))
    normals = torch.from_numpy(np.stack([n, n]))
    gamma0 = torch.zeros(2, 27, dtype=torch.float64)
    np.testing.assert_allclose(shade(albedo, normals, gamma0).numpy(), 0.8 * 0.886227 * albedo.numpy(), rtol=1e-6)
    g1, g2 = torch.randn(2, 27, dtype=torch.float64), torch.randn(2, 27, dtype=torch.float64)
    lin = shade(albedo, normals, g1 + g2) - shade(albedo, normals, g1) - shade(albedo, normals, g2) \
        + shade(albedo, normals, gamma0)
    assert float(lin.abs().max()) < 1e-10  # affine in gamma
    before = g1.clone()
    shade(albedo, normals, g1)
    assert torch.equal(g1, before)


def test_vertex_normals_on_a_sphere():
    verts, tris = cap_mesh(n=41, radius=1.0)
    zeros = np.zeros((verts.size, 80))
    fm = MorphableModel(verts.reshape(-1), zeros, zeros[:, :64], np.full(verts.size, 128.0), zeros, tris,
                        np.zeros(68, np.int64), dtype=torch.float64)
    normals = fm(torch.zeros(1, 257, dtype=torch.float64)).normals[0].numpy()
    grid = np.arange(41 * 41).reshape(41, 41)[1:-1, 1:-1].reshape(-1)  # interior vertices
    assert np.abs(normals[grid] - verts[grid]).max() < 1e-3
    assert (normals[:, 2] > 0).all()  # CCW seen from +z means normals toward the camera


def test_camera_projection_conventions():
    cam = PinholeCamera()
    assert abs(cam.fov_degrees - 12.5936) < 1e-4
    pts = torch.tensor([[[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    scr = cam.project(pts)[0]
    assert scr[0].tolist() == [112.0, 111.0, 10.0]       # optical axis: u = v = 112 -> (x, y) = (112, 223 - 112)
    assert scr[1, 0] > 112 and scr[2, 1] < 111           # +x is right, +y is up (smaller row)
    assert scr[3, 2] < scr[0, 2]                         # nearer the camera = smaller depth
    np.testing.assert_allclose(cam.unproject(cam.project(pts)).numpy(), pts.numpy(), atol=1e-12)
    small = cam.scaled(64)
    assert (small.focal, small.center, small.image_size) == (1015.0 * 64 / 224, 32.0, 64)
    s64 = small.project(pts)[0]
    np.testing.assert_allclose(s64[:, 0].numpy(), scr[:, 0].numpy() * 64 / 224, atol=1e-12)
    np.testing.assert_allclose((63 - s64[:, 1]).numpy(), (223 - scr[:, 1]).numpy() * 64 / 224, atol=1e-12)
    with pytest.raises(ValueError, match="image_size"):
        PinholeCamera(image_size=0)


def test_image_size_choice(bfm_file):
    fm = MorphableModel.from_bfm(bfm_file[0])
    c = torch.randn(1, 257) * 0.1
    a = fm(c, image_size=128)
    fm.image_size = 128
    b = fm(c)
    assert fm.image_size == 128 and fm.camera == PinholeCamera().scaled(128)
    assert torch.equal(a.screen, b.screen)
    d = fm(c, camera=PinholeCamera().scaled(96))
    assert d.image_size == 96


def test_bad_coefficients(bfm_file):
    fm = MorphableModel.from_bfm(bfm_file[0])
    with pytest.raises(ValueError, match=r"\[B, 257\].*found shape \(1, 256\)"):
        fm(torch.zeros(1, 256))
    with pytest.raises(ValueError, match=r"found shape \(257,\)"):
        fm(torch.zeros(257))
    bad = torch.zeros(2, 257)
    bad[1, 230] = float("nan")
    with pytest.raises(ValueError, match=r"NaN/Inf.*sample 1, index 230, group 'gamma'"):
        fm(bad)
    bad[1, 230] = float("inf")
    with pytest.raises(ValueError, match="NaN/Inf"):
        fm(bad)
    with pytest.raises(ValueError, match="floating"):
        fm(torch.zeros(1, 257, dtype=torch.long))
    with pytest.raises(TypeError):
        fm(np.zeros((1, 257)))


@pytest.mark.parametrize("override, message", [
    ({"idBase": None}, r"missing field 'idBase'"),
    ({"idBase": np.zeros((147, 79), np.float32)}, r"'idBase': expected shape \(147, 80\).*found \(147, 79\)"),
    ({"exBase": np.zeros((146, 64))}, r"'exBase': expected shape \(147, 64\).*found \(146, 64\)"),
    ({"meantex": np.zeros((1, 140), np.float32)}, r"'meantex': expected \(1, 147\).*found shape \(1, 140\)"),
    ({"meanshape": np.zeros((3, 49), np.float32)}, r"'meanshape': expected a vector"),
    ({"tri": np.full((72, 3), 50, np.float32)}, r"'tri': expected 1-based indices in \[1, 49\].*\[50, 50\]"),
    ({"tri": np.ones((72, 4), np.float32)}, r"'tri': expected shape \(F, 3\)"),
    ({"point_buf": np.ones((48, 8), np.float32)}, r"'point_buf': expected shape \(N=49, K\)"),
    ({"keypoints": np.ones((1, 67), np.float32)}, r"'keypoints': expected \(1, 68\)"),
    ({"keypoints": np.full((1, 68), 0.5, np.float32)}, r"'keypoints': expected integer"),
    ({"texBase": np.full((147, 80), np.nan, np.float32)}, r"'texBase' contains NaN"),
    ({"skinmask": np.ones((1, 3), np.float32)}, r"'skinmask': expected \(1, 49\)"),
])
def test_bad_bfm_files(tmp_path, override, message):
    path = tmp_path / "bad.mat"
    write_front_mat(path, np.random.default_rng(RNG_SEED), **override)
    with pytest.raises(BFMFormatError, match=message) as info:
        MorphableModel.from_bfm(path)
    assert str(path) in str(info.value)  # the error names the file


def test_missing_or_unreadable_bfm_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mat.*convert_bfm09"):
        load_bfm_front(tmp_path / "nope.mat")
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"not a mat file at all")
    with pytest.raises(BFMFormatError, match="junk.mat"):
        load_bfm_front(junk)


def test_convert_bfm09_follows_the_recipe(tmp_path):
    """A miniature BFM09 (V=60 vertices, 199 PCs; 45 expression vertices, 79 PCs; 30 front vertices)."""
    rng = np.random.default_rng(5)
    v_full, v_exp = 60, 45
    verts, tris = cap_mesh(n=6)  # 36 front vertices
    v_front = len(verts)
    shape_mu = rng.uniform(-8e4, 8e4, (3 * v_full, 1))
    shape_pc = rng.standard_normal((3 * v_full, 199))
    shape_ev = rng.uniform(1e3, 5e4, (199, 1))
    tex_mu = rng.uniform(0, 255, (3 * v_full, 1))
    tex_pc = rng.standard_normal((3 * v_full, 199))
    tex_ev = rng.uniform(1, 30, (199, 1))
    scipy.io.savemat(str(tmp_path / "01_MorphableModel.mat"), dict(shapeMU=shape_mu, shapePC=shape_pc,
                     shapeEV=shape_ev, texMU=tex_mu, texPC=tex_pc, texEV=tex_ev))
    trim = np.sort(rng.choice(v_full, v_exp, replace=False)) + 1          # 1-based into BFM09
    front = np.sort(rng.choice(v_exp, v_front, replace=False)) + 1        # 1-based into the expression set
    scipy.io.savemat(str(tmp_path / "BFM_exp_idx.mat"), dict(trimIndex=trim.reshape(-1, 1).astype(np.uint16)))
    scipy.io.savemat(str(tmp_path / "BFM_front_idx.mat"), dict(idx=front.reshape(-1, 1).astype(np.float64)))
    exp_mu = rng.standard_normal(3 * v_exp).astype(np.float32)
    exp_pc = rng.standard_normal((79, 3 * v_exp)).astype(np.float32)      # PC-major on disk
    (tmp_path / "Exp_Pca.bin").write_bytes(struct.pack("<i", 79) + exp_mu.tobytes() + exp_pc.tobytes())
    std_exp = rng.uniform(1e3, 1e4, 79)
    np.savetxt(tmp_path / "std_exp.txt", std_exp)
    info = dict(tri=(tris + 1).astype(np.float32), point_buf=padded_point_buf(tris, v_front),
                tri_mask2=np.array([[1, 2, 3]], np.float32),
                keypoints=np.arange(1, 69, dtype=np.float32)[None] % v_front + 1,
                frontmask2_idx=np.arange(1, 11, dtype=np.float32)[:, None], skinmask=np.ones((1, v_front), np.float32))
    scipy.io.savemat(str(tmp_path / "facemodel_info.mat"), info)

    out = convert_bfm09(tmp_path / "01_MorphableModel.mat", tmp_path / "Exp_Pca.bin", tmp_path / "std_exp.txt",
                        tmp_path / "BFM_exp_idx.mat", tmp_path / "BFM_front_idx.mat", tmp_path / "facemodel_info.mat",
                        tmp_path / "out" / "BFM_model_front.mat")
    m = scipy.io.loadmat(str(out))
    sel = trim[front - 1] - 1                              # front -> BFM09, 0-based
    rows = (3 * sel[:, None] + np.arange(3)).reshape(-1)   # xyz interleaved
    exp_rows = (3 * (front - 1)[:, None] + np.arange(3)).reshape(-1)
    np.testing.assert_allclose(m["idBase"], (shape_pc[:, :80] * shape_ev[:80, 0])[rows] / 1e5, rtol=1e-6)
    np.testing.assert_allclose(m["exBase"], (exp_pc.T.astype(np.float64)[:, :64] * std_exp[:64])[exp_rows] / 1e5,
                               rtol=1e-12)
    np.testing.assert_allclose(m["texBase"], (tex_pc[:, :80] * tex_ev[:80, 0])[rows], rtol=1e-6)
    np.testing.assert_allclose(m["meanshape"], shape_mu[rows].T / 1e5, rtol=1e-6)
    np.testing.assert_allclose(m["meantex"], tex_mu[rows].T, rtol=1e-6)
    assert m["exBase"].dtype == np.float64 and m["idBase"].dtype == np.float32
    for key, value in info.items():
        np.testing.assert_array_equal(m[key], value)
    fm = MorphableModel.from_bfm(out)
    assert fm.n_vertices == v_front

    # A truncated Exp_Pca.bin is reported with its size.
    (tmp_path / "Exp_Pca.bin").write_bytes(struct.pack("<i", 79) + exp_mu.tobytes())
    with pytest.raises(BFMFormatError, match="Exp_Pca.bin.*bytes"):
        convert_bfm09(tmp_path / "01_MorphableModel.mat", tmp_path / "Exp_Pca.bin", tmp_path / "std_exp.txt",
                      tmp_path / "BFM_exp_idx.mat", tmp_path / "BFM_front_idx.mat", tmp_path / "facemodel_info.mat",
                      tmp_path / "out2.mat")


def test_buffers_follow_dtype(bfm_file):
    fm = MorphableModel.from_bfm(bfm_file[0])
    names = {n for n, _ in fm.named_buffers()}
    assert {"mean_shape", "shape_base", "mean_tex", "tex_base", "faces", "point_buf", "keypoints"} <= names
    fm64 = fm.double()
    assert fm64.mean_shape.dtype == torch.float64 and fm64.faces.dtype == torch.long


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_forward_matches_cpu(bfm_file):
    fmc = MorphableModel.from_bfm(bfm_file[0]).to("cuda")
    c = torch.randn(2, 257, generator=torch.Generator().manual_seed(0)) * 0.3
    out = fmc(c.cuda())
    ref = MorphableModel.from_bfm(bfm_file[0])(c)
    assert out.colors.device.type == "cuda"
    torch.testing.assert_close(out.screen.cpu(), ref.screen, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(out.colors.cpu(), ref.colors, rtol=1e-4, atol=1e-5)


def test_check_coeff_rows_accepts_finite_float_rows_and_names_what_it_refuses():
    from cddfm3d.face3d.morphable import check_coeff_rows

    good = torch.zeros(3, 257, dtype=torch.float64)
    assert check_coeff_rows(good, 3, "who", "P") is good
    nan = torch.zeros(3, 257)
    nan[1, 200] = float("nan")
    inf = torch.zeros(3, 257)
    inf[0, 0] = float("-inf")
    non_finite = r"\(3, 257\) torch.float32 with 1 NaN/Inf values"
    cases = ((torch.zeros(2, 257), r"\(2, 257\) torch.float32"), (torch.zeros(3, 256), r"\(3, 256\)"),
             (torch.zeros(3, 257, dtype=torch.int64), r"\(3, 257\) torch.int64"), (nan, non_finite),
             (inf, non_finite), ([[0.0] * 257] * 3, "list"), (torch.zeros(1, 3, 257), r"\(1, 3, 257\)"))
    for bad, found in cases:
        with pytest.raises(ValueError, match=r"^who: P must be finite float coefficients \[3, 257\] \(one row per "
                                             r"source\), found " + found):
            check_coeff_rows(bad, 3, "who", "P")
