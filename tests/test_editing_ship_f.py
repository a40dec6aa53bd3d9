"""ship-f (cddfm3d.editing.ship.ship_manipulators) and the evaluate command, on the shipped mini world.

A tiny gen-pairs folder (16 pairs, seed 0) and held-out folder (8 pairs, seed 1) are made with the shipped
generator and recon; train-f runs of 2 steps give F^pose and F^expression on the shipped layer sets (and, for the
refusals, an F^pose trained with a perturbed T and one over the full S). Shipping goes into a temporary copy of
the assets (``CDDFM3D_ASSETS``). The checks: the copied files against their own bytes and sha256 (hashlib), the
manifest's commands against the commands that were run, the metrics against :func:`cddfm3d.editing.evaluate`
called directly on the same held-out sources, and the provenance refusals by message with nothing shipped.
"""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from cddfm3d import assets
from cddfm3d.cli import main
from cddfm3d.editing import ATTRIBUTES
from cddfm3d.editing.baselines import fit_linear_baseline
from cddfm3d.editing.evaluation import EditingEvaluation, evaluate
from cddfm3d.editing.face_editor import FaceEditor
from cddfm3d.editing.manipulator import LatentManipulator
from cddfm3d.editing.f_training import FTrainConfig
from cddfm3d.editing.pairs import PairDataset
from cddfm3d.serialization import read_safetensors, state_sha256
from cddfm3d.editing.ship import _commands_with_init, ship_manipulators

TRAINED = ("pose", "expression")
N_EVAL = 4


def run(*argv) -> None:
    assert main([str(a) for a in argv]) == 0, argv


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def float16_rounded(net: LatentManipulator) -> LatentManipulator:
    """A copy of ``net`` with its weights rounded to float16 (kept in float32): what ship-f stores and measures."""
    out = copy.deepcopy(net)
    out.load_state_dict({k: v.half().float() for k, v in net.state_dict().items()})
    return out


