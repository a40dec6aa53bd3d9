"""Command line: ``python -m cddfm3d <command>`` (or the ``cddfm3d`` console script). Later stages add their
commands here.

Every argument is checked by its argparse type before any work starts or any file is written; a wrong value ends
with argparse's usage line and one ``error:`` line (exit status 2). Errors found later in user input (a missing
folder, a checkpoint of another architecture) also end with one ``error:`` line and status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path


# ------------------------------------------------------------------------------------------------ argument types
def _int_at_least(lo: int, hi: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, found {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise argparse.ArgumentTypeError(f"expected an integer {bounds}, found {value}")
        return value

    parse.__name__ = "int"
    return parse


def _float(lo: float | None = None, strict: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, found {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, found {text!r}")
        if lo is not None and (value <= lo if strict else value < lo):
            raise argparse.ArgumentTypeError(f"expected a number {'>' if strict else '>='} {lo:g}, found {value:g}")
        return value

    parse.__name__ = "float"
    return parse


def _power_of_two(text: str) -> int:
    value = _int_at_least(4)(text)
    if value & (value - 1):
        raise argparse.ArgumentTypeError(f"expected a power of two >= 4, found {value}")
    return value


def _device(text: str) -> str:
    """A torch device string that exists on this machine: cpu, cuda, cuda:N, mps."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; expected cpu, cuda or cuda:N "
                                         f"(an index of torch.cuda.device_count())") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"device {text!r} requested but CUDA is not available here "
                                             f"(torch.cuda.is_available() is False); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"device {text!r} requested but only {torch.cuda.device_count()} CUDA "
                                             f"device(s) exist")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise argparse.ArgumentTypeError(f"device {text!r} requested but MPS is not available here")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"unsupported device {text!r}; expected cpu, cuda or cuda:N")
    return text


def _attribute_weight(text: str) -> tuple[str, float]:
    """``NAME=W`` with an attribute name and a weight >= 0."""
    from ..face3d.measures import ATTRIBUTES

    name, sep, value = text.partition("=")
    if not sep or name not in ATTRIBUTES:
        raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT with NAME one of {', '.join(ATTRIBUTES)}, "
                                         f"found {text!r}")
    return name, _float(0)(value)


def _existing_dir(text: str) -> str:
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such folder")
    return text


