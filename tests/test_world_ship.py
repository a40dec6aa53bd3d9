"""Shipping the mini world's networks: ``ship_mini_assets`` end to end on tiny datasets and networks (files in
``assets/mini``, manifest entries with sha256, size, config, recorded commands and finite metrics), its errors,
``record_command``/``read_commands`` and the ``ship-mini`` command."""
from __future__ import annotations

import hashlib
import json
import math
import shlex
import shutil

import numpy as np
import pytest
import torch

from cddfm3d import assets, cli
from cddfm3d.face3d.morphable import SLICES
from cddfm3d.face3d.recon import ReconNet
from cddfm3d.stylegan2.checkpoints import save_generator
from cddfm3d.stylegan2.generator import Generator
from cddfm3d.serialization import state_sha256
from cddfm3d.training import COMMANDS_FILE, read_commands, record_command
from cddfm3d.world import mini_model, quality
from cddfm3d.world.datasets import WorldDataset, write_dataset
from cddfm3d.world.ship import ship_mini_assets

# tiny held-out sets: fewer samples than feature dimensions, so the Fréchet distances see singular covariances
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::scipy.linalg.LinAlgWarning")

SIZE, N_FD, N_PHOTO = 32, 20, 4
GEN_KEYS = {"fd_recon_features", "fd_floor_renders_vs_renders", "fd_ratio_to_floor", "n_fd", "feature_dim",
            "latency_ms_batch1_cpu", "cpu_threads"}
RECON_KEYS = {"n", "landmark_px", "rmse_id", "rmse_exp", "rmse_tex", "rmse_gamma", "rmse_trans", "angle_deg_pitch",
              "r2_id", "r2_exp", "r2_tex", "r2_gamma", "r2_trans", "r2_angle", "angle_deg_yaw", "angle_deg_roll",
              "photometric_heldout_renders", "photometric_generator_samples",
              "n_generator_samples", "ev_shape", "ev_expression", "ev_albedo", "ev_light", "ev_pose"}


def tiny_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(SIZE, z_dim=8, w_dim=8, mapping_layers=1, channels={4: 8, 8: 8, 16: 8, 32: 8}).eval()


