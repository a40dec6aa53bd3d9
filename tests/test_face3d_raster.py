"""Differentiable rasterizer (cddfm3d.face3d.raster) and renderer (cddfm3d.face3d.render).

The reference is a brute-force float64 rasterizer written here independently (barycentrics by solving the
2x2 system of each triangle at every pixel, no binning, no packed keys).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cddfm3d.face3d import MorphableModel, visibility
from cddfm3d.face3d.camera import PinholeCamera
from cddfm3d.face3d.mesh import ColoredMesh
from cddfm3d.face3d.raster import interpolate, rasterize
from cddfm3d.face3d.render import render

# ------------------------------------------------------------------------------------------------
# reference implementation and meshes


def brute_force(verts, faces, height, width, perspective=True):
    """Per pixel: nearest covering triangle. Returns (face_index, depth, reliable) as numpy arrays.

    ``reliable`` is False where the answer is numerically fragile: the two nearest depths are within 1e-6
    (relative), or some covering/near-covering triangle has the pixel within 1e-4 (barycentric) of an edge.
    """
    v = verts.detach().double().numpy()
    f = faces.numpy()
    jj, ii = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    best = np.full((height, width), np.inf)
    second = np.full((height, width), np.inf)
    index = np.full((height, width), -1)
    fragile = np.zeros((height, width), bool)
    for t, (a, b, c) in enumerate(f):
        (xa, ya, za), (xb, yb, zb), (xc, yc, zc) = v[a], v[b], v[c]
        if perspective and min(za, zb, zc) <= 0:
            continue
        det = (xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)
        if det == 0:
            continue
        l1 = ((jj - xa) * (yc - ya) - (xc - xa) * (ii - ya)) / det
        l2 = ((xb - xa) * (ii - ya) - (jj - xa) * (yb - ya)) / det
        l0 = 1 - l1 - l2
        lmin = np.minimum(np.minimum(l0, l1), l2)
        fragile |= np.abs(lmin) < 1e-4
        inside = lmin >= 0
        if perspective:
            d = 1 / (l0 / za + l1 / zb + l2 / zc)
        else:
            d = l0 * za + l1 * zb + l2 * zc
        d = np.where(inside, d, np.inf)
        nearer = d < best
        second = np.where(nearer, best, np.minimum(second, d))
        index = np.where(nearer, t, index)
        best = np.where(nearer, d, best)
    gap = np.where(np.isfinite(second), second - np.where(np.isfinite(best), best, 0), np.inf)
    tie = gap <= 1e-6 * np.maximum(np.abs(np.where(np.isfinite(best), best, 0)), 1)
    return index, np.where(index >= 0, best, 0), ~(tie | fragile)


def random_mesh(seed, n_tri, height, width, size_px, depth=(1.0, 3.0), margin=0.2):
    """Random independent triangles: centres spread over the image (and a bit beyond), side ~ size_px."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n_tri, 1, 2, generator=g) * torch.tensor([width, height]) * (1 + 2 * margin)
    centre = centre - torch.tensor([width, height]) * margin
    offs = (torch.rand(n_tri, 3, 2, generator=g) - 0.5) * size_px
    z = depth[0] + torch.rand(n_tri, 3, 1, generator=g) * (depth[1] - depth[0])
    verts = torch.cat((centre + offs, z), -1).reshape(1, -1, 3)
    faces = torch.arange(3 * n_tri).reshape(n_tri, 3)
    return verts, faces


