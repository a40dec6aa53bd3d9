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
# # 05 · The editing networks F^i
#
# **Goals.** After this notebook you can
# - explain the **latent manipulation network** F^i of one attribute: a per-layer encoder and decoder that turns
#   a change of 3DMM coefficients ΔP^i into a change of the styles, written only on the attribute's reduced
#   StyleSpace S^i (the layer sets of notebook 03);
# - train one F^i through the frozen attribute predictor T of notebook 04 (a short live run);
# - edit generated faces with the shipped F^i by absolute targets or offsets of any coefficient, and compare each
#   edit with the render of the 3DMM coefficients it was asked to reach;
# - measure edits the way the paper's code never did: **on the generated images**, read by the reconstruction
#   network (never by T), as edit completion, a 5×5 leakage matrix, identity kept and image quality, against the
#   baselines.
#
# **Runtime.** About 2 minutes in FAST mode on one thread of a 2-core machine; full mode evaluates 200 sources and
# trains longer. No GPU needed.
#
# **What is live and what is shipped.** The short training run and the evaluation are live (fresh sources, a
# seed no training used). The edit grids and the evaluation's "cddfm3d" rows use the **shipped** F^i
# (`cddfm3d.assets.load("mini/manipulator/<attribute>")`, trained by `python -m cddfm3d train-f`; the manifest
# records the commands).
#
# Everything here calls `cddfm3d.editing`; the notebook defines no part of the method.

# %% tags=["parameters"]
FAST = None      # None: decided by cddfm3d.fast_mode() (on in CI)
SEED = 0
DEVICE = None    # None: CUDA when available, else CPU

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

import cddfm3d
from cddfm3d import viz
from cddfm3d.editing import (ATTRIBUTE_SLICES, ATTRIBUTES, FaceEditor, FTrainConfig, PairDataset, evaluate,
                             fit_linear_baseline, generate_pairs, train_f)
from cddfm3d.face3d.lighting import light_angles_deg
from cddfm3d.face3d.viz import reconstruction_rows
from cddfm3d.images import from_uint8
from cddfm3d.stylespace.rig import predict_all
from cddfm3d.world import mini_model

FAST = cddfm3d.fast_mode() if FAST is None else FAST
DEVICE = cddfm3d.device(DEVICE)
cddfm3d.setup_notebook(SEED)   # seeds, plotly renderer, CPU threads for interactive work
print("FAST:", FAST, "| device:", DEVICE, "| CPU threads:", torch.get_num_threads())

editor = FaceEditor.load("mini", DEVICE)           # the shipped G, T and F^i
G, T = editor.G, editor.T
recon = cddfm3d.assets.load("mini/recon", DEVICE)
layer_sets = cddfm3d.assets.load("mini/layer_sets")
model = mini_model(DEVICE)
work = tempfile.TemporaryDirectory(prefix="cddfm3d_nb05_")   # pairs and the short run; deleted at the end
WORK = Path(work.name)
print("shipped F^i:", editor.attributes)

# %% [markdown]
# ## 1. The architecture
#
# For every layer k of the attribute's set S^i (C_k channels), with s_k standardised per channel and ΔP^i in units
# of the spread of T's predictions:
#
# e_k = E_k(s_k) (C_k → 32) · h_k = D1_k([e_k ; ΔP^i]) · Δs_k = σ_k · D2_k(h_k) (→ C_k)
#
# and s_g = s + Δs, with Δs = 0 on every layer outside S^i. As in the paper and the official code the network is
# **linear** (no activation; `train-f --activation elu` is the small-MLP option). Differences from the official
# code: head k reads its own layer (the official heads read one layer and write another), inputs and outputs are
# standardised, the last linear starts at zero (an untrained F does not edit), and F is written only on S^i.

