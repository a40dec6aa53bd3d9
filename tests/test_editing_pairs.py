"""Training pairs (issue 9 §1): latent sampling, labelling, gen-pairs files, PairDataset."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cddfm3d import assets
from cddfm3d.assets import sha256_file
from cddfm3d.cli import main
from cddfm3d.editing.labels import ffhq_template_5p, label_images, project_landmarks, self_align
from cddfm3d.editing.latents import mixing_sources, sample_latents
from cddfm3d.editing.pairs import (FIELDS, META_FILE, PairDataset, generate_pairs, noise_for, resynthesize,
                                   sample_seed, shard_name)
from cddfm3d.face3d import MorphableModel, ReconNet, pos
from cddfm3d.face3d.align import TEMPLATE_5P
from cddfm3d.serialization import read_safetensors, save_safetensors
from cddfm3d.stylegan2 import Generator, save_generator
from cddfm3d.world.domains import mini_model


@pytest.fixture(scope="module")
def tiny_g():
    """A random-weight 64-px generator (10 W+ slots), small enough for per-sample loops in tests. Its noise strengths
    are set to 0.5 (they start at 0), so that the noise changes the images."""
    torch.manual_seed(0)
    G = Generator(64, z_dim=16, w_dim=16, mapping_layers=2, channels={4: 16, 8: 16, 16: 8, 32: 8, 64: 8})
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    return G.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def mini_recon():
    return assets.load("mini/recon")


@pytest.fixture(scope="module")
def miniface():
    return mini_model()


@pytest.fixture(scope="module")
def pairs_a(tiny_g, mini_recon, tmp_path_factory):
    """10 pairs, seed 5, shards of 4 (4 + 4 + 2), computed 3 at a time."""
    out = tmp_path_factory.mktemp("pairs") / "a"
    return generate_pairs(tiny_g, mini_recon, out, 10, seed=5, shard_size=4, batch=3, progress=False)


def _shards(root):
    return [read_safetensors(root / shard_name(j))[0] for j in range(len(list(root.glob("pairs-*.safetensors"))))]


def _assert_same_pairs(a, b):
    sa, sb = _shards(a), _shards(b)
    assert len(sa) == len(sb) > 0
    for ta, tb in zip(sa, sb, strict=True):
        assert sorted(ta) == sorted(tb) == sorted(FIELDS)
        for f in FIELDS:
            assert torch.equal(ta[f], tb[f]), f


def _chunks(row_ids):
    """Runs of equal consecutive values: [(value, start, stop)]."""
    runs = []
    for i, v in enumerate(row_ids):
        if runs and runs[-1][0] == v:
            runs[-1][2] = i + 1
        else:
            runs.append([v, i, i + 1])
    return runs


# ---------------------------------------------------------------------------------------------------- latents
def test_official5_ws_rows_are_five_contiguous_chunks_of_mapped_z(tiny_g):
    G, n = tiny_g, 64
    ws, sources = sample_latents(G, n, torch.Generator().manual_seed(3), return_sources=True)
    assert ws.shape == (n, G.num_ws, G.w_dim) and ws.dtype == torch.float32
    # the z the function must have drawn: randn [n, 5, z_dim] first, from the same generator state
    z = torch.randn(n, 5, G.z_dim, generator=torch.Generator().manual_seed(3))
    w = G.mapping(z.reshape(-1, G.z_dim)).reshape(n, 5, G.w_dim)
    for i in range(n):
        # identify each W+ row by the mapped z it equals (read from the rows, not from `sources`)
        ids = [int(torch.nonzero((w[i] == ws[i, slot]).all(-1))[0]) for slot in range(G.num_ws)]
        runs = _chunks(ids)
        assert [r[0] for r in runs] == [0, 1, 2, 3, 4]          # 5 distinct sources, in order, each one chunk
        assert all(r[2] > r[1] for r in runs) and runs[-1][2] == G.num_ws
        assert ids == sources[i].tolist()


def test_cut_points_are_uniform_over_all_4_subsets(tiny_g):
    """Brute force: every 4-subset of 1..num_ws-1 is equally likely (126 subsets for 10 slots)."""
    n = 6300
    src = mixing_sources(tiny_g.num_ws, n, torch.Generator().manual_seed(0))
    cuts = [tuple(int(c) for c in torch.nonzero(torch.diff(r)).flatten() + 1) for r in src]
    subsets = list(itertools.combinations(range(1, tiny_g.num_ws), 4))
    counts = np.array([cuts.count(s) for s in subsets])
    assert counts.sum() == n and len(set(cuts)) == len(subsets)
    expected = n / len(subsets)
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 125 + 5 * np.sqrt(2 * 125)                     # chi-square, 125 degrees of freedom, 5 sigma


def test_plain_w_repeats_one_mapped_z(tiny_g):
    ws = sample_latents(tiny_g, 3, torch.Generator().manual_seed(1), mixing="w")
    z = torch.randn(3, 1, tiny_g.z_dim, generator=torch.Generator().manual_seed(1))[:, 0]
    assert torch.equal(ws, tiny_g.mapping(z)[:, None].expand(-1, tiny_g.num_ws, -1))


def test_sample_latents_bad_input(tiny_g):
    g = torch.Generator()
    with pytest.raises(ValueError, match="mixing must be one of"):
        sample_latents(tiny_g, 2, g, mixing="official")
    with pytest.raises(ValueError, match="n must be a positive int"):
        sample_latents(tiny_g, 0, g)
    with pytest.raises(TypeError, match="torch.Generator"):
        sample_latents(tiny_g, 2, 0)
    g16 = Generator(8, z_dim=4, w_dim=4, mapping_layers=1, channels={4: 4, 8: 4})  # 4 W+ slots
    with pytest.raises(ValueError, match="num_ws=4"):
        sample_latents(g16, 2, g)


def test_sample_latents_runs_on_the_generators_device(tiny_g):
    """``device`` is G's device (the default) or refused by name: before, another device failed inside the mapping
    with a bare device-mismatch error (the meta device stands in for a GPU the CPU generator is not on)."""
    ref = sample_latents(tiny_g, 2, torch.Generator().manual_seed(5))
    for same in ("cpu", torch.device("cpu")):
        assert torch.equal(sample_latents(tiny_g, 2, torch.Generator().manual_seed(5), device=same), ref)
    with pytest.raises(ValueError, match=r"sample_latents: device must be the generator's device .*expected cpu, "
                                         r"found meta; move the generator first \(G.to\('meta'\)\)"):
        sample_latents(tiny_g, 2, torch.Generator(), device="meta")


# ---------------------------------------------------------------------------------------------------- labels
def _project_landmarks_f64(fm: MorphableModel, coeffs: torch.Tensor, size: int) -> np.ndarray:
    """The 68 keypoints of ``coeffs`` in ``size``-px pixels, in float64 numpy with scipy's rotation."""
    c = coeffs.double().numpy()
    base = fm.shape_base.double().numpy()
    shape = fm.mean_shape.double().numpy()[None] + (c[:, :144] @ base.T).reshape(len(c), -1, 3)
    rot = Rotation.from_euler("xyz", c[:, 224:227]).as_matrix()
    v = np.einsum("bij,bnj->bni", rot, shape) + c[:, None, 254:257]
    kp = v[:, fm.keypoints.numpy()]
    f, ctr = 1015.0 * size / 224, 112.0 * size / 224
    d = 10.0 - kp[..., 2]
    return np.stack([f * kp[..., 0] / d + ctr, (size - 1) - (f * kp[..., 1] / d + ctr)], -1)


