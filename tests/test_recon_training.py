"""Training and evaluating the small reconstruction network on renders with known coefficients: the learning-rate
schedule, checkpoints and exact resume, the three loss terms (against independent formulas), loss reduction,
``evaluate_recon`` (against brute-force metrics) and ``coefficient_scale``."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from cddfm3d.face3d.morphable import SLICES
from cddfm3d.face3d.recon import ReconCheckpointError, ReconNet
from cddfm3d.face3d.recon_training import (ReconTrainConfig, ReconTrainer, coefficient_scale, evaluate_recon,
                                           train_recon)
from cddfm3d.face3d.render import render
from cddfm3d.serialization import state_sha256
from cddfm3d.world import mini_model
from cddfm3d.world.datasets import WorldDataset, write_dataset

SIZE = 32
TINY = dict(image_size=SIZE, width=4, batch_size=4, photo_batch=2, steps=6, checkpoint_every=2)


@pytest.fixture(scope="module")
def fm():
    return mini_model()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """16 human renders (uint8 [16, 3, 32, 32]) and their coefficients [16, 257]."""
    root = write_dataset(tmp_path_factory.mktemp("recon_data"), 16, seed=3, size=SIZE, progress=False)
    ds = WorldDataset(root)
    return ds.images, ds.coeffs


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.float() / 127.5 - 1


def photo_by_hand(rendered, target, mask, eps=1e-6) -> float:
    """Deep3D's masked colour distance, written out in float64."""
    r, t, m = rendered.double(), target.double(), mask.double()
    dist = torch.sqrt(eps + ((r - t) ** 2).sum(1, keepdim=True))
    return float((dist * m).sum() / max(float(m.sum()), 1.0))


# ------------------------------------------------------------------------------------------------ schedule
@pytest.mark.parametrize("lr, warmup, steps", [(2e-3, 10, 50), (1.0, 1, 7), (0.5, 0, 20), (1e-3, 30, 30)])
def test_lr_schedule(fm, tmp_path, lr, warmup, steps):
    cfg = ReconTrainConfig(image_size=SIZE, width=1, lr=lr, warmup=warmup, steps=steps)
    tr = ReconTrainer(cfg, fm, torch.ones(257), tmp_path)

    def expected(step):
        if step < warmup:
            return lr * (step + 1) / warmup
        frac = min((step - warmup) / max(steps - warmup, 1), 1.0)
        return lr / 2 * (1 + np.cos(np.pi * frac))

    got = [tr.lr_at(s) for s in range(steps + 5)]
    assert got == pytest.approx([expected(s) for s in range(steps + 5)], rel=1e-12, abs=1e-15)
    if warmup:
        assert got[0] == pytest.approx(lr / warmup) and got[warmup - 1] == pytest.approx(lr)
    if warmup < steps:
        assert got[steps] == pytest.approx(0.0, abs=1e-15) and got[-1] == pytest.approx(0.0, abs=1e-15)
    decay = got[warmup:steps + 1]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))  # monotone after the warm-up


# ------------------------------------------------------------------------------------------------ training
def test_training_writes_checkpoint_and_loadable_net(data, fm, tmp_path):
    images, coeffs = data
    tr = train_recon(images, coeffs, ReconTrainConfig(**TINY), tmp_path, model=fm, progress=False)
    assert tr.step == 6
    for name in ("checkpoint.pt", "recon.safetensors", "log.json"):
        assert (tmp_path / name).is_file(), name
    assert not list(tmp_path.glob("*.tmp"))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 6 and json.loads(state["config"])["width"] == 4
    # log.json is the run's log, as the checkpoint holds it (empty: no step of 6 is a multiple of log_every = 10)
    assert json.loads((tmp_path / "log.json").read_text()) == json.loads(state["log"]) == tr.log == []
    assert not tr.net.training  # train() leaves the net in eval mode

    net = ReconNet.load(tmp_path / "recon.safetensors")
    assert net.config == tr.net.config
    x = to_float(images[:5])
    with torch.no_grad():
        assert torch.equal(net(x), tr.net(x))


def test_first_step_moves_the_zero_heads_by_the_warmup_learning_rate(data, fm, tmp_path):
    """Adam's first step from a zero parameter is -lr * g / (|g| + eps) (bias-corrected m = g, v = g^2; weight
    decay of zero is zero): every head parameter moves by at most lr_at(0) = lr / warmup, almost all by exactly
    that. Catches the schedule not reaching the optimizer (lr 2e-3 instead of 2e-5), or the heads not training."""
    images, coeffs = data
    cfg = ReconTrainConfig(**TINY)
    tr = train_recon(images, coeffs, cfg, tmp_path, model=fm, progress=False, max_steps=1)
    lr0 = cfg.lr / cfg.warmup
    moved = torch.cat([p.detach().abs().flatten() for p in tr.net.final_layers.parameters()]).double()
    assert float(moved.max()) <= lr0 * (1 + 1e-6)
    assert float(moved.median()) == pytest.approx(lr0, rel=1e-4)


