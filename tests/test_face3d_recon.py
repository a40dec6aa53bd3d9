"""ReconNet (Deep3DFaceRecon regressor: key layout, parameter count, checkpoint loading, small variant) and
the 5-point alignment (POS, PIL path vs differentiable tensor path, landmark mapping and its inverse)."""
import re

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from cddfm3d.face3d.align import (TEMPLATE_5P, align_image, align_landmarks, align_tensor, crop_geometry,
                                  extract_5p, pos, pos_torch, unalign_landmarks)
from cddfm3d.face3d.recon import HEAD_SIZES, ReconCheckpointError, ReconNet


# ----------------------------------------------------------------------------------------------- ReconNet
def _expected_resnet_keys():
    """The 318 backbone keys of torchvision's ResNet-50 without fc, written out from its structure."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"backbone.conv1.weight"} | {f"backbone.bn1.{k}" for k in bn}
    for layer, blocks in zip((1, 2, 3, 4), (3, 4, 6, 3), strict=True):
        for i in range(blocks):
            p = f"backbone.layer{layer}.{i}"
            for j in (1, 2, 3):
                keys.add(f"{p}.conv{j}.weight")
                keys |= {f"{p}.bn{j}.{k}" for k in bn}
            if i == 0:
                keys.add(f"{p}.downsample.0.weight")
                keys |= {f"{p}.downsample.1.{k}" for k in bn}
    return keys


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    net = ReconNet()
    # Randomise the (zero-initialised) heads and the BN statistics so that loading is really tested.
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.startswith("final_layers") or "running" in name:
                t.copy_(torch.rand_like(t) * 0.01 + (1.0 if "running_var" in name else 0.0))
    return net.eval()


def test_key_layout_and_parameter_count(resnet):
    sd = resnet.state_dict()
    assert len(sd) == 332
    backbone = {k for k in sd if k.startswith("backbone.")}
    assert backbone == _expected_resnet_keys() and len(backbone) == 318
    heads = [k for k in sd if k.startswith("final_layers.")]
    assert heads == [f"final_layers.{i}.{p}" for i in range(7) for p in ("weight", "bias")]
    for i, k in enumerate(HEAD_SIZES):
        assert tuple(sd[f"final_layers.{i}.weight"].shape) == (k, 2048, 1, 1)
        assert tuple(sd[f"final_layers.{i}.bias"].shape) == (k,)
    assert tuple(sd["backbone.conv1.weight"].shape) == (64, 3, 7, 7)
    assert tuple(sd["backbone.layer1.0.downsample.0.weight"].shape) == (256, 64, 1, 1)
    assert tuple(sd["backbone.layer4.2.conv3.weight"].shape) == (2048, 512, 1, 1)
    n_backbone = sum(p.numel() for p in resnet.backbone.parameters())
    n_heads = sum(p.numel() for p in resnet.final_layers.parameters())
    assert (n_backbone, n_heads) == (23_508_032, 526_593)


def test_heads_zero_initialised_and_concatenation_order():
    net = ReconNet("small", image_size=32, width=8).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(net(x), torch.zeros(2, 257))
    # Each head writes its own slice, in the order id, exp, tex, angle, gamma, trans xy, trans z.
    with torch.no_grad():
        for i, head in enumerate(net.final_layers):
            head.bias.fill_(float(i + 1))
    out = net(x)[0]
    bounds = np.cumsum((0,) + HEAD_SIZES)
    for i in range(7):
        assert torch.all(out[bounds[i]:bounds[i + 1]] == i + 1)


@pytest.fixture(scope="module")
def fake_ckpt(tmp_path_factory, resnet):
    path = tmp_path_factory.mktemp("deep3d") / "epoch_20.pth"
    sd = resnet.state_dict()
    torch.save({"net_recon": sd, "opt_00": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
                "sched_00": {"step_size": 10, "gamma": 0.2, "last_epoch": 20}, "epoch": 20}, path)
    return path


def test_from_deep3d_loads_strict_and_matches(resnet, fake_ckpt):
    net = ReconNet.from_deep3d(fake_ckpt)
    assert not net.training and net.input_range == "0_1"
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        ref, out = resnet(x), net(x)
    assert ref.abs().max() > 0
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    # The same net fed [-1, 1] images converts internally.
    net.input_range = "-1_1"
    with torch.no_grad():
        torch.testing.assert_close(net(x * 2 - 1), ref, rtol=1e-5, atol=1e-5)


def test_from_deep3d_module_prefix_and_bare_state_dict(resnet, tmp_path):
    sd = resnet.state_dict()
    p = tmp_path / "dp.pth"
    torch.save({"net_recon": {f"module.{k}": v for k, v in sd.items()}}, p)
    ReconNet.from_deep3d(p)
    p2 = tmp_path / "bare.pth"
    torch.save(sd, p2)
    ReconNet.from_deep3d(p2)


def test_from_deep3d_bad_files(resnet, tmp_path):
    sd = dict(resnet.state_dict())
    with pytest.raises(FileNotFoundError, match="epoch_20.pth"):
        ReconNet.from_deep3d(tmp_path / "nope.pth")
    missing = {k: v for k, v in sd.items() if k != "final_layers.3.bias"}
    p = tmp_path / "missing.pth"
    torch.save({"net_recon": missing}, p)
    with pytest.raises(ReconCheckpointError, match=r"missing key.*final_layers\.3\.bias"):
        ReconNet.from_deep3d(p)
    wrong = dict(sd, **{"final_layers.0.weight": torch.zeros(81, 2048, 1, 1)})
    p = tmp_path / "shape.pth"
    torch.save({"net_recon": wrong}, p)
    with pytest.raises(ReconCheckpointError, match=r"final_layers\.0\.weight: expected \(80, 2048, 1, 1\), "
                                                   r"found \(81, 2048, 1, 1\)"):
        ReconNet.from_deep3d(p)
    p = tmp_path / "text.pth"
    p.write_text("this is not a checkpoint")
    with pytest.raises(ReconCheckpointError, match="not a readable PyTorch checkpoint"):
        ReconNet.from_deep3d(p)
    p = tmp_path / "other.pth"
    torch.save({"generator": {"w": torch.zeros(1)}}, p)
    with pytest.raises(ReconCheckpointError, match="no 'net_recon' entry"):
        ReconNet.from_deep3d(p)


def test_small_variant_forward_and_save_load(tmp_path):
    torch.manual_seed(1)
    net = ReconNet(backbone="small", image_size=64, width=16, norm="group")
    assert net.input_range == "-1_1" and net.feature_dim == 128
    with torch.no_grad():
        for p in net.final_layers.parameters():
            p.normal_(0, 0.05)
    net.eval()
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        ref = net(x)
    assert ref.shape == (3, 257)
    path = tmp_path / "recon.safetensors"
    net.save(path)
    assert not (tmp_path / "recon.safetensors.tmp").exists()
    back = ReconNet.load(path)
    assert back.config == net.config == {"backbone": "small", "image_size": 64, "width": 16, "n_stages": 4,
                                         "norm": "group", "input_range": "-1_1"}
    with torch.no_grad():
        torch.testing.assert_close(back(x), ref, rtol=0, atol=0)
    # Gradients flow to the input (the world differentiates through it) and are right: a float64 central
    # difference of a random read-out along a random unit direction (1e-6 stays clear of the ReLU kinks).
    net64 = back.double()
    g = torch.Generator().manual_seed(2)
    w = torch.rand(3, 257, generator=g, dtype=torch.float64)
    direction = torch.randn(x.shape, generator=g, dtype=torch.float64)
    direction /= direction.norm()
    xi = x.double().requires_grad_(True)
    (net64(xi) * w).sum().backward()
    analytic = float((xi.grad * direction).sum())
    eps = 1e-6
    with torch.no_grad():
        numeric = float(((net64(xi + eps * direction) - net64(xi - eps * direction)) * w).sum() / (2 * eps))
    assert abs(analytic) > 1e-3 and analytic == pytest.approx(numeric, rel=1e-6)


def test_small_variant_bad_input_and_files(tmp_path):
    net = ReconNet("small", image_size=32, width=8)
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\].*found shape \(1, 3, 64, 64\)"):
        net(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="floating point"):
        net(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="input_range"):
        ReconNet("small", input_range="0_255")
    with pytest.raises(ValueError, match="backbone"):
        ReconNet("resnet18")
    p = tmp_path / "junk.safetensors"
    p.write_bytes(b"\x00" * 64)
    with pytest.raises(ReconCheckpointError, match="cannot read safetensors"):
        ReconNet.load(p)
    from safetensors.torch import save_file

    p = tmp_path / "other.safetensors"
    save_file({"a": torch.zeros(1)}, str(p), metadata={"format": "something-else"})
    with pytest.raises(ReconCheckpointError, match="'format' is 'something-else'"):
        ReconNet.load(p)


@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(4)
    net = ReconNet("small", image_size=32, width=4).eval()
    with torch.no_grad():
        for p in net.final_layers.parameters():
            p.normal_(0, 0.05)
    return net


def test_value_check_refuses_0_255_floats_nan_and_wrong_range(small_net):
    net = small_net
    g = torch.Generator().manual_seed(5)
    u8 = torch.randint(0, 256, (2, 3, 32, 32), generator=g, dtype=torch.uint8)
    lo, hi = int(u8.min()), int(u8.max())
    # A float image in 0..255: refused with the range found, the dtype, the shape and the conversion.
    with pytest.raises(ValueError, match=rf"values in \[-1, 1\] \(input_range '-1_1'; accepted \[-4, 4\]\), "
                                         rf"found values in \[{lo}, {hi}\] \(found dtype torch.float32, "
                                         r"shape \(2, 3, 32, 32\)\); "
                                         r"this looks like a 0\.\.255 image: pass image / 127\.5 - 1"):
        net(u8.float())
    with pytest.raises(ValueError, match="0..255 image"):
        net.features(u8.float())
    # The suggested conversion is accepted, and the check changes nothing in the result.
    x = u8.float() / 127.5 - 1
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x, check=False), rtol=0, atol=0)
    # check=False lets the hot loops skip the scan (and so lets a wrong range through).
    with torch.no_grad():
        assert net(u8.float(), check=False).shape == (2, 257)
    # uint8 is refused whatever the check, with the conversion for the net's range.
    with pytest.raises(ValueError, match=r"floating point in range -1_1, found torch.uint8 .*image / 127\.5 - 1"):
        net(u8, check=False)
    # Unclamped generator output overshoots [-1, 1] (the shipped mini generator up to about +-2.3): accepted, so
    # that net(G(z)) works.
    with torch.no_grad():
        net(torch.linspace(-2.3, 2.3, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32))
    # NaN and Inf are counted.
    bad = x.clone()
    bad[0, 0, 0, 0], bad[1, 2, 3, 4], bad[1, 0, 5, 5] = float("nan"), float("inf"), -float("inf")
    with pytest.raises(ValueError, match=r"images contain 3 NaN/Inf value\(s\) \(found dtype torch.float32"):
        net(bad)


@pytest.mark.parametrize("input_range, low, high", [("-1_1", -4.0, 4.0), ("0_1", -0.5, 1.5)])
def test_value_check_accepts_exactly_its_bounds(input_range, low, high):
    """ACCEPTED_VALUES is the boundary: values on it pass, 1 % of the range's width beyond either bound fails."""
    from cddfm3d.face3d.recon import ACCEPTED_VALUES

    assert ACCEPTED_VALUES[input_range] == (low, high)
    net = ReconNet("small", image_size=16, width=2, input_range=input_range).eval()
    eps = 0.01 * (high - low)
    ramp = torch.linspace(0, 1, 16 * 16 * 3, dtype=torch.float64).reshape(1, 3, 16, 16)
    with torch.no_grad():
        net(low + ramp * (high - low))                                # on both bounds
        for below, above in ((eps, 0.0), (0.0, eps)):                 # just outside one bound
            x = low - below + ramp * (high - low + below + above)
            with pytest.raises(ValueError, match=f"found values in \\[{low - below:.4g}, {high + above:.4g}\\]"):
                net(x)


