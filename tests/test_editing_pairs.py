"""Training pairs (issue 9 §1): latent sampling, labelling, gen-pairs files, PairDataset."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cddfm3d import assets
from cddfm3d.editing.labels import ffhq_template_5p, label_images, self_align
from cddfm3d.editing.latents import mixing_sources, sample_latents
from cddfm3d.face3d import MorphableModel, ReconNet, pos
from cddfm3d.face3d.align import TEMPLATE_5P
from cddfm3d.stylegan2 import Generator


@pytest.fixture(scope="module")
def tiny_g():
    """A random-weight 64-px generator (10 W+ slots), small enough for per-sample loops in tests."""
    torch.manual_seed(0)
    G = Generator(64, z_dim=16, w_dim=16, mapping_layers=2, channels={4: 16, 8: 16, 16: 8, 32: 8, 64: 8})
    return G.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def mini_recon():
    return assets.load("mini/recon")


@pytest.fixture(scope="module")
def miniface():
    return MorphableModel.mini()


def _chunks(row_ids):
    """Runs of equal consecutive values: [(value, start, stop)]."""
    runs = []
    for i, v in enumerate(row_ids):
        if runs and runs[-1][0] == v:
            runs[-1][2] = i + 1
        else:
            runs.append([v, i, i + 1])
    return runs


# ---------------------------------------------------------------------------------------------------- latents
def test_official5_ws_rows_are_five_contiguous_chunks_of_mapped_z(tiny_g):
    G, n = tiny_g, 64
    ws, sources = sample_latents(G, n, torch.Generator().manual_seed(3), return_sources=True)
    assert ws.shape == (n, G.num_ws, G.w_dim) and ws.dtype == torch.float32
    # the z the function must have drawn: randn [n, 5, z_dim] first, from the same generator state
    z = torch.randn(n, 5, G.z_dim, generator=torch.Generator().manual_seed(3))
    w = G.mapping(z.reshape(-1, G.z_dim)).reshape(n, 5, G.w_dim)
    for i in range(n):
        # identify each W+ row by the mapped z it equals (read from the rows, not from `sources`)
        ids = [int(torch.nonzero((w[i] == ws[i, slot]).all(-1))[0]) for slot in range(G.num_ws)]
        runs = _chunks(ids)
        assert [r[0] for r in runs] == [0, 1, 2, 3, 4]          # 5 distinct sources, in order, each one chunk
        assert all(r[2] > r[1] for r in runs) and runs[-1][2] == G.num_ws
        assert ids == sources[i].tolist()


def test_cut_points_are_uniform_over_all_4_subsets(tiny_g):
    """Brute force: every 4-subset of 1..num_ws-1 is equally likely (126 subsets for 10 slots)."""
    n = 6300
    src = mixing_sources(tiny_g.num_ws, n, torch.Generator().manual_seed(0))
    cuts = [tuple(int(c) for c in torch.nonzero(torch.diff(r)).flatten() + 1) for r in src]
    subsets = list(itertools.combinations(range(1, tiny_g.num_ws), 4))
    counts = np.array([cuts.count(s) for s in subsets])
    assert counts.sum() == n and len(set(cuts)) == len(subsets)
    expected = n / len(subsets)
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 125 + 5 * np.sqrt(2 * 125)                     # chi-square, 125 degrees of freedom, 5 sigma


def test_plain_w_repeats_one_mapped_z(tiny_g):
    ws = sample_latents(tiny_g, 3, torch.Generator().manual_seed(1), mixing="w")
    z = torch.randn(3, 1, tiny_g.z_dim, generator=torch.Generator().manual_seed(1))[:, 0]
    assert torch.equal(ws, tiny_g.mapping(z)[:, None].expand(-1, tiny_g.num_ws, -1))


def test_sample_latents_bad_input(tiny_g):
    g = torch.Generator()
    with pytest.raises(ValueError, match="mixing must be one of"):
        sample_latents(tiny_g, 2, g, mixing="official")
    with pytest.raises(ValueError, match="n must be a positive int"):
        sample_latents(tiny_g, 0, g)
    with pytest.raises(TypeError, match="torch.Generator"):
        sample_latents(tiny_g, 2, 0)
    g16 = Generator(8, z_dim=4, w_dim=4, mapping_layers=1, channels={4: 4, 8: 4})  # 4 W+ slots
    with pytest.raises(ValueError, match="num_ws=4"):
        sample_latents(g16, 2, g)


# ---------------------------------------------------------------------------------------------------- labels
def _project_landmarks_f64(fm: MorphableModel, coeffs: torch.Tensor, size: int) -> np.ndarray:
    """The 68 keypoints of ``coeffs`` in ``size``-px pixels, in float64 numpy with scipy's rotation."""
    c = coeffs.double().numpy()
    base = fm.shape_base.double().numpy()
    shape = fm.mean_shape.double().numpy()[None] + (c[:, :144] @ base.T).reshape(len(c), -1, 3)
    rot = Rotation.from_euler("xyz", c[:, 224:227]).as_matrix()
    v = np.einsum("bij,bnj->bni", rot, shape) + c[:, None, 254:257]
    kp = v[:, fm.keypoints.numpy()]
    f, ctr = 1015.0 * size / 224, 112.0 * size / 224
    d = 10.0 - kp[..., 2]
    return np.stack([f * kp[..., 0] / d + ctr, (size - 1) - (f * kp[..., 1] / d + ctr)], -1)


