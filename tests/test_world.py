"""The mini world: coefficient priors (vs scipy / an independent float64 SH irradiance), the human, toon and
sketch renders (the sketch's hatching against its stroke-width formula), the eye warp, the sharded dataset
writer/reader (resume, config checks) and the make-world CLI."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from scipy.stats import truncnorm

from cddfm3d import cli
from cddfm3d.cli import world as cli_world
from cddfm3d.face3d.morphable import SLICES
from cddfm3d.face3d.render import render as render_face
from cddfm3d.serialization import read_safetensors
from cddfm3d.world import DOMAINS, mini_model, render, sample_coeffs
from cddfm3d.world import priors
from cddfm3d.world.datasets import META_FILE, WorldDataset, read_meta, shard_seed, write_dataset
from cddfm3d.world.domains import (EYE_ENLARGE, EYE_RADIUS, GRAIN, GRAPHITE, HATCH_LAYERS, HATCH_PERIOD, HATCH_WIDTH,
                                   OUTLINE_COLOR, PAPER, PAPER_JITTER, TOON_BACKGROUNDS, enlarge_eyes, hatching)

SIZE = 32


@pytest.fixture(scope="module")
def fm():
    return mini_model()


@pytest.fixture(scope="module")
def big_sample():
    return sample_coeffs(4000, seed=11).double()


def face_mask(fm, coeffs, size=SIZE):
    """Coverage [n, 1, S, S] of the (un-warped) face, rendered the way the human domain does."""
    _, mask = render_face(fm(coeffs, image_size=size), size=size, supersample=2)
    return mask


# ------------------------------------------------------------------------------------------------ priors
def test_sample_coeffs_shape_dtype_and_determinism():
    a = sample_coeffs(7, seed=3)
    assert a.shape == (7, 257) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, sample_coeffs(7, seed=3))
    b = sample_coeffs(7, seed=4)
    for name in ("id", "exp", "tex", "angle", "gamma", "trans"):
        assert not torch.allclose(a[:, SLICES[name]], b[:, SLICES[name]]), name
    assert sample_coeffs(0).shape == (0, 257)
    for bad in (-1, 2.5, "3", True, None):
        with pytest.raises(ValueError, match="non-negative int"):
            sample_coeffs(bad)


def test_shape_and_texture_scales(big_sample):
    for name, scale in (("id", priors.ID_SCALE), ("exp", priors.EXP_SCALE), ("tex", priors.TEX_SCALE)):
        x = big_sample[:, SLICES[name]]
        assert x.std().item() == pytest.approx(scale, rel=0.02), name
        assert abs(x.mean().item()) < 0.02 * scale, name
        # every coefficient of the group is used with the same scale
        per = x.std(0)
        assert per.min().item() > 0.9 * scale and per.max().item() < 1.1 * scale, name


def test_pose_prior_is_truncated_normal(big_sample):
    angle = big_sample[:, SLICES["angle"]].float()
    for i, key in enumerate(("pitch", "yaw", "roll")):   # Deep3D order: x (pitch), y (yaw), z (roll)
        std_deg, lim_deg = priors.POSE_DEG[key]
        lim = torch.tensor(math.radians(lim_deg), dtype=torch.float32)   # rounding is monotone
        a = angle[:, i]
        assert bool((a.abs() <= lim).all()), key
        assert a.abs().max() > 0.97 * lim, key              # the limit is actually reached (truncation)
        expected = math.radians(truncnorm.std(-lim_deg / std_deg, lim_deg / std_deg, scale=std_deg))
        assert a.double().std().item() == pytest.approx(expected, rel=0.04), key
        assert a.double().std().item() < math.radians(std_deg)
        assert abs(a.double().mean().item()) < 0.05 * math.radians(std_deg)


def test_translation_prior(big_sample):
    t = big_sample[:, SLICES["trans"]].float()
    for i, (std, lim) in enumerate(zip(priors.TRANS_STD, priors.TRANS_LIMIT, strict=True)):
        assert bool((t[:, i].abs() <= torch.tensor(lim, dtype=torch.float32)).all())
        expected = truncnorm.std(-lim / std, lim / std, scale=std)
        assert t[:, i].double().std().item() == pytest.approx(expected, rel=0.04)


# Deep3D's SH9 irradiance written out independently (float64 numpy), normal n = (x, y, z).
_A = (math.pi, 2 * math.pi / math.sqrt(3), 2 * math.pi / math.sqrt(8))
_C = (1 / math.sqrt(4 * math.pi), math.sqrt(3) / math.sqrt(4 * math.pi), 3 * math.sqrt(5) / math.sqrt(12 * math.pi))


def _sh9(n):
    x, y, z = n
    k0, k1, k2 = _A[0] * _C[0], _A[1] * _C[1], _A[2] * _C[2]
    return np.array([k0, -k1 * y, k1 * z, -k1 * x, k2 * x * y, -k2 * y * z,
                     k2 * (3 * z * z - 1) / (2 * math.sqrt(3)), -k2 * x * z, k2 * (x * x - y * y) / 2])


def _gamma_with_ambient(coeffs):
    g = coeffs[:, SLICES["gamma"]].double().numpy().reshape(-1, 3, 9).copy()   # colour-major
    g[:, :, 0] += 0.8                                                            # Deep3D's init ambient
    return g


def test_light_prior_irradiance(big_sample):
    g = _gamma_with_ambient(big_sample)

    def irradiance(n):
        return g @ _sh9(n)                                  # [n, 3]

    assert irradiance((0, 0, 1)).min() > 0.2                # the face toward the camera is always lit
    up, down = irradiance((0, 1, 0)), irradiance((0, -1, 0))
    assert (up - down).mean() > 0.1                         # light from above on average
    assert (up > down).mean() > 0.9
    # First-order part: irradiance = dc + k1 * l . n with l = (-g3, -g1, g2); l points toward the light.
    k1 = _A[1] * _C[1]
    first = k1 * np.stack([-g[:, :, 3], -g[:, :, 1], g[:, :, 2]], -1)          # [n, 3 colours, 3]
    dc = g[:, :, 0] * _A[0] * _C[0]
    assert dc.min() > 0
    direction = first / np.linalg.norm(first, axis=-1, keepdims=True)
    # one light per sample: the same direction in all colours
    np.testing.assert_allclose(direction, direction[:, :1].repeat(3, 1), atol=1e-5)
    d = direction[:, 0]
    assert d[:, 1].mean() > 0.3 and d[:, 2].mean() > 0.6 and abs(d[:, 0].mean()) < 0.05
    elev = np.degrees(np.arcsin(d[:, 1]))
    azim = np.degrees(np.arctan2(d[:, 0], d[:, 2]))
    assert elev.mean() == pytest.approx(priors.LIGHT_ELEVATION_DEG[0], abs=1.5)
    assert elev.std() == pytest.approx(priors.LIGHT_ELEVATION_DEG[1], rel=0.1)
    assert azim.mean() == pytest.approx(priors.LIGHT_AZIMUTH_DEG[0], abs=2.0)
    assert azim.std() == pytest.approx(priors.LIGHT_AZIMUTH_DEG[1], rel=0.1)
    # `strength` is the first-order magnitude relative to the DC irradiance, the same in every colour.
    ratio = np.linalg.norm(first, axis=-1) / dc
    np.testing.assert_allclose(ratio, ratio[:, :1].repeat(3, 1), rtol=1e-5)
    assert ratio.min() >= 0.05 - 1e-5 and ratio.max() <= 0.8 + 1e-5
    assert ratio.mean() == pytest.approx(priors.LIGHT_STRENGTH[0], abs=0.02)
    # DC level and the small second-order terms
    assert g[:, :, 0].mean() == pytest.approx(0.8, abs=0.01)
    second = big_sample[:, SLICES["gamma"]].double().reshape(-1, 3, 9)[:, :, 4:]
    assert second.std().item() == pytest.approx(priors.SECOND_ORDER_STD, rel=0.05)


# ------------------------------------------------------------------------------------------------ render
def test_render_shape_range_determinism():
    c = sample_coeffs(3, seed=1)
    for domain in DOMAINS:
        a = render(c, domain, SIZE, seed=0)
        assert a.shape == (3, 3, SIZE, SIZE) and a.dtype == torch.float32
        assert a.min() >= -1 and a.max() <= 1
        assert torch.equal(a, render(c, domain, SIZE, seed=0)), domain
        assert not torch.equal(a, render(c, domain, SIZE, seed=1)), domain
    assert render(c[:0], "toon", SIZE).shape == (0, 3, SIZE, SIZE)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_render_sizes(size):
    c = sample_coeffs(1, seed=2)
    for domain in DOMAINS:
        img = render(c, domain, size, seed=0)
        assert img.shape == (1, 3, size, size)
        assert img.min() >= -1 and img.max() <= 1


def test_render_invalid_arguments():
    c = sample_coeffs(2)
    with pytest.raises(ValueError, match=r"domain must be one of \('human', 'toon', 'sketch'\), found 'cartoon'"):
        render(c, "cartoon")
    for size in (16, 300, 64.0, True):
        with pytest.raises(ValueError, match=r"size must be an int in \[32, 256\]"):
            render(c, "human", size)
    for bad, found in ((c[:, :256], r"\(2, 256\)"), (c[0], r"\(257,\)"), (c.numpy(), "ndarray")):
        with pytest.raises(ValueError, match=r"coeffs must be a tensor \[n, 257\], found " + found):
            render(bad, "toon", SIZE)


def test_human_face_is_lit_albedo_and_seed_only_moves_background(fm):
    c = sample_coeffs(4, seed=5)
    mask = face_mask(fm, c)
    inside, outside = (mask == 1).expand(-1, 3, -1, -1), (mask == 0).expand(-1, 3, -1, -1)
    assert inside.sum() > 0.15 * inside.numel() and outside.sum() > 0.15 * outside.numel()
    a, b = render(c, "human", SIZE, seed=0), render(c, "human", SIZE, seed=1)
    assert torch.equal(a[inside], b[inside])                     # the face does not depend on the seed
    assert (a - b)[outside].abs().mean() > 0.05                  # the background does
    # Inside, the image is the model's lit colours (SH-shaded albedo) rasterized with supersampling.
    ref, _ = render_face(fm(c, image_size=SIZE), size=SIZE, supersample=2)
    torch.testing.assert_close(a[inside], (ref * 2 - 1)[inside], atol=1e-5, rtol=0)


def test_background_depends_on_seed_only(fm):
    c1, c2 = sample_coeffs(3, seed=6), sample_coeffs(3, seed=7)
    both = (torch.nn.functional.max_pool2d(face_mask(fm, c1) + face_mask(fm, c2), 5, 1, 2) == 0)
    both = both.expand(-1, 3, -1, -1)
    assert both.sum() > 0.1 * both.numel()
    for domain in DOMAINS:
        a, b = render(c1, domain, SIZE, seed=4), render(c2, domain, SIZE, seed=4)
        assert torch.equal(a[both], b[both]), domain


def test_toon_background_is_a_flat_palette_colour(fm):
    c = sample_coeffs(6, seed=8)
    far = torch.nn.functional.max_pool2d(face_mask(fm, c), 5, 1, 2) == 0          # away from the face
    img = render(c, "toon", SIZE, seed=0)
    palette = TOON_BACKGROUNDS * 2 - 1
    for i in range(len(c)):
        px = img[i][:, far[i, 0]]                                                 # [3, k]
        assert px.shape[1] > 50
        assert (px - px[:, :1]).abs().max() < 1e-6                               # flat
        dist = (palette - px[:, 0]).abs().amax(1)
        assert dist.min() < 1e-5                                                   # from the palette
    other = render(c, "toon", SIZE, seed=123)
    assert not torch.equal(img[:, :, far[0, 0]], other[:, :, far[0, 0]])


def test_toon_differs_from_human_and_has_outlines(fm):
    c = sample_coeffs(6, seed=9)
    mask = face_mask(fm, c)
    human, toon = render(c, "human", SIZE, seed=0), render(c, "toon", SIZE, seed=0)
    inside = (mask == 1).expand(-1, 3, -1, -1)
    assert (human - toon)[inside].abs().mean() > 0.05
    # Silhouette pixels (partial coverage) are drawn in the outline colour in toon, not in human.
    sil = ((mask > 0) & (mask < 1))[:, 0]
    outline = (OUTLINE_COLOR * 2 - 1).view(1, 3, 1, 1)
    dist_toon = (toon - outline).abs().amax(1)[sil]
    dist_human = (human - outline).abs().amax(1)[sil]
    assert sil.sum() > 100
    assert (dist_toon < 0.3).float().mean() > 0.75
    assert (dist_toon < 0.05).float().mean() > 0.5
    assert (dist_human < 0.05).float().mean() < 0.2
    # Outline-coloured pixels are rare well inside the background.
    far = (torch.nn.functional.max_pool2d(mask, 5, 1, 2) == 0)[:, 0]
    assert ((toon - outline).abs().amax(1)[far] < 0.05).float().mean() < 0.01


def test_render_face_region_is_batch_independent(fm):
    c = sample_coeffs(4, seed=10)
    inside = (face_mask(fm, c) == 1).expand(-1, 3, -1, -1)
    batch = render(c, "human", SIZE, seed=3)
    for i in range(len(c)):
        alone = render(c[i:i + 1], "human", SIZE, seed=3)
        torch.testing.assert_close(alone[0][inside[i]], batch[i][inside[i]], atol=1e-5, rtol=0)
    # Toon: the first sample of a batch sees the same random stream as when rendered alone.
    alone = render(c[:1], "toon", SIZE, seed=3)
    toon = render(c, "toon", SIZE, seed=3)
    torch.testing.assert_close(alone[0][inside[0]], toon[0][inside[0]], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------ sketch
def _lum(img):
    """Lightness [n, H, W] in [0, 1] of images in [-1, 1]."""
    return ((img + 1) / 2 * torch.tensor([0.3, 0.59, 0.11]).view(1, 3, 1, 1)).sum(1)


def _far(fm, c, size=SIZE):
    return (torch.nn.functional.max_pool2d(face_mask(fm, c, size), 5, 1, 2) == 0)[:, 0]


def _interior(fm, c, size=SIZE, px=2):
    """Pixels at least ``px`` pixels inside the (human) face."""
    m = (face_mask(fm, c, size) == 1).float()
    return (-torch.nn.functional.max_pool2d(-m, 2 * px + 1, 1, px) > 0.5)[:, 0]


def test_sketch_is_grey_pencil_on_grained_paper(fm):
    c = sample_coeffs(6, seed=14)
    img = render(c, "sketch", SIZE, seed=2)
    # Monochrome: every pixel mixes paper (+ a grey shift and grain) with graphite, so its channel spread is at
    # most the larger of their spreads (in [-1, 1] units: twice the [0, 1] spread).
    bound = 2 * max(float(PAPER.max() - PAPER.min()), float(GRAPHITE.max() - GRAPHITE.min()))
    assert (img.amax(1) - img.amin(1)).max() <= bound + 1e-5
    # Away from the face: paper, its brightness within the jitter, its grain of the documented strength. The
    # grain is white noise averaged over fibre pairs (n_i + n_i+1) / sqrt(2) on the 2x finer grid, then pooled
    # 2 x 2: a pooled pixel sums 2 rows of (n_0 + 2 n_1 + n_2) / sqrt(2), variance 2 * 6 / 2 = 6, over 4 pixels,
    # so its std is GRAIN * sqrt(6) / 4.
    far = _far(fm, c)
    for i in range(len(c)):
        px = (img[i][:, far[i]] + 1) / 2                                        # [3, k] in [0, 1]
        assert px.shape[1] > 200
        shift = px.mean(1) - PAPER
        assert (shift.abs() < PAPER_JITTER + 0.005).all() and shift.std() < 0.003, shift
        assert px[1].std().item() == pytest.approx(GRAIN * math.sqrt(6) / 4, rel=0.15)
    other = render(c, "sketch", SIZE, seed=3)
    assert not torch.equal(img[:, :, far[0]], other[:, :, far[0]])
    # The face is drawn: darker on average than the paper around it, in every image.
    lum, inside = _lum(img), (face_mask(fm, c) == 1)[:, 0]
    for i in range(len(c)):
        assert lum[i][inside[i]].mean() < lum[i][far[i]].mean() - 0.03, i


def test_sketch_outlines_the_silhouette(fm):
    c = sample_coeffs(6, seed=15)
    img, mask = render(c, "sketch", SIZE, seed=0), face_mask(fm, c)
    sil = ((mask > 0) & (mask < 1))[:, 0]
    assert sil.sum() > 100
    lum = _lum(img)
    # Partly covered pixels are inked in graphite (the pencil's pressure lightens it by up to 15%) ...
    dist = (img - (GRAPHITE * 2 - 1).view(1, 3, 1, 1)).abs().amax(1)[sil]
    assert (dist < 0.35).float().mean() > 0.75
    # ... darker than the face's interior and than the paper.
    interior, far = _interior(fm, c), _far(fm, c)
    assert lum[sil].mean() < lum[interior].mean() - 0.15
    assert lum[sil].mean() < lum[far].mean() - 0.4


def test_hatching_follows_the_stroke_width_formula():
    # A flat canonical surface seen head-on (x, y in dm), several periods wide; darkness uniform.
    ax = torch.linspace(-0.6, 0.6, 241)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    surface = torch.stack((xx, yy, torch.zeros_like(xx)))[None]
    phase = torch.tensor([[0.1, 0.5, 0.8]])
    t = [th for _, th in HATCH_LAYERS]
    assert t == sorted(t) and len(t) == 3

    def cover(d):
        return hatching(torch.full((1, 1, 241, 241), float(d)), surface, phase)

    assert cover(0.0).abs().max() == 0 and cover(t[0] - 1e-3).abs().max() == 0      # light: bare paper
    sweep = [cover(d).mean().item() for d in torch.linspace(0, 1, 21)]
    assert all(b >= a - 1e-6 for a, b in zip(sweep, sweep[1:], strict=False))       # darker: never less ink
    assert sweep[-1] > 3 * cover((t[0] + t[1]) / 2).mean().item()
    # One layer (t_1 < d < t_2): lines along d_1's perpendicular only, covering w * (mean line pressure) of the
    # area, w = HATCH_WIDTH (d - t_1) / (1 - t_1) (the soft edge is symmetric about tri = w).
    ratios = []
    for d in (t[0] + 0.08, t[1] - 0.01):
        ink = cover(d)[0, 0]
        w = HATCH_WIDTH * (d - t[0]) / (1 - t[0])
        ratios.append(ink.mean().item() / w)
        d1 = torch.tensor(HATCH_LAYERS[0][0][:2])
        s = (surface[0, 0] * d1[0] + surface[0, 1] * d1[1]) / HATCH_PERIOD + 0.1   # layer-1 coordinate
        same_line = (s * 40).round()                                               # pixels binned along s
        for b in same_line.unique()[::7]:
            vals = ink[same_line == b]
            if len(vals) > 20:
                assert vals.max() - vals.min() < 0.35                              # constant along each line
    assert 0.7 <= ratios[0] <= 1.0 and ratios[1] == pytest.approx(ratios[0], rel=0.1)
    # A second layer above t_2 crosses the first: no longer constant along d_1's lines.
    ink = cover(t[1] + 0.15)[0, 0]
    s = (surface[0, 0] * 0.7071 + surface[0, 1] * 0.7071) / HATCH_PERIOD + 0.1
    bins = (s * 40).round()
    spread = [float(ink[bins == b].std()) for b in bins.unique()[::7] if (bins == b).sum() > 20]
    assert max(spread) > 0.2


def test_sketch_hatches_more_in_dimmer_light(fm):
    c = sample_coeffs(6, seed=16)
    bright, dim = c.clone(), c.clone()
    dc = [SLICES["gamma"].start + 9 * k for k in range(3)]                      # ambient (SH DC) of R, G, B
    bright[:, dc] += 0.15
    dim[:, dc] -= 0.25
    a, b = render(bright, "sketch", 64, seed=1), render(dim, "sketch", 64, seed=1)
    interior = _interior(fm, c, 64)
    paper_lum = float((PAPER * torch.tensor([0.3, 0.59, 0.11])).sum())
    inked_a = (_lum(a) < paper_lum - 0.15)[interior].float().mean()
    inked_b = (_lum(b) < paper_lum - 0.15)[interior].float().mean()
    assert inked_b > inked_a + 0.1, (inked_a, inked_b)
    for i in range(len(c)):                                                     # in every image
        assert (_lum(b[i]) - _lum(a[i]))[0][interior[i]].mean() < -0.03, i
    far = _far(fm, c, 64)
    for i in range(len(c)):
        assert torch.equal(a[i][:, far[i]], b[i][:, far[i]])                   # the paper does not change


def _enclosed(img):
    """Pixels not reachable from the border through paper-light pixels: the drawing's inside (and its lines)."""
    light = (_lum(img) > 0.75)[:, None].float()
    reach = torch.zeros_like(light)
    reach[..., 0, :] = reach[..., -1, :] = reach[..., :, 0] = reach[..., :, -1] = 1
    reach = reach * light
    while True:
        grown = torch.nn.functional.max_pool2d(reach, 3, 1, 1) * light
        if torch.equal(grown, reach):
            return reach[:, 0] == 0
        reach = grown


