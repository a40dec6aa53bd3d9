"""The attribute predictor T (issue 9 §3): network and its normalisation, file format and asset kind, the losses
(against float64 references: explicit vertex formation, brute-force substitution of each parameter), the
evaluation (explained variance and the collapse ratio against exact values), learning on a synthetic problem
that a mean predictor cannot solve, exact resume, and the train-t command."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from cddfm3d import assets
from cddfm3d.editing.losses import (FEATURE_TERMS, TLoss, feature_metrics, feature_scale, feature_terms,
                                    observation_scale, official_wpdc_loss, pdc_loss, posed_vertices, vdc_loss,
                                    wpdc_distances, wpdc_loss, wpdc_weights)
from cddfm3d.editing.predictor import AttributePredictor, PredictorFileError, scaled_hidden
from cddfm3d.editing.t_training import (EXPORT_FILE, TTrainConfig, TTrainer, VarianceRatio, check_goals,
                                        evaluate_t, split_indices, train_t)
from cddfm3d.face3d.measures import ATTRIBUTE_GROUPS, ATTRIBUTES, attribute_features, feature_metric
from cddfm3d.face3d.morphable import SLICES, MorphableModel
from cddfm3d.serialization import read_safetensors
from cddfm3d.world.priors import prior_std, sample_coeffs


@pytest.fixture(scope="module")
def fm():
    return MorphableModel.mini()


@pytest.fixture(scope="module")
def fm64():
    return MorphableModel.mini(dtype=torch.float64)


def coeff_pair(n: int, seed: int, dtype=torch.float64):
    """Labels from the mini world's prior and predictions = labels + 0.3 prior std of noise."""
    g = sample_coeffs(n, seed=seed).to(dtype)
    noise = torch.randn(n, 257, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype)
    return g + 0.3 * prior_std().to(dtype) * noise, g


# ============================================================================================ network
def test_scaled_hidden_follows_the_official_widths():
    assert scaled_hidden(9088) == (4096, 2048, 1024, 512)
    assert scaled_hidden(18176) == (8192, 4096, 2048, 1024)
    assert scaled_hidden(1408) == (635, 512, 512, 512)        # the mini generator: no layer below 512
    with pytest.raises(ValueError, match="style_dim"):
        scaled_hidden(0)


def test_predictor_architecture_is_apnet():
    T = AttributePredictor(40, hidden=[32, 16, 8, 4])
    linears = [m for m in T.mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(40, 32), (32, 16), (16, 8), (8, 4), (4, 257)]
    assert sum(isinstance(m, nn.ELU) for m in T.mlp) == 4 and isinstance(T.mlp[-1], nn.Linear)
    with pytest.raises(ValueError, match="hidden"):
        AttributePredictor(40, hidden=[32, 0])