def test_train_rejects_mismatched_inputs(data, fm, tmp_path):
    images, coeffs = data
    tr = ReconTrainer(ReconTrainConfig(**TINY), fm, coefficient_scale(coeffs), tmp_path)
    with pytest.raises(ValueError, match="16 and 15"):
        tr.train(images, coeffs[:15], progress=False)
    with pytest.raises(ValueError):
        tr.train(images[:0], coeffs[:0], progress=False)


def test_resume_is_exact(data, fm, tmp_path):
    images, coeffs = data
    cfg = ReconTrainConfig(**TINY)
    straight = train_recon(images, coeffs, cfg, tmp_path / "a", model=fm, progress=False)
    first = train_recon(images, coeffs, cfg, tmp_path / "b", model=fm, progress=False, max_steps=3)
    assert first.step == 3 and torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 3
    resumed = train_recon(images, coeffs, cfg, tmp_path / "b", model=fm, progress=False)
    assert straight.step == resumed.step == 6
    a, b = straight.net.state_dict(), resumed.net.state_dict()
    assert a.keys() == b.keys()
    for k in a:  # weights and BatchNorm running statistics
        assert torch.equal(a[k], b[k]), k
    sa, sb = straight.opt.state_dict()["state"], resumed.opt.state_dict()["state"]
    for i in sa:
        for k in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), (i, k)
    assert torch.equal(straight.rng.get_state(), resumed.rng.get_state())


def test_resume_refuses_other_architecture_and_no_resume_ignores_it(data, fm, tmp_path):
    images, coeffs = data
    train_recon(images, coeffs, ReconTrainConfig(**dict(TINY, steps=1)), tmp_path, model=fm, progress=False)
    other = ReconTrainConfig(**dict(TINY, steps=1, width=8))
    with pytest.raises(ValueError, match="width") as err:
        train_recon(images, coeffs, other, tmp_path, model=fm, progress=False)
    assert str(tmp_path / "checkpoint.pt") in str(err.value)
    with pytest.raises(ValueError, match="norm"):
        train_recon(images, coeffs, ReconTrainConfig(**dict(TINY, steps=1, norm="group")), tmp_path, model=fm,
                    progress=False)
    # resume=False starts afresh (and overwrites the run)
    tr = train_recon(images, coeffs, other, tmp_path, model=fm, progress=False, resume=False)
    assert tr.step == 1 and ReconNet.load(tmp_path / "recon.safetensors").config["width"] == 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resume_on_cuda(data, fm, tmp_path):
    images, coeffs = data
    cfg = ReconTrainConfig(**TINY)
    train_recon(images, coeffs, cfg, tmp_path, model=fm, progress=False, device="cuda", max_steps=2)
    tr = train_recon(images, coeffs, cfg, tmp_path, model=fm, progress=False, device="cuda")
    assert tr.step == 6


def test_training_reduces_the_loss(data, fm, tmp_path):
    images, coeffs = data
    cfg = ReconTrainConfig(image_size=SIZE, width=4, norm="group", batch_size=8, photo_batch=2, steps=25,
                           warmup=5, lr=3e-3, noise_std=0.0, checkpoint_every=1000)
    tr = ReconTrainer(cfg, fm, coefficient_scale(coeffs), tmp_path)
    x, y = to_float(images), coeffs
    with torch.no_grad():
        before = {k: float(v) for k, v in tr.losses(x, y).items()}
    tr.train(images, coeffs, progress=False)
    with torch.no_grad():
        after = {k: float(v) for k, v in tr.losses(x, y).items()}
    assert all(math.isfinite(v) for v in list(before.values()) + list(after.values()))
    assert after["total"] < 0.85 * before["total"], (before, after)
    assert after["coeff"] < before["coeff"] and after["landmark"] < before["landmark"], (before, after)
    log = json.loads((tmp_path / "log.json").read_text())
    assert [e["step"] for e in log] == [10, 20]
    assert set(log[0]) == {"step", "lr", "total", "coeff", "landmark", "photo"}
    assert [e["lr"] for e in log] == [tr.lr_at(9), tr.lr_at(19)]   # the rate of the step that ended there


