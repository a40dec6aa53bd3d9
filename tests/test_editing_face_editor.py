"""cddfm3d.editing.face_editor.FaceEditor on the shipped mini generator and T with hand-built editing networks.

The F^i here are :class:`LatentManipulator` s whose weights are drawn from seeded generators (an untrained one does
not edit), so every check is against something computed independently of the editor: the coefficient layout of
Deep3D written out by hand, T and F called directly, the styles' layer layout from the generator's channel list,
and :func:`cddfm3d.editing.pairs.resynthesize` (the gen-pairs synthesis, one sample at a time).
"""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from cddfm3d import assets
from cddfm3d.editing.face_editor import FaceEditor
from cddfm3d.editing.manipulator import LatentManipulator
from cddfm3d.editing.pairs import noise_for, resynthesize

# Deep3D's coefficient layout (id 0:80, exp 80:144, tex 144:224, angles 224:227, gamma 227:254), written out here
# rather than taken from the package
LAYOUT = {"shape": (0, 80), "expression": (80, 144), "albedo": (144, 224), "pose": (224, 227), "light": (227, 254)}
SHAPE_LAYERS = [0, 2, 3, 5]
LIGHT_LAYERS = [3, 5, 10, 12]          # overlaps the shape layers: the order of application matters


def perturbed(F: LatentManipulator, seed: int, std: float = 0.05) -> LatentManipulator:
    """F with every weight and bias drawn from N(0, std^2) (seeded): it edits (the untrained last layer is 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in F.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return F.eval()


@pytest.fixture(scope="module")
def nets():
    G = assets.load("mini/generator").eval()
    T = assets.load("mini/attribute_predictor").eval()
    channels = [m.channels for m in G.style_layers]
    F_shape = perturbed(LatentManipulator("shape", channels, SHAPE_LAYERS), seed=1)
    F_light = perturbed(LatentManipulator("light", channels, LIGHT_LAYERS, activation="elu"), seed=2)
    return G, T, channels, F_shape, F_light


@pytest.fixture(scope="module")
def editor(nets):
    G, T, _, F_shape, F_light = nets
    return FaceEditor(G, T, {"light": F_light, "shape": F_shape})


@pytest.fixture(scope="module")
def sources(editor):
    return torch.cat([editor.styles_from_seed(i) for i in (3, 4, 5)])


def layer_columns(channels, layers) -> torch.Tensor:
    """Boolean [D]: the flat-style columns of ``layers`` (layers laid out one after another, ``channels`` each)."""
    mask = torch.zeros(sum(channels), dtype=torch.bool)
    start = 0
    for k, c in enumerate(channels):
        if k in layers:
            mask[start:start + c] = True
        start += c
    return mask


# ----------------------------------------------------------------------------------------------- sources
def test_styles_from_seed_is_the_mapped_seeded_latent(nets, editor):
    G = nets[0]
    z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = G.flatten_styles(G.w_to_styles(G.mapping(z)))
        ref_trunc = G.flatten_styles(G.w_to_styles(G.mapping(z, truncation_psi=0.5)))
    assert torch.equal(editor.styles_from_seed(3), ref)
    assert torch.equal(editor.styles_from_seed(3, truncation_psi=0.5), ref_trunc)
    assert not torch.equal(ref, ref_trunc) and not torch.equal(editor.styles_from_seed(4), ref)
    assert editor.attributes == ["shape", "light"]            # ATTRIBUTES order, whatever order was given


# ----------------------------------------------------------------------------------------------- deltas
def test_deltas_are_targets_minus_T_and_offsets_as_given(nets, editor, sources):
    T = nets[1]
    s = sources
    with torch.no_grad():
        P = T(s)
    a, b = LAYOUT["shape"]
    g = torch.Generator().manual_seed(0)
    target = torch.randn(b - a, generator=g)
    target_rows = torch.randn(len(s), b - a, generator=g)

    assert torch.equal(editor.deltas(s, {"shape": {"target": target}})["shape"], target - P[:, a:b])
    assert torch.equal(editor.deltas(s, {"shape": {"target": target_rows}})["shape"], target_rows - P[:, a:b])
    assert torch.equal(editor.deltas(s, {"shape": {"target": target.tolist()}})["shape"], target - P[:, a:b])

    d = editor.deltas(s, {"shape": {"target": {3: 1.5, 7: -0.25}}})["shape"]
    assert torch.equal(d[:, 3], torch.tensor(1.5) - P[:, 3]) and torch.equal(d[:, 7], torch.tensor(-0.25) - P[:, 7])
    others = [j for j in range(b - a) if j not in (3, 7)]
    assert torch.equal(d[:, others], torch.zeros(len(s), len(others)))

    # offsets reach F exactly as given (not (P + x) - P, which rounds)
    la, lb = LAYOUT["light"]
    d = editor.deltas(s, {"light": {"delta": {1: 0.2, 26: -0.1}}})["light"]
    expected = torch.zeros(len(s), lb - la)
    expected[:, 1], expected[:, 26] = 0.2, -0.1
    assert torch.equal(d, expected)
    offset = torch.randn(lb - la, generator=g)
    assert torch.equal(editor.deltas(s, {"light": {"delta": offset}})["light"], offset.expand(len(s), -1))

    # target, then an offset on top of it (float64 reference)
    both = editor.deltas(s, {"shape": {"target": {3: 1.5}, "delta": {3: 0.5, 4: -1.0}}})["shape"]
    ref3 = 1.5 + 0.5 - P[:, 3].double()
    assert torch.allclose(both[:, 3].double(), ref3, rtol=0, atol=1e-6)
    assert torch.equal(both[:, 4], torch.full((len(s),), -1.0))
    assert not both[:, 5:].any() and not both[:, :3].any()

    # P_s given by the caller is used instead of T(s)
    P_other = P + 1.0
    assert torch.equal(editor.deltas(s, {"shape": {"target": target}}, P_s=P_other)["shape"],
                       target - P_other[:, a:b])
    # several attributes at once, each against the same P_s
    both = editor.deltas(s, {"light": {"target": {0: 0.3}}, "shape": {"delta": {0: 1.0}}})
    assert set(both) == {"light", "shape"}
    assert torch.equal(both["light"][:, 0], torch.tensor(0.3) - P[:, la])


def test_edit_takes_targets_from_a_given_P_s_and_refuses_a_bad_one(nets, editor, sources):
    """edit(..., P_s=...) is F of (target - P_s) (e.g. P_s read from the source image); offsets ignore P_s."""
    T = nets[1]
    s = sources
    with torch.no_grad():
        P = T(s)
    read = P + 0.3 * torch.randn(P.shape, generator=torch.Generator().manual_seed(5))
    a, b = LAYOUT["shape"]
    goal = torch.full((b - a,), 0.5)
    got = editor.edit(s, {"shape": {"target": goal}}, P_s=read)
    assert torch.equal(got, editor.apply(s, {"shape": goal - read[:, a:b]}))
    assert not torch.equal(got, editor.edit(s, {"shape": {"target": goal}}))
    assert torch.equal(editor.edit(s, {"shape": {"target": goal}}, P_s=P), editor.edit(s, {"shape": {"target": goal}}))
    offset = {"light": {"delta": {1: 0.2}}}
    assert torch.equal(editor.edit(s, offset, P_s=read), editor.edit(s, offset))
    assert torch.equal(editor.target_coeffs(s, {"shape": {"target": goal}}, P_s=read)[:, b:], read[:, b:])
    for bad, found in ((read[:2], r"\(2, 257\)"), (read[:, :256], r"\(3, 256\)"),
                       (read.long(), "torch.int64"), (read * float("nan"), r"\(3, 257\)"), ([0.0], "list")):
        with pytest.raises(ValueError, match=r"P_s must be finite float coefficients \[3, 257\].*found .*" + found):
            editor.edit(s, {"shape": {"target": goal}}, P_s=bad)


# ----------------------------------------------------------------------------------------------- edits
def test_untrained_F_does_not_edit(nets, sources):
    G, T, channels = nets[:3]
    editor = FaceEditor(G, T, {"pose": LatentManipulator("pose", channels, [1, 4]).eval()})
    assert torch.equal(editor.edit(sources, {"pose": {"delta": torch.zeros(3)}}), sources)
    with torch.no_grad():
        P = T(sources)
    assert torch.equal(editor.deltas(sources, {"pose": {"target": P[:, 224:227]}})["pose"], torch.zeros(3, 3))
    # the last layer starts at zero: even a large request leaves s as it is
    assert torch.equal(editor.edit(sources, {"pose": {"delta": {1: 0.5}}}), sources)
    assert torch.equal(editor.edit(sources, {}), sources)


def test_an_edit_is_F_of_the_requested_delta_and_stays_in_its_layers(nets, editor, sources):
    _, _, channels, F_shape, _ = nets
    s = sources.clone()
    out = editor.edit(s, {"shape": {"delta": {0: 1.0, 5: -0.5}}})
    assert torch.equal(s, sources)                                  # the input is not written
    delta = torch.zeros(len(s), 80)
    delta[:, 0], delta[:, 5] = 1.0, -0.5
    with torch.no_grad():
        assert torch.equal(out, F_shape(s, delta))
    inside = layer_columns(channels, SHAPE_LAYERS)
    assert torch.equal(out[:, ~inside], s[:, ~inside])
    start = 0
    for k, c in enumerate(channels):                                # every edited layer moves
        if k in SHAPE_LAYERS:
            assert (out[:, start:start + c] - s[:, start:start + c]).abs().max() > 1e-4, k
        start += c
    # float64 styles are edited in G's float32
    assert torch.equal(editor.edit(s.double(), {"shape": {"delta": {0: 1.0, 5: -0.5}}}), out)


def test_attributes_are_applied_in_ATTRIBUTES_order_each_against_the_source(nets, editor, sources):
    _, T, channels, F_shape, F_light = nets
    s = sources
    la = LAYOUT["light"][0]
    out = editor.edit(s, {"light": {"target": {0: 0.5}}, "shape": {"delta": {2: 1.0}}})   # light given first
    with torch.no_grad():
        P = T(s)
        d_shape = torch.zeros(len(s), 80)
        d_shape[:, 2] = 1.0
        d_light = torch.zeros(len(s), 27)
        d_light[:, 0] = 0.5 - P[:, la]
        s_shape = F_shape(s, d_shape)
        expected = F_light(s_shape, d_light)
        other_order = F_shape(F_light(s, d_light), d_shape)
        d_light_again = torch.zeros(len(s), 27)                     # the light delta against T of the shape edit
        d_light_again[:, 0] = 0.5 - T(s_shape)[:, la]
        re_predicted = F_light(s_shape, d_light_again)
    assert torch.equal(out, expected)
    assert (out - other_order).abs().max() > 1e-5
    assert (out - re_predicted).abs().max() > 1e-6
    untouched = ~(layer_columns(channels, SHAPE_LAYERS) | layer_columns(channels, LIGHT_LAYERS))
    assert torch.equal(out[:, untouched], s[:, untouched])


# ----------------------------------------------------------------------------------------------- synthesis
def test_synthesize_is_the_gen_pairs_synthesis(nets, editor, sources):
    G = nets[0]
    s = editor.edit(sources, {"shape": {"delta": {0: 1.0}}})
    seeds = [11, 2**40 + 7, 11]
    for i in range(len(s)):                                         # batch 1: bitwise
        img = editor.synthesize(s[i:i + 1], seeds[i:i + 1])
        assert img.dtype == torch.uint8 and img.shape == (1, 3, G.resolution, G.resolution)
        assert torch.equal(img, resynthesize(G, s[i:i + 1], seeds[i:i + 1]))
    batch = editor.synthesize(s, torch.tensor(seeds))
    ref = resynthesize(G, s, seeds)
    assert (batch.int() - ref.int()).abs().max() <= 1                # batched convs may round differently
    # the noise is the seed's: another seed changes the image, the same seed gives the same one
    assert not torch.equal(editor.synthesize(s[:1], [12]), editor.synthesize(s[:1], [11]))
    assert torch.equal(editor.synthesize(sources[:1], [11]), resynthesize(G, sources[:1], [11]))


def test_synthesize_with_precomputed_noise_equals_the_seeds_and_step_is_one_link_of_edit(nets, editor, sources):
    G, T, _, F_shape, F_light = nets
    s = sources[:1]
    noise = noise_for(G, [11])
    assert torch.equal(editor.synthesize(s, noise=noise), editor.synthesize(s, [11]))
    assert not torch.equal(editor.synthesize(s, noise=noise_for(G, [12])), editor.synthesize(s, [11]))
    with pytest.raises(ValueError, match="exactly one of noise_seeds and noise"):
        editor.synthesize(s, [11], noise=noise)
    with pytest.raises(ValueError, match="exactly one of noise_seeds and noise"):
        editor.synthesize(s)
    with pytest.raises(ValueError, match=f"noise must be {G.num_noise} maps \\[1, 1, r, r\\]"):
        editor.synthesize(s, noise=noise[:-1])
    with pytest.raises(ValueError, match="noise must be"):
        editor.synthesize(s, noise=noise_for(G, [1, 2]))
    # step: F^i of the delta; chaining the steps in ATTRIBUTES order is edit
    d_shape, d_light = torch.zeros(1, 80), torch.zeros(1, 27)
    d_shape[0, 1], d_light[0, 2] = 0.7, -0.2
    with torch.no_grad():
        assert torch.equal(editor.step(s, "shape", d_shape), F_shape(s, d_shape))
        chained = editor.step(editor.step(s, "shape", d_shape), "light", d_light)
    assert torch.equal(chained, editor.edit(s, {"shape": {"delta": d_shape[0]}, "light": {"delta": d_light[0]}}))


def test_apply_is_the_chain_of_edit_for_given_deltas(nets, editor, sources):
    G, T, _, F_shape, F_light = nets
    s = sources
    d_shape, d_light = torch.zeros(len(s), 80), torch.zeros(27)
    d_shape[:, 2], d_light[5] = torch.tensor([0.4, -0.3, 0.9]), 0.15
    with torch.no_grad():
        by_hand = F_light(F_shape(s, d_shape), d_light.expand(len(s), -1))     # ATTRIBUTES order: shape, light
        got = editor.apply(s, {"light": d_light, "shape": d_shape})             # the dict's order does not count
    assert torch.equal(got, by_hand)
    assert torch.equal(editor.edit(s, {"shape": {"delta": d_shape}, "light": {"delta": d_light}}), got)
    with torch.no_grad():
        assert torch.equal(editor.apply(s, {"light": d_light}), F_light(s, d_light.expand(len(s), -1)))
    assert editor.apply(s, {}) is s                            # nothing to apply: the styles as given
    for deltas, message in (({"pose": torch.zeros(3)}, r"no editing network for 'pose'; this editor has "
                                                        r"\['shape', 'light'\]"),
                            ({"shape": torch.zeros(2, 80)}, r"the delta of 'shape' must be a tensor \[3, 80\] or "
                                                            r"\[80\], found \(2, 80\)"),
                            ({"light": [0.0] * 27}, r"the delta of 'light' must be a tensor .* found list"),
                            ([("shape", d_shape)], "deltas must be a dict")):
        with pytest.raises(ValueError, match="FaceEditor.apply: " + message):
            editor.apply(s, deltas)
    with pytest.raises(ValueError, match=f"T takes styles of width {G.style_dim}, the generator's are "
                                         f"{G.style_dim - 1}"):
        FaceEditor(_Narrow(G), T, {})


class _Narrow:
    """A stand-in generator whose style width is one less than G's (only what the constructor reads)."""

    def __init__(self, G):
        self.style_dim = G.style_dim - 1