def line(argv) -> str:
    return "python -m cddfm3d " + shlex.join(argv)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three datasets, a GAN run and a recon run, each with the commands.txt its commands would write."""
    root = tmp_path_factory.mktemp("world")
    dirs = {k: root / k for k in ("train", "heldout", "floor", "gan", "recon")}
    cmds = {}
    for name, n, seed in (("train", 4, 0), ("heldout", N_FD, 1), ("floor", N_FD, 2)):
        argv = ["make-world", "--out", str(dirs[name]), "--n", str(n), "--seed", str(seed), "--size", str(SIZE)]
        record_command(dirs[name], argv)
        write_dataset(dirs[name], n, seed=seed, size=SIZE, progress=False)
        cmds[name] = [line(argv)]
    gan_argv = ["train-gan", "--data", str(dirs["train"]), "--out", str(dirs["gan"]), "--resolution", str(SIZE)]
    record_command(dirs["gan"], gan_argv)
    record_command(dirs["gan"], gan_argv + ["--kimg", "2"])  # a resumed run appends its own line
    cmds["gan"] = [line(gan_argv), line(gan_argv + ["--kimg", "2"])]
    G = tiny_generator()
    save_generator(G, dirs["gan"] / "generator.safetensors")
    torch.save({"images_seen": 1234, "step": 77}, dirs["gan"] / "checkpoint.pt")
    recon_argv = ["train-recon", "--data", str(dirs["train"]), "--out", str(dirs["recon"]), "--note", "a b 'c'"]
    record_command(dirs["recon"], recon_argv)
    cmds["recon"] = [line(recon_argv)]
    torch.manual_seed(1)
    net = ReconNet("small", image_size=SIZE, width=4, input_range="-1_1").eval()
    net.save(dirs["recon"] / "recon.safetensors")
    return dict(dirs=dirs, cmds=cmds, G=G, net=net)


@pytest.fixture
def assets_root(tmp_path, monkeypatch):
    monkeypatch.setenv(assets.ASSETS_ENV, str(tmp_path / "assets"))
    assets.clear_verification_cache()
    yield tmp_path / "assets"
    assets.clear_verification_cache()


def ship(world, **kw):
    d = world["dirs"]
    args = dict(gan_dir=d["gan"], recon_dir=d["recon"], train_data=d["train"], heldout_data=d["heldout"],
                floor_data=d["floor"], n_fd=N_FD, n_photo=N_PHOTO)
    args.update(kw)
    return ship_mini_assets(**args)


def commit_assets(assets_root):
    """Make the folder above ``assets_root`` a git repository with ``assets/`` committed (ship records the commit
    that last changed a shipped file); returns (repository folder, commit hash)."""
    import subprocess

    repo = assets_root.parent
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(git[:5] + ["init", "-q", str(repo)], check=True)
    subprocess.run(git + ["add", "assets"], check=True)
    subprocess.run(git + ["commit", "-qm", "ship"], check=True)
    commit = subprocess.run(git + ["log", "-1", "--format=%H"], capture_output=True, text=True).stdout.strip()
    return repo, commit


def assert_same_module(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_record_and_read_commands(tmp_path):
    argv = ["make-world", "--out", "my dir", "--n", "3", "--note", "it's"]
    record_command(tmp_path / "new", argv)   # creates the folder
    record_command(tmp_path / "new", ["train-recon", "--steps", "5"])
    (tmp_path / "new" / COMMANDS_FILE).open("a").write("\n   \n")  # blank lines are skipped
    got = read_commands(tmp_path / "new")
    assert got == [line(argv), "python -m cddfm3d train-recon --steps 5"]
    assert shlex.split(got[0])[3:] == argv   # quoting round-trips
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "other" / COMMANDS_FILE)):
        read_commands(tmp_path / "new", tmp_path / "other")


class FakeClock:
    """``time.perf_counter`` of :mod:`cddfm3d.world.quality` that only moves while a generator runs: each
    ``Generator.forward`` call takes ``ms_per_call`` milliseconds of this clock (installed by :meth:`install`)."""

    def __init__(self, ms_per_call: float):
        self.t, self.ms_per_call = 100.0, ms_per_call

    def perf_counter(self) -> float:
        return self.t

    def install(self, monkeypatch) -> None:
        forward = Generator.forward

        def timed_forward(G, *args, **kwargs):
            self.t += self.ms_per_call / 1000
            return forward(G, *args, **kwargs)

        monkeypatch.setattr(quality, "time", self)
        monkeypatch.setattr(Generator, "forward", timed_forward)


def untrained_metrics(net: ReconNet, heldout) -> dict:
    """The metrics of a net whose zero heads predict 0 for every coefficient (the mean face, frontal, centred),
    from the held-out ground truth in float64 (numpy) and the morphable model's landmarks."""
    assert all(float(p.detach().abs().max()) == 0 for p in net.final_layers.parameters())
    y = heldout.coeffs.double().numpy()
    out = {"n": len(y)}
    for g in ("id", "exp", "tex", "gamma", "trans", "angle"):
        a = y[:, SLICES[g]]
        if g != "angle":
            out[f"rmse_{g}"] = float(np.sqrt((a ** 2).mean()))
        out[f"r2_{g}"] = float(1 - (a ** 2).sum() / ((a - a.mean(0)) ** 2).sum())
    for k, axis in enumerate(("pitch", "yaw", "roll")):
        out[f"angle_deg_{axis}"] = float(np.degrees(np.abs(y[:, SLICES["angle"]][:, k])).mean())
    fm = mini_model()
    with torch.no_grad():
        lt = fm(heldout.coeffs.float(), image_size=SIZE).landmarks.double().numpy()
        lp = fm(torch.zeros(1, 257), image_size=SIZE).landmarks.double().numpy()
    out["landmark_px"] = float(np.linalg.norm(lp - lt, axis=-1).mean())
    # explained variance in the attributes' spaces: the mean face's features against the truth's
    from cddfm3d.face3d.lighting import shade
    from cddfm3d.face3d.measures import LIGHT_NORMALS

    def ev(true, pred):
        return float(1 - ((true - pred) ** 2).sum() / ((true - true.mean(0)) ** 2).sum())

    id_base, exp_base = fm.id_base.double().numpy(), fm.exp_base.double().numpy()
    tex_base, mean_tex = fm.tex_base.double().numpy(), fm.mean_tex.double().numpy().reshape(-1)
    out["ev_shape"] = ev(y[:, SLICES["id"]] @ id_base.T, 0.0)
    out["ev_expression"] = ev(y[:, SLICES["exp"]] @ exp_base.T, 0.0)
    out["ev_albedo"] = ev((mean_tex + y[:, SLICES["tex"]] @ tex_base.T) / 255, mean_tex / 255)
    out["ev_pose"] = ev(np.degrees(y[:, SLICES["angle"]]), 0.0)
    normals = LIGHT_NORMALS[None].expand(len(y), -1, -1)
    ones = torch.ones_like(normals)
    light = shade(ones, normals, heldout.coeffs.double()[:, SLICES["gamma"]]).numpy().reshape(len(y), -1)
    light0 = shade(ones[:1], normals[:1], torch.zeros(1, 27, dtype=torch.float64)).numpy().reshape(1, -1)
    out["ev_light"] = ev(light, light0)
    return out


