"""cddfm3d.stylespace: layer selection rule, paper sets, layer-set files, recon-based response and the paper's
rig procedure, on synthetic worlds whose truth is known."""
from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from cddfm3d import assets
from cddfm3d.editing import ATTRIBUTE_SLICES
from cddfm3d.editing.manipulator import StyleManipulator
from cddfm3d.face3d.measures import ATTRIBUTES
from cddfm3d.face3d.recon import ReconNet
from cddfm3d.stylegan2.generator import Generator
from cddfm3d.stylegan2.stylespace import StyleLayer, style_stats
from cddfm3d.stylespace import (FFHQ1024_LAYER_NAMES, PAPER_LAYER_SETS_1024, LayerSetsError, check_layer_names,
                                jaccard, load_layer_sets, paper_layer_sets, read_layer_sets, save_layer_sets,
                                select_layers)
from cddfm3d.stylespace.response import channel_response, channel_screen, layer_response, sample_styles
from cddfm3d.stylespace.rig import RigConfig, rig_layer_response, train_rig
from cddfm3d.world import mini_model


# ============================================================================================ selection rule
def _brute_force(col: list[float], share: float) -> tuple[int, float]:
    """Smallest size of a subset holding >= share of the column's total, and the largest sum at that size."""
    total = sum(max(v, 0.0) for v in col)
    for size in range(1, len(col) + 1):
        best = max(sum(max(col[i], 0.0) for i in c) for c in itertools.combinations(range(len(col)), size))
        if best / total >= share - 1e-12:
            return size, best
    raise AssertionError("unreachable")


@pytest.mark.parametrize("seed", range(6))
def test_select_layers_is_a_smallest_set_holding_the_share(seed):
    g = torch.Generator().manual_seed(seed)
    L = 7
    m = torch.rand(L, 5, generator=g, dtype=torch.float64) ** 3        # skewed, like real responses
    m[torch.rand(L, 5, generator=g) < 0.2] = 0.0
    m[0] += 1e-3                                                      # every column positive somewhere
    for share in (0.3, 0.5, 0.8, 0.95, 1.0):
        sets = select_layers(m, share=share)
        for a, name in enumerate(ATTRIBUTES):
            col = m[:, a].tolist()
            size, best = _brute_force(col, share)
            chosen = sets[name]
            assert chosen == sorted(set(chosen))
            assert len(chosen) == size, (name, share, chosen)
            assert sum(col[i] for i in chosen) == pytest.approx(best, rel=1e-12)


def test_select_layers_ties_negatives_candidates_and_errors():
    m = torch.zeros(4, 5, dtype=torch.float64)
    m[:, 0] = torch.tensor([1.0, 1.0, 1.0, 1.0])       # all tied: the lowest indices win
    m[:, 1] = torch.tensor([-5.0, 0.5, 2.0, 0.0])      # negatives count as 0: layer 2 holds 0.8
    m[:, 2] = torch.tensor([0.0, 3.0, 0.0, 1.0])
    m[:, 3] = torch.tensor([1.0, 0.0, 0.0, 0.5])
    m[:, 4] = torch.tensor([0.0, 0.0, 0.0, 1e-9])
    sets = select_layers(m, share=0.5)
    assert sets == {"shape": [0, 1], "expression": [2], "albedo": [1], "pose": [0], "light": [3]}
    assert select_layers(m, share=0.8)["shape"] == [0, 1, 2, 3]   # 0.75 < 0.8: a fourth layer is needed
    # candidates: the rule runs on the allowed rows only
    assert select_layers(m, share=0.5, candidates=[1, 3])["albedo"] == [1]
    assert select_layers(m, share=0.9, candidates=[1, 3])["albedo"] == [1, 3]
    with pytest.raises(ValueError, match="'pose' has no positive response"):
        select_layers(torch.eye(5, dtype=torch.float64), candidates=[0, 1, 2, 4])
    with pytest.raises(ValueError, match=r"\[layers >= 1, 5\]"):
        select_layers(torch.ones(3, 4))
    with pytest.raises(ValueError, match="share must be"):
        select_layers(torch.ones(3, 5), share=0.0)
    with pytest.raises(ValueError, match="out of range"):
        select_layers(torch.ones(3, 5), candidates=[0, 3])
    with pytest.raises(ValueError, match="NaN/Inf responses"):
        select_layers(torch.full((3, 5), float("nan")))