# ------------------------------------------------------------------------------------------------ losses
def test_losses_against_independent_formulas(data, fm, tmp_path, monkeypatch):
    images, coeffs = data
    cfg = ReconTrainConfig(**TINY)
    scale = coefficient_scale(coeffs)
    tr = ReconTrainer(cfg, fm, scale, tmp_path)
    x, y = to_float(images[:4]), coeffs[:4]
    k = cfg.photo_batch

    # prediction == target: coefficient and landmark terms vanish, the photometric term is the distance between
    # the (unclamped, not supersampled) render of the ground truth and the image
    monkeypatch.setattr(tr.net, "forward", lambda imgs, check=True: y.clone())
    with torch.no_grad():
        terms = tr.losses(x, y)
    assert float(terms["coeff"]) == 0.0 and float(terms["landmark"]) == 0.0
    rendered, mask = render(fm(y, image_size=SIZE), size=SIZE, supersample=1, clamp=False)
    photo = photo_by_hand(rendered[:k], (x[:k] + 1) / 2, mask[:k])
    assert photo > 0  # the renders carry a background and antialiasing the model render does not
    assert float(terms["photo"]) == pytest.approx(photo, rel=1e-5)
    assert float(terms["total"]) == pytest.approx(cfg.w_photo * photo, rel=1e-5)

    # a known error: coefficient term in prior-std units, Deep3D-weighted landmark term
    delta = torch.zeros_like(y)
    delta[:, SLICES["id"]] = 0.3
    delta[:, SLICES["angle"]] = torch.tensor([0.05, -0.1, 0.02])
    delta[:, SLICES["trans"]] = torch.tensor([0.1, 0.0, 0.0])
    pred = y + delta
    monkeypatch.setattr(tr.net, "forward", lambda imgs, check=True: pred.clone())
    with torch.no_grad():
        terms = tr.losses(x, y)
    coeff = float((((pred - y).double() / scale.double()) ** 2).mean())
    assert float(terms["coeff"]) == pytest.approx(coeff, rel=1e-5)
    lp = fm(pred, image_size=SIZE).landmarks.double()
    lt = fm(y, image_size=SIZE).landmarks.double()
    weights = [20.0 if j in (28, 29, 30) or 60 <= j <= 67 else 1.0 for j in range(68)]
    lm = sum(weights[j] * float(((lp[b, j] - lt[b, j]) ** 2).sum()) for b in range(4) for j in range(68)) / (4 * 68)
    assert lm > 0 and float(terms["landmark"]) == pytest.approx(lm, rel=1e-4)
    rendered, mask = render(fm(pred, image_size=SIZE), size=SIZE, supersample=1, clamp=False)
    photo = photo_by_hand(rendered[:k], (x[:k] + 1) / 2, mask[:k])
    assert float(terms["photo"]) == pytest.approx(photo, rel=1e-5)
    total = cfg.w_coeff * coeff + cfg.w_landmark * lm + cfg.w_photo * photo
    assert float(terms["total"]) == pytest.approx(total, rel=1e-4)


# ------------------------------------------------------------------------------------------------ evaluation
class FakeNet(nn.Module):
    """Returns the given coefficients in order, batch after batch (and checks what it is fed)."""

    def __init__(self, coeffs: torch.Tensor):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.coeffs, self.i, self.batches = coeffs, 0, []

    def forward(self, x: torch.Tensor, check: bool = True) -> torch.Tensor:
        assert x.dtype == torch.float32 and float(x.min()) >= -1 and float(x.max()) <= 1
        out = self.coeffs[self.i:self.i + len(x)]
        self.i += len(x)
        self.batches.append(len(x))
        return out.clone()


GROUPS = ("id", "exp", "tex", "gamma", "trans")
ANGLES = ("pitch", "yaw", "roll")


def test_evaluate_recon_on_ground_truth(data, fm):
    images, coeffs = data
    imgs, y = images[:5], coeffs[:5]
    net = FakeNet(y)
    m = evaluate_recon(net, fm, imgs, y, batch=2)
    assert net.batches == [2, 2, 1]
    assert m["n"] == 5
    assert m["landmark_px"] == 0.0
    for g in GROUPS:
        assert m[f"rmse_{g}"] == 0.0, g
    for a in ANGLES:
        assert m[f"angle_deg_{a}"] == 0.0, a
    for g in GROUPS + ("angle",):
        assert m[f"r2_{g}"] == pytest.approx(1.0, abs=1e-9), g
    # photometric: mean over images of the per-image distance to the supersampled, clamped render
    rendered, mask = render(fm(y, image_size=SIZE), size=SIZE, supersample=2)
    x = to_float(imgs)
    per_image = [photo_by_hand(rendered[i:i + 1], (x[i:i + 1] + 1) / 2, mask[i:i + 1]) for i in range(5)]
    assert m["photometric"] == pytest.approx(sum(per_image) / 5, rel=1e-5)
    # float images in [-1, 1] give the same numbers as uint8 ones
    assert evaluate_recon(FakeNet(y), fm, x, y, batch=2) == pytest.approx(m, rel=1e-6, abs=1e-9)
    # without coefficients: photometric only
    assert set(evaluate_recon(FakeNet(y), fm, imgs)) == {"n", "photometric"}


