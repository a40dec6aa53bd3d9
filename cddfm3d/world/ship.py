"""Evaluate trained mini-world networks and ship them into ``assets/`` with their manifest entries.

``ship_mini_assets`` copies ``<gan>/generator.safetensors`` and ``<recon>/recon.safetensors`` to ``assets/mini/``
(not the run's discriminator: it does not fit the assets budget, and the domain fine-tunings start from a fresh
one), measures the metrics the manifest reports, and registers the files (sha256, size, config, the commands that
produced them, metrics). The commands come from the ``commands.txt`` that every dataset and training command appends
its own command line to (and every run where it stopped): the manifest records the commands that rebuild the
shipped files (:func:`cddfm3d.training.rebuild_commands`).

A run fine-tuned from start weights (``train-gan --init-generator FILE``, ``train-recon --init FILE``) depends on
that file too. When FILE is the network shipped now (same sha256 as the manifest's ``mini/generator`` or
``mini/recon``), its recipe is carried over: the commands get a ``git show COMMIT:assets/mini/<file> > FILE`` line
(COMMIT: the last commit that changed the shipped file) preceded by comment lines with the recipe recorded for it
then. Any other start file must be rebuilt by the user; ship refuses it (it could not say how it was made).
"""
from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from .. import assets
from ..face3d.recon import ReconNet
from ..face3d.recon_training import evaluate_recon
from ..assets.integrity import sha256_file
from ..stylegan2.checkpoints import load_generator
from ..serialization import copy_as_float16, state_sha256
from ..training import COMMANDS_FILE, rebuild_commands
from .datasets import META_FILE, WorldDataset, read_meta
from .domains import DOMAINS, mini_model
from .quality import feature_stats, frechet_distance, generate, generator_latency_ms, recon_features


def ship_mini_assets(gan_dir, recon_dir, train_data, heldout_data, floor_data, n_fd: int = 10000,
                     n_photo: int = 1000, seed: int = 0, ship_command: str = "") -> dict:
    """Evaluate, copy into ``assets/mini/`` and register ``mini/generator`` and ``mini/recon``; returns metrics."""
    t0 = time.perf_counter()
    fm = mini_model()
    G = load_generator(Path(gan_dir) / "generator.safetensors").eval()
    net = ReconNet.load(Path(recon_dir) / "recon.safetensors").eval()
    # Provenance first: a missing commands.txt must fail before the long evaluation and before assets/ changes.
    data_cmds = rebuild_commands(train_data)
    eval_cmds = rebuild_commands(heldout_data, floor_data)
    gan_cmds = init_provenance(gan_dir, "mini/generator") + rebuild_commands(gan_dir)
    recon_cmds = init_provenance(recon_dir, "mini/recon") + rebuild_commands(recon_dir)
    if n_photo < 1:
        raise ValueError(f"n_photo must be >= 1, found {n_photo}")
    heldout = WorldDataset(heldout_data, "human", limit=n_fd)
    floor = WorldDataset(floor_data, "human", limit=n_fd)
    if len(heldout) < n_fd or len(floor) < n_fd:
        raise ValueError(f"need {n_fd} held-out and floor images, found {len(heldout)} and {len(floor)}")

    # Reconstruction network: held-out renders (ground truth known) and generator samples (photometric only).
    recon_metrics = evaluate_recon(net, fm, heldout.images, heldout.coeffs)
    samples = generate(G, n_photo, seed=seed + 1)
    recon_metrics["photometric_generator_samples"] = evaluate_recon(net, fm, samples)["photometric"]
    recon_metrics["photometric_heldout_renders"] = recon_metrics.pop("photometric")
    recon_metrics["n_generator_samples"] = n_photo

    # Generator: Fréchet distance in the recon net's features, next to the floor between two sets of renders.
    real = feature_stats(recon_features(net, heldout.images))
    fake = feature_stats(recon_features(net, generate(G, n_fd, seed=seed)))
    gen_metrics = {
        "fd_recon_features": frechet_distance(*fake, *real),
        "fd_floor_renders_vs_renders": frechet_distance(*feature_stats(recon_features(net, floor.images)), *real),
        "n_fd": n_fd,
        "feature_dim": int(real[0].shape[0]),
        "latency_ms_batch1_cpu": generator_latency_ms(G),
        "cpu_threads": torch.get_num_threads(),
    }
    gen_metrics["fd_ratio_to_floor"] = (gen_metrics["fd_recon_features"]
                                        / max(gen_metrics["fd_floor_renders_vs_renders"], 1e-12))
    gen_log = _train_log_tail(Path(gan_dir))
    gen_metrics.update(gen_log)

    dest = assets.assets_dir() / "mini"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(gan_dir) / "generator.safetensors", dest / "generator.safetensors")
    shutil.copyfile(Path(recon_dir) / "recon.safetensors", dest / "recon.safetensors")
    ship = [ship_command] if ship_command else []
    assets.register(
        "mini/generator", "mini/generator.safetensors", "stylegan2.Generator", G.config,
        "\n".join(data_cmds + gan_cmds + eval_cmds + ship), gen_metrics,
        description="StyleGAN2 (EMA weights) trained on 64 px renders of the mini world's human domain")
    assets.register(
        "mini/recon", "mini/recon.safetensors", "face3d.ReconNet", net.config,
        "\n".join(data_cmds + recon_cmds + eval_cmds + ship), recon_metrics,
        description="small ReconNet (images in [-1, 1], 64 px -> 257 MiniFace coefficients) trained on renders "
                    "with known coefficients")
    return {"generator": gen_metrics, "recon": recon_metrics, "seconds": time.perf_counter() - t0}


