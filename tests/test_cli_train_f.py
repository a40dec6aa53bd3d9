"""``python -m cddfm3d train-f`` (issue 10 §1) on a tiny gen-pairs folder of the shipped mini generator and
reconstruction network: the files it writes, the JSON it prints, the layer set it edits (the shipped set, or every
layer with --full-s), resuming by re-running the command, and refused options."""
from __future__ import annotations

import json

import pytest
import torch

from cddfm3d import assets
from cddfm3d.cli import main
from cddfm3d.editing.f_training import EXPORT_FILE
from cddfm3d.editing.manipulator import LatentManipulator
from cddfm3d.editing.pairs import PairDataset, generate_pairs

N_PAIRS = 30     # the default 5 % held out: 2 pairs, enough for T's view of the edit


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    G, R = assets.load("mini/generator"), assets.load("mini/recon")
    return generate_pairs(G, R, tmp_path_factory.mktemp("pairs") / "p", N_PAIRS, seed=1, batch=N_PAIRS,
                          progress=False)


@pytest.fixture(scope="module")
def styles(pairs):
    return PairDataset(pairs, fields=("styles",)).load_fields(["styles"])["styles"]


def run(capsys, *args):
    code = main(["train-f", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def report_of(text: str) -> dict:
    return json.loads(text[:text.rindex("}") + 1])


def changed_layers(F: LatentManipulator, s: torch.Tensor) -> list[int]:
    """Layers whose styles F moves, for random deltas."""
    delta = torch.randn(len(s), F.p_dim, generator=torch.Generator().manual_seed(0))
    s_g = F(s, delta)
    bounds = F.net.offsets
    return [k for k in range(len(bounds) - 1) if not torch.equal(s_g[:, bounds[k]:bounds[k + 1]],
                                                                  s[:, bounds[k]:bounds[k + 1]])]


def test_train_f_command(pairs, styles, tmp_path, capsys):
    out = tmp_path / "shape"
    args = ["--attribute", "shape", "--pairs", pairs, "--out", out, "--steps", 3, "--batch", 8, "--eval-every", 2,
            "--lr", 0.01, "--device", "cpu"]
    code, text, err = run(capsys, *args)
    assert code == 0, err
    layer_set = assets.load("mini/layer_sets")["shape"]
    report = report_of(text)
    assert report["attribute"] == "shape" and report["layers"] == layer_set and report["step"] == 3
    view = report["held_out_T_view"]
    assert view["n"] == 2 and set(view) == {"completion_T", "leakage_T", "leakage_T_mean", "n"}
    assert f"F^shape: {out / EXPORT_FILE}" in text
    assert {p.name for p in out.iterdir()} >= {EXPORT_FILE, "checkpoint.pt", "log.json", "commands.txt"}
    commands = (out / "commands.txt").read_text()
    assert commands.count("python -m cddfm3d train-f --attribute shape") == 1
    assert [e["step"] for e in json.loads((out / "log.json").read_text()) if "val" in e] == [2, 3]
    F = LatentManipulator.load(out / EXPORT_FILE)
    assert F.attribute == "shape" and F.edit_layers == layer_set and F.p_dim == 80
    assert changed_layers(F, styles[:4]) == layer_set
    # the same command again finds the run done; a longer one resumes it
    before = F.state_dict()
    code, text, _ = run(capsys, *args)
    assert code == 0 and report_of(text)["step"] == 3
    after = LatentManipulator.load(out / EXPORT_FILE).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    code, text, _ = run(capsys, *[a if a != 3 else 5 for a in args])
    assert code == 0 and report_of(text)["step"] == 5
    # another attribute in the same folder: another architecture, refused
    code, _, err = run(capsys, *["pose" if a == "shape" else a for a in args])
    assert code == 2 and "attribute='shape' in the checkpoint, attribute='pose' requested" in err


def test_full_s_and_render_mode(pairs, styles, tmp_path, capsys):
    out = tmp_path / "light"
    code, text, err = run(capsys, "--attribute", "light", "--pairs", pairs, "--out", out, "--steps", 2, "--batch",
                          8, "--full-s", "--loss-mode", "render", "--activation", "elu", "--lr", 0.01,
                          "--device", "cpu")
    assert code == 0, err
    n_layers = len(assets.load("mini/generator").style_layers)
    assert report_of(text)["layers"] == list(range(n_layers))
    F = LatentManipulator.load(out / EXPORT_FILE)
    assert F.edit_layers == list(range(n_layers)) and F.config["activation"] == "elu"
    assert changed_layers(F, styles[:4]) == list(range(n_layers))
    assert all(torch.isfinite(torch.tensor(e["render"])) for e in json.loads((out / "log.json").read_text())
               if "render" in e)


@pytest.mark.parametrize("option, message", [
    (["--weight", "foo=1"], "expected TERM=WEIGHT with TERM one of rec, render, landmark, edge, found 'foo=1'"),
    (["--weight", "rec=-1"], "the weight must be finite and >= 0"),
    (["--weight", "rec=abc"], "the weight must be a number"),
    (["--attribute", "hair"], "invalid choice: 'hair'"),
    (["--batch", "7"], "batch_size must be even"),
    (["--batch", "64"], "larger than the training split"),
    (["--edit-weight", "-1"], "expected a number >= 0, found -1"),
    (["--through", "images"], "invalid choice: 'images'"),
])
def test_bad_options_are_refused(pairs, tmp_path, capsys, option, message):
    out = tmp_path / "bad"
    args = ["--attribute", "expression", "--pairs", pairs, "--out", out, "--steps", 2, "--device", "cpu"]
    if option[0] == "--attribute":
        args = args[2:]
    code, _, err = run(capsys, *args, *option)
    assert code == 2 and message in err, err
    assert not (out / "checkpoint.pt").exists() and not (out / EXPORT_FILE).exists()


def test_image_mode_reads_only_the_pairs_own_networks(pairs, tmp_path, capsys):
    """--through image synthesises with the pairs' generator and reads with their reconstruction network: another
    network is refused by its state sha256 (as pairs.json records it), and --recon without image mode is refused."""
    out = tmp_path / "img"
    args = ["--attribute", "pose", "--pairs", pairs, "--out", out, "--steps", 2, "--batch", 4, "--device", "cpu"]
    code, _, err = run(capsys, *args, "--recon", assets.path("mini/recon"))
    assert code == 2 and "--recon is read only with --through image" in err, err
    code, _, err = run(capsys, *args, "--through", "image", "--recon", assets.path("mini/recon_independent"))
    recorded = json.loads((pairs / "pairs.json").read_text())["networks"]["recon"]["state_sha256"]
    assert code == 2 and (f"pairs.json: field 'networks.recon.state_sha256' is {recorded[:12]}..., the recon given "
                          f"({assets.path('mini/recon_independent')})") in err, err
    assert not (out / "checkpoint.pt").exists()
    code, printed, err = run(capsys, *args, "--through", "image", "--recon", assets.path("mini/recon"))
    assert code == 0, err
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert json.loads(state["config"])["through"] == "image" and state["recon_sha256"] == recorded