# ============================================================================================ paper sets
def _paper_resolution(k: int) -> int:
    """Resolution of 1024-px StyleSpace layer k by the index arithmetic of stylegan2_formats.md section 3.3."""
    return 4 if k < 2 else 2 ** (3 + (k - 2) // 3)


def _tiny_generator(resolution: int, channel_max: int = 4, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(resolution, z_dim=8, w_dim=8, mapping_layers=1, channel_base=4 * resolution,
                     channel_max=channel_max).eval()


@pytest.mark.parametrize("resolution", [1024, 64, 16])
def test_paper_sets_on_a_generators_layer_table(resolution):
    G = _tiny_generator(resolution)
    names = [m.name for m in G.style_layers]
    if resolution == 1024:
        assert names == list(FFHQ1024_LAYER_NAMES)
        assert [m.is_torgb for m in G.style_layers] == [k % 3 == 1 for k in range(26)]
    sets, dropped = paper_layer_sets(names)
    for attr, paper in PAPER_LAYER_SETS_1024.items():
        # the generator's layers are a prefix of the 1024-px order, so a kept layer keeps its index
        assert sets[attr] == [k for k in paper if _paper_resolution(k) <= resolution]
        assert dropped[attr] == [FFHQ1024_LAYER_NAMES[k] for k in paper if _paper_resolution(k) > resolution]
        for k in sets[attr]:
            assert G.style_layers[k].resolution == _paper_resolution(k)
            assert not G.style_layers[k].is_torgb                   # the paper never edits a tRGB layer
    if resolution == 64:
        assert len(sets["albedo"]) == 4 and len(dropped["albedo"]) == 8


def test_paper_sets_need_unique_names_and_jaccard():
    with pytest.raises(ValueError, match="duplicate"):
        paper_layer_sets(["b4.conv1", "b4.conv1"])
    a = {"shape": [0, 2, 3], "pose": [1], "light": []}
    b = {"shape": [2, 3, 5, 6], "pose": [4], "light": [], "albedo": [1]}
    assert jaccard(a, b) == {"shape": 2 / 5, "pose": 0.0, "light": 1.0}
    with pytest.raises(ValueError, match="share no attribute"):
        jaccard({"shape": [0]}, {"pose": [0]})


# ============================================================================================ layer-set files
NAMES = [f"L{k}" for k in range(6)]
SETS = {"shape": [0, 2], "expression": [0, 1, 2], "albedo": [4, 5], "pose": [0], "light": [3, 5]}


def test_layer_sets_round_trip_and_asset_kind(tmp_path, monkeypatch):
    meta = {"rule": "share", "share": 0.8, "generator_sha256": "ab" * 32, "recon": torch.eye(2)}
    path = save_layer_sets(tmp_path / "sets.json", {k: v[::-1] for k, v in SETS.items()}, NAMES, meta)
    sets, doc = read_layer_sets(path)
    assert sets == SETS and list(sets) == list(ATTRIBUTES)
    assert doc["layers"] == NAMES and doc["metadata"]["recon"] == [[1.0, 0.0], [0.0, 1.0]]
    loaded = assets.kinds.load_as("stylespace.LayerSets", path, name="mini/layer_sets", origin="test")
    assert loaded == SETS and all(type(i) is int for v in loaded.values() for i in v)
    # the shipped-asset route: a manifest entry of this kind in an assets folder
    monkeypatch.setenv(assets.ASSETS_ENV, str(tmp_path))
    assets.clear_verification_cache()
    assets.register("mini/layer_sets", path, "stylespace.LayerSets", config={}, command="test", metrics={})
    assert assets.load("mini/layer_sets") == SETS
    check_layer_names(NAMES, NAMES)
    with pytest.raises(ValueError, match="first difference at index 2: 'L2' in the file vs 'X'"):
        check_layer_names(NAMES, NAMES[:2] + ["X"] + NAMES[3:])


def _write(tmp_path, doc) -> str:
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(doc))
    return str(p)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(format="other"), "field 'format' is 'other'"),
    (lambda d: d["sets"].pop("light"), r"missing \['light'\], unknown \[\]"),
    (lambda d: d["sets"].update(hair=[1]), r"missing \[\], unknown \['hair'\]"),
    (lambda d: d["sets"].update(pose=[6]), r"sets.pose has layer indices \[6\] out of range \[0, 6\)"),
    (lambda d: d["sets"].update(pose=[-1, 0]), r"sets.pose has layer indices \[-1\]"),
    (lambda d: d["sets"].update(shape=[2, 0]), r"sets.shape must be sorted and without repeats, found \[2, 0\]"),
    (lambda d: d["sets"].update(shape=[0, 0]), "sorted and without repeats"),
    (lambda d: d["sets"].update(albedo=[]), "sets.albedo must be a non-empty list of int"),
    (lambda d: d["sets"].update(albedo=[1.0]), "sets.albedo must be a non-empty list of int"),
    (lambda d: d["sets"].update(albedo=[True]), "sets.albedo must be a non-empty list of int"),
    (lambda d: d.update(layers=[]), "field 'layers' must be a non-empty list"),
    (lambda d: d.update(version=2), "field 'version' is 2, expected 1"),
])
def test_layer_set_file_validation(tmp_path, change, message):
    doc = {"format": "cddfm3d.layer_sets", "version": 1, "sets": {k: list(v) for k, v in SETS.items()},
           "layers": NAMES, "metadata": {}}
    assert load_layer_sets(_write(tmp_path, doc)) == SETS
    change(doc)
    with pytest.raises(LayerSetsError, match=message) as e:
        load_layer_sets(_write(tmp_path, doc))
    assert "bad.json" in str(e.value)
    with pytest.raises(LayerSetsError, match="sorted"):
        save_layer_sets(tmp_path / "x.json", dict(SETS, shape=[0, 0]), NAMES)


