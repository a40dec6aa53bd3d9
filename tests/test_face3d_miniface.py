"""MiniFace: determinism, BFM-like layout and scale, semantic landmarks, named variations, bases; viz smoke."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from cddfm3d.face3d import MorphableModel, PinholeCamera
from cddfm3d.face3d.miniface import build_miniface


@pytest.fixture(scope="module")
def fm():
    return MorphableModel.mini()


@pytest.fixture(scope="module")
def mean_out(fm):
    return fm(fm.zeros(1))


def lm_of(fm, **amounts):
    return fm(fm.compose(**amounts)).landmarks[0].numpy()


def test_deterministic_bit_for_bit():
    a = build_miniface()
    build_miniface.cache_clear()
    b = build_miniface()
    assert a is not b
    for key in a:
        if key == "named_directions":
            assert a[key].keys() == b[key].keys()
            for name in a[key]:
                assert a[key][name][0] == b[key][name][0] and np.array_equal(a[key][name][1], b[key][name][1])
        else:
            assert np.array_equal(a[key], b[key]), key
    assert not a["idBase"].flags.writeable  # the cached arrays cannot be modified by accident


def test_layout_counts_and_indices(fm):
    m = build_miniface()
    n = fm.n_vertices
    assert 5000 <= n <= 10000 and 2 * n - 600 <= fm.faces.shape[0] <= 2 * n + 200
    assert m["idBase"].shape == (3 * n, 80) and m["exBase"].shape == (3 * n, 64) and m["texBase"].shape == (3 * n, 80)
    assert fm.faces.dtype == torch.long and int(fm.faces.max()) < n and int(fm.faces.min()) == 0
    used = np.zeros(n, bool)
    used[fm.faces.numpy().reshape(-1)] = True
    assert used.all()  # no stray vertices
    assert len(set(fm.keypoints.tolist())) == 68
    assert 0 < int(fm.skin_mask.sum()) < n and 0 < fm.front_faces.shape[0] < fm.faces.shape[0]
    assert 0 <= m["meantex"].min() and m["meantex"].max() <= 255


def test_scale_matches_bfm_at_the_default_camera(mean_out):
    # BFM's mean at zero pose covers u in [40, 184], v in [26, 208] (face3d.md §2.6); same camera, same place.
    x, y = mean_out.screen[0, :, 0], mean_out.screen[0, :, 1]
    assert 25 < float(x.min()) < 50 and 175 < float(x.max()) < 200
    assert 5 < float(y.min()) < 30 and 185 < float(y.max()) < 215
    lm = mean_out.landmarks[0].numpy()
    # Deep3D's zero-coefficient landmarks (face3d.md §2.9, converted to rows y = 223 - v), within a few px.
    for k, (u, v) in {30: (112.350, 107.039), 0: (41.888, 132.925), 36: (67.796, 141.946),
                      48: (85.818, 72.407)}.items():
        assert np.hypot(lm[k, 0] - u, lm[k, 1] - (223 - v)) < 6.0, (k, lm[k])
    # Faces point toward the camera (counter-clockwise seen from +z), like BFM (>= 95%).
    s = mean_out.shape[0]
    f = mean_out.faces
    fn = torch.cross(s[f[:, 1]] - s[f[:, 0]], s[f[:, 2]] - s[f[:, 0]], dim=-1)
    assert float((fn[:, 2] > 0).float().mean()) > 0.95


def test_mean_is_left_right_symmetric(fm):
    m = build_miniface()
    v = fm.mean_shape.double().numpy()
    mirrored = v * np.array([-1.0, 1.0, 1.0])
    dist, idx = cKDTree(v).query(mirrored)
    assert dist.max() < 1e-6
    tex = m["meantex"].reshape(-1, 3)
    assert np.abs(tex[idx] - tex).max() < 1e-6
    # Landmarks mirror onto their iBUG partners.
    lm = v[fm.keypoints.numpy()]
    pairs = [(0, 16), (4, 12), (17, 26), (21, 22), (36, 45), (39, 42), (31, 35), (48, 54), (60, 64), (49, 53)]
    for a, b in pairs:
        np.testing.assert_allclose(lm[a] * [-1, 1, 1], lm[b], atol=1e-6)


def test_landmarks_at_semantic_places(mean_out):
    lm = mean_out.landmarks[0].numpy()
    x, y = lm[:, 0], lm[:, 1]
    eyes, nose_tip, mouth = y[36:48].mean(), y[30], y[48:68].mean()
    assert y[17:27].mean() < eyes < nose_tip < mouth < y[8]          # brows, eyes, nose, mouth, chin (y down)
    assert x[36] < x[39] < x[42] < x[45]                               # image-left eye then image-right eye
    assert x[0] < x[4] < x[8] < x[12] < x[16] and y[8] == y[:17].max()  # jaw: left -> chin -> right
    assert x[17] < x[21] < x[22] < x[26] and x[31] < x[33] < x[35] and x[48] < x[51] < x[54]
    assert y[27] < y[28] < y[29] < y[30]                               # nose bridge runs down to the tip
    assert y[51] < y[62] <= y[66] < y[57]                              # outer upper lip, inner lips, outer lower
    assert abs(y[62] - y[66]) < 0.5                                     # neutral mouth is closed


def test_jaw_open_opens_the_mouth(fm):
    gaps = [np.linalg.norm(lm_of(fm, jaw_open=a)[66] - lm_of(fm, jaw_open=a)[62]) for a in (0.0, 1.0, 2.0, 3.0)]
    assert gaps[0] < 0.5 and gaps[1] > 3.0 and np.all(np.diff(gaps) > 2.0)
    lm0, lm3 = lm_of(fm), lm_of(fm, jaw_open=3.0)
    assert lm3[8, 1] - lm0[8, 1] > 8.0                                  # the chin drops
    assert np.abs(lm3[36:48] - lm0[36:48]).max() < 0.2                  # the eyes stay


@pytest.mark.parametrize("name, check", [
    ("smile", lambda a, b: (b[48, 1] < a[48, 1] - 1) and (b[54, 1] < a[54, 1] - 1)
     and (b[54, 0] - b[48, 0] > a[54, 0] - a[48, 0])),
    ("frown", lambda a, b: (b[48, 1] > a[48, 1] + 1) and (b[54, 1] > a[54, 1] + 1)),
    ("brow_raise", lambda a, b: (b[17:27, 1] < a[17:27, 1] - 1).all()),
    ("eye_close", lambda a, b: (b[41, 1] - b[37, 1]) < 0.6 * (a[41, 1] - a[37, 1])),
    ("pucker", lambda a, b: (b[54, 0] - b[48, 0]) < (a[54, 0] - a[48, 0]) - 2),
    ("upper_lip_raise", lambda a, b: b[62, 1] < a[62, 1] - 1 and abs(b[66, 1] - a[66, 1]) < 0.5),
    ("smile_left", lambda a, b: b[48, 1] < a[48, 1] - 1 and abs(b[54, 1] - a[54, 1]) < 0.5),
    ("face_width", lambda a, b: (b[16, 0] - b[0, 0]) > (a[16, 0] - a[0, 0]) + 3),
    ("nose_length", lambda a, b: b[33, 1] > a[33, 1] + 1),
    ("eye_spacing", lambda a, b: (b[42, 0] - b[39, 0]) > (a[42, 0] - a[39, 0]) + 1),
    ("brow_height", lambda a, b: (b[17:27, 1] < a[17:27, 1] - 0.5).all()),
    ("chin_length", lambda a, b: b[8, 1] > a[8, 1] + 2),
])
def test_named_variations_move_landmarks(fm, name, check):
    assert check(lm_of(fm), lm_of(fm, **{name: 2.0})), name


def test_texture_variations_change_the_right_region(fm):
    base = fm(fm.zeros(1)).albedo[0]
    lips = fm(fm.compose(lip_colour=2.0)).albedo[0] - base
    kp = fm.keypoints
    lip_change = lips[kp[[61, 62, 63, 65, 66, 67]]].abs().mean()
    cheek_change = lips[kp[[2, 14]]].abs().mean()
    assert lip_change > 0.03 and cheek_change < 0.2 * lip_change
    darker = fm(fm.compose(skin_tone=2.0)).albedo[0]
    assert float(darker[fm.skin_mask].mean()) < float(base[fm.skin_mask].mean()) - 0.05


def test_bases_orthogonal_ordered_and_named_directions(fm):
    m = build_miniface()
    for key, std_key, width in (("idBase", "id_std", 80), ("exBase", "exp_std", 64), ("texBase", "tex_std", 80)):
        b = np.asarray(m[key], np.float64)
        assert b.shape == (m["meanshape"].size, width), key                 # 3N rows, one column per coeff
        gram = b.T @ b
        std = m[std_key]
        np.testing.assert_allclose(np.sqrt(np.diag(gram)), std, rtol=1e-9)
        off = gram - np.diag(np.diag(gram))
        assert np.abs(off).max() < 1e-9 * std[0] ** 2, key           # orthogonal columns
        assert np.all(np.diff(std) <= 0) and std[-1] > 0, key          # ordered by variance, full rank
    groups = {g for g, _ in fm.named_directions.values()}
    assert groups == {"id", "exp", "tex"}
    counts = {g: sum(1 for gg, _ in fm.named_directions.values() if gg == g) for g in groups}
    assert counts["id"] >= 15 and counts["exp"] >= 12 and counts["tex"] >= 8
    for name, (_group, vec) in fm.named_directions.items():
        assert abs(float(vec.norm()) - 1.0) < 1e-5, name               # coefficients ~N(0, I) per variation
    c = fm.direction("jaw_open", 2.0)
    group, vec = fm.named_directions["jaw_open"]
    assert group == "exp" and c.shape == (257,)
    torch.testing.assert_close(c[80:144], 2.0 * vec, rtol=0, atol=0)              # 2 std of the variation
    assert c[:80].abs().sum() == 0 and c[144:].abs().sum() == 0                   # and nothing else
    with pytest.raises(KeyError, match="no named variation 'nope'.*jaw_open"):
        fm.direction("nope")


def test_image_size(fm):
    small = fm(fm.zeros(1), image_size=64)
    assert small.camera == PinholeCamera().scaled(64) and small.landmarks.shape == (1, 68, 2)
    x = small.screen[0, :, 0]
    assert 5 < float(x.min()) and float(x.max()) < 59


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_forward_matches_cpu(fm):
    gpu = MorphableModel.mini().to("cuda")
    c = fm.compose(jaw_open=1.0, smile=1.0, batch_size=2)
    out = gpu(c.cuda())
    assert out.colors.device.type == "cuda"
    torch.testing.assert_close(out.colors.cpu(), fm(c).colors, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.screen.cpu(), fm(c).screen, rtol=1e-4, atol=1e-3)


def test_viz_smoke(fm, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cddfm3d.face3d import draw_landmarks, overlay_render, plot_mesh_2d, plotly_mesh

    out = fm(fm.compose(jaw_open=1.0), image_size=64)
    fig, axes = plt.subplots(1, 3)
    plot_mesh_2d(out, ax=axes[0])
    draw_landmarks(out.landmarks[0], image=torch.zeros(3, 64, 64), ax=axes[1])
    overlay_render(torch.zeros(64, 64, 3), torch.ones(3, 64, 64) * 0.5, ax=axes[2])
    fig.savefig(tmp_path / "viz.png")
    plt.close(fig)
    assert (tmp_path / "viz.png").stat().st_size > 1000
    fig = plotly_mesh(out)
    mesh = fig.data[0]
    assert mesh.type == "mesh3d" and len(mesh.x) == fm.n_vertices and len(mesh.vertexcolor) == fm.n_vertices
    assert len(mesh.i) == fm.faces.shape[0]
