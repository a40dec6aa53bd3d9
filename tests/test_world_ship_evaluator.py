"""ship-evaluator (:func:`cddfm3d.world.ship.ship_evaluator`): ReconNets used only to evaluate, stored as float16:
for the human domain a second ReconNet shipped as ``mini/recon_independent``, the independent evaluator of
``evaluate``; for an out-of-domain style (toon, sketch) ``mini/recon_<domain>``, the network that reads that style.

Everything runs in a temporary copy of the shipped assets (``CDDFM3D_ASSETS``) without any editing network or
independent evaluator. Tiny 64 px worlds (make-world) and train-recon runs of one or two steps (through the CLI, so
each folder has the ``commands.txt`` and ``checkpoint.pt`` the real commands write) give the candidates: a
group-norm net of seed 1 (shipped), a batch-norm width-8 net of seed 1 (another width: shipped in the seed test),
a net of the shipped recon's architecture (width 16, batch norm) and a group-norm net of seed 0 (the shipped
recon's seed: its train-recon lines have no ``--seed``). The checks: the file's bytes, sha256 and size (hashlib),
the recorded commands against the commands that were run, the metrics against :func:`evaluate_recon` computed here
on the stored (float16) file, the loaded asset against the run's network (within the first-order bound of the
rounding, computed from the network's Jacobian), the refusals by message with nothing written, and the ``evaluate``
command reading the edits with both evaluators (its independent numbers against :func:`cddfm3d.editing.evaluate`
called directly with the shipped network). The domain evaluators get their own tiny toon/sketch worlds and runs.
"""
from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from cddfm3d import assets
from cddfm3d.cli import main
from cddfm3d.face3d.recon import ReconNet
from cddfm3d.face3d.recon_training import evaluate_recon
from cddfm3d.serialization import copy_as_float16, read_safetensors
from cddfm3d.training import COMMANDS_FILE
from cddfm3d.world import DOMAINS, mini_model
from cddfm3d.world import ship as ship_module
from cddfm3d.world.datasets import WorldDataset
from cddfm3d.world.ship import _shipped_recon_seeds, evaluator_name, ship_evaluator

N_HELD = 6


def line(argv) -> str:
    return "python -m cddfm3d " + shlex.join(str(a) for a in argv)


def run(argv) -> str:
    assert main([str(a) for a in argv]) == 0, argv
    return line(argv)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Two 64 px worlds and four train-recon runs (see the module docstring) with the command lines run."""
    t = tmp_path_factory.mktemp("evaluator")
    cmds = {"train": run(["make-world", "--out", t / "train", "--n", 8, "--seed", 0]),
            "heldout": run(["make-world", "--out", t / "heldout", "--n", N_HELD, "--seed", 1])}
    shipped = assets.entry("mini/recon")["config"]
    assert (shipped["width"], shipped["norm"]) not in ((4, "group"), (8, "batch"))   # the candidates differ
    base = ["train-recon", "--data", t / "train", "--batch", 4, "--photo-batch", 0, "--device", "cpu"]
    runs = {"group_seed1": ["--width", 4, "--norm", "group", "--seed", 1, "--steps", 2],
            "width8_seed1": ["--width", 8, "--seed", 1, "--steps", 1],
            "shipped_arch": ["--width", shipped["width"], "--norm", shipped["norm"], "--seed", 1, "--steps", 1],
            "group_seed0": ["--width", 4, "--norm", "group", "--steps", 1]}
    for name, extra in runs.items():
        cmds[name] = run(base + ["--out", t / name] + extra)
    return t, cmds


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A copy of the shipped assets without editing networks or evaluation networks (the independent evaluator and
    the domain recons), as ``CDDFM3D_ASSETS``."""
    root = tmp_path / "assets"
    shutil.copytree(assets.assets_dir(), root)
    manifest = json.loads((root / "MANIFEST.json").read_text())
    evaluators = {evaluator_name(d) for d in DOMAINS}
    drop = [k for k in manifest["assets"] if k.startswith("mini/manipulator/") or k in evaluators]
    for k in drop:
        (root / manifest["assets"].pop(k)["file"]).unlink()
    (root / "MANIFEST.json").write_text(json.dumps(manifest))
    monkeypatch.setenv(assets.ASSETS_ENV, str(root))
    assets.clear_verification_cache()
    yield root
    assets.clear_verification_cache()


