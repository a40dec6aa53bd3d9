"""Evaluate a latent-consistent fine-tuning run and ship its generator as ``mini/generator_<domain>``.

The shipped file is a generator delta (:mod:`cddfm3d.adapt.delta`) on ``mini/generator``. Metrics, all measured on
images of the shipped (delta-loaded) generator:

* ``fd_domain_features``: Fréchet distance between its samples and held-out renders of the domain, in the pooled
  features of the domain's reconstruction network ``mini/recon_<domain>``; beside it ``fd_floor`` (training
  renders vs held-out renders of the domain: what a perfect generator scores), ``fd_human_generator`` (the human
  generator before fine-tuning, against the same renders) and the ratio to the floor;
* ``consistency_<attribute>_ev`` / ``_relative_distance``: :func:`cddfm3d.adapt.consistency.latent_consistency`
  against the human generator (read by ``mini/recon`` and ``mini/recon_<domain>``), and its noise ceiling;
* the run's length (``train_kimg``, ``train_steps``), its freeze mode (``freeze``, ``freeze_g_blocks``,
  ``train_rgb``), the delta's ``precision`` and its ``max_abs_weight_error``.

Only latent-consistent runs (``w -> s`` bitwise the human generator's) are shipped: a train-everything generator
would break T and F^i, which read the human generator's StyleSpace.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from .. import assets
from ..face3d.measures import ATTRIBUTES
from ..stylegan2.checkpoints import load_generator
from ..training import rebuild_commands
from ..world.datasets import WorldDataset
from ..world.domains import DOMAINS, mini_model
from ..world.quality import fd_table, generate
from ..world.ship import _train_log_fields
from .consistency import latent_consistency
from .delta import DELTA_PRECISIONS, load_generator_delta, save_generator_delta
from .finetuning import frozen_parameter_names, latent_inconsistency

BASE = "mini/generator"
KIND = "adapt.DomainGenerator"


def domain_generator_name(domain: str) -> str:
    """The asset name of a domain's fine-tuned generator (``mini/generator_toon``)."""
    return f"mini/generator_{domain}"


def _run_state(run: Path) -> tuple[dict, tuple[str, int, bool]]:
    """A finetune run's checkpoint state and its (freeze, freeze_g_blocks, train_rgb), from the saved config."""
    ckpt = run / "checkpoint.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"ship-domain: {ckpt} does not exist (a finetune run folder holds one)")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    cfg = json.loads(state["config"])
    return state, (str(cfg.get("freeze", "affine")), int(cfg.get("freeze_g_blocks", 0) or 0),
                   bool(cfg.get("train_rgb")))


def _frozen_words(freeze: str, blocks: int, train_rgb: bool) -> str:
    if freeze == "freeze-g":
        rgb = ", their tRGB layers trained" if train_rgb else ""
        return (f"its mapping, affines and lowest {blocks} synthesis blocks frozen (FreezeG{rgb}; latent-consistent "
                f"like the paper's fine-tuning)")
    return "its mapping and affines frozen (the paper's latent-consistent fine-tuning)"


