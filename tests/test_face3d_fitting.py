"""Deep3D losses against independent float64 numpy formulas, and analysis-by-synthesis fitting of MiniFace
renders with known coefficients."""
import numpy as np
import pytest
import torch

from cddfm3d.face3d.fitting import FitResult, fit
from cddfm3d.face3d.losses import (DEEP3D_WEIGHTS, coeff_reg_loss, gamma_loss, identity_loss, landmark_loss,
                                   landmark_weights, photometric_loss, reflectance_loss)
from cddfm3d.face3d.morphable import SLICES, MorphableModel
from cddfm3d.face3d.render import render

RNG = np.random.default_rng(0)


def t64(a):
    return torch.from_numpy(np.asarray(a, np.float64))


# ----------------------------------------------------------------------------------------------- losses
def test_weights_are_deep3d():
    assert DEEP3D_WEIGHTS == {"color": 1.92, "lm": 1.6e-3, "reg": 3e-4, "gamma": 10.0, "reflc": 5.0, "feat": 0.2}
    w = landmark_weights(torch.float64).numpy()
    assert w.shape == (68,) and w.sum() == 57 + 11 * 20
    assert set(np.flatnonzero(w == 20)) == {28, 29, 30, 60, 61, 62, 63, 64, 65, 66, 67}


