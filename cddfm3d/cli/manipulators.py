"""Commands of the latent manipulators F^i and their use: ``ship-f``, ``evaluate``, ``train-f`` and
``editor``.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from .args import (POSITIVE, SEED, _device, _existing_dir, _existing_file, _float, _int_at_least, _named_path, _out_dir,
                   _run_options, _term_weight)
from .editing import _load_recon


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


def _pairs_network(ds, what: str, path, device):
    """The generator or reconstruction network (``what``) a gen-pairs folder was made with: ``path`` (a file) or the
    shipped ``mini/<what>``; its state sha256 must be the one ``pairs.json`` records (as gen-pairs checks on
    resume)."""
    from .. import assets
    from ..serialization import state_sha256
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


# ------------------------------------------------------------------------------------------------ parsers
def _add_ship_f(sub) -> None:
    """Register ``ship-f``."""
    sf = sub.add_parser("ship-f", help="evaluate train-f runs (one per attribute) on held-out pairs and ship them "
                        "into assets/ (mini/manipulator/<attribute>)")
    sf.add_argument("--runs", type=_existing_dir, nargs="+", required=True, help="train-f run folders")
    sf.add_argument("--pairs", type=_existing_dir, required=True, help="the gen-pairs folder they were trained on")
    sf.add_argument("--heldout-pairs", type=_existing_dir, required=True, help="gen-pairs folder of another seed "
                    "(the evaluation's sources)")
    sf.add_argument("--n", type=POSITIVE, default=500, help="held-out sources evaluated (default: 500)")
    sf.add_argument("--device", type=_device, default=None, help="cpu, cuda or cuda:N (default: cpu)")
    sf.set_defaults(func=_ship_f)


def _add_evaluate(sub) -> None:
    """Register ``evaluate``."""
    from ..face3d.measures import ATTRIBUTES

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


def _add_train_f(sub) -> None:
    """Register ``train-f``."""
    from ..face3d.measures import ATTRIBUTES

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


def _add_editor(sub) -> None:
    """Register ``editor``."""
    editor_help = ("serve the face editor (notebook 08) as a standalone page with Voilà on localhost, code cells "
                   "hidden; needs a source checkout (the notebooks/ folder)")
    ed = sub.add_parser("editor", help=editor_help, description=editor_help[0].upper() + editor_help[1:] + ".")
    ed.add_argument("--port", type=_int_at_least(1, 65535), default=None, help="port to serve on (default: 8866 "
                    "when free, else a free port)")
    ed.add_argument("--no-browser", action="store_true", help="only print the URL; do not open a browser")
    ed.set_defaults(func=_editor)


# command -> the function that adds its subparser (build_parser calls them in the order of cli.COMMANDS)
PARSERS = {
    "ship-f": _add_ship_f,
    "evaluate": _add_evaluate,
    "train-f": _add_train_f,
    "editor": _add_editor,
}
