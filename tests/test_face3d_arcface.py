"""ArcFace (cddfm3d.face3d.arcface): the IResNet's parameter names and size against the architecture's rule, depth
inference and strict loading, the similarity alignment against float64 least squares, the differentiable crop
against a direct render, and the recognizer inside PIE. Random weights (r18 except one r100 check)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cddfm3d.face3d.arcface import (ARCFACE_TEMPLATE_112, ArcFaceRecognizer, IResNet, infer_layers, load_arcface,
                                    similarity_transform)

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
WIDTHS = (64, 128, 256, 512)


def _expected_keys(layers) -> list[str]:
    """arcface_torch's state-dict keys of an IResNet with ``layers`` blocks per stage, from the architecture rule."""
    keys = ["conv1.weight", *(f"bn1.{k}" for k in BN), "prelu.weight"]
    for stage, n in enumerate(layers, 1):
        for b in range(n):
            p = f"layer{stage}.{b}."
            keys += [f"{p}bn1.{k}" for k in BN] + [f"{p}conv1.weight"] + [f"{p}bn2.{k}" for k in BN]
            keys += [f"{p}prelu.weight", f"{p}conv2.weight"] + [f"{p}bn3.{k}" for k in BN]
            if b == 0:  # every stage starts with a stride-2 block
                keys += [f"{p}downsample.0.weight"] + [f"{p}downsample.1.{k}" for k in BN]
    keys += [f"bn2.{k}" for k in BN] + ["fc.weight", "fc.bias"] + [f"features.{k}" for k in BN]
    return keys


def _expected_params(layers) -> int:
    """Trainable-shaped parameter count (batch-norm weight + bias, PReLU slopes, convs without bias, fc)."""
    n = 3 * 64 * 9 + 2 * 64 + 64
    cin = 64
    for width, blocks in zip(WIDTHS, layers, strict=True):
        for b in range(blocks):
            i = cin if b == 0 else width
            n += 2 * i + i * width * 9 + 2 * width + width + width * width * 9 + 2 * width
            if b == 0:
                n += i * width + 2 * width
        cin = width
    return n + 2 * 512 + 512 * 7 * 7 * 512 + 512 + 2 * 512


def _random_stats(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial batch-norm statistics and PReLU slopes, so that loading really changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return net.eval()


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    return _random_stats(IResNet("r18"), 1)


def test_r100_keys_parameter_count_and_output_shape():
    torch.manual_seed(0)
    net = IResNet("r100").eval()
    keys = list(net.state_dict())
    expected = _expected_keys((3, 13, 30, 3))
    assert keys == expected
    assert keys[0] == "conv1.weight" and keys[-1] == "features.num_batches_tracked"
    n = sum(p.numel() for p in net.parameters())
    assert n == _expected_params((3, 13, 30, 3)) and 65.1e6 < n < 65.2e6
    assert not net.features.weight.requires_grad and torch.equal(net.features.weight, torch.ones(512))
    assert all(m.eps == 1e-5 for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    with torch.no_grad():
        y = net(torch.rand(1, 3, 112, 112) * 2 - 1)
    assert y.shape == (1, 512) and torch.isfinite(y).all()
    with pytest.raises(ValueError, match=r"expected crops \[B, 3, 112, 112\], found \(1, 3, 64, 64\)"):
        net(torch.zeros(1, 3, 64, 64))


def test_depth_is_inferred_from_a_saved_state_dict(tmp_path, r18):
    torch.manual_seed(2)
    r50 = _random_stats(IResNet("r50"), 3)
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    for name, net, half in (("r18", r18, False), ("r50", r50, True)):
        path = tmp_path / f"{name}.pth"
        sd = net.state_dict()
        if half:  # arcface_torch's *_fp16 models may hold float16 tensors: the loader upcasts them
            sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
        torch.save(sd, path)
        rec = load_arcface(path)
        assert rec.net.layers == tuple(len({k.split(".")[1] for k in sd if k.startswith(f"layer{s}.")})
                                       for s in range(1, 5))
        assert infer_layers(sd) == {"r18": (2, 2, 2, 2), "r50": (3, 4, 14, 3)}[name]
        with torch.no_grad():
            ref = net.half().float()(x) if half else net(x)
            assert torch.allclose(rec.net(x), ref, atol=1e-4, rtol=1e-4)
    # DistributedDataParallel's "module." prefix is accepted
    wrapped = {f"module.{k}": v for k, v in r18.state_dict().items()}
    assert ArcFaceRecognizer.from_state_dict(wrapped).net.layers == (2, 2, 2, 2)


def test_a_tampered_state_dict_is_refused_naming_the_file_and_keys(r18):
    sd = dict(r18.state_dict())
    sd["layer2.1.conv2.weigth"] = sd.pop("layer2.1.conv2.weight")
    with pytest.raises(ValueError, match=r"backbone\.pth: .*missing keys \['layer2\.1\.conv2\.weight'\].*"
                                         r"unexpected keys \['layer2\.1\.conv2\.weigth'\]"):
        IResNet.from_state_dict(sd, "backbone.pth")
    sd = dict(r18.state_dict())
    sd["fc.weight"] = torch.zeros(512, 100)
    with pytest.raises(ValueError, match=r"wrong shapes \['fc\.weight: expected \[512, 25088\], found \[512, 100\]'"):
        IResNet.from_state_dict(sd, "backbone.pth")
    sd = {k: v for k, v in r18.state_dict().items() if not k.startswith("layer3.")}
    with pytest.raises(ValueError, match=r"x\.pth: .*stage layer3 has block indices \[\]"):
        infer_layers(sd, "x.pth")
    with pytest.raises(ValueError, match=r"y\.pth: expected tensors"):
        IResNet.from_state_dict({"conv1.weight": 1.0}, "y.pth")
    # counters missing from an old file are tolerated (unused in eval mode)
    sd = {k: v for k, v in r18.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert IResNet.from_state_dict(sd).layers == (2, 2, 2, 2)


def _similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty], [0, 0, 1.0]])


