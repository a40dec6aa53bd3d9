"""cddfm3d.adapt.project: the StyleGAN2 projector in W, W+ and S, its schedules, regulariser and perceptual choice."""
from __future__ import annotations

import math

import pytest
import torch

from cddfm3d.adapt import ProjectionResult, project
from cddfm3d.adapt.perceptual import LPIPSDistance, ReconFeatureDistance, choose_perceptual
from cddfm3d.adapt.projection import (latent_noise_scale, lr_schedule, noise_regularization, normalize_noise_,
                                      w_statistics)
from cddfm3d.face3d.recon import ReconNet
from cddfm3d.stylegan2 import Generator

SPACES = ("w", "w+", "s")


@pytest.fixture(scope="module")
def tiny():
    """A 16-px generator with non-zero noise strengths (so the noise maps matter), its samples and a small
    reconstruction-feature distance at 16 px (random weights, eval-mode batch norm)."""
    torch.manual_seed(0)
    G = Generator(resolution=16, z_dim=16, w_dim=16, mapping_layers=2, channels={4: 16, 8: 16, 16: 8}).eval()
    with torch.no_grad():
        for m in G.synthesis_network._layer_modules:
            if not m.is_torgb:
                m.noise_strength.fill_(0.3)
    torch.manual_seed(1)
    net = ReconNet("small", image_size=16, width=8)
    dist = ReconFeatureDistance(net)
    with torch.no_grad():
        imgs = G(torch.randn(2, 16, generator=torch.Generator().manual_seed(3)), noise="random").clamp(-1, 1)
    return G, dist, imgs


def _resynth(G, r: ProjectionResult) -> torch.Tensor:
    with torch.no_grad():
        return G.synthesis_from_styles(G.unflatten_styles(r.styles), noise=r.noise).clamp(-1, 1)


@pytest.mark.parametrize("space", SPACES)
def test_result_shapes_and_image_is_the_resynthesis(tiny, space):
    G, dist, imgs = tiny
    r = project(G, imgs, space, steps=6, perceptual=dist, progress=False)
    B = len(imgs)
    assert r.ws.shape == (B, G.num_ws, G.w_dim) and r.styles.shape == (B, G.style_dim)
    assert [tuple(n.shape) for n in r.noise] == [(B, 1, m.resolution, m.resolution) for m in G.style_layers
                                                 if not m.is_torgb]
    assert r.image.shape == imgs.shape and r.image.abs().max() <= 1
    torch.testing.assert_close(r.image, _resynth(G, r), rtol=0, atol=1e-6)
    assert r.space == space and r.perceptual == dist.name and r.steps == 6
    assert all(p.grad is None for p in (*G.parameters(), *dist.parameters()))  # only the latent and noise trained
    for key in ("loss", "perceptual", "mse", "noise_reg"):
        assert r.history[key].shape == (6, B)
    # the reported numbers are those of the returned image
    mse = (r.image - imgs).square().mean((1, 2, 3))
    torch.testing.assert_close(r.mse, mse)
    torch.testing.assert_close(r.psnr, 10 * torch.log10(4 / mse))
    torch.testing.assert_close(r.perceptual_distance, dist(r.image, imgs))
    # noise maps are renormalised: zero mean, unit mean square per image
    for n in r.noise:
        torch.testing.assert_close(n.mean((1, 2, 3)), torch.zeros(B), atol=1e-5, rtol=0)
        torch.testing.assert_close(n.square().mean((1, 2, 3)), torch.ones(B), atol=1e-5, rtol=0)
    with torch.no_grad():
        styles_of_ws = G.flatten_styles(G.w_to_styles(r.ws))
    mean_w, _ = w_statistics(G)
    if space == "w":
        assert torch.equal(r.ws, r.ws[:, :1].expand_as(r.ws))       # one w in every layer
        torch.testing.assert_close(r.styles, styles_of_ws)
        assert not torch.allclose(r.ws[:, 0], mean_w.expand(B, -1))  # it moved
    elif space == "w+":
        torch.testing.assert_close(r.styles, styles_of_ws)
        assert not torch.equal(r.ws[:, 0], r.ws[:, -1])              # layers move independently
    else:
        torch.testing.assert_close(r.ws, mean_w.expand(B, G.num_ws, -1))  # the start
        assert (r.styles - styles_of_ws).abs().max() > 1e-3            # s itself was optimised


