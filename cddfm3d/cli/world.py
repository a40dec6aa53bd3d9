"""Commands of the mini world (:mod:`cddfm3d.world`) and its networks: ``demo``, ``make-world``,
``train-recon``, ``ship-mini``, ``ship-evaluator`` and ``train-gan``, with the GAN-run helpers that ``finetune``
(:mod:`cddfm3d.cli.adapt`) shares.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from .args import (POSITIVE, SEED, _attribute_weight, _data_options, _device, _existing_dir, _existing_file, _float,
                   _gan_options, _int_at_least, _out_dir, _run_options)


def _demo(args) -> int:
    from ..demo import run_demo

    report = run_demo(args.out, generator=args.generator, n_samples=args.n, n_channels=args.channels,
                      seed=args.seed, truncation_psi=args.truncation, device=args.device)
    print(json.dumps(report, indent=2))
    print(f"wrote {args.out}/index.html")
    return 0


def _make_world(args) -> int:
    from ..training import record_command
    from ..world.datasets import write_dataset

    out = write_dataset(args.out, args.n, seed=args.seed, domains=args.domains, size=args.size,
                        shard_size=args.shard_size)
    # recorded once the dataset is complete: a dataset is a pure function of its arguments, so an interrupted
    # and re-run make-world is one command
    record_command(args.out, args.argv)
    print(f"wrote {args.n} samples ({', '.join(args.domains)}, {args.size} px) to {out}")
    return 0


def _training_images(path, resolution: int, domain: str = "human"):
    """A mini-world dataset folder (dataset.json) or a folder of image files."""
    from ..stylegan2.data import ImageFolderDataset
    from ..world.datasets import META_FILE, WorldDataset

    if (Path(path) / META_FILE).is_file():
        ds = WorldDataset(path, domain=domain)
        if ds.size != resolution:
            raise ValueError(f"{path}: dataset images are {ds.size} px, --resolution is {resolution}")
        return ds
    return ImageFolderDataset(path, resolution)


def _check_batch(args, n: int) -> None:
    """A batch larger than the training set only repeats images (and may not fit in memory): refused."""
    if args.batch > n:
        raise ValueError(f"--batch {args.batch} is larger than the training set ({n} images in {args.data}); "
                         f"use --batch {n} or fewer, or a larger dataset")


def _train_recon(args) -> int:
    from .. import config
    from ..face3d.recon_training import ReconTrainConfig, train_recon
    from ..world.datasets import WorldDataset

    ds = WorldDataset(args.data, domain=args.domain)
    _check_batch(args, len(ds))
    cfg = ReconTrainConfig(image_size=ds.size, width=args.width, batch_size=args.batch, steps=args.steps,
                           lr=args.lr, seed=args.seed, photo_batch=args.photo_batch, norm=args.norm,
                           attribute_weights=dict(args.attribute_weights))
    trainer = train_recon(ds.images, ds.coeffs, cfg, args.out, device=config.device(args.device),
                          resume=not args.no_resume, stop_at_step=args.stop_at_step, command=args.argv,
                          init=args.init)
    print(f"step {trainer.step}; network: {args.out}/recon.safetensors")
    return 0


def _ship_mini(args) -> int:
    from ..world.ship import ship_mini_assets

    report = ship_mini_assets(args.gan, args.recon, args.train_data, args.heldout, args.floor, n_fd=args.n_fd,
                              n_photo=args.n_photo, ship_command="python -m cddfm3d " + shlex.join(args.argv))
    print(json.dumps(report, indent=2))
    return 0


def _ship_evaluator(args) -> int:
    from ..world.ship import ship_evaluator

    report = ship_evaluator(args.recon, args.train_data, args.heldout, domain=args.domain, n_eval=args.n,
                            ship_command="python -m cddfm3d " + shlex.join(args.argv))
    print(json.dumps(report, indent=2))
    return 0


def _train_gan(args) -> int:
    from ..stylegan2.training import TrainConfig, train_gan

    cfg = TrainConfig(resolution=args.resolution, batch_size=args.batch, total_kimg=args.kimg,
                      snapshot_kimg=args.snapshot_kimg, r1_gamma=args.gamma, lr=args.lr, augment=args.augment,
                      ada_target=args.ada_target, ada_kimg=args.ada_kimg, seed=args.seed,
                      init_generator=args.init_generator, init_discriminator=args.init_discriminator,
                      d_warmup_steps=args.d_warmup_steps)
    dataset = _training_images(args.data, args.resolution, args.domain)
    return _run_gan(args, train_gan, cfg, dataset, len(dataset), "EMA generator")


def _run_gan(args, run, cfg, dataset, n_images: int, what: str) -> int:
    """Start (or resume) a GAN run (train_gan or finetune) from the parsed options and say where its generator is."""
    from ..training import init_distributed

    _check_batch(args, n_images)
    device = init_distributed(args.device or "cuda") if args.device != "cpu" else init_distributed("cpu")
    trainer = run(dataset, cfg, args.out, device=device, resume=not args.no_resume, stop_at_step=args.stop_at_step,
                  command=args.argv)
    print(f"step {trainer.step}, {trainer.images_seen / 1000:.1f} kimg; {what}: {args.out}/generator.safetensors")
    return 0


# ------------------------------------------------------------------------------------------------ parsers
def _add_demo(sub) -> None:
    """Register ``demo``."""
    from ..demo import MAX_CHANNELS, MAX_SAMPLES

    d = sub.add_parser("demo", help="run the main job on the embedded default and write results to out/")
    d.add_argument("--out", type=_out_dir, default="out", help="output folder (default: out)")
    d.add_argument("--generator", type=_existing_file, default=None, help="generator checkpoint (.pt, .pkl or "
                   ".safetensors) at the mini world's 64 px; default: the shipped one")
    d.add_argument("--n", type=_int_at_least(1, MAX_SAMPLES), default=16, help=f"number of samples in the grid, "
                   f"1-{MAX_SAMPLES} (default: 16)")
    d.add_argument("--channels", type=_int_at_least(1, MAX_CHANNELS), default=4, help=f"number of StyleSpace "
                   f"channels to edit, 1-{MAX_CHANNELS} (default: 4)")
    d.add_argument("--seed", type=SEED, default=0, help="seed of the samples and the channel statistics (default: 0)")
    d.add_argument("--truncation", type=_float(), default=0.7, help="truncation psi of the samples: 1 = none, "
                   "0 = the average face (default: 0.7)")
    d.add_argument("--device", type=_device, default=None, help="cpu, cuda or cuda:N (default: cpu)")
    d.set_defaults(func=_demo)


def _add_make_world(sub) -> None:
    """Register ``make-world``."""
    from ..world.domains import DOMAINS, MAX_SIZE, MIN_SIZE

    w = sub.add_parser("make-world", help="render a mini-world dataset (sharded, resumable)")
    w.add_argument("--out", type=_out_dir, required=True, help="dataset folder")
    w.add_argument("--n", type=POSITIVE, required=True, help="number of samples")
    w.add_argument("--seed", type=SEED, default=0, help="dataset seed: coefficients and backgrounds are pure "
                   "functions of it (default: 0)")
    w.add_argument("--domains", nargs="+", default=["human"], choices=DOMAINS,
                   help="domains to render, each stored for every sample (default: human)")
    w.add_argument("--size", type=_int_at_least(MIN_SIZE, MAX_SIZE), default=64,
                   help=f"image size in pixels, {MIN_SIZE}-{MAX_SIZE} (default: 64)")
    w.add_argument("--shard-size", type=POSITIVE, default=1000, help="samples per shard file; an interrupted job "
                   "loses at most one shard (default: 1000)")
    w.set_defaults(func=_make_world)


def _add_train_recon(sub) -> None:
    """Register ``train-recon``."""
    r = sub.add_parser("train-recon", help="train (or resume) the small reconstruction network on a mini-world "
                       "dataset (renders with known coefficients)")
    _data_options(r, "mini-world dataset folder (make-world)", "recon.safetensors")
    r.add_argument("--steps", type=POSITIVE, default=4000, help="optimisation steps of the whole run; the "
                   "learning rate decays to 0 there (default: 4000)")
    r.add_argument("--batch", type=POSITIVE, default=32, help="images per step (default: 32)")
    r.add_argument("--lr", type=_float(0, strict=True), default=2e-3, help="peak learning rate of AdamW "
                   "(default: 0.002)")
    r.add_argument("--width", type=POSITIVE, default=16, help="base width of the small backbone (default: 16)")
    r.add_argument("--norm", default="batch", choices=["batch", "group"], help="normalisation layers of the "
                   "backbone (default: batch; group gives another architecture, e.g. for an independent evaluator)")
    r.add_argument("--photo-batch", type=_int_at_least(0), default=16, metavar="N",
                   help="images of each batch re-rendered for the photometric loss; 0 drops that loss and its "
                        "rendering cost (default: 16)")
    r.add_argument("--attribute-weights", nargs="+", type=_attribute_weight, default=[], metavar="NAME=W",
                   help="losses in the space where each attribute is seen, e.g. shape=1 expression=1 albedo=1 "
                        "light=1 pose=1 (attributes: shape, expression, albedo, light, pose; default: none)")
    r.add_argument("--init", type=_existing_file, default=None, metavar="FILE",
                   help="fine-tune: start from this network file (train-recon's recon.safetensors, of the same "
                        "--width and --norm), with a fresh optimizer and schedule; used only when the run starts "
                        "afresh, and a resume must give the same file or none")
    _run_options(r)
    r.set_defaults(func=_train_recon)


def _add_ship_mini(sub) -> None:
    """Register ``ship-mini``."""
    s = sub.add_parser("ship-mini", help="evaluate a trained mini generator and ReconNet and ship them into "
                       "assets/ (files + MANIFEST.json with sha256, config, commands, metrics)")
    s.add_argument("--gan", type=_existing_dir, required=True, help="train-gan run folder")
    s.add_argument("--recon", type=_existing_dir, required=True, help="train-recon run folder")
    s.add_argument("--train-data", type=_existing_dir, required=True, help="the dataset both were trained on")
    s.add_argument("--heldout", type=_existing_dir, required=True, help="held-out dataset (other seed) for the "
                   "metrics")
    s.add_argument("--floor", type=_existing_dir, required=True, help="a second held-out dataset: the "
                   "Fréchet-distance floor")
    s.add_argument("--n-fd", type=_int_at_least(2), default=10000, help="images per set for the Fréchet "
                   "distances (default: 10000)")
    s.add_argument("--n-photo", type=POSITIVE, default=1000, help="generator samples for the reconstruction "
                   "network's photometric error (default: 1000)")
    s.set_defaults(func=_ship_mini)


def _add_ship_evaluator(sub) -> None:
    """Register ``ship-evaluator``."""
    from ..world.domains import DOMAINS

    se = sub.add_parser("ship-evaluator", help="evaluate a reconstruction network used only for evaluation on "
                        "held-out renders of its domain and ship it (float16): --domain human gives "
                        "mini/recon_independent (another architecture and seed than mini/recon, the independent "
                        "evaluator), another domain mini/recon_<domain>")
    se.add_argument("--recon", type=_existing_dir, required=True, help="train-recon run folder")
    se.add_argument("--train-data", type=_existing_dir, required=True, help="the dataset it was trained on")
    se.add_argument("--heldout", type=_existing_dir, required=True, help="held-out dataset (another seed)")
    se.add_argument("--n", type=POSITIVE, default=10000, help="held-out renders evaluated (default: 10000)")
    se.add_argument("--domain", default="human", choices=DOMAINS, help="the domain the network reads (trained with "
                    "train-recon --domain; default: human)")
    se.set_defaults(func=_ship_evaluator)


def _add_train_gan(sub) -> None:
    """Register ``train-gan``."""
    t = sub.add_parser("train-gan", help="train (or resume) a StyleGAN2 on a folder of images; "
                       "multi-GPU: torchrun --nproc_per_node N -m cddfm3d train-gan ...")
    _data_options(t, "mini-world dataset folder (make-world) or folder of images", "generator.safetensors")
    _gan_options(t, kimg=100.0, snapshot_kimg=5.0, augment="none", d_warmup_steps=0)
    t.add_argument("--init-generator", type=_existing_file, default=None, metavar="FILE",
                   help="fine-tune: start G and its EMA from this generator file (.safetensors, .pt or .pkl); used "
                        "only when the run starts afresh")
    _run_options(t)
    t.set_defaults(func=_train_gan)


# command -> the function that adds its subparser (build_parser calls them in the order of cli.COMMANDS)
PARSERS = {
    "demo": _add_demo,
    "make-world": _add_make_world,
    "train-recon": _add_train_recon,
    "ship-mini": _add_ship_mini,
    "ship-evaluator": _add_ship_evaluator,
    "train-gan": _add_train_gan,
}