def test_value_check_names_the_fix_for_a_0_1_net():
    net = ReconNet("small", image_size=16, width=2, input_range="0_1").eval()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    with pytest.raises(ValueError, match=r"\[-1, 1\] image: pass \(image \+ 1\) / 2, or set net.input_range = '-1_1'"):
        net(x * 2 - 1)
    with pytest.raises(ValueError, match=r"0\.\.255 image: pass image / 255$"):
        net(x * 255)
    with torch.no_grad():
        net(x * 1.3 - 0.15)     # generator output overshooting [0, 1] is accepted
    with pytest.raises(ValueError, match=r"rescale the images to \[0, 1\]"):
        net(x * 20 - 10)
    with pytest.raises(ValueError, match=r"found torch.uint8 \(for uint8 images in 0\.\.255 pass image / 255\)"):
        net((x * 255).to(torch.uint8))


@pytest.mark.parametrize("shape, hint", [((3, 16, 16), r"images\[None\]"),
                                         ((2, 16, 16, 3), r"images\.permute\(0, 3, 1, 2\)"),
                                         ((2, 1, 16, 16), r"images\.expand\(-1, 3, -1, -1\)"),
                                         ((2, 4, 16, 16), r"images\[:, :3\]"),
                                         ((2, 3, 20, 16), r"resize or align the images to 16 x 16")])
