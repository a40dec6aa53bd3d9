# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Training pairs and the attribute predictor T
#
# **Goals.** After this notebook you can
# - generate **training pairs** (StyleSpace vector s, W+ latent, noise seed, image, the reconstruction network's
#   257 coefficients and 68 landmarks) with the `gen-pairs` API, and re-synthesise a stored image exactly;
# - train the **attribute predictor T** (s → 257 coefficients), the differentiable stand-in for "generate, then
#   reconstruct" that the editing networks of notebook 05 learn through;
# - measure T the way every stage of this project is measured: per attribute, in the space where a person sees it,
#   on **fresh pairs** the generator never produced for T's training; and check that T does not collapse to the
#   mean face;
# - look at T's predictions: scatter plots against the labels and renders next to the generated faces.
#
# **Runtime.** About 1 minute in FAST mode, measured on one thread of a 2-core machine that other jobs kept busy;
# full mode (7000 pairs and 1500 training steps) takes several minutes and was not timed yet. No GPU needed.
#
# **What is live and what is shipped.** The pairs and a short training run are made live (a few hundred pairs and
# steps in FAST mode, written to a temporary folder that is deleted at the end). **Every accuracy number, plot and
# render of T comes from the shipped T** (`cddfm3d.assets.load("mini/attribute_predictor")`, trained by
# `python -m cddfm3d train-t` on `gen-pairs` output; the manifest records the commands), evaluated on fresh pairs
# generated here.
#
# Everything here calls `cddfm3d.editing`; the notebook defines no part of the method.

# %% tags=["parameters"]
WORLD = "mini"   # "real": FFHQ StyleGAN2 + Deep3DFaceRecon + BFM (notebook 00, section 7) and T_FILE
FAST = None      # None: decided by cddfm3d.fast_mode() (on in CI)
SEED = 0
DEVICE = None    # None: CUDA when available, else CPU
T_FILE = None    # None: the shipped mini/attribute_predictor; else a file written by `python -m cddfm3d train-t`

# %%
import json
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import display

import cddfm3d
from cddfm3d import viz
from cddfm3d.editing import (ATTRIBUTE_SLICES, ATTRIBUTES, AttributePredictor, PairDataset, TTrainConfig, evaluate_t,
                             generate_pairs, train_t)
from cddfm3d.editing.pairs import resynthesize
from cddfm3d.editing.t_training import EV_GOALS, VAR_RATIO_GOAL, check_goals
from cddfm3d.face3d.measures import attribute_features
from cddfm3d.face3d.viz import landmark_panel, reconstruction_rows
from cddfm3d.images import from_uint8

FAST = cddfm3d.fast_mode() if FAST is None else FAST
DEVICE = cddfm3d.device(DEVICE)
cddfm3d.setup_notebook(SEED)   # seeds, plotly renderer, CPU threads for interactive work
print("FAST:", FAST, "| device:", DEVICE, "| CPU threads:", torch.get_num_threads())

if WORLD == "mini":
    from cddfm3d.world import mini_model

    G = cddfm3d.assets.load("mini/generator", DEVICE)
    recon = cddfm3d.assets.load("mini/recon", DEVICE)
    model = mini_model(DEVICE)
    T = AttributePredictor.load(T_FILE, DEVICE) if T_FILE else cddfm3d.assets.load("mini/attribute_predictor", DEVICE)
elif WORLD == "real":
    G = cddfm3d.assets.load("real/generator", DEVICE)
    recon = cddfm3d.assets.load("real/recon", DEVICE)
    model = cddfm3d.assets.load("real/bfm", DEVICE)
    if T_FILE is None:
        raise ValueError("WORLD = 'real' needs T_FILE: train one with `python -m cddfm3d gen-pairs --world real ...` "
                         "and `python -m cddfm3d train-t ...` first")
    T = AttributePredictor.load(T_FILE, DEVICE)
else:
    raise ValueError(f"WORLD must be 'mini' or 'real', found {WORLD!r}")
work = tempfile.TemporaryDirectory(prefix="cddfm3d_nb04_")   # pairs and the short run; deleted at the end
WORK = Path(work.name)
print(f"generator: {G.resolution} px, style_dim {G.style_dim}; T: {T}")