def ship_domain_generator(run_dir, domain: str, train_data, heldout_data, n_fd: int = 2000,
                          n_consistency: int = 1000, seed: int = 0, ship_command: str = "",
                          precision: str = "float16") -> dict:
    """Evaluate ``run_dir``'s ``generator.safetensors`` (a ``finetune`` run of ``mini/generator``) against the
    domain's renders and ship it (module docstring) as a delta of ``precision`` (``"float16"`` or ``"int8"``,
    :mod:`cddfm3d.adapt.delta`). ``train_data``: the dataset it was fine-tuned on (its renders are the FD floor's
    second set); ``heldout_data``: a dataset of the domain made with another seed. Returns the metrics. Raises
    ``ValueError`` for the human domain, a generator that is not latent-consistent with the shipped
    ``mini/generator`` or that changed tensors its run's checkpoint says were frozen, too few renders, held-out data
    of the training seed or an unknown precision;
    ``FileNotFoundError`` for missing files (the run's ``commands.txt`` and ``checkpoint.pt`` included) or a
    missing ``mini/recon_<domain>``."""
    t0 = time.perf_counter()
    if domain not in DOMAINS or domain == "human":
        raise ValueError(f"ship-domain: domain must be one of {[d for d in DOMAINS if d != 'human']}, found "
                         f"{domain!r}")
    run = Path(run_dir)
    G_run = load_generator(run / "generator.safetensors")
    base = assets.load(BASE)
    changed = latent_inconsistency(base, G_run)
    if changed:
        raise ValueError(f"ship-domain: {run / 'generator.safetensors'} changes w -> s of the shipped {BASE} "
                         f"({len(changed)} tensors, e.g. {changed[:3]}): only a latent-consistent fine-tuning "
                         f"(finetune --freeze affine or freeze-g) can share T and the F^i; ship that one")
    if precision not in DELTA_PRECISIONS:
        raise ValueError(f"ship-domain: precision must be one of {DELTA_PRECISIONS}, found {precision!r}")
    state, (freeze, freeze_blocks, train_rgb) = _run_state(run)
    mine, theirs = G_run.state_dict(), base.state_dict()
    moved = [n for n in frozen_parameter_names(base, freeze, freeze_blocks, train_rgb)
             if not torch.equal(theirs[n], mine[n])]
    if moved:
        raise ValueError(f"ship-domain: {run / 'checkpoint.pt'} records freeze={freeze!r}, freeze_g_blocks="
                         f"{freeze_blocks}, train_rgb={train_rgb}, but {run / 'generator.safetensors'} changed "
                         f"{len(moved)} of those frozen tensors (e.g. {moved[:3]}): the files are of different runs")
    cmds = rebuild_commands(train_data) + rebuild_commands(run) + rebuild_commands(heldout_data)
    train = WorldDataset(train_data, domain, limit=n_fd)
    held = WorldDataset(heldout_data, domain, limit=n_fd)
    if len(held) < n_fd or len(train) < n_fd:
        raise ValueError(f"ship-domain: need {n_fd} {domain} renders in each of {train_data} and {heldout_data}, "
                         f"found {len(train)} and {len(held)}; pass --n-fd {min(len(train), len(held))}")
    if held.config.get("seed") == train.config.get("seed"):
        raise ValueError(f"ship-domain: {heldout_data} was made with seed {train.config.get('seed')}, the "
                         f"training data's: use held-out renders of another seed")
    net_domain = assets.load(f"mini/recon_{domain}")
    net_human = assets.load("mini/recon")

    dest = assets.assets_dir() / "mini" / f"generator_{domain}.safetensors"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / dest.name
        info = save_generator_delta(G_run, base, BASE, assets.entry(BASE)["sha256"], staged, precision=precision)
        assets.check_budget(dest, staged.stat().st_size, "ship-domain")
        shutil.copyfile(staged, dest)
    G = load_generator_delta(dest, base=base)

    fds = fd_table(net_domain, held.images, {"G": generate(G, n_fd, seed=seed), "floor": train.images,
                                             "human": generate(base, n_fd, seed=seed)})
    fd, floor, fd_human = fds["G"], fds["floor"], fds["human"]
    cons = latent_consistency(base, G, net_human, net_domain, mini_model(), n=n_consistency, seed=seed)
    metrics = {"domain": domain, "n_fd": n_fd, "fd_domain_features": fd, "fd_floor": floor,
               "fd_ratio_to_floor": fd / max(floor, 1e-12), "fd_human_generator": fd_human,
               "n_consistency": n_consistency, "w_to_s_identical": cons["w_to_s_identical"],
               "max_abs_weight_error": info["max_abs_error"], "tensors_changed": info["changed"],
               "precision": precision, "freeze": freeze, "freeze_g_blocks": freeze_blocks, "train_rgb": train_rgb}
    for a in ATTRIBUTES:
        for key in ("ev", "ev_centred", "correlation", "relative_distance"):
            metrics[f"consistency_{a}_{key}"] = cons["consistency"][a][key]
            metrics[f"noise_ceiling_{a}_{key}"] = cons["noise_ceiling"][a][key]
    metrics.update(_train_log_fields(state))
    assets.register(
        domain_generator_name(domain), dest, KIND, G.config,
        "\n".join(cmds + ([ship_command] if ship_command else [])), metrics,
        description=f"mini/generator fine-tuned to the {domain} domain with "
                    f"{_frozen_words(freeze, freeze_blocks, train_rgb)}, stored as {precision} changes of "
                    f"mini/generator")
    return {"metrics": metrics, "seconds": time.perf_counter() - t0}


__all__ = ["ship_domain_generator", "domain_generator_name"]