# %%
rows = []
for a in editor.attributes:
    F = editor.manipulators[a]
    rows.append({"attribute": a, "k (coefficients)": F.p_dim, "layer set S^i": str(F.edit_layers),
                 "edited channels": int(sum(F.net.layer_channels[k] for k in F.edit_layers)),
                 "of D": F.style_dim, "parameters": sum(p.numel() for p in F.parameters())})
display(viz.table(rows))

# %% [markdown]
# ## 2. Training one F^i (a short live run)
#
# `train_f` (the library behind `python -m cddfm3d train-f --attribute NAME`) follows the official recipe with the
# frozen T as the differentiable stand-in for "generate, then reconstruct": each step splits a batch of pairs into
# sources w and targets v and edits w's attribute toward v's (ΔP = T(v)^i − T(w)^i). The losses: **rec** (ΔP = 0
# must give Δs = 0, averaged over the edited dimensions), **render** (the coefficients of the edit, with the other
# attributes taken from v, must look like v; those with the edited attribute taken from w must look like w — the
# cycle and consistency terms; here the fast per-vertex variant), **landmark** (the official 68-point weights) and,
# for shape, the jaw **edge** term. The log shows T's view of the edit on held-out pairs (completion through T).

# %%
N_PAIRS = 300 if FAST else 3000
STEPS = 120 if FAST else 1000
pairs_dir = generate_pairs(G, recon, WORK / "pairs", N_PAIRS, seed=SEED + 7, progress=False)
pdata = PairDataset(pairs_dir).load_fields(["styles", "coeffs"])
cfg = FTrainConfig(attribute="expression", edit_layers=layer_sets["expression"], steps=STEPS,
                   batch_size=32 if FAST else 64, lr=3e-3, eval_every=max(STEPS // 4, 1), seed=SEED)
trainer = train_f(cfg, T, pdata["styles"], pdata["coeffs"], [m.channels for m in G.style_layers], WORK / "f_run",
                  device=DEVICE, progress=False)
log = [r for r in trainer.log if "total" in r]
val = [r for r in trainer.log if "val" in r]
fig, axes = plt.subplots(1, 2, figsize=(9, 2.6))
for key in ("total", "rec", "render", "landmark"):
    axes[0].semilogy([r["step"] for r in log], [max(r[key], 1e-8) for r in log], label=key)
axes[0].set_xlabel("step")
axes[0].legend(fontsize=7)
axes[0].set_title("short run: training losses")
axes[1].plot([r["step"] for r in val], [r["val"]["completion_T"] for r in val], "o-", label="completion (T)")
axes[1].plot([r["step"] for r in val], [r["val"]["leakage_T_mean"] for r in val], "o-", label="leakage (T)")
axes[1].set_xlabel("step")
axes[1].legend(fontsize=7)
axes[1].set_title("held-out pairs, as T reads them")
plt.tight_layout()
plt.show()
short = trainer.evaluate()
print(f"short run: {trainer.step} steps on {len(trainer.train_idx)} pairs; T's view on {short['n']} held-out "
      f"pairs: completion {short['completion_T']:.3f}, mean leakage {short['leakage_T_mean']:.3f}")

# %% [markdown]
# **Through the images.** T is only a stand-in: an edit can move T's reading of the styles more than the face in
# the image (notebook 04 measured T's accuracy), and the evaluation below reads the images. `through="image"`
# (`train-f --through image --init RUN/manipulator.safetensors`) continues a T-trained F^i with the real
# "generate, then reconstruct": each step synthesises the edited styles with the generator (on the source's
# noise) and reads the image with the reconstruction network, against the pairs' labels. `edit_weight` weighs
# the edit half of the terms against the consistency half. The shipped F^i were made this way (T first, then
# through the images; the manifest lists both commands); the independent evaluator of the table below, which no
# training sees, checks that the gain is in the faces and not in what one network likes to read. A few steps
# here, from the short run:

# %%
tuned_cfg = FTrainConfig(attribute="expression", edit_layers=layer_sets["expression"], steps=30 if FAST else 300,
                         batch_size=16 if FAST else 32, lr=1e-3, warmup=5, eval_every=1000, seed=SEED,
                         through="image", edit_weight=3.0)
seeds_of_pairs = PairDataset(pairs_dir).load_fields(["noise_seed"])["noise_seed"]
tuned = train_f(tuned_cfg, T, pdata["styles"], pdata["coeffs"], [m.channels for m in G.style_layers],
                WORK / "f_run_image", device=DEVICE, progress=False, G=G, recon=recon, noise_seeds=seeds_of_pairs,
                init=trainer.net)
tuned_log = [r for r in tuned.log if "total" in r]
print(f"through the images: {tuned.step} steps; loss {tuned_log[0]['total']:.4f} -> {tuned_log[-1]['total']:.4f}")

# %% [markdown]
# ## 3. Editing with the shipped F^i
#
# `FaceEditor.edit(s, {attribute: {"target": ..., "delta": ...}})`: P_s = T(s), the caller sets absolute targets
# or offsets for any coefficients (the others keep P_s), and F^i maps ΔP^i to the edited styles; the image is
# decoded with the source's noise. Each grid (`FaceEditor.sweep` and `FaceEditor.series`): rows are generated faces,
# columns increasing offsets (of the most varied coefficient, in units of its spread over the training faces, for
# shape, expression and albedo; yaw in degrees for pose; the light's azimuth), and under every row the render of the
# target coefficients P_t the edit was asked to reach.

# %%
K = 4
sources = torch.cat([editor.styles_from_seed(1000 + i) for i in range(K)])
seeds = list(range(K))


grids = {}
for a in editor.attributes:
    labels, edits = editor.sweep(a)
    out = editor.series(sources, seeds, edits)
    grids[a] = out
    ims, renders = [], []
    for j in range(len(edits)):
        img = from_uint8(out["images"][j])
        with torch.no_grad():
            renders.append(reconstruction_rows(img, out["targets"][j], model)["render"].cpu())
        ims.append(img.cpu())
    rows_ = []
    for i in range(K):   # a row of edits, then the row of their target renders
        rows_ += [ims[j][i] for j in range(len(edits))] + [renders[j][i] for j in range(len(edits))]
    display(Markdown(f"**{a}**: columns " + ", ".join(labels)))
    viz.show(torch.stack(rows_), nrow=len(edits), scale=2)

# %% [markdown]
# What to look for: along a row only the named attribute should change (the other rows of the grid are other
# faces); the renders below show what was asked. The light columns set a white light from 25° above at the given
# azimuth (`cddfm3d.face3d.lighting.directional_light`); the achieved azimuth, as the reconstruction network reads
# it from the edited images:

# %%
if "light" in grids:
    with torch.no_grad():
        got = [light_angles_deg(recon(from_uint8(grids["light"]["images"][j]))[:, ATTRIBUTE_SLICES["light"]])[1]
               for j in range(5)]
    print("asked:", [-50, -25, 0, 25, 50])
    print("read (mean over the faces):", [round(float(g.mean()), 1) for g in got])

# %% [markdown]
# ## 4. Evaluation on the images
#
# `cddfm3d.editing.evaluate` (the library behind `python -m cddfm3d evaluate`) edits fresh sources toward targets
# of two kinds — **swap** (the attribute of another source, as in training) and **prior** (coefficients drawn from
# the world's prior) — synthesises the edited images with the sources' noise and reads source, target and edit
# with the reconstruction network. Per edited attribute i, with d_j the attribute distances of notebook 04 (vertex
# RMS for shape and expression, colour for albedo, shading for light, degrees for pose):
#
# - **completion** = 1 − mean d_i(P_g, P_t) / mean d_i(P_s, P_t): 1 = the image shows exactly the target;
# - **leakage** [i, j] = mean d_j(P_g, P_s) / mean d_j between two random faces: 0 = attribute j untouched;
# - **identity** = the shape column of leakage for the other edits;
# - **FD**: Fréchet distance of the edited images to the sources in the reconstruction network's features.
#
# Compared on the same sources and targets: the shipped F^i ("cddfm3d"), the short live run of section 2
# ("short run", expression only) and its continuation through the images ("short run, images"), the
# **InterFaceGAN-style linear baseline** (Δs linear in ΔP over the full S, fitted by least squares on pairs), and
# the **perfect edit** ("perfect"): the world's render of each source's coefficients with the attribute set
# exactly to the target, read the same way. Its completion falls short of 1 and its leakage exceeds 0 only by the
# network's reading errors, so its row estimates the ceiling of every measure with this reconstruction network (an
# estimate, not a bound: it is measured on renders, and an editor trained through this network can learn its
# reading biases). Issue goals for the shipped networks: completion ≥ 0.7, off-diagonal leakage ≤ 0.15; read them
# against the perfect row.
#
# **Where P_s comes from.** The editors' input is ΔP = P_t − P_s. The official code takes P_s = T(s), and in the
# swap protocol the target P_v = T(s_v) too, so even an exact editor misses the measured target by T's errors on
# both faces. "cddfm3d, P_s read" runs the **same** shipped F^i with P_s (and P_v) read by the reconstruction
# network from the source images instead (`delta_readers`; `evaluate --read-deltas recon`;
# `FaceEditor.edit(..., P_s=...)` in your own code). It does not matter for slider offsets (ΔP is the offset itself),
# only for absolute targets. Read its gain with care: the reconstruction network that gives this P_s also reads
# the result. On 500 held-out sources (`benchmarks/README.md`) the mean swap completion rises from 0.63 to 0.76 as
# the recon reads it, but falls from 0.41 to 0.40 as the independent evaluator reads it. The gain lies in the part of
# the recon's reading that the independent evaluator does not share: the recon's own reading errors, which a delta
# built from its readings asks the edit to reproduce, or what the independent evaluator cannot see (generated faces
# have no ground truth to tell). T's P_s stays the default.

# %%
N_EVAL = 32 if FAST else 200
EVAL_SEED = 2_000_003 + SEED
fresh_dir = generate_pairs(G, recon, WORK / "fresh", N_EVAL, seed=EVAL_SEED, progress=False)
fresh = PairDataset(fresh_dir).load_fields(["styles", "noise_seed", "coeffs"])
fit_styles = pdata["styles"].to(DEVICE)
methods = {"cddfm3d": editor.manipulators, "short run": {"expression": trainer.net},
           "short run, images": {"expression": tuned.net},
           "linear": fit_linear_baseline(fit_styles, predict_all(T, fit_styles)),
           "cddfm3d, P_s read": editor.manipulators}
report = evaluate(G, T, methods, fresh["styles"], fresh["noise_seed"], {"recon": recon}, batch=32, seed=SEED,
                  reference=fresh["coeffs"], delta_readers={"cddfm3d, P_s read": "recon"})
display(Markdown(report.table()))

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
x = np.arange(len(ATTRIBUTES))
for j, m in enumerate(("cddfm3d", "cddfm3d, P_s read", "linear", "perfect")):
    comp = [report.score(m, "recon", "swap", a).completion for a in ATTRIBUTES]
    leak = [report.score(m, "recon", "swap", a).offdiag_leakage for a in ATTRIBUTES]
    axes[0].bar(x + 0.2 * (j - 1.5), comp, 0.2, label=m)
    axes[1].bar(x + 0.2 * (j - 1.5), leak, 0.2, label=m)
axes[0].axhline(0.7, color="k", lw=0.7, ls="--")
axes[1].axhline(0.15, color="k", lw=0.7, ls="--")
for ax, title in zip(axes[:2], ("completion (swap targets)", "off-diagonal leakage (swap targets)"), strict=True):
    ax.set_xticks(x, ATTRIBUTES, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
M = report.leakage_matrix("cddfm3d", "recon", "swap")
im = axes[2].imshow(M, cmap="viridis", vmin=0, vmax=max(0.3, float(np.nanmax(M))))
axes[2].set_xticks(x, ATTRIBUTES, fontsize=7, rotation=30)
axes[2].set_yticks(x, ATTRIBUTES, fontsize=7)
axes[2].set_xlabel("attribute that moved")
axes[2].set_ylabel("attribute edited")
axes[2].set_title("leakage of the shipped F^i (swap)", fontsize=9)
plt.colorbar(im, ax=axes[2])
plt.tight_layout()
plt.show()

# %% [markdown]
# The shipped F^i's own evaluation (500 held-out sources, written by `ship-f` into the manifest) is the reference;
# the numbers above come from a few fresh sources and move with them.
#
# ## Check your understanding
#
# - Why is the evaluation read by the reconstruction network and not by T, although F^i was trained through T?
# - The linear baseline edits the whole of S: which cells of its leakage matrix would you expect to be large, and
#   why does writing only on S^i help?
# - A completion of 0.9 with an off-diagonal leakage of 0.5: is that a good edit?
# - The perfect edit's completion is below 1 and its leakage above 0: what does that say about the reconstruction
#   network, and why must every goal be read against that row?
# - "cddfm3d, P_s read" uses the same networks as "cddfm3d": why does it complete more as the recon reads it, why
#   does an evaluator that never saw the recon's readings see almost no gain, and why would a slider that adds an
#   offset not change at all?
#
# ## Checks run by CI

# %%
COMPLETION_FLOOR = 0.2     # swap targets, every shipped attribute, on these few sources (the goals, 0.7
LEAKAGE_CEILING = 0.4      # and 0.15, are not met yet: the table above and the manifest show by how much)
assert set(editor.attributes) == set(ATTRIBUTES)
for a in ATTRIBUTES:
    F = editor.manipulators[a]
    assert F.edit_layers == sorted(layer_sets[a])
    s_g = F(sources, torch.zeros(K, F.p_dim, device=DEVICE))
    outside = torch.ones(G.style_dim, dtype=torch.bool)
    for k in F.edit_layers:
        outside[F.net.offsets[k]:F.net.offsets[k + 1]] = False
    assert torch.equal(s_g[:, outside], sources[:, outside])          # F writes only on its layer set
    sc = report.score("cddfm3d", "recon", "swap", a)
    assert sc.completion >= COMPLETION_FLOOR, (a, sc.completion)
    assert sc.offdiag_leakage <= LEAKAGE_CEILING, (a, sc.offdiag_leakage)
mean_leak = {m: float(np.mean([report.score(m, "recon", "swap", a).offdiag_leakage for a in ATTRIBUTES]))
             for m in ("cddfm3d", "linear")}
assert mean_leak["cddfm3d"] < 0.6 * mean_leak["linear"], mean_leak       # layer sets + F beat full-S linear edits
assert short["completion_T"] > 0.2                                      # the short run learns (T's view)
mean_comp = {m: float(np.mean([report.score(m, "recon", "swap", a).completion for a in ATTRIBUTES]))
             for m in ("cddfm3d", "cddfm3d, P_s read")}
assert mean_comp["cddfm3d, P_s read"] > mean_comp["cddfm3d"] + 0.05, mean_comp   # as the recon itself reads it
for a in ATTRIBUTES:          # the perfect edit: far from no change, short of 1 only by the recon's reading errors
    ceiling = report.score("perfect", "recon", "swap", a)
    assert 0.5 < ceiling.completion < 1 and 0 < ceiling.offdiag_leakage < 0.3, (a, ceiling)
assert log[-1]["total"] < log[0]["total"]
work.cleanup()
print("all checks passed")