def test_evaluate_recon_with_known_errors(data, fm):
    images, coeffs = data
    imgs, y = images[:5], coeffs[:5]
    pred = y.clone()
    pred[:, SLICES["id"]] += 0.1
    pred[:, SLICES["angle"].start + 1] += math.radians(2.0)  # yaw
    m = evaluate_recon(FakeNet(pred), fm, imgs, y, batch=3)
    assert m["rmse_id"] == pytest.approx(0.1, abs=1e-5)
    assert m["angle_deg_yaw"] == pytest.approx(2.0, abs=1e-4)
    for g in ("exp", "tex", "gamma", "trans"):
        assert m[f"rmse_{g}"] == 0.0, g
    assert m["angle_deg_pitch"] == 0.0 and m["angle_deg_roll"] == 0.0
    lp, lt = fm(pred, image_size=SIZE).landmarks.tolist(), fm(y, image_size=SIZE).landmarks.tolist()
    dists = [math.hypot(lp[b][j][0] - lt[b][j][0], lp[b][j][1] - lt[b][j][1]) for b in range(5) for j in range(68)]
    assert m["landmark_px"] > 0
    assert m["landmark_px"] == pytest.approx(sum(dists) / len(dists), rel=1e-5)


def test_evaluate_recon_r2_against_numpy(data, fm):
    images, coeffs = data
    y = coeffs[:6]
    g = torch.Generator().manual_seed(3)
    pred = y + torch.randn(y.shape, generator=g) * 0.3
    pred[:, SLICES["tex"]] = y[:, SLICES["tex"]].mean(0)       # the average face: R^2 exactly 0
    m = evaluate_recon(FakeNet(pred), fm, images[:6], y, batch=4)
    yn, pn = y.double().numpy(), pred.double().numpy()
    for group in GROUPS + ("angle",):
        a, b = yn[:, SLICES[group]], pn[:, SLICES[group]]
        expected = 1 - ((a - b) ** 2).sum() / ((a - a.mean(0)) ** 2).sum()
        assert m[f"r2_{group}"] == pytest.approx(expected, abs=1e-5), group
    assert m["r2_tex"] == pytest.approx(0.0, abs=1e-5)


def test_evaluate_recon_rmse_is_root_mean_square_over_images(data, fm):
    images, coeffs = data
    y = coeffs[:4]
    pred = y.clone()
    offsets = torch.tensor([0.0, 0.1, 0.2, 0.4])
    pred[:, SLICES["exp"]] += offsets[:, None]
    m = evaluate_recon(FakeNet(pred), fm, images[:4], y)
    assert m["rmse_exp"] == pytest.approx(math.sqrt(float((offsets.double() ** 2).mean())), abs=1e-5)


# ------------------------------------------------------------------------------------------------ scale
def test_coefficient_scale():
    g = torch.Generator().manual_seed(0)
    c = torch.randn(10, 257, generator=g) * torch.linspace(0.0, 3.0, 257)
    c[:, 5] = 1.25                     # constant column: the floor
    c[:, 7] = 1e-5 * torch.arange(10)  # tiny spread: the floor too
    expected = np.maximum(np.std(c.double().numpy(), axis=0, ddof=1), 1e-3)
    s = coefficient_scale(c)
    assert s.shape == (257,) and s.dtype == torch.float32
    np.testing.assert_allclose(s.numpy(), expected, rtol=1e-6)
    assert float(s[5]) == pytest.approx(1e-3) and float(s[7]) == pytest.approx(1e-3)
    np.testing.assert_allclose(coefficient_scale(c, floor=0.5).numpy(), np.maximum(expected, 0.5), rtol=1e-6)


# ------------------------------------------------------------------------------------------------ attribute losses
def test_attribute_scale_is_the_per_sample_variance(fm, data):
    from cddfm3d.face3d.measures import ATTRIBUTES, attribute_features
    from cddfm3d.face3d.recon_training import attribute_scale

    _, coeffs = data
    scale = attribute_scale(fm, coeffs)
    for i, a in enumerate(ATTRIBUTES):
        f = attribute_features(fm, coeffs, a).double().numpy()
        expected = ((f - f.mean(0)) ** 2).sum(1).mean()
        assert float(scale[i]) == pytest.approx(expected, rel=1e-5), a
    with pytest.raises(ValueError, match="at least 2"):
        attribute_scale(fm, coeffs[:1])