def test_layer_set_file_not_json_or_missing(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text("{not json")
    with pytest.raises(LayerSetsError, match="broken.json: not valid JSON"):
        load_layer_sets(p)
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        load_layer_sets(tmp_path / "nothing.json")


# ============================================================================================ synthetic world
class ReadoutG:
    """A 'generator' whose image is its styles laid out flat (1 x 1 x D): any read-out of the image is a known
    function of known layers. Layers are affine in w (as StyleGAN's): s_l = A_l w + b_l; ``duplicate`` makes
    layer 1 a copy of layer 0 written twice ([s_0, s_0], 2C channels)."""

    def __init__(self, channels=(6, 6, 10, 4), z_dim=12, duplicate=False, seed=0):
        g = torch.Generator().manual_seed(seed)
        chans = list(channels)
        self.A = [torch.randn(c, z_dim, generator=g, dtype=torch.float64) for c in chans]
        self.b = [torch.randn(c, generator=g, dtype=torch.float64) for c in chans]
        if duplicate:
            chans[1] = 2 * chans[0]
            self.A[1] = torch.cat([self.A[0], self.A[0]])
            self.b[1] = torch.cat([self.b[0], self.b[0]])
        layers, off = [], 0
        for i, c in enumerate(chans):
            layers.append(StyleLayer(i, f"b4.l{i}", c, False, 4, 0, off, None))
            off += c
        self.style_layers = tuple(layers)
        self.z_dim = self.w_dim = z_dim
        self.num_ws = 1
        self.w_avg = torch.zeros(z_dim, dtype=torch.float64)

    def mapping(self, z, truncation_psi=1.0):
        return z.double()

    def w_to_styles(self, ws):
        w = ws[:, 0] if ws.ndim == 3 else ws
        return [w @ A.T + b for A, b in zip(self.A, self.b, strict=True)]

    def synthesis_from_styles(self, styles, noise=None):
        return torch.cat(list(styles), 1)[:, None, None, :]


def readout_recon(G: ReadoutG, reads: dict[str, list[int]], seed=1, average_copies=False):
    """'Reconstruction network': attribute a's coefficients = M_a @ (the styles of the layers reads[a]) (a linear,
    differentiable read-out of the image); everything else 0. With ``average_copies`` layer 1 (a duplicate of
    layer 0's channels) is read as the mean of its two copies, so it is the same function of w as layer 0."""
    g = torch.Generator().manual_seed(seed)
    offs = [(m.offset, m.offset + m.channels) for m in G.style_layers]
    widths = {k: G.style_layers[k].channels for k in range(len(offs))}
    if average_copies:
        widths[1] //= 2
    M = {a: {k: 0.05 * torch.randn(ATTRIBUTE_SLICES[a].stop - ATTRIBUTE_SLICES[a].start, widths[k], generator=g,
                                   dtype=torch.float64) for k in ks} for a, ks in reads.items()}

    def part(x, k):
        v = x[:, offs[k][0]:offs[k][1]]
        if average_copies and k == 1:
            v = (v[:, :widths[1]] + v[:, widths[1]:]) / 2
        return v

    def recon(images):
        x = images.flatten(1)
        P = torch.zeros(len(x), 257, dtype=x.dtype)
        for a, ks in reads.items():
            P[:, ATTRIBUTE_SLICES[a]] = sum(part(x, k) @ M[a][k].T for k in ks)
        return P

    return recon


@pytest.fixture(scope="module")
def model():
    return mini_model()


READS = {"shape": [1], "expression": [2], "albedo": [3], "pose": [0], "light": [2, 3]}


def test_layer_response_finds_the_layers_the_reading_depends_on(model):
    G = ReadoutG()
    recon = readout_recon(G, READS)
    for direction in ("random", "mix"):
        r = layer_response(G, recon, model, n=24, seed=3, direction=direction, batch_size=10)
        assert r.matrix.shape == (4, 5) and r.layer_names == [m.name for m in G.style_layers]
        for a, name in enumerate(ATTRIBUTES):
            for k in range(4):
                if k in READS[name]:
                    assert r.matrix[k, a] > 0.05, (direction, name, k)
                else:
                    assert r.matrix[k, a] == 0.0, (direction, name, k)    # exactly: the reading ignores layer k
        assert select_layers(r.matrix, share=0.999) == {a: sorted(v) for a, v in READS.items()}
        assert all(v > 0 for v in r.scale.values())
    # mix with amount 1 swaps the layer: for a read-out of one layer, the face then reads as the other face's
    # attribute, so the response is the mean distance between two random faces over its own estimate
    r = layer_response(G, recon, model, n=64, seed=5, direction="mix", amount=1.0)
    assert r.matrix[0, ATTRIBUTES.index("pose")] == pytest.approx(1.0, abs=4 * float(r.stderr[0, 3]) + 0.15)
    # a linear reading responds linearly: half the step, half the response (same seed: same faces and directions)
    r1 = layer_response(G, recon, model, n=16, seed=4, amount=1.0)
    r2 = layer_response(G, recon, model, n=16, seed=4, amount=0.5)
    # (the styles are float32: s + step rounds differently for the two steps, up to 3e-9 relative seen on a Xeon)
    torch.testing.assert_close(r2.matrix[0, 3], r1.matrix[0, 3] / 2, rtol=1e-6, atol=0)


def test_select_layers_skips_unmeasured_rows(model):
    """Rows with NaN/Inf are not candidates (layer_response(layers=[...]) leaves the skipped rows NaN): the sets
    equal those of the finite rows as candidates and the brute-force smallest sets over them; before, any NaN was
    refused, so a partial response could not be turned into sets."""
    g = torch.Generator().manual_seed(7)
    m = torch.rand(6, 5, generator=g, dtype=torch.float64) ** 3 + 1e-3
    m[1] = float("nan")
    m[4, 2] = float("inf")                               # one non-finite entry is enough to drop the row
    finite = [0, 2, 3, 5]
    for share in (0.5, 0.8, 1.0):
        sets = select_layers(m, share=share)
        assert sets == {a: [finite[k] for k in v] for a, v in select_layers(m[finite], share=share).items()}
        assert all(set(v) <= set(finite) for v in sets.values())
        for a, name in enumerate(ATTRIBUTES):
            size, best = _brute_force(m[finite, a].tolist(), share)
            assert len(sets[name]) == size and float(m[sets[name], a].sum()) == pytest.approx(best, rel=1e-12)
    assert select_layers(m, share=0.8, candidates=[1, 2, 4]) == select_layers(m, share=0.8, candidates=[2])
    with pytest.raises(ValueError, match=r"every candidate layer \[1, 4\] has NaN/Inf responses"):
        select_layers(m, candidates=[1, 4])
    # on a measured response: layer 1 is not perturbed (NaN row), the others give the read-out's layers
    G = ReadoutG()
    reads = {"shape": [0], "expression": [2], "albedo": [3], "pose": [0], "light": [2, 3]}
    r = layer_response(G, readout_recon(G, reads), model, n=16, seed=3, batch_size=8, layers=[0, 2, 3])
    assert torch.isnan(r.matrix[1]).all()
    assert select_layers(r.matrix, share=0.999) == reads


def test_layer_response_width_normalisation(model):
    """Layer 1 duplicates layer 0's channels and the reading averages the copies (same function of w, twice the
    width): 'mix' responds exactly as to layer 0, 'random' by 1/sqrt(2) (half of each copy's step survives the
    average, from twice as many independent channels) -- it never grows with the width."""
    G = ReadoutG(channels=(8, 8, 4, 4), duplicate=True)
    recon = readout_recon(G, {"shape": [1], "expression": [0], "albedo": [2], "pose": [3], "light": [2]},
                          average_copies=True)
    recon0 = readout_recon(G, {"shape": [0], "expression": [0], "albedo": [2], "pose": [3], "light": [2]})
    mix = layer_response(G, recon, model, n=32, seed=0, direction="mix")
    mix0 = layer_response(G, recon0, model, n=32, seed=0, direction="mix")
    torch.testing.assert_close(mix.matrix[1, 0], mix0.matrix[0, 0], rtol=1e-9, atol=0)
    stats = style_stats(G, n=4000, seed=1)
    rnd = layer_response(G, recon, model, n=400, seed=0, stats=stats)
    rnd0 = layer_response(G, recon0, model, n=400, seed=0, stats=stats)
    ratio = float(rnd.matrix[1, 0] / rnd0.matrix[0, 0])
    assert ratio == pytest.approx(1 / math.sqrt(2), rel=0.08)


def test_channel_screen_and_confirmation_on_the_readout(model):
    """Pose reads only channels 0 and 3 of layer 0 (weights 2 : 1): the gradient screen must be zero elsewhere,
    in that ratio there, and agree with the measured single-channel edits (linear reading: exact)."""
    G = ReadoutG()
    Mpose = torch.zeros(3, 6, dtype=torch.float64)
    Mpose[0, 0], Mpose[1, 3] = 0.02, 0.01

    def recon(images):
        x = images.flatten(1)
        P = torch.zeros(len(x), 257, dtype=x.dtype)
        P[:, ATTRIBUTE_SLICES["pose"]] = x[:, :6] @ Mpose.T
        P[:, ATTRIBUTE_SLICES["shape"]] = 0.05 * x[:, 6:12].sum(1, keepdim=True)
        return P

    stats = style_stats(G, n=2000, seed=2)
    scale = {a: 1.0 for a in ATTRIBUTES}
    screen = channel_screen(G, recon, model, n=8, seed=0, probes=64, stats=stats, scale=scale)
    pose = screen[ATTRIBUTES.index("pose")]
    nz = torch.nonzero(pose).flatten().tolist()
    assert nz == [0, 3]
    # pose distance = RMS over 3 angles (degrees) of M d s: one std of channel c moves it by |M[:, c]| std / sqrt(3)
    expect = torch.tensor([0.02 * float(stats.std[0][0]), 0.01 * float(stats.std[0][3])]) * 180 / math.pi
    expect = expect / math.sqrt(3)
    torch.testing.assert_close(pose[[0, 3]].float(), expect.float(), rtol=0.25, atol=0)   # random probes
    measured = channel_response(G, recon, model, [(0, 0), (0, 3), (0, 1)], n=8, seed=0, amount=2.0, stats=stats,
                                scale=scale)
    torch.testing.assert_close(measured[:2, 3], 2.0 * expect.double(), rtol=1e-6, atol=0)
    assert float(measured[2].abs().sum()) == 0.0


def test_layer_response_runs_on_a_real_generator_and_reconnet(model):
    torch.manual_seed(0)
    G = Generator(16, z_dim=8, w_dim=8, mapping_layers=1, channel_base=64, channel_max=8).eval()
    recon = ReconNet("small", image_size=16, width=4).eval()
    recon.input_range = "-1_1"
    for p in recon.parameters():            # the heads start at zero: give every weight a value
        torch.nn.init.normal_(p, std=0.3)
    r = layer_response(G, recon, model, n=4, seed=0, batch_size=4, layers=[0, 2])
    assert r.matrix.shape == (len(G.style_layers), 5)
    assert torch.isfinite(r.matrix[[0, 2]]).all() and (r.matrix[[0, 2]] > 0).all()
    assert torch.isnan(r.matrix[1]).all()
    # the screen differentiates through the network (the default reading keeps gradients)
    screen = channel_screen(G, recon, model, n=2, seed=0, probes=1, batch_size=2)
    assert screen.shape == (5, G.style_dim) and torch.isfinite(screen).all() and (screen.sum(1) > 0).all()


# ============================================================================================ rig procedure
def _rig_world():
    """A tiny generator's styles and a synthetic differentiable T whose attributes read known channels:
    pose <- layer 2 channels 0-7 and layer 5; shape <- layer 0 and layer 2 channels 8-15; expression <- layer 3;
    albedo <- layer 6; light <- layer 7. Layers 1 and 4 are read by nothing."""
    torch.manual_seed(0)
    G = Generator(16, z_dim=16, w_dim=16, mapping_layers=2, channels={4: 16, 8: 16, 16: 8}).eval()
    styles = G.flatten_styles(sample_styles(G, 2048, torch.Generator().manual_seed(0)))
    mean, std = styles.mean(0), styles.std(0)
    off = [m.offset for m in G.style_layers] + [G.style_dim]

    def cols(k, a=None, b=None):
        idx = torch.arange(off[k], off[k + 1])
        return idx[a:b]

    reads = {"pose": torch.cat([cols(2, 0, 8), cols(5)]), "shape": torch.cat([cols(0), cols(2, 8, 16)]),
             "expression": cols(3), "albedo": cols(6), "light": cols(7)}
    g = torch.Generator().manual_seed(1)
    M = {a: torch.randn(ATTRIBUTE_SLICES[a].stop - ATTRIBUTE_SLICES[a].start, len(idx), generator=g) / len(idx) ** 0.5
         for a, idx in reads.items()}

    def T(s):
        x = (s - mean) / std
        P = torch.zeros(len(s), 257)
        for a, idx in reads.items():
            P[:, ATTRIBUTE_SLICES[a]] = torch.tanh(x[:, idx] @ M[a].T)
        return P

    return G, styles, T


def test_rig_finds_the_layers_t_reads_for_pose():
    G, styles, T = _rig_world()
    channels = [m.channels for m in G.style_layers]
    res = train_rig(T, styles, channels, "pose", RigConfig(steps=300, batch_size=64, lr=3e-3, seed=0))
    out = rig_layer_response(res, T, styles, "pose", n=256, seed=1)
    r = out["response"]
    assert out["completion"] > 0.7, out
    assert out["leakage"] < 0.1, out
    top = float(r.max())
    assert {k for k in range(len(r)) if r[k] > 0.2 * top} == {2, 5}, r
    for k in (1, 3, 4, 6, 7):        # never read by pose, so the minimal edit leaves them alone
        assert float(r[k]) < 1e-3 * top, (k, r)
    assert select_layers(torch.stack([r] * 5, 1), share=0.9)["pose"] == [2, 5]


def test_manipulator_shapes_zero_start_and_errors():
    net = StyleManipulator([4, 6, 2], edit_layers=[2, 0], p_dim=3)
    s, dp = torch.randn(5, 12), torch.randn(5, 3)
    assert torch.equal(net(s, dp), torch.zeros(5, 12))                 # zero-initialised output: no edit yet
    for lin in net.out:
        torch.nn.init.normal_(lin.weight)
    ds = net(s, dp)
    assert ds.shape == (5, 12) and torch.equal(ds[:, 4:10], torch.zeros(5, 6))   # layer 1 is not edited
    assert ds[:, :4].abs().sum() > 0 and ds[:, 10:].abs().sum() > 0
    torch.testing.assert_close(net.edit(s, dp), s + ds)
    with pytest.raises(ValueError, match="edit_layers must be distinct"):
        StyleManipulator([4, 6], edit_layers=[0, 0], p_dim=3)
    with pytest.raises(ValueError, match="style_std must have 10 entries"):
        StyleManipulator([4, 6], edit_layers=[0], p_dim=3, style_std=torch.ones(9))
    with pytest.raises(ValueError, match=r"s must be \[B, 12\]"):
        net(torch.randn(5, 11), dp)


# ============================================================================================ command line
def _small_generator_and_recon_files(tmp_path) -> Generator:
    """A 16 px generator (seed 0) saved as tmp_path/g.safetensors and a small recon network with weights of std 0.3
    (so its coefficients respond to the images) saved as tmp_path/r.safetensors; returns the generator."""
    from cddfm3d.stylegan2.checkpoints import save_generator

    torch.manual_seed(0)
    G = Generator(16, z_dim=8, w_dim=8, mapping_layers=1, channel_base=64, channel_max=8).eval()
    recon = ReconNet("small", image_size=16, width=4).eval()
    recon.input_range = "-1_1"
    for p in recon.parameters():
        torch.nn.init.normal_(p, std=0.3)
    save_generator(G, tmp_path / "g.safetensors")
    recon.save(tmp_path / "r.safetensors")
    return G


def test_select_layers_command(tmp_path, capsys):
    """The command on a small generator + network written to files: a valid layer-set file whose sets follow the
    rule on the recorded matrix, with the files' sha256 and the paper comparison."""
    from cddfm3d.assets import sha256_file
    from cddfm3d.cli import main

    G = _small_generator_and_recon_files(tmp_path)
    out = tmp_path / "sets.json"
    args = ["select-layers", "--out", str(out), "--n", "4", "--batch", "4", "--share", "0.6", "--device", "cpu",
            "--generator", str(tmp_path / "g.safetensors"), "--recon", str(tmp_path / "r.safetensors")]
    assert main(args) == 0
    sets, doc = read_layer_sets(out)
    meta = doc["metadata"]
    assert doc["layers"] == [m.name for m in G.style_layers]
    assert meta["generator_sha256"] == sha256_file(tmp_path / "g.safetensors")
    assert sets == select_layers(meta["responses"]["recon"]["matrix"], share=0.6)
    assert meta["paper_sets"] == paper_layer_sets(doc["layers"])[0]
    assert "wrote" in capsys.readouterr().out
    assert main(args[:-4] + ["--share", "1.5"]) == 2
    assert "expected a number in (0, 1]" in capsys.readouterr().err


def test_select_layers_command_paper(tmp_path, capsys):
    """--method paper measures nothing: on the shipped 64 px generator each set holds exactly the layers whose names
    the paper's FFHQ-1024 set names; a 16 px generator, where every albedo layer of the paper is above its resolution,
    is refused naming the attribute."""
    from cddfm3d.cli import main

    out = tmp_path / "paper.json"
    assert main(["select-layers", "--method", "paper", "--out", str(out), "--device", "cpu"]) == 0
    sets, doc = read_layer_sets(out)
    names = doc["layers"]
    for a in ATTRIBUTES:
        wanted = {FFHQ1024_LAYER_NAMES[k] for k in PAPER_LAYER_SETS_1024[a]}
        assert [names[i] for i in sets[a]] == [n for n in names if n in wanted], a
        assert sets[a], a
    assert doc["metadata"]["rule"] == "paper" and "responses" not in doc["metadata"]
    assert sorted(doc["metadata"]["paper_dropped"]["albedo"]) == sorted(
        FFHQ1024_LAYER_NAMES[k] for k in PAPER_LAYER_SETS_1024["albedo"] if FFHQ1024_LAYER_NAMES[k] not in names)
    capsys.readouterr()
    _small_generator_and_recon_files(tmp_path)
    assert main(["select-layers", "--method", "paper", "--out", str(tmp_path / "p16.json"), "--device", "cpu",
                 "--generator", str(tmp_path / "g.safetensors"), "--recon", str(tmp_path / "r.safetensors")]) == 2
    assert "'albedo'" in capsys.readouterr().err and not (tmp_path / "p16.json").exists()


def test_layer_set_file_writes_non_finite_metadata_as_null(tmp_path):
    """A response that was not estimated (NaN, as the rig method's stderr) or unbounded is written as JSON null:
    the file stays strict JSON and loads."""
    meta = {"stderr": torch.tensor([[float("nan"), 0.5]]), "ratio": float("inf"), "n": torch.tensor(3),
            "nested": {"x": [1.0, float("-inf")]}}
    p = save_layer_sets(tmp_path / "s.json", {a: [0] for a in ATTRIBUTES}, ["b4.conv1"], meta)
    doc = json.loads(p.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert doc["metadata"] == {"stderr": [[None, 0.5]], "ratio": None, "n": 3, "nested": {"x": [1.0, None]}}
    assert load_layer_sets(p) == {a: [0] for a in ATTRIBUTES}


def test_select_layers_command_rig_and_both(tmp_path, capsys, monkeypatch):
    """--method both (and rig) on a small generator + network + T written to files: the rig response (whose stderr
    is not estimated) is written, its sets follow the rule on the recorded matrix, the primary sets are recon's;
    a T of another generator, or no T at all, is one clear error line."""
    from cddfm3d.assets import sha256_file
    from cddfm3d.cli import main
    from cddfm3d.editing.predictor import AttributePredictor

    G = _small_generator_and_recon_files(tmp_path)
    styles = G.flatten_styles(sample_styles(G, 64, torch.Generator().manual_seed(0)))
    T = AttributePredictor(G.style_dim, hidden=[16]).fit_normalisation(styles, torch.randn(64, 257))
    T.save(tmp_path / "t.safetensors")
    AttributePredictor(G.style_dim + 1, hidden=[16]).save(tmp_path / "t_other.safetensors")
    out = tmp_path / "sets.json"
    base = ["select-layers", "--out", str(out), "--n", "4", "--batch", "4", "--share", "0.6", "--device", "cpu",
            "--generator", str(tmp_path / "g.safetensors"), "--recon", str(tmp_path / "r.safetensors"),
            "--rig-steps", "3", "--rig-pool", "32"]
    assert main(base + ["--method", "both", "--predictor", str(tmp_path / "t.safetensors")]) == 0
    sets, doc = read_layer_sets(out)
    meta = doc["metadata"]
    assert meta["predictor_sha256"] == sha256_file(tmp_path / "t.safetensors")
    rig = meta["responses"]["rig"]
    assert all(v is None for row in rig["stderr"] for v in row)
    assert meta["sets_by_method"]["rig"] == select_layers(rig["matrix"], share=0.6)
    assert sets == meta["sets_by_method"]["recon"] == select_layers(meta["responses"]["recon"]["matrix"], share=0.6)
    capsys.readouterr()
    assert main(base + ["--method", "rig", "--predictor", str(tmp_path / "t_other.safetensors")]) == 2
    assert "style_dim" in capsys.readouterr().err
    monkeypatch.setenv(assets.ASSETS_ENV, str(tmp_path / "no_assets"))
    assets.clear_verification_cache()
    assert main(base + ["--method", "rig"]) == 2
    assert "needs the attribute predictor T" in capsys.readouterr().err
    assets.clear_verification_cache()