def grid_mesh(n, height, width, seed=0, jitter=0.3, z=2.0):
    """A sheet of (n-1)^2 quads covering [-1, width] x [-1, height] with jittered interior vertices."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(-1, height, n), torch.linspace(-1, width, n), indexing="ij")
    step = torch.tensor([(width + 1) / (n - 1), (height + 1) / (n - 1)])
    jit = (torch.rand(n, n, 2, generator=g) - 0.5) * jitter * step
    jit[0] = jit[-1] = 0
    jit[:, 0] = jit[:, -1] = 0
    xy = torch.stack((xs, ys), -1) + jit
    zz = z + 0.5 * torch.rand(n, n, 1, generator=g)
    verts = torch.cat((xy, zz), -1).reshape(1, -1, 3)
    i = torch.arange(n - 1)
    a = (i[:, None] * n + i[None, :]).reshape(-1)
    faces = torch.cat((torch.stack((a, a + n, a + 1), 1), torch.stack((a + 1, a + n, a + n + 1), 1)))
    return verts, faces


# ------------------------------------------------------------------------------------------------
# visibility


@pytest.mark.parametrize(
    "seed, n_tri, height, width, size_px",
    [
        (0, 12, 16, 20, 30.0),  # large, heavily overlapping triangles reaching past the image
        (1, 150, 40, 48, 12.0),  # medium
        (2, 1200, 64, 64, 3.0),  # many tiny triangles, most covering 0-2 pixel centres
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_face_index_matches_brute_force(seed, n_tri, height, width, size_px, dtype):
    verts, faces = random_mesh(seed, n_tri, height, width, size_px)
    verts = verts.to(dtype)
    rast = rasterize(verts, faces, height, width)
    ref_index, ref_depth, reliable = brute_force(verts[0], faces, height, width)
    got = rast.face_index[0].numpy()
    assert reliable.mean() > 0.97, "too many fragile pixels for a meaningful comparison"
    mismatch = (got != ref_index) & reliable
    assert mismatch.sum() == 0, f"{mismatch.sum()} pixels differ from brute force"
    covered = reliable & (ref_index >= 0)
    assert covered.sum() > 200
    np.testing.assert_allclose(rast.depth[0].double().numpy()[covered], ref_depth[covered], rtol=1e-5)
    assert (rast.depth[0][~rast.mask[0]] == 0).all()
    assert (rast.bary[0][~rast.mask[0]] == 0).all()


def test_orthographic_mode_with_negative_depth_matches_brute_force():
    # Linear depth of any sign: checks the monotone float->int key for negative values too.
    verts, faces = random_mesh(3, 80, 32, 32, 12.0, depth=(-2.0, 2.0))
    rast = rasterize(verts, faces, 32, 32, perspective_correct=False)
    ref_index, ref_depth, reliable = brute_force(verts[0], faces, 32, 32, perspective=False)
    got = rast.face_index[0].numpy()
    assert ((got != ref_index) & reliable).sum() == 0
    covered = reliable & (ref_index >= 0)
    np.testing.assert_allclose(rast.depth[0].double().numpy()[covered], ref_depth[covered], atol=1e-5)


def test_single_triangle_coverage_count_is_analytic():
    # Right triangle with legs of 10 px on half-integer lines: the covered pixel centres (j, i) are the
    # integer points with j >= 1, i >= 1, i + j <= 11 (the hypotenuse points count: inclusive rule) -> 55.
    verts = torch.tensor([[[0.5, 0.5, 1.0], [10.5, 0.5, 1.0], [0.5, 10.5, 1.0]]])
    faces = torch.tensor([[0, 1, 2]])
    rast = rasterize(verts, faces, 16, 16)
    assert int(rast.mask.sum()) == 55
    flipped = rasterize(verts, faces[:, [0, 2, 1]], 16, 16)  # the other winding is drawn too
    assert torch.equal(flipped.mask, rast.mask)


def test_watertight_sheet_has_no_holes():
    verts, faces = grid_mesh(9, 30, 40)
    rast = rasterize(verts, faces, 30, 40)
    assert bool(rast.mask.all())
    ref_index, _, reliable = brute_force(verts[0], faces, 30, 40)
    assert ((rast.face_index[0].numpy() != ref_index) & reliable).sum() == 0


def test_culled_inputs_behind_camera_degenerate_and_offscreen():
    verts = torch.tensor([[
        [2.0, 2.0, -1.0], [12.0, 2.0, 1.0], [2.0, 12.0, 1.0],  # one vertex behind the camera: not drawn
        [2.0, 2.0, 1.0], [6.0, 6.0, 1.0], [10.0, 10.0, 1.0],  # zero area: not drawn
        [40.0, 40.0, 1.0], [50.0, 40.0, 1.0], [40.0, 50.0, 1.0],  # off screen
        [float("nan"), 1.0, 1.0], [9.0, 1.0, 1.0], [1.0, 9.0, 1.0],  # NaN: not drawn
    ]])
    faces = torch.arange(12).reshape(4, 3)
    rast = rasterize(verts, faces, 16, 16)
    assert not bool(rast.mask.any())
    assert rast.pix_index.numel() == 0
    assert interpolate(verts, rast, faces).abs().sum() == 0


def test_results_do_not_depend_on_batch_composition():
    a, fa = random_mesh(4, 60, 24, 28, 9.0)
    b, _ = random_mesh(5, 60, 24, 28, 9.0)
    c, _ = random_mesh(6, 60, 24, 28, 9.0)
    batch = torch.cat((a, b, c))
    together = rasterize(batch, fa, 24, 28)
    for k, single in enumerate((a, b, c)):
        alone = rasterize(single, fa, 24, 28)
        assert torch.equal(together.face_index[k], alone.face_index[0])
        assert torch.equal(together.bary[k], alone.bary[0])
        assert torch.equal(together.depth[k], alone.depth[0])


def test_chunked_enumeration_is_identical(monkeypatch):
    # Tiny passes split big triangles across passes; the z-buffer must not change.
    verts, faces = random_mesh(0, 12, 16, 20, 30.0)
    ref = visibility.zbuffer_torch(verts, faces, 16, 20, True)
    monkeypatch.setattr(visibility, "CHUNK_CPU", 37)
    assert torch.equal(visibility.zbuffer_torch(verts, faces, 16, 20, True), ref)


def test_depth_ties_resolve_to_smaller_face_index():
    tri = torch.tensor([[1.0, 1.0, 2.0], [14.0, 1.0, 2.0], [1.0, 14.0, 2.0]])
    verts = torch.cat((tri, tri)).unsqueeze(0)
    faces = torch.tensor([[3, 4, 5], [0, 1, 2]])
    rast = rasterize(verts, faces, 16, 16)
    assert set(rast.face_index[rast.mask].tolist()) == {0}


# ------------------------------------------------------------------------------------------------
# interpolation


def test_screen_affine_attribute_is_exact_without_perspective():
    verts, faces = grid_mesh(6, 20, 24, seed=1)
    rast = rasterize(verts, faces, 20, 24, perspective_correct=False)
    x, y = verts[..., 0], verts[..., 1]
    attr = torch.stack((0.3 * x - 0.7 * y + 2.0, 0.05 * x + 1.5), -1)
    out = interpolate(attr, rast, faces)
    ii, jj = torch.meshgrid(torch.arange(20.0), torch.arange(24.0), indexing="ij")
    expect = torch.stack((0.3 * jj - 0.7 * ii + 2.0, 0.05 * jj + 1.5), -1)
    assert bool(rast.mask.all())
    torch.testing.assert_close(out[0], expect, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_camera_space_linear_attribute_is_perspective_correct(dtype, tol):
    # Triangles in camera space, projected with a pinhole; an attribute linear in 3-D position must equal
    # its value at the point where the pixel's ray meets the triangle's plane (and depth = that point's z).
    g = torch.Generator().manual_seed(7)
    focal, cx, cy, H, W = 40.0, 15.5, 12.0, 24, 32
    n = 10
    centre = torch.cat((torch.rand(n, 1, 2, generator=g) * 1.2 - 0.6, 2 + 3 * torch.rand(n, 1, 1, generator=g)), -1)
    tris = centre + (torch.rand(n, 3, 3, generator=g) - 0.5) * torch.tensor([0.8, 0.8, 2.5])  # strongly slanted
    cam = tris.reshape(1, -1, 3).to(dtype)
    screen = torch.stack((focal * cam[..., 0] / cam[..., 2] + cx, focal * cam[..., 1] / cam[..., 2] + cy,
                          cam[..., 2]), -1)
    faces = torch.arange(3 * n).reshape(n, 3)
    coef = torch.tensor([[0.7, -1.3, 2.1], [0.2, 0.4, -0.9]], dtype=dtype)
    attr = cam @ coef.T + torch.tensor([0.5, -1.0], dtype=dtype)
    rast = rasterize(screen, faces, H, W)
    out = interpolate(attr, rast, faces)[0]
    m = rast.mask[0]
    assert m.sum() > 60
    ii, jj = torch.meshgrid(torch.arange(H, dtype=dtype), torch.arange(W, dtype=dtype), indexing="ij")
    ray = torch.stack(((jj - cx) / focal, (ii - cy) / focal, torch.ones_like(jj)), -1)[m]  # [M, 3]
    p = cam[0].view(n, 3, 3)[rast.face_index[0][m]]  # [M, 3 corners, 3]
    normal = torch.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], dim=-1)
    t = (normal * p[:, 0]).sum(-1) / (normal * ray).sum(-1)
    point = ray * t[:, None]
    expect = point @ coef.T + torch.tensor([0.5, -1.0], dtype=dtype)
    torch.testing.assert_close(out[m], expect, atol=tol, rtol=tol)
    torch.testing.assert_close(rast.depth[0][m], t, atol=tol, rtol=tol)
    torch.testing.assert_close(rast.bary[0][m].sum(-1), torch.ones_like(t), atol=tol, rtol=0)


def test_shared_attribute_broadcasts_over_batch():
    verts, faces = grid_mesh(5, 12, 12)
    verts = torch.cat((verts, verts + torch.tensor([1.5, 0.5, 0.0])))
    rast = rasterize(verts, faces, 12, 12)
    attr = torch.rand(verts.shape[1], 4)
    torch.testing.assert_close(interpolate(attr, rast, faces), interpolate(attr.expand(2, -1, -1), rast, faces))


# ------------------------------------------------------------------------------------------------
# gradients


def _interior_setup():
    # Two overlapping triangles at different depths plus one separate triangle, 12 x 14 px.
    verts = torch.tensor([[
        [0.3, 0.2, 2.0], [11.7, 1.1, 3.0], [1.2, 10.6, 2.5],
        [4.1, 3.3, 1.5], [12.6, 6.2, 1.8], [6.3, 11.4, 1.2],
        [9.2, 8.4, 2.2], [13.7, 9.1, 2.6], [12.4, 11.8, 2.4],
    ]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    rast = rasterize(verts, faces, 12, 14)
    # Pixels well inside their winning triangle, so an infinitesimal move changes no visibility.
    sel = rast.mask & (rast.bary.min(-1).values > 0.05)
    return verts, faces, sel


def test_gradcheck_positions_and_attributes():
    verts, faces, sel = _interior_setup()
    assert sel.sum() > 20
    colors = torch.rand(1, 9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def fn(v, c):
        rast = rasterize(v, faces, 12, 14)
        return interpolate(c, rast, faces)[sel], rast.depth[sel], rast.bary[sel]

    v = verts.clone().requires_grad_()
    c = colors.clone().requires_grad_()
    assert torch.autograd.gradcheck(fn, (v, c), eps=1e-6, atol=1e-6)


def test_gradcheck_orthographic():
    verts, faces, sel = _interior_setup()

    def fn(v):
        rast = rasterize(v, faces, 12, 14, perspective_correct=False)
        return rast.bary[sel], rast.depth[sel]

    assert torch.autograd.gradcheck(fn, (verts.clone().requires_grad_(),), eps=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# bad input


def test_bad_input_errors():
    v = torch.rand(1, 5, 3)
    f = torch.tensor([[0, 1, 2]])
    with pytest.raises(ValueError, match=r"verts: expected shape \[B, N, 3\]"):
        rasterize(v[0], f, 8, 8)
    with pytest.raises(TypeError, match="verts: expected dtype float32 or float64, found torch.int64"):
        rasterize(v.long(), f, 8, 8)
    with pytest.raises(ValueError, match=r"faces: expected shape \[F, 3\], found \[3\]"):
        rasterize(v, f[0], 8, 8)
    with pytest.raises(TypeError, match="faces: expected dtype int64 or int32, found torch.float32"):
        rasterize(v, f.float(), 8, 8)
    with pytest.raises(ValueError, match=r"faces: expected vertex indices in \[0, 4\], found range \[0, 5\]"):
        rasterize(v, torch.tensor([[0, 1, 5]]), 8, 8)
    with pytest.raises(ValueError, match="height: expected a positive int, found 0"):
        rasterize(v, f, 0, 8)
    with pytest.raises(ValueError, match="width: expected a positive int, found 8.0"):
        rasterize(v, f, 8, 8.0)
    with pytest.raises(ValueError, match="backend: expected"):
        rasterize(v, f, 8, 8, backend="opengl")
    rast = rasterize(v, f, 8, 8)
    with pytest.raises(ValueError, match=r"attr: expected shape \[1, 5, C\] or \[5, C\], found \[1, 4, 3\]"):
        interpolate(torch.rand(1, 4, 3), rast, f)
    with pytest.raises(TypeError, match="rast: expected the Fragments"):
        interpolate(torch.rand(1, 5, 3), (rast.face_index, rast.bary), f)
    with pytest.raises(TypeError, match="attr: expected a floating dtype"):
        interpolate(torch.ones(1, 5, 3, dtype=torch.long), rast, f)


# ------------------------------------------------------------------------------------------------
# render()


class _StandInCamera:
    """Minimal pinhole with the interface render() needs; vertices are (X, Y, depth) in camera space."""

    def __init__(self, focal=20.0, size=16):
        self.focal, self.size = focal, size

    def scaled(self, size):
        return _StandInCamera(self.focal * size / self.size, size)

    def project(self, v):
        c = (self.size - 1) / 2
        return torch.stack((self.focal * v[..., 0] / v[..., 2] + c, self.focal * v[..., 1] / v[..., 2] + c,
                            v[..., 2]), -1)


def _square(half=0.3, depth=2.0, batch=1):
    v = torch.tensor([[-half, -half, depth], [half, -half, depth], [half, half, depth], [-half, half, depth]])
    return v.expand(batch, -1, -1).clone(), torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_render_flat_colour_mask_and_background():
    v, faces = _square(batch=2)
    colors = torch.tensor([0.2, 0.6, 0.9]).expand(2, 4, 3).clone()
    out = ColoredMesh(v, colors, faces)
    cam = _StandInCamera()
    image, mask = render(out, cam, size=16, supersample=1)
    assert image.shape == (2, 3, 16, 16) and mask.shape == (2, 1, 16, 16)
    # The square spans x in c +- 20*0.3/2 = 7.5 +- 3: pixel centres 5..10 -> a 6 x 6 block.
    assert int(mask[0].sum()) == 36
    inside = mask[0, 0] > 0
    torch.testing.assert_close(image[0][:, inside], torch.tensor([0.2, 0.6, 0.9])[:, None].expand(3, 36))
    assert image[0][:, ~inside].abs().max() == 0
    image_bg, _ = render(out, cam, size=16, supersample=1, background=torch.tensor([1.0, 0.0, 0.5]))
    torch.testing.assert_close(image_bg[0][:, ~inside], torch.tensor([1.0, 0.0, 0.5])[:, None].expand(3, 220))


def test_render_supersampling_antialiases_the_edges():
    # A square with edges at 7.5 +- 2.5 = 5.0 and 10.0 (pixel centres): the edge pixels are half covered,
    # and no sub-sample lies exactly on an edge.
    v, faces = _square(half=0.25)
    out = ColoredMesh(v, torch.ones(1, 4, 3), faces)
    for k in (2, 4):
        image, mask = render(out, _StandInCamera(), size=16, supersample=k)
        assert mask.dtype == torch.float32
        row = mask[0, 0, 7]
        torch.testing.assert_close(row[5:11], torch.tensor([0.5, 1, 1, 1, 1, 0.5]))
        assert row[:5].sum() == 0 and row[11:].sum() == 0
        torch.testing.assert_close(image[0, 0], mask[0, 0])  # white on black: image = coverage
        torch.testing.assert_close(mask.sum(), torch.tensor(25.0))  # the exact area, 5 x 5 px
        _, _, depth = render(out, _StandInCamera(), size=16, supersample=k, return_depth=True)
        torch.testing.assert_close(depth[mask > 0], torch.full((36,), 2.0))  # mean over covered sub-samples
        assert depth[mask == 0].abs().max() == 0


def test_render_gradients_match_finite_differences():
    # float64 gradcheck: colours enter linearly; vertices through the interior barycentrics (the perturbation
    # 1e-6 px never moves an edge across a sample point of this jittered square, so coverage is constant).
    v, faces = _square(half=0.3)
    g = torch.Generator().manual_seed(0)
    v = (v + 0.02 * torch.randn(v.shape, generator=g)).double().requires_grad_()
    colors = torch.rand(1, 4, 3, generator=g, dtype=torch.float64).requires_grad_()
    weights = torch.rand(1, 3, 16, 16, generator=g, dtype=torch.float64)

    def f(vv, cc):
        return (render(ColoredMesh(vv, cc, faces), _StandInCamera(), size=16)[0] * weights).sum()

    assert torch.autograd.gradcheck(f, (v, colors), eps=1e-6, atol=1e-6, rtol=1e-4)
    f(v, colors).backward()
    assert v.grad.abs().max() > 1e-3  # the positions get a real gradient (not only the colours)


def test_render_errors():
    v, faces = _square()
    with pytest.raises(TypeError, match="mesh: expected a ColoredMesh.*found SimpleNamespace"):
        render(SimpleNamespace(vertices=v, colors=torch.rand(1, 4, 3), faces=faces), _StandInCamera())
    with pytest.raises(TypeError, match="ColoredMesh.faces: expected a torch.Tensor, found NoneType"):
        ColoredMesh(v, torch.rand(1, 4, 3), None)
    with pytest.raises(ValueError, match=r"ColoredMesh.colors: expected shape \[1, 4, 3\] \(like vertices\), "
                                         r"found \[1, 5, 3\]"):
        ColoredMesh(v, torch.rand(1, 5, 3), faces)
    with pytest.raises(ValueError, match=r"ColoredMesh.vertices: expected a float tensor \[B, N, 3\]"):
        ColoredMesh(v[0], torch.rand(4, 3), faces)
    with pytest.raises(ValueError, match=r"ColoredMesh.faces: expected shape \[F, 3\], found \[6\]"):
        ColoredMesh(v, torch.rand(1, 4, 3), faces.reshape(-1))
    with pytest.raises(ValueError, match="supersample: expected a positive int"):
        render(ColoredMesh(v, torch.rand(1, 4, 3), faces), _StandInCamera(), 16, 0)
    with pytest.raises(ValueError, match="background: expected"):
        render(ColoredMesh(v, torch.rand(1, 4, 3), faces), _StandInCamera(), 16, background=torch.rand(3, 8, 8))
    with pytest.raises(TypeError, match="camera: expected an object with .scaled"):
        render(ColoredMesh(v, torch.rand(1, 4, 3), faces), camera="pinhole")


def test_colored_mesh_batch_slicing_renders_like_the_full_batch():
    # mesh[a:b] / mesh[i] select samples; rendering a slice equals the same rows of the full render.
    v, faces = _square(batch=3)
    v = v + torch.tensor([0.0, 0.05, 0.1])[:, None, None]  # three different positions
    colors = torch.rand(3, 4, 3, generator=torch.Generator().manual_seed(0))
    mesh = ColoredMesh(v, colors, faces, _StandInCamera())
    full, full_mask = render(mesh, size=16)
    assert len(mesh) == 3 and len(mesh[1:]) == 2 and len(mesh[-1]) == 1
    for sub, rows in ((mesh[1:], [1, 2]), (mesh[-1], [2]), (mesh[0], [0]), (mesh[torch.tensor([2, 0])], [2, 0])):
        assert sub.faces is faces and sub.camera is mesh.camera
        image, mask = render(sub, size=16)
        assert torch.equal(image, full[rows]) and torch.equal(mask, full_mask[rows])
    with pytest.raises(IndexError, match="sample 3 out of range for a batch of 3"):
        mesh[3]
    # A morphable model's output converts without copying, and renders like its ColoredMesh.
    out = MorphableModel.mini()(torch.zeros(2, 257), image_size=32)
    assert out.mesh.vertices is out.vertices and out.mesh.colors is out.colors and out.mesh.camera is out.camera
    a, _ = render(out, size=32)
    b, _ = render(out.mesh[1:], size=32)
    assert torch.equal(a[1:], b)


def test_render_with_the_package_camera():
    cam = PinholeCamera()
    # A 0.2 dm square facing the camera at the origin of the world frame (depth = distance = 10 dm).
    half = 0.1
    v = torch.tensor([[[-half, -half, 0.0], [half, -half, 0.0], [half, half, 0.0], [-half, half, 0.0]]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    out = ColoredMesh(v, torch.ones(1, 4, 3), faces, cam)
    image, mask = render(out, size=224, supersample=4)
    side = 2 * half * 1015 / 10  # 20.3 px
    torch.testing.assert_close(mask.sum(), torch.tensor(side * side), atol=4 * side * 0.25, rtol=0)
    # Its centre projects to u = v = 112, i.e. column 112, row 223 - 112 = 111 (the landmark convention).
    rows, cols = torch.meshgrid(torch.arange(224.0), torch.arange(224.0), indexing="ij")
    m = mask[0, 0]
    torch.testing.assert_close((m * cols).sum() / m.sum(), torch.tensor(112.0), atol=0.05, rtol=0)
    torch.testing.assert_close((m * rows).sum() / m.sum(), torch.tensor(111.0), atol=0.05, rtol=0)


# ------------------------------------------------------------------------------------------------
# Triton visibility kernel, run by Triton's CPU interpreter


def test_triton_kernel_matches_tensor_path_under_interpreter(monkeypatch):
    pytest.importorskip("triton")
    from cddfm3d.face3d import triton_raster

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    cases = [random_mesh(0, 12, 16, 20, 30.0) + (16, 20), random_mesh(2, 1200, 64, 64, 3.0) + (64, 64),
             grid_mesh(9, 30, 40) + (30, 40)]
    for verts, faces, h, w in cases:
        verts = torch.cat((verts, verts.flip(1)))  # batch of 2 with different content
        for perspective in (True, False):
            ref = visibility.zbuffer_torch(verts, faces, h, w, perspective)
            assert torch.equal(triton_raster.zbuffer(verts, faces, h, w, perspective), ref)
    # and through the public API
    verts, faces = random_mesh(1, 150, 40, 48, 12.0)
    a = rasterize(verts, faces, 40, 48, backend="triton")
    b = rasterize(verts, faces, 40, 48, backend="torch")
    assert torch.equal(a.face_index, b.face_index) and torch.equal(a.bary, b.bary)


def test_triton_backend_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    verts, faces = random_mesh(0, 4, 8, 8, 4.0)
    with pytest.raises(RuntimeError, match="backend='triton': needs Triton and a CUDA tensor"):
        rasterize(verts, faces, 8, 8, backend="triton")


def test_render_matches_the_morphable_model_projection():
    # End to end with the package's MiniFace model: without supersampling, render()'s mask is exactly the
    # coverage of the model's own screen-space vertices (same camera, same pixel convention).
    model = MorphableModel.mini()
    coeffs = torch.zeros(2, 257)
    coeffs[1, 224:227] = torch.tensor([0.1, 0.4, -0.05])  # pitch, yaw, roll
    out = model(coeffs)
    image, mask = render(out, size=224, supersample=1)
    rast = rasterize(out.screen, out.faces, 224, 224)
    assert torch.equal(mask[:, 0] > 0, rast.mask)
    assert 0.2 < float(mask.mean()) < 0.7
    assert image.min() >= 0 and image.max() <= 1
    # the visible landmarks (the nose tip, keypoint 30) fall on the face
    nose = out.landmarks[:, 30].round().long()
    assert bool(rast.mask[torch.arange(2), nose[:, 1], nose[:, 0]].all())
    # supersampled render agrees with the point-sampled one away from the silhouette
    image2, mask2 = render(out, size=224, supersample=2)
    interior = (mask2 == 1) & (mask == 1)
    assert interior.sum() > 0.9 * (mask == 1).sum()