ASSET_BUDGET_BYTES = assets.BUDGET_BYTES   # all of assets/ (tests/test_assets.py holds the repository to it)


def evaluator_name(domain: str) -> str:
    """The asset name of the evaluation ReconNet of ``domain``: ``mini/recon_independent`` for ``human`` (the
    independent evaluator: the human domain's own network is ``mini/recon``), ``mini/recon_<domain>`` for the
    others. Raises ``ValueError`` for a domain not in ``DOMAINS``."""
    if domain not in DOMAINS:
        raise ValueError(f"ship-evaluator: domain must be one of {DOMAINS}, found {domain!r}")
    return "mini/recon_independent" if domain == "human" else f"mini/recon_{domain}"


def ship_evaluator(recon_dir, train_data, heldout_data, domain: str = "human", n_eval: int = 10000,
                   ship_command: str = "") -> dict:
    """Ship a ReconNet that is used only to evaluate, as :func:`evaluator_name` (domain): ``mini/recon_independent``
    (``human``: the independent evaluator of the editing evaluation, :func:`cddfm3d.editing.evaluate`) or
    ``mini/recon_<domain>`` (an out-of-domain style: reads that domain's images for the latent-consistency and
    cross-domain editing measures, where the human networks cannot).

    The file is stored with its float tensors rounded to float16 (:func:`cddfm3d.serialization.copy_as_float16`;
    loaders upcast into float32 modules), and its metrics are those of the stored file loaded back:
    :func:`evaluate_recon` (explained variance per attribute ``ev_*``, per-axis angle errors in degrees, landmark
    error in px, ...) on the first ``n_eval`` renders of ``domain`` in ``heldout_data``, which must store that
    domain and have another seed than ``train_data``. For an out-of-domain style the report adds the same metrics of
    the shipped ``mini/recon`` on the same renders (``mini_recon_on_the_same_renders``), the reason for a network
    per style.

    Checks, before ``assets/`` changes: the run was trained on ``domain`` (the ``--domain`` of the train-recon lines
    of its ``commands.txt``; default human) and ``train_data`` stores it; for ``human``, the network differs from
    the shipped ``mini/recon`` in architecture (``width`` or ``norm``) and in its run's seed, so that an edit that
    pleases one network's quirks shows up as a disagreement; and ``assets/`` stays within ``ASSET_BUDGET_BYTES``.
    Returns ``{<asset short name>: metrics, "seconds": ...}`` (+ the baseline above). Raises ``ValueError`` for a
    failed check (naming the file, field, expected and found), ``FileNotFoundError`` for a missing file or
    ``commands.txt``.
    """
    t0 = time.perf_counter()
    name = evaluator_name(domain)
    d = Path(recon_dir)
    src = d / "recon.safetensors"
    net = ReconNet.load(src).eval()
    if domain == "human":
        _check_independent(net, d)
    trained_on = _trained_domains(d)
    if trained_on != {domain}:
        raise ValueError(f"{d / COMMANDS_FILE}: the train-recon lines read --domain {sorted(trained_on)}, expected "
                         f"{domain!r} (train the {domain} evaluator with train-recon --domain {domain})")
    train_meta = read_meta(train_data)
    if domain not in train_meta["config"]["domains"]:
        raise ValueError(f"{Path(train_data) / META_FILE}: field 'config.domains' is "
                         f"{train_meta['config']['domains']}, expected it to hold {domain!r}")
    _check_trained_from_scratch(d)
    cmds = rebuild_commands(train_data) + rebuild_commands(d) + rebuild_commands(heldout_data)
    heldout = WorldDataset(heldout_data, domain, limit=n_eval)
    if len(heldout) < n_eval:
        raise ValueError(f"ship-evaluator: need {n_eval} held-out renders, {heldout_data} has {len(heldout)}; pass "
                         f"--n {len(heldout)} or a larger held-out set")
    train_seed = train_meta["config"].get("seed")
    if heldout.config.get("seed") == train_seed:
        raise ValueError(f"ship-evaluator: {heldout_data} was made with seed {train_seed}, the training data's: "
                         f"evaluate on renders of another seed")
    dest = assets.assets_dir() / (name + ".safetensors")
    with tempfile.TemporaryDirectory() as tmp:
        stored = copy_as_float16(src, Path(tmp) / dest.name)
        assets.check_budget(dest, stored.stat().st_size, "ship-evaluator", ASSET_BUDGET_BYTES)
        shipped_net = ReconNet.load(stored).eval()
        metrics = evaluate_recon(shipped_net, mini_model(), heldout.images, heldout.coeffs)
        metrics["n"] = len(heldout)
        report = {name.split("/", 1)[1]: metrics}
        if domain != "human":
            report["mini_recon_on_the_same_renders"] = evaluate_recon(assets.load("mini/recon").eval(), mini_model(),
                                                                      heldout.images, heldout.coeffs)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(stored, dest)
    description = ("a second ReconNet (another architecture and seed than mini/recon), trained on renders and used "
                   "only to evaluate edits: the independent evaluator" if domain == "human" else
                   f"a ReconNet trained on {domain} renders with known coefficients (the human networks cannot read "
                   f"them), used only to evaluate: latent consistency and cross-domain edits in the {domain} domain")
    assets.register(name, name + ".safetensors", "face3d.ReconNet", net.config,
                    "\n".join(cmds + ([ship_command] if ship_command else [])), metrics,
                    description=description + "; float tensors stored as float16")
    return {**report, "seconds": time.perf_counter() - t0}


