"""ship-domain (:func:`cddfm3d.adapt.ship.ship_domain_generator`): a latent-consistent fine-tuning run shipped as
``mini/generator_<domain>``, a float16 delta on ``mini/generator``.

Everything runs in a temporary copy of the shipped assets (``CDDFM3D_ASSETS``): tiny toon worlds (make-world), a
one-step toon train-recon run shipped as ``mini/recon_toon`` by ship-evaluator, and two-step finetune runs of the
shipped generator (frozen affines, and train-everything for the refusal), all through the CLI so that every folder
has the ``commands.txt`` the real commands write."""
from __future__ import annotations

import json
import shlex
import shutil

import pytest
import torch

from cddfm3d import assets
from cddfm3d.adapt.consistency import latent_consistency
from cddfm3d.adapt.delta import DELTA_FORMAT
from cddfm3d.adapt.finetuning import latent_inconsistency
from cddfm3d.adapt.ship import ship_domain_generator
from cddfm3d.cli import main
from cddfm3d.serialization import read_safetensors
from cddfm3d.stylegan2 import load_generator
from cddfm3d.world import mini_model
from cddfm3d.world.datasets import WorldDataset
from cddfm3d.world.quality import feature_stats, frechet_distance, generate, recon_features

N = 6


def run(argv) -> str:
    assert main([str(a) for a in argv]) == 0, argv
    return "python -m cddfm3d " + shlex.join(str(a) for a in argv)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    t = tmp_path_factory.mktemp("domain")
    cmds = {"train": run(["make-world", "--out", t / "train", "--n", 8, "--seed", 0, "--domains", "toon"]),
            "heldout": run(["make-world", "--out", t / "heldout", "--n", N, "--seed", 1, "--domains", "toon"]),
            "recon": run(["train-recon", "--data", t / "train", "--domain", "toon", "--out", t / "recon",
                          "--batch", 4, "--photo-batch", 0, "--width", 8, "--seed", 1, "--steps", 1,
                          "--device", "cpu"])}
    ft = ["finetune", "--data", t / "train", "--domain", "toon", "--batch", 4, "--kimg", 0.008,
          "--d-warmup-steps", 1, "--device", "cpu"]
    cmds["ft"] = run(ft + ["--out", t / "ft"])
    cmds["ft_all"] = run(ft + ["--out", t / "ft_all", "--freeze", "none"])
    cmds["ft_fg"] = run(ft + ["--out", t / "ft_fg", "--freeze", "freeze-g", "--freeze-g-blocks", 4, "--train-rgb"])
    return t, cmds


@pytest.fixture
def world(made, tmp_path, monkeypatch):
    """A copy of the shipped assets with a tiny mini/recon_toon, as ``CDDFM3D_ASSETS``."""
    t, _ = made
    root = tmp_path / "assets"
    shutil.copytree(assets.assets_dir(), root)
    monkeypatch.setenv(assets.ASSETS_ENV, str(root))
    run(["ship-evaluator", "--domain", "toon", "--recon", t / "recon", "--train-data", t / "train",
         "--heldout", t / "heldout", "--n", N])
    return root


def test_ship_domain_writes_a_delta_with_metrics_of_the_shipped_file(made, world):
    t, cmds = made
    ship = run(["ship-domain", "--domain", "toon", "--run", t / "ft", "--train-data", t / "train",
                "--heldout", t / "heldout", "--n-fd", N, "--n-consistency", 4])
    e = assets.entry("mini/generator_toon")
    assert e["kind"] == "adapt.DomainGenerator" and e["file"] == "mini/generator_toon.safetensors"
    tensors, meta = read_safetensors(world / e["file"])
    base_entry = assets.entry("mini/generator")
    assert meta["format"] == DELTA_FORMAT and meta["base"] == "mini/generator"
    assert meta["base_sha256"] == base_entry["sha256"]
    assert all(v.dtype == torch.float16 for v in tensors.values())
    assert not any(k.startswith("delta.mapping_network.") or ".affine." in k for k in tensors)
    # the loaded asset is the run's generator up to the recorded float16 rounding, w -> s exactly the base's
    G = assets.load("mini/generator_toon")
    run_G = load_generator(t / "ft" / "generator.safetensors")
    err = max(float((a - b).abs().max()) for a, b in zip(G.state_dict().values(), run_G.state_dict().values(),
                                                         strict=True))
    assert err == pytest.approx(e["metrics"]["max_abs_weight_error"], abs=1e-12)
    assert latent_inconsistency(assets.load("mini/generator"), G) == []
    # commands: the data, the run, the held-out data and the ship line
    lines = e["command"].splitlines()
    assert lines == [cmds["train"], cmds["ft"], cmds["heldout"], ship]
    # metrics recomputed here on the shipped file
    m = e["metrics"]
    net = assets.load("mini/recon_toon")
    held = WorldDataset(t / "heldout", "toon", limit=N).images
    train = WorldDataset(t / "train", "toon", limit=N).images
    real = feature_stats(recon_features(net, held))
    assert m["fd_domain_features"] == pytest.approx(
        frechet_distance(*feature_stats(recon_features(net, generate(G, N, seed=0))), *real), rel=1e-6)
    assert m["fd_floor"] == pytest.approx(frechet_distance(*feature_stats(recon_features(net, train)), *real),
                                          rel=1e-6)
    assert m["fd_ratio_to_floor"] == pytest.approx(m["fd_domain_features"] / m["fd_floor"], rel=1e-12)
    cons = latent_consistency(assets.load("mini/generator"), G, assets.load("mini/recon"), net, mini_model(), n=4)
    for a, row in cons["consistency"].items():
        for key in ("ev", "ev_centred", "correlation", "relative_distance"):
            assert m[f"consistency_{a}_{key}"] == pytest.approx(row[key], rel=1e-6, abs=1e-9), (a, key)
            assert m[f"noise_ceiling_{a}_{key}"] == pytest.approx(cons["noise_ceiling"][a][key], rel=1e-6,
                                                                  abs=1e-9), (a, key)
    assert m["w_to_s_identical"] is True and m["train_steps"] == 2
    assert (m["precision"], m["freeze"], m["freeze_g_blocks"], m["train_rgb"]) == ("float16", "affine", 0, False)
    assert "mapping and affines frozen" in e["description"] and "float16 changes" in e["description"]