def test_photometric_loss_float64():
    b, h, w = 2, 5, 7
    r, t = RNG.random((b, 3, h, w)), RNG.random((b, 3, h, w))
    m, skin = RNG.random((b, 1, h, w)), (RNG.random((b, 1, h, w)) > 0.3).astype(float)
    num = den = 0.0
    for bi in range(b):
        for i in range(h):
            for j in range(w):
                mm = m[bi, 0, i, j] * skin[bi, 0, i, j]
                num += np.sqrt(1e-6 + np.sum((r[bi, :, i, j] - t[bi, :, i, j]) ** 2)) * mm
                den += mm
    expect = num / max(den, 1.0)
    got = photometric_loss(t64(r), t64(t), t64(m), t64(skin))
    assert got.dtype == torch.float64 and abs(float(got) - expect) < 1e-12
    # Tiny masks: the denominator is clamped at 1.
    small = m * 1e-3
    expect_small = sum(np.sqrt(1e-6 + ((r - t) ** 2).sum(1)).ravel() * small.ravel()) / 1.0
    assert abs(float(photometric_loss(t64(r), t64(t), t64(small))) - expect_small) < 1e-12
    # The render mask is detached; colours get gradients.
    rr, mm = t64(r).requires_grad_(True), t64(m).requires_grad_(True)
    photometric_loss(rr, t64(t), mm).backward()
    # d/dr = m (r - t) / sqrt(1e-6 + |r - t|^2) / max(sum m, 1), written out per pixel
    expect_grad = np.zeros_like(r)
    for bi in range(b):
        for i in range(h):
            for j in range(w):
                d = r[bi, :, i, j] - t[bi, :, i, j]
                expect_grad[bi, :, i, j] = m[bi, 0, i, j] * d / np.sqrt(1e-6 + np.sum(d ** 2)) / max(m.sum(), 1.0)
    assert mm.grad is None
    np.testing.assert_allclose(rr.grad.numpy(), expect_grad, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        photometric_loss(t64(r), t64(t[:, :, :4]), t64(m))


def test_landmark_loss_float64():
    p, g = RNG.normal(size=(3, 68, 2)) * 5, RNG.normal(size=(3, 68, 2)) * 5
    w = np.ones(68)
    w[28:31] = 20
    w[60:68] = 20
    expect = sum(w[k] * np.sum((p[b, k] - g[b, k]) ** 2) for b in range(3) for k in range(68)) / (3 * 68)
    assert abs(float(landmark_loss(t64(p), t64(g))) - expect) < 1e-10
    w5 = RNG.random(5)
    expect5 = np.sum(w5 * ((p[:, :5] - g[:, :5]) ** 2).sum(-1)) / (3 * 5)
    assert abs(float(landmark_loss(t64(p[:, :5]), t64(g[:, :5]), t64(w5))) - expect5) < 1e-12
    with pytest.raises(ValueError, match="68 landmarks"):
        landmark_loss(t64(p[:, :5]), t64(g[:, :5]))


def test_regularisation_losses_float64():
    c = RNG.normal(size=(4, 257))
    idc, exp, tex, gam = c[:, 0:80], c[:, 80:144], c[:, 144:224], c[:, 227:254]
    expect = (1.0 * np.sum(idc ** 2) + 0.8 * np.sum(exp ** 2) + 0.017 * np.sum(tex ** 2)) / 4
    assert abs(float(coeff_reg_loss(t64(c))) - expect) < 1e-10
    g = gam.reshape(4, 3, 9)
    expect_g = np.mean((g - g.mean(1, keepdims=True)) ** 2)
    assert abs(float(gamma_loss(t64(c))) - expect_g) < 1e-14
    assert abs(float(gamma_loss(t64(gam))) - expect_g) < 1e-14
    # Monochrome light costs nothing.
    mono = np.repeat(RNG.normal(size=(2, 1, 9)), 3, 1).reshape(2, 27)
    assert float(gamma_loss(t64(mono))) < 1e-30


def test_reflectance_and_identity_loss_float64():
    b, n = 3, 50
    tex, skin = RNG.random((b, n, 3)), RNG.random(n) > 0.4
    ns = skin.sum()
    total = 0.0
    for bi in range(b):
        mu = tex[bi, skin].mean(0)
        total += np.sum((tex[bi, skin] - mu) ** 2)
    expect = total / (b * ns)
    assert abs(float(reflectance_loss(t64(tex), torch.from_numpy(skin))) - expect) < 1e-14
    fa, fb = RNG.normal(size=(4, 16)), RNG.normal(size=(4, 16))
    cos = (fa * fb).sum(1) / np.linalg.norm(fa, axis=1) / np.linalg.norm(fb, axis=1)
    assert abs(float(identity_loss(t64(fa), t64(fb))) - np.mean(1 - cos)) < 1e-14


# ----------------------------------------------------------------------------------------------- fitting
@pytest.fixture(scope="module")
def mini():
    return MorphableModel.mini()


def _target(fm, size, with_identity):
    torch.manual_seed(0)
    tgt = torch.cat([fm.compose(1, jaw_open=1.5, smile=1.0), fm.compose(1, brow_raise=1.5, pucker=1.0)])
    g = fm.split(tgt)
    top10 = (torch.arange(80) < 10).float()
    if with_identity:
        g["id"][:] = 0.5 * torch.randn(2, 80) * top10
    g["tex"][:] = 0.5 * torch.randn(2, 80) * top10
    g["angle"][:] = torch.tensor([[0.1, -0.25, 0.05], [-0.15, 0.2, -0.1]])
    g["trans"][:] = torch.tensor([[0.05, -0.04, 0.3], [-0.06, 0.03, -0.2]])
    g["gamma"][:, [0, 9, 18]] = 0.1
    g["gamma"][:, [2, 11, 20]] = 0.15
    with torch.no_grad():
        out = fm(tgt, image_size=size)
        img, _ = render(out, out.camera, size, background=0.3)
    return tgt, img, out.landmarks


def test_fit_recovers_pose_and_expression(mini):
    """Known identity (fit everything else): pose and the named expressions are recovered."""
    size = 64
    tgt, img, lm = _target(mini, size, with_identity=False)
    res = fit(img, mini, landmarks=lm, steps=(60, 440), lr=0.05, progress=False,
              fit_groups=("exp", "tex", "angle", "gamma", "trans"))
    assert type(res) is FitResult and res.coeffs.shape == (2, 257)
    # the reported losses belong to the returned coefficients (and the start to zero coefficients): landmarks and
    # their distance recomputed, the regulariser in numpy, the total as Deep3D's weighted sum of the terms
    with torch.no_grad():
        lm_fit, lm_zero = mini(res.coeffs, image_size=size).landmarks, mini(mini.zeros(2), image_size=size).landmarks
    torch.testing.assert_close(res.landmarks, lm_fit, rtol=0, atol=0)
    assert res.losses["lm_px"] == pytest.approx(float((lm_fit - lm).double().norm(dim=-1).mean()), rel=1e-5)
    assert res.initial_losses["lm_px"] == pytest.approx(float((lm_zero - lm).double().norm(dim=-1).mean()), rel=1e-5)
    c = res.coeffs.double().numpy()
    reg = (np.sum(c[:, SLICES["id"]] ** 2) + 0.8 * np.sum(c[:, SLICES["exp"]] ** 2)
           + 0.017 * np.sum(c[:, SLICES["tex"]] ** 2)) / 2
    assert res.losses["reg"] == pytest.approx(reg, rel=1e-5)
    for losses in (res.losses, res.initial_losses):
        weighted = sum(DEEP3D_WEIGHTS[k] * losses[k] for k in ("color", "lm", "reg", "gamma", "reflc"))
        assert losses["total"] == pytest.approx(weighted, rel=1e-5)
    assert len(res.history["total"]) == 500 and res.history["stage"][0] == "pose"
    assert res.history["stage"][-1] == "all"
    f, g = mini.split(res.coeffs), mini.split(tgt)
    angle_err = (f["angle"] - g["angle"]).abs().max().item()
    trans_err = (f["trans"] - g["trans"]).abs().max().item()
    named = {}
    for b, names in enumerate((("jaw_open", "smile"), ("brow_raise", "pucker"))):
        for name in names:
            v = mini.direction(name)[SLICES["exp"]]
            named[name] = ((f["exp"][b] @ v) / (v @ v)).item()
    with torch.no_grad():
        shape_err = (mini(res.coeffs).shape - mini(tgt).shape).norm(dim=-1).mean().item()
        shape_err0 = (mini(mini.zeros(2)).shape - mini(tgt).shape).norm(dim=-1).mean().item()
    i, e = res.initial_losses, res.losses
    print(f"\nlm_px {i['lm_px']:.3f} -> {e['lm_px']:.4f}; color {i['color']:.4f} -> {e['color']:.4f}; "
          f"angle err {angle_err:.4f} rad; trans err {trans_err:.4f} dm; shape err {shape_err:.5f} dm "
          f"(zero coeffs {shape_err0:.5f}); named exp (truth 1.5, 1, 1.5, 1): {named}")
    assert e["lm_px"] < 0.1 and e["lm_px"] < 0.05 * i["lm_px"]
    assert e["color"] < 0.1 * i["color"]
    assert angle_err < 0.01          # rad (0.6 deg)
    assert trans_err < 0.015         # dm (1.5 mm)
    assert shape_err < 0.1 * shape_err0
    assert abs(named["jaw_open"] - 1.5) < 0.1 and abs(named["brow_raise"] - 1.5) < 0.1
    assert abs(named["pucker"] - 1.0) < 0.25 and abs(named["smile"] - 1.0) < 0.5
    assert res.image.shape == (2, 3, size, size) and res.landmarks.shape == (2, 68, 2)


def test_fit_all_groups_photometric_only_and_custom_renderer(mini):
    """All groups, short run; no landmarks (photometric only); a custom renderer is used."""
    size = 48
    tgt, img, lm = _target(mini, size, with_identity=True)
    calls = []

    def renderer(out, camera, s):
        calls.append(out.faces.shape[0])
        return render(out, camera, s)

    res = fit(img[:1], mini, steps=250, lr=0.05, progress=True, renderer=renderer)
    assert res.stages == (("pose", 30), ("all", 220)) and "lm" not in res.losses
    assert set(calls) == {mini.front_faces.shape[0]}
    assert res.losses["color"] < 0.15 * res.initial_losses["color"]
    angle_err = (mini.split(res.coeffs)["angle"] - mini.split(tgt[:1])["angle"]).abs().max().item()
    print(f"\nphotometric only: color {res.initial_losses['color']:.4f} -> {res.losses['color']:.4f}, "
          f"angle err {angle_err:.4f} rad")
    assert angle_err < 0.03


def test_fit_bad_input(mini):
    img = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"square RGB \[B, 3, S, S\]"):
        fit(torch.rand(1, 3, 32, 40), mini, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        fit(img * 2 - 1, mini, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"landmarks must be \[B=1, 68, 2\]"):
        fit(img, mini, landmarks=torch.zeros(1, 5, 2), steps=1, progress=False)
    with pytest.raises(ValueError, match=r"mask must be \[B=1, 1, 32, 32\]"):
        fit(img, mini, mask=torch.ones(1, 1, 16, 16), steps=1, progress=False)
    with pytest.raises(ValueError, match=r"init must be \[B=1, 257\]"):
        fit(img, mini, init=torch.zeros(1, 256), steps=1, progress=False)
    with pytest.raises(ValueError, match="unknown loss weights"):
        fit(img, mini, steps=1, progress=False, weights={"colour": 1.0})
    with pytest.raises(ValueError, match="unknown coefficient groups"):
        fit(img, mini, steps=1, progress=False, fit_groups=("shape",))


def _no_render(*args):
    raise AssertionError("fit rendered before validating its arguments")


NAN, INF = float("nan"), float("inf")
BAD_ARGS = [  # (keyword arguments, exception, message)
    ({"lr": NAN}, ValueError, "fit: lr must be finite, found nan"),
    ({"lr": INF}, ValueError, "fit: lr must be finite, found inf"),
    ({"lr": 0.0}, ValueError, "fit: lr must be > 0, found 0.0"),
    ({"lr": -0.05}, ValueError, "fit: lr must be > 0, found -0.05"),
    ({"lr": torch.tensor(NAN)}, ValueError, "fit: lr must be finite, found nan"),
    ({"lr": "0.05"}, TypeError, "fit: lr must be a real number, found str '0.05'"),
    ({"lr": True}, TypeError, "fit: lr must be a real number, found bool True"),
    ({"steps": 0}, ValueError, "fit: steps must be >= 1, found 0"),
    ({"steps": -3}, ValueError, "fit: steps must be >= 1, found -3"),
    ({"steps": 10.5}, TypeError, "fit: steps must be an int or (pose_steps, all_steps), found float 10.5"),
    ({"steps": NAN}, TypeError, "fit: steps must be an int or (pose_steps, all_steps), found float nan"),
    ({"steps": "100"}, TypeError, "fit: steps must be an int or (pose_steps, all_steps), found str '100'"),
    ({"steps": (60.7, 440)}, TypeError, "fit: steps[0] (pose steps) must be an int, found float 60.7"),
    ({"steps": (5, NAN)}, TypeError, "fit: steps[1] (all steps) must be an int, found float nan"),
    ({"steps": (-1, 5)}, ValueError, "fit: steps[0] (pose steps) must be >= 0, found -1"),
    ({"steps": (0, 0)}, ValueError, "fit: steps must add up to >= 1, found (0, 0)"),
    ({"steps": (1, 2, 3)}, ValueError, "fit: steps must be an int or (pose_steps, all_steps), found 3 values"),
    ({"weights": {"lm": NAN}}, ValueError, "fit: weights['lm'] must be finite, found nan"),
    ({"weights": {"reg": -INF}}, ValueError, "fit: weights['reg'] must be finite, found -inf"),
    ({"weights": {"color": -1}}, ValueError, "fit: weights['color'] must be >= 0 (a negative weight maximises "
                                             "that loss), found -1.0"),
    ({"weights": {"gamma": None}}, TypeError, "fit: weights['gamma'] must be a real number, found NoneType None"),
    ({"weights": [("lm", 1.0)]}, TypeError, "fit: weights must be a dict of loss weights"),
    ({"fit_groups": "angle"}, TypeError, "fit: fit_groups must be a sequence of group names, found the string "
                                         "'angle' (one group? pass ('angle',))"),
    ({"fit_groups": ()}, ValueError, "fit: fit_groups is empty but the 'all' stage has 440 steps"),
]


@pytest.mark.parametrize("kwargs,error,message", BAD_ARGS, ids=[repr(k) for k, _, _ in BAD_ARGS])
def test_fit_numeric_arguments_are_validated_up_front(mini, kwargs, error, message):
    """Each bad value is refused before any rendering, naming the argument and the value found (lr=nan used to run
    and return NaN coefficients; steps=(60.7, 440) was truncated; a negative weight maximised its loss)."""
    img = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with pytest.raises(error) as err:
        fit(img, mini, progress=False, renderer=_no_render, **kwargs)
    assert str(err.value).startswith(message), str(err.value)


def test_fit_accepts_numeric_argument_types(mini):
    """numpy scalars, 0-d tensors and numpy step pairs are numbers too; zero weights and pose-only runs are valid."""
    img = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    kwargs = dict(lr=np.float32(0.05), steps=(np.int64(2), 0), weights={"color": torch.tensor(0.0), "reg": 1})
    res = fit(img, mini, progress=False, **kwargs)
    assert res.stages == (("pose", 2), ("all", 0)) and len(res.history["total"]) == 2
    assert fit(img, mini, progress=False, steps=np.array([1, 1]), fit_groups=["exp"]).stages == (("pose", 1),
                                                                                                  ("all", 1))
    assert fit(img, mini, progress=False, steps=(1, 0), fit_groups=()).stages == (("pose", 1), ("all", 0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_on_cuda_matches_cpu_start(mini):
    tgt, img, lm = _target(mini, 48, with_identity=False)
    res = fit(img, mini, landmarks=lm, steps=(10, 40), progress=False, device="cuda")
    assert res.coeffs.device.type == "cuda" and mini.mean_shape.device.type == "cpu"  # caller's model untouched
    assert res.losses["lm_px"] < 0.5 * res.initial_losses["lm_px"]
