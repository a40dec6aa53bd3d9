"""Command line: ``python -m cddfm3d <command>``. Later stages add their commands here."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys


def _demo(args) -> int:
    from .demo import run_demo

    report = run_demo(args.out, generator=args.generator, n_samples=args.n, n_channels=args.channels,
                      seed=args.seed, truncation_psi=args.truncation, device=args.device)
    print(json.dumps(report, indent=2))
    print(f"wrote {args.out}/index.html")
    return 0


def _make_world(args) -> int:
    from .world.datasets import write_dataset

    from .world.ship import record_command

    record_command(args.out, args.argv)
    out = write_dataset(args.out, args.n, seed=args.seed, domains=args.domains, size=args.size,
                        shard_size=args.shard_size)
    print(f"wrote {args.n} samples ({', '.join(args.domains)}, {args.size} px) to {out}")
    return 0


def _training_images(path, resolution: int, domain: str = "human"):
    """A mini-world dataset folder (dataset.json) or a folder of image files."""
    from pathlib import Path

    from .stylegan2.data import ImageFolderDataset
    from .world.datasets import META_FILE, WorldDataset

    if (Path(path) / META_FILE).is_file():
        ds = WorldDataset(path, domain=domain)
        if ds.size != resolution:
            raise ValueError(f"{path}: dataset images are {ds.size} px, --resolution is {resolution}")
        return ds
    return ImageFolderDataset(path, resolution)


def _train_recon(args) -> int:
    from .face3d.recon_training import ReconTrainConfig, train_recon
    from .world.datasets import WorldDataset

    from . import config

    from .world.ship import record_command

    ds = WorldDataset(args.data, domain=args.domain)
    record_command(args.out, args.argv)
    cfg = ReconTrainConfig(image_size=ds.size, width=args.width, batch_size=args.batch, steps=args.steps,
                           lr=args.lr, seed=args.seed)
    trainer = train_recon(ds.images, ds.coeffs, cfg, args.out, device=config.device(args.device),
                          resume=not args.no_resume)
    print(f"step {trainer.step}; network: {args.out}/recon.safetensors")
    return 0


def _ship_mini(args) -> int:
    from .world.ship import ship_mini_assets

    report = ship_mini_assets(args.gan, args.recon, args.train_data, args.heldout, args.floor, n_fd=args.n_fd,
                              n_photo=args.n_photo, ship_command="python -m cddfm3d " + shlex.join(args.argv))
    print(json.dumps(report, indent=2))
    return 0


def _train_gan(args) -> int:
    from .stylegan2.training import TrainConfig, init_distributed, train_gan

    device = init_distributed(args.device or "cuda") if args.device != "cpu" else init_distributed("cpu")
    cfg = TrainConfig(resolution=args.resolution, batch_size=args.batch, total_kimg=args.kimg,
                      snapshot_kimg=args.snapshot_kimg, r1_gamma=args.gamma, augment=args.augment, seed=args.seed)
    from .world.ship import record_command

    if int(os.environ.get("RANK", "0")) == 0:
        record_command(args.out, args.argv)
    trainer = train_gan(_training_images(args.data, args.resolution, args.domain), cfg, args.out, device=device,
                        resume=not args.no_resume)
    print(f"step {trainer.step}, {trainer.images_seen / 1000:.1f} kimg; EMA generator: {args.out}/generator.safetensors")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cddfm3d", description="CDDFM3D: StyleSpace face manipulation "
                                "with 3D guidance. Each command is one stage of the pipeline.")
    sub = p.add_subparsers(dest="command", metavar="<command>")
    d = sub.add_parser("demo", help="run the main job on the embedded default and write results to out/")
    d.add_argument("--out", default="out", help="output directory (default: out)")
    d.add_argument("--generator", default=None, help="generator checkpoint (.pt, .pkl or .safetensors); "
                   "default: the embedded one")
    d.add_argument("--n", type=int, default=16, help="number of samples in the grid")
    d.add_argument("--channels", type=int, default=4, help="number of StyleSpace channels to edit")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--truncation", type=float, default=0.7, help="truncation psi of the samples")
    d.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cpu)")
    d.set_defaults(func=_demo)

    w = sub.add_parser("make-world", help="render a mini-world dataset (sharded, resumable)")
    w.add_argument("--out", required=True, help="dataset folder")
    w.add_argument("--n", type=int, required=True, help="number of samples")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--domains", nargs="+", default=["human"], choices=["human", "toon"])
    w.add_argument("--size", type=int, default=64)
    w.add_argument("--shard-size", type=int, default=1000)
    w.set_defaults(func=_make_world)

    r = sub.add_parser("train-recon", help="train (or resume) the small reconstruction network on a mini-world "
                       "dataset (renders with known coefficients)")
    r.add_argument("--data", required=True, help="mini-world dataset folder (make-world)")
    r.add_argument("--domain", default="human")
    r.add_argument("--out", required=True, help="run directory (checkpoint.pt, recon.safetensors, log.json)")
    r.add_argument("--steps", type=int, default=4000)
    r.add_argument("--batch", type=int, default=32)
    r.add_argument("--lr", type=float, default=2e-3)
    r.add_argument("--width", type=int, default=16, help="base width of the small backbone")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint in --out")
    r.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    r.set_defaults(func=_train_recon)

    s = sub.add_parser("ship-mini", help="evaluate a trained mini generator and ReconNet and ship them into "
                       "assets/ (files + MANIFEST.json with sha256, config, commands, metrics)")
    s.add_argument("--gan", required=True, help="train-gan run directory")
    s.add_argument("--recon", required=True, help="train-recon run directory")
    s.add_argument("--train-data", required=True, help="the dataset both were trained on")
    s.add_argument("--heldout", required=True, help="held-out dataset (other seed) for the metrics")
    s.add_argument("--floor", required=True, help="a second held-out dataset: the Fréchet-distance floor")
    s.add_argument("--n-fd", type=int, default=10000)
    s.add_argument("--n-photo", type=int, default=1000)
    s.set_defaults(func=_ship_mini)

    t = sub.add_parser("train-gan", help="train (or resume) a StyleGAN2 on a folder of images; "
                       "multi-GPU: torchrun --nproc_per_node N -m cddfm3d train-gan ...")
    t.add_argument("--data", required=True, help="mini-world dataset folder (make-world) or folder of images")
    t.add_argument("--domain", default="human", help="domain to read from a mini-world dataset (default: human)")
    t.add_argument("--out", required=True, help="run directory (checkpoint.pt, generator.safetensors, log.json)")
    t.add_argument("--resolution", type=int, default=64)
    t.add_argument("--batch", type=int, default=16, help="total batch size over all processes")
    t.add_argument("--kimg", type=float, default=100.0, help="train until this many thousand images were shown")
    t.add_argument("--snapshot-kimg", type=float, default=5.0)
    t.add_argument("--gamma", type=float, default=0.1, help="R1 weight")
    t.add_argument("--augment", default="none", choices=["none", "translate_flip"])
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint in --out")
    t.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    t.set_defaults(func=_train_gan)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:  # user errors: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