def test_attribute_losses_are_one_minus_explained_variance(data, fm, tmp_path, monkeypatch):
    """With the batch itself as the reference sample, each attribute term equals 1 - explained variance of the
    prediction on that batch, computed independently in numpy; predicting the batch mean gives exactly 1."""
    from cddfm3d.face3d.measures import ATTRIBUTES, attribute_features
    from cddfm3d.face3d.recon_training import attribute_scale

    images, coeffs = data
    x, y = to_float(images[:8]), coeffs[:8]
    weights = {"shape": 1.0, "expression": 0.5, "albedo": 2.0, "light": 1.0, "pose": 0.1}
    cfg = ReconTrainConfig(**dict(TINY, attribute_weights=weights))
    tr = ReconTrainer(cfg, fm, coefficient_scale(coeffs), tmp_path, attr_scale=attribute_scale(fm, y))
    g = torch.Generator().manual_seed(1)
    pred = y + 0.3 * torch.randn(y.shape, generator=g) * coefficient_scale(coeffs)
    monkeypatch.setattr(tr.net, "forward", lambda imgs, check=True: pred.clone())
    with torch.no_grad():
        terms = tr.losses(x, y)
    extra = 0.0
    for a in ATTRIBUTES:
        fp = attribute_features(fm, pred, a).double().numpy()
        ft = attribute_features(fm, y, a).double().numpy()
        one_minus_ev = ((fp - ft) ** 2).sum() / ((ft - ft.mean(0)) ** 2).sum()
        assert float(terms[f"attr_{a}"]) == pytest.approx(one_minus_ev, rel=1e-4), a
        extra += weights[a] * one_minus_ev
    base = cfg.w_coeff * float(terms["coeff"]) + cfg.w_landmark * float(terms["landmark"]) + \
        cfg.w_photo * float(terms["photo"])
    assert float(terms["total"]) == pytest.approx(base + extra, rel=1e-4)
    mean_face = y.mean(0, keepdim=True).expand_as(y).clone()
    monkeypatch.setattr(tr.net, "forward", lambda imgs, check=True: mean_face)
    with torch.no_grad():
        terms = tr.losses(x, y)
    for a in ("shape", "expression", "albedo", "light"):   # linear in the coefficients: the mean's features are
        assert float(terms[f"attr_{a}"]) == pytest.approx(1.0, rel=1e-4), a   # the features' mean


def test_attribute_weights_are_checked_and_resume(data, fm, tmp_path):
    images, coeffs = data
    with pytest.raises(ValueError, match="attribute_weights.*'colour'"):
        ReconTrainer(ReconTrainConfig(**dict(TINY, attribute_weights={"colour": 1.0})), fm, torch.ones(257), tmp_path)
    with pytest.raises(ValueError, match="attribute_weights.*'shape': -1"):
        ReconTrainer(ReconTrainConfig(**dict(TINY, attribute_weights={"shape": -1.0})), fm, torch.ones(257), tmp_path)
    with pytest.raises(ValueError, match="need attr_scale"):
        ReconTrainer(ReconTrainConfig(**dict(TINY, attribute_weights={"shape": 1.0})), fm, torch.ones(257), tmp_path)
    cfg = ReconTrainConfig(**dict(TINY, attribute_weights={"shape": 1.0, "light": 1.0}))
    straight = train_recon(images, coeffs, cfg, tmp_path / "a", model=fm, progress=False)
    train_recon(images, coeffs, cfg, tmp_path / "b", model=fm, progress=False, max_steps=3)
    resumed = train_recon(images, coeffs, cfg, tmp_path / "b", model=fm, progress=False)
    for k, v in straight.net.state_dict().items():
        assert torch.equal(v, resumed.net.state_dict()[k]), k
    assert torch.equal(straight.attr_scale, resumed.attr_scale)
    log = json.loads((tmp_path / "a" / "log.json").read_text())
    assert all("attr_shape" in e and "attr_light" in e and "attr_albedo" not in e for e in log)


def test_cli_attribute_weights(tmp_path, capsys):
    from cddfm3d import cli

    data = write_dataset(tmp_path / "w", 8, size=SIZE, progress=False)
    out = tmp_path / "run"
    assert cli.main(["train-recon", "--data", str(data), "--out", str(out), "--steps", "2", "--batch", "4",
                     "--width", "4", "--device", "cpu", "--attribute-weights", "shape=1", "light=0.5"]) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert json.loads(state["config"])["attribute_weights"] == {"shape": 1.0, "light": 0.5}
    assert cli.main(["train-recon", "--data", str(data), "--out", str(out), "--attribute-weights", "nose=1"]) == 2
    assert "expected NAME=WEIGHT with NAME one of shape, expression, albedo, pose, light" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ --photo-batch, --norm