def test_ship_domain_int8_freeze_g_stores_only_the_trained_block(made, world):
    """A FreezeG run (lowest 4 of 5 blocks frozen, their tRGB layers trained) shipped with --precision int8: the
    file holds only the 64-px block's and the tRGB layers' changes, weights as int8 with per-row scales; the loaded
    generator is the run's within the recorded error, and the manifest names the freeze mode and precision."""
    t, cmds = made
    ship = run(["ship-domain", "--domain", "toon", "--run", t / "ft_fg", "--train-data", t / "train",
                "--heldout", t / "heldout", "--n-fd", N, "--n-consistency", 4, "--precision", "int8"])
    e = assets.entry("mini/generator_toon")
    tensors, meta = read_safetensors(world / e["file"])
    assert meta["precision"] == "int8"
    changed = {k[len("delta."):] for k in tensors if k.startswith("delta.")}
    assert changed and all((k.startswith("synthesis_network.b64.") or ".torgb." in k) and ".affine." not in k
                           for k in changed)
    assert {k for k in changed if ".torgb." in k} == {f"synthesis_network.b{r}.torgb.{p}" for r in (4, 8, 16, 32, 64)
                                                      for p in ("weight", "bias")}
    assert {k[len("scale."):] for k in tensors if k.startswith("scale.")} == {
        k for k in changed if tensors["delta." + k].ndim >= 2}
    assert {str(tensors["delta." + k].dtype) for k in changed} == {"torch.int8", "torch.float16"}
    run_G = load_generator(t / "ft_fg" / "generator.safetensors")
    G = assets.load("mini/generator_toon")
    err = max(float((a - b).abs().max()) for a, b in zip(G.state_dict().values(), run_G.state_dict().values(),
                                                         strict=True))
    assert err == pytest.approx(e["metrics"]["max_abs_weight_error"], rel=1e-6, abs=1e-12) and err > 0
    m = e["metrics"]
    assert (m["precision"], m["freeze"], m["freeze_g_blocks"], m["train_rgb"]) == ("int8", "freeze-g", 4, True)
    assert "lowest 4 synthesis blocks frozen (FreezeG, their tRGB layers trained" in e["description"]
    assert "int8 changes" in e["description"]
    assert e["command"].splitlines() == [cmds["train"], cmds["ft_fg"], cmds["heldout"], ship]


def test_ship_domain_refuses_what_would_break_the_shared_latent(made, world, capsys, tmp_path):
    t, _ = made
    before = json.loads((world / "MANIFEST.json").read_text())
    dest = world / "mini" / "generator_toon.safetensors"
    file_before = dest.read_bytes() if dest.is_file() else None   # the repository may ship one already

    def ship(run_dir, heldout=None, n_fd=N):
        return ship_domain_generator(run_dir, "toon", t / "train", heldout or t / "heldout", n_fd=n_fd,
                                     n_consistency=4)

    with pytest.raises(ValueError, match="changes w -> s of the shipped mini/generator"):
        ship(t / "ft_all")
    mixed = tmp_path / "mixed"            # a FreezeG run's folder holding the affine run's generator
    shutil.copytree(t / "ft_fg", mixed)
    shutil.copyfile(t / "ft" / "generator.safetensors", mixed / "generator.safetensors")
    with pytest.raises(ValueError, match="freeze='freeze-g', freeze_g_blocks=4, train_rgb=True, .* different runs"):
        ship(mixed)
    with pytest.raises(ValueError, match="another seed"):
        ship(t / "ft", heldout=t / "train")
    with pytest.raises(ValueError, match="need 50 toon renders"):
        ship(t / "ft", n_fd=50)
    with pytest.raises(ValueError, match="domain must be one of"):
        ship_domain_generator(t / "ft", "human", t / "train", t / "heldout")
    # through the CLI: one line on stderr, exit status 2
    capsys.readouterr()
    assert main(["ship-domain", "--domain", "toon", "--run", str(t / "ft_all"), "--train-data", str(t / "train"),
                 "--heldout", str(t / "heldout"), "--n-fd", str(N)]) == 2
    assert "changes w -> s" in capsys.readouterr().err
    assert json.loads((world / "MANIFEST.json").read_text()) == before
    assert (dest.read_bytes() if dest.is_file() else None) == file_before
