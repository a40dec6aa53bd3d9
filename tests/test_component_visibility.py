"""How much each morphable-model component shows in an image (cddfm3d.face3d.measures.component_visibility,
visible_vertices) and the priors' per-coefficient std (cddfm3d.world.priors.prior_std), against brute force: finite
differences of the model's forward pass, the projection derivative written out in numpy, the PCA's singular values,
ray casting in numpy, scipy's truncated normal and the empirical std of sample_coeffs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import truncnorm

from cddfm3d.face3d import MorphableModel
from cddfm3d.face3d.measures import COLOUR_GROUPS, MOTION_GROUPS, component_visibility, visible_vertices
from cddfm3d.face3d.miniface import CAVITY, build_miniface
from cddfm3d.face3d.morphable import SLICES
from cddfm3d.world import priors, sample_coeffs

SIZE = 64


@pytest.fixture(scope="module")
def fm():
    return MorphableModel.mini(dtype=torch.float64)


@pytest.fixture(scope="module")
def face():
    """One prior draw: posed, lit, translated, so no term of the derivative vanishes."""
    return sample_coeffs(1, seed=11)[0].double()


def observed(fm, c, quantity="screen"):
    out = fm(c[None], image_size=SIZE)
    return {"albedo": out.albedo, "colour": out.colors, "screen": out.screen[..., :2]}[quantity][0]


@pytest.mark.parametrize("group, quantity", [(g, None) for g in MOTION_GROUPS + COLOUR_GROUPS]
                         + [("id", "colour"), ("exp", "colour"), ("angle", "colour")])
def test_motion_is_the_rms_of_finite_differences_of_the_forward_model(fm, face, group, quantity):
    std = priors.prior_std()[SLICES[group]]
    got = component_visibility(fm, group, std, SIZE, coeffs=face, quantity=quantity)
    vis = visible_vertices(fm, face, SIZE)[0]
    seen = quantity or {"tex": "albedo", "gamma": "colour"}.get(group, "screen")
    h = 1e-5
    want = []
    for k in range(SLICES[group].start, SLICES[group].stop):
        step = torch.zeros(257, dtype=torch.float64)
        step[k] = h
        d = (observed(fm, face + step, seen) - observed(fm, face - step, seen)) / (2 * h)
        want.append(float(d[vis].square().sum(-1).mean().sqrt()) * float(std[k - SLICES[group].start]))
    assert got.dtype == torch.float64 and got.shape == (SLICES[group].stop - SLICES[group].start,)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=1e-9)


def test_one_std_step_moves_the_face_as_the_linearisation_says(fm):
    """Shape enters linearly; only the perspective division bends the motion of a finite +-1 std step."""
    std = 1.5
    lin = component_visibility(fm, "id", std, SIZE, vertices="all")
    zero = torch.zeros(257, dtype=torch.float64)
    base = observed(fm, zero)
    for k in range(0, 80, 7):
        step = zero.clone()
        step[k] = std
        plus = (observed(fm, step) - base).square().sum(-1).mean().sqrt()
        minus = (observed(fm, -step) - base).square().sum(-1).mean().sqrt()
        assert abs(float((plus + minus) / 2) / float(lin[k]) - 1) < 1e-3, k


def test_frontal_motion_is_the_projection_derivative_written_out(fm):
    """At the mean face, frontal and centred: u = f X / (D - Z) + c, y = H - 1 - (f Y / (D - Z) + c), so a vertex
    displacement b moves the screen point by f / d (b_x + X b_z / d, -(b_y + Y b_z / d)) with d = D - Z."""
    m = build_miniface()
    n = len(m["meanshape"]) // 3
    mean = m["meanshape"].reshape(n, 3) - m["meanshape"].reshape(n, 3).mean(0)
    f, dist = 1015.0 * SIZE / 224, 10.0
    x, y, z = mean.T
    d = dist - z
    for group, base, width in (("id", m["idBase"], 80), ("exp", m["exBase"], 64)):
        b = base.reshape(n, 3, width)
        du = f / d[:, None] * (b[:, 0] + (x / d)[:, None] * b[:, 2])
        dv = f / d[:, None] * (b[:, 1] + (y / d)[:, None] * b[:, 2])
        want = 0.8 * np.sqrt((du ** 2 + dv ** 2).mean(0))
        got = component_visibility(fm, group, 0.8, SIZE, vertices="all")
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-9)


def test_texture_change_is_the_pca_singular_value(fm):
    """MiniFace's texture basis is U S with orthonormal U, so column k has norm S_k: over all N vertices one std of
    component k changes the albedo by S_k std_k / (255 sqrt(N)) RMS (RGB 0-1)."""
    m = build_miniface()
    std = torch.linspace(0.2, 1.0, 80, dtype=torch.float64)
    got = component_visibility(fm, "tex", std, SIZE, vertices="all")
    want = torch.tensor(np.array(m["tex_std"]), dtype=torch.float64) * std / (255 * math.sqrt(fm.n_vertices))
    torch.testing.assert_close(got, want, rtol=1e-9, atol=0)


def test_motion_is_invariant_to_roll_and_linear_in_image_size(fm):
    """A roll about the optical axis (face centred on it) turns every screen displacement by the roll angle: no
    norm changes. The focal length scales with the image, so pixel motion does too; colour does not."""
    base = component_visibility(fm, "id", 0.9, SIZE, vertices="all")
    rolled = torch.zeros(257, dtype=torch.float64)
    rolled[SLICES["angle"].start + 2] = 0.4
    torch.testing.assert_close(component_visibility(fm, "id", 0.9, SIZE, coeffs=rolled, vertices="all"), base,
                               rtol=1e-10, atol=0)
    torch.testing.assert_close(component_visibility(fm, "id", 0.9, 2 * SIZE, vertices="all"), 2 * base,
                               rtol=1e-10, atol=0)
    tex = component_visibility(fm, "tex", 0.7, SIZE, vertices="all")
    torch.testing.assert_close(component_visibility(fm, "tex", 0.7, 2 * SIZE, vertices="all"), tex)


def test_batched_coeffs_give_one_row_per_face(fm, face):
    batch = torch.stack([face, torch.zeros_like(face)])
    got = component_visibility(fm, "exp", 0.8, SIZE, coeffs=batch)
    assert got.shape == (2, 64)
    torch.testing.assert_close(got[0], component_visibility(fm, "exp", 0.8, SIZE, coeffs=face))
    torch.testing.assert_close(got[1], component_visibility(fm, "exp", 0.8, SIZE))


def _ray_visible(fm, coeffs, ids):
    """Brute force in float64 numpy: vertex v is visible when no triangle without v crosses the segment from the
    camera to v (Moller-Trumbore against every triangle; a ray along a shared edge counts as a hit, so it cannot
    slip through the seam of the coincident upper and lower lip copies)."""
    out = fm(coeffs[None])
    verts = out.vertices[0].numpy()
    faces = fm.faces.numpy()
    cam = np.array([0.0, 0.0, fm.camera.distance])
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    e1, e2 = b - a, c - a
    result = []
    for v in ids:
        direction = verts[v] - cam                       # the segment cam + t * direction, t in (0, 1)
        p = np.cross(direction, e2)
        det = (e1 * p).sum(1)
        ok = np.abs(det) > 1e-14
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        s = cam - a
        u = (s * p).sum(1) * inv
        q = np.cross(s, e1)
        w = (direction * q).sum(1) * inv
        t = (e2 * q).sum(1) * inv
        hit = ok & (u >= -1e-9) & (w >= -1e-9) & (u + w <= 1 + 1e-9) & (t > 0) & (t < 1 - 1e-9) & ~(faces == v).any(1)
        result.append(not hit.any())
    return np.array(result)


@pytest.mark.parametrize("pose", ["frontal", "jaw_open_yaw"])
def test_visible_vertices_agree_with_ray_casting(fm, pose):
    coeffs = torch.zeros(257, dtype=torch.float64)
    if pose == "jaw_open_yaw":
        coeffs = fm.compose(jaw_open=3.0)[0].double()
        coeffs[SLICES["angle"].start + 1] = math.radians(30)
    ids = np.arange(0, fm.n_vertices, 5)
    want = _ray_visible(fm, coeffs, ids)
    got = visible_vertices(fm, coeffs, SIZE)[0].numpy()[ids]
    assert 0 < want.sum() < len(ids)
    assert (got != want).mean() < 0.03, ((got != want).sum(), len(ids))
    out = fm(coeffs[None])
    view = torch.tensor([0.0, 0.0, fm.camera.distance], dtype=torch.float64) - out.vertices[0]
    cos = ((out.normals[0] * view).sum(-1) / view.norm(dim=-1)).numpy()
    # Seen by a ray but won no raster sample: only where the surface is seen edge-on (silhouette slivers).
    missed = ids[want & ~got]
    assert (np.abs(cos[missed]) < 0.25).all(), cos[missed]
    # Marked by the raster but hidden from a ray: corners of a seen triangle, so next to a ray-visible vertex.
    faces = fm.faces.numpy()
    for v in ids[got & ~want]:
        neighbours = np.setdiff1d(faces[(faces == v).any(1)].reshape(-1), [v])
        assert _ray_visible(fm, coeffs, neighbours).any(), v


def test_closed_mouth_hides_the_cavity_and_an_open_jaw_shows_it(fm):
    label = torch.as_tensor(build_miniface()["vertex_label"])
    cavity = label == CAVITY
    closed = visible_vertices(fm, None, SIZE)[0]
    opened = visible_vertices(fm, fm.compose(jaw_open=3.0).double(), SIZE)[0]
    assert closed[~cavity].float().mean() > 0.98
    assert closed[cavity].float().mean() < 0.2
    assert opened[cavity].sum() > 2 * closed[cavity].sum()


def test_prior_std_matches_the_formulas_and_the_sampler():
    std = priors.prior_std()
    assert std.shape == (257,) and std.dtype == torch.float64
    assert (std[SLICES["id"]] == priors.ID_SCALE).all() and (std[SLICES["exp"]] == priors.EXP_SCALE).all()
    assert (std[SLICES["tex"]] == priors.TEX_SCALE).all()
    for k, name in enumerate(("pitch", "yaw", "roll")):
        sd, lim = math.radians(priors.POSE_DEG[name][0]), math.radians(priors.POSE_DEG[name][1])
        assert float(std[SLICES["angle"].start + k]) == pytest.approx(truncnorm(-lim / sd, lim / sd, scale=sd).std(),
                                                                       rel=1e-12)
    for k, (sd, lim) in enumerate(zip(priors.TRANS_STD, priors.TRANS_LIMIT, strict=True)):
        assert float(std[SLICES["trans"].start + k]) == pytest.approx(truncnorm(-lim / sd, lim / sd, scale=sd).std(),
                                                                       rel=1e-12)
    n = 40_000
    empirical = sample_coeffs(n, seed=5).double().std(0)
    # Standard error of a sample std: ~ std / sqrt(2 n) for a normal; the light prior has heavier tails: 6 of them.
    torch.testing.assert_close(empirical, std, rtol=6 / math.sqrt(2 * n), atol=0)
    std[0] = -1.0
    assert float(priors.prior_std()[0]) == priors.ID_SCALE      # a copy: the cache cannot be changed by callers


def test_truncated_normal_std_edges_and_errors():
    assert priors.truncated_normal_std(2.0, 1e3) == pytest.approx(2.0, rel=1e-12)   # no truncation
    assert priors.truncated_normal_std(1.0, 1e-3) == pytest.approx(1e-3 / math.sqrt(3), rel=1e-5)  # ~ uniform
    for bad in ((0.0, 1.0), (1.0, -1.0), (float("nan"), 1.0), (1.0, float("inf"))):
        with pytest.raises(ValueError, match="truncated_normal_std"):
            priors.truncated_normal_std(*bad)


@pytest.mark.parametrize("kwargs, match", [
    ({"group": "shape"}, r"group must be one of .*'id'.*found 'shape'"),
    ({"std": torch.ones(79)}, r"std must be a number or 80 values for group 'id', found 79"),
    ({"std": -0.5}, r"std must be finite and >= 0"),
    ({"std": float("nan")}, r"std must be finite and >= 0"),
    ({"std": "wide"}, r"std must be a number or 80 numbers, found str"),
    ({"image_size": 0}, r"image_size must be a positive int"),
    ({"image_size": 64.0}, r"image_size must be a positive int"),
    ({"vertices": "front"}, r"vertices must be one of \('visible', 'all'\), found 'front'"),
    ({"quantity": "depth"}, r"quantity must be None or one of \('screen', 'albedo', 'colour'\), found 'depth'"),
    ({"coeffs": torch.zeros(256)}, r"coeffs must be \[257\] or \[B >= 1, 257\], found \(256,\)"),
    ({"coeffs": torch.full((257,), float("inf"))}, r"coeffs contain NaN/Inf"),
])
def test_bad_input_is_named(fm, kwargs, match):
    args = {"group": "id", "std": 0.9, **kwargs}
    with pytest.raises(ValueError, match=match):
        component_visibility(fm, args.pop("group"), args.pop("std"), **args)


def test_integer_coeffs_are_refused(fm):
    with pytest.raises(TypeError, match=r"coeffs must be a float tensor \[257\] or \[B, 257\], found torch.int64"):
        component_visibility(fm, "id", 0.9, coeffs=torch.zeros(257, dtype=torch.long))
    with pytest.raises(ValueError, match="supersample must be a positive int"):
        visible_vertices(fm, None, SIZE, supersample=0)