# ----------------------------------------------------------------------------------------------- errors
BAD_EDITS = [
    ({"pose": {"delta": {0: 0.1}}}, r"no editing network for 'pose'; this editor has \['shape', 'light'\]"),
    ({"shape": {"offset": {0: 0.1}}}, "the edit of 'shape' must be a dict with 'target' and/or 'delta'"),
    ({"shape": {}}, "the edit of 'shape' must be a dict with 'target' and/or 'delta'"),
    ({"shape": [0.1]}, "the edit of 'shape' must be a dict"),
    ({"shape": {"delta": {80: 1.0}}}, r"shape delta index 80 is out of range \[0, 80\)"),
    ({"light": {"target": {-1: 1.0}}}, r"light target index -1 is out of range \[0, 27\)"),
    ({"shape": {"delta": {True: 1.0}}}, "shape delta index True is out of range"),
    ({"shape": {"delta": {"0": 1.0}}}, "shape delta index '0' is out of range"),
    ({"shape": {"target": {2: math.nan}}}, r"shape target\[2\] must be finite, found nan"),
    ({"light": {"delta": {2: math.inf}}}, r"light delta\[2\] must be finite, found inf"),
    ({"shape": {"target": torch.full((80,), math.nan)}}, "shape target has NaN or Inf"),
    ({"shape": {"delta": torch.zeros(79)}}, r"shape delta must be \[80\] or \[3, 80\], found \[79\]"),
    ({"shape": {"delta": torch.zeros(2, 80)}}, r"shape delta must be \[80\] or \[3, 80\], found \[2, 80\]"),
    ([("shape", {"delta": {0: 1.0}})], "edits must be a dict"),
]