def _check_independent(net: ReconNet, d: Path) -> None:
    """The human evaluator must differ from the shipped mini/recon in architecture and in its run's seed."""
    shipped = assets.load("mini/recon").eval()
    arch = ("width", "norm")
    if all(net.config.get(k) == shipped.config.get(k) for k in arch):
        raise ValueError(f"{d / 'recon.safetensors'}: the same architecture as the shipped mini/recon "
                         f"({ {k: net.config.get(k) for k in arch} }); train the independent evaluator with another "
                         f"--width or --norm")
    ckpt = d / "checkpoint.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"ship-evaluator: {ckpt} does not exist (its config records the run's seed)")
    seed = json.loads(torch.load(ckpt, map_location="cpu", weights_only=True)["config"]).get("seed")
    if seed in _shipped_recon_seeds():
        raise ValueError(f"{ckpt}: field 'config.seed' is {seed}, the seed of the shipped mini/recon's run; train "
                         f"the independent evaluator with another --seed")


def _check_trained_from_scratch(d: Path) -> None:
    """An evaluator is trained from scratch: a run started from other weights (``train-recon --init``; checkpoint
    field ``init_sha256``) would carry their errors into what it is meant to judge independently."""
    ckpt = d / "checkpoint.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True) if ckpt.is_file() else {}
    if state.get("init_sha256"):
        raise ValueError(f"{ckpt}: the run was fine-tuned from {state.get('init_file', 'a network in memory')} "
                         f"(field 'init_sha256'): an evaluator must be trained from scratch (train-recon without "
                         f"--init)")


def _trained_domains(run_dir: Path) -> set[str]:
    """The ``--domain`` of every train-recon line in a run's ``commands.txt`` (human where absent: the default),
    read as argparse reads it. Raises ``FileNotFoundError`` without the file or without any train-recon line."""
    import argparse

    path = run_dir / COMMANDS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"ship-evaluator: {path} does not exist (the run's commands: its provenance)")
    domain_only = argparse.ArgumentParser(add_help=False, allow_abbrev=True, exit_on_error=False)
    domain_only.add_argument("--domain", default="human")
    found = set()
    for line in path.read_text().splitlines():
        words = [] if line.startswith("#") else shlex.split(line)
        if "train-recon" in words:
            found.add(domain_only.parse_known_args(words[words.index("train-recon") + 1:])[0].domain)
    if not found:
        raise FileNotFoundError(f"ship-evaluator: {path} records no train-recon command")
    return found