def test_label_images_none_is_the_network_on_the_stored_image(tiny_g, mini_recon, miniface):
    ws = sample_latents(tiny_g, 3, torch.Generator().manual_seed(2))
    u8 = ((tiny_g.synthesis(ws, noise="const") + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    coeffs, lm = label_images(mini_recon, u8, miniface)
    assert coeffs.shape == (3, 257) and lm.shape == (3, 68, 2)
    assert torch.equal(coeffs, mini_recon(u8.float() / 127.5 - 1.0))   # the mini world datasets' conversion
    np.testing.assert_allclose(lm.numpy(), _project_landmarks_f64(miniface, coeffs, 64), atol=2e-3)
    # float input in the generator's range gives the same labels up to the uint8 rounding
    c2, _ = label_images(mini_recon, u8.float() / 127.5 - 1.0, miniface)
    torch.testing.assert_close(c2, coeffs, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="network's size 64 x 64"):
        label_images(mini_recon, torch.zeros(1, 3, 32, 32, dtype=torch.uint8), miniface)
    with pytest.raises(ValueError, match="align must be one of"):
        label_images(mini_recon, u8, miniface, align="mtcnn")
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        label_images(mini_recon, u8[0], miniface)


def test_ffhq_template_follows_the_ffhq_alignment_rule():
    p = ffhq_template_5p(1024)
    eyes, mouth = p[:2].mean(0), p[3:].mean(0)
    assert np.linalg.norm(p[1] - p[0]) == pytest.approx(256.0)          # crop side 4 x eye distance
    np.testing.assert_allclose(eyes + 0.1 * (mouth - eyes), [511.5, 511.5], atol=1e-9)
    # the frontal projection of the template: POS recovers the template's own scale (px per dm)
    _, s = pos(np.stack([p[:, 0], 1023 - p[:, 1]], 1), TEMPLATE_5P)
    assert s == pytest.approx(256.0 / np.linalg.norm(TEMPLATE_5P[1, :2] - TEMPLATE_5P[0, :2]), rel=0.02)


def test_self_alignment_on_a_real_size_stand_in(miniface):
    """FFHQ-1024 config-f generator and Deep3D ResNet-50 at 224 px, random weights (heads perturbed so that the
    predicted faces move): every crop is the POS alignment of the points it was given, and the points of round
    r + 1 are the 5 points of round r's landmarks."""
    torch.manual_seed(0)
    G = Generator(1024).eval().requires_grad_(False)
    recon = ReconNet("resnet50", image_size=224).eval()
    with torch.no_grad():
        for head, scale in zip(recon.final_layers, (1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3), strict=True):
            head.weight.normal_(0, scale)
    ws = sample_latents(G, 2, torch.Generator().manual_seed(0))
    u8 = ((G.synthesis(ws) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    out = self_align(recon, u8, miniface, rounds=2)
    assert out.coeffs.shape == (2, 257) and out.landmarks.shape == (2, 68, 2)
    assert out.points.shape == (3, 2, 5, 2) and out.trans_params.shape == (3, 2, 5)
    np.testing.assert_allclose(out.points[0, 0].numpy(), ffhq_template_5p(1024), atol=1e-9)
    assert float((out.points[1] - out.points[0]).abs().max()) > 1.0     # the alignment did move
    for r in range(3):
        for i in range(2):
            pts = out.points[r, i].numpy()
            t, s = pos(np.stack([pts[:, 0], 1023 - pts[:, 1]], 1))   # Deep3D's y-up frame, numpy reference
            np.testing.assert_allclose(out.trans_params[r, i].numpy(), [1024, 1024, 102.0 / s, t[0], t[1]],
                                       rtol=1e-6)
            # round r's landmarks: the coefficients' 68 points in the 224 crop, mapped back with the crop geometry
            lm224 = _project_landmarks_f64(miniface, out.round_coeffs[r, i:i + 1], 224)[0]
            w0, h0, sp, tx, ty = out.trans_params[r, i].numpy()
            w, h = int(w0 * sp), int(h0 * sp)
            up = np.stack([lm224[:, 0], 223 - lm224[:, 1]], 1)
            orig = (up + [w / 2 - 112, h / 2 - 112]) / sp + [tx - w0 / 2, ty - h0 / 2]
            np.testing.assert_allclose(out.round_landmarks[r, i].numpy(), np.stack([orig[:, 0], 1023 - orig[:, 1]], 1),
                                       atol=2e-2)
            if r < 2 and not out.kept[r + 1, i]:
                lm = out.round_landmarks[r, i].double().numpy()
                five = np.stack([lm[[36, 39]].mean(0), lm[[42, 45]].mean(0), lm[30], lm[48], lm[54]])
                np.testing.assert_allclose(out.points[r + 1, i].numpy(), five, atol=1e-4)
    coeffs, lm = label_images(recon, u8, miniface, align="self")
    assert torch.equal(coeffs, out.coeffs) and torch.equal(lm, out.landmarks)