def test_label_images_none_is_the_network_on_the_stored_image(tiny_g, mini_recon, miniface):
    ws = sample_latents(tiny_g, 3, torch.Generator().manual_seed(2))
    u8 = ((tiny_g.synthesis(ws, noise="const") + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    coeffs, lm = label_images(mini_recon, u8, miniface)
    assert coeffs.shape == (3, 257) and lm.shape == (3, 68, 2)
    assert torch.equal(coeffs, mini_recon(u8.float() / 127.5 - 1.0))   # the mini world datasets' conversion
    np.testing.assert_allclose(lm.numpy(), _project_landmarks_f64(miniface, coeffs, 64), atol=2e-3)
    # float input in the generator's range gives the same labels up to the uint8 rounding
    torch.testing.assert_close(lm, miniface(coeffs, image_size=64).landmarks, atol=1e-4, rtol=0)
    assert torch.equal(project_landmarks(miniface, coeffs, 64), lm)
    c2, _ = label_images(mini_recon, u8.float() / 127.5 - 1.0, miniface)
    torch.testing.assert_close(c2, coeffs, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="network's size 64 x 64"):
        label_images(mini_recon, torch.zeros(1, 3, 32, 32, dtype=torch.uint8), miniface)
    with pytest.raises(ValueError, match="align must be one of"):
        label_images(mini_recon, u8, miniface, align="mtcnn")
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        label_images(mini_recon, u8[0], miniface)


def test_ffhq_template_follows_the_ffhq_alignment_rule():
    p = ffhq_template_5p(1024)
    eyes, mouth = p[:2].mean(0), p[3:].mean(0)
    assert np.linalg.norm(p[1] - p[0]) == pytest.approx(256.0)          # crop side 4 x eye distance
    np.testing.assert_allclose(eyes + 0.1 * (mouth - eyes), [511.5, 511.5], atol=1e-9)
    # the frontal projection of the template: POS recovers the template's own scale (px per dm)
    _, s = pos(np.stack([p[:, 0], 1023 - p[:, 1]], 1), TEMPLATE_5P)
    assert s == pytest.approx(256.0 / np.linalg.norm(TEMPLATE_5P[1, :2] - TEMPLATE_5P[0, :2]), rel=0.02)


@pytest.fixture(scope="module")
def real_pairs(miniface, tmp_path_factory):
    """Real-size stand-in: FFHQ-1024 config-f generator and Deep3D ResNet-50 at 224 px, random weights (heads
    perturbed so that the predicted faces move), 2 pairs with self-alignment (MiniFace stands in for BFM)."""
    torch.manual_seed(0)
    G = Generator(1024).eval().requires_grad_(False)
    recon = ReconNet("resnet50", image_size=224).eval().requires_grad_(False)
    with torch.no_grad():
        for head in recon.final_layers:
            head.weight.normal_(0, 1e-3)
    out = generate_pairs(G, recon, tmp_path_factory.mktemp("real") / "p", 2, seed=1, model=miniface, progress=False)
    return G, recon, out


def test_real_size_pairs_shapes_and_self_alignment(real_pairs, miniface):
    """Every crop is the POS alignment of the points it was given (numpy reference), round r's landmarks are the
    coefficients' 68 points mapped back from the crop (float64 formula), and the points of round r + 1 are the
    5 points of round r's landmarks; the stored labels are the last round's."""
    _, recon, root = real_pairs
    ds = PairDataset(root, fields=FIELDS)
    assert ds.config["align"] == "self" and ds.config["rounds"] == 2 and ds.config["style_dim"] == 9088
    d = ds.load_fields(FIELDS)
    assert d["images"].shape == (2, 3, 1024, 1024) and d["ws"].shape == (2, 18, 512)
    assert d["coeffs"].shape == (2, 257) and d["landmarks"].shape == (2, 68, 2)
    for i in range(2):
        out = self_align(recon, d["images"][i:i + 1], miniface, rounds=2)   # as generate_pairs: one by one
        assert out.points.shape == (3, 1, 5, 2) and out.trans_params.shape == (3, 1, 5)
        assert torch.equal(d["coeffs"][i], out.coeffs[0]) and torch.equal(d["landmarks"][i], out.landmarks[0])
        np.testing.assert_allclose(out.points[0, 0].numpy(), ffhq_template_5p(1024), atol=1e-9)
        assert float((out.points[1] - out.points[0]).abs().max()) > 1.0     # the alignment did move
        for r in range(3):
            pts = out.points[r, 0].numpy()
            t, s = pos(np.stack([pts[:, 0], 1023 - pts[:, 1]], 1))   # Deep3D's y-up frame, numpy reference
            np.testing.assert_allclose(out.trans_params[r, 0].numpy(), [1024, 1024, 102.0 / s, t[0], t[1]],
                                       rtol=1e-6)
            lm224 = _project_landmarks_f64(miniface, out.round_coeffs[r], 224)[0]
            w0, h0, sp, tx, ty = out.trans_params[r, 0].numpy()
            w, h = int(w0 * sp), int(h0 * sp)
            up = np.stack([lm224[:, 0], 223 - lm224[:, 1]], 1)
            orig = (up + [w / 2 - 112, h / 2 - 112]) / sp + [tx - w0 / 2, ty - h0 / 2]
            np.testing.assert_allclose(out.round_landmarks[r, 0].numpy(), np.stack([orig[:, 0], 1023 - orig[:, 1]], 1),
                                       atol=2e-2)
            if r < 2:
                assert not out.kept[r + 1, 0]
                lm = out.round_landmarks[r, 0].double().numpy()
                five = np.stack([lm[[36, 39]].mean(0), lm[[42, 45]].mean(0), lm[30], lm[48], lm[54]])
                np.testing.assert_allclose(out.points[r + 1, 0].numpy(), five, atol=1e-4)


# ---------------------------------------------------------------------------------------------------- pairs
def test_pairs_are_deterministic_and_independent_of_batch(pairs_a, tiny_g, mini_recon, tmp_path):
    b = generate_pairs(tiny_g, mini_recon, tmp_path / "b", 10, seed=5, shard_size=4, batch=10, progress=False)
    _assert_same_pairs(pairs_a, b)
    c = generate_pairs(tiny_g, mini_recon, tmp_path / "c", 4, seed=6, shard_size=4, progress=False)
    assert not torch.equal(_shards(c)[0]["styles"], _shards(pairs_a)[0]["styles"])   # the seed matters
    d = PairDataset(pairs_a, fields=("index", "noise_seed")).load_fields(["index", "noise_seed"])
    assert d["index"].tolist() == list(range(10))
    assert d["noise_seed"].tolist() == [sample_seed(5, i, "noise") for i in range(10)]


def test_resume_after_interruption_equals_an_uninterrupted_run(pairs_a, tiny_g, mini_recon, tmp_path):
    out = tmp_path / "r"
    generate_pairs(tiny_g, mini_recon, out, 10, seed=5, shard_size=4, batch=4, progress=False, max_shards=1)
    assert (out / shard_name(0)).is_file() and not (out / shard_name(1)).is_file()
    with pytest.raises(ValueError, match="incomplete"):
        PairDataset(out)
    (out / (shard_name(1) + ".tmp")).write_bytes(b"half a shard")   # what a kill during the write leaves
    before = (out / shard_name(0)).stat().st_mtime_ns
    generate_pairs(tiny_g, mini_recon, out, 10, seed=5, shard_size=4, batch=7, progress=False)
    assert (out / shard_name(0)).stat().st_mtime_ns == before                      # continued, not redone
    _assert_same_pairs(pairs_a, out)
    import json

    m_a, m_r = (json.loads((p / META_FILE).read_text()) for p in (pairs_a, out))
    assert [s["sha256"] for s in m_a["shards"]] == [s["sha256"] for s in m_r["shards"]]
    assert m_r["complete"] and m_r["config"] == m_a["config"]


def test_stored_styles_and_noise_reproduce_the_images_exactly(pairs_a, tiny_g):
    d = PairDataset(pairs_a, fields=("styles", "ws", "noise_seed", "images")).load_fields(
        ["styles", "ws", "noise_seed", "images"])
    assert torch.equal(resynthesize(tiny_g, d["styles"], d["noise_seed"]), d["images"])
    i = 7   # the plain public calls, one sample
    img = tiny_g.synthesis_from_styles(tiny_g.unflatten_styles(d["styles"][i:i + 1]),
                                       noise=noise_for(tiny_g, d["noise_seed"][i:i + 1]))
    assert torch.equal(((img + 1) * 127.5).round().clamp(0, 255).to(torch.uint8), d["images"][i:i + 1])
    # other noise changes the image: the stored seed is what makes it exact
    other = tiny_g.synthesis_from_styles(tiny_g.unflatten_styles(d["styles"][i:i + 1]),
                                         noise=noise_for(tiny_g, d["noise_seed"][i:i + 1] + 1))
    assert not torch.equal(((other + 1) * 127.5).round().clamp(0, 255).to(torch.uint8), d["images"][i:i + 1])
    # the noise maps: one CPU generator per sample, randn(1, 1, r, r) per conv layer in noise order
    maps = noise_for(tiny_g, [11, 12])
    res = [4, 8, 8, 16, 16, 32, 32, 64, 64]
    assert [tuple(m.shape) for m in maps] == [(2, 1, r, r) for r in res]
    g = torch.Generator().manual_seed(12)
    assert all(torch.equal(maps[j][1:], torch.randn(1, 1, r, r, generator=g)) for j, r in enumerate(res))
    # styles are the W+ latents' StyleSpace, each sample on its own
    for i in (0, 9):
        assert torch.equal(tiny_g.flatten_styles(tiny_g.w_to_styles(d["ws"][i:i + 1])), d["styles"][i:i + 1])


def test_stored_ws_are_five_contiguous_chunks(pairs_a):
    ws = PairDataset(pairs_a, fields=("ws",))[0]["ws"]
    for sample in PairDataset(pairs_a, fields=("ws",)).load_fields(["ws"])["ws"]:
        rows = [tuple(r.tolist()) for r in sample]
        runs = _chunks(rows)
        assert len(runs) == 5 and len({r[0] for r in runs}) == 5 and runs[-1][2] == len(rows)
    assert ws.shape == (10, 16)


def test_stored_labels_are_the_network_on_the_stored_images(pairs_a, mini_recon, miniface):
    d = PairDataset(pairs_a, fields=("images", "coeffs", "landmarks")).load_fields(["images", "coeffs", "landmarks"])
    for i in range(10):
        assert torch.equal(d["coeffs"][i:i + 1], mini_recon(d["images"][i:i + 1].float() / 127.5 - 1.0))
    np.testing.assert_allclose(d["landmarks"].numpy(), _project_landmarks_f64(miniface, d["coeffs"], 64), atol=2e-3)


def test_pair_dataset_items_and_provenance(pairs_a, tiny_g, mini_recon):
    from cddfm3d.serialization import state_sha256

    ds = PairDataset(pairs_a)
    assert len(ds) == 10 and set(ds[3]) == {"styles", "coeffs"}
    assert ds[3]["styles"].shape == (tiny_g.style_dim,) and ds[-1]["coeffs"].shape == (257,)
    whole = ds.load_fields(["styles", "coeffs"])
    assert torch.equal(whole["styles"][3], ds[3]["styles"])
    assert ds.generator_sha256 == state_sha256(tiny_g) and ds.recon_sha256 == state_sha256(mini_recon)
    assert ds.config["n"] == 10 and ds.config["mixing"] == "official5" and ds.config["style_dim"] == tiny_g.style_dim
    assert [row["offset"] for row in ds.config["layers"]] == [m.offset for m in tiny_g.style_layers]
    with pytest.raises(IndexError):
        ds[10]
    with pytest.raises(ValueError, match="unknown field"):
        ds.load_fields(["latents"])
    with pytest.raises(ValueError, match="fields must be a non-empty subset"):
        PairDataset(pairs_a, fields=("styles", "image"))


# ---------------------------------------------------------------------------------------------------- bad input
def test_resume_with_another_config_or_network_names_the_field(pairs_a, tiny_g, mini_recon, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(pairs_a, out)
    with pytest.raises(ValueError, match=r"'config.seed' is 5 in the folder, 6 requested"):
        generate_pairs(tiny_g, mini_recon, out, 10, seed=6, shard_size=4, progress=False)
    with pytest.raises(ValueError, match=r"'config.mixing' is 'official5' in the folder, 'w' requested"):
        generate_pairs(tiny_g, mini_recon, out, 10, seed=5, mixing="w", shard_size=4, progress=False)
    with pytest.raises(ValueError, match=r"'config.n' is 10 in the folder, 12 requested"):
        generate_pairs(tiny_g, mini_recon, out, 12, seed=5, shard_size=4, progress=False)
    other = Generator(64, z_dim=16, w_dim=16, mapping_layers=2, channels={4: 16, 8: 16, 16: 8, 32: 8, 64: 8}).eval()
    with pytest.raises(ValueError, match=r"'networks.generator.state_sha256'"):
        generate_pairs(other, mini_recon, out, 10, seed=5, shard_size=4, progress=False)
    for kw, match in (({"n": 0}, "n must be an int"), ({"mixing": "x"}, "mixing must be one of"),
                      ({"align": "dlib"}, "align must be one of"), ({"batch": 0}, "batch must be an int"),
                      ({"align": "self", "rounds": -1}, "rounds must be an int")):
        args = dict(n=2, seed=0, progress=False) | kw
        with pytest.raises(ValueError, match=match):
            generate_pairs(tiny_g, mini_recon, tmp_path / "bad", **args)
    assert not (tmp_path / "bad").exists()                      # refused before anything was written
    g32 = Generator(32, z_dim=8, w_dim=8, mapping_layers=1, channels={4: 8, 8: 8, 16: 8, 32: 8}).eval()
    with pytest.raises(ValueError, match="align='none' needs generated images of the network's size 64"):
        generate_pairs(g32, mini_recon, tmp_path / "bad", 2, align="none", progress=False)


def test_damaged_folders_are_reported_by_file_and_field(pairs_a, tmp_path):
    import json
    import shutil

    def fresh(name):
        out = tmp_path / name
        shutil.copytree(pairs_a, out)
        return out

    out = fresh("corrupt")
    (out / shard_name(1)).write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match=rf"{shard_name(1)}: not a readable safetensors file"):
        PairDataset(out)
    out = fresh("nofield")
    t, meta = read_safetensors(out / shard_name(2))
    del t["coeffs"]
    save_safetensors(t, out / shard_name(2), meta)
    PairDataset(out, fields=("styles",), verify=False)          # the other fields are still readable
    with pytest.raises(ValueError, match=rf"{shard_name(2)}: field 'coeffs' is missing"):
        PairDataset(out, fields=("coeffs",))
    out = fresh("shape")
    t, meta = read_safetensors(out / shard_name(0))
    t["styles"] = t["styles"][:, :-1].contiguous()
    save_safetensors(t, out / shard_name(0), meta)
    with pytest.raises(ValueError, match=r"field 'styles': expected shape \[4, \d+\] F32, found \[4, \d+\] F32"):
        PairDataset(out)
    out = fresh("edited")
    t, meta = read_safetensors(out / shard_name(0))
    t["coeffs"][0, 0] += 1.0
    save_safetensors(t, out / shard_name(0), meta)
    with pytest.raises(ValueError, match=r"sha256 differs from pairs.json"):
        PairDataset(out)
    PairDataset(out, verify=False)
    out = fresh("missing")
    (out / shard_name(2)).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{shard_name(2)}: shard listed in .* is missing"):
        PairDataset(out)
    out = fresh("meta")
    m = json.loads((out / META_FILE).read_text())
    m["format"] = "cddfm3d.world-dataset"
    (out / META_FILE).write_text(json.dumps(m))
    with pytest.raises(ValueError, match=r"field 'format' is 'cddfm3d.world-dataset', expected 'cddfm3d.pairs'"):
        PairDataset(out)
    with pytest.raises(FileNotFoundError, match="not a pairs folder"):
        PairDataset(tmp_path)


def test_cli_gen_pairs(tiny_g, tmp_path, capsys):
    gen = tmp_path / "g.safetensors"
    save_generator(tiny_g, gen)
    out = tmp_path / "cli"
    args = ["gen-pairs", "--out", str(out), "--n", "3", "--shard-size", "2", "--generator", str(gen),
            "--device", "cpu", "--seed", "4"]
    assert main(args) == 0
    ds = PairDataset(out, fields=("styles", "coeffs", "images"))
    assert len(ds) == 3 and ds.generator_sha256 == sha256_file(gen)
    assert ds.recon_sha256 == assets.entry("mini/recon")["sha256"]
    assert ds.meta["commands"] == ["python -m cddfm3d " + " ".join(args)]
    assert main(args) == 0                                                  # complete: a re-run changes nothing
    assert PairDataset(out).meta["shards"] == ds.meta["shards"]
    capsys.readouterr()
    assert main(args[:-1] + ["5"]) == 2
    assert "'config.seed' is 4 in the folder, 5 requested" in capsys.readouterr().err
    assert main(["gen-pairs", "--out", str(tmp_path / "x"), "--n", "0"]) == 2
    assert main(["gen-pairs", "--out", str(tmp_path / "x"), "--n", "2", "--mixing", "mix"]) == 2
    assert not (tmp_path / "x").exists()
    from cddfm3d.cli import build_parser

    # torchrun's parser takes --n as an abbreviation of its own options; --count passes through
    assert build_parser().parse_args(["gen-pairs", "--out", "x", "--count", "7"]).n == 7
