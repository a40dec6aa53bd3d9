"""Commands of the editing stage's data and attribute predictor (:mod:`cddfm3d.editing`,
:mod:`cddfm3d.stylespace`): ``ship-editing``, ``gen-pairs``, ``select-layers`` and ``train-t``.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from .args import (POSITIVE, SEED, _device, _existing_dir, _existing_file, _float, _int_at_least, _loss_weight,
                   _open_fraction, _out_dir, _run_options, _share)


def _ship_editing(args) -> int:
    from ..editing.ship import ship_editing_assets

    report = ship_editing_assets(args.pairs, args.t, args.heldout_pairs, args.layer_sets, device=args.device,
                                 ship_command="python -m cddfm3d " + shlex.join(args.argv))
    print(json.dumps(report, indent=2))
    return 0


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


def _load_recon(path, device):
    """A reconstruction network file: train-recon's .safetensors, or Deep3DFaceRecon's checkpoint (epoch_20.pth)."""
    from ..face3d import ReconNet

    load = ReconNet.load if Path(path).suffix == ".safetensors" else ReconNet.from_deep3d
    return load(path, device=device)


# ------------------------------------------------------------------------------------------------ parsers
def _add_ship_editing(sub) -> None:
    """Register ``ship-editing``."""
    e = sub.add_parser("ship-editing", help="evaluate the attribute predictor T on held-out pairs and ship it and "
                       "the layer sets into assets/ (mini/attribute_predictor, mini/layer_sets)")
    e.add_argument("--pairs", type=_existing_dir, required=True, help="the gen-pairs folder T was trained on")
    e.add_argument("--t", type=_existing_dir, required=True, help="train-t run folder")
    e.add_argument("--heldout-pairs", type=_existing_dir, required=True, help="gen-pairs folder of another seed "
                   "(T is evaluated on it)")
    e.add_argument("--layer-sets", type=_existing_file, required=True, help="the select-layers output file")
    e.add_argument("--device", type=_device, default=None, help="cpu, cuda or cuda:N (default: cpu)")
    e.set_defaults(func=_ship_editing)


def _add_gen_pairs(sub) -> None:
    """Register ``gen-pairs``."""
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


def _add_select_layers(sub) -> None:
    """Register ``select-layers``."""
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


def _add_train_t(sub) -> None:
    """Register ``train-t``."""
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


# command -> the function that adds its subparser (build_parser calls them in the order of cli.COMMANDS)
PARSERS = {
    "ship-editing": _add_ship_editing,
    "gen-pairs": _add_gen_pairs,
    "select-layers": _add_select_layers,
    "train-t": _add_train_t,
}