def test_shape_errors_name_the_layout_fix(shape, hint):
    net = ReconNet("small", image_size=16, width=2).eval()
    with pytest.raises(ValueError, match=rf"\[B, 3, 16, 16\] \(RGB, range -1_1\), found shape "
                                         rf"{re.escape(str(shape))}; .*{hint}"):
        net(torch.zeros(shape), check=False)


# ----------------------------------------------------------------------------------------------- alignment
def test_extract_5p():
    lm = np.random.default_rng(0).normal(size=(68, 2))
    five = extract_5p(lm)
    np.testing.assert_allclose(five[0], (lm[36] + lm[39]) / 2)
    np.testing.assert_allclose(five[1], (lm[42] + lm[45]) / 2)
    np.testing.assert_allclose(five[2:], lm[[30, 48, 54]])
    torch.testing.assert_close(extract_5p(torch.from_numpy(lm)[None])[0], torch.from_numpy(five))
    with pytest.raises(ValueError, match=r"\[\.\.\., 68, 2\]"):
        extract_5p(np.zeros((5, 2)))


def test_pos_recovers_known_transform_exactly():
    rng = np.random.default_rng(3)
    for _ in range(20):
        rot = Rotation.from_euler("xyz", rng.uniform(-0.5, 0.5, 3)).as_matrix()
        s, t = rng.uniform(30, 300), rng.uniform(-100, 400, 2)
        pts = s * (TEMPLATE_5P @ rot.T)[:, :2] + t       # scaled orthographic projection
        t_fit, s_fit = pos(pts)
        np.testing.assert_allclose(t_fit, t, rtol=0, atol=1e-9)
        assert abs(s_fit - s) < 1e-9 * s
        t_torch, s_torch = pos_torch(torch.from_numpy(pts)[None])
        np.testing.assert_allclose(t_torch[0].numpy(), t, rtol=0, atol=1e-8)
        assert abs(float(s_torch[0]) - s) < 1e-9 * s


