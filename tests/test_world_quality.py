"""Quality measures of the mini world: the Fréchet distance (closed forms and an independent eigendecomposition),
feature statistics, seeded generator sampling, reconstruction-network features and generator latency."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cddfm3d.face3d.recon import ReconNet
from cddfm3d.stylegan2.generator import Generator
from cddfm3d.world.quality import (feature_stats, frechet_distance, generate, generator_fd, generator_latency_ms,
                                   recon_features)

# Singular covariances make scipy warn (and the test of them is the point); anything else is shown.
SINGULAR_WARNINGS = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::scipy.linalg.LinAlgWarning")


def psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_reference(mu1, s1, mu2, s2) -> float:
    """tr (S1 S2)^(1/2) = tr (S1^(1/2) S2 S1^(1/2))^(1/2): a symmetric PSD matrix, so eigh in float64 suffices."""
    r = psd_sqrt(s1)
    inner = np.linalg.eigvalsh(r @ s2 @ r)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


def random_cov(rng, d, n):
    a = rng.normal(size=(n, d)) * rng.uniform(0.2, 2.0, size=d)
    return a.T @ a / n


# ------------------------------------------------------------------------------------------------ frechet
def test_identical_gaussians_have_zero_distance():
    rng = np.random.default_rng(0)
    for d in (2, 8, 32):
        mu, s = rng.normal(size=d), random_cov(rng, d, 4 * d)
        assert abs(frechet_distance(mu, s, mu, s)) < 1e-6, d
        assert abs(frechet_distance(mu, s, mu.copy(), s.copy())) < 1e-6, d


def test_one_dimensional_closed_form():
    for (m1, v1), (m2, v2) in (((0.0, 4.0), (1.0, 9.0)), ((2.5, 0.25), (-1.0, 1.0)), ((0.0, 1.0), (0.0, 1.0))):
        expected = (m1 - m2) ** 2 + (math.sqrt(v1) - math.sqrt(v2)) ** 2
        assert frechet_distance(m1, v1, m2, v2) == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert frechet_distance([m1], [[v1]], [m2], [[v2]]) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_diagonal_closed_form():
    rng = np.random.default_rng(1)
    d = 6
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    v1, v2 = rng.uniform(0.1, 3.0, size=d), rng.uniform(0.1, 3.0, size=d)
    expected = ((m1 - m2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)
    # float32 inputs are computed in float64
    got32 = frechet_distance(m1.astype(np.float32), np.diag(v1).astype(np.float32), m2.astype(np.float32),
                             np.diag(v2).astype(np.float32))
    assert got32 == pytest.approx(expected, rel=1e-5)


def test_full_covariance_against_eigendecomposition():
    rng = np.random.default_rng(2)
    for d in (3, 16, 40):
        m1, m2 = rng.normal(size=d), rng.normal(size=d) * 0.5
        s1, s2 = random_cov(rng, d, 3 * d), random_cov(rng, d, 5 * d)
        expected = frechet_reference(m1, s1, m2, s2)
        assert expected > 0
        assert frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-7), d
        assert frechet_distance(m2, s2, m1, s1) == pytest.approx(expected, rel=1e-7), d  # symmetric
    # torch tensors are accepted too
    t = [torch.as_tensor(a) for a in (m1, s1, m2, s2)]
    assert frechet_distance(*t) == pytest.approx(expected, rel=1e-7)


@SINGULAR_WARNINGS
def test_singular_covariances_stay_finite():
    rng = np.random.default_rng(3)
    d = 12
    cases = [
        (random_cov(rng, d, 3), random_cov(rng, d, 2)),   # fewer samples than dimensions (as at small n_fd)
        (random_cov(rng, d, 1), random_cov(rng, d, 1)),   # rank one
        (np.zeros((d, d)), random_cov(rng, d, 50)),       # a point mass
        (np.zeros((d, d)), np.zeros((d, d))),
    ]
    for s1, s2 in cases:
        m1, m2 = rng.normal(size=d), rng.normal(size=d)
        got = frechet_distance(m1, s1, m2, s2)
        assert math.isfinite(got)
        assert got == pytest.approx(frechet_reference(m1, s1, m2, s2), rel=1e-5, abs=1e-6)
    s = random_cov(rng, d, 4)
    assert abs(frechet_distance(np.ones(d), s, np.ones(d), s)) < 1e-5


# ------------------------------------------------------------------------------------------------ stats
def test_feature_stats_matches_numpy():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(50, 7, generator=g) * torch.arange(1, 8) + 3
    mu, cov = feature_stats(f)
    x = f.double().numpy()
    assert mu.dtype == np.float64 and cov.dtype == np.float64 and cov.shape == (7, 7)
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False), rtol=1e-12)
    mu2, cov2 = feature_stats(f[:2])
    np.testing.assert_allclose(cov2, np.cov(x[:2], rowvar=False), rtol=1e-12)
    feature_stats(f.requires_grad_(True))  # features with gradients are fine


def test_feature_stats_rejects_bad_shapes():
    for bad in (torch.zeros(1, 4), torch.zeros(0, 4), torch.zeros(5), torch.zeros(2, 3, 4)):
        with pytest.raises(ValueError, match="N >= 2"):
            feature_stats(bad)


# ------------------------------------------------------------------------------------------------ sampling
@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    return Generator(16, z_dim=8, w_dim=8, mapping_layers=1, channels={4: 8, 8: 8, 16: 8}).eval()


def test_generate(G):
    a = generate(G, 5, seed=3, batch=2)
    assert a.shape == (5, 3, 16, 16) and a.dtype == torch.float32
    assert float(a.min()) >= -1 and float(a.max()) <= 1
    assert torch.equal(a, generate(G, 5, seed=3, batch=2))           # deterministic for a seed
    assert not torch.allclose(a, generate(G, 5, seed=4, batch=2))    # other seeds differ
    assert not torch.allclose(a[0], a[1])                            # samples of one call differ
    # the global RNG state does not change the samples
    torch.manual_seed(12345)
    assert torch.equal(a, generate(G, 5, seed=3, batch=2))
    empty = generate(G, 0, seed=3)
    assert empty.shape == (0, 3, 16, 16)


def test_generator_latency_ms(G, monkeypatch):
    """On a clock that only moves while the generator runs, the j-th call lasting (j + 1)^2 ms: the result is the
    median of the timed calls after the warm-up, in ms."""
    from cddfm3d.world import quality

    class Clock:
        t, calls = 50.0, 0

        @classmethod
        def perf_counter(cls):
            return cls.t

    forward = Generator.forward

    def timed_forward(self, *args, **kwargs):
        Clock.calls += 1
        Clock.t += Clock.calls ** 2 / 1000
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(quality, "time", Clock)
    monkeypatch.setattr(Generator, "forward", timed_forward)
    t = generator_latency_ms(G, repeats=6, warmup=3)
    assert Clock.calls == 9 and type(t) is float
    assert t == pytest.approx((6 ** 2 + 7 ** 2) / 2, rel=1e-9)   # median of 4^2 .. 9^2 (the mean would be 45.2)


# ------------------------------------------------------------------------------------------------ features
@pytest.fixture(scope="module")
def net():
    torch.manual_seed(1)
    return ReconNet("small", image_size=16, width=4, input_range="-1_1").eval()


def test_recon_features(net):
    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (7, 3, 16, 16), dtype=torch.uint8, generator=g)
    f = recon_features(net, u8, batch=3)
    assert f.shape == (7, net.feature_dim) and f.dtype == torch.float32
    assert torch.isfinite(f).all() and float(f.std()) > 0
    x = u8.float() / 127.5 - 1
    torch.testing.assert_close(recon_features(net, x), f, rtol=1e-6, atol=1e-6)   # uint8 == float in [-1, 1]
    with torch.no_grad():
        torch.testing.assert_close(net.features(x).flatten(1), f, rtol=1e-6, atol=1e-6)


def test_generator_fd(G, net):
    real = generate(G, 40, seed=7)
    assert abs(generator_fd(G, net, real, 40, seed=7)) < 1e-6   # the very same samples
    other = torch.rand(30, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    expected = frechet_distance(*feature_stats(recon_features(net, generate(G, 40, seed=2))),
                                *feature_stats(recon_features(net, other)))
    fd = generator_fd(G, net, other, 40, seed=2)
    assert math.isfinite(fd) and fd > 0
    assert fd == pytest.approx(expected, rel=1e-9)
