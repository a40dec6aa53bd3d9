"""Generator / discriminator structure, StyleSpace identity and API behaviour."""
import math

import numpy as np
import pytest
import torch

from cddfm3d.stylegan2.ops import minibatch_stddev
from cddfm3d.stylegan2 import (Discriminator, Generator, edit_channel, flatten_styles, layer_table, load_generator,
                               parse_channel_id, save_generator, style_stats, unflatten_styles)

SMALL = dict(resolution=32, z_dim=64, w_dim=64, mapping_layers=2, channels={4: 32, 8: 32, 16: 32, 32: 16})


def small_generator(seed=0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(**SMALL)
    with torch.no_grad():  # move every parameter away from its init so all paths matter
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        G.mapping_network.w_avg.normal_()
    return G.eval()


# ------------------------------------------------------------------------------------------- tables
# published per-layer style dims (StyleSpace, Table in stylegan2_formats.md §3.2)
@pytest.mark.parametrize("res,n_layers,total,conv_only", [(1024, 26, 9088, 6048), (512, 23, 8960, 5952),
                                                          (256, 20, 8704, 5760)])
def test_config_f_layer_tables(res, n_layers, total, conv_only):
    G = Generator(res)
    layers = G.style_layers
    assert len(layers) == n_layers
    assert G.style_dim == total
    assert sum(m.channels for m in layers if not m.is_torgb) == conv_only
    assert [m.index for m in layers if m.is_torgb] == list(range(1, n_layers, 3))
    assert G.num_ws == 2 * int(math.log2(res)) - 2
    # each tRGB shares its W+ index with the next up-conv
    for i, m in enumerate(layers):
        if m.is_torgb and i + 1 < n_layers:
            assert layers[i + 1].w_index == m.w_index
    assert layers[0].w_index == 0 and layers[1].w_index == 1 and layers[-1].w_index == G.num_ws - 1
    offsets = np.cumsum([0] + [m.channels for m in layers])[:-1]
    assert [m.offset for m in layers] == list(offsets)
    if res == 1024:  # paper convention: 512 x 15, 256 x 3, 128 x 3, 64 x 3, 32 x 2
        dims = [m.channels for m in layers]
        assert dims.count(512) == 15 and dims.count(256) == 3 and dims.count(128) == 3 and dims.count(64) == 3
        assert dims.count(32) == 2
        assert parse_channel_id("9_409") == (9, 409) and layers[9].name == "b32.conv1"
        assert layer_table(G)[25]["name"] == "b1024.torgb"


# parameter counts of the published configurations (rosinality and NVIDIA agree)
@pytest.mark.parametrize("res,cm,g_params,d_params", [
    (1024, 2, 30_370_060, 29_012_513), (1024, 1, 24_900_764, 24_038_161),
    (256, 2, 30_034_338, 28_864_129), (256, 1, 24_767_458, 24_001_089),
    (64, 2, 27_032_600, 26_488_833)])
def test_parameter_counts_match_published(res, cm, g_params, d_params):
    G = Generator(res, channel_base=16384 * cm)
    D = Discriminator(res, channel_base=16384 * cm)
    assert sum(p.numel() for p in G.parameters()) == g_params
    assert sum(p.numel() for p in D.parameters()) == d_params


# ------------------------------------------------------------------------------------------- StyleSpace
def test_w_path_equals_s_path_exactly():
    G = small_generator()
    g = torch.Generator().manual_seed(1)
    ws = torch.randn(3, G.num_ws, G.w_dim, generator=g)
    noise = [torch.randn(3, 1, m.resolution, m.resolution, generator=g) for m in G.style_layers if not m.is_torgb]
    for fused in (True, False):
        a = G.synthesis(ws, noise=noise, fused=fused)
        b = G.synthesis_from_styles(G.w_to_styles(ws), noise=noise, fused=fused)
        assert torch.equal(a, b)
    flat = flatten_styles(G.w_to_styles(ws))
    assert flat.shape == (3, G.style_dim)
    assert torch.equal(G.synthesis_from_styles(unflatten_styles(flat, G.style_layers), noise=noise),
                       G.synthesis(ws, noise=noise))


def test_trgb_style_is_raw_affine_output():
    G = small_generator()
    ws = torch.randn(2, G.num_ws, G.w_dim)
    styles = G.w_to_styles(ws)
    net = G.synthesis_network
    aff = net.b4.torgb.affine
    want = ws[:, 1] @ (aff.weight / math.sqrt(G.w_dim)).t() + aff.bias
    torch.testing.assert_close(styles[1], want)
    torch.testing.assert_close(styles[-1], net.b32.torgb.affine(ws[:, G.num_ws - 1]))


def test_mapping_matches_float64_formula():
    G = small_generator().double()
    z = torch.randn(5, G.z_dim, dtype=torch.float64)
    x = z / torch.sqrt((z ** 2).mean(1, keepdim=True) + 1e-8)
    for i in range(2):
        fc = getattr(G.mapping_network, f"fc{i}")
        y = x @ (fc.weight * 0.01 / math.sqrt(x.shape[1])).t() + fc.bias * 0.01
        x = torch.where(y > 0, y, 0.2 * y) * math.sqrt(2)
    w = G.mapping_network(z)
    torch.testing.assert_close(w, x, atol=1e-12, rtol=0)
    # truncation: psi=0 gives w_avg; cutoff truncates only the first layers
    w0 = G.mapping(z.float(), truncation_psi=0.0)
    torch.testing.assert_close(w0, G.w_avg.float().expand_as(w0))
    ws = G.mapping(z.float(), truncation_psi=0.5, truncation_cutoff=3)
    assert ws.shape == (5, G.num_ws, G.w_dim)
    w_full = G.mapping(z.float())
    torch.testing.assert_close(ws[:, 5], w_full)
    torch.testing.assert_close(ws[:, 0], G.w_avg.float() + 0.5 * (w_full - G.w_avg.float()))


def test_single_channel_edit_changes_only_that_modulation():
    G = small_generator()
    ws = torch.randn(2, G.num_ws, G.w_dim)
    styles = G.w_to_styles(ws)
    edited = edit_channel(styles, layer=3, channel=5, amount=10.0)
    diff = (flatten_styles(edited) - flatten_styles(styles)).abs()
    assert diff.nonzero()[:, 1].unique().tolist() == [G.style_index(3, 5)]
    assert G.style_address(G.style_index(3, 5)) == (3, 5)
    a = G.synthesis_from_styles(styles, noise="const")
    b = G.synthesis_from_styles(edited, noise="const")
    assert (a - b).abs().max() > 1e-3
    stats = style_stats(G, n=500, seed=0, batch_size=250)
    e2 = edit_channel(styles, 3, 5, 2.0, stats=stats)
    torch.testing.assert_close(e2[3][:, 5] - styles[3][:, 5], torch.full((2,), 2.0 * stats.std[3][5].item()))
    with pytest.raises(IndexError):
        G.style_index(3, 10_000)


def test_style_stats_against_direct_computation():
    G = small_generator()
    st = style_stats(G, n=300, seed=7, batch_size=100)
    g = torch.Generator().manual_seed(7)
    zs = torch.cat([torch.randn(100, G.z_dim, generator=g) for _ in range(3)])
    s = flatten_styles(G.w_to_styles(G.mapping(zs))).double()
    torch.testing.assert_close(st.flat_mean().double(), s.mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(st.flat_std().double(), s.std(0, unbiased=False), atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------- noise
def test_noise_modes_and_order():
    G = small_generator()
    ws = torch.randn(2, G.w_dim)
    noise = G.make_noise("random", 2)
    assert len(noise) == G.num_noise == 2 * 5 - 3
    # standard order: j = 0 is the 4x4 conv; at 2^k the up-conv is j = 2k - 5 and the conv j = 2k - 4
    for k in range(3, 6):
        assert noise[2 * k - 5].shape[-1] == 2 ** k and noise[2 * k - 4].shape[-1] == 2 ** k
    zero = [torch.zeros_like(n) for n in noise]
    assert torch.equal(G.synthesis(ws, noise="zero"), G.synthesis(ws, noise=zero))
    const = [m.noise_const[None, None] for m in G.synthesis_network._layer_modules if not m.is_torgb]
    assert torch.equal(G.synthesis(ws, noise="const"), G.synthesis(ws, noise=const))
    a = G.synthesis(ws, noise="random")
    assert not torch.equal(a, G.synthesis(ws, noise="random"))
    with pytest.raises(ValueError, match="noise\\[2\\]"):
        bad = list(noise)
        bad[2] = torch.zeros(2, 1, 4, 4)
        G.synthesis(ws, noise=bad)
    with pytest.raises(ValueError, match="expected 7 noise"):
        G.synthesis(ws, noise=noise[:3])
    with pytest.raises(ValueError, match="'random', 'const', 'zero'"):
        G.synthesis(ws, noise="gaussian")


def test_input_validation():
    G = small_generator()
    with pytest.raises(ValueError, match="z must have shape"):
        G.mapping(torch.randn(2, 3))
    with pytest.raises(ValueError, match="ws must have shape"):
        G.synthesis(torch.randn(2, 3, G.w_dim))
    with pytest.raises(ValueError, match="style of layer 2"):
        styles = G.w_to_styles(torch.randn(1, G.w_dim))
        styles[2] = styles[2][:, :-1]
        G.synthesis_from_styles(styles)
    with pytest.raises(ValueError, match="power of two"):
        Generator(48)


def test_fused_and_unfused_generator_agree():
    G = small_generator()
    ws = torch.randn(4, G.num_ws, G.w_dim)
    a = G.synthesis(ws, noise="const", fused=True)
    b = G.synthesis(ws, noise="const", fused=False)
    assert (a - b).abs().max() < 1e-4
    assert a.shape == (4, 3, 32, 32)


def test_save_load_round_trip(tmp_path):
    G = small_generator()
    path = tmp_path / "g.safetensors"
    save_generator(G, path)
    G2 = load_generator(path)
    for (k, v), (k2, v2) in zip(G.state_dict().items(), G2.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    ws = torch.randn(2, G.w_dim)
    assert torch.equal(G.synthesis(ws, noise="const"), G2.synthesis(ws, noise="const"))
    assert G2.config == G.config


def test_discriminator_shapes_and_gradients():
    D = Discriminator(32, channels={4: 32, 8: 32, 16: 32, 32: 16})
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    out = D(x)
    assert out.shape == (4, 1)
    # R1 needs double backward: the parameter gradient of P = ||dD/dx||^2 must match a central difference of P
    # along a random parameter direction. D.forward computes in float32 (it casts its input), too coarse for a
    # difference quotient across leaky-ReLU kinks, so D's own layers are run in float64 by ``d64`` below, which
    # is first shown to be D.forward.
    def d64(img):
        h = D.fromrgb(img)
        for res in D.block_resolutions:
            h = getattr(D, f"b{res}")(h)
        group = D.mbstd_group_size if D.mbstd_group_size is not None else h.shape[0]
        h = D.conv(minibatch_stddev(h, group, D.mbstd_num_channels))
        return D.out(D.fc(h.flatten(1)))

    with torch.no_grad():
        assert torch.equal(d64(x.detach()), D(x))
    D.double()
    x64 = x.detach().double().requires_grad_(True)

    def penalty():
        (g,) = torch.autograd.grad(d64(x64).sum(), x64, create_graph=True)
        return g.square().sum()

    penalty().backward()
    params = list(D.parameters())
    gen = torch.Generator().manual_seed(1)
    direction = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
    norm = sum(float(d.square().sum()) for d in direction) ** 0.5
    direction = [d / norm for d in direction]  # a unit step: eps stays far below the nearest kink
    analytic = sum(float((p.grad * d).sum()) for p, d in zip(params, direction, strict=True) if p.grad is not None)
    eps, values = 1e-6, []
    with torch.no_grad():
        for sign in (1, -1):
            for p, d in zip(params, direction, strict=True):
                p.add_(sign * eps * d)
            with torch.enable_grad():
                values.append(float(penalty().detach()))
            for p, d in zip(params, direction, strict=True):
                p.sub_(sign * eps * d)
    numeric = (values[0] - values[1]) / (2 * eps)
    assert analytic == pytest.approx(numeric, rel=1e-5)
    assert abs(analytic) > 1e-3 * float(penalty().detach())  # the check is not 0 == 0
    D.float()
    with pytest.raises(ValueError, match="discriminator expects"):
        D(torch.randn(4, 3, 16, 16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    G = small_generator()
    ws = torch.randn(2, G.num_ws, G.w_dim)
    a = G.synthesis(ws, noise="const")
    b = G.to("cuda").synthesis(ws.cuda(), noise="const").cpu()
    assert (a - b).abs().max() < 1e-4
