"""Ship the editing stage's mini-world files: the attribute predictor T and the layer sets.

``ship_editing_assets`` evaluates T (``<t>/attribute_predictor.safetensors``, a ``train-t`` run folder) on held-out
pairs (a ``gen-pairs`` folder made with another seed, so the generator never produced them for T's training), copies
T and the layer-set file (``select-layers``) to ``assets/mini/`` and registers them as ``mini/attribute_predictor``
and ``mini/layer_sets``. Both must come from the shipped ``mini/generator`` and ``mini/recon`` (checked through the
sha256 the pairs and the layer-set file record), so the shipped stage reads the shipped world.

The manifest's command for each file: the pairs' and T's ``commands.txt`` (:func:`cddfm3d.training.rebuild_commands`),
the held-out pairs' commands, the ``select-layers`` line the layer-set file records, and the ship command; a comment
line first names the generator and recon they read.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from .. import assets
from ..training import CHECKPOINT_FILE, COMMANDS_FILE, rebuild_commands
from ..world.domains import mini_model
from .pairs import PairDataset
from .predictor import load_attribute_predictor
from .t_training import EXPORT_FILE, VAR_RATIO_GOAL, check_goals, evaluate_t, labels_sha256


def _check_world(what: str, recorded: dict) -> None:
    """``recorded``: {"generator": sha256, "recon": sha256} of a stage file; both must be the shipped ones."""
    for name, sha in recorded.items():
        shipped = assets.entry(f"mini/{name}")["sha256"]
        if sha != shipped:
            raise ValueError(f"{what} was made with a {name} of sha256 {str(sha)[:12]}..., not the shipped "
                             f"mini/{name} ({shipped[:12]}...): regenerate it from the shipped world")


def _check_trained_on(t_dir: Path, pairs: PairDataset) -> None:
    """T's train-t checkpoint must record the labels of ``pairs`` (field ``labels_sha256``): the shipped T, its
    metrics and its manifest commands must be those of the same pairs."""
    ckpt = t_dir / CHECKPOINT_FILE
    if not ckpt.is_file():
        raise FileNotFoundError(f"ship-editing: {ckpt} does not exist (the train-t run folder's checkpoint records "
                                f"which pairs T was trained on)")
    found = torch.load(ckpt, map_location="cpu", weights_only=True).get("labels_sha256")
    if found is None:
        raise ValueError(f"{ckpt}: no field 'labels_sha256' (a checkpoint written before train-t recorded its pairs); "
                         f"train T again on its pairs (train-t --no-resume) to record it")
    expected = labels_sha256(pairs.load_fields(["coeffs"])["coeffs"])
    if found != expected:
        raise ValueError(f"{ckpt}: field 'labels_sha256' is {found[:12]}..., but the labels of the pairs in "
                         f"{pairs.root} hash to {expected[:12]}...: T was trained on other pairs; pass the --pairs "
                         f"T was trained on (its commands.txt names them)")


def ship_editing_assets(pairs_dir, t_dir, heldout_pairs_dir, layer_sets_file, ship_command: str = "",
                        device=None) -> dict:
    """Evaluate T on the held-out pairs, copy T and the layer sets into ``assets/mini/`` and register them.
    Returns {"attribute_predictor": metrics, "layer_sets": metrics, "seconds": s}. Raises ``FileNotFoundError``
    for a missing file or ``commands.txt``, ``ValueError`` for files made from another generator or recon and for
    held-out pairs made with the training pairs' seed (the same samples) and for a T whose checkpoint
    (``<t>/checkpoint.pt``, field ``labels_sha256``) records other pairs than ``pairs_dir``'s."""
    from ..stylespace.selection import read_layer_sets

    t0 = time.perf_counter()
    t_file, layer_file = Path(t_dir) / EXPORT_FILE, Path(layer_sets_file)
    for f in (t_file, layer_file):
        if not f.is_file():
            raise FileNotFoundError(f"ship-editing: {f} does not exist")
    train, heldout = PairDataset(pairs_dir), PairDataset(heldout_pairs_dir)
    for what, ds in (("the pairs in " + str(pairs_dir), train), ("the held-out pairs in " + str(heldout_pairs_dir),
                                                               heldout)):
        _check_world(what, {"generator": ds.generator_sha256, "recon": ds.recon_sha256})
    if heldout.config.get("seed") == train.config.get("seed"):
        raise ValueError(f"{heldout.root / 'pairs.json'}: field 'config.seed' is {heldout.config.get('seed')}, the "
                         f"same as the training pairs' in {pairs_dir}: every sample is a function of (seed, index), "
                         f"so T was trained on these samples; make the held-out pairs with another --seed")
    _check_trained_on(Path(t_dir), train)
    sets, doc = read_layer_sets(layer_file)
    meta = doc.get("metadata", {})
    _check_world(f"the layer sets {layer_file}", {"generator": meta.get("generator_sha256"),
                                                  "recon": meta.get("recon_sha256")})
    cmds_pairs, cmds_t = rebuild_commands(pairs_dir), rebuild_commands(t_dir)
    cmds_heldout = rebuild_commands(heldout_pairs_dir)
    ship = [ship_command] if ship_command else []
    world = (f"# reads mini/generator sha256 {assets.entry('mini/generator')['sha256']} and mini/recon sha256 "
             f"{assets.entry('mini/recon')['sha256']}")

    T = load_attribute_predictor(t_file, device=device).eval()
    fields = heldout.load_fields(["styles", "coeffs"])
    with torch.no_grad():
        t_metrics = evaluate_t(T, fields["styles"], fields["coeffs"], mini_model(), progress=True)
    goals = check_goals(t_metrics)
    t_metrics["goals_met"] = {k: bool(v) for k, v in goals.items()}
    t_metrics["var_ratio_goal"] = list(VAR_RATIO_GOAL)
    t_metrics["n_train_pairs"] = len(train)
    t_metrics["train_pairs_seed"] = train.config["seed"]          # fresh pairs for an evaluation: another seed
    t_metrics["heldout_pairs_seed"] = heldout.config["seed"]

    dest = assets.assets_dir() / "mini"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(t_file, dest / "attribute_predictor.safetensors")
    shutil.copyfile(layer_file, dest / "layer_sets.json")
    assets.register(
        "mini/attribute_predictor", "mini/attribute_predictor.safetensors", "editing.AttributePredictor", T.config,
        "\n".join([world] + cmds_pairs + cmds_t + cmds_heldout + ship), t_metrics,
        description="the attribute predictor T (flat StyleSpace of mini/generator -> 257 coefficients as mini/recon "
                    "reads the generated image), trained on gen-pairs labels")
    select_cmd = [meta["command"]] if meta.get("command") else []
    layer_metrics = {"sets": sets, "sizes": {a: len(v) for a, v in sets.items()},
                     "jaccard": meta.get("jaccard", {}), "share": meta.get("share")}
    assets.register(
        "mini/layer_sets", "mini/layer_sets.json", "stylespace.LayerSets", {"layers": doc["layers"]},
        "\n".join([world] + cmds_pairs + cmds_t + select_cmd + ship), layer_metrics,
        description="the reduced StyleSpace S^i of each attribute: style-layer indices of mini/generator "
                    "(select-layers; the file also holds the response matrices)")
    return {"attribute_predictor": t_metrics, "layer_sets": layer_metrics, "seconds": time.perf_counter() - t0}