def test_sketch_draws_the_human_geometry(fm):
    c = sample_coeffs(12, seed=17)
    mask = face_mask(fm, c, 64)
    border = torch.ones(64, 64, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    keep = mask[:, 0, border].amax(1) == 0            # a face cut by the frame has no outline there to enclose it
    assert keep.sum() >= 8
    c, human = c[keep], (mask[keep] > 0.5)[:, 0]
    drawn = _enclosed(render(c, "sketch", 64, seed=0))
    iou = (drawn & human).sum((1, 2)).float() / (drawn | human).sum((1, 2)).float()
    assert (iou > 0.9).all(), iou
    # A different pose is a different drawing (the check can fail).
    turned = c.clone()
    turned[:, SLICES["angle"].start + 1] += 0.5
    drawn = _enclosed(render(turned, "sketch", 64, seed=0))
    iou = (drawn & human).sum((1, 2)).float() / (drawn | human).sum((1, 2)).float()
    assert (iou < 0.9).any()


# ------------------------------------------------------------------------------------------------ eye warp
def _eye_centres(fm, shape):
    kp = fm.keypoints
    return shape[:, kp[36:42], :2].mean(1), shape[:, kp[42:48], :2].mean(1)       # [B, 2] each


def _shapes(fm, n=4, seed=12):
    p = fm.split(sample_coeffs(n, seed=seed))
    return fm.compute_shape(p["id"], p["exp"])


def test_enlarge_eyes_identity_and_locality(fm):
    shape = _shapes(fm)
    torch.testing.assert_close(enlarge_eyes(fm, shape, factor=1.0), shape, atol=1e-6, rtol=0)
    out = enlarge_eyes(fm, shape)
    assert out.shape == shape.shape
    assert torch.equal(out[..., 2], shape[..., 2])                     # depth untouched
    torch.testing.assert_close(shape, _shapes(fm), atol=0, rtol=0)      # the input is not modified
    left, right = _eye_centres(fm, shape)
    r = torch.minimum((shape[..., :2] - left[:, None]).norm(dim=-1), (shape[..., :2] - right[:, None]).norm(dim=-1))
    far = r > EYE_RADIUS
    near = r < 0.8 * EYE_RADIUS
    assert far.sum() > 0.5 * far.numel() and near.sum() > 100
    torch.testing.assert_close(out[far], shape[far], atol=1e-6, rtol=0)
    assert ((out - shape)[near][:, :2].norm(dim=-1) > 1e-4).all()


@pytest.mark.parametrize("factor", [EYE_ENLARGE, 3.5])
def test_enlarge_eyes_is_monotone_along_rays(fm, factor):
    shape = fm.mean_shape[None].clone()
    kp = set(fm.keypoints.tolist())
    free = [i for i in range(shape.shape[1]) if i not in kp]
    left, right = _eye_centres(fm, shape)
    assert (left - right).norm() > 2 * EYE_RADIUS + 0.1          # the two warps do not overlap
    t = torch.linspace(0, 1.5 * EYE_RADIUS, 61)
    angles = torch.arange(8) * (2 * math.pi / 8) + 0.3
    ids = torch.tensor(free[:len(angles) * len(t)]).view(len(angles), len(t))
    for centre in (left[0], right[0]):
        s = shape.clone()
        u = torch.stack([angles.cos(), angles.sin()], -1)                         # [8, 2]
        s[0, ids, :2] = centre + t[None, :, None] * u[:, None, :]
        out = enlarge_eyes(fm, s, factor=factor)[0, ids, :2] - centre           # [8, 61, 2]
        radial = (out * u[:, None, :]).sum(-1)
        tangential = out[..., 0] * u[:, None, 1] - out[..., 1] * u[:, None, 0]
        assert tangential.abs().max() < 1e-5                                     # points stay on their ray
        assert (radial.diff(dim=1) > 0).all()                                    # and keep their order
        rr = t.double()
        expected = rr * (1 + (factor - 1) * (1 - rr / EYE_RADIUS).clamp(min=0) ** 2)
        torch.testing.assert_close(radial.double(), expected.expand_as(radial), atol=2e-6, rtol=0)
        # local magnification at the centre is `factor`; radius itself and beyond: unchanged
        assert radial[:, 1].mean().item() / t[1].item() == pytest.approx(factor, rel=0.06)
        assert radial[:, t >= EYE_RADIUS].sub(t[t >= EYE_RADIUS]).abs().max() < 1e-5


def test_enlarge_eyes_grows_the_eyes(fm):
    shape = _shapes(fm, n=3, seed=13)
    out = enlarge_eyes(fm, shape)
    kp = fm.keypoints

    def area(pts):                                     # shoelace, 6 landmarks in contour order
        x, y = pts[..., 0], pts[..., 1]
        return 0.5 * (x * y.roll(-1, -1) - x.roll(-1, -1) * y).sum(-1).abs()

    for ids in (kp[36:42], kp[42:48]):
        before, after = shape[:, ids, :2], out[:, ids, :2]
        c = before.mean(1, keepdim=True)
        r = (before - c).norm(dim=-1)
        assert (r < EYE_RADIUS).all()
        g = 1 + (EYE_ENLARGE - 1) * (1 - r / EYE_RADIUS) ** 2
        torch.testing.assert_close(after - c, (before - c) * g[..., None], atol=1e-5, rtol=0)
        ratio = area(after) / area(before)
        assert (ratio > 1.3).all() and (ratio < EYE_ENLARGE ** 2).all()   # ~1.4-2.0 for MiniFace (wider eyes: less)


# ------------------------------------------------------------------------------------------------ datasets
N, SHARD = 30, 12


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("world") / "ds"
    out = write_dataset(root, N, seed=5, domains=("human", "toon"), size=SIZE, shard_size=SHARD, progress=False)
    assert out == root
    return root


def _shards(root):
    return sorted(p.name for p in root.glob("shard-*.safetensors"))


def test_dataset_layout(world_dir):
    assert _shards(world_dir) == ["shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"]
    assert not list(world_dir.glob("*.tmp"))
    meta = json.loads((world_dir / META_FILE).read_text())
    assert meta["complete"] is True
    assert meta["format"] == "cddfm3d.world-dataset"
    assert meta["config"] == {"n": N, "seed": 5, "size": SIZE, "domains": ["human", "toon"], "shard_size": SHARD,
                              "render_batch": 250}
    assert [s["n"] for s in meta["shards"]] == [12, 12, 6]
    assert read_meta(world_dir) == meta
    for j in range(3):
        t, md = read_safetensors(world_dir / f"shard-{j:05d}.safetensors")
        k = meta["shards"][j]["n"]
        assert md["shard"] == str(j)
        assert t["coeffs"].dtype == torch.float32 and t["coeffs"].shape == (k, 257)
        assert torch.equal(t["index"], torch.arange(j * SHARD, j * SHARD + k))
        for d in ("human", "toon"):
            assert t[d].dtype == torch.uint8 and t[d].shape == (k, 3, SIZE, SIZE)


def test_dataset_contents_are_pure_functions_of_the_config(world_dir):
    ds = WorldDataset(world_dir, domain="toon", with_coeffs=True)
    assert len(ds) == N and ds.size == SIZE and ds.domain == "toon"
    for j in range(3):
        k = min(SHARD, N - j * SHARD)
        expected = sample_coeffs(k, seed=shard_seed(5, j))
        assert torch.equal(ds.coeffs[j * SHARD:j * SHARD + k], expected)
    img, coeffs = ds[13]
    assert img.shape == (3, SIZE, SIZE) and img.dtype == torch.float32
    assert img.min() >= -1 and img.max() <= 1
    assert torch.equal(coeffs, sample_coeffs(12, seed=shard_seed(5, 1))[1])
    # Images of shard 1 = render(...) quantized to uint8; writer's render seed is shard_seed * 7919 + offset.
    s = shard_seed(5, 1)
    t, _ = read_safetensors(world_dir / "shard-00001.safetensors")
    for d in ("human", "toon"):
        ref = render(t["coeffs"], d, SIZE, seed=s * 7919)
        assert (t[d].float() / 127.5 - 1 - ref).abs().max() <= 0.5 / 127.5 + 1e-6, d
        assert torch.equal(t[d], ((ref + 1) * 127.5).round().to(torch.uint8)), d
    human = WorldDataset(world_dir)                                 # default: human, images only
    assert human[13].shape == (3, SIZE, SIZE)
    assert torch.equal(human[13], t["human"][1].float() / 127.5 - 1)
    assert torch.equal(human.image_batch([0, 13]), torch.stack([human[0], human[13]]))
    assert len(WorldDataset(world_dir, limit=7)) == 7


def test_dataset_resume_rewrites_only_missing_or_damaged_shards(world_dir, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(world_dir, root)
    # clone: read_safetensors' tensors are views of the memory-mapped file, which is overwritten below
    before = {p: {k: v.clone() for k, v in read_safetensors(root / p)[0].items()} for p in _shards(root)}
    (root / "shard-00001.safetensors").unlink()
    (root / "shard-00002.safetensors").write_bytes(b"not a safetensors file")
    mtime0 = (root / "shard-00000.safetensors").stat().st_mtime_ns
    write_dataset(root, N, seed=5, domains=("human", "toon"), size=SIZE, shard_size=SHARD, progress=False)
    assert (root / "shard-00000.safetensors").stat().st_mtime_ns == mtime0          # untouched
    assert _shards(root) == sorted(before)
    for p, tensors in before.items():
        again = read_safetensors(root / p)[0]
        assert again.keys() == tensors.keys()
        for k in tensors:
            assert torch.equal(again[k], tensors[k]), (p, k)
    assert read_meta(root)["complete"] is True
    # A complete dataset re-run is a no-op on the shards.
    mtimes = {p: (root / p).stat().st_mtime_ns for p in _shards(root)}
    write_dataset(root, N, seed=5, domains=("human", "toon"), size=SIZE, shard_size=SHARD, progress=False)
    assert {p: (root / p).stat().st_mtime_ns for p in _shards(root)} == mtimes


def test_dataset_config_mismatch_and_bad_arguments(world_dir, tmp_path):
    mtimes = {p: (world_dir / p).stat().st_mtime_ns for p in _shards(world_dir)}
    with pytest.raises(ValueError, match="holds a dataset with config") as e:
        write_dataset(world_dir, N, seed=6, domains=("human", "toon"), size=SIZE, shard_size=SHARD, progress=False)
    assert str(world_dir) in str(e.value)
    assert {p: (world_dir / p).stat().st_mtime_ns for p in _shards(world_dir)} == mtimes
    assert read_meta(world_dir)["complete"] is True
    with pytest.raises(ValueError, match="domains must be a non-empty subset"):
        write_dataset(tmp_path / "a", 3, domains=("anime",), size=SIZE, progress=False)
    with pytest.raises(ValueError, match="domains must be a non-empty subset"):
        write_dataset(tmp_path / "a", 3, domains=(), size=SIZE, progress=False)
    for n in (0, -2, 3.0, True):
        with pytest.raises(ValueError, match="n must be a positive int"):
            write_dataset(tmp_path / "a", n, size=SIZE, progress=False)
    with pytest.raises(ValueError, match="shard_size must be an int in"):
        write_dataset(tmp_path / "a", 3, size=SIZE, shard_size=0, progress=False)


def test_world_dataset_refuses_incomplete_missing_or_unknown(world_dir, tmp_path):
    root = tmp_path / "small"
    write_dataset(root, 3, seed=1, domains=("human",), size=SIZE, progress=False)
    assert len(WorldDataset(root)) == 3
    with pytest.raises(ValueError, match=r"domain 'toon' not stored; this dataset has \['human'\]"):
        WorldDataset(root, domain="toon")
    meta = json.loads((root / META_FILE).read_text())
    meta["complete"] = False
    (root / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="incomplete"):
        WorldDataset(root)
    meta["complete"], meta["format"] = True, "something else"
    (root / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="field 'format'"):
        WorldDataset(root)
    with pytest.raises(FileNotFoundError, match="make-world"):
        WorldDataset(tmp_path / "nowhere")


# Several shards, several render batches per shard: 2 shards x 3 render batches of 2 samples.
MB_N, MB_SHARD, MB_BATCH, MB_SEED = 12, 6, 2, 9


@pytest.fixture(scope="module")
def multi_batch_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("world") / "multi"
    write_dataset(root, MB_N, seed=MB_SEED, domains=("human", "toon"), size=SIZE, shard_size=MB_SHARD,
                  batch=MB_BATCH, progress=False)
    return root


def _quantize(images: torch.Tensor) -> torch.Tensor:
    return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def test_shard_seed_is_the_documented_formula():
    for seed, shard in ((0, 0), (0, 1), (5, 1), (7, 123), (2 ** 31 - 1, 4)):
        assert shard_seed(seed, shard) == seed * 1_000_003 + shard


def test_shards_and_render_batches_never_repeat_each_other(multi_batch_dir):
    shards = [read_safetensors(multi_batch_dir / f"shard-{j:05d}.safetensors")[0] for j in range(2)]
    coeffs = torch.cat([t["coeffs"] for t in shards])
    human = torch.cat([t["human"] for t in shards]).float()
    assert coeffs.shape == (MB_N, 257) and human.shape == (MB_N, 3, SIZE, SIZE)
    off = ~torch.eye(MB_N, dtype=torch.bool)
    # No two samples share coefficients, images, or background (the corner pixel is background at any pose;
    # the background stream is seeded per render batch, so a batch seed without its offset repeats it).
    assert (torch.cdist(coeffs.double(), coeffs.double())[off] > 0).all()
    assert (torch.cdist(human.flatten(1), human.flatten(1))[off] > 0).all()
    corner = human[:, :, 0, 0]
    assert (torch.cdist(corner, corner)[off] > 0).all()


def test_shard_contents_equal_a_recomputation_from_the_documented_seeds(multi_batch_dir):
    # The seeds are written out from the module docstring, not taken from the writer's helpers.
    for j in range(2):
        s = MB_SEED * 1_000_003 + j
        t, _ = read_safetensors(multi_batch_dir / f"shard-{j:05d}.safetensors")
        coeffs = sample_coeffs(MB_SHARD, seed=s)
        assert torch.equal(t["coeffs"], coeffs), j
        for d in ("human", "toon"):
            for o in range(0, MB_SHARD, MB_BATCH):
                ref = render(coeffs[o:o + MB_BATCH], d, SIZE, seed=s * 7919 + o)
                assert torch.equal(t[d][o:o + MB_BATCH], _quantize(ref)), (j, d, o)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_make_world_and_train_gan_size_check(tmp_path, capsys):
    out = tmp_path / "w"
    assert cli.main(["make-world", "--out", str(out), "--n", "5", "--size", "32"]) == 0
    assert "wrote 5 samples (human, 32 px)" in capsys.readouterr().out
    meta = read_meta(out)
    assert meta["config"] == {"n": 5, "seed": 0, "size": 32, "domains": ["human"], "shard_size": 1000,
                              "render_batch": 250}
    ds = cli_world._training_images(out, 32)
    assert isinstance(ds, WorldDataset) and len(ds) == 5 and ds[0].shape == (3, 32, 32)
    assert torch.equal(ds.coeffs, sample_coeffs(5, seed=shard_seed(0, 0)))
    run = tmp_path / "run"
    assert cli.main(["train-gan", "--data", str(out), "--out", str(run), "--resolution", "64",
                     "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "32 px" in err and "--resolution is 64" in err
    assert cli.main(["train-gan", "--data", str(out), "--out", str(run), "--resolution", "32",
                     "--domain", "toon", "--device", "cpu"]) == 2
    assert "not stored" in capsys.readouterr().err
    assert not (run / "checkpoint.pt").exists()
    # every domain through the CLI (its choices are DOMAINS)
    out2 = tmp_path / "w2"
    assert cli.main(["make-world", "--out", str(out2), "--n", "3", "--size", "32", "--domains", *DOMAINS,
                     "--shard-size", "2", "--seed", "4"]) == 0
    assert _shards(out2) == ["shard-00000.safetensors", "shard-00001.safetensors"]
    for d in DOMAINS:
        ds = WorldDataset(out2, domain=d)
        assert len(ds) == 3
        ref = render(ds.coeffs[:2], d, 32, seed=shard_seed(4, 0) * 7919)           # shard 0, render batch at 0
        assert torch.equal(ds.images[:2], _quantize(ref)), d
    assert cli.main(["make-world", "--out", str(tmp_path / "w3"), "--n", "3", "--domains", "pencil"]) == 2
    assert "invalid choice: 'pencil'" in capsys.readouterr().err and not (tmp_path / "w3").exists()


def test_bad_arguments_leave_no_dataset_behind(tmp_path):
    for kwargs in (dict(size=16), dict(seed=-1), dict(seed=2 ** 31), dict(shard_size=2.5), dict(batch=0)):
        root = tmp_path / str(len(list(tmp_path.iterdir())))
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            write_dataset(root, 3, progress=False, **kwargs)
        assert not (root / META_FILE).exists()