def test_photo_batch_zero_drops_the_photometric_term_and_the_rendering(data, fm, tmp_path, monkeypatch):
    """photo_batch 0: nothing is rendered, the photometric term is 0 and the total is the coefficient and landmark
    terms by their weights (the formulas of test_losses_against_independent_formulas); one training step is the
    step of the same run with w_photo = 0 (the photometric gradient is exactly what is dropped), and differs from
    the step of the default run (the term did contribute)."""
    import cddfm3d.face3d.recon_training as rt

    images, coeffs = data
    scale = coefficient_scale(coeffs)
    x, y = to_float(images[:4]), coeffs[:4]
    tr = ReconTrainer(ReconTrainConfig(**dict(TINY, photo_batch=0)), fm, scale, tmp_path / "t")
    pred = y.clone()
    pred[:, SLICES["id"]] += 0.2
    monkeypatch.setattr(tr.net, "forward", lambda imgs, check=True: pred.clone())

    def no_render(*args, **kwargs):
        raise AssertionError("photo_batch 0 must not render")

    with monkeypatch.context() as m:
        m.setattr(rt, "render", no_render)
        with torch.no_grad():
            terms = tr.losses(x, y)
    assert float(terms["photo"]) == 0.0
    coeff = float((((pred - y).double() / scale.double()) ** 2).mean())
    assert float(terms["coeff"]) == pytest.approx(coeff, rel=1e-5)
    assert float(terms["total"]) == pytest.approx(tr.cfg.w_coeff * coeff + tr.cfg.w_landmark * float(terms["landmark"]),
                                                  rel=1e-6)

    with monkeypatch.context() as m:
        m.setattr(rt, "render", no_render)
        zero = train_recon(images, coeffs, ReconTrainConfig(**dict(TINY, photo_batch=0)), tmp_path / "zero",
                           model=fm, progress=False, max_steps=1)
    no_weight = train_recon(images, coeffs, ReconTrainConfig(**dict(TINY, w_photo=0.0)), tmp_path / "w0", model=fm,
                            progress=False, max_steps=1)
    default = train_recon(images, coeffs, ReconTrainConfig(**TINY), tmp_path / "default", model=fm, progress=False,
                          max_steps=1)
    a, b, c = zero.net.state_dict(), no_weight.net.state_dict(), default.net.state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-6, atol=1e-9), k
    assert any(not torch.allclose(a[k], c[k], rtol=1e-4, atol=1e-7) for k in a if a[k].is_floating_point())


def test_cli_photo_batch_zero_logs_no_photometric_loss(tmp_path, capsys):
    from cddfm3d import cli

    data = write_dataset(tmp_path / "w", 8, size=SIZE, progress=False)
    out = tmp_path / "run"
    assert cli.main(["train-recon", "--data", str(data), "--out", str(out), "--steps", "10", "--batch", "4",
                     "--width", "4", "--photo-batch", "0", "--device", "cpu"]) == 0
    assert json.loads(torch.load(out / "checkpoint.pt", weights_only=True)["config"])["photo_batch"] == 0
    log = json.loads((out / "log.json").read_text())
    assert [e["step"] for e in log] == [10]
    assert log[0]["photo"] == 0.0 and log[0]["coeff"] > 0 and log[0]["landmark"] > 0
    assert log[0]["total"] == pytest.approx(log[0]["coeff"] + 0.05 * log[0]["landmark"], rel=1e-5)
    assert cli.main(["train-recon", "--data", str(data), "--out", str(out), "--photo-batch", "-1"]) == 2
    assert "--photo-batch" in capsys.readouterr().err