@pytest.mark.parametrize("edits,message", BAD_EDITS)
def test_bad_edits_are_refused_naming_the_problem(editor, sources, edits, message):
    with pytest.raises(ValueError, match=message):
        editor.edit(sources, edits)


def test_bad_styles_seeds_and_networks_are_refused(nets, editor, sources):
    G, T, channels, F_shape, _ = nets
    D = G.style_dim
    for s, found in ((sources[:, :-1], f"torch.float32 \\(3, {D - 1}\\)"), (sources[0], f"torch.float32 \\({D},\\)"),
                     (sources.long(), f"torch.int64 \\(3, {D}\\)"), (sources.numpy(), "ndarray")):
        with pytest.raises(ValueError, match=f"styles must be a float tensor \\[B, {D}\\].*found {found}"):
            editor.edit(s, {"shape": {"delta": {0: 1.0}}})
        with pytest.raises(ValueError, match="styles must be a float tensor"):
            editor.synthesize(s, [0, 1, 2])
    with pytest.raises(ValueError, match="2 noise seeds for 3 styles"):
        editor.synthesize(sources, [0, 1])
    with pytest.raises(ValueError, match=r"noise seeds must be ints, found \[0.5\]"):
        editor.synthesize(sources[:1], [0.5])
    with pytest.raises(ValueError, match="unknown attribute 'hair'"):
        FaceEditor(G, T, {"hair": F_shape})
    with pytest.raises(ValueError, match="the manipulator given for 'light' edits 'shape'"):
        FaceEditor(G, T, {"light": F_shape})
    narrow = LatentManipulator("shape", channels[:-1], [0])
    with pytest.raises(ValueError, match=f"F\\^shape takes styles of width {D - 32}, the generator's are {D}"):
        FaceEditor(G, T, {"shape": narrow})