def test_ship_mini_assets_end_to_end(world, assets_root, monkeypatch):
    d, cmds = world["dirs"], world["cmds"]
    FakeClock(ms_per_call=7.0).install(monkeypatch)   # the latency measurement reads this clock
    report = ship(world, ship_command="python -m cddfm3d ship-mini --test")
    assert set(report) == {"generator", "recon", "seconds"}
    for name in ("generator", "recon"):
        assert (assets_root / "mini" / f"{name}.safetensors").is_file()
    assert (assets_root / "mini" / "generator.safetensors").read_bytes() == \
        (d["gan"] / "generator.safetensors").read_bytes()
    assert (assets_root / "mini" / "recon.safetensors").read_bytes() == (d["recon"] / "recon.safetensors").read_bytes()

    # the loader verifies the files against the manifest and returns the original networks
    G = assets.load("mini/generator")
    assert type(G) is Generator and G.config == world["G"].config
    assert_same_module(G, world["G"])
    net = assets.load("mini/recon")
    assert type(net) is ReconNet and net.config == world["net"].config
    assert_same_module(net, world["net"])

    manifest = json.loads((assets_root / "MANIFEST.json").read_text())
    assert sorted(manifest["assets"]) == ["mini/generator", "mini/recon"]
    evaluated = cmds["heldout"] + cmds["floor"]
    expected_cmds = {
        "mini/generator": cmds["train"] + cmds["gan"] + evaluated + ["python -m cddfm3d ship-mini --test"],
        "mini/recon": cmds["train"] + cmds["recon"] + evaluated + ["python -m cddfm3d ship-mini --test"],
    }
    for name, module, kind in (("mini/generator", world["G"], "stylegan2.Generator"),
                               ("mini/recon", world["net"], "face3d.ReconNet")):
        e = manifest["assets"][name]
        f = assets_root / e["file"]
        assert e["kind"] == kind
        assert e["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
        assert e["size"] == f.stat().st_size
        assert e["config"] == json.loads(json.dumps(module.config))
        assert e["command"].splitlines() == expected_cmds[name], name
        assert e["description"]
    gen, rec = manifest["assets"]["mini/generator"]["metrics"], manifest["assets"]["mini/recon"]["metrics"]
    assert gen == report["generator"] and rec == report["recon"]

    assert GEN_KEYS | {"train_kimg", "train_steps"} == set(gen)
    assert gen["train_kimg"] == pytest.approx(1.234) and gen["train_steps"] == 77   # from the GAN checkpoint
    assert gen["n_fd"] == N_FD and gen["feature_dim"] == world["net"].feature_dim
    assert gen["cpu_threads"] == torch.get_num_threads()
    assert gen["fd_ratio_to_floor"] == pytest.approx(gen["fd_recon_features"] / gen["fd_floor_renders_vs_renders"])
    assert gen["latency_ms_batch1_cpu"] == pytest.approx(7.0, rel=1e-9)   # the generator's time, in ms
    assert set(rec) == RECON_KEYS
    assert rec["n"] == N_FD and rec["n_generator_samples"] == N_PHOTO
    for group, metrics in (("generator", gen), ("recon", rec)):
        for k, v in metrics.items():
            assert isinstance(v, (int, float)) and math.isfinite(v), (group, k, v)
    # two disjoint sets of renders are closer to each other than random-generator samples are to renders
    assert 0 < gen["fd_floor_renders_vs_renders"] < gen["fd_recon_features"]
    # an untrained net predicts the mean face: its errors are the ground truth's own size
    expected = untrained_metrics(world["net"], WorldDataset(d["heldout"], "human", limit=N_FD))
    assert {k: rec[k] for k in expected} == pytest.approx(expected, rel=1e-5, abs=1e-6)   # float32 sums
    assert expected["landmark_px"] > 1 and expected["rmse_id"] > 0.1


def test_ship_without_gan_checkpoint_and_reship_replaces_entries(world, assets_root, tmp_path):
    d = world["dirs"]
    gan2 = tmp_path / "gan2"
    gan2.mkdir()
    G2 = tiny_generator(seed=5)
    save_generator(G2, gan2 / "generator.safetensors")
    shutil.copy(d["gan"] / COMMANDS_FILE, gan2 / COMMANDS_FILE)
    (assets_root / "mini").mkdir(parents=True)
    (assets_root / "mini" / "notes.json").write_text("{}")
    assets.register("mini/notes", "mini/notes.json", "json", {}, "", {})   # another entry: kept
    ship(world)
    report = ship(world, gan_dir=gan2)
    assert "train_kimg" not in report["generator"]           # no checkpoint.pt in the run folder
    assert_same_module(assets.load("mini/generator"), G2)
    assert assets.available() == ["mini/generator", "mini/notes", "mini/recon"]
    assert not assets.entry("mini/generator")["command"].endswith("\n")


def test_missing_commands_file_is_named(world, assets_root, tmp_path):
    d = world["dirs"]
    heldout = tmp_path / "heldout_copy"
    shutil.copytree(d["heldout"], heldout)
    (heldout / COMMANDS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=str(heldout / COMMANDS_FILE)):
        ship(world, heldout_data=heldout)


def test_failed_ship_keeps_shipped_assets_consistent(world, assets_root, tmp_path):
    ship(world)
    gan2 = tmp_path / "gan2"
    gan2.mkdir()
    save_generator(tiny_generator(seed=5), gan2 / "generator.safetensors")   # and no commands.txt
    with pytest.raises(FileNotFoundError, match=COMMANDS_FILE):
        ship(world, gan_dir=gan2)
    assert_same_module(assets.load("mini/generator"), world["G"])   # the previously shipped generator


def test_too_small_heldout_or_floor_set(world, assets_root):
    with pytest.raises(ValueError, match=f"need {N_FD + 1} held-out and floor images, found {N_FD} and {N_FD}"):
        ship(world, n_fd=N_FD + 1)
    d = world["dirs"]
    with pytest.raises(ValueError, match=f"found {N_FD} and 4"):
        ship(world, floor_data=d["train"])
    assert not (assets_root / "MANIFEST.json").exists()


def test_ship_mini_cli(world, assets_root, capsys):
    d = world["dirs"]
    argv = ["ship-mini", "--gan", str(d["gan"]), "--recon", str(d["recon"]), "--train-data", str(d["train"]),
            "--heldout", str(d["heldout"]), "--floor", str(d["floor"]), "--n-fd", str(N_FD),
            "--n-photo", str(N_PHOTO)]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"generator", "recon", "seconds"}
    for name in ("mini/generator", "mini/recon"):
        command = assets.entry(name)["command"].splitlines()
        assert command[-1] == "python -m cddfm3d " + " ".join(argv)
        assert "ship-mini" in command[-1]
    # user errors are one line on stderr and exit status 2
    assert cli.main(argv[:-4] + ["--n-fd", str(N_FD + 1)]) == 2
    assert "error: need" in capsys.readouterr().err