def test_cli_norm_group_builds_group_norm_layers_and_resume_refuses_another_norm(tmp_path, capsys):
    """--norm group: the exported net and the checkpoint say norm group and every normalisation layer is a
    GroupNorm, so in training mode an image's output does not depend on the rest of the batch (a batch-norm net's
    does); resuming a batch-norm run with --norm group is refused naming the checkpoint and the field."""
    from cddfm3d import cli

    data = write_dataset(tmp_path / "w", 8, size=SIZE, progress=False)
    common = ["--data", str(data), "--steps", "2", "--batch", "4", "--width", "4", "--photo-batch", "0",
              "--device", "cpu"]
    group, batch = tmp_path / "group", tmp_path / "batch"
    assert cli.main(["train-recon", "--out", str(group), "--norm", "group"] + common) == 0
    assert cli.main(["train-recon", "--out", str(batch)] + common) == 0
    assert json.loads(torch.load(group / "checkpoint.pt", weights_only=True)["config"])["norm"] == "group"
    x = to_float(WorldDataset(data).images[:4])
    for folder, norm, kind in ((group, "group", nn.GroupNorm), (batch, "batch", nn.BatchNorm2d)):
        net = ReconNet.load(folder / "recon.safetensors")
        assert net.config["norm"] == norm
        norms = [m for m in net.modules() if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d, nn.LayerNorm,
                                                            nn.InstanceNorm2d))]
        assert norms and all(type(m) is kind for m in norms), folder
        net.train()
        with torch.no_grad():
            alone, in_batch = net.features(x[:1]), net.features(x)[:1]
        assert torch.allclose(alone, in_batch, atol=1e-5) == (norm == "group"), norm

    assert cli.main(["train-recon", "--out", str(batch), "--norm", "group"] + common) == 2
    err = capsys.readouterr().err
    assert str(batch / "checkpoint.pt") in err and "norm='batch' in the checkpoint, norm='group' requested" in err
    assert cli.main(["train-recon", "--out", str(tmp_path / "x"), "--norm", "layer"] + common) == 2
    assert "invalid choice: 'layer'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ --init (fine-tuning)
def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_init_starts_from_its_weights_with_a_fresh_optimizer_and_resumes_exactly(data, fm, tmp_path):
    """A run with init starts from exactly the init's weights (its step-0 network is the init's, also when train()
    is called without start()), not from a fresh network; training from there equals training a copy of the init by
    hand with a fresh AdamW and the run's own batches; an interrupted run resumed with the same init (also under
    another spelling of its path) ends where the uninterrupted one does, and the checkpoint names the init file as
    first given and its state hash."""
    images, coeffs = data
    train_recon(images, coeffs, ReconTrainConfig(**dict(TINY, steps=3)), tmp_path / "start", model=fm,
                progress=False)
    init_file = tmp_path / "start" / "recon.safetensors"
    init_net = ReconNet.load(init_file)
    cfg = ReconTrainConfig(**dict(TINY, steps=4, seed=5))
    tr = ReconTrainer(cfg, fm, coefficient_scale(coeffs), tmp_path / "ft", init=init_file).start()
    assert _same_state(tr.net, init_net) and not _same_state(tr.net, ReconTrainer(
        cfg, fm, coefficient_scale(coeffs), tmp_path / "fresh").net)
    straight = train_recon(images, coeffs, cfg, tmp_path / "ft", model=fm, progress=False, init=init_file)
    assert straight.step == 4
    # an independent replay: the init's weights in a run without init, loaded by hand before the first step
    by_hand = ReconTrainer(cfg, fm, coefficient_scale(coeffs), tmp_path / "hand").start()
    by_hand.net.load_state_dict(init_net.state_dict())
    by_hand.train(images, coeffs, progress=False)
    assert _same_state(straight.net, by_hand.net)
    state = torch.load(tmp_path / "ft" / "checkpoint.pt", weights_only=True)
    assert state["init_file"] == str(init_file) and state["init_sha256"] == state_sha256(init_net)
    assert "init_file" not in torch.load(tmp_path / "hand" / "checkpoint.pt", weights_only=True)

    no_start = ReconTrainer(cfg, fm, coefficient_scale(coeffs), tmp_path / "no_start", init=init_file)
    no_start.train(images, coeffs, progress=False)
    assert _same_state(no_start.net, straight.net)

    part = train_recon(images, coeffs, cfg, tmp_path / "part", model=fm, progress=False, init=init_file, max_steps=2)
    assert part.step == 2
    other_spelling = tmp_path / "start" / ".." / "start" / "recon.safetensors"
    resumed = train_recon(images, coeffs, cfg, tmp_path / "part", model=fm, progress=False, init=other_spelling)
    assert resumed.step == 4 and _same_state(resumed.net, straight.net)
    assert torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["init_file"] == str(init_file)
    # a resume without --init continues the run's own start and keeps its record
    again = train_recon(images, coeffs, ReconTrainConfig(**dict(TINY, steps=5, seed=5)), tmp_path / "part",
                        model=fm, progress=False)
    assert again.step == 5
    assert torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["init_file"] == str(init_file)


