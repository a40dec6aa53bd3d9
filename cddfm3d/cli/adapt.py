"""Commands of domain adaptation and inversion (:mod:`cddfm3d.adapt`): ``ship-domain``, ``invert`` and
``finetune``.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from .args import (POSITIVE, SEED, _data_options, _device, _existing_dir, _existing_file, _gan_options, _int_at_least,
                   _out_dir, _run_options)
from .world import _run_gan, _training_images


def _ship_domain(args) -> int:
    from ..adapt.ship import ship_domain_generator

    report = ship_domain_generator(args.run, args.domain, args.train_data, args.heldout, n_fd=args.n_fd,
                                   n_consistency=args.n_consistency, precision=args.precision,
                                   ship_command="python -m cddfm3d " + shlex.join(args.argv))
    print(json.dumps(report, indent=2))
    return 0


def _finetune(args) -> int:
    from .. import assets
    from ..adapt.finetuning import FinetuneConfig, finetune

    init = args.generator
    if not Path(init).is_file():  # an asset name such as mini/generator
        init = str(assets.path(init))
    cfg = FinetuneConfig(resolution=args.resolution, batch_size=args.batch, total_kimg=args.kimg,
                         snapshot_kimg=args.snapshot_kimg, r1_gamma=args.gamma, lr=args.lr, augment=args.augment,
                         ada_target=args.ada_target, ada_kimg=args.ada_kimg, seed=args.seed, init_generator=init,
                         init_discriminator=args.init_discriminator, d_warmup_steps=args.d_warmup_steps,
                         freeze=args.freeze, freeze_g_blocks=args.freeze_g_blocks, train_rgb=args.train_rgb,
                         n_images=args.n_images)
    dataset = _training_images(args.data, args.resolution, args.domain)
    return _run_gan(args, finetune, cfg, dataset, min(len(dataset), args.n_images or len(dataset)),
                    "fine-tuned EMA generator")


def _invert(args) -> int:
    """invert: image files (or photographs) -> PIE or the projector -> one embedding file and picture each."""
    import imageio.v3 as iio
    import torch

    from .. import assets
    from ..adapt.inversion import embed_image, read_input, save_embedding
    from ..images import to_uint8
    from ..stylegan2 import load_generator

    dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    src = args.generator
    G = (load_generator(src, dev) if Path(src).is_file() else assets.load(src, dev)).eval()
    if not args.photo:
        given = [o for o, v in (("--face", args.face), ("--upsample", args.upsample or None),
                                ("--framing", None if args.framing == "auto" else args.framing)) if v is not None]
        if given:
            raise ValueError(f"{' and '.join(given)} only apply to photographs: add --photo (the face is then found "
                             f"and cut out), or leave them out (the whole image is embedded)")
    stems = [Path(p).stem for p in args.images]
    clash = sorted({t for t in stems if stems.count(t) > 1})
    if clash:
        raise ValueError(f"the inputs' outputs would overwrite each other: more than one image named {clash} "
                         f"(DIR/<name>.safetensors); rename or invert them into separate --out folders")
    mini = G.config == assets.load("mini/generator").config       # the mini world's architecture (any weights)
    editor = None
    if args.method == "pie":
        from ..editing import FaceEditor

        if not mini:
            raise ValueError(f"--method pie uses the mini world's T and F^i, which do not fit the generator {src} "
                             f"(another architecture); use --method project, or call cddfm3d.adapt.pie_embed from "
                             f"Python with T and F^i trained on it (FaceEditor(G, T, manipulators))")
        editor = FaceEditor.load("mini", dev, generator=G)
    face = "largest" if args.face is None else args.face
    framing = args.framing if args.framing != "auto" else ("deep3d" if mini else "ffhq")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # every input is read (and its face found) before the first embedding starts
    inputs = [(path, *read_input(path, G.resolution, args.photo, face, args.upsample, framing))
              for path in args.images]
    summary = []
    for path, x, landmarks in inputs:
        r = embed_image(G, x.to(dev), args.method, args.space, args.steps, editor, args.seed,
                        progress=not args.quiet)
        stem = Path(path).stem
        save_embedding(r, out / f"{stem}.safetensors", args.method, generator=src)
        pair = to_uint8(torch.cat([x.to(r.image.device), r.image]).cpu())          # [2, 3, R, R]
        iio.imwrite(out / f"{stem}.png", pair.permute(2, 0, 3, 1).reshape(G.resolution, -1, 3).numpy())
        row = {"file": str(path), "embedding": str(out / f"{stem}.safetensors"), "method": args.method,
               "space": r.space, "steps": r.steps, "psnr_db": round(float(r.psnr[0]), 3),
               "perceptual": r.perceptual, "perceptual_distance": round(float(r.perceptual_distance[0]), 5),
               "seconds": round(r.seconds, 2)}
        if landmarks is not None:
            from ..photo import identity_distance

            a, b = (im.permute(1, 2, 0).numpy() for im in pair)
            row["dlib_distance"] = round(identity_distance(a, b, landmarks), 4)
            row["framing"] = framing
        summary.append(row)
        print(json.dumps(row))
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0


# ------------------------------------------------------------------------------------------------ parsers
def _add_ship_domain(sub) -> None:
    """Register ``ship-domain``."""
    from ..adapt.delta import DELTA_PRECISIONS
    from ..world.domains import DOMAINS

    sd = sub.add_parser("ship-domain", help="evaluate a latent-consistent finetune run (FD against the domain's "
                        "renders, latent consistency with mini/generator) and ship it as mini/generator_<domain> "
                        "(float16 or int8 changes of mini/generator)")
    sd.add_argument("--domain", required=True, choices=[d for d in DOMAINS if d != "human"],
                    help="the domain the run was fine-tuned to (its mini/recon_<domain> must be shipped)")
    sd.add_argument("--run", type=_existing_dir, required=True, help="finetune run folder")
    sd.add_argument("--train-data", type=_existing_dir, required=True, help="the dataset it was fine-tuned on")
    sd.add_argument("--heldout", type=_existing_dir, required=True, help="held-out dataset of the domain (another "
                    "seed)")
    sd.add_argument("--n-fd", type=POSITIVE, default=2000, help="images per side of the Fréchet distances "
                    "(default: 2000)")
    sd.add_argument("--n-consistency", type=_int_at_least(2), default=1000, help="latents of the consistency "
                    "measure (default: 1000)")
    sd.add_argument("--precision", choices=DELTA_PRECISIONS, default="float16", help="storage of the changes: "
                    "float16, or int8 with one scale per output channel (half the size; default: float16)")
    sd.set_defaults(func=_ship_domain)


def _add_invert(sub) -> None:
    """Register ``invert``."""
    invert_help = ("embed image files (or photographs: --photo) into a generator with PIE (default) or the StyleGAN2 "
                   "projector; writes DIR/<name>.safetensors (styles, W+, noise maps, image: "
                   "cddfm3d.adapt.load_embedding), DIR/<name>.png (input | embedding) and DIR/summary.json")
    inv = sub.add_parser("invert", help=invert_help, description=invert_help[0].upper() + invert_help[1:] + ". "
                         "Without --photo an image is centre-cropped to a square and resized to the generator's "
                         "resolution. Inputs must have distinct file names (their outputs are named after them).")
    inv.add_argument("images", nargs="+", type=_existing_file, metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    inv.add_argument("--out", type=_out_dir, required=True, help="output folder")
    inv.add_argument("--method", default="pie", choices=["pie", "project"], help="pie: PIE's energies, W then W+ "
                     "(default; the mini world's T, F^i and reconstruction network); project: the projector")
    inv.add_argument("--space", default="w+", choices=["w", "w+", "s"], help="the projector's space (PIE ends in "
                     "w+; default: w+)")
    inv.add_argument("--steps", type=POSITIVE, default=None, help="optimisation steps (default: the method's, 300)")
    inv.add_argument("--photo", action="store_true", help="photographs: detect the face (dlib), cut it out by "
                     "Deep3D's 5-point alignment, and report dlib's identity distance to the embedding")
    inv.add_argument("--face", type=_int_at_least(0), default=None, metavar="K", help="with --photo: the K-th "
                     "largest face (0 = the largest, the default)")
    inv.add_argument("--upsample", type=_int_at_least(0), default=0, metavar="N", help="with --photo: upsample the "
                     "photo N times before detection (1 finds faces down to about 40 px; default: 0)")
    inv.add_argument("--framing", default="auto", choices=["auto", "deep3d", "ffhq"], help="with --photo: how "
                     "the face is cut out: deep3d (Deep3D's alignment, the mini world's framing), ffhq (FFHQ's, a "
                     "real generator's); auto (default): deep3d for a generator of the mini world's architecture, "
                     "ffhq for any other")
    inv.add_argument("--generator", default="mini/generator", help="an asset name or a generator file (default: "
                     "mini/generator)")
    inv.add_argument("--seed", type=SEED, default=0, help="random seed (noise maps, latent noise; default: 0)")
    inv.add_argument("--device", type=_device, default=None, help="cpu, cuda or cuda:N (default: cuda when "
                     "available, else cpu)")
    inv.add_argument("--quiet", action="store_true", help="no progress bars")
    inv.set_defaults(func=_invert)


def _add_finetune(sub) -> None:
    """Register ``finetune``."""
    from ..adapt.finetuning import FREEZE_MODES

    ft = sub.add_parser("finetune", help="latent-consistent fine-tuning of a generator to another domain (mapping "
                        "and affines frozen, as the paper); multi-GPU: torchrun --nproc_per_node N -m cddfm3d "
                        "finetune ...")
    _data_options(ft, "mini-world dataset folder (make-world) or folder of images of the target domain",
                  "generator.safetensors")
    ft.add_argument("--generator", default="mini/generator", help="the generator to adapt: an asset name or a "
                    "file (default: mini/generator)")
    ft.add_argument("--freeze", default="affine", choices=FREEZE_MODES, help="affine: mapping and all affines "
                    "frozen (the paper, default); freeze-g: also the lowest --freeze-g-blocks synthesis blocks "
                    "(FreezeG); none: train everything (the official code)")
    ft.add_argument("--freeze-g-blocks", type=_int_at_least(0), default=0, metavar="K",
                    help="with --freeze freeze-g: number of lowest-resolution synthesis blocks frozen")
    ft.add_argument("--train-rgb", action="store_true", help="with --freeze freeze-g: the frozen blocks' tRGB "
                    "layers (not their affines) still train, so the style's colours adapt at every resolution")
    ft.add_argument("--n-images", type=POSITIVE, default=None, metavar="N", help="fine-tune from the first N "
                    "images of the dataset only (default: all)")
    _gan_options(ft, kimg=20.0, snapshot_kimg=2.0, augment="ada", d_warmup_steps=200)
    _run_options(ft)
    ft.set_defaults(func=_finetune)


# command -> the function that adds its subparser (build_parser calls them in the order of cli.COMMANDS)
PARSERS = {
    "ship-domain": _add_ship_domain,
    "invert": _add_invert,
    "finetune": _add_finetune,
}