def _shipped_recon_seeds() -> set[int]:
    """The ``--seed`` of every ``train-recon`` command the manifest records for ``mini/recon`` (0 where absent, the
    command's default), read as argparse reads it (``--seed N``, ``--seed=N`` or an unambiguous prefix such as
    ``--se N``: the recorded line is the argv as typed)."""
    import argparse

    seed_only = argparse.ArgumentParser(add_help=False, allow_abbrev=True, exit_on_error=False)
    seed_only.add_argument("--seed", type=int, default=0)
    seeds = set()
    for line in assets.entry("mini/recon").get("command", "").splitlines():
        words = [] if line.startswith("#") else shlex.split(line)
        if "train-recon" in words:
            try:
                seeds.add(seed_only.parse_known_args(words[words.index("train-recon") + 1:])[0].seed)
            except argparse.ArgumentError as err:
                raise ValueError(f"{assets.manifest_path()}: field 'assets.mini/recon.command' has the line "
                                 f"{line!r}: {err}") from err
    return seeds


START_OPTIONS = ("--init-generator", "--init")   # train-gan's and train-recon's start-file options


def init_provenance(run_dir, name: str) -> list[str]:
    """The lines that recreate a run's start weights, [] for a run trained from scratch. The start file is the
    checkpoint's ``init_file`` (train-recon, with its state sha256 ``init_sha256``) or its config's
    ``init_generator`` (train-gan); ``name`` is the shipped asset it must be (``mini/generator``, ``mini/recon``).
    See the module docstring.

    Raises ``ValueError`` naming the file and field for: a start file that is missing (paths are relative to the
    directory the run was started in: ship there), that no longer holds the recorded start (``init_sha256``), or
    that is not that shipped network; a start given in memory (``init_sha256`` without ``init_file``); a run folder
    without ``checkpoint.pt`` whose ``commands.txt`` shows a start option; a shipped file whose last commit does not
    hold the manifest's sha256 (commit it first)."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoint.pt"
    if not ckpt.is_file():
        started = [ln for ln in rebuild_commands(run_dir) if any(o in shlex.split(ln) or any(
            w.startswith(o + "=") for w in shlex.split(ln)) for o in START_OPTIONS)]
        if started:
            raise ValueError(f"{ckpt} does not exist, and {run_dir / COMMANDS_FILE} shows a fine-tuning "
                             f"({started[0]!r}): ship needs the checkpoint to check the start it records")
        return []
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    init = state.get("init_file") or (json.loads(state["config"]).get("init_generator") if "config" in state
                                      else None)
    recorded = state.get("init_sha256")
    if recorded and not init:
        raise ValueError(f"{ckpt}: the run started from a network given in memory (field 'init_sha256' without "
                         f"'init_file'): ship records how every shipped network was made; start the run with "
                         f"--init FILE")
    if not init:
        return []
    where = f"{init} (field 'init_file' of {ckpt}, read from {Path.cwd()})"
    if not Path(init).is_file():
        raise ValueError(f"{where} does not exist: ship in the directory the run was started in, or restore the file")
    if recorded and state_sha256(ReconNet.load(init)) != recorded:
        raise ValueError(f"{where} no longer holds the run's start (field 'init_sha256' {recorded[:12]}...): it "
                         f"changed since the run started (e.g. a start file inside assets/ that ship overwrote); "
                         f"restore it, or re-run the fine-tuning from a copy outside assets/")
    entry = assets.entry(name)
    again = _recorded_init(entry, name, init)
    if again is not None:   # re-shipping the run that made the shipped network: its recorded start still holds
        return again
    if sha256_file(Path(init)) != entry["sha256"]:
        raise ValueError(f"{run_dir}: the run started from {init}, which is not the shipped {name} "
                         f"(sha256 {entry['sha256'][:12]}...): ship cannot record how it was made")
    rel = "assets/" + entry["file"]
    repo = assets.assets_dir().parent
    commit = subprocess.run(["git", "log", "-1", "--format=%H", "--", rel], capture_output=True, text=True,
                            cwd=repo).stdout.strip()
    if not commit:
        raise ValueError(f"cannot find the git commit of {rel} (ship runs in a git checkout of the repository)")
    shown = subprocess.run(["git", "show", f"{commit}:{rel}"], capture_output=True, cwd=repo).stdout
    if hashlib.sha256(shown).hexdigest() != entry["sha256"]:
        raise ValueError(f"{rel}: its last commit {commit[:12]} holds another file than the one shipped now (sha256 "
                         f"{entry['sha256'][:12]}...): commit the shipped {name} before shipping a run started from it")
    lines = [f"# {init}: {name} sha256 {entry['sha256']}, shipped at commit {commit[:12]}, made by:"]
    lines += ["#   " + ln for ln in entry["command"].splitlines()]
    return lines + [f"git show {commit[:12]}:{rel} > {shlex.quote(str(init))}"]


def _recorded_init(entry: dict, name: str, init: str) -> list[str] | None:
    """The start-file lines (header comment, the start's recipe as comments, ``git show ... > init``) that the
    shipped network's manifest command records for ``init``, when the file at ``init`` has the sha256 recorded
    there; else None. A run fine-tuned from a network shipped before, and shipped itself, is re-shipped (e.g. with
    a new reconstruction network) with the provenance recorded the first time."""
    lines = entry.get("command", "").splitlines()
    head = f"# {init}: {name} sha256 "
    for i, line in enumerate(lines):
        if not line.startswith(head):
            continue
        sha = line[len(head):].split(",", 1)[0].strip()
        j = i + 1
        while j < len(lines) and lines[j].startswith("#   "):
            j += 1
        if j < len(lines) and lines[j].startswith("git show ") and lines[j].endswith(f"> {shlex.quote(init)}") \
                and Path(init).is_file() and sha256_file(Path(init)) == sha:
            return lines[i:j + 1]
    return None


def _train_log_tail(gan_dir: Path) -> dict:
    """Images seen and steps of a GAN run, from its checkpoint."""
    ckpt = gan_dir / "checkpoint.pt"
    if not ckpt.is_file():
        return {}
    return _train_log_fields(torch.load(ckpt, map_location="cpu", weights_only=True))


def _train_log_fields(state: dict) -> dict:
    """Images seen and steps of a GAN run's loaded checkpoint ``state``."""
    return {"train_kimg": state["images_seen"] / 1000, "train_steps": int(state["step"])}