def _smooth_image(h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([128 + 100 * np.sin(xx / 17.0 + c) * np.cos(yy / 23.0 - c) for c in range(3)],
                    -1).astype(np.uint8)


def _landmarks_for(scale, h, t=(130.0, 160.0), angles=(0.0, 0.0, 0.0)):
    """5 points (y down) of the template seen at ``scale`` px/dm with its origin at ``t`` (y up)."""
    rot = Rotation.from_euler("xyz", angles).as_matrix()
    up = scale * (TEMPLATE_5P @ rot.T)[:, :2] + np.asarray(t)
    return np.stack([up[:, 0], h - 1 - up[:, 1]], -1)


def test_align_image_geometry_and_inverse():
    h, w = 301, 263
    img = _smooth_image(h, w)
    lm5 = _landmarks_for(150.3, h)
    a = align_image(img, lm5, mask=np.full((h, w), 255, np.uint8))
    np.testing.assert_allclose(a.trans_params, [w, h, 102 / 150.3, 130.0, 160.0], rtol=1e-12, atol=1e-9)
    assert a.image.size == (224, 224) and a.mask.size == (224, 224)
    # The template lands at 102 px/dm around the centre (up to Deep3D's int truncations).
    expected = np.stack([102 * TEMPLATE_5P[:, 0] + 112, 223 - (102 * TEMPLATE_5P[:, 1] + 112)], -1)
    assert np.abs(a.landmarks - expected).max() < 1.5
    np.testing.assert_allclose(unalign_landmarks(a.landmarks, a.trans_params), lm5, atol=1e-9)
    np.testing.assert_allclose(align_landmarks(lm5, a.trans_params), a.landmarks, atol=1e-12)
    # 68 points: the 5 are extracted, all 68 are transformed.
    lm68 = np.random.default_rng(0).uniform(50, 250, (68, 2))
    lm68[[36, 39]], lm68[[42, 45]] = lm5[0], lm5[1]
    lm68[[30, 48, 54]] = lm5[2:]
    a68 = align_image(Image.fromarray(img), lm68)
    np.testing.assert_allclose(a68.trans_params, a.trans_params, atol=1e-9)
    assert a68.landmarks.shape == (68, 2)
    # Batched torch inverse.
    back = unalign_landmarks(torch.from_numpy(a68.landmarks)[None], a68.trans_params[None])
    np.testing.assert_allclose(back[0].numpy(), lm68, atol=1e-9)
    with pytest.raises(ValueError, match=r"\[\.\.\., 5, 2\] or \[\.\.\., 68, 2\]"):
        align_image(img, np.zeros((7, 2)))


def _directional_check(f, x, eps):
    """(analytic, numeric) derivative of the scalar ``f`` at float64 ``x`` along a random unit direction: autograd
    against a central difference."""
    g = torch.Generator().manual_seed(7)
    direction = torch.randn(x.shape, generator=g, dtype=torch.float64)
    direction /= direction.norm()
    xi = x.detach().clone().requires_grad_(True)
    f(xi).backward()
    analytic = float((xi.grad * direction).sum())
    with torch.no_grad():
        numeric = float((f(x + eps * direction) - f(x - eps * direction)) / (2 * eps))
    return analytic, numeric


@pytest.mark.parametrize("scale", [150.3, 61.7])  # shrink (s' = 0.68, antialiased) and enlarge (s' = 1.65)
def test_tensor_path_matches_pil(scale):
    h, w = 301, 263
    img = _smooth_image(h, w)
    lm5 = _landmarks_for(scale, h, angles=(0.1, -0.2, 0.15))
    ref = align_image(img, lm5)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    out, lm, tp = align_tensor(x, torch.from_numpy(lm5)[None].float())
    diff = (out.clamp(0, 1) - ref.tensor()).abs()
    print(f"scale {scale}: PIL vs grid_sample mean {diff.mean():.2e} max {diff.max():.2e}")
    assert diff.mean() < 3e-3 and diff.max() < 2e-2           # interpolation-kernel differences only
    np.testing.assert_allclose(lm[0].double().numpy(), ref.landmarks, atol=1e-4)
    np.testing.assert_allclose(tp[0].double().numpy(), ref.trans_params, rtol=1e-6)
    # Continuous geometry: close to the exact crop.
    lmt = torch.from_numpy(lm5)[None].float()
    cont, lmc, _ = align_tensor(x, lmt, exact=False)
    assert (cont.clamp(0, 1) - ref.tensor()).abs().mean() < 2e-2
    assert (lmc[0].detach().double().numpy() - ref.landmarks).__abs__().max() < 1.5
    # Gradients of a random read-out against float64 central differences: w.r.t. the pixels (with clamp=False the
    # crop is linear in them, so the difference is exact up to rounding; the default clamp to the input's range is
    # piecewise linear, tested in test_bad_input_face3d.py) and, for the continuous geometry, w.r.t. the landmarks.
    weights = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x64, lm64 = x.double(), torch.from_numpy(lm5)[None]
    analytic, numeric = _directional_check(lambda xi: (align_tensor(xi, lm64, clamp=False)[0] * weights).sum(), x64,
                                           eps=1e-3)
    assert abs(analytic) > 1e-3 and analytic == pytest.approx(numeric, rel=1e-7)
    analytic, numeric = _directional_check(lambda li: (align_tensor(x64, li, exact=False)[0] * weights).sum(),
                                           lm64, eps=1e-5)
    print(f"scale {scale}: landmark derivative {analytic:.6g} vs central difference {numeric:.6g}")
    assert abs(analytic) > 1e-1 and analytic == pytest.approx(numeric, rel=1e-6)


def test_crop_geometry_truncates_like_deep3d():
    w, h, left, up = crop_geometry([263, 301, 0.5, 10.0, 20.0], 224)
    assert (w, h) == (131, 150)
    assert left == int(131 / 2 - 112 + (10 - 263 / 2) * 0.5) and up == int(150 / 2 - 112 + (301 / 2 - 20) * 0.5)