def shipped_nothing(root: Path, manifest_before: bytes, name: str = "recon_independent") -> bool:
    return ((root / "MANIFEST.json").read_bytes() == manifest_before
            and not (root / "mini" / f"{name}.safetensors").exists())


def as_float16(src: Path, tmp: Path) -> Path:
    return copy_as_float16(src, tmp / f"fp16_{src.parent.name}.safetensors")


def same_contents(a: Path, b: Path) -> bool:
    """Same tensors (dtype, shape, values) and metadata; the bytes may differ in the header's key order."""
    (ta, ma), (tb, mb) = read_safetensors(a), read_safetensors(b)
    return ma == mb and ta.keys() == tb.keys() and all(
        ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]) for k in ta)


def rounding_bound(net: ReconNet, x: torch.Tensor) -> torch.Tensor:
    """First-order bound [B, 257] of how much rounding every float tensor of ``net`` (weights and batch-norm
    statistics) to float16 can move its outputs: sum_i |d out / d w_i| * |delta w_i|, |delta w_i| <= max(2**-11
    |w_i|, 2**-25) (half a unit in the last place of float16's 11-bit significand; half its smallest subnormal)."""
    import copy

    from torch.func import functional_call, jacrev

    original, net = net, copy.deepcopy(net).eval()
    for m in net.modules():   # eval batch norm written out, so that its statistics are differentiable inputs too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.forward = lambda x, m=m: ((x - m.running_mean[:, None, None]) / (m.running_var[:, None, None] + m.eps)
                                        .sqrt() * m.weight[:, None, None] + m.bias[:, None, None])
    state = {k: v for k, v in {**dict(net.named_parameters()), **dict(net.named_buffers())}.items()
             if v.is_floating_point()}
    with torch.no_grad():
        torch.testing.assert_close(functional_call(net, state, (x,), {"check": False}), original(x))
    bound = torch.zeros(len(x), 257, dtype=torch.float64)
    for b in range(len(x)):
        jac = jacrev(lambda st, xb=x[b:b + 1]: functional_call(net, st, (xb,), {"check": False})[0])(state)
        for k, w in state.items():
            delta = torch.maximum(w.abs().double() * 2.0 ** -11, torch.tensor(2.0 ** -25, dtype=torch.float64))
            bound[b] += (jac[k].abs().double() * delta).reshape(257, -1).sum(1)
    return bound


def assert_rounded_copy(got: torch.Tensor, net: ReconNet, x: torch.Tensor) -> None:
    """``got`` (the float16-stored network's outputs) is ``net``'s within the rounding's first-order bound (x1.5 for
    the second-order terms, + 1e-5 for float32 arithmetic), and the rounding did move something."""
    with torch.no_grad():
        ref = net(x)
    diff, bound = (got - ref).abs().double(), rounding_bound(net, x)
    assert (diff <= 1.5 * bound + 1e-5).all(), float((diff - bound).max())
    assert diff.max() > 0 and bound.max() < 0.05 * ref.abs().max()   # the rounding moved them, a little


def reregister_recon(command: str) -> None:
    """The shipped mini/recon's entry again, with ``command`` as its recorded commands."""
    e = assets.entry("mini/recon")
    assets.register("mini/recon", e["file"], e["kind"], e["config"], command, e["metrics"], e["description"])