def test_fine_tuned_generator_records_its_start_file(world, assets_root, tmp_path):
    """A GAN run started from the shipped generator (train-gan --init-generator) gets, in the manifest, the line that
    recreates its start file from git (the commit that shipped it) after the start file's own recipe as comments;
    the run's discriminator is not shipped (assets budget). A start file that is not the shipped generator is
    refused."""
    import subprocess

    from cddfm3d.stylegan2 import Discriminator, save_discriminator
    from cddfm3d.world.ship import init_provenance

    if shutil.which("git") is None:
        pytest.skip("needs git")
    d = world["dirs"]
    ship(world)                                            # the generator now shipped: the fine-tune's start
    repo, commit = commit_assets(assets_root)
    start = tmp_path / "prev" / "generator.safetensors"
    start.parent.mkdir()
    shutil.copy(assets_root / "mini" / "generator.safetensors", start)
    gan2 = tmp_path / "gan2"
    gan2.mkdir()
    save_generator(tiny_generator(seed=6), gan2 / "generator.safetensors")
    D = Discriminator(SIZE, channel_base=64, channel_max=8)
    save_discriminator(D, gan2 / "discriminator.safetensors")
    shutil.copy(d["gan"] / COMMANDS_FILE, gan2 / COMMANDS_FILE)
    torch.save({"images_seen": 10, "step": 1, "config": json.dumps({"init_generator": str(start)})},
               gan2 / "checkpoint.pt")
    old_entry = assets.entry("mini/generator")
    lines = init_provenance(gan2, "mini/generator")
    assert lines[-1] == f"git show {commit[:12]}:assets/mini/generator.safetensors > {start}"
    assert lines[0].startswith(f"# {start}: mini/generator sha256 {old_entry['sha256']}")
    assert [ln[4:] for ln in lines[1:-1]] == old_entry["command"].splitlines()
    # the recorded line really recreates the start file
    shown = subprocess.run(["git", "-C", str(repo), "show", f"{commit[:12]}:assets/mini/generator.safetensors"],
                           capture_output=True, check=True).stdout
    assert shown == start.read_bytes()

    ship(world, gan_dir=gan2)
    gen_cmds = assets.entry("mini/generator")["command"].splitlines()
    assert gen_cmds[len(world["cmds"]["train"]):][:len(lines)] == lines
    assert "mini/discriminator" not in assets.available()
    assert not (assets_root / "mini" / "discriminator.safetensors").exists()

    # re-shipping the same run (e.g. with a new reconstruction network): the provenance recorded the first time holds
    assert init_provenance(gan2, "mini/generator") == lines
    ship(world, gan_dir=gan2)
    assert assets.entry("mini/generator")["command"].splitlines() == gen_cmds

    start.write_bytes(b"not the shipped generator")
    with pytest.raises(ValueError, match="not the shipped mini/generator"):
        init_provenance(gan2, "mini/generator")