# %% [markdown]
# ## 1. Generating training pairs
#
# `generate_pairs` (the library behind `python -m cddfm3d gen-pairs`) draws latents with the official code's
# **5-way contiguous W+ style mixing** without truncation (five `w`, four random cut points over the W+ slots), keeps
# the flat StyleSpace vector s (tRGB layers included), renders with per-sample noise drawn from a stored **noise
# seed**, stores the image as uint8 and labels it with the reconstruction network (coefficients and the 68
# landmarks they project to). The official code draws the noise at random and loses it, so its stored s does not
# reproduce its stored image; here it does, bit for bit. Every sample is a pure function of (networks, seed,
# index), so folders are resumable and independent of batch size and of the number of processes.
#
# The command line for a full set: `python -m cddfm3d gen-pairs --out pairs --n 50000` (sharded safetensors +
# `pairs.json`; `torchrun` ranks write disjoint shards).

# %%
N_TRAIN = 300 if FAST else 5000
train_dir = generate_pairs(G, recon, WORK / "pairs", N_TRAIN, seed=SEED, progress=False, shard_size=1000)
meta = json.loads((train_dir / "pairs.json").read_text())
print({k: meta["config"][k] for k in ("n", "seed", "mixing", "align", "resolution", "num_ws", "style_dim")})
print("shards:", [s["file"] for s in meta["shards"]])
pairs = PairDataset(train_dir, fields=("styles", "ws", "noise_seed", "images", "coeffs", "landmarks"))
data = pairs.load_fields(["styles", "ws", "noise_seed", "images", "coeffs", "landmarks"])
print({k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in data.items()})

# %% [markdown]
# Eight pairs: the image with the 68 landmarks of its labels (top), and which W+ slots came from which of the five
# mixed `w` (bottom: consecutive slots with equal `w` belong to one source).

# %%
K = 8
img = from_uint8(data["images"][:K])
viz.show(landmark_panel(img, data["landmarks"][:K], zoom=2), nrow=K)
same = (data["ws"][:K, 1:] == data["ws"][:K, :-1]).all(-1)               # [K, num_ws - 1]: slot equals the previous
sources = torch.cat([torch.zeros(K, 1, dtype=torch.long), (~same).long().cumsum(1)], 1)
print("W+ source of each slot (rows = pairs):")
print(sources.numpy())

# %% [markdown]
# Exact re-synthesis: s and the noise seed of a stored pair give back its stored image.

# %%
again = resynthesize(G, data["styles"][:4], data["noise_seed"][:4])
print("stored == re-synthesised:", torch.equal(again, data["images"][:4]))

# %% [markdown]
# ## 2. Training T (a short live run)
#
# T is the official APNet architecture (an MLP with four ELU hidden layers; widths scaled to this generator's
# style dimension) with two changes the official code lacks: **inputs standardised per channel** and **outputs in
# prior-std units** (`cddfm3d.editing.predictor`). The default loss is each attribute's 1 − explained variance in
# its own feature space (`feature`) plus a small parameter MSE (`pdc`); `train-t --loss` also offers VDC, 3DDFA's
# WPDC and the official random-half "WPDC". Users of the official code report T collapsing to the mean face
# (cassiePython/cddfm3d#3); the normalisation, the variance-normalised losses and a schedule that keeps learning
# (the official one divides the rate by 100 at epoch 20) are what prevents it here, and section 4 measures it.
#
# Which loss? On the same 50k pairs and schedule (`tools/analysis/t_loss_ablation.py`, benchmarks/README.md "T per
# loss") the default beats plain PDC on shape, expression, albedo and pose by 0.01-0.02 of explained variance and
# loses 0.014 on light; 3DDFA's WPDC lands between them at three times the cost; VDC alone never learns albedo and
# light (they move no vertex). The shipped T is trained with the default loss; on the same recipe it reaches the
# shape goal that `--loss pdc` missed (explained variance 0.854 against 0.834 on the held-out pairs).
#
# FAST mode trains a few hundred steps on the few hundred pairs above, only to show the API and the loss going
# down. The command line: `python -m cddfm3d train-t --pairs pairs --out t_run` (resumable, `torchrun`-ready).