# ------------------------------------------------------------------------------------------------ shipping
def test_ship_evaluator_registers_the_run_with_its_commands_and_held_out_metrics(made, world, tmp_path, capsys):
    t, cmds = made
    run_dir = t / "group_seed1"
    before = {k: assets.entry(k) for k in assets.available()}
    argv = ["ship-evaluator", "--recon", run_dir, "--train-data", t / "train", "--heldout", t / "heldout",
            "--n", N_HELD]
    capsys.readouterr()
    ship_line = run(argv)
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"recon_independent", "seconds"} and printed["seconds"] > 0

    e = assets.entry("mini/recon_independent")
    file = world / e["file"]
    assert e["file"] == "mini/recon_independent.safetensors" and e["kind"] == "face3d.ReconNet"
    # the stored file is the run's network with its float tensors rounded to float16
    assert same_contents(file, as_float16(run_dir / "recon.safetensors", tmp_path))
    assert all(v.dtype == torch.float16 for v in read_safetensors(file)[0].values() if v.is_floating_point())
    assert e["sha256"] == sha256_of(file) and e["size"] == file.stat().st_size
    net = ReconNet.load(run_dir / "recon.safetensors").eval()
    assert e["config"] == json.loads(json.dumps(net.config))
    assert e["config"]["norm"] == "group" and e["config"]["width"] == 4
    assert e["command"].splitlines() == [cmds["train"], cmds["group_seed1"], cmds["heldout"], ship_line]
    assert e["description"]

    # the metrics are evaluate_recon's on the held-out renders, computed here from the stored file
    held = WorldDataset(t / "heldout", "human")
    expected = evaluate_recon(ReconNet.load(file).eval(), mini_model(), held.images, held.coeffs)
    assert e["metrics"] == printed["recon_independent"] == json.loads(json.dumps(expected))
    assert e["metrics"]["n"] == N_HELD and 0 < e["metrics"]["landmark_px"]

    # the asset is the run's network (verified against the manifest when loaded); the other entries are untouched
    loaded = assets.load("mini/recon_independent")
    assert type(loaded) is ReconNet
    assert any(isinstance(m, torch.nn.GroupNorm) for m in loaded.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.modules())
    x = held.images[:3].float() / 127.5 - 1
    assert all(p.dtype == torch.float32 for p in loaded.state_dict().values() if p.is_floating_point())
    with torch.no_grad():
        got = loaded.eval()(x)
        assert torch.equal(got, ReconNet.load(file).eval()(x))
        assert not torch.equal(got, assets.load("mini/recon").eval()(x))   # not the shipped recon
    assert_rounded_copy(got, net, x)
    assert {k: assets.entry(k) for k in before} == before


def test_ship_evaluator_refuses_the_shipped_architecture_and_seed_and_missing_files(made, world, tmp_path, capsys):
    t = made[0]
    shipped = assets.entry("mini/recon")["config"]
    arch = {"width": shipped["width"], "norm": shipped["norm"]}            # what the "shipped_arch" run copies

    def ship(run_dir, heldout=t / "heldout"):
        return ship_evaluator(run_dir, t / "train", heldout, n_eval=N_HELD)

    with pytest.raises(ValueError, match=re.escape(f"shipped_arch/recon.safetensors: the same architecture as the "
                                                   f"shipped mini/recon ({arch})") + ".*--width or --norm"):
        ship(t / "shipped_arch")
    # train-recon lines without --seed (a stopped run and its continuation): the seed is 0, the default
    reregister_recon("python -m cddfm3d make-world --out w --n 10 --seed 3\n"
                     "python -m cddfm3d train-recon --data w --out r --steps 10 --stop-at-step 4\n"
                     "python -m cddfm3d train-recon --data w --out r --steps 20")
    assert _shipped_recon_seeds() == {0}
    manifest_before = (world / "MANIFEST.json").read_bytes()
    with pytest.raises(ValueError, match=r"group_seed0/checkpoint.pt: field 'config.seed' is 0, the seed of the "
                                         r"shipped mini/recon's run.*another --seed"):
        ship(t / "group_seed0")
    # the same refusal through the CLI: one line on stderr, exit status 2
    capsys.readouterr()
    assert main(["ship-evaluator", "--recon", str(t / "group_seed0"), "--train-data", str(t / "train"),
                 "--heldout", str(t / "heldout"), "--n", str(N_HELD)]) == 2
    assert "field 'config.seed' is 0" in capsys.readouterr().err

    # a run folder without its checkpoint (the seed) or its commands.txt (the provenance)
    for missing in ("checkpoint.pt", COMMANDS_FILE):
        d = tmp_path / f"without_{missing}"
        shutil.copytree(t / "group_seed1", d)
        (d / missing).unlink()
        with pytest.raises(FileNotFoundError, match=str(d / missing)):
            ship(d)
    held = tmp_path / "heldout_without_commands"
    shutil.copytree(t / "heldout", held)
    (held / COMMANDS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=str(held / COMMANDS_FILE)):
        ship(t / "group_seed1", heldout=held)
    assert shipped_nothing(world, manifest_before)


