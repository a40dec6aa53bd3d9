"""The attribute measures (cddfm3d.face3d.measures) against the morphable model's own forward pass, brute force
and the explained-variance formula in numpy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cddfm3d.face3d import MorphableModel
from cddfm3d.face3d.lighting import shade
from cddfm3d.face3d.measures import (ATTRIBUTES, LIGHT_NORMALS, ExplainedVariance, Moments, attribute_distance,
                                     attribute_features, camera_facing_normals, explained_variance)
from cddfm3d.face3d.morphable import SLICES
from cddfm3d.world import sample_coeffs


@pytest.fixture(scope="module")
def fm():
    return MorphableModel.mini(dtype=torch.float64)


@pytest.fixture(scope="module")
def coeffs():
    return sample_coeffs(6, seed=3).double()


def test_features_are_the_models_own_quantities(fm, coeffs):
    zero = torch.zeros_like(coeffs)
    out = fm(coeffs)
    mean_shape = fm(zero).shape
    only_id, only_exp = zero.clone(), zero.clone()
    only_id[:, SLICES["id"]] = coeffs[:, SLICES["id"]]
    only_exp[:, SLICES["exp"]] = coeffs[:, SLICES["exp"]]
    torch.testing.assert_close(attribute_features(fm, coeffs, "shape"), (fm(only_id).shape - mean_shape).flatten(1))
    torch.testing.assert_close(attribute_features(fm, coeffs, "expression"),
                               (fm(only_exp).shape - mean_shape).flatten(1))
    torch.testing.assert_close(attribute_features(fm, coeffs, "albedo"), out.albedo.flatten(1))
    torch.testing.assert_close(attribute_features(fm, coeffs, "pose"), coeffs[:, SLICES["angle"]] * 180 / math.pi)
    normals = LIGHT_NORMALS[None].expand(len(coeffs), -1, -1)
    light = shade(torch.ones_like(normals), normals, coeffs[:, SLICES["gamma"]])
    torch.testing.assert_close(attribute_features(fm, coeffs, "light"), light.flatten(1))
    # each feature depends on its own coefficients only
    other = sample_coeffs(6, seed=4).double()
    for a, group in (("shape", "id"), ("expression", "exp"), ("albedo", "tex"), ("pose", "angle"), ("light", "gamma")):
        mixed = other.clone()
        mixed[:, SLICES[group]] = coeffs[:, SLICES[group]]
        assert torch.equal(attribute_features(fm, mixed, a), attribute_features(fm, coeffs, a)), a


def test_camera_facing_normals_cover_the_hemisphere_evenly():
    n = camera_facing_normals(4096)
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(4096, dtype=torch.float64))
    assert (n[:, 2] > 0).all()
    # uniform on the hemisphere: E[z] = 1/2, E[z^2] = 1/3, E[x] = E[y] = 0, E[x^2] = E[y^2] = 1/3
    m = n.mean(0)
    assert abs(m[2] - 0.5) < 1e-3 and m[:2].abs().max() < 1e-2
    torch.testing.assert_close(n.square().mean(0), torch.full((3,), 1 / 3, dtype=torch.float64), atol=2e-3, rtol=0)
    assert LIGHT_NORMALS.shape == (256, 3)


def test_distance_against_brute_force(fm, coeffs):
    other = sample_coeffs(6, seed=5).double()
    for a in ATTRIBUTES:
        d = attribute_distance(fm, coeffs, other, a)
        fa, fb = attribute_features(fm, coeffs, a).numpy(), attribute_features(fm, other, a).numpy()
        for b in range(len(coeffs)):
            if a == "pose":
                expected = math.sqrt(np.mean((fa[b] - fb[b]) ** 2))
            else:
                pts = (fa[b] - fb[b]).reshape(-1, 3)
                expected = math.sqrt(np.mean([p @ p for p in pts]))
            assert d[b].item() == pytest.approx(expected, rel=1e-12), (a, b)
    assert torch.equal(attribute_distance(fm, coeffs, coeffs, "shape"), torch.zeros(6, dtype=torch.float64))


def test_explained_variance_formula_and_accumulation():
    g = torch.Generator().manual_seed(0)
    true = torch.randn(50, 7, generator=g, dtype=torch.float64) * torch.arange(1, 8)
    pred = true + 0.3 * torch.randn(50, 7, generator=g, dtype=torch.float64)
    t, p = true.numpy(), pred.numpy()
    expected = 1 - ((p - t) ** 2).sum() / ((t - t.mean(0)) ** 2).sum()
    assert explained_variance(pred, true) == pytest.approx(expected, rel=1e-12)
    acc = ExplainedVariance()
    for i in range(0, 50, 13):
        acc.update(pred[i:i + 13], true[i:i + 13])
    assert acc.value() == pytest.approx(expected, rel=1e-10)
    assert explained_variance(true, true) == 1.0
    assert explained_variance(true.mean(0, keepdim=True).expand_as(true), true) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(explained_variance(torch.ones(4, 2), torch.ones(4, 2)))
    with pytest.raises(ValueError, match="one shape"):
        explained_variance(pred[:, :3], true)
    with pytest.raises(ValueError, match="no samples"):
        ExplainedVariance().value()


def test_moments_against_numpy_and_bad_rows():
    """The one variance accumulator: batches of any size give NumPy's two-pass float64 variances (population and
    sample), a constant entry is exactly 0 (never a negative rounding residue), and bad rows are refused."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(41, 6, generator=g, dtype=torch.float64) * torch.logspace(-3, 3, 6, dtype=torch.float64) + 1e3
    x[:, 2] = 3.3                        # constant: in these batches sumsq - sum^2 / n rounds to -1.1e-13
    acc = Moments()
    for i in range(0, 41, 9):
        acc.update(x[i:i + 9])
    ref = x.double().numpy()
    assert acc.n == 41
    for ddof in (0, 1):
        np.testing.assert_allclose(acc.variance(ddof).numpy(), ref.var(0, ddof=ddof), rtol=1e-8, atol=1e-9)
        assert acc.total_variance(ddof) == pytest.approx(ref.var(0, ddof=ddof).sum(), rel=1e-8)
    assert acc.variance()[2] == 0.0 and bool((acc.centred_sumsq() >= 0).all())
    with pytest.raises(ValueError, match=r"Moments: expected rows \[B, 6\], found \(3, 5\)"):
        acc.update(torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"mine: expected rows \[B, K\], found \(4,\)"):
        Moments("mine").update(torch.zeros(4))
    one = Moments()
    one.update(x[:1])
    assert one.total_variance() == 0.0
    with pytest.raises(ValueError, match="need at least 2 samples, found 1"):
        one.variance(ddof=1)
    with pytest.raises(ValueError, match="no samples"):
        Moments().centred_sumsq()


def test_bad_arguments(fm, coeffs):
    with pytest.raises(ValueError, match="unknown attribute 'colour'"):
        attribute_features(fm, coeffs, "colour")
    with pytest.raises(ValueError, match=r"\[B, 257\], found \(6, 256\)"):
        attribute_features(fm, coeffs[:, :256], "shape")