def test_projecting_a_generator_sample_recovers_it():
    """The shipped mini generator's own sample: the loss falls and the PSNR ends well above the start's (the mean-w
    image's, from the run's own first step)."""
    from cddfm3d import assets

    G = assets.load("mini/generator")
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        torch.manual_seed(11)
        target = G(torch.randn(1, G.z_dim, generator=g), noise="random").clamp(-1, 1)
    r = project(G, target, "w+", steps=40, progress=False)
    h = r.history
    start_psnr = 10 * math.log10(4 / float(h["mse"][0, 0]))
    assert float(h["perceptual"][-5:].mean()) < 0.5 * float(h["perceptual"][:5].mean())
    assert float(h["loss"][-1, 0]) < float(h["loss"][0, 0])
    assert float(r.psnr[0]) > start_psnr + 6.0, (float(r.psnr[0]), start_psnr)


def _brute_noise_reg(maps: list[torch.Tensor]) -> list[float]:
    """Independent float64 loops: circular one-pixel autocorrelations along x and y, squared, at every scale down
    to 8 x 8 (2x2 block means between scales)."""
    B = maps[0].shape[0]
    out = []
    for b in range(B):
        total = 0.0
        for m in maps:
            x = m[b, 0].double().tolist()
            while True:
                s = len(x)
                ax = sum(x[i][j] * x[i][(j - 1) % s] for i in range(s) for j in range(s)) / (s * s)
                ay = sum(x[i][j] * x[(i - 1) % s][j] for i in range(s) for j in range(s)) / (s * s)
                total += ax * ax + ay * ay
                if s <= 8:
                    break
                x = [[(x[2 * i][2 * j] + x[2 * i + 1][2 * j] + x[2 * i][2 * j + 1] + x[2 * i + 1][2 * j + 1]) / 4
                      for j in range(s // 2)] for i in range(s // 2)]
        out.append(total)
    return out


def test_noise_regularizer_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(2, 1, r, r, generator=g, dtype=torch.float64) for r in (4, 8, 16, 32)]
    # a smooth map has a large autocorrelation: the regulariser must see it at the coarse scales too
    maps.append(torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64).repeat_interleave(8, 2)
                .repeat_interleave(8, 3))
    got = noise_regularization(maps)
    assert got.shape == (2,)
    torch.testing.assert_close(got, torch.tensor(_brute_noise_reg(maps), dtype=torch.float64), rtol=1e-10, atol=0)
    normalize_noise_(maps)
    for m in maps:
        torch.testing.assert_close(m.mean((1, 2, 3)), torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
        torch.testing.assert_close(m.square().mean((1, 2, 3)), torch.ones(2, dtype=torch.float64))


def test_lr_schedule_and_latent_noise_follow_their_formulas(tiny):
    for t in torch.linspace(0, 0.999, 101).tolist():
        # piecewise form: linear ramp-up to t = 0.05, flat, then lr sin^2(pi (1 - t) / 0.5) after t = 0.75
        expected = 0.1 * min(1.0, t / 0.05) * (1.0 if t <= 0.75 else math.sin(math.pi * (1 - t) / 0.5) ** 2)
        assert lr_schedule(t) == pytest.approx(expected, abs=1e-12)
        assert latent_noise_scale(t, 2.0) == pytest.approx(2.0 * 0.05 * max(0.0, 1 - t / 0.75) ** 2, abs=1e-15)
    assert latent_noise_scale(0.8, 5.0) == 0.0
    G, dist, imgs = tiny
    r = project(G, imgs[:1], "w", steps=20, perceptual=dist, lr=0.05, progress=False)
    torch.testing.assert_close(r.history["lr"], torch.tensor([lr_schedule(k / 20, 0.05) for k in range(20)],
                                                             dtype=torch.float64))


def test_w_statistics_against_samples(tiny):
    G, _, _ = tiny
    mean, sigma = w_statistics(G, n=3000, seed=5)
    with torch.no_grad():
        w = G.mapping(torch.randn(3000, G.z_dim, generator=torch.Generator().manual_seed(5))).double()
    torch.testing.assert_close(mean.double(), w.mean(0), atol=1e-5, rtol=0)
    assert sigma == pytest.approx(float((w - w.mean(0)).square().sum(1).mean().sqrt()), rel=1e-5)


@pytest.mark.parametrize("space", SPACES)
def test_batch_equals_separate_projections(tiny, space):
    G, dist, imgs = tiny
    both = project(G, imgs, space, steps=8, perceptual=dist, seed=5, progress=False)
    for i, seed in enumerate((5, 6)):
        one = project(G, imgs[i:i + 1], space, steps=8, perceptual=dist, seed=seed, progress=False)
        torch.testing.assert_close(one.styles[0], both.styles[i], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(one.ws[0], both.ws[i], atol=2e-5, rtol=1e-4)
        for a, b in zip(one.noise, both.noise, strict=True):
            torch.testing.assert_close(a[0], b[i], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(one.image[0], both.image[i], atol=2e-5, rtol=1e-4)
    assert both.seeds == [5, 6]


def test_deterministic_given_a_seed(tiny):
    G, dist, imgs = tiny
    a, b, c = (project(G, imgs[:1], "w+", steps=5, perceptual=dist, seed=s, progress=False) for s in (1, 1, 2))
    assert torch.equal(a.styles, b.styles) and all(torch.equal(x, y) for x, y in zip(a.noise, b.noise, strict=True))
    assert not torch.equal(a.styles, c.styles)


def test_init_ws_starts_the_projection(tiny):
    G, dist, imgs = tiny
    start = project(G, imgs[:1], "w+", steps=10, perceptual=dist, progress=False)
    r = project(G, imgs[:1], "s", steps=4, perceptual=dist, init_ws=start.ws, progress=False)
    torch.testing.assert_close(r.ws, start.ws)
    assert float(r.history["mse"][0, 0]) < float(start.history["mse"][0, 0])


def _no_vgg(monkeypatch, tmp_path):
    """No configured VGG16 file: no env var, an empty config file, an empty torch hub folder."""
    monkeypatch.delenv("CDDFM3D_VGG16", raising=False)
    cfg = tmp_path / "config.toml"
    cfg.write_text("")
    monkeypatch.setenv("CDDFM3D_CONFIG", str(cfg))
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))
    return hub


def test_perceptual_falls_back_to_the_world_distance_without_vgg(monkeypatch, tmp_path, tiny):
    _no_vgg(monkeypatch, tmp_path)
    assert choose_perceptual("auto").name == "recon-features(mini/recon)"
    G, _, imgs = tiny
    r = project(G, imgs[:1], "w", steps=2, progress=False)   # 16-px images, resized to the 64-px network
    assert r.perceptual == "recon-features(mini/recon)"
    with pytest.raises(Exception, match="real/vgg16"):
        choose_perceptual("lpips")


@pytest.mark.filterwarnings("ignore:.*(pretrained|weights).*:UserWarning")  # lpips's torchvision call
def test_perceptual_uses_lpips_when_vgg16_weights_are_in_the_hub_cache(monkeypatch, tmp_path, tiny):
    import lpips
    from torchvision.models.vgg import cfgs, make_layers

    hub = _no_vgg(monkeypatch, tmp_path)
    torch.manual_seed(4)
    state = {f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}  # torchvision's layout
    torch.save(state, hub / "checkpoints" / "vgg16-397923af.pth")
    dist = choose_perceptual("auto")
    assert isinstance(dist, LPIPSDistance) and dist.name == "lpips-vgg"
    assert torch.equal(dist.trunk.slice5.get_submodule("28").weight, state["features.28.weight"])
    assert torch.equal(dist.trunk.slice1.get_submodule("0").bias, state["features.0.bias"])
    # the split prepare/distance equals the lpips package's own forward with the same trunk (64 px: no resizing)
    ref = lpips.LPIPS(pretrained=True, net="vgg", pnet_rand=True, verbose=False).eval()
    ref.net.load_state_dict({f"slice{s}.{k.split('.')[1]}.{k.split('.')[2]}": v for k, v in state.items()
                             for s in [1 + sum(int(k.split('.')[1]) >= b for b in (4, 9, 16, 23))]
                             if int(k.split('.')[1]) < 30})
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1, torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(dist(x, y), ref(x, y).flatten(), rtol=1e-4, atol=1e-6)
        assert float(dist(x, x).abs().max()) == 0.0
    assert dist.working_size(16) == 64 and dist.working_size(1024) == 256 and dist.working_size(128) == 128
    G, _, imgs = tiny
    r = project(G, imgs[:1], "w+", steps=2, progress=False)
    assert r.perceptual == "lpips-vgg"


def test_recon_feature_distance_against_hooked_features():
    """LPIPS-baseline formula on the small backbone, recomputed in float64 from forward hooks on the activations
    entering each stride-2 convolution and the last one."""
    torch.manual_seed(2)
    net = ReconNet("small", image_size=32, width=4).eval()
    dist = ReconFeatureDistance(net)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1, torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    mods = list(net.backbone.features)
    taps = [i - 1 for i, m in enumerate(mods) if isinstance(m, torch.nn.Conv2d) and m.stride[0] == 2] + [len(mods) - 1]

    def feats(img):
        out = {}
        hooks = [mods[i].register_forward_hook(lambda _m, _i, o, i=i: out.__setitem__(i, o.double().clone()))
                 for i in taps]
        with torch.no_grad():
            net.backbone(img)
        for h in hooks:
            h.remove()
        return [out[i] for i in taps]

    expected = torch.zeros(3, dtype=torch.float64)
    for a, b in zip(feats(x), feats(y), strict=True):
        a, b = a / (a.norm(dim=1, keepdim=True) + 1e-10), b / (b.norm(dim=1, keepdim=True) + 1e-10)  # LPIPS's eps
        expected += (a - b).square().sum(1).mean((1, 2))
    with torch.no_grad():
        torch.testing.assert_close(dist(x, y).double(), expected, rtol=1e-4, atol=1e-6)
    assert len(taps) == 1 + net.config["n_stages"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(images=torch.zeros(3, 16, 16)), r"images must have shape \[B >= 1, 3, 16, 16\].*found \(3, 16, 16\)"),
    (dict(images=torch.zeros(1, 3, 32, 32)), r"images must have shape.*found \(1, 3, 32, 32\)"),
    (dict(images=torch.zeros(1, 1, 16, 16)), r"images must have shape.*found \(1, 1, 16, 16\)"),
    (dict(images=torch.zeros(1, 3, 16, 16, dtype=torch.uint8)), r"images must be floating point.*uint8"),
    (dict(images=torch.full((1, 3, 16, 16), 200.0)), r"images must have values in \[-1, 1\].*200"),
    (dict(images=torch.full((1, 3, 16, 16), float("nan"))), r"images must be finite"),
    (dict(space="z"), r"space must be one of \('w', 'w\+', 's'\), found 'z'"),
    (dict(steps=0), r"steps must be an int >= 1, found 0"),
    (dict(steps=True), r"steps must be an int >= 1, found True"),
    (dict(perceptual="alex"), r"perceptual must be one of \('auto', 'lpips', 'recon'\).*'alex'"),
    (dict(seed=[1, 2, 3]), r"seed must be an int or a sequence of 1 ints"),
    (dict(init_ws=torch.zeros(1, 3, 16)), r"init_ws must have shape \[1, 6, 16\] or \[1, 16\], found \(1, 3, 16\)"),
    (dict(lr_rampdown_length=0.0), r"lr_rampdown_length must be a number in \(0, 1\], found 0.0"),
])
def test_errors_name_the_argument(tiny, kwargs, match):
    G, dist, imgs = tiny
    args = dict(images=imgs[:1], space="w+", steps=2, perceptual=dist, progress=False)
    args.update(kwargs)
    images = args.pop("images")
    with pytest.raises(ValueError, match=match):
        project(G, images, **args)


def test_init_ws_for_space_w_must_be_one_w(tiny):
    G, dist, imgs = tiny
    with pytest.raises(ValueError, match="init_ws for space 'w' must have the same w in every layer"):
        project(G, imgs[:1], "w", steps=1, perceptual=dist, init_ws=torch.randn(1, G.num_ws, G.w_dim),
                progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_follows_the_generator(tiny):
    G, dist, imgs = tiny
    Gc, dc = G.to("cuda"), ReconFeatureDistance(ReconNet("small", image_size=16, width=8)).to("cuda")
    try:
        r = project(Gc, imgs, "s", steps=4, perceptual=dc, progress=False)
        assert r.image.device.type == "cuda" and all(n.device.type == "cuda" for n in r.noise)
        torch.testing.assert_close(r.image, _resynth(Gc, r), rtol=0, atol=1e-5)
    finally:
        G.to("cpu")