@pytest.mark.parametrize("seed_words", [["--seed", "1"], ["--seed=1"], ["--se", "1"]])
def test_ship_evaluator_reads_the_seed_of_every_shipped_train_recon_line(made, world, seed_words):
    """A shipped recon trained with --seed 1 (in any spelling argparse accepts) refuses the seed-1 runs, whatever
    their architecture, and accepts the seed-0 run of another architecture; comments and other commands are not
    read as train-recon lines."""
    t = made[0]
    reregister_recon("\n".join([
        "python -m cddfm3d make-world --out w --n 10 --seed 7",
        "# python -m cddfm3d train-recon --data w --out r --seed 5",
        f"python -m cddfm3d train-recon --data w --out r --steps 10 {shlex.join(seed_words)} --stop-at-step 4",
        f"python -m cddfm3d train-recon --data w --out r --steps 10 {shlex.join(seed_words)}",
    ]))
    assert _shipped_recon_seeds() == {1}
    manifest_before = (world / "MANIFEST.json").read_bytes()
    for name in ("group_seed1", "width8_seed1"):
        with pytest.raises(ValueError, match=f"{name}/checkpoint.pt: field 'config.seed' is 1"):
            ship_evaluator(t / name, t / "train", t / "heldout", n_eval=N_HELD)
    assert shipped_nothing(world, manifest_before)
    report = ship_evaluator(t / "group_seed0", t / "train", t / "heldout", n_eval=N_HELD)
    assert report["recon_independent"]["n"] == N_HELD
    assert assets.entry("mini/recon_independent")["command"].splitlines()[1] == made[1]["group_seed0"]


def test_a_shipped_seed_that_is_not_a_number_is_named(made, world):
    t = made[0]
    bad = "python -m cddfm3d train-recon --data w --out r --seed one"
    reregister_recon(bad)
    manifest_before = (world / "MANIFEST.json").read_bytes()
    with pytest.raises(ValueError, match=re.escape(f"{world / 'MANIFEST.json'}: field 'assets.mini/recon.command' "
                                                   f"has the line {bad!r}: argument --seed: invalid int value: "
                                                   f"'one'")):
        ship_evaluator(t / "group_seed1", t / "train", t / "heldout", n_eval=N_HELD)
    assert shipped_nothing(world, manifest_before)


def test_another_width_alone_is_another_architecture(made, world):
    t, cmds = made
    reregister_recon("python -m cddfm3d train-recon --data w --out r --seed 3")
    ship_evaluator(t / "width8_seed1", t / "train", t / "heldout", n_eval=N_HELD)
    e = assets.entry("mini/recon_independent")
    assert (e["config"]["width"], e["config"]["norm"]) == (8, "batch")
    assert e["command"].splitlines() == [cmds["train"], cmds["width8_seed1"], cmds["heldout"]]   # no ship line


# ------------------------------------------------------------------------------------------------ other domains
@pytest.fixture(scope="module")
def made_domains(tmp_path_factory):
    """Tiny toon + sketch worlds (training seed 0, held-out seed 1 with toon only) and one-step train-recon runs of
    the shipped recon's own architecture (allowed here: nothing else reads these domains) on each domain."""
    t = tmp_path_factory.mktemp("domain_evaluators")
    cmds = {"train": run(["make-world", "--out", t / "train", "--n", 8, "--seed", 0, "--domains", "toon", "sketch"]),
            "heldout": run(["make-world", "--out", t / "heldout", "--n", N_HELD, "--seed", 1, "--domains", "toon"])}
    for domain in ("toon", "sketch"):
        cmds[domain] = run(["train-recon", "--data", t / "train", "--domain", domain, "--out", t / domain,
                            "--batch", 4, "--photo-batch", 0, "--width", 4, "--steps", 2, "--device", "cpu"])
    return t, cmds


def test_evaluator_names_follow_the_domains():
    assert [evaluator_name(d) for d in DOMAINS] == ["mini/recon_independent", "mini/recon_toon", "mini/recon_sketch"]
    with pytest.raises(ValueError, match=r"domain must be one of \('human', 'toon', 'sketch'\), found 'oil'"):
        evaluator_name("oil")