def test_init_of_another_architecture_or_start_is_refused(data, fm, tmp_path):
    images, coeffs = data
    train_recon(images, coeffs, ReconTrainConfig(**dict(TINY, steps=1)), tmp_path / "a", model=fm, progress=False)
    train_recon(images, coeffs, ReconTrainConfig(**dict(TINY, steps=1, seed=1)), tmp_path / "b", model=fm,
                progress=False)
    wide = ReconNet("small", image_size=SIZE, width=8, input_range="-1_1")
    with pytest.raises(ValueError, match=r"differs from this run's network in width \(init 8, run 4\)"):
        ReconTrainer(ReconTrainConfig(**TINY), fm, coefficient_scale(coeffs), tmp_path / "x", init=wide)
    grouped = ReconNet("small", image_size=SIZE, width=4, norm="group", input_range="-1_1")
    with pytest.raises(ValueError, match="norm"):
        ReconTrainer(ReconTrainConfig(**TINY), fm, coefficient_scale(coeffs), tmp_path / "x", init=grouped)
    with pytest.raises(ValueError, match="must be a ReconNet"):
        ReconTrainer(ReconTrainConfig(**TINY), fm, coefficient_scale(coeffs), tmp_path / "x", init=nn.Linear(2, 2))
    with pytest.raises(FileNotFoundError, match="missing.safetensors does not exist"):
        ReconTrainer(ReconTrainConfig(**TINY), fm, coefficient_scale(coeffs), tmp_path / "x",
                     init=tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ReconCheckpointError, match="junk.safetensors"):
        ReconTrainer(ReconTrainConfig(**TINY), fm, coefficient_scale(coeffs), tmp_path / "x",
                     init=tmp_path / "junk.safetensors")
    a, b = tmp_path / "a" / "recon.safetensors", tmp_path / "b" / "recon.safetensors"
    cfg = ReconTrainConfig(**dict(TINY, steps=3))
    train_recon(images, coeffs, cfg, tmp_path / "ft", model=fm, progress=False, init=a, max_steps=1)
    with pytest.raises(ValueError, match="field 'init_sha256' is [0-9a-f]{12}\\.\\.\\., the init given is") as err:
        train_recon(images, coeffs, cfg, tmp_path / "ft", model=fm, progress=False, init=b)
    assert str(tmp_path / "ft" / "checkpoint.pt") in str(err.value)
    train_recon(images, coeffs, cfg, tmp_path / "plain", model=fm, progress=False, max_steps=1)
    with pytest.raises(ValueError, match=r"is none \(the run started afresh\)"):
        train_recon(images, coeffs, cfg, tmp_path / "plain", model=fm, progress=False, init=a)


def test_cli_init(tmp_path, capsys, monkeypatch):
    """train-recon --init FILE (here a path relative to the working directory, recorded as typed): one step equals
    one step of a run without init whose network was set to the file's by hand (the CLI's start is the file's
    weights); an init of another width, or a missing file, is a usage error naming it (exit status 2)."""
    from cddfm3d import cli

    data = write_dataset(tmp_path / "w", 8, size=SIZE, progress=False)
    common = ["--data", str(data), "--batch", "4", "--width", "4", "--photo-batch", "0", "--device", "cpu"]
    assert cli.main(["train-recon", "--out", str(tmp_path / "a"), "--steps", "1"] + common) == 0
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train-recon", "--out", str(tmp_path / "b"), "--steps", "1", "--init", "a/recon.safetensors"]
                    + common) == 0
    init = ReconNet.load(tmp_path / "a" / "recon.safetensors")
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert state["init_file"] == "a/recon.safetensors" and state["init_sha256"] == state_sha256(init)
    ds = WorldDataset(data)
    cfg = ReconTrainConfig(image_size=SIZE, width=4, batch_size=4, photo_batch=0, steps=1)
    by_hand = ReconTrainer(cfg, mini_model(), coefficient_scale(ds.coeffs), tmp_path / "hand").start()
    by_hand.net.load_state_dict(init.state_dict())
    by_hand.train(ds.images, ds.coeffs, progress=False)
    assert _same_state(ReconNet.load(tmp_path / "b" / "recon.safetensors"), by_hand.net)
    assert not _same_state(by_hand.net, init)                                        # the step did move it

    wide = ["--data", str(data), "--batch", "4", "--width", "8", "--photo-batch", "0", "--device", "cpu"]
    assert cli.main(["train-recon", "--out", str(tmp_path / "c"), "--steps", "1", "--init", "a/recon.safetensors"]
                    + wide) == 2
    assert "a/recon.safetensors differs from this run's network in width (init 4, run 8)" in capsys.readouterr().err
    assert cli.main(["train-recon", "--out", str(tmp_path / "c"), "--init", str(tmp_path / "nope")] + common) == 2
    assert "nope" in capsys.readouterr().err
