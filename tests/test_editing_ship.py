"""ship-editing: T and the layer sets from the shipped world, evaluated and registered with their commands."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from cddfm3d import assets
from cddfm3d.cli import main
from cddfm3d.stylegan2 import Generator, save_generator


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A temporary assets folder whose mini/generator is a tiny 64-px generator and mini/recon the shipped one."""
    root = tmp_path / "assets"
    (root / "mini").mkdir(parents=True)
    recon_entry = assets.entry("mini/recon")
    shutil.copy(assets.path("mini/recon"), root / "mini" / "recon.safetensors")
    torch.manual_seed(0)
    G = Generator(64, z_dim=16, w_dim=16, mapping_layers=2, channels={4: 16, 8: 16, 16: 8, 32: 8, 64: 8}).eval()
    save_generator(G, root / "mini" / "generator.safetensors")
    monkeypatch.setenv(assets.ASSETS_ENV, str(root))
    assets.clear_verification_cache()
    assets.register("mini/recon", "mini/recon.safetensors", "face3d.ReconNet", recon_entry["config"], "recon cmd", {})
    assets.register("mini/generator", "mini/generator.safetensors", "stylegan2.Generator", G.config, "gan cmd", {})
    yield tmp_path
    assets.clear_verification_cache()


def run(*argv) -> None:
    assert main([str(a) for a in argv]) == 0, argv


def test_ship_editing_end_to_end(world, capsys):
    t = world
    run("gen-pairs", "--out", t / "pairs", "--n", 48, "--seed", 1, "--shard-size", 24, "--device", "cpu")
    run("gen-pairs", "--out", t / "heldout", "--n", 16, "--seed", 2, "--device", "cpu")
    run("train-t", "--pairs", t / "pairs", "--out", t / "t", "--steps", 6, "--batch", 16, "--loss", "pdc",
        "--device", "cpu")
    run("select-layers", "--out", t / "sets.json", "--method", "recon", "--n", 2, "--device", "cpu")
    capsys.readouterr()
    run("ship-editing", "--pairs", t / "pairs", "--t", t / "t", "--heldout-pairs", t / "heldout",
        "--layer-sets", t / "sets.json")
    report = json.loads(capsys.readouterr().out)

    T = assets.load("mini/attribute_predictor")
    G = assets.load("mini/generator")
    s = G.flatten_styles(G.w_to_styles(G.mapping(torch.randn(3, 16))))
    assert T(s).shape == (3, 257)
    sets = assets.load("mini/layer_sets")
    assert list(sets) == ["shape", "expression", "albedo", "pose", "light"]
    assert all(v == sorted(v) and v and all(0 <= i < len(G.style_layers) for i in v) for v in sets.values())

    entry = assets.entry("mini/attribute_predictor")
    cmds = entry["command"].splitlines()
    assert cmds[0] == (f"# reads mini/generator sha256 {assets.entry('mini/generator')['sha256']} and mini/recon "
                       f"sha256 {assets.entry('mini/recon')['sha256']}")
    assert [c.split()[3] for c in cmds[1:4]] == ["gen-pairs", "train-t", "gen-pairs"]
    assert cmds[-1].startswith("python -m cddfm3d ship-editing")
    m = entry["metrics"]
    assert m == report["attribute_predictor"] and m["n"] == 16 and m["n_train_pairs"] == 48
    assert (m["train_pairs_seed"], m["heldout_pairs_seed"]) == (1, 2)
    assert set(m["goals_met"]) and all(isinstance(v, bool) for v in m["goals_met"].values())
    layer_cmds = assets.entry("mini/layer_sets")["command"].splitlines()
    assert any(" select-layers " in c for c in layer_cmds)
    assert assets.entry("mini/layer_sets")["metrics"]["sets"] == sets