def test_standardisation_and_output_units():
    gen = torch.Generator().manual_seed(0)
    n, d = 300, 24
    styles = (torch.randn(n, d, generator=gen) + torch.linspace(-5, 5, d)) * torch.logspace(-3, 3, d)
    coeffs = sample_coeffs(n, seed=4)
    T = AttributePredictor(d, hidden=[16, 16]).fit_normalisation(styles, coeffs, prior_std())
    x = T.standardise(styles).double()
    assert torch.allclose(x.mean(0), torch.zeros(d, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(x.std(0), torch.ones(d, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(T.coeff_mean.double(), coeffs.double().mean(0), atol=1e-6)
    assert torch.equal(T.coeff_scale, prior_std().float()) and T.coeff_scale_source == "prior_std"
    # forward = coeff_mean + coeff_scale * mlp(standardised styles), computed by hand in float64
    h = x
    for m in T.mlp:
        h = torch.nn.functional.elu(h) if isinstance(m, nn.ELU) else h @ m.weight.double().T + m.bias.double()
    expected = coeffs.double().mean(0) + prior_std() * h
    assert torch.allclose(T(styles).double(), expected, atol=1e-4)
    assert torch.allclose(T.to_coeffs(T.to_units(coeffs)), coeffs, atol=1e-5)
    # channels rescaled and shifted: refitted, the same weights give the same outputs
    U = AttributePredictor(d, hidden=[16, 16])
    U.load_state_dict(T.state_dict())
    U.fit_normalisation(styles * 7.0 - 3.0, coeffs, prior_std())
    assert torch.allclose(U(styles * 7.0 - 3.0), T(styles), atol=1e-4)
    # without a prior: the labels' own std (floored)
    L = AttributePredictor(d, hidden=[16]).fit_normalisation(styles, coeffs)
    assert torch.allclose(L.coeff_scale.double(), coeffs.double().std(0).clamp_min(1e-3), rtol=1e-5)
    assert L.coeff_scale_source == "labels_std"


def test_predictor_rejects_bad_inputs():
    T = AttributePredictor(10, hidden=[8])
    with pytest.raises(ValueError, match=r"\[B, 10\].*found \(3, 11\)"):
        T(torch.zeros(3, 11))
    with pytest.raises(ValueError, match="float tensor"):
        T(torch.zeros(3, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="coeffs.*257"):
        T.fit_normalisation(torch.zeros(4, 10), torch.zeros(4, 256))
    with pytest.raises(ValueError, match="coeff_scale"):
        T.fit_normalisation(torch.randn(4, 10), torch.randn(4, 257), torch.zeros(257))


# ============================================================================================ files and asset kind
def fitted_predictor(d=12, hidden=(8, 8)):
    styles, coeffs = torch.randn(50, d, generator=torch.Generator().manual_seed(2)), sample_coeffs(50, seed=2)
    return AttributePredictor(d, hidden=list(hidden)).fit_normalisation(styles, coeffs, prior_std()), styles


def test_save_load_round_trip(tmp_path):
    T, styles = fitted_predictor()
    path = T.save(tmp_path / "t.safetensors")
    U = AttributePredictor.load(path)
    assert U.config == T.config and U.coeff_scale_source == "prior_std" and not U.training
    assert torch.equal(U(styles), T(styles))
    for k, v in T.state_dict().items():
        assert torch.equal(U.state_dict()[k], v), k


def test_load_errors_name_file_and_field(tmp_path):
    from safetensors.torch import save_file

    T, _ = fitted_predictor()
    good = T.save(tmp_path / "good.safetensors")
    with pytest.raises(FileNotFoundError, match="nope"):
        AttributePredictor.load(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(PredictorFileError, match="junk.safetensors.*cannot read"):
        AttributePredictor.load(junk)
    sd = {k: v.contiguous() for k, v in T.state_dict().items()}
    meta = {"format": "cddfm3d.AttributePredictor", "version": "1", "config": json.dumps(T.config),
            "coeff_scale_source": "prior_std"}
    cases = {
        "format": (sd, dict(meta, format="cddfm3d.ReconNet"), r"'format' is 'cddfm3d.ReconNet'"),
        "config": (sd, dict(meta, config="{}"), r"'config' is missing or invalid"),
        "missing": ({k: v for k, v in sd.items() if k != "coeff_scale"}, meta, r"missing tensor.*coeff_scale"),
        "extra": (dict(sd, extra=torch.zeros(1)), meta, r"unexpected tensor.*extra"),
        "shape": (dict(sd, style_mean=torch.zeros(13)), meta, r"style_mean: expected \(12,\), found \(13,\)"),
        "source": (sd, dict(meta, coeff_scale_source="guess"), r"'coeff_scale_source' is 'guess'"),
    }
    for name, (tensors, m, pattern) in cases.items():
        p = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(p), metadata=m)
        with pytest.raises(PredictorFileError, match=pattern):
            AttributePredictor.load(p)
    assert AttributePredictor.load(good).config == T.config


def test_asset_kind_loads_through_cddfm3d_assets(tmp_path, monkeypatch):
    monkeypatch.setenv(assets.ASSETS_ENV, str(tmp_path / "assets"))
    assets.clear_verification_cache()
    T, styles = fitted_predictor()
    (tmp_path / "assets" / "mini").mkdir(parents=True)
    T.save(tmp_path / "assets" / "mini" / "attribute_predictor.safetensors")
    assets.register("mini/attribute_predictor", "mini/attribute_predictor.safetensors",
                    "editing.AttributePredictor", config=T.config, command="python -m cddfm3d train-t", metrics={})
    loaded = assets.load("mini/attribute_predictor")
    assert isinstance(loaded, AttributePredictor) and torch.equal(loaded(styles), T(styles))
    assets.clear_verification_cache()


# ============================================================================================ losses
def test_pdc_is_mse_in_scale_units():
    p, g = coeff_pair(5, 0)
    s = prior_std()
    assert math.isclose(float(pdc_loss(p, g, s)), float((((p - g) / s) ** 2).mean()), rel_tol=1e-12)
    expected = np.mean(((p.numpy() - g.numpy()) / s.numpy()) ** 2)
    assert math.isclose(float(pdc_loss(p, g, s)), expected, rel_tol=1e-12)


def rotation_np(angles: np.ndarray) -> np.ndarray:
    """R = Rz Ry Rx of (x, y, z) radians, written out in numpy."""
    x, y, z = angles
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


def posed_np(fm64, c: np.ndarray) -> np.ndarray:
    mean = fm64.mean_shape.numpy()
    offset = fm64.id_base.numpy() @ c[SLICES["id"]] + fm64.exp_base.numpy() @ c[SLICES["exp"]]
    shape = mean + offset.reshape(-1, 3)
    return shape @ rotation_np(c[SLICES["angle"]]).T + c[SLICES["trans"]]


def test_vdc_against_explicit_vertices(fm64):
    p, g = coeff_pair(3, 1)
    expected = np.mean([np.mean(np.sum((posed_np(fm64, a) - posed_np(fm64, b)) ** 2, axis=1))
                        for a, b in zip(p.numpy(), g.numpy(), strict=True)])
    assert math.isclose(float(vdc_loss(fm64, p, g)), expected, rel_tol=1e-10)
    # the posed vertices are the model's own posed vertices
    assert torch.allclose(posed_vertices(fm64, g), fm64(g).vertices, atol=1e-12)


def observation(fm64, c, s):
    """WPDC's observation O(c) written from the model's forward pass and the light measure: [B, K]."""
    out = fm64(c, check=False)
    return torch.cat([out.vertices.flatten(1) / s[0], out.albedo.flatten(1) / s[1],
                      attribute_features(fm64, c, "light") / s[2]], 1)


def test_wpdc_weights_against_brute_force_substitution(fm64):
    p, g = coeff_pair(1, 2)
    s = torch.tensor([0.3, 0.1, 0.2], dtype=torch.float64)
    sub = g.repeat(257, 1)     # every parameter of the label replaced by the prediction's, one at a time
    sub[torch.arange(257), torch.arange(257)] = p[0]
    expected = (observation(fm64, sub, s) - observation(fm64, g, s)).norm(dim=1)[None]
    d = wpdc_distances(fm64, p, g, s)
    assert torch.allclose(d, expected, rtol=1e-9, atol=1e-12)
    assert bool((d[:, SLICES["tex"]] > 0).all() and (d[:, SLICES["gamma"]] > 0).all())
    w = wpdc_weights(fm64, p, g, s)
    assert torch.allclose(w, 257 * expected / expected.sum(), rtol=1e-9)
    # per sample: a second sample with a 10x error keeps its own weights (normalised row by row)
    p2, g2 = torch.cat([p, g + 10 * (p - g)]), torch.cat([g, g])
    w2 = wpdc_weights(fm64, p2, g2, s)
    assert torch.allclose(w2[0], w[0], rtol=1e-9) and torch.allclose(w2.mean(1), torch.ones(2, dtype=torch.float64))
    # the weights are constants: the gradient is 2 w (p - g) / scale^2 / (B * 257)
    scale = prior_std()
    q = p2.clone().requires_grad_(True)
    wpdc_loss(fm64, q, g2, scale, s).backward()
    assert torch.allclose(q.grad, 2 * w2 * (p2 - g2) / scale ** 2 / (2 * 257), rtol=1e-9)
    assert torch.equal(wpdc_weights(fm64, g2, g2, s), torch.ones(2, 257, dtype=torch.float64))


def test_observation_scale_is_the_rms_spread(fm64):
    c = sample_coeffs(40, seed=7).double()
    s = observation_scale(fm64, c, chunk=15)
    o = observation(fm64, c, torch.ones(3, dtype=torch.float64))
    n_v = fm64.n_vertices * 3
    n_a = n_v
    parts = (o[:, :n_v], o[:, n_v:n_v + n_a], o[:, n_v + n_a:])
    expected = torch.stack([x.var(0).mean().sqrt() for x in parts])
    assert torch.allclose(s, expected, rtol=1e-9)


def test_official_random_half_variant(fm64):
    p, g = coeff_pair(3, 3)
    scale = prior_std()
    value = official_wpdc_loss(fm64, p, g, scale, torch.Generator().manual_seed(5))
    half = torch.randperm(257, generator=torch.Generator().manual_seed(5))[:128].numpy()
    pn, gn = p.numpy(), g.numpy()
    copy = gn.copy()
    copy[:, half] = pn[:, half]
    a, b = fm64(torch.from_numpy(copy)), fm64(g)
    d = ((a.vertices - b.vertices) ** 2 + (a.colors - b.colors) ** 2).numpy()
    w = np.mean(d / np.sqrt(np.sum(d ** 2))) * 10000
    weight = np.ones(257)
    weight[half] = w
    expected = np.mean(weight * ((pn - gn) / scale.numpy()) ** 2)
    assert math.isclose(float(value), expected, rel_tol=1e-9)


def test_feature_terms_are_one_minus_explained_variance(fm64):
    c = sample_coeffs(60, seed=8).double()
    scale = feature_scale(fm64, c)
    mean = c.mean(0, keepdim=True).expand_as(c)
    # every feature is affine in its coefficients: predicting the mean costs exactly 1 (= 1 - EV of 0)
    terms = feature_terms(fm64, mean, c, scale)
    assert list(terms) == list(FEATURE_TERMS)
    for k, v in terms.items():
        assert math.isclose(float(v), 1.0, rel_tol=1e-6), k   # (attribute_scale is float32)
    half = c.mean(0) + 0.5 * (c - c.mean(0))          # halfway to the mean: SSE = SST / 4
    for k, v in feature_terms(fm64, half, c, scale).items():
        assert math.isclose(float(v), 0.25, rel_tol=1e-6), k


def test_feature_metric_gives_the_full_feature_distance(fm64):
    # |f(a) - f(b)|^2 over the full features (21606 entries for shape) against |(a_g - b_g) @ M|^2 on k entries
    a, b = coeff_pair(7, 12)
    for attr in ATTRIBUTES:
        m = feature_metric(fm64, attr)
        group = SLICES[ATTRIBUTE_GROUPS[attr]]
        assert m.dtype == torch.float64 and m.shape == (group.stop - group.start,) * 2
        full = (attribute_features(fm64, a, attr) - attribute_features(fm64, b, attr)).square().sum(1)
        compact = ((a[:, group] - b[:, group]) @ m).square().sum(1)
        np.testing.assert_allclose(compact.numpy(), full.numpy(), rtol=1e-9, err_msg=attr)
    with pytest.raises(ValueError, match="unknown attribute"):
        feature_metric(fm64, "hair")


def test_feature_terms_with_metrics_equal_the_full_features(fm64, fm):
    c = sample_coeffs(50, seed=13).double()
    p, g = coeff_pair(50, 14)
    scale = feature_scale(fm64, c)
    full = feature_terms(fm64, p, g, scale)
    fast = feature_terms(fm64, p, g, scale, feature_metrics(fm64))
    for k in FEATURE_TERMS:
        assert math.isclose(float(fast[k]), float(full[k]), rel_tol=1e-9), k
    # TLoss (float32 model and inputs) uses the metric form; it agrees with the float64 full features
    stats = TLoss.label_stats(fm, c.float())
    out = TLoss(fm, prior_std(), {"feature": 1.0}, stats)(p.float(), g.float())
    ref = feature_terms(fm64, p, g, stats["feature_scale"])
    for k in FEATURE_TERMS:
        assert math.isclose(float(out[f"feature_{k}"]), float(ref[k]), rel_tol=1e-4), k


def test_tloss_combines_weighted_terms(fm):
    p, g = coeff_pair(8, 9, torch.float32)
    stats = TLoss.label_stats(fm, sample_coeffs(200, seed=9))
    assert set(TLoss.label_stats(fm, sample_coeffs(20, seed=9), {"pdc": 1.0, "vdc": 0.0})) == set()
    with pytest.raises(ValueError, match="needs the label statistic 'feature_scale'"):
        TLoss(fm, prior_std(), {"feature": 1.0}, {"obs_scale": stats["obs_scale"]})
    loss = TLoss(fm, prior_std(), {"pdc": 0.5, "vdc": 2.0, "feature": 1.0, "wpdc": 0.0}, stats)
    out = loss(p, g)
    assert "wpdc" not in out and set(out) >= {"total", "pdc", "vdc", "feature", "feature_shape"}
    assert math.isclose(float(out["total"]), 0.5 * float(out["pdc"]) + 2 * float(out["vdc"]) +
                        float(out["feature"]), rel_tol=1e-5)
    assert math.isclose(float(out["vdc"]), float(vdc_loss(fm, p, g)) / float(stats["vertex_var"]), rel_tol=1e-4)
    for bad in ({"pdcc": 1.0}, {"pdc": -1.0}, {"pdc": 0.0}, {}):
        with pytest.raises(ValueError, match="T losses"):
            TLoss(fm, prior_std(), bad, stats)


# ============================================================================================ evaluation
class Affine(nn.Module):
    """T(s) = mean + a (s - mean) on styles that are the coefficients themselves."""

    def __init__(self, mean, a):
        super().__init__()
        self.register_buffer("mean", mean)
        self.a = a

    def forward(self, s):
        return self.mean + self.a * (s - self.mean)


def test_variance_ratio_and_explained_variance_are_exact(fm):
    c = sample_coeffs(120, seed=10)
    mean = c.double().mean(0).float()
    half = evaluate_t(Affine(mean, 0.5), c, c, fm, batch=50)
    for a in ATTRIBUTES:   # every feature is affine in its coefficients: ratio a^2, EV 1 - (1 - a)^2
        assert math.isclose(half[f"var_ratio_{a}"], 0.25, rel_tol=1e-4), a
        assert math.isclose(half[f"ev_{a}"], 0.75, rel_tol=1e-4), a
    ang = (c[:, SLICES["angle"]].double() - mean[SLICES["angle"]].double()).abs().rad2deg().mean(0) * 0.5
    for k, name in enumerate(("pitch", "yaw", "roll")):
        assert math.isclose(half[f"angle_deg_{name}"], float(ang[k]), rel_tol=1e-4)
    collapsed = evaluate_t(Affine(mean, 0.0), c, c, fm)
    assert all(collapsed[f"var_ratio_{a}"] < 1e-12 and abs(collapsed[f"ev_{a}"]) < 1e-6 for a in ATTRIBUTES)
    assert not any(check_goals(collapsed).values())
    exact = evaluate_t(Affine(mean, 1.0), c, c, fm)
    assert all(check_goals(exact).values())
    # the accumulator against numpy on raw features
    acc = VarianceRatio()
    x, y = torch.randn(50, 7, dtype=torch.float64), torch.randn(50, 7, dtype=torch.float64) * 3
    acc.update(x[:20], y[:20])
    acc.update(x[20:], y[20:])
    assert math.isclose(acc.value(), x.numpy().var(0).sum() / y.numpy().var(0).sum(), rel_tol=1e-12)


# ============================================================================================ training
def synthetic_pairs(n: int, d: int = 96, rank: int = 16, seed: int = 0):
    """Coefficients that vary along ``rank`` random directions (in prior-std units) around the prior mean, and
    styles = a random linear map of the same latent + noise, with channel scales spread over 6 decades."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, rank, generator=gen)
    basis = torch.randn(rank, 257, generator=gen) / math.sqrt(rank)
    mean = sample_coeffs(2000, seed=seed).mean(0)
    coeffs = mean + (z @ basis) * prior_std().float()
    styles = z @ torch.randn(rank, d, generator=gen) + 0.05 * torch.randn(n, d, generator=gen)
    styles = styles * torch.logspace(-3, 3, d)[torch.randperm(d, generator=gen)]
    return styles, coeffs


class MeanPredictor(nn.Module):
    def __init__(self, mean):
        super().__init__()
        self.register_buffer("mean", mean)

    def forward(self, s):
        return self.mean.expand(len(s), -1)


def test_t_learns_a_synthetic_problem_that_the_mean_cannot(fm, tmp_path):
    styles, coeffs = synthetic_pairs(2300)
    cfg = TTrainConfig(style_dim=96, hidden=[128, 128, 128, 128], steps=300, batch_size=64, lr=2e-3, warmup=20,
                       losses={"pdc": 1.0}, val_fraction=0.13, eval_every=300, checkpoint_every=1000)
    trainer = train_t(styles, coeffs, cfg, tmp_path / "run", model=fm, resume=False, progress=False)
    val_logs = [e for e in trainer.log if "val" in e]
    assert [e["step"] for e in val_logs] == [300]
    report = val_logs[0]["val"]      # evaluate_t on the held-out split at the end of the run
    assert report["n"] == len(trainer.val_idx) == 299
    mean = MeanPredictor(coeffs[trainer.train_idx].mean(0))
    base = evaluate_t(mean, styles[trainer.val_idx], coeffs[trainer.val_idx], fm)
    for a in ATTRIBUTES:
        assert report[f"ev_{a}"] > 0.9, (a, report)
        assert 0.8 < report[f"var_ratio_{a}"] < 1.2, (a, report)
        assert abs(base[f"ev_{a}"]) < 0.05 and base[f"var_ratio_{a}"] < 1e-12, (a, base)
    assert report["angle_deg_yaw"] < 0.5 * base["angle_deg_yaw"]
    assert (tmp_path / "run" / EXPORT_FILE).is_file()
    assert torch.equal(AttributePredictor.load(tmp_path / "run" / EXPORT_FILE)(styles[:5]), trainer.net(styles[:5]))


def test_split_is_fixed_by_the_seed():
    tr, va = split_indices(100, 0.2, 3)
    assert len(va) == 20 and len(tr) == 80 and not set(tr.tolist()) & set(va.tolist())
    assert torch.equal(split_indices(100, 0.2, 3)[1], va) and not torch.equal(split_indices(100, 0.2, 4)[1], va)
    with pytest.raises(ValueError, match="leave 1 for training"):
        split_indices(3, 0.5, 0)


TINY = dict(style_dim=96, hidden=[16, 16], steps=12, batch_size=16, lr=1e-3, warmup=3, val_fraction=0.2,
            eval_every=4, eval_max=20, checkpoint_every=5,
            losses={"pdc": 1.0, "wpdc": 0.5, "official": 0.2, "feature": 0.5, "vdc": 0.1})


def test_resume_is_bit_exact(fm, tmp_path):
    styles, coeffs = synthetic_pairs(60, seed=1)     # 48 training pairs: batches of 16 cross epoch boundaries
    cfg = TTrainConfig(**TINY)
    full = train_t(styles, coeffs, cfg, tmp_path / "full", model=fm, progress=False)
    first = train_t(styles, coeffs, cfg, tmp_path / "parts", model=fm, progress=False, stop_at_step=7)
    assert first.step == 7
    rest = train_t(styles, coeffs, cfg, tmp_path / "parts", model=fm, progress=False)
    assert rest.step == 12
    for k, v in full.net.state_dict().items():
        assert torch.equal(rest.net.state_dict()[k], v), k
    assert rest.log == full.log
    # (safetensors orders metadata keys at random, so the files are compared by content)
    (ta, ma), (tb, mb) = (read_safetensors(tmp_path / d / EXPORT_FILE) for d in ("parts", "full"))
    assert ma == mb and ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    # another architecture or other pairs in the same folder are refused
    with pytest.raises(ValueError, match="hidden"):
        TTrainer(TTrainConfig(**dict(TINY, hidden=[8])), styles, coeffs, tmp_path / "parts", fm).start()
    with pytest.raises(ValueError, match="trained on 60 pairs, 59 given"):
        TTrainer(cfg, styles[:59], coeffs[:59], tmp_path / "parts", fm).start()
    other_styles, other_coeffs = synthetic_pairs(60, seed=2)        # other pairs of the same count
    with pytest.raises(ValueError, match="other pairs of the same count.*'labels_sha256'"):
        TTrainer(cfg, other_styles, other_coeffs, tmp_path / "parts", fm).start()


def test_trainer_rejects_bad_data(fm, tmp_path):
    styles, coeffs = synthetic_pairs(40)
    with pytest.raises(ValueError, match=r"styles must be \[N, 96\]"):
        TTrainer(TTrainConfig(**TINY), styles[:, :90], coeffs, tmp_path, fm)
    with pytest.raises(ValueError, match="40 style rows but 39"):
        TTrainer(TTrainConfig(**TINY), styles, coeffs[:39], tmp_path, fm)
    with pytest.raises(ValueError, match="larger than the training split"):
        TTrainer(TTrainConfig(**dict(TINY, batch_size=64)), styles, coeffs, tmp_path, fm)
    with pytest.raises(ValueError, match="unknown loss 'l1'"):
        TTrainConfig(**dict(TINY, losses={"l1": 1.0}))


# ============================================================================================ command line
@pytest.fixture(scope="module")
def tiny_pairs(tmp_path_factory):
    """24 gen-pairs pairs of a random-weight 64-px generator, labelled by the shipped mini reconstruction net."""
    from cddfm3d.editing.pairs import generate_pairs
    from cddfm3d.stylegan2 import Generator

    torch.manual_seed(0)
    G = Generator(64, z_dim=16, w_dim=16, mapping_layers=2, channels={4: 16, 8: 16, 16: 8, 32: 8, 64: 8}).eval()
    out = tmp_path_factory.mktemp("pairs") / "p"
    return generate_pairs(G.requires_grad_(False), assets.load("mini/recon"), out, 24, seed=1, shard_size=12,
                          batch=12, progress=False)


def test_train_t_command(tiny_pairs, tmp_path, capsys):
    from cddfm3d.cli import main
    from cddfm3d.editing.pairs import PairDataset

    out = tmp_path / "t"
    args = ["train-t", "--pairs", str(tiny_pairs), "--out", str(out), "--steps", "4", "--batch", "8", "--hidden",
            "16", "16", "--loss", "pdc", "feature=0.5", "--val-fraction", "0.25", "--eval-every", "2",
            "--weight-decay", "0.25", "--device", "cpu"]
    assert main(args) == 0
    text = capsys.readouterr().out
    report = json.loads(text[:text.rindex("}") + 1])
    assert report["world"] == "mini" and report["step"] == 4 and report["losses"] == {"pdc": 1.0, "feature": 0.5}
    assert report["held_out"]["n"] == 6 and set(report["held_out"]["goals_met"]) == \
        {f"{k}_{a}" for k in ("ev", "var_ratio") for a in ATTRIBUTES}
    T = AttributePredictor.load(out / EXPORT_FILE)
    assert T.config == {"style_dim": PairDataset(tiny_pairs).load_fields(["styles"])["styles"].shape[1],
                        "hidden": [16, 16]}
    assert T.coeff_scale_source == "prior_std" and torch.equal(T.coeff_scale, prior_std().float())
    assert [e["step"] for e in json.loads((out / "log.json").read_text()) if "val" in e] == [2, 4]
    assert (out / "commands.txt").read_text().count("train-t") == 1
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert json.loads(ck["config"])["weight_decay"] == 0.25                     # --weight-decay reaches AdamW
    assert {g["weight_decay"] for g in ck["opt"]["param_groups"]} == {0.25}
    # bad input: one error line, status 2, nothing trained
    assert main(["train-t", "--pairs", str(tiny_pairs), "--out", str(tmp_path / "x"), "--loss", "l1"]) == 2
    assert "expected NAME or NAME=WEIGHT" in capsys.readouterr().err
    assert main(["train-t", "--pairs", str(tiny_pairs), "--out", str(tmp_path / "x"), "--batch", "64"]) == 2
    assert "larger than the training split" in capsys.readouterr().err
    assert main(["train-t", "--pairs", str(tiny_pairs), "--out", str(tmp_path / "x"), "--weight-decay", "-1"]) == 2
    assert "expected a number >= 0" in capsys.readouterr().err
    assert not (tmp_path / "x" / "checkpoint.pt").exists()