def _existing_file(text: str) -> str:
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder, not a file (give its files, e.g. {text}/*.png)")
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return text


def _out_dir(text: str) -> str:
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: exists and is not a folder")
    return text


SEED = _int_at_least(0, 2 ** 31 - 1)
POSITIVE = _int_at_least(1)


# ------------------------------------------------------------------------------------------------ commands
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


def _ship_domain(args) -> int:
    from ..adapt.ship import ship_domain_generator

    report = ship_domain_generator(args.run, args.domain, args.train_data, args.heldout, n_fd=args.n_fd,
                                   n_consistency=args.n_consistency, precision=args.precision,
                                   ship_command="python -m cddfm3d " + shlex.join(args.argv))
    print(json.dumps(report, indent=2))
    return 0


def _ship_editing(args) -> int:
    from ..editing.ship import ship_editing_assets

    report = ship_editing_assets(args.pairs, args.t, args.heldout_pairs, args.layer_sets, device=args.device,
                                 ship_command="python -m cddfm3d " + shlex.join(args.argv))
    print(json.dumps(report, indent=2))
    return 0


def _ship_f(args) -> int:
    from ..editing.ship import ship_manipulators

    report = ship_manipulators(args.runs, args.pairs, args.heldout_pairs, n_eval=args.n, device=args.device,
                               ship_command="python -m cddfm3d " + shlex.join(args.argv))
    print(json.dumps({"seconds": report["seconds"]}, indent=2))
    from ..editing.evaluation import EditingEvaluation

    print(EditingEvaluation.from_dict(report["evaluation"]).table())
    return 0


def _evaluate(args) -> int:
    """evaluate: the editing methods on held-out pairs, read from the generated images (one table)."""
    from .. import assets
    from ..editing.baselines import fit_linear_baseline
    from ..editing.evaluation import evaluate
    from ..editing.manipulator import LatentManipulator
    from ..editing.pairs import PairDataset
    from ..face3d import ReconNet
    from ..stylespace.rig import predict_all

    dev = args.device
    G = assets.load("mini/generator", dev).eval()
    T = assets.load("mini/attribute_predictor", dev).eval()
    methods: dict[str, dict] = {}
    if not args.no_shipped:
        shipped = {a: assets.load(f"mini/manipulator/{a}", dev) for a in args.attributes
                   if f"mini/manipulator/{a}" in assets.available()}
        if shipped:
            methods["cddfm3d"] = shipped
    reserved = {"linear"} if args.linear_from else set()
    for name, folder in args.method:
        if name in methods or name in reserved:
            raise ValueError(f"--method {name}={folder}: the name {name!r} is already used (the shipped F^i are "
                             f"'cddfm3d', --linear-from is 'linear', or another --method); choose another NAME")
        found = {}
        for a in args.attributes:
            f = Path(folder) / a / "manipulator.safetensors"
            if f.is_file():
                found[a] = LatentManipulator.load(f, dev)
        if not found:
            raise ValueError(f"--method {name}={folder}: no {folder}/<attribute>/manipulator.safetensors for any of "
                             f"{list(args.attributes)}")
        methods[name] = found
    if args.linear_from:
        data = PairDataset(args.linear_from, fields=("styles",)).load_fields(["styles"])
        styles = data["styles"][:args.linear_n].to(dev or "cpu")
        methods["linear"] = fit_linear_baseline(styles, predict_all(T, styles), attributes=args.attributes)
    if not methods:
        raise ValueError("evaluate: nothing to evaluate: no shipped mini/manipulator/<attribute>, no --method and "
                         "no --linear-from")
    evaluators = {"recon": assets.load("mini/recon", dev).eval()}
    if "mini/recon_independent" in assets.available():
        evaluators["independent"] = assets.load("mini/recon_independent", dev).eval()
    for name, path in args.evaluator:
        if name in evaluators:
            raise ValueError(f"--evaluator {name}={path}: the name {name!r} is already used (the shipped mini/recon "
                             f"is 'recon', mini/recon_independent 'independent'); choose another NAME")
        evaluators[name] = ReconNet.load(path, dev).eval()
    delta_readers = {}
    if args.read_deltas is not None:
        if args.read_deltas not in evaluators:
            raise ValueError(f"--read-deltas {args.read_deltas}: no such evaluator; this run has {list(evaluators)}")
        for name in list(methods):
            read = f"{name}+{args.read_deltas}"
            if read in methods:
                raise ValueError(f"--read-deltas: the method name {read!r} is already used; rename that --method")
            methods[read] = methods[name]
            delta_readers[read] = args.read_deltas
    fields = ("styles", "noise_seed") + (("coeffs",) if args.reference else ())
    held = PairDataset(args.heldout_pairs, fields=fields).load_fields(fields)
    n = min(args.n, len(held["styles"]))
    report = evaluate(G, T, methods, held["styles"][:n], held["noise_seed"][:n], evaluators,
                      targets=args.targets, attributes=args.attributes, batch=args.batch, seed=args.seed,
                      reference=held["coeffs"][:n] if args.reference else None, delta_readers=delta_readers,
                      progress=True)
    print(report.table())
    if args.out:
        from ..serialization import atomic_write

        doc = report.to_dict() | {"command": "python -m cddfm3d " + shlex.join(args.argv)}
        atomic_write(Path(args.out), lambda tmp: tmp.write_text(json.dumps(doc, indent=1)))
        print(f"written: {args.out}")
    failures = {m: report.goal_failures(m) for m in methods}
    print(json.dumps({"goals_met": {m: not f for m, f in failures.items()}}, indent=2))
    return 0


def _editor(args) -> int:
    from ..ui.app import serve

    return serve(port=args.port, open_browser=not args.no_browser)


def _named_path(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, found {text!r}")
    if not Path(path).exists():
        raise argparse.ArgumentTypeError(f"{text!r}: {path} does not exist")
    return name, path


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


def _share(text: str) -> float:
    """A share in (0, 1]."""
    value = _float(0, strict=True)(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], found {value:g}")
    return value


def _select_layers(args) -> int:
    """select-layers: measure the layer x attribute responses, choose the reduced StyleSpace per attribute, write
    the layer-set file (cddfm3d.stylespace)."""
    import torch

    from .. import assets, config
    from ..assets import sha256_file
    from ..editing.pairs import default_model
    from ..face3d.recon import ReconNet
    from ..stylegan2.checkpoints import load_generator
    from ..stylespace import layer_set_report, save_layer_sets
    from ..stylespace.response import layer_response, sample_styles

    device = torch.device(config.device(args.device))
    gen_path = Path(args.generator) if args.generator else assets.path("mini/generator")
    recon_path = Path(args.recon) if args.recon else assets.path("mini/recon")
    G = load_generator(gen_path, device=device).eval().requires_grad_(False)
    recon = ReconNet.load(recon_path, device=device).eval().requires_grad_(False)
    model = default_model(recon, device)
    names = [m.name for m in G.style_layers]
    meta = {"generator": str(gen_path), "generator_sha256": sha256_file(gen_path), "recon": str(recon_path),
            "recon_sha256": sha256_file(recon_path), "command": "python -m cddfm3d " + shlex.join(args.argv)}
    responses = {}
    if args.method in ("recon", "both"):
        responses["recon"] = layer_response(G, recon, model, n=args.n, seed=args.seed, amount=args.amount,
                                             direction=args.direction, batch_size=args.batch, progress=True)
    if args.method in ("rig", "both"):
        from ..editing.predictor import load_attribute_predictor
        from ..stylespace.rig import RigConfig, rig_response

        if args.predictor:
            pred_path = Path(args.predictor)
            T = load_attribute_predictor(pred_path, device=device)
        else:
            try:
                pred_path = assets.path("mini/attribute_predictor")
            except assets.AssetError as e:
                raise FileNotFoundError(f"select-layers --method {args.method} needs the attribute predictor T of "
                                        f"this generator: pass --predictor FILE (train-t's attribute_predictor."
                                        f"safetensors) or ship one with ship-editing ({e})") from e
            T = assets.load("mini/attribute_predictor", device)
        T = T.eval().requires_grad_(False)
        if T.style_dim != G.style_dim:
            raise ValueError(f"{pred_path}: the attribute predictor reads style_dim {T.style_dim}, the generator "
                             f"{gen_path} has style_dim {G.style_dim}; use T trained on this generator's pairs")
        meta.update(predictor=str(pred_path), predictor_sha256=sha256_file(pred_path))
        pool = G.flatten_styles(sample_styles(G, args.rig_pool, torch.Generator().manual_seed(args.seed + 1),
                                              mixing="official5" if G.num_ws >= 5 else "w"))
        responses["rig"] = rig_response(T, pool, names, [m.channels for m in G.style_layers],
                                        config=RigConfig(steps=args.rig_steps, seed=args.seed), n=args.n,
                                        seed=args.seed, progress=True)
    if args.method == "paper":
        from ..stylespace import paper_layer_sets

        sets, dropped = paper_layer_sets(names)
        empty = [a for a, v in sets.items() if not v]
        if empty:
            raise ValueError(f"select-layers --method paper: the paper's sets of {empty} have no layer in "
                             f"{gen_path} (all of {[dropped[a] for a in empty]} are above its resolution)")
        out = save_layer_sets(args.out, sets, names, {**meta, "rule": "paper", "paper_dropped": dropped})
        print("paper (mapped by name): " + "; ".join(f"{a} {v}" for a, v in sets.items()))
        print(f"wrote {out}")
        return 0
    candidates = [m.index for m in G.style_layers if not m.is_torgb] if args.exclude_torgb else None
    sets, report = layer_set_report(responses, names, primary="recon" if "recon" in responses else "rig",
                                    share=args.share, candidates=candidates)
    out = save_layer_sets(args.out, sets, names, {**meta, **report})
    for label, table in [("chosen", sets)] + [(m, v) for m, v in report["sets_by_method"].items()] + \
            [("paper (mapped by name)", report["paper_sets"])]:
        print(f"{label}: " + "; ".join(f"{a} {v}" for a, v in table.items()))
    for label, table in report["jaccard"].items():
        print(f"jaccard {label}: " + ", ".join(f"{a} {v:.2f}" for a, v in table.items()))
    print(f"wrote {out}")
    return 0


def _gen_pairs(args) -> int:
    """gen-pairs: generate (styles, W+, noise seed, image, 257 coefficients, 68 landmarks) training pairs
    (cddfm3d.editing.pairs), sharded and resumable; torchrun ranks write disjoint shards."""
    import torch

    from .. import assets
    from ..editing.pairs import default_model, file_record, generate_pairs, network_record
    from ..stylegan2.checkpoints import load_generator
    from ..training import init_distributed

    if args.threads:
        torch.set_num_threads(args.threads)
    device = init_distributed(args.device or "cuda") if args.device != "cpu" else init_distributed("cpu")
    names = {"generator": f"{args.world}/generator", "recon": f"{args.world}/recon"}

    def named(kind: str):
        name = names[kind]
        net = assets.load(name, device)
        sha = assets.entry(name)["sha256"] if not assets.is_real(name) else assets.sha256_file(assets.path(name))
        return net, network_record(net, f"asset {name} ({assets.path(name)})", sha)

    if args.generator:
        G = load_generator(args.generator, device)
        g_rec = file_record(G, args.generator)
    else:
        G, g_rec = named("generator")
    if args.recon:
        recon = _load_recon(args.recon, device)
        r_rec = file_record(recon, args.recon)
    else:
        recon, r_rec = named("recon")
    model = default_model(recon, device)
    shard_size = args.shard_size or (5000 if args.world == "mini" else 250)
    with torch.no_grad():
        out = generate_pairs(G, recon, args.out, args.n, seed=args.seed, mixing=args.mixing, batch=args.batch,
                             device=device, shard_size=shard_size, model=model,
                             align=None if args.align == "auto" else args.align, rounds=args.rounds,
                             networks={"generator": g_rec, "recon": r_rec}, command=args.argv)
    print(f"wrote {args.n} pairs ({args.mixing}, {G.resolution} px, style_dim {G.style_dim}) to {out}")
    return 0


def _loss_weight(text: str) -> tuple[str, float]:
    """``NAME`` or ``NAME=W``: a loss of train-t (pdc, vdc, wpdc, feature, official) and its weight (default 1)."""
    from ..editing.losses import LOSS_NAMES

    name, sep, value = text.partition("=")
    if name not in LOSS_NAMES:
        raise argparse.ArgumentTypeError(f"expected NAME or NAME=WEIGHT with NAME one of {', '.join(LOSS_NAMES)}, "
                                         f"found {text!r}")
    return name, _float(0)(value) if sep else 1.0


def _open_fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    value = _float(0, strict=True)(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), found {value:g}")
    return value


def _train_t(args) -> int:
    """train-t: train (or resume) the attribute predictor T on a gen-pairs folder, then print its evaluation on
    the held-out split."""
    from ..editing.pairs import PairDataset
    from ..editing.t_training import EXPORT_FILE, TTrainConfig, check_goals, train_t
    from ..training import init_distributed, is_main_process

    ds = PairDataset(args.pairs, fields=("styles", "coeffs"))
    data = ds.load_fields(["styles", "coeffs"])
    labels_model = ds.meta["networks"].get("model", {}).get("name")
    world = args.world if args.world != "auto" else ("mini" if labels_model == "MiniFace" else "real")
    device = init_distributed(args.device or "cuda") if args.device != "cpu" else init_distributed("cpu")
    if world == "mini":
        from ..world.domains import mini_model

        model = mini_model(device)
    else:
        from .. import assets

        model = assets.load("real/bfm", device)
    weights: dict[str, float] = {}
    for name, w in args.loss:
        weights[name] = weights.get(name, 0.0) + w
    cfg = TTrainConfig(style_dim=int(data["styles"].shape[1]), hidden=list(args.hidden or []), steps=args.steps,
                       batch_size=args.batch, lr=args.lr, weight_decay=args.weight_decay, losses=weights,
                       coeff_scale="prior" if world == "mini" else "labels", val_fraction=args.val_fraction,
                       eval_every=args.eval_every, checkpoint_every=args.checkpoint_every, seed=args.seed)
    trainer = train_t(data["styles"], data["coeffs"], cfg, args.out, model=model, device=device,
                      resume=not args.no_resume, stop_at_step=args.stop_at_step, command=args.argv)
    if is_main_process():
        report = trainer.evaluate(progress=True)
        report["goals_met"] = check_goals(report)
        print(json.dumps({"world": world, "step": trainer.step, "losses": weights, "held_out": report}, indent=2))
        print(f"step {trainer.step}; attribute predictor: {Path(args.out) / EXPORT_FILE}")
    return 0


def _train_f(args) -> int:
    """train-f: train (or resume) the latent manipulation network F^i of one attribute on a gen-pairs folder with
    the frozen T, then print T's view of it on the held-out split."""
    from .. import assets
    from ..editing.f_training import EXPORT_FILE, FTrainConfig, train_f
    from ..editing.pairs import PairDataset
    from ..editing.predictor import load_attribute_predictor
    from ..stylespace.selection import read_layer_sets
    from ..training import init_distributed, is_main_process

    image = args.through == "image"
    if args.recon and not image:
        raise ValueError("train-f: --recon is read only with --through image (the reconstruction network of the "
                         "pairs' labels, which reads the edited images)")
    fields = (["styles", "coeffs"] + (["images"] if args.loss_mode == "render" else [])
              + (["noise_seed"] if image else []))
    ds = PairDataset(args.pairs, fields=tuple(fields))
    data = ds.load_fields(fields)
    device = init_distributed(args.device or "cuda") if args.device != "cpu" else init_distributed("cpu")
    T = load_attribute_predictor(args.predictor, device) if args.predictor else assets.load(
        "mini/attribute_predictor", device)
    G = recon = None
    if image:   # the pairs' own generator and reconstruction network, checked against what pairs.json recorded
        if ds.config.get("align", "none") != "none":
            raise ValueError(f"{ds.root / 'pairs.json'}: field 'config.align' is {ds.config.get('align')!r}; "
                             f"--through image compares the reconstruction network's readings of whole generated "
                             f"images with the labels, so the labels must be whole-image readings (gen-pairs "
                             f"--align none)")
        G, recon = (_pairs_network(ds, what, path, device) for what, path in (("generator", args.generator),
                                                                               ("recon", args.recon)))
    sets = read_layer_sets(args.layer_sets)[0] if args.layer_sets else assets.load("mini/layer_sets")
    channels = [m.channels for m in G.style_layers] if G is not None else _layer_channels(args)
    if args.full_s:
        layers = list(range(len(channels)))
    else:
        layers = sets[args.attribute]
    weights = dict(args.weight)
    cfg = FTrainConfig(attribute=args.attribute, edit_layers=layers, steps=args.steps, batch_size=args.batch,
                       lr=args.lr, activation=None if args.activation == "linear" else args.activation,
                       loss_mode=args.loss_mode, weights=weights, warmup=args.warmup,
                       checkpoint_every=args.checkpoint_every, through=args.through, edit_weight=args.edit_weight,
                       delta_from=args.delta_from,
                       eval_every=args.eval_every, seed=args.seed)
    trainer = train_f(cfg, T, data["styles"], data["coeffs"], channels, args.out,
                      images=data.get("images"), device=device, resume=not args.no_resume,
                      stop_at_step=args.stop_at_step, command=args.argv, image_size=int(ds.config["resolution"]),
                      G=G, recon=recon, noise_seeds=data.get("noise_seed"), init=args.init)
    if is_main_process():
        print(json.dumps({"attribute": args.attribute, "layers": layers, "step": trainer.step,
                          "held_out_T_view": trainer.evaluate()}, indent=2))
        print(f"step {trainer.step}; F^{args.attribute}: {Path(args.out) / EXPORT_FILE}")
    return 0


def _load_recon(path, device):
    """A reconstruction network file: train-recon's .safetensors, or Deep3DFaceRecon's checkpoint (epoch_20.pth)."""
    from ..face3d import ReconNet

    load = ReconNet.load if Path(path).suffix == ".safetensors" else ReconNet.from_deep3d
    return load(path, device=device)


def _pairs_network(ds, what: str, path, device):
    """The generator or reconstruction network (``what``) a gen-pairs folder was made with: ``path`` (a file) or the
    shipped ``mini/<what>``; its state sha256 must be the one ``pairs.json`` records (as gen-pairs checks on
    resume)."""
    from .. import assets
    from ..editing.pairs import state_sha256
    from ..stylegan2 import load_generator

    if path:
        net = load_generator(path, device) if what == "generator" else _load_recon(path, device)
    else:
        net = assets.load(f"mini/{what}", device)
    recorded = str(ds.meta["networks"][what].get("state_sha256"))
    found = state_sha256(net)
    if found != recorded:
        raise ValueError(f"{ds.root / 'pairs.json'}: field 'networks.{what}.state_sha256' is {recorded[:12]}..., the "
                         f"{what} given ({path or 'the shipped mini/' + what}) is {found[:12]}...: pass the {what} "
                         f"the pairs were made with (--{what})")
    return net.eval()


def _layer_channels(args) -> list[int]:
    """Channels of every style layer of the generator the pairs were made with (the shipped one, or --generator)."""
    from .. import assets
    from ..stylegan2 import load_generator

    G = load_generator(args.generator) if args.generator else assets.load("mini/generator")
    return [m.channels for m in G.style_layers]


def _term_weight(text: str) -> tuple[str, float]:
    from ..editing.f_training import LOSS_TERMS

    name, sep, value = text.partition("=")
    if not sep or name not in LOSS_TERMS:
        raise argparse.ArgumentTypeError(f"expected TERM=WEIGHT with TERM one of {', '.join(LOSS_TERMS)}, found "
                                         f"{text!r}")
    try:
        w = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the weight must be a number, found {value!r}") from None
    if not w >= 0 or w == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: the weight must be finite and >= 0, found {w}")
    return name, w


# ------------------------------------------------------------------------------------------------ parser
def _data_options(p: argparse.ArgumentParser, data: str, export: str) -> None:
    """--data, --domain and --out of a training command."""
    from ..world.domains import DOMAINS

    p.add_argument("--data", type=_existing_dir, required=True, help=data)
    p.add_argument("--domain", default="human", choices=DOMAINS, help="domain to read from a mini-world "
                   "dataset (default: human)")
    p.add_argument("--out", type=_out_dir, required=True, help=f"run folder (checkpoint.pt, {export}, log.json, "
                   "commands.txt)")


def _gan_options(p: argparse.ArgumentParser, kimg: float, snapshot_kimg: float, augment: str,
                 d_warmup_steps: int) -> None:
    """The StyleGAN2 training options train-gan and finetune share, with each command's defaults."""
    p.add_argument("--resolution", type=_power_of_two, default=64, help="image size, a power of two (default: 64)")
    p.add_argument("--batch", type=POSITIVE, default=16, help="total batch size over all processes (default: 16)")
    p.add_argument("--kimg", type=_float(0, strict=True), default=kimg, help="train until this many thousand "
                   f"images were shown (default: {kimg:g})")
    p.add_argument("--snapshot-kimg", type=_float(0, strict=True), default=snapshot_kimg, help="write a checkpoint "
                   f"every this many thousand images (default: {snapshot_kimg:g})")
    p.add_argument("--gamma", type=_float(0), default=0.1, help="R1 weight (default: 0.1)")
    p.add_argument("--lr", type=_float(0, strict=True), default=0.002, help="Adam learning rate of G and D "
                   "(default: 0.002, StyleGAN2's)")
    p.add_argument("--augment", default=augment, choices=["none", "translate_flip", "ada"], help="augmentation of "
                   f"the discriminator's inputs (default: {augment}; ada: adaptive, off until D overfits)")
    p.add_argument("--ada-target", type=_float(0, strict=True), default=0.6, help="ADA's target for "
                   "E[sign(D(real))] (default: 0.6)")
    p.add_argument("--ada-kimg", type=_float(0, strict=True), default=100.0, help="ADA: thousand images for the "
                   "probability to go from 0 to 1 (default: 100)")
    p.add_argument("--init-discriminator", type=_existing_file, default=None, metavar="FILE",
                   help="start D from this discriminator file (default: a fresh D)")
    p.add_argument("--d-warmup-steps", type=_int_at_least(0), default=d_warmup_steps, metavar="N",
                   help=f"train only D for the first N steps (G and its EMA frozen; default: {d_warmup_steps})")


def _run_options(p: argparse.ArgumentParser) -> None:
    """Options every training command shares (the resumable run's)."""
    p.add_argument("--seed", type=SEED, default=0, help="random seed of the run: initialisation, batches, noise "
                   "(default: 0)")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint in --out and start afresh")
    p.add_argument("--stop-at-step", type=POSITIVE, default=None, metavar="N",
                   help="stop once the run has made N optimisation steps in all (the schedule stays that of the "
                        "full run; re-run without it to continue)")
    p.add_argument("--device", type=_device, default=None, help="cpu, cuda or cuda:N (default: cuda when "
                   "available, else cpu)")


def prog_name(argv0: str | None = None) -> str:
    """``cddfm3d`` when run as the console script, ``python -m cddfm3d`` otherwise."""
    name = Path(argv0 if argv0 is not None else (sys.argv[0] if sys.argv else "")).name
    return "cddfm3d" if name in ("cddfm3d", "cddfm3d.exe") else "python -m cddfm3d"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog or prog_name(), description="CDDFM3D: StyleSpace face manipulation "
                                "with 3D guidance. Each command is one stage of the pipeline.")
    sub = p.add_subparsers(dest="command", metavar="<command>")
    d = sub.add_parser("demo", help="run the main job on the embedded default and write results to out/")
    d.add_argument("--out", type=_out_dir, default="out", help="output folder (default: out)")
    d.add_argument("--generator", type=_existing_file, default=None, help="generator checkpoint (.pt, .pkl or "
                   ".safetensors) at the mini world's 64 px; default: the shipped one")
    from ..demo import MAX_CHANNELS, MAX_SAMPLES

    d.add_argument("--n", type=_int_at_least(1, MAX_SAMPLES), default=16, help=f"number of samples in the grid, "
                   f"1-{MAX_SAMPLES} (default: 16)")
    d.add_argument("--channels", type=_int_at_least(1, MAX_CHANNELS), default=4, help=f"number of StyleSpace "
                   f"channels to edit, 1-{MAX_CHANNELS} (default: 4)")
    d.add_argument("--seed", type=SEED, default=0, help="seed of the samples and the channel statistics (default: 0)")
    d.add_argument("--truncation", type=_float(), default=0.7, help="truncation psi of the samples: 1 = none, "
                   "0 = the average face (default: 0.7)")
    d.add_argument("--device", type=_device, default=None, help="cpu, cuda or cuda:N (default: cpu)")
    d.set_defaults(func=_demo)

    from ..adapt.delta import DELTA_PRECISIONS
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

    from ..face3d.measures import ATTRIBUTES

    e = sub.add_parser("ship-editing", help="evaluate the attribute predictor T on held-out pairs and ship it and "
                       "the layer sets into assets/ (mini/attribute_predictor, mini/layer_sets)")
    e.add_argument("--pairs", type=_existing_dir, required=True, help="the gen-pairs folder T was trained on")
    e.add_argument("--t", type=_existing_dir, required=True, help="train-t run folder")
    e.add_argument("--heldout-pairs", type=_existing_dir, required=True, help="gen-pairs folder of another seed "
                   "(T is evaluated on it)")
    e.add_argument("--layer-sets", type=_existing_file, required=True, help="the select-layers output file")
    e.add_argument("--device", type=_device, default=None, help="cpu, cuda or cuda:N (default: cpu)")
    e.set_defaults(func=_ship_editing)

    sf = sub.add_parser("ship-f", help="evaluate train-f runs (one per attribute) on held-out pairs and ship them "
                        "into assets/ (mini/manipulator/<attribute>)")
    sf.add_argument("--runs", type=_existing_dir, nargs="+", required=True, help="train-f run folders")
    sf.add_argument("--pairs", type=_existing_dir, required=True, help="the gen-pairs folder they were trained on")
    sf.add_argument("--heldout-pairs", type=_existing_dir, required=True, help="gen-pairs folder of another seed "
                    "(the evaluation's sources)")
    sf.add_argument("--n", type=POSITIVE, default=500, help="held-out sources evaluated (default: 500)")
    sf.add_argument("--device", type=_device, default=None, help="cpu, cuda or cuda:N (default: cpu)")
    sf.set_defaults(func=_ship_f)

    ev = sub.add_parser("evaluate", help="evaluate editing methods on held-out pairs: edit completion, the 5x5 "
                        "leakage, identity and FD, read from the generated images by reconstruction networks")
    ev.add_argument("--heldout-pairs", type=_existing_dir, required=True, help="gen-pairs folder of sources the "
                    "training never saw")
    ev.add_argument("--n", type=POSITIVE, default=200, help="sources (default: 200)")
    ev.add_argument("--method", nargs="+", type=_named_path, default=[], metavar="NAME=DIR", help="further "
                    "methods: DIR/<attribute>/manipulator.safetensors (train-f runs, e.g. --full-s or other layer "
                    "sets)")
    ev.add_argument("--no-shipped", action="store_true", help="leave out the shipped F^i (method 'cddfm3d')")
    ev.add_argument("--linear-from", type=_existing_dir, default=None, metavar="PAIRS", help="add the "
                    "InterFaceGAN-style linear baseline fitted on these training pairs (styles vs T's coefficients)")
    ev.add_argument("--linear-n", type=POSITIVE, default=10000, help="pairs the linear baseline is fitted on")
    ev.add_argument("--reference", action="store_true", help="add the perfect-edit reference (method 'perfect'): "
                    "the world's renders of the held-out pairs' labels, edited exactly, read by the same evaluators "
                    "(an estimate of the ceiling of every measure)")
    ev.add_argument("--evaluator", nargs="+", type=_named_path, default=[], metavar="NAME=FILE", help="further "
                    "reconstruction networks reading the images (ReconNet safetensors)")
    ev.add_argument("--read-deltas", default=None, metavar="EVALUATOR", help="also evaluate every method (the "
                    "shipped F^i, each --method, the linear baseline) with P_s, and the swap target, read by this "
                    "evaluator from the source images instead of predicted by T, as method '<name>+<EVALUATOR>' "
                    "(e.g. recon)")
    ev.add_argument("--targets", nargs="+", default=["swap", "prior"], choices=["swap", "prior"],
                    help="target kinds: swap (another source's attribute) and/or prior (a draw of the world prior)")
    ev.add_argument("--attributes", nargs="+", default=list(ATTRIBUTES), choices=list(ATTRIBUTES),
                    help="attributes to edit (default: all five)")
    ev.add_argument("--batch", type=POSITIVE, default=64, help="sources per batch (default: 64)")
    ev.add_argument("--seed", type=SEED, default=0, help="seed of the swap pairing and the prior targets")
    ev.add_argument("--out", default=None, help="write the report as JSON here")
    ev.add_argument("--device", type=_device, default=None, help="cpu, cuda or cuda:N (default: cpu)")
    ev.set_defaults(func=_evaluate)

    t = sub.add_parser("train-gan", help="train (or resume) a StyleGAN2 on a folder of images; "
                       "multi-GPU: torchrun --nproc_per_node N -m cddfm3d train-gan ...")
    _data_options(t, "mini-world dataset folder (make-world) or folder of images", "generator.safetensors")
    _gan_options(t, kimg=100.0, snapshot_kimg=5.0, augment="none", d_warmup_steps=0)
    t.add_argument("--init-generator", type=_existing_file, default=None, metavar="FILE",
                   help="fine-tune: start G and its EMA from this generator file (.safetensors, .pt or .pkl); used "
                        "only when the run starts afresh")
    _run_options(t)
    t.set_defaults(func=_train_gan)

    from ..adapt.finetuning import FREEZE_MODES

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
    gp = sub.add_parser("gen-pairs", help="generate training pairs (StyleSpace s, W+, noise seed, image, 257 "
                        "coefficients, 68 landmarks) as sharded safetensors + pairs.json (resumable); multi-GPU: "
                        "torchrun --nproc_per_node N -m cddfm3d gen-pairs ...")
    gp.add_argument("--out", type=_out_dir, required=True, help="pairs folder (pairs.json, pairs-*.safetensors, "
                    "commands.txt); the same command resumes an interrupted run")
    gp.add_argument("--n", "--count", dest="n", type=POSITIVE, required=True, help="number of pairs (spell it "
                    "--count under torchrun, whose own parser mistakes --n for an abbreviation of its options)")
    gp.add_argument("--seed", type=SEED, default=0, help="seed: every sample is a pure function of (seed, index) "
                    "(default: 0)")
    gp.add_argument("--mixing", default="official5", choices=["official5", "w"], help="official5: the official "
                    "5-way contiguous W+ style mixing, no truncation; w: plain W (default: official5)")
    gp.add_argument("--batch", type=POSITIVE, default=64, help="samples per progress step; results do not depend "
                    "on it (each sample is computed alone) (default: 64)")
    gp.add_argument("--shard-size", type=POSITIVE, default=None, help="samples per shard file; an interrupted run "
                    "loses at most one shard (default: 5000 in the mini world, 250 in the real one)")
    gp.add_argument("--world", default="mini", choices=["mini", "real"], help="mini: the shipped generator and "
                    "reconstruction network; real: the configured FFHQ generator, Deep3DFaceRecon and BFM "
                    "(cddfm3d.assets) (default: mini)")
    gp.add_argument("--generator", type=_existing_file, default=None, help="generator checkpoint (.pt, .pkl or "
                    ".safetensors) instead of the world's")
    gp.add_argument("--recon", type=_existing_file, default=None, help="reconstruction network instead of the "
                    "world's: .safetensors (train-recon) or Deep3DFaceRecon's epoch_20.pth")
    gp.add_argument("--align", default="auto", choices=["auto", "none", "self"], help="none: the whole image is "
                    "the network's input; self: 5-point self-alignment (cddfm3d.editing.labels); auto: none when "
                    "the image has the network's input size, else self (default: auto)")
    gp.add_argument("--rounds", type=_int_at_least(0), default=2, help="re-alignments of the self-alignment "
                    "(default: 2)")
    gp.add_argument("--device", type=_device, default=None, help="cpu, cuda or cuda:N (default: cuda when "
                    "available, else cpu)")
    gp.add_argument("--threads", type=POSITIVE, default=None, help="CPU threads of each process (default: "
                    "torch's). Each sample runs alone, so small networks gain little from threads: on a shared CPU "
                    "use --threads 1 and one torchrun rank per core. Results depend on it at float rounding level "
                    "(each shard records it)")
    gp.set_defaults(func=_gen_pairs)
    sl = sub.add_parser("select-layers", help="measure how each style layer moves each 3DMM attribute and write "
                        "the reduced StyleSpace (layer set) of every attribute (JSON)")
    sl.add_argument("--out", required=True, help="layer-set file to write (.json)")
    sl.add_argument("--method", default="recon", choices=["recon", "rig", "both", "paper"], help="recon: perturb "
                    "each layer, read the attributes with the reconstruction network on the generated images; rig: "
                    "the paper's procedure (a mapping over the full S trained through T); both: measure both, the "
                    "sets come from recon; paper: no measurement, the paper's FFHQ-1024 sets mapped to this "
                    "generator's layers by name (the layer-set ablation) (default: recon)")
    sl.add_argument("--n", type=_int_at_least(2), default=64, help="faces per layer (recon) and evaluation pairs "
                    "(rig) (default: 64)")
    sl.add_argument("--seed", type=SEED, default=0, help="seed of faces, noise and perturbations (default: 0)")
    sl.add_argument("--share", type=_share, default=0.8, help="share of each attribute's response "
                    "the chosen layers must hold, in (0, 1] (default: 0.8)")
    sl.add_argument("--amount", type=_float(0, strict=True), default=1.0, help="perturbation: stds per channel in "
                    "RMS (direction random) or fraction of the way to another face (mix) (default: 1)")
    sl.add_argument("--direction", default="random", choices=["random", "mix"], help="perturbation direction of "
                    "the recon method (default: random)")
    sl.add_argument("--batch", type=POSITIVE, default=32, help="faces per forward pass (default: 32)")
    sl.add_argument("--exclude-torgb", action="store_true", help="never choose a tRGB layer (as the paper's sets)")
    sl.add_argument("--rig-steps", type=POSITIVE, default=400, help="training steps of each rig mapping "
                    "(default: 400)")
    sl.add_argument("--rig-pool", type=_int_at_least(2), default=4096, help="random styles the rig mappings train "
                    "on (default: 4096)")
    sl.add_argument("--generator", type=_existing_file, default=None, help="generator checkpoint (.pt, .pkl or "
                    ".safetensors); default: the shipped mini generator")
    sl.add_argument("--recon", type=_existing_file, default=None, help="reconstruction network written by "
                    "train-recon (.safetensors); default: the shipped mini recon")
    sl.add_argument("--predictor", type=_existing_file, default=None, help="attribute predictor T for the rig "
                    "method (train-t output); default: the shipped mini/attribute_predictor")
    sl.add_argument("--device", type=_device, default=None, help="cpu, cuda or cuda:N (default: cuda when "
                    "available, else cpu)")
    sl.set_defaults(func=_select_layers)
    tt = sub.add_parser("train-t", help="train (or resume) the attribute predictor T (styles -> 257 coefficients) "
                        "on a gen-pairs folder; multi-GPU: torchrun --nproc_per_node N -m cddfm3d train-t ...")
    tt.add_argument("--pairs", type=_existing_dir, required=True, help="gen-pairs folder (pairs.json + shards)")
    tt.add_argument("--out", type=_out_dir, required=True, help="run folder (checkpoint.pt, "
                    "attribute_predictor.safetensors, log.json, commands.txt)")
    tt.add_argument("--steps", type=POSITIVE, default=3000, help="optimisation steps of the whole run; the learning "
                    "rate decays to 0 there (default: 3000)")
    tt.add_argument("--batch", type=POSITIVE, default=256, help="pairs per step, all processes together "
                    "(default: 256)")
    tt.add_argument("--lr", type=_float(0, strict=True), default=1e-3, help="peak learning rate of AdamW (linear "
                    "warm-up, cosine decay; default: 0.001)")
    tt.add_argument("--weight-decay", type=_float(0), default=1e-4, help="AdamW's decoupled weight decay "
                    "(default: 0.0001)")
    tt.add_argument("--loss", nargs="+", type=_loss_weight, default=[("feature", 1.0), ("pdc", 0.1)],
                    metavar="NAME[=W]", help="losses and weights: pdc, vdc, wpdc (3DDFA's), feature (each "
                    "attribute in the space it is measured in), official (the official code's random-half WPDC) "
                    "(default: feature pdc=0.1)")
    tt.add_argument("--val-fraction", type=_open_fraction, default=0.1, help="share of the pairs held out "
                    "for validation, fixed by --seed (default: 0.1)")
    tt.add_argument("--hidden", nargs="+", type=POSITIVE, default=None, metavar="WIDTH", help="hidden widths "
                    "(default: the official 4096 2048 1024 512 scaled to the style dimension, at least 512)")
    tt.add_argument("--world", default="auto", choices=["auto", "mini", "real"], help="morphable model and output "
                    "units: mini (MiniFace, prior std) or real (the real/bfm asset, the labels' std); auto: from "
                    "the model recorded in pairs.json (default: auto)")
    tt.add_argument("--eval-every", type=POSITIVE, default=500, help="steps between held-out evaluations written "
                    "to log.json (default: 500)")
    tt.add_argument("--checkpoint-every", type=POSITIVE, default=500, help="steps between checkpoints "
                    "(default: 500)")
    _run_options(tt)
    tt.set_defaults(func=_train_t)

    tf = sub.add_parser("train-f", help="train (or resume) the latent manipulation network F^i of one attribute "
                        "on a gen-pairs folder, through the frozen attribute predictor T")
    tf.add_argument("--attribute", required=True, choices=list(ATTRIBUTES), help="the attribute F edits")
    tf.add_argument("--pairs", type=_existing_dir, required=True, help="gen-pairs folder (pairs.json + shards)")
    tf.add_argument("--out", type=_out_dir, required=True, help="run folder (checkpoint.pt, "
                    "manipulator.safetensors, log.json, commands.txt)")
    tf.add_argument("--predictor", type=_existing_file, default=None, help="T (train-t's "
                    "attribute_predictor.safetensors; default: the shipped mini/attribute_predictor)")
    tf.add_argument("--layer-sets", type=_existing_file, default=None, help="select-layers output (default: the "
                    "shipped mini/layer_sets)")
    tf.add_argument("--generator", type=_existing_file, default=None, help="the generator of the pairs, for its "
                    "style-layer table (default: the shipped mini/generator)")
    tf.add_argument("--full-s", action="store_true", help="edit every style layer (the StyleRig-style baseline "
                    "without layer selection)")
    tf.add_argument("--steps", type=POSITIVE, default=1000, help="optimisation steps; the learning rate decays to "
                    "0 there (default: 1000)")
    tf.add_argument("--batch", type=POSITIVE, default=64, help="pairs per step, sources and targets together "
                    "(even; default: 64)")
    tf.add_argument("--lr", type=_float(0, strict=True), default=3e-3, help="peak learning rate of AdamW "
                    "(default: 0.003)")
    tf.add_argument("--warmup", type=_int_at_least(0), default=100, help="steps of linear learning-rate warm-up "
                    "(default: 100)")
    tf.add_argument("--activation", default="linear", choices=["linear", "elu", "relu", "lrelu"],
                    help="linear: the paper's network; otherwise the small-MLP option (default: linear)")
    tf.add_argument("--loss-mode", default="param", choices=["param", "render"], help="param: per-vertex "
                    "distances to the labels (fast); render: masked photometric loss against the images")
    tf.add_argument("--weight", nargs="+", type=_term_weight, default=[], metavar="TERM=W", help="loss weights, "
                    "e.g. rec=1 render=10 landmark=0.05 edge=1 (0 removes a term)")
    tf.add_argument("--through", default="T", choices=["T", "image"], help="T: P_hat = T(s_hat) (the paper); "
                    "image: P_hat read by the reconstruction network from the generated image, the references "
                    "from the pairs' labels (slower; meant as a fine-tuning with --init)")
    tf.add_argument("--delta-from", default="T", choices=["T", "labels"], help="--through image: the editor's "
                    "input delta from T's predictions (default, P_s = T(s) as the paper) or from the pairs' labels "
                    "(for P_s read from the source image: evaluate --read-deltas)")
    tf.add_argument("--edit-weight", type=_float(0), default=1.0, help="weight of the edit half of the render "
                    "and landmark terms against the consistency half (default: 1, the official recipe)")
    tf.add_argument("--init", type=_existing_file, default=None, help="start a fresh run from this F^i "
                    "(manipulator.safetensors of a train-f run on the same pairs and T)")
    tf.add_argument("--recon", type=_existing_file, default=None, help="--through image: the reconstruction "
                    "network of the pairs' labels (default: the shipped mini/recon)")
    tf.add_argument("--eval-every", type=POSITIVE, default=250, help="steps between held-out T-view evaluations "
                    "(default: 250)")
    tf.add_argument("--checkpoint-every", type=POSITIVE, default=250, help="steps between checkpoints "
                    "(default: 250)")
    _run_options(tf)
    tf.set_defaults(func=_train_f)

    editor_help = ("serve the face editor (notebook 08) as a standalone page with Voilà on localhost, code cells "
                   "hidden; needs a source checkout (the notebooks/ folder)")
    ed = sub.add_parser("editor", help=editor_help, description=editor_help[0].upper() + editor_help[1:] + ".")
    ed.add_argument("--port", type=_int_at_least(1, 65535), default=None, help="port to serve on (default: 8866 "
                    "when free, else a free port)")
    ed.add_argument("--no-browser", action="store_true", help="only print the URL; do not open a browser")
    ed.set_defaults(func=_editor)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:   # argparse reports a bad argument (usage + one error line) and exits 2; --help exits 0
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    args.argv = argv
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from ..training import RunInterrupted

    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:  # user errors: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunInterrupted as e:  # SIGINT / SIGTERM: the run saved its checkpoint at a step boundary
        print(f"{args.command}: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