def test_ship_editing_refuses_pairs_of_another_generator(world, capsys):
    t = world
    run("gen-pairs", "--out", t / "pairs", "--n", 24, "--seed", 1, "--device", "cpu")
    run("train-t", "--pairs", t / "pairs", "--out", t / "t", "--steps", 2, "--batch", 4, "--loss", "pdc",
        "--device", "cpu")
    run("select-layers", "--out", t / "sets.json", "--method", "recon", "--n", 2, "--device", "cpu")
    G2 = Generator(64, z_dim=16, w_dim=16, mapping_layers=2, channels={4: 16, 8: 16, 16: 8, 32: 8, 64: 8})
    save_generator(G2, assets.assets_dir() / "mini" / "generator.safetensors")   # the world changed since
    assets.register("mini/generator", "mini/generator.safetensors", "stylegan2.Generator", G2.config, "gan", {})
    capsys.readouterr()
    assert main(["ship-editing", "--pairs", str(t / "pairs"), "--t", str(t / "t"), "--heldout-pairs",
                 str(t / "pairs"), "--layer-sets", str(t / "sets.json")]) == 2
    assert "not the shipped mini/generator" in capsys.readouterr().err
    assert not (assets.assets_dir() / "mini" / "attribute_predictor.safetensors").exists()


def test_ship_editing_refuses_heldout_pairs_of_the_training_seed(world, capsys):
    """Held-out pairs made with the training pairs' seed are the same samples (a function of (seed, index)): T's
    evaluation on them would be on its training data, so shipping is refused naming the field."""
    t = world
    run("gen-pairs", "--out", t / "pairs", "--n", 24, "--seed", 1, "--device", "cpu")
    run("gen-pairs", "--out", t / "heldout", "--n", 8, "--seed", 1, "--device", "cpu")
    run("train-t", "--pairs", t / "pairs", "--out", t / "t", "--steps", 2, "--batch", 4, "--loss", "pdc",
        "--device", "cpu")
    run("select-layers", "--out", t / "sets.json", "--method", "recon", "--n", 2, "--device", "cpu")
    capsys.readouterr()
    assert main(["ship-editing", "--pairs", str(t / "pairs"), "--t", str(t / "t"), "--heldout-pairs",
                 str(t / "heldout"), "--layer-sets", str(t / "sets.json")]) == 2
    err = capsys.readouterr().err
    assert "heldout/pairs.json: field 'config.seed' is 1" in err and "another --seed" in err
    assert not (assets.assets_dir() / "mini" / "attribute_predictor.safetensors").exists()


def test_ship_editing_refuses_a_t_trained_on_other_pairs(world, capsys):
    """T's checkpoint records its labels' sha256: shipping it with other --pairs (whose record, commands and
    n_train_pairs would then describe data T never saw) is refused naming the file, the field and both hashes;
    before, it shipped."""
    from cddfm3d.editing.pairs import PairDataset
    from cddfm3d.editing.t_training import labels_sha256

    t = world
    run("gen-pairs", "--out", t / "pairs", "--n", 24, "--seed", 1, "--device", "cpu")
    run("gen-pairs", "--out", t / "other", "--n", 8, "--seed", 3, "--device", "cpu")
    run("train-t", "--pairs", t / "pairs", "--out", t / "t", "--steps", 2, "--batch", 4, "--loss", "pdc",
        "--device", "cpu")
    (t / "sets.json").write_text("{}")          # never read: the check comes first
    capsys.readouterr()
    assert main(["ship-editing", "--pairs", str(t / "other"), "--t", str(t / "t"), "--heldout-pairs",
                 str(t / "pairs"), "--layer-sets", str(t / "sets.json")]) == 2
    err = capsys.readouterr().err
    trained = labels_sha256(PairDataset(t / "pairs").load_fields(["coeffs"])["coeffs"])
    given = labels_sha256(PairDataset(t / "other").load_fields(["coeffs"])["coeffs"])
    assert trained != given
    assert (f"{t / 't' / 'checkpoint.pt'}: field 'labels_sha256' is {trained[:12]}..., but the labels of the pairs "
            f"in {t / 'other'} hash to {given[:12]}...") in err
    assert not (assets.assets_dir() / "mini" / "attribute_predictor.safetensors").exists()
    # the record is the training labels' hash (what train-t wrote is what ship-editing recomputes)
    assert torch.load(t / "t" / "checkpoint.pt", weights_only=True)["labels_sha256"] == trained