# ----------------------------------------------------------------------------------------------- loading
@pytest.fixture
def tmp_assets(tmp_path, monkeypatch):
    """A copy of the shipped generator and T (and the manifest without any editing network), as the assets."""
    src_manifest = json.loads(assets.manifest_path().read_text())
    keep = {k: v for k, v in src_manifest["assets"].items() if k in ("mini/generator", "mini/attribute_predictor")}
    root = tmp_path / "assets"
    for e in keep.values():
        (root / e["file"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(assets.assets_dir() / e["file"], root / e["file"])
    (root / "MANIFEST.json").write_text(json.dumps(dict(src_manifest, assets=keep)))
    monkeypatch.setenv(assets.ASSETS_ENV, str(root))
    assets.clear_verification_cache()
    yield root
    assets.clear_verification_cache()


def test_load_needs_registered_editing_networks_and_returns_them(nets, tmp_assets, sources):
    G, T, channels = nets[:3]
    with pytest.raises(ValueError, match="the assets have no mini/manipulator/<attribute>") as info:
        FaceEditor.load("mini")
    for part in ("mini world only", "gen-pairs, train-t and train-f", "FaceEditor(G, T, manipulators)"):
        assert part in str(info.value), part
    assert "ship-f" not in str(info.value)                   # it writes mini/... only: no advice for other worlds
    F = perturbed(LatentManipulator("pose", channels, [1, 4, 6], activation="relu"), seed=5)
    F.save(tmp_assets / "mini" / "manipulator_pose.safetensors")
    assets.register("mini/manipulator/pose", "mini/manipulator_pose.safetensors", "editing.LatentManipulator",
                    F.config, "test", {})
    with pytest.raises(ValueError, match="the assets have no other/manipulator/<attribute>"):
        FaceEditor.load("other")

    editor = FaceEditor.load("mini")
    assert editor.attributes == ["pose"] and not editor.G.training and not editor.T.training
    assert editor.device == torch.device("cpu")
    delta = torch.tensor([[0.1, -0.2, 0.05]]).expand(len(sources), -1)
    with torch.no_grad():
        assert torch.equal(editor.manipulators["pose"](sources, delta), F(sources, delta))
        assert torch.equal(editor.predict(sources), T(sources))
    out = editor.edit(sources, {"pose": {"delta": delta[0]}})
    with torch.no_grad():
        assert torch.equal(out, F(sources, delta))
    assert torch.equal(editor.synthesize(out[:1], [3]), resynthesize(G, out[:1], [3]))
    # another generator: used as given, and the world's is not loaded
    loaded = []
    real_load = assets.load
    other_G = assets.load("mini/generator").eval()
    try:
        assets.load = lambda name, *a, **k: loaded.append(name) or real_load(name, *a, **k)
        swapped = FaceEditor.load("mini", generator=other_G)
    finally:
        assets.load = real_load
    assert swapped.G is other_G and loaded == ["mini/manipulator/pose", "mini/attribute_predictor"]
    for bad, message in ((object(), r"generator must be a cddfm3d.stylegan2.Generator .*found object"),
                         (T, r"generator must be a cddfm3d.stylegan2.Generator .*found AttributePredictor")):
        with pytest.raises(ValueError, match=message):
            FaceEditor.load("mini", generator=bad)
    with pytest.raises(ValueError, match=r"the generator is on cpu, the networks are loaded on meta"):
        FaceEditor.load("mini", device="meta", generator=other_G)


# ----------------------------------------------------------------------------------------------- series, sweeps
def test_target_coeffs_and_series_are_edit_synthesize_and_the_requested_coefficients(nets, editor, sources):
    T = nets[1]
    s = sources
    with torch.no_grad():
        P = T(s).double()
    edits_list = [{"shape": {"delta": {0: 1.0}}}, {"light": {"target": {0: 0.5}}, "shape": {"target": {3: -1.0}}},
                  {}]
    seeds = [7, 8, 9]
    out = editor.series(s, seeds, edits_list)
    assert out["styles"].shape == (3, len(s), s.shape[1]) and out["images"].dtype == torch.uint8
    assert out["images"].shape == (3, len(s), 3, 64, 64) and out["targets"].shape == (3, len(s), 257)
    for k, edits in enumerate(edits_list):
        assert torch.equal(out["styles"][k], editor.edit(s, edits))
        assert torch.equal(out["images"][k], editor.synthesize(editor.edit(s, edits), seeds))
        assert torch.equal(out["targets"][k], editor.target_coeffs(s, edits))
    # the targets (float64 reference): P_s with the requested entries replaced or moved, nothing else
    expected = [P.clone(), P.clone(), P.clone()]
    expected[0][:, 0] += 1.0
    expected[1][:, 227], expected[1][:, 3] = 0.5, -1.0
    for got, ref in zip(out["targets"], expected, strict=True):
        assert torch.allclose(got.double(), ref, rtol=0, atol=1e-5)
    changed = (out["targets"].double() != P).any(1)                        # [K, 257] entries moved in any row
    assert changed[0].nonzero().flatten().tolist() == [0]
    assert changed[1].nonzero().flatten().tolist() == [3, 227]
    assert not changed[2].any() and torch.equal(out["styles"][2], s)
    P_given = P.float() + 2.0
    assert torch.equal(editor.target_coeffs(s, {}, P_s=P_given), P_given)


def test_sweeps_request_their_documented_edits(nets, sources):
    from cddfm3d.face3d.lighting import light_angles_deg

    G, T, channels = nets[:3]
    scale = torch.ones(80)
    scale[17] = 3.0                                          # the most varied coefficient
    F_albedo = LatentManipulator("albedo", channels, [1], p_scale=scale).eval()
    F_pose = LatentManipulator("pose", channels, [2]).eval()
    F_light = LatentManipulator("light", channels, [3]).eval()
    editor = FaceEditor(G, T, {"albedo": F_albedo, "pose": F_pose, "light": F_light})
    s = sources[:2]

    labels, edits = editor.sweep("albedo", steps=(-1, 0, 2))
    assert labels == ["albedo[17] -1 std", "albedo[17] +0 std", "albedo[17] +2 std"]
    for v, e in zip((-1, 0, 2), edits, strict=True):
        d = editor.deltas(s, e)["albedo"]
        assert torch.equal(d[:, 17], torch.full((2,), 3.0 * v)) and not d[:, :17].any() and not d[:, 18:].any()

    labels, edits = editor.sweep("pose")
    assert labels == ["yaw -20 deg", "yaw -10 deg", "yaw +0 deg", "yaw +10 deg", "yaw +20 deg"]
    for v, e in zip((-2, -1, 0, 1, 2), edits, strict=True):
        d = editor.deltas(s, e)["pose"]                       # (pitch, yaw, roll) in radians
        assert torch.allclose(d.double(), torch.tensor([[0.0, v * 10 * math.pi / 180, 0.0]] * 2, dtype=torch.float64),
                              rtol=0, atol=1e-7)

    labels, edits = editor.sweep("light", steps=(-1, 1))
    assert labels == ["light azimuth -25 deg", "light azimuth +25 deg"]
    for v, e in zip((-1, 1), edits, strict=True):
        light = editor.target_coeffs(s, e)[:, 227:254]
        elevation, azimuth = light_angles_deg(light.double())
        assert torch.allclose(elevation, torch.full((2,), 25.0, dtype=torch.float64), atol=1e-3)
        assert torch.allclose(azimuth, torch.full((2,), 25.0 * v, dtype=torch.float64), atol=1e-3)
        assert torch.equal(light[0], light[1])               # an absolute target: the same for every source

    with pytest.raises(ValueError, match=r"FaceEditor.sweep: no editing network for 'shape'"):
        editor.sweep("shape")