def _fine_tune(world, out, init, steps: int = 1):
    """A real train-recon fine-tuning (one step) of the world fixture's recon architecture on its 4 training renders,
    started from ``init`` (a file path or a ReconNet), with the command line it would record."""
    from cddfm3d.face3d.recon_training import ReconTrainConfig, train_recon

    ds = WorldDataset(world["dirs"]["train"])
    argv = ["train-recon", "--data", str(world["dirs"]["train"]), "--out", str(out), "--width", "4", "--batch", "4",
            "--steps", str(steps), "--photo-batch", "0"]
    if not isinstance(init, ReconNet):
        argv += ["--init", str(init)]
    cfg = ReconTrainConfig(image_size=SIZE, width=4, batch_size=4, photo_batch=0, steps=steps)
    train_recon(ds.images, ds.coeffs, cfg, out, progress=False, init=init, command=argv)
    return argv


def test_fine_tuned_recon_records_its_start_file(world, assets_root, tmp_path):
    """A train-recon --init run from the shipped recon gets, in mini/recon's manifest command, the lines that
    recreate its start from git before the run's own command; the generator's command is untouched; re-shipping the
    same run keeps the recorded start."""
    import subprocess

    from cddfm3d.world.ship import init_provenance

    if shutil.which("git") is None:
        pytest.skip("needs git")
    ship(world)
    repo, commit = commit_assets(assets_root)
    start = tmp_path / "prev" / "recon.safetensors"
    start.parent.mkdir()
    shutil.copy(assets_root / "mini" / "recon.safetensors", start)
    recon2 = tmp_path / "recon2"
    argv = _fine_tune(world, recon2, start)
    state = torch.load(recon2 / "checkpoint.pt", weights_only=True)
    assert state["init_file"] == str(start) and state["init_sha256"] == state_sha256(ReconNet.load(start))
    old = assets.entry("mini/recon")
    gen_before = assets.entry("mini/generator")["command"]
    lines = init_provenance(recon2, "mini/recon")
    assert lines[0].startswith(f"# {start}: mini/recon sha256 {old['sha256']}, shipped at commit {commit[:12]}")
    assert [ln[4:] for ln in lines[1:-1]] == old["command"].splitlines()
    assert lines[-1] == f"git show {commit[:12]}:assets/mini/recon.safetensors > {start}"
    shown = subprocess.run(["git", "-C", str(repo), "show", f"{commit[:12]}:assets/mini/recon.safetensors"],
                           capture_output=True, check=True).stdout
    assert shown == start.read_bytes()

    ship(world, recon_dir=recon2)
    cmds = assets.entry("mini/recon")["command"].splitlines()
    n_train = len(world["cmds"]["train"])
    assert cmds[:n_train] == world["cmds"]["train"]
    assert cmds[n_train:n_train + len(lines)] == lines and cmds[n_train + len(lines)] == line(argv)
    assert_same_module(assets.load("mini/recon"), ReconNet.load(recon2 / "recon.safetensors"))
    assert assets.entry("mini/generator")["command"] == gen_before
    # re-shipping the same run (the shipped recon has changed): the start recorded the first time still holds
    assert init_provenance(recon2, "mini/recon") == lines
    ship(world, recon_dir=recon2)
    assert assets.entry("mini/recon")["command"].splitlines() == cmds