def test_ship_evaluator_ships_a_domain_network_in_float16(made_domains, world, tmp_path, capsys):
    t, cmds = made_domains
    before = {k: assets.entry(k) for k in assets.available()}
    argv = ["ship-evaluator", "--domain", "toon", "--recon", t / "toon", "--train-data", t / "train",
            "--heldout", t / "heldout", "--n", N_HELD]
    capsys.readouterr()
    ship_line = run(argv)
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"recon_toon", "mini_recon_on_the_same_renders", "seconds"}

    e = assets.entry("mini/recon_toon")
    file = world / e["file"]
    assert e["file"] == "mini/recon_toon.safetensors" and e["kind"] == "face3d.ReconNet"
    assert same_contents(file, as_float16(t / "toon" / "recon.safetensors", tmp_path))
    tensors = read_safetensors(file)[0]
    assert {v.dtype for v in tensors.values() if v.is_floating_point()} == {torch.float16}
    assert any(not v.is_floating_point() for v in tensors.values())              # batch-norm counters kept
    assert e["sha256"] == sha256_of(file) and e["size"] == file.stat().st_size
    assert e["size"] < 0.6 * (t / "toon" / "recon.safetensors").stat().st_size
    net = ReconNet.load(t / "toon" / "recon.safetensors").eval()
    assert e["config"] == json.loads(json.dumps(net.config))
    assert e["command"].splitlines() == [cmds["train"], cmds["toon"], cmds["heldout"], ship_line]
    assert "toon" in e["description"]

    # metrics: the stored file's, on the held-out toon renders; the baseline: mini/recon on the same renders
    held = WorldDataset(t / "heldout", "toon")
    shipped_net = ReconNet.load(file).eval()
    expected = json.loads(json.dumps(evaluate_recon(shipped_net, mini_model(), held.images, held.coeffs)))
    assert e["metrics"] == printed["recon_toon"] == expected
    assert expected != json.loads(json.dumps(evaluate_recon(net, mini_model(), held.images, held.coeffs)))
    baseline = evaluate_recon(assets.load("mini/recon").eval(), mini_model(), held.images, held.coeffs)
    assert printed["mini_recon_on_the_same_renders"] == json.loads(json.dumps(baseline))

    x = held.images[:2].float() / 127.5 - 1
    loaded = assets.load("mini/recon_toon").eval()
    assert all(v.dtype == torch.float32 for v in loaded.state_dict().values() if v.is_floating_point())
    with torch.no_grad():
        got = loaded(x)
        assert torch.equal(got, shipped_net(x))
    assert_rounded_copy(got, net, x)
    assert {k: assets.entry(k) for k in before} == before                        # nothing else re-registered


def test_ship_evaluator_refuses_bad_domains_and_held_out_data(made, made_domains, world, monkeypatch, capsys):
    t, _ = made_domains
    manifest_before = (world / "MANIFEST.json").read_bytes()

    def ship(domain="toon", run_dir=None, train=t / "train", heldout=t / "heldout"):
        return ship_evaluator(run_dir or t / domain, train, heldout, domain=domain, n_eval=N_HELD)

    with pytest.raises(ValueError, match=r"domain must be one of \('human', 'toon', 'sketch'\), found 'oil'"):
        ship("oil", run_dir=t / "toon")
    capsys.readouterr()
    assert main(["ship-evaluator", "--domain", "oil", "--recon", str(t / "toon"), "--train-data", str(t / "train"),
                 "--heldout", str(t / "heldout")]) == 2
    assert "invalid choice: 'oil'" in capsys.readouterr().err
    # held-out renders lacking the domain, or of the training seed
    with pytest.raises(ValueError, match=re.escape(f"{t / 'heldout'}: domain 'sketch' not stored; this dataset has "
                                                   f"['toon']")):
        ship("sketch")
    with pytest.raises(ValueError, match=re.escape(f"{t / 'train'} was made with seed 0, the training data's")):
        ship("toon", heldout=t / "train")
    # a run trained on another domain, training data without the domain
    with pytest.raises(ValueError, match=re.escape(f"{t / 'toon' / COMMANDS_FILE}: the train-recon lines read "
                                                   f"--domain ['toon'], expected 'sketch'")):
        ship("sketch", run_dir=t / "toon")
    with pytest.raises(ValueError, match=re.escape(f"{made[0] / 'train' / 'dataset.json'}: field 'config.domains' "
                                                   f"is ['human'], expected it to hold 'toon'")):
        ship("toon", train=made[0] / "train")
    # the assets budget: a file that would not fit is refused with the sizes
    total = sum(f.stat().st_size for f in world.rglob("*") if f.is_file())
    monkeypatch.setattr(ship_module, "ASSET_BUDGET_BYTES", total)
    with pytest.raises(ValueError, match=rf"mini/recon_toon.safetensors \(\d+ bytes\) would take .* to \d+ bytes, "
                                         rf"beyond the budget of {total} bytes \({total} now\)"):
        ship("toon")
    assert shipped_nothing(world, manifest_before, "recon_toon")
    assert shipped_nothing(world, manifest_before, "recon_sketch")