# %%
T_STEPS = 150 if FAST else 1500
cfg = TTrainConfig(style_dim=G.style_dim, steps=T_STEPS, batch_size=64 if FAST else 256,
                   eval_every=max(T_STEPS // 3, 1), checkpoint_every=T_STEPS, seed=SEED)
trainer = train_t(data["styles"], data["coeffs"], cfg, WORK / "t_run", model=model, device=DEVICE, progress=False)
log = [r for r in trainer.log if "total" in r]
fig, ax = plt.subplots(figsize=(6, 2.6))
ax.semilogy([r["step"] for r in log], [r["total"] for r in log], label="total")
for a in ATTRIBUTES:
    ax.semilogy([r["step"] for r in log], [r[f"feature_{a}"] for r in log], lw=0.8, label=a)
ax.set_xlabel("step")
ax.set_title("short run: training losses (feature = 1 - explained variance per batch)")
ax.legend(fontsize=7, ncol=2)
plt.show()
short_eval = trainer.evaluate()
print(f"short run ({trainer.step} steps, {len(trainer.train_idx)} training pairs), held-out split of "
      f"{short_eval['n']} pairs: " + ", ".join(f"EV {a} {short_eval['ev_' + a]:.3f}" for a in ATTRIBUTES))

# %% [markdown]
# ## 3. The shipped T on fresh pairs
#
# **Fresh pairs**: a new `generate_pairs` run with a seed that no training folder used, so none of these faces was
# produced for T's training (every sample is a function of (seed, index) through sha256, so another seed gives
# unrelated latents and noise). The labels are the reconstruction network's, as in training. The measures
# (`evaluate_t`, `cddfm3d.face3d.measures`):
#
# - **EV** per attribute: explained variance of the attribute's features (vertex positions for shape and
#   expression, albedo colour, shading over camera-facing normals for light, angles for pose): 1 − SSE / SST, so 0
#   is "always predict the average face" and 1 is exact;
# - **variance ratio**: total variance of T's predicted features over the labels' (0 = collapsed to one face);
# - mean absolute **angle errors** in degrees.
#
# Goals of issue 9: EV ≥ 0.9 for expression, pose and light, ≥ 0.85 for shape and albedo; variance ratio 0.8–1.2.

# %%
EVAL_SEED = 1_000_003 + SEED
N_EVAL = 300 if FAST else 2000
eval_dir = generate_pairs(G, recon, WORK / "fresh", N_EVAL, seed=EVAL_SEED, progress=False, shard_size=1000)
fresh = PairDataset(eval_dir, fields=("styles", "images", "coeffs"))
ev_data = fresh.load_fields(["styles", "images", "coeffs"])
print("shipped T was made by:", cddfm3d.assets.entry("mini/attribute_predictor").get("command") if not T_FILE
      and WORLD == "mini" else T_FILE)
print(f"fresh pairs: {N_EVAL}, seed {EVAL_SEED}")
if not T_FILE and WORLD == "mini":   # the shipped T's training pairs came from another seed: these are fresh
    trained_on = cddfm3d.assets.entry("mini/attribute_predictor")["metrics"]["train_pairs_seed"]
    assert EVAL_SEED != trained_on, (EVAL_SEED, trained_on)
report = evaluate_t(T, ev_data["styles"], ev_data["coeffs"], model)
report_short = evaluate_t(trainer.net, ev_data["styles"], ev_data["coeffs"], model)
goals = check_goals(report)
display(viz.table([{"attribute": a, "EV (shipped T)": report[f"ev_{a}"], "EV goal": EV_GOALS[a],
                    "EV met": goals[f"ev_{a}"], "variance ratio": report[f"var_ratio_{a}"],
                    "ratio met": goals[f"var_ratio_{a}"], "EV (short live run)": report_short[f"ev_{a}"]}
                   for a in ATTRIBUTES], floatfmt="{:.3f}"))
print("mean absolute angle error (deg): " + ", ".join(f"{k} {report['angle_deg_' + k]:.2f}"
                                                     for k in ("pitch", "yaw", "roll")))
print(f"all goals met: {all(goals.values())}")

# %% [markdown]
# ## 4. Predicted against labelled
#
# **Coefficients.** Per attribute, the three coefficients whose labels vary most on these pairs (pose: the three
# angles, in degrees). Points on the diagonal are exact; a cloud flattened toward a horizontal line is a collapse
# toward the mean.

# %%
with torch.no_grad():
    pred = torch.cat([T(ev_data["styles"][i:i + 500].to(DEVICE)).cpu() for i in range(0, N_EVAL, 500)])
true = ev_data["coeffs"]
fig, axes = plt.subplots(len(ATTRIBUTES), 3, figsize=(8, 2.3 * len(ATTRIBUTES)))
for r, a in enumerate(ATTRIBUTES):
    sl = ATTRIBUTE_SLICES[a]
    cols = [0, 1, 2] if a == "pose" else true[:, sl].var(0).argsort(descending=True)[:3].tolist()
    for ax, c in zip(axes[r], cols, strict=True):
        k = sl.start + c
        x, y = true[:, k], pred[:, k]
        if a == "pose":
            x, y = x.rad2deg(), y.rad2deg()
        ax.scatter(x, y, s=3, alpha=0.5)
        lo, hi = float(torch.minimum(x.min(), y.min())), float(torch.maximum(x.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.7)
        name = ("pitch", "yaw", "roll")[c] + " (deg)" if a == "pose" else f"coefficient {k}"
        ax.set_title(f"{a}: {name}", fontsize=9)
axes[-1, 1].set_xlabel("label (reconstruction network)")
axes[len(ATTRIBUTES) // 2, 0].set_ylabel("T's prediction")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Feature space.** What the measures see: each attribute's features (e.g. the identity part of all vertex
# positions) projected on the first principal direction of the labels' features. The printed EV is the one in the
# table above (all directions together); the plot shows the direction along which the faces vary most.

# %%
fig, axes = plt.subplots(1, len(ATTRIBUTES), figsize=(3 * len(ATTRIBUTES), 3))
dt = model.mean_shape.dtype
for ax, a in zip(axes, ATTRIBUTES, strict=True):
    ft = attribute_features(model, true.to(model.mean_shape.device, dt), a).cpu().double()
    fp = attribute_features(model, pred.to(model.mean_shape.device, dt), a).cpu().double()
    mu = ft.mean(0)
    v = torch.linalg.svd(ft - mu, full_matrices=False).Vh[0]
    x, y = (ft - mu) @ v, (fp - mu) @ v
    ax.scatter(x, y, s=3, alpha=0.5)
    lim = float(max(x.abs().max(), y.abs().max()))
    ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.7)
    ax.set_title(f"{a}: EV {report['ev_' + a]:.3f}", fontsize=9)
    ax.set_xlabel("label, 1st component")
axes[0].set_ylabel("T, same direction")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Collapse check.** The variance ratio per attribute, with the goal band. A T that predicts the mean face has
# ratio 0 and EV 0; a T that is right but shrinks its predictions toward the mean has a ratio below 1.

# %%
ratios = [report[f"var_ratio_{a}"] for a in ATTRIBUTES]
fig, ax = plt.subplots(figsize=(6, 2.5))
ax.axhspan(*VAR_RATIO_GOAL, color="g", alpha=0.15, label="goal band")
ax.bar(ATTRIBUTES, ratios)
ax.axhline(1.0, color="k", lw=0.7)
ax.set_ylabel("Var(T) / Var(labels)")
ax.legend(fontsize=8)
plt.show()
print({a: round(r, 3) for a, r in zip(ATTRIBUTES, ratios, strict=True)})

# %% [markdown]
# ## 5. Renders: T's prediction next to the generated face
#
# Rows: the generated image; the render of the reconstruction network's labels (what T was trained to predict);
# the render of T's prediction from s alone (T never sees the image); T's render blended over the image.

# %%
K = 8
img = from_uint8(ev_data["images"][:K])
with torch.no_grad():
    lab = reconstruction_rows(img.to(DEVICE), true[:K].to(DEVICE), model)
    prd = reconstruction_rows(img.to(DEVICE), pred[:K].to(DEVICE), model)
viz.show(torch.cat([img, lab["render"].cpu(), prd["render"].cpu(), prd["overlay"].cpu()]), nrow=K, scale=2)

# %% [markdown]
# ## Check your understanding
#
# - Why must the evaluation pairs come from a seed that no training run used, even though T never sees images?
# - A T with EV 0.95 for pose but a variance ratio of 0.6: what does it do to an edit that asks for a large yaw?
# - Which attribute is hardest for T here, and is it T's fault or the labels'? (Compare with the reconstruction
#   network's own accuracy in notebook 00.)
#
# ## Checks run by CI

# %%
EV_FLOOR = 0.5          # every attribute of the shipped T on fresh pairs (the goals are printed above)
RATIO_RANGE = (0.5, 1.5)
assert torch.equal(again, data["images"][:4])                       # exact re-synthesis from (s, noise seed)
assert len(pairs) == N_TRAIN and len(fresh) == N_EVAL
assert data["styles"].shape == (N_TRAIN, G.style_dim) and data["coeffs"].shape == (N_TRAIN, 257)
assert not bool((ev_data["styles"][:, None, :8] == data["styles"][None, :, :8]).all(-1).any())   # fresh faces
assert log[-1]["total"] < 0.5 * log[0]["total"]                     # the short run learns
assert T.style_dim == G.style_dim and pred.shape == (N_EVAL, 257) and bool(torch.isfinite(pred).all())
for a in ATTRIBUTES:
    assert report[f"ev_{a}"] >= EV_FLOOR, (a, report[f"ev_{a}"])
    assert RATIO_RANGE[0] <= report[f"var_ratio_{a}"] <= RATIO_RANGE[1], (a, report[f"var_ratio_{a}"])
assert report["angle_deg_yaw"] < 10
work.cleanup()
print("all checks passed")
