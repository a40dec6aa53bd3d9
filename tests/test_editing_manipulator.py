"""The latent manipulation network F^i (issue 10 §1 and §4): ``F(s, delta) -> s_g`` over an attribute's layer set.

Checked on the shipped mini generator's style-layer table and real styles of it: an untrained network returns s
bit for bit; a network with random weights equals a float64 re-computation of the documented per-layer formula,
leaves every style outside its layer set bit-exactly unchanged and moves every layer inside it; the safetensors
round trip (directly and through the asset registry) gives the same outputs in eval mode without gradients; every
broken file is refused with the file and the field named; wrong input shapes are refused.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cddfm3d import assets
from cddfm3d.assets import AssetError, AssetValidationError
from cddfm3d.assets.kinds import load_as
from cddfm3d.editing import ATTRIBUTE_SLICES, ATTRIBUTES
from cddfm3d.editing.latents import sample_latents
from cddfm3d.editing.manipulator import (FORMAT, VERSION, LatentManipulator, ManipulatorFileError,
                                         attribute_width)
from cddfm3d.serialization import read_safetensors


@pytest.fixture(scope="module")
def gen():
    G = assets.load("mini/generator")
    with torch.no_grad():
        ws = sample_latents(G, 6, torch.Generator().manual_seed(3))
        styles = G.flatten_styles(G.w_to_styles(ws))
    return {"channels": [m.channels for m in G.style_layers], "styles": styles, "style_dim": G.style_dim,
            "sets": assets.load("mini/layer_sets")}


def layer_bounds(channels) -> list[tuple[int, int]]:
    """[start, stop) of every layer in the flat style vector, from the channel counts alone."""
    ends = np.cumsum(channels).tolist()
    return list(zip([0] + ends[:-1], ends, strict=True))


def perturbed(F: LatentManipulator, seed: int, scale: float = 0.1) -> LatentManipulator:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in F.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return F


def with_stats(attribute: str, gen: dict, layers, seed: int = 0, activation=None) -> LatentManipulator:
    """F^i with non-trivial standardisation statistics and delta scale (as a trainer gives it)."""
    g = torch.Generator().manual_seed(seed)
    s = gen["styles"]
    k = attribute_width(attribute)
    return LatentManipulator(attribute, gen["channels"], layers, style_mean=s.mean(0),
                             style_std=0.5 + torch.rand(s.shape[1], generator=g),
                             p_scale=0.2 + torch.rand(k, generator=g), activation=activation)


def delta_for(attribute: str, n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, attribute_width(attribute), generator=torch.Generator().manual_seed(seed))


# ============================================================================================ public names
def test_attribute_widths_are_the_coefficient_slices():
    # k_i of the public API, and the slices of the 257 coefficients they come from
    assert {a: attribute_width(a) for a in ATTRIBUTES} == {"shape": 80, "expression": 64, "albedo": 80, "pose": 3,
                                                          "light": 27}
    for a in ATTRIBUTES:
        sl = ATTRIBUTE_SLICES[a]
        assert attribute_width(a) == len(range(257)[sl])
    with pytest.raises(ValueError, match="unknown attribute 'hair'"):
        attribute_width("hair")


def test_architecture_and_config(gen):
    F = LatentManipulator("pose", gen["channels"], [9, 0, 12])
    assert F.edit_layers == [0, 9, 12] and F.p_dim == 3 and F.style_dim == gen["style_dim"] == sum(gen["channels"])
    ch = gen["channels"]
    # per edited layer: E_k: C_k -> 32, D1_k: 32 + k_i -> max(32, C_k // 2), D2_k: -> C_k (zero-initialised)
    for j, k in enumerate(F.edit_layers):
        e, h, o = F.net.encoders[j], F.net.hidden[j], F.net.out[j]
        assert (e.in_features, e.out_features) == (ch[k], 32)
        assert (h.in_features, h.out_features) == (32 + 3, max(32, ch[k] // 2))
        assert (o.in_features, o.out_features) == (max(32, ch[k] // 2), ch[k])
        assert not o.weight.any() and not o.bias.any()
    assert isinstance(F.net.act, torch.nn.Identity)      # the paper's / official purely linear network
    assert F.config == {"attribute": "pose", "layer_channels": ch, "edit_layers": [0, 9, 12], "code_dim": 32,
                        "hidden": [max(32, ch[k] // 2) for k in (0, 9, 12)], "activation": None}


# ============================================================================================ behaviour
@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_untrained_network_returns_s_exactly(gen, attribute):
    F = with_stats(attribute, gen, gen["sets"][attribute])
    s = gen["styles"]
    out = F(s, 3 * delta_for(attribute, len(s), 1))
    assert out.shape == s.shape and torch.equal(out, s)
    assert torch.equal(F.offset(s, delta_for(attribute, len(s), 2)), torch.zeros_like(s))


@pytest.mark.parametrize("attribute", ["shape", "light"])
def test_edits_only_the_layer_set(gen, attribute):
    layers = gen["sets"][attribute]
    F = perturbed(with_stats(attribute, gen, layers, activation="elu"), seed=5)
    s = gen["styles"]
    delta = delta_for(attribute, len(s), 7)
    s_g = F(s, delta)
    s_0 = F(s, torch.zeros_like(delta))
    for k, (a, b) in enumerate(layer_bounds(gen["channels"])):
        if k in layers:
            assert (s_g[:, a:b] != s[:, a:b]).all(1).all(), k          # every sample, every layer of the set moves
            assert not torch.equal(s_g[:, a:b], s_0[:, a:b]), k        # ... and delta drives it
        else:
            assert torch.equal(s_g[:, a:b], s[:, a:b]), k              # bit for bit outside the set
    # gradients reach the network only through the layer set's outputs
    s_req = s.clone().requires_grad_(True)
    F(s_req, delta).sum().backward()
    for k, (a, b) in enumerate(layer_bounds(gen["channels"])):
        if k not in layers:
            assert torch.equal(s_req.grad[:, a:b], torch.ones_like(s[:, a:b])), k   # d s_g / d s = I there


@pytest.mark.parametrize("activation", [None, "elu", "lrelu"])
def test_matches_the_documented_formula_in_float64(gen, activation):
    """e_k = E_k((s_k - mean_k) / std_k); h_k = act(D1_k([e_k; delta / p_scale])); s_g,k = s_k + std_k D2_k(h_k)."""
    attribute, layers = "expression", [0, 5, 11, 13]
    F = perturbed(with_stats(attribute, gen, layers, seed=2, activation=activation), seed=9)
    s = gen["styles"]
    delta = delta_for(attribute, len(s), 4)
    act = {None: lambda x: x, "elu": torch.nn.functional.elu,
           "lrelu": lambda x: torch.nn.functional.leaky_relu(x, 0.2)}[activation]
    net = F.net
    s64, d64 = s.double(), delta.double()
    mean, std, scale = net.style_mean.double(), net.style_std.double(), net.p_scale.double()
    expected = s64.clone()
    bounds = layer_bounds(gen["channels"])
    for j, k in enumerate(layers):
        a, b = bounds[k]
        lin = [(m.weight.double(), m.bias.double()) for m in (net.encoders[j], net.hidden[j], net.out[j])]
        e = ((s64[:, a:b] - mean[a:b]) / std[a:b]) @ lin[0][0].T + lin[0][1]
        h = act(torch.cat([e, d64 / scale], 1) @ lin[1][0].T + lin[1][1])
        expected[:, a:b] = s64[:, a:b] + std[a:b] * (h @ lin[2][0].T + lin[2][1])
    out = F(s, delta).double()
    assert (out - s64).abs().max() > 0.1                                  # a real edit, not the identity
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    if activation is None:   # linear network: the offset is affine in delta
        zero = torch.zeros_like(delta)
        d_sum = F.offset(s, delta + 2 * delta.flip(0)).double()
        parts = F.offset(s, delta).double() + F.offset(s, 2 * delta.flip(0)).double() - F.offset(s, zero).double()
        torch.testing.assert_close(d_sum, parts, rtol=1e-4, atol=1e-5)


def test_rejects_bad_inputs(gen):
    ch, s = gen["channels"], gen["styles"]
    F = LatentManipulator("pose", ch, [0, 3])
    D = sum(ch)
    with pytest.raises(ValueError, match=rf"s must be \[B, {D}\], found \(6, {D - 1}\)"):
        F(s[:, :-1], torch.zeros(6, 3))
    with pytest.raises(ValueError, match=rf"s must be \[B, {D}\], found \({D},\)"):
        F(s[0], torch.zeros(6, 3))
    with pytest.raises(ValueError, match=r"must be \[6, 3\], found \(6, 4\)"):
        F(s, torch.zeros(6, 4))
    with pytest.raises(ValueError, match=r"must be \[6, 3\], found \(5, 3\)"):
        F(s, torch.zeros(5, 3))
    with pytest.raises(ValueError, match="unknown attribute 'hair'"):
        LatentManipulator("hair", ch, [0])
    for layers in ([], [0, 0], [len(ch)], [-1]):
        with pytest.raises(ValueError, match=rf"edit_layers must be distinct indices in \[0, {len(ch)}\)"):
            LatentManipulator("pose", ch, layers)
    with pytest.raises(ValueError, match="activation must be one of"):
        LatentManipulator("pose", ch, [0], activation="tanh")
    with pytest.raises(ValueError, match=f"style_std must have {D} entries, found 3"):
        LatentManipulator("pose", ch, [0], style_std=torch.ones(3))
    with pytest.raises(ValueError, match="must be > 0 everywhere"):
        LatentManipulator("pose", ch, [0], p_scale=torch.tensor([1.0, 0.0, 1.0]))


# ============================================================================================ files
@pytest.fixture()
def saved(gen, tmp_path):
    F = perturbed(with_stats("albedo", gen, gen["sets"]["albedo"], seed=3, activation="relu"), seed=11)
    F.eval()
    path = F.save(tmp_path / "f.safetensors")
    return F, path


def test_save_load_round_trip_is_exact(gen, saved):
    F, path = saved
    G = LatentManipulator.load(path)
    assert isinstance(G, LatentManipulator) and G.attribute == "albedo" and G.config == F.config
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    for k, v in F.state_dict().items():
        assert torch.equal(G.state_dict()[k], v), k                # weights and the statistics buffers
    s = gen["styles"]
    delta = delta_for("albedo", len(s), 3)
    assert torch.equal(G(s, delta), F(s, delta)) and not torch.equal(G(s, delta), s)
    _, meta = read_safetensors(path)
    assert meta["format"] == FORMAT == "cddfm3d.LatentManipulator" and meta["version"] == VERSION
    assert json.loads(meta["config"]) == F.config


def test_asset_kind_loads_it(gen, saved):
    F, path = saved
    G = load_as("editing.LatentManipulator", path, name="test/manipulator", origin="a test")
    assert isinstance(G, LatentManipulator) and not G.training
    s = gen["styles"]
    delta = delta_for("albedo", len(s), 8)
    assert torch.equal(G(s, delta), F(s, delta))
    assert "editing.LatentManipulator" in assets.known_kinds()
    # the registry wraps the loader's errors with the asset's name and origin
    with pytest.raises(AssetError, match="test/manipulator.*a test.*does not exist"):
        load_as("editing.LatentManipulator", path.with_name("none.safetensors"), name="test/manipulator",
                origin="a test")
    broken = path.with_name("broken.safetensors")
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(AssetValidationError, match=f"test/manipulator.*{broken.name}.*cannot read"):
        load_as("editing.LatentManipulator", broken, name="test/manipulator", origin="a test")


def rewrite(path, out, tensors=None, meta=None, **changes):
    """Write ``out`` as ``path`` with its tensors/metadata replaced or edited."""
    t, m = read_safetensors(path)
    t = dict(t if tensors is None else tensors)
    m = dict(m if meta is None else meta)
    for k, v in changes.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    save_file(t, str(out), metadata=m)
    return out


def test_broken_files_are_refused_naming_file_and_field(saved, tmp_path):
    _, path = saved
    tensors, meta = read_safetensors(path)
    config = json.loads(meta["config"])
    bad = tmp_path / "bad.safetensors"
    name = str(bad)

    def refused(pattern):
        with pytest.raises(ManipulatorFileError) as info:
            LatentManipulator.load(bad)
        assert name in str(info.value)
        assert info.match(pattern)

    rewrite(path, bad, format="cddfm3d.AttributePredictor")
    refused(r"field 'format' is 'cddfm3d.AttributePredictor', expected 'cddfm3d.LatentManipulator'")
    rewrite(path, bad, version="2")
    refused(r"field 'version' is '2', expected '1'")
    rewrite(path, bad, config=None)
    refused(r"field 'config' is missing or invalid")
    rewrite(path, bad, config="{not json")
    refused(r"field 'config' is missing or invalid")
    rewrite(path, bad, config=json.dumps(dict(config, attribute="hair")))
    refused(r"field 'config' is missing or invalid.*unknown attribute 'hair'")
    rewrite(path, bad, config=json.dumps({k: v for k, v in config.items() if k != "hidden"}))
    refused(r"field 'config' is missing or invalid.*'hidden'")
    rewrite(path, bad, config=json.dumps(dict(config, edit_layers=[0, 99])))
    refused(r"field 'config' is missing or invalid.*edit_layers")
    # tensors that do not fit the config: missing, extra, wrong shape
    missing = sorted(tensors)[0]
    rewrite(path, bad, tensors={k: v for k, v in tensors.items() if k != missing})
    refused(rf"does not match LatentManipulator.*1 missing tensor\(s\) \['{missing}'\]")
    rewrite(path, bad, tensors=dict(tensors, extra=torch.zeros(2)))
    refused(r"1 unexpected tensor\(s\) \['extra'\]")
    rewrite(path, bad, config=json.dumps(dict(config, code_dim=16)))
    refused(r"shape mismatch\(es\).*net.encoders.0.weight: expected \(16, 128\), found \(32, 128\)")
    # NaN weights
    nan = dict(tensors)
    nan["net.out.0.weight"] = nan["net.out.0.weight"].clone()
    nan["net.out.0.weight"][0, 0] = float("nan")
    rewrite(path, bad, tensors=nan)
    refused(r"\['net.out.0.weight'\] contain NaN/Inf")
    bad.write_bytes(b"\x00" * 10)
    refused("cannot read safetensors file")
    with pytest.raises(FileNotFoundError, match="gone.safetensors does not exist"):
        LatentManipulator.load(tmp_path / "gone.safetensors")