# ------------------------------------------------------------------------------------------------ evaluate
def test_evaluate_reads_the_edits_with_the_shipped_independent_evaluator(made, world, tmp_path, capsys):
    from cddfm3d.editing import ATTRIBUTES
    from cddfm3d.editing.evaluation import EditingEvaluation, evaluate
    from cddfm3d.editing.manipulator import LatentManipulator
    from cddfm3d.editing.pairs import PairDataset

    t = made[0]
    run(["ship-evaluator", "--recon", t / "group_seed1", "--train-data", t / "train", "--heldout", t / "heldout",
         "--n", N_HELD])
    run(["gen-pairs", "--out", tmp_path / "held_pairs", "--n", 4, "--seed", 1, "--device", "cpu"])
    G = assets.load("mini/generator").eval()
    channels = [m.channels for m in G.style_layers]
    F = LatentManipulator("pose", channels, sorted(assets.load("mini/layer_sets")["pose"]))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():                  # seeded weights: an untrained F does not edit
        for p in F.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    (tmp_path / "mine" / "pose").mkdir(parents=True)
    F.eval().save(tmp_path / "mine" / "pose" / "manipulator.safetensors")

    out_file = tmp_path / "report.json"
    capsys.readouterr()
    run(["evaluate", "--heldout-pairs", tmp_path / "held_pairs", "--n", 4, "--batch", 4, "--no-shipped",
         "--method", f"mine={tmp_path / 'mine'}", "--targets", "swap", "--out", out_file])
    printed = capsys.readouterr().out
    header = next(ln for ln in printed.splitlines() if ln.startswith("| method | attribute |"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["method", "attribute"] + [
        f"{ev}: {col}" for ev in ("recon", "independent") for col in ("completion", "leakage", "identity", "FD")]
    report = EditingEvaluation.from_dict({k: v for k, v in json.loads(out_file.read_text()).items()
                                          if k != "command"}, str(out_file))
    assert report.evaluators == ("recon", "independent")

    # the same evaluation from its parts, the independent evaluator being the run's network itself
    T = assets.load("mini/attribute_predictor").eval()
    held = PairDataset(tmp_path / "held_pairs", fields=("styles", "noise_seed")).load_fields(["styles", "noise_seed"])
    evaluators = {"recon": assets.load("mini/recon").eval(),
                  "independent": ReconNet.load(world / "mini" / "recon_independent.safetensors").eval()}
    ref = evaluate(G, T, {"mine": {"pose": F}}, held["styles"][:4], held["noise_seed"][:4], evaluators,
                   targets=["swap"], batch=4)
    for ev in ("recon", "independent"):
        sc, rf = report.score("mine", ev, "swap", "pose"), ref.score("mine", ev, "swap", "pose")
        assert sc.completion == pytest.approx(rf.completion, rel=1e-5, abs=1e-6), ev
        assert sc.offdiag_leakage == pytest.approx(rf.offdiag_leakage, rel=1e-5, abs=1e-6), ev
        assert sc.identity == pytest.approx(rf.identity, rel=1e-5, abs=1e-6), ev
        assert all(report.score("mine", ev, "swap", a) is None for a in ATTRIBUTES if a != "pose")
    # two networks read the same images differently
    assert report.score("mine", "independent", "swap", "pose").completion != \
        report.score("mine", "recon", "swap", "pose").completion


def test_ship_evaluator_refuses_a_fine_tuned_run(made, world, tmp_path):
    """An evaluator judges the networks independently, so it is trained from scratch: a train-recon --init run is
    refused (naming the checkpoint and its start) before assets/ changes."""
    t = made[0]
    start = t / "group_seed1" / "recon.safetensors"
    run(["train-recon", "--data", t / "train", "--batch", 4, "--photo-batch", 0, "--device", "cpu", "--width", 4,
         "--norm", "group", "--seed", 1, "--steps", 1, "--out", tmp_path / "ft", "--init", start])
    manifest_before = (world / "MANIFEST.json").read_bytes()
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'ft' / 'checkpoint.pt'}: the run was fine-tuned from "
                                                   f"{start} (field 'init_sha256')") + ".*from scratch"):
        ship_evaluator(tmp_path / "ft", t / "train", t / "heldout", n_eval=N_HELD)
    assert shipped_nothing(world, manifest_before)