def _apply(m: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p @ m[:2, :2].T + m[:2, 2]


def test_similarity_is_the_least_squares_solution():
    rng = np.random.default_rng(0)
    for _ in range(5):
        src = rng.uniform(0, 200, (5, 2))
        dst = ARCFACE_TEMPLATE_112 + rng.normal(0, 3, (5, 2))
        # independent reference: dst = [[a, -b], [b, a]] @ src + t is linear in (a, b, tx, ty)
        A = np.zeros((10, 4))
        A[0::2] = np.c_[src[:, 0], -src[:, 1], np.ones(5), np.zeros(5)]
        A[1::2] = np.c_[src[:, 1], src[:, 0], np.zeros(5), np.ones(5)]
        a, b, tx, ty = np.linalg.lstsq(A, dst.reshape(-1), rcond=None)[0]
        m = similarity_transform(src, dst)
        np.testing.assert_allclose(m, [[a, -b, tx], [b, a, ty], [0, 0, 1]], rtol=1e-9, atol=1e-9)
    known = _similarity(0.37, -0.6, 12.5, -4.0)
    src = rng.uniform(-50, 300, (5, 2))
    np.testing.assert_allclose(similarity_transform(src, _apply(known, src)), known, atol=1e-12)
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), ARCFACE_TEMPLATE_112)