def _commands_with_init(run_dir: Path, state: dict) -> list[str]:
    """The commands of a train-f run folder, preceded by those of the run its init network came from (the folder
    of the checkpoint's ``init_file``, recursively). A run started from an init records the init's state sha256
    (checkpoint field ``init_sha256``) and, when it was given as a file (``train-f --init``), that file's path
    (``init_file``, relative to train-f's working directory); the file must still hold that network, and its folder
    must be a train-f run folder (``commands.txt``, ``checkpoint.pt``)."""
    from .manipulator import LatentManipulator
    from ..serialization import state_sha256

    own = rebuild_commands(run_dir)
    recorded = state.get("init_sha256")
    if recorded is None:
        return own
    ckpt = run_dir / CHECKPOINT_FILE
    if not state.get("init_file"):
        raise ValueError(f"{ckpt}: the run started from an init network given in memory (field 'init_sha256' "
                         f"without 'init_file'): ship-f records the commands that made every shipped network; start "
                         f"the run with train-f --init RUN/manipulator.safetensors")
    init = Path(state["init_file"])
    if not init.is_file() or state_sha256(LatentManipulator.load(init)) != recorded:
        raise ValueError(f"{ckpt}: field 'init_sha256' is {recorded[:12]}..., but {init} (field 'init_file', read "
                         f"from {Path.cwd()}) {'holds another network' if init.is_file() else 'does not exist'}: the "
                         f"init changed since the run started, or ship-f runs in another directory than train-f did; "
                         f"restore it, or re-run the run in a new folder")
    missing = [n for n in (COMMANDS_FILE, CHECKPOINT_FILE) if not (init.parent / n).is_file()]
    if missing:
        raise ValueError(f"{ckpt}: the init file {init} is not in a train-f run folder (no {', '.join(missing)} in "
                         f"{init.parent}): ship-f records the commands that made every shipped network; fine-tune "
                         f"the manipulator.safetensors of a train-f run")
    init_state = torch.load(init.parent / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    return _commands_with_init(init.parent, init_state) + own


TRAINING_FIELDS = ("through", "delta_from", "loss_mode", "edit_weight", "steps", "batch_size", "lr", "warmup",
                   "weight_decay", "render_batch", "seed")


def training_record(config: dict) -> dict:
    """How a train-f run's F^i learnt, from its config as saved in the checkpoint (``FTrainConfig`` fields):
    :data:`TRAINING_FIELDS`, a field absent from an older checkpoint taking ``FTrainConfig``'s default (what that
    run did), and ``weights``: the weight each loss term had (``FTrainConfig.weight``: the defaults, the run's
    overrides, no jaw-edge term but for shape)."""
    from .f_training import LOSS_TERMS, FTrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(FTrainConfig)}
    cfg = FTrainConfig(attribute=config["attribute"], edit_layers=config.get("edit_layers", [0]),
                       weights=config.get("weights", {}))
    out = {k: config.get(k, defaults[k]) for k in TRAINING_FIELDS}
    out["weights"] = {t: cfg.weight(t) for t in LOSS_TERMS}
    return out


