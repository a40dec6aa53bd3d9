"""Evaluate trained mini-world networks and ship them into ``assets/`` with their manifest entries.

``ship_mini_assets`` copies ``<gan>/generator.safetensors`` and ``<recon>/recon.safetensors`` to
``assets/mini/``, measures the metrics the manifest reports, and registers both files (sha256, size, config,
the commands that produced them, metrics). The commands come from the ``commands.txt`` that every dataset and
training command appends its own command line to (and every run where it stopped): the manifest records the
commands that rebuild the shipped files (:func:`cddfm3d.training.rebuild_commands`).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from .. import assets
from ..face3d.recon import ReconNet
from ..face3d.recon_training import evaluate_recon
from ..stylegan2.checkpoints import load_generator
from ..training import rebuild_commands
from .datasets import WorldDataset
from .domains import mini_model
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
    gan_cmds, recon_cmds = rebuild_commands(gan_dir), rebuild_commands(recon_dir)
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


def _train_log_tail(gan_dir: Path) -> dict:
    """Images seen and steps of a GAN run, from its checkpoint."""
    ckpt = gan_dir / "checkpoint.pt"
    if not ckpt.is_file():
        return {}
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    return {"train_kimg": state["images_seen"] / 1000, "train_steps": int(state["step"])}