def assert_float16_copy(shipped: Path, run_file: Path) -> None:
    """The shipped F^i holds the run's network with every tensor rounded to float16 (exactly torch's rounding), and
    loads as that network; a smaller file than the run's float32 export."""
    got, want = read_safetensors(shipped)[0], read_safetensors(run_file)[0]
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].dtype == torch.float16 and torch.equal(got[k], v.to(torch.float16)), k
    net, ref = LatentManipulator.load(shipped), LatentManipulator.load(run_file)
    for (k, a), (_, b) in zip(net.state_dict().items(), ref.state_dict().items(), strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, b.half().float()), k
    assert shipped.stat().st_size < 0.6 * run_file.stat().st_size


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Pairs, held-out pairs and train-f runs, all from the repository's shipped assets (only read here)."""
    t = tmp_path_factory.mktemp("ship_f")
    cmds = {"pairs": ["gen-pairs", "--out", t / "pairs", "--n", 16, "--seed", 0, "--device", "cpu"],
            "heldout": ["gen-pairs", "--out", t / "heldout", "--n", 8, "--seed", 1, "--device", "cpu"]}
    for a in TRAINED:
        cmds[a] = ["train-f", "--attribute", a, "--pairs", t / "pairs", "--out", t / "runs" / a, "--steps", 2,
                   "--batch", 4, "--eval-every", 1, "--device", "cpu"]
    # the image-mode fine-tuning of F^pose, started from the T-mode run (the checkpoint records the --init file)
    cmds["image"] = ["train-f", "--attribute", "pose", "--pairs", t / "pairs", "--out", t / "image_run", "--steps", 2,
                     "--batch", 4, "--through", "image", "--edit-weight", 2,
                     f"--init={t / 'runs' / 'pose' / 'manipulator.safetensors'}", "--device", "cpu"]
    for c in cmds.values():
        run(*c)
    T = assets.load("mini/attribute_predictor")
    with torch.no_grad():                       # another T: one weight moved
        p = next(iter(T.parameters()))
        p.view(-1)[0] += 0.5
    T.save(t / "other_t.safetensors")
    run("train-f", "--attribute", "pose", "--pairs", t / "pairs", "--out", t / "other_t_run", "--steps", 2,
        "--batch", 4, "--predictor", t / "other_t.safetensors", "--device", "cpu")
    run("train-f", "--attribute", "pose", "--pairs", t / "pairs", "--out", t / "full_s_run", "--steps", 2,
        "--batch", 4, "--full-s", "--device", "cpu")
    return t, {k: "python -m cddfm3d " + " ".join(str(x) for x in c) for k, c in cmds.items()}, state_sha256(T)


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A copy of the shipped assets without any editing network, as ``CDDFM3D_ASSETS``."""
    root = tmp_path / "assets"
    shutil.copytree(assets.assets_dir(), root)
    manifest = json.loads((root / "MANIFEST.json").read_text())
    manifest["assets"] = {k: v for k, v in manifest["assets"].items() if not k.startswith("mini/manipulator/")}
    (root / "MANIFEST.json").write_text(json.dumps(manifest))
    for f in (root / "mini").glob("manipulator_*"):
        f.unlink()
    monkeypatch.setenv(assets.ASSETS_ENV, str(root))
    assets.clear_verification_cache()
    yield root
    assets.clear_verification_cache()


def shipped_nothing(root: Path) -> bool:
    return (not [n for n in assets.available() if n.startswith("mini/manipulator/")]
            and not list((root / "mini").glob("manipulator_*")))


def evaluators() -> dict:
    out = {"recon": assets.load("mini/recon").eval()}
    if "mini/recon_independent" in assets.available():
        out["independent"] = assets.load("mini/recon_independent").eval()
    return out


# ------------------------------------------------------------------------------------------------ ship-f
def test_ship_f_registers_each_network_with_its_file_commands_and_held_out_scores(made, world, capsys):
    t, cmds, _ = made
    capsys.readouterr()
    run("ship-f", "--runs", t / "runs" / "pose", t / "runs" / "expression", "--pairs", t / "pairs",
        "--heldout-pairs", t / "heldout", "--n", N_EVAL)
    out = capsys.readouterr().out
    assert "| cddfm3d | pose |" in out and "| cddfm3d | expression |" in out and "target: swap" in out

    sets = assets.load("mini/layer_sets")
    G = assets.load("mini/generator").eval()
    T = assets.load("mini/attribute_predictor").eval()
    held = PairDataset(t / "heldout", fields=("styles", "noise_seed")).load_fields(["styles", "noise_seed"])
    nets = {a: float16_rounded(LatentManipulator.load(t / "runs" / a / "manipulator.safetensors")) for a in TRAINED}
    reference = evaluate(G, T, {"cddfm3d": nets}, held["styles"][:N_EVAL], held["noise_seed"][:N_EVAL],
                         evaluators(), attributes=list(TRAINED))
    world_line = (f"# reads mini/generator sha256 {sha256_of(world / 'mini' / 'generator.safetensors')}, mini/recon "
                  f"sha256 {sha256_of(world / 'mini' / 'recon.safetensors')} and mini/attribute_predictor sha256 "
                  f"{sha256_of(world / 'mini' / 'attribute_predictor.safetensors')}")
    ship_line = (f"python -m cddfm3d ship-f --runs {t / 'runs' / 'pose'} {t / 'runs' / 'expression'} --pairs "
                 f"{t / 'pairs'} --heldout-pairs {t / 'heldout'} --n {N_EVAL}")
    for a in TRAINED:
        e = assets.entry(f"mini/manipulator/{a}")
        file = world / e["file"]
        assert e["file"] == f"mini/manipulator_{a}.safetensors" and e["kind"] == "editing.LatentManipulator"
        run_file = t / "runs" / a / "manipulator.safetensors"
        assert_float16_copy(file, run_file)
        assert e["sha256"] == sha256_of(file) and e["size"] == file.stat().st_size
        assert e["config"] == nets[a].config and e["config"]["edit_layers"] == sorted(sets[a])
        assert e["command"].splitlines() == [world_line, cmds["pairs"], cmds["heldout"], cmds[a], ship_line]

        m = e["metrics"]
        assert m["n_sources"] == N_EVAL and m["heldout_pairs_seed"] == 1
        assert set(m["scores"]) == {f"{ev}/{tg}" for ev in reference.evaluators for tg in ("swap", "prior")}
        for key, sc in m["scores"].items():
            ev, tg = key.split("/")
            assert sc == json.loads(json.dumps(reference.score("cddfm3d", ev, tg, a).to_dict())), key
            assert sc["leakage"][a] is None
            assert sc["completion"] == pytest.approx(1 - sc["target_distance"] / sc["source_distance"], abs=1e-9)
        assert m["goal_failures"] == [x for x in reference.goal_failures("cddfm3d") if f" / {a}:" in x]
        saved = json.loads(torch.load(t / "runs" / a / "checkpoint.pt", weights_only=True)["config"])
        fields = ("through", "delta_from", "loss_mode", "edit_weight", "steps", "batch_size", "lr", "warmup",
                  "weight_decay", "render_batch", "seed")
        assert {k: m["training"][k] for k in fields} == {k: saved[k] for k in fields}
        assert m["training"]["through"] == "T" and m["training"]["delta_from"] == "T"
        run_cfg = FTrainConfig(**saved)
        assert m["training"]["weights"] == {term: run_cfg.weight(term) for term in ("rec", "render", "landmark",
                                                                                   "edge")}

        F = assets.load(f"mini/manipulator/{a}")           # the asset is the run's network, rounded to float16
        ref = nets[a]
        g = torch.Generator().manual_seed(0)
        s, delta = held["styles"][:3], torch.randn(3, F.p_dim, generator=g)
        with torch.no_grad():
            got = F(s, delta)
            assert torch.equal(got, ref(s, delta)) and not torch.equal(got, s)

    assert FaceEditor.load("mini").attributes == ["expression", "pose"]


def test_ship_f_records_the_commands_of_the_init_run_before_the_fine_tuning(made, world):
    t, cmds, _ = made
    run("ship-f", "--runs", t / "image_run", "--pairs", t / "pairs", "--heldout-pairs", t / "heldout", "--n", 2)
    e = assets.entry("mini/manipulator/pose")
    assert e["command"].splitlines()[1:-1] == [cmds["pairs"], cmds["heldout"], cmds["pose"], cmds["image"]]
    assert_float16_copy(world / e["file"], t / "image_run" / "manipulator.safetensors")
    state = torch.load(t / "image_run" / "checkpoint.pt", weights_only=True)
    init = LatentManipulator.load(t / "runs" / "pose" / "manipulator.safetensors")
    assert state["init_sha256"] == state_sha256(init)
    assert json.loads(state["config"])["through"] == "image" and json.loads(state["config"])["edit_weight"] == 2
    assert e["metrics"]["training"]["through"] == "image" and e["metrics"]["training"]["edit_weight"] == 2


def test_training_record_reads_older_checkpoints_as_the_defaults():
    """A checkpoint written before a field existed counts as that field's FTrainConfig default (what the run did);
    the weights are those the run used: the defaults with its overrides, no jaw-edge term but for shape."""
    import dataclasses

    from cddfm3d.editing.f_training import DEFAULT_WEIGHTS
    from cddfm3d.editing.ship import training_record

    defaults = {f.name: f.default for f in dataclasses.fields(FTrainConfig)}
    old = {"attribute": "pose", "edit_layers": [1], "through": "image", "steps": 400, "batch_size": 32, "lr": 0.001}
    rec = training_record(old)
    assert rec["delta_from"] == defaults["delta_from"] and rec["edit_weight"] == defaults["edit_weight"]
    assert rec["through"] == "image" and rec["steps"] == 400 and rec["seed"] == defaults["seed"]
    assert rec["weights"] == dict(DEFAULT_WEIGHTS, edge=0.0)
    new = training_record(dict(old, attribute="shape", delta_from="labels", weights={"rec": 2.0}))
    assert new["delta_from"] == "labels" and new["weights"] == dict(DEFAULT_WEIGHTS, rec=2.0)



def test_ship_f_refuses_a_fine_tuning_whose_init_file_changed(made, world, tmp_path):
    t = made[0]
    moved = tmp_path / "init"
    shutil.copytree(t / "runs" / "pose", moved)
    run("train-f", "--attribute", "pose", "--pairs", t / "pairs", "--out", tmp_path / "tuned", "--steps", 1,
        "--batch", 4, "--init", moved / "manipulator.safetensors", "--device", "cpu")
    shutil.copy(t / "image_run" / "manipulator.safetensors", moved / "manipulator.safetensors")
    with pytest.raises(ValueError, match=r"tuned/checkpoint.pt: field 'init_sha256' is .*, but .*init/manipulator"
                                         r"\.safetensors \(field 'init_file', read from .*\) holds another network"):
        ship_manipulators([tmp_path / "tuned"], t / "pairs", t / "heldout", n_eval=2)
    assert shipped_nothing(world)


def test_ship_f_refuses_an_init_outside_a_run_folder(made, world, tmp_path):
    t = made[0]
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(t / "runs" / "pose" / "manipulator.safetensors", loose)
    run("train-f", "--attribute", "pose", "--pairs", t / "pairs", "--out", tmp_path / "tuned", "--steps", 1,
        "--batch", 4, "--init", loose / "manipulator.safetensors", "--device", "cpu")
    with pytest.raises(ValueError, match=r"the init file .*loose/manipulator.safetensors is not in a train-f run "
                                         r"folder \(no commands.txt, checkpoint.pt in"):
        ship_manipulators([tmp_path / "tuned"], t / "pairs", t / "heldout", n_eval=2)
    assert shipped_nothing(world)
    # a run started from an init given in memory (the library's train_f(init=net)) has no file to trace
    state = torch.load(tmp_path / "tuned" / "checkpoint.pt", weights_only=True)
    assert state["init_file"] == str(loose / "manipulator.safetensors")
    del state["init_file"]
    with pytest.raises(ValueError, match="started from an init network given in memory"):
        _commands_with_init(tmp_path / "tuned", state)


def test_ship_f_refuses_held_out_pairs_of_the_training_seed(made, world):
    t = made[0]
    with pytest.raises(ValueError, match=r"pairs/pairs.json: field 'config.seed' is 0, the same as the training "
                                         r"pairs'.*another --seed"):
        ship_manipulators([t / "runs" / "pose"], t / "pairs", t / "pairs", n_eval=2)
    assert shipped_nothing(world)


def test_ship_f_refuses_a_run_trained_with_another_t(made, world, capsys):
    t, _, other_sha = made
    shipped_sha = state_sha256(assets.load("mini/attribute_predictor"))
    assert other_sha != shipped_sha
    capsys.readouterr()
    assert main(["ship-f", "--runs", str(t / "runs" / "expression"), str(t / "other_t_run"), "--pairs",
                 str(t / "pairs"), "--heldout-pairs", str(t / "heldout"), "--n", "2"]) == 2
    err = capsys.readouterr().err
    assert (f"{t / 'other_t_run' / 'checkpoint.pt'}: field 'predictor_sha256' is {other_sha[:12]}..., not that of "
            f"the shipped mini/attribute_predictor ({shipped_sha[:12]}...)") in err
    assert shipped_nothing(world)


def test_ship_f_refuses_other_pairs_another_layer_set_two_runs_of_one_attribute_and_missing_files(made, world):
    t = made[0]
    with pytest.raises(ValueError, match="field 'labels_sha256' is .*, not that of the pairs in .*heldout"):
        ship_manipulators([t / "runs" / "pose"], t / "heldout", t / "pairs", n_eval=2)
    shipped = sorted(assets.load("mini/layer_sets")["pose"])
    with pytest.raises(ValueError, match=(rf"full_s_run/manipulator.safetensors: edits layers {list(range(14))}, the "
                                          rf"shipped layer set of 'pose' is {shipped}").replace("[", r"\[")):
        ship_manipulators([t / "full_s_run"], t / "pairs", t / "heldout", n_eval=2)
    with pytest.raises(ValueError, match=f"two runs edit 'pose': {t / 'runs' / 'pose'} and {t / 'full_s_run'}"):
        ship_manipulators([t / "runs" / "pose", t / "full_s_run"], t / "pairs", t / "heldout", n_eval=2)
    lonely = t / "lonely"
    lonely.mkdir(exist_ok=True)
    shutil.copy(t / "runs" / "pose" / "manipulator.safetensors", lonely)
    with pytest.raises(FileNotFoundError, match="lonely/checkpoint.pt does not exist"):
        ship_manipulators([lonely], t / "pairs", t / "heldout", n_eval=2)
    with pytest.raises(ValueError, match="no run folders given"):
        ship_manipulators([], t / "pairs", t / "heldout", n_eval=2)
    assert shipped_nothing(world)


def test_ship_f_refuses_pairs_of_another_generator(made, world):
    t = made[0]
    G = assets.load("mini/generator")
    with torch.no_grad():
        G.mapping_network.w_avg += 0.1
    from cddfm3d.stylegan2 import save_generator

    save_generator(G, world / "mini" / "generator.safetensors")            # the world changed since the pairs
    assets.register("mini/generator", "mini/generator.safetensors", "stylegan2.Generator", G.config, "gan", {})
    with pytest.raises(ValueError, match="the pairs in .* was made with a generator of sha256 .*, not the shipped "
                                         "mini/generator"):
        ship_manipulators([t / "runs" / "pose"], t / "pairs", t / "heldout", n_eval=2)
    assert shipped_nothing(world)


# ------------------------------------------------------------------------------------------------ evaluate
def test_evaluate_prints_and_writes_one_report_of_every_method(made, tmp_path, capsys):
    t = made[0]
    out_file = tmp_path / "report.json"
    argv = ["evaluate", "--heldout-pairs", str(t / "heldout"), "--n", str(N_EVAL), "--batch", "4", "--no-shipped",
            "--method", f"mine={t / 'runs'}", "--linear-from", str(t / "pairs"), "--targets", "swap",
            "--reference", "--out", str(out_file)]
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for row in ("| mine | pose |", "| mine | expression |", "| mine | shape | - |", "| linear | shape |",
                "| linear | light |", "| perfect | shape |", "| perfect | mean |"):
        assert row in printed, row
    assert f"written: {out_file}" in printed
    doc = json.loads(out_file.read_text())
    assert doc["command"] == "python -m cddfm3d " + " ".join(argv)
    report = EditingEvaluation.from_dict(doc, str(out_file))
    assert report.methods == ("mine", "linear", "perfect") and report.targets == ("swap",)
    assert report.attributes == ATTRIBUTES
    assert report.n == N_EVAL and report.score("mine", "recon", "swap", "shape") is None

    # the same evaluation, made here from its parts
    G = assets.load("mini/generator").eval()
    T = assets.load("mini/attribute_predictor").eval()
    fields = ("styles", "noise_seed", "coeffs")
    held = PairDataset(t / "heldout", fields=fields).load_fields(fields)
    train = PairDataset(t / "pairs", fields=("styles",)).load_fields(["styles"])["styles"]
    with torch.no_grad():
        linear = fit_linear_baseline(train, T(train))
    mine = {a: LatentManipulator.load(t / "runs" / a / "manipulator.safetensors") for a in ATTRIBUTES
            if (t / "runs" / a / "manipulator.safetensors").is_file()}
    assert sorted(mine) == sorted(TRAINED)
    reference = evaluate(G, T, {"mine": mine, "linear": linear}, held["styles"][:N_EVAL],
                         held["noise_seed"][:N_EVAL], evaluators(), targets=["swap"], batch=4,
                         reference=held["coeffs"][:N_EVAL])
    expected = reference.to_dict()
    got = {k: v for k, v in doc.items() if k != "command"}
    assert got["scores"].keys() == expected["scores"].keys()
    for m in report.methods:
        for a in ATTRIBUTES:
            sc, ref = report.score(m, "recon", "swap", a), reference.score(m, "recon", "swap", a)
            assert (sc is None) == (ref is None)
            if sc is not None:
                assert sc.completion == pytest.approx(ref.completion, rel=1e-5, abs=1e-6), (m, a)
                assert sc.offdiag_leakage == pytest.approx(ref.offdiag_leakage, rel=1e-5, abs=1e-6), (m, a)
    assert got["pairing"] == expected["pairing"] and got["goals"] == expected["goals"]


def test_evaluate_read_deltas_adds_each_method_with_p_s_read_from_the_images(made, tmp_path, capsys):
    t = made[0]
    out_file = tmp_path / "read.json"
    argv = ["evaluate", "--heldout-pairs", str(t / "heldout"), "--n", "4", "--batch", "4", "--no-shipped",
            "--method", f"mine={t / 'runs'}", "--targets", "swap", "--read-deltas", "recon", "--out", str(out_file)]
    capsys.readouterr()
    assert main(argv) == 0
    assert "mine+recon: P_s read by recon" in capsys.readouterr().out
    report = EditingEvaluation.from_dict(json.loads(out_file.read_text()), str(out_file))
    assert report.methods == ("mine", "mine+recon") and report.delta_readers == {"mine+recon": "recon"}
    G = assets.load("mini/generator").eval()
    T = assets.load("mini/attribute_predictor").eval()
    held = PairDataset(t / "heldout", fields=("styles", "noise_seed")).load_fields(("styles", "noise_seed"))
    mine = {a: LatentManipulator.load(t / "runs" / a / "manipulator.safetensors") for a in TRAINED}
    expected = evaluate(G, T, {"mine": mine, "mine+recon": mine}, held["styles"][:4], held["noise_seed"][:4],
                        evaluators(), targets=["swap"], batch=4, delta_readers={"mine+recon": "recon"})
    for m in report.methods:
        for a in TRAINED:
            got, ref = report.score(m, "recon", "swap", a), expected.score(m, "recon", "swap", a)
            assert got.completion == pytest.approx(ref.completion, rel=1e-5, abs=1e-6), (m, a)
    assert report.score("mine", "recon", "swap", TRAINED[0]).completion != pytest.approx(
        report.score("mine+recon", "recon", "swap", TRAINED[0]).completion, abs=1e-6)
    assert main(argv[:-2] + ["--read-deltas", "nobody"]) == 2
    assert "--read-deltas nobody: no such evaluator; this run has ['recon'" in capsys.readouterr().err


def test_evaluate_refuses_nothing_to_evaluate_and_bad_method_arguments(made, tmp_path, capsys):
    t = made[0]
    base = ["evaluate", "--heldout-pairs", str(t / "heldout"), "--n", "2", "--no-shipped"]
    capsys.readouterr()
    assert main(base) == 2
    assert "evaluate: nothing to evaluate: no shipped mini/manipulator/<attribute>, no --method and no " \
           "--linear-from" in capsys.readouterr().err
    assert main(base + ["--method", "mine"]) == 2
    assert "expected NAME=PATH, found 'mine'" in capsys.readouterr().err
    assert main(base + ["--method", "=" + str(t / "runs")]) == 2
    assert "expected NAME=PATH" in capsys.readouterr().err
    assert main(base + ["--method", f"mine={tmp_path / 'nowhere'}"]) == 2
    assert f"{tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(base + ["--method", f"mine={empty}"]) == 2
    assert f"--method mine={empty}: no {empty}/<attribute>/manipulator.safetensors for any of" in \
        capsys.readouterr().err
    assert main(base + ["--evaluator", "r2"]) == 2
    assert "expected NAME=PATH, found 'r2'" in capsys.readouterr().err