def ship_manipulators(run_dirs, pairs_dir, heldout_pairs_dir, n_eval: int = 500, ship_command: str = "",
                      device=None, batch: int = 64) -> dict:
    """Evaluate the F^i of ``train-f`` run folders on held-out pairs and ship them as ``mini/manipulator/<attribute>``.

    Each run must have been trained on the pairs of ``pairs_dir`` (checkpoint field ``labels_sha256``) with the
    shipped T (field ``predictor_sha256``, T's state sha256) and edit the shipped layer set of its attribute; the
    pairs must come from the shipped generator and recon; the held-out pairs from another seed. The evaluation is
    :func:`cddfm3d.editing.evaluation.evaluate` on the first ``n_eval`` held-out sources, read by the shipped
    reconstruction network (and by ``mini/recon_independent`` when the assets have it), swap and prior targets;
    each asset's metrics are its attribute's row, and ``training`` (:func:`training_record`: how the last stage
    trained it). A ``train-f --delta-from labels`` run is evaluated like any other, with T's deltas (how
    ``FaceEditor`` uses a shipped F^i by default); ``training`` and the recorded commands name the option.
    Each F^i is shipped with its float tensors rounded to float16
    (:func:`cddfm3d.serialization.copy_as_float16`: half the size; it loads into float32 modules), and the
    evaluation reads the stored networks, rounding included.
    Returns {"evaluation": the report's dict, "seconds": s}.

    Raises ``FileNotFoundError`` for a missing run file or ``commands.txt``, ``ValueError`` for two runs of one
    attribute, a run trained on other pairs or another T, a layer set that is not the shipped one, pairs from
    another world, held-out pairs of the training seed, or files that would take ``assets/`` beyond its budget."""
    from .evaluation import evaluate
    from .manipulator import LatentManipulator
    from ..serialization import copy_as_float16, state_sha256

    t0 = time.perf_counter()
    train, heldout = PairDataset(pairs_dir), PairDataset(heldout_pairs_dir, fields=("styles", "noise_seed"))
    for what, ds in (("the pairs in " + str(pairs_dir), train), ("the held-out pairs in " + str(heldout_pairs_dir),
                                                               heldout)):
        _check_world(what, {"generator": ds.generator_sha256, "recon": ds.recon_sha256})
    if heldout.config.get("seed") == train.config.get("seed"):
        raise ValueError(f"{heldout.root / 'pairs.json'}: field 'config.seed' is {heldout.config.get('seed')}, the "
                         f"same as the training pairs' in {pairs_dir}; make the held-out pairs with another --seed")
    T = assets.load("mini/attribute_predictor", device).eval()
    t_sha = state_sha256(T)
    labels = labels_sha256(train.load_fields(["coeffs"])["coeffs"])
    sets = assets.load("mini/layer_sets")
    nets: dict[str, LatentManipulator] = {}
    files: dict[str, Path] = {}
    run_commands: dict[str, list[str]] = {}
    trainings: dict[str, dict] = {}
    for d in map(Path, run_dirs):
        f, ckpt = d / "manipulator.safetensors", d / CHECKPOINT_FILE
        for x in (f, ckpt):
            if not x.is_file():
                raise FileNotFoundError(f"ship-f: {x} does not exist (a train-f run folder has both)")
        F = LatentManipulator.load(f, device)
        a = F.attribute
        if a in nets:
            raise ValueError(f"ship-f: two runs edit {a!r}: {files[a].parent} and {d}")
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        for key, want, what in (("labels_sha256", labels, f"the pairs in {pairs_dir}"),
                                ("predictor_sha256", t_sha, "the shipped mini/attribute_predictor")):
            if state.get(key) != want:
                raise ValueError(f"{ckpt}: field {key!r} is {str(state.get(key))[:12]}..., not that of {what} "
                                 f"({want[:12]}...): train F^{a} on them")
        planned = json.loads(state["config"])["steps"]
        if int(state["step"]) < planned:
            raise ValueError(f"{ckpt}: field 'step' is {int(state['step'])}, the run's config asks for {planned}: "
                             f"finish it (re-run its train-f command without --stop-at-step)")
        trained = LatentManipulator.load(f)
        trained.load_state_dict(state["net"])
        if state_sha256(trained) != state_sha256(LatentManipulator.load(f)):
            raise ValueError(f"{f}: differs from the network in {ckpt} (a stale or swapped export); re-run the "
                             f"run's train-f command to export it again")
        if F.edit_layers != sorted(sets[a]):
            raise ValueError(f"{f}: edits layers {F.edit_layers}, the shipped layer set of {a!r} is {sorted(sets[a])}")
        run_commands[a] = _commands_with_init(d, state)
        trainings[a] = training_record(json.loads(state["config"]))
        nets[a], files[a] = F, f
    if not nets:
        raise ValueError("ship-f: no run folders given")
    dest = assets.assets_dir() / "mini"
    with tempfile.TemporaryDirectory() as tmp:
        stored = {a: copy_as_float16(files[a], Path(tmp) / f"manipulator_{a}.safetensors") for a in nets}
        assets.check_budget({dest / p.name: p.stat().st_size for p in stored.values()}, None, "ship-f")
        nets = {a: LatentManipulator.load(stored[a], device) for a in nets}
        G = assets.load("mini/generator", device).eval()
        evaluators = {"recon": assets.load("mini/recon", device).eval()}
        if "mini/recon_independent" in assets.available():
            evaluators["independent"] = assets.load("mini/recon_independent", device).eval()
        data = heldout.load_fields(["styles", "noise_seed"])
        n = min(int(n_eval), len(data["styles"]))
        report = evaluate(G, T, {"cddfm3d": nets}, data["styles"][:n], data["noise_seed"][:n], evaluators,
                          attributes=[a for a in nets], batch=batch, progress=True)
        doc = report.to_dict()
        world = (f"# reads mini/generator sha256 {assets.entry('mini/generator')['sha256']}, mini/recon sha256 "
                 f"{assets.entry('mini/recon')['sha256']} and mini/attribute_predictor sha256 "
                 f"{assets.entry('mini/attribute_predictor')['sha256']}")
        cmds_pairs, cmds_heldout = rebuild_commands(pairs_dir), rebuild_commands(heldout_pairs_dir)
        ship = [ship_command] if ship_command else []
        dest.mkdir(parents=True, exist_ok=True)
        for a, F in nets.items():
            metrics = {"n_sources": n, "heldout_pairs_seed": heldout.config["seed"], "scores": {}}
            for e in evaluators:
                for t in report.targets:
                    sc = report.score("cddfm3d", e, t, a)
                    metrics["scores"][f"{e}/{t}"] = None if sc is None else sc.to_dict()
            metrics["goal_failures"] = [x for x in report.goal_failures("cddfm3d") if f" / {a}:" in x]
            metrics["training"] = trainings[a]
            shutil.copyfile(stored[a], dest / f"manipulator_{a}.safetensors")
            assets.register(
                f"mini/manipulator/{a}", f"mini/manipulator_{a}.safetensors", "editing.LatentManipulator", F.config,
                "\n".join([world] + cmds_pairs + cmds_heldout + run_commands[a] + ship), metrics,
                description=f"the editing network F^{a}: F(s, delta) -> s_g on the {a} layer set of mini/generator "
                            f"(delta = P_t - P_s of the {a} coefficients, T's units), trained with train-f; float "
                            f"tensors stored as float16")
    return {"evaluation": doc, "seconds": time.perf_counter() - t0}