def test_recon_start_provenance_refusals(world, assets_root, tmp_path):
    """ship-mini refuses to record a start it cannot vouch for: a start file that is not the shipped recon, one
    that changed since the run (also the start that ship itself overwrote), a start given in memory, a missing
    start file, a fine-tuning whose checkpoint is gone, and a shipped recon not committed yet; the first refusal
    before assets/ changes."""
    from cddfm3d.world.ship import init_provenance

    if shutil.which("git") is None:
        pytest.skip("needs git")
    ship(world)
    commit_assets(assets_root)
    manifest = (assets_root / "MANIFEST.json").read_text()
    start = tmp_path / "start.safetensors"

    torch.manual_seed(3)      # a start that is not the shipped recon
    ReconNet("small", image_size=SIZE, width=4, input_range="-1_1").save(start)
    _fine_tune(world, tmp_path / "other", start)
    with pytest.raises(ValueError, match="not the shipped mini/recon"):
        ship(world, recon_dir=tmp_path / "other")
    assert (assets_root / "MANIFEST.json").read_text() == manifest

    shutil.copy(assets_root / "mini" / "recon.safetensors", start)     # started from the shipped recon ...
    _fine_tune(world, tmp_path / "stale", start)
    torch.manual_seed(4)                                                # ... which then changed
    ReconNet("small", image_size=SIZE, width=4, input_range="-1_1").save(start)
    with pytest.raises(ValueError, match=r"no longer holds the run's start \(field 'init_sha256'"):
        init_provenance(tmp_path / "stale", "mini/recon")
    start.unlink()
    with pytest.raises(ValueError, match="does not exist: ship in the directory the run was started in"):
        init_provenance(tmp_path / "stale", "mini/recon")

    _fine_tune(world, tmp_path / "memory", assets.load("mini/recon"))
    with pytest.raises(ValueError, match="given in memory"):
        init_provenance(tmp_path / "memory", "mini/recon")

    shutil.copy(assets_root / "mini" / "recon.safetensors", start)
    _fine_tune(world, tmp_path / "gone", start)
    (tmp_path / "gone" / "checkpoint.pt").unlink()
    with pytest.raises(ValueError, match="checkpoint.pt does not exist, and .* shows a fine-tuning"):
        init_provenance(tmp_path / "gone", "mini/recon")

    _fine_tune(world, tmp_path / "ok", start)
    assert init_provenance(tmp_path / "ok", "mini/recon")[-1].endswith(f"> {start}")
    # a start inside assets/: the first ship overwrites it, so the same run cannot be shipped again
    inside = assets_root / "mini" / "recon.safetensors"
    _fine_tune(world, tmp_path / "inside", inside)
    ship(world, recon_dir=tmp_path / "inside")
    with pytest.raises(ValueError, match="no longer holds the run's start"):
        init_provenance(tmp_path / "inside", "mini/recon")
    # the recon shipped just now is not committed: a start copied from it cannot be recreated by git show
    shutil.copy(inside, start)
    _fine_tune(world, tmp_path / "uncommitted", start)
    with pytest.raises(ValueError, match="its last commit [0-9a-f]{12} holds another file"):
        init_provenance(tmp_path / "uncommitted", "mini/recon")