def _pattern(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A smooth colour image over crop coordinates (pixels of the 112 crop), [3, ...] in [-1, 1]."""
    return np.stack([0.8 * np.sin(2 * np.pi * u / 40 + c) * np.cos(2 * np.pi * v / 50 - c) for c in range(3)])


@pytest.mark.parametrize("px_per_crop_px", [1.5, 4.0])    # magnified; shrunk 4x (box prefilter, then bilinear)
def test_the_crop_equals_a_direct_render_of_the_aligned_face(r18, px_per_crop_px):
    to_crop = _similarity(1 / px_per_crop_px, 0.3, -20.0, 15.0)         # source px -> crop px
    side = int(np.ceil(112 * px_per_crop_px * 1.45)) + 40
    to_crop[:2, 2] += 56 - _apply(to_crop, np.array([side / 2, side / 2]))  # crop centre at the image centre
    y, x = np.mgrid[0:side, 0:side].astype(np.float64)
    q = _apply(to_crop, np.stack([x, y], -1))
    image = torch.from_numpy(_pattern(q[..., 0], q[..., 1])).float()[None]
    points = _apply(np.linalg.inv(to_crop), ARCFACE_TEMPLATE_112)        # the face's 5 points in the image
    rec = ArcFaceRecognizer(r18)
    np.testing.assert_allclose(rec.transforms(points, 1, side, side)[0], to_crop, atol=1e-9)
    crop = rec.crop(image, torch.from_numpy(points))[0].numpy()
    v, u = np.mgrid[0:112, 0:112].astype(np.float64)
    direct = _pattern(u, v)
    assert np.abs(crop - direct).max() < 0.006          # a half-pixel shift gives 0.063
    # default points: the frontal FFHQ points of the image size
    from cddfm3d.editing.labels import ffhq_template_5p
    assert torch.equal(rec.crop(image), rec.crop(image, ffhq_template_5p(side, side)))


def test_features_are_unit_length_per_image_and_differentiable_inside_the_crop_only(r18):
    rec = ArcFaceRecognizer(r18)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 160, 160, generator=g) * 2 - 1
    to_crop = [_similarity(1.0, 0.2, 10.0, -5.0), _similarity(0.8, -0.1, 0.0, 0.0), _similarity(0.3, 0.0, 30, 40)]
    points = np.stack([_apply(np.linalg.inv(m), ARCFACE_TEMPLATE_112) for m in to_crop])
    f = rec(images, points)
    assert f.shape == (3, 512) and f.dtype == torch.float32
    torch.testing.assert_close(f.norm(dim=1), torch.ones(3))
    separate = torch.cat([rec(images[i:i + 1], points[i]) for i in range(3)])
    torch.testing.assert_close(f, separate, atol=1e-5, rtol=1e-5)
    rec.train()
    assert not rec.net.training                                           # fixed batch-norm statistics
    x = images[:1].clone().requires_grad_(True)
    rec(x, points[0]).sum().backward()
    grad = x.grad[0].abs().sum(0).numpy()
    y, xx = np.mgrid[0:160, 0:160].astype(np.float64)
    q = _apply(to_crop[0], np.stack([xx, y], -1))
    inside = ((q >= 1) & (q <= 110)).all(-1)
    far = ((q < -2) | (q > 113)).any(-1)
    assert inside.sum() > 5000 and far.sum() > 3000
    assert (grad[inside] > 0).mean() > 0.95
    assert (grad[far] == 0).all()
    with pytest.raises(ValueError, match=r"points must be finite \[5, 2\] or \[B=1, 5, 2\].*found shape \[4, 2\]"):
        rec(images[:1], np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"images must be float \[B, 3, H, W\]"):
        rec(images[0])


def test_load_arcface_uses_the_real_asset(tmp_path, monkeypatch, r18):
    from cddfm3d.assets import AssetError
    config = tmp_path / "config.toml"
    config.write_text("[real]\n")
    monkeypatch.setenv("CDDFM3D_CONFIG", str(config))
    monkeypatch.delenv("CDDFM3D_ARCFACE", raising=False)
    with pytest.raises(AssetError, match=r"real/arcface: .*CDDFM3D_ARCFACE.*arcface_torch"):
        load_arcface()
    path = tmp_path / "backbone.pth"
    torch.save(r18.state_dict(), path)
    monkeypatch.setenv("CDDFM3D_ARCFACE", str(path))
    rec = load_arcface()
    assert isinstance(rec, ArcFaceRecognizer) and rec.net.layers == (2, 2, 2, 2) and not rec.net.training
    x = torch.rand(1, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(rec.net(x), r18(x))
    with pytest.raises(FileNotFoundError, match="nowhere.pth is not a file"):
        load_arcface(tmp_path / "nowhere.pth")


def test_the_recognizer_drives_pie_recognition(r18):
    from cddfm3d import assets
    from cddfm3d.adapt import pie_embed
    from cddfm3d.world import render, sample_coeffs

    G = assets.load("mini/generator").eval()
    images = render(sample_coeffs(1, seed=5), "human", G.resolution, seed=5).float()
    rec = ArcFaceRecognizer(r18)
    r = pie_embed(G, images, steps=2, recognizer=rec, n_stats=200, progress=False,
                  weights={"identity": 0, "edit": 0, "invariance": 0, "recognition": 1.0})
    e = r.energies["recognition"]
    assert e.shape == (2, 1) and torch.isfinite(e).all()
    assert ((e > 0) & (e <= 4)).all()                                  # 2 (1 - cos) of unit vectors
