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
# # 00 · The mini world
#
# **Goals.** After this notebook you can
# - say what the embedded *mini world* is and why every later notebook runs on it by default;
# - sample the 257 face coefficients from the world's priors and render the same faces in two domains,
#   **human** and **toon**;
# - write a rendered dataset to disk and read it back with its ground-truth coefficients;
# - load the two shipped networks — a small **StyleGAN2** trained on human renders and a small
#   **reconstruction network** (image → 257 coefficients) — and check them against ground truth;
# - read the asset manifest: where every shipped file came from and how good it is;
# - switch a notebook to the real FFHQ StyleGAN2 / BFM / Deep3DFaceRecon assets.
#
# **Runtime.** About 15 seconds in FAST mode and 100 seconds in full mode (most of it in section 5, which renders
# 1000 faces behind a progress bar and evaluates the reconstruction network on them), measured on one thread of a
# 2-core machine that other jobs kept busy; no GPU needed.
#
# **Why a mini world?** CDDFM3D needs a face generator (FFHQ StyleGAN2, 1024 px), a 3D morphable model (BFM09)
# and a face-reconstruction network (Deep3DFaceRecon). None of them may be shipped (licences), together they are
# gigabytes, and the method wants a GPU to train its networks. The mini world replaces them with small stand-ins
# built by this package: **MiniFace**, a procedural morphable model with exactly BFM's 257-coefficient layout and
# conventions; two renderers that turn coefficients into 64-px faces; and a StyleGAN2 and a reconstruction network
# trained on those renders. Every step of CDDFM3D then runs on a laptop CPU in minutes — and because every training
# image was rendered from known coefficients, results can be checked against **ground truth**, which the real
# world never offers.

# %% tags=["parameters"]
WORLD = "mini"   # this notebook is about the mini world; "real" also loads your real assets in section 7
FAST = None      # None: decided by cddfm3d.fast_mode() (on in CI)
SEED = 0
DEVICE = None    # None: CUDA when available, else CPU

# %%
import json
import math
import os
import shutil
import tempfile
import textwrap
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import display
from tqdm.auto import tqdm

import cddfm3d
from cddfm3d import viz
from cddfm3d.face3d.lighting import light_angles_deg
from cddfm3d.face3d.losses import photometric_loss
from cddfm3d.face3d.morphable import SLICES
from cddfm3d.face3d.recon_training import evaluate_recon
from cddfm3d.face3d.viz import draw_landmarks, landmark_panel, reconstruction_rows
from cddfm3d.world import domains, mini_model, priors, render, sample_coeffs
from cddfm3d.world.datasets import WorldDataset, shard_seed, write_dataset
from cddfm3d.world.quality import generate, generator_latency_ms

FAST = cddfm3d.fast_mode() if FAST is None else FAST
DEVICE = cddfm3d.device(DEVICE)
cddfm3d.setup_notebook(SEED)   # seeds, plotly renderer, CPU threads for interactive work (section 4)
print("FAST:", FAST, "| device:", DEVICE, "| CPU threads:", torch.get_num_threads())


# %% [markdown]
# ## 1. MiniFace and the coefficient priors
#
# A face of the mini world is a vector of **257 coefficients** in BFM/Deep3DFaceRecon's layout (notebook 02 looks at
# each group in detail): identity 80, expression 64, texture 80, angles 3 (pitch, yaw, roll in radians), spherical-
# harmonics lighting 27, translation 3. `cddfm3d.world.sample_coeffs(n, seed)` draws them from the world's **priors**
# (constants in `cddfm3d.world.priors`), which decide what the datasets — and hence the generator — contain:
#
# - **identity, expression, texture**: independent normals with standard deviation `ID_SCALE`, `EXP_SCALE`,
#   `TEX_SCALE` (MiniFace's bases are scaled so that one unit is one standard deviation of its population; the
#   scales are below 1 because the tails look caricatured or blotchy at 64 px);
# - **pose**: yaw, pitch and roll from normals truncated at ±35°, ±20°, ±8° — mostly frontal faces, like FFHQ;
# - **light**: one dominant light from the front-top (elevation ~ N(25°, 15°), azimuth ~ N(0°, 30°)) written as
#   first-order SH terms, plus an ambient level, a slight colour tint and small second-order terms;
# - **translation**: a few pixels of jitter in x, y and a few percent of scale through z.
#
# Draws are deterministic in `seed`.

# %%
N_PRIOR = 2000 if FAST else 20000
coeffs = sample_coeffs(N_PRIOR, seed=SEED)
print("coeffs", tuple(coeffs.shape), coeffs.dtype)
rows = []
for group, scale in (("id", priors.ID_SCALE), ("exp", priors.EXP_SCALE), ("tex", priors.TEX_SCALE)):
    rows.append({"group": group, "coefficients": coeffs[:, SLICES[group]].shape[1], "prior std": scale,
                 "sample std": coeffs[:, SLICES[group]].std().item()})
display(viz.table(rows))
print("pose prior (std, limit) in degrees:", priors.POSE_DEG)
print("light elevation (mean, std):", priors.LIGHT_ELEVATION_DEG, " azimuth (mean, std):", priors.LIGHT_AZIMUTH_DEG)


# %% [markdown]
# The light direction is not stored as an angle: it is folded into the first-order SH coefficients of each colour,
# `gamma[1:4] ∝ (−d_y, d_z, −d_x)` for a unit direction `d` toward the light (x right, y up, z toward the camera),
# scaled by the light's strength and tint. `cddfm3d.face3d.lighting.light_angles_deg(gamma)` reads the direction
# back from the coefficients as elevation and azimuth:

# %%
angles_deg = torch.rad2deg(coeffs[:, SLICES["angle"]])      # pitch, yaw, roll
elevation, azimuth = light_angles_deg(coeffs[:, SLICES["gamma"]])
panels = [("yaw", angles_deg[:, 1], priors.POSE_DEG["yaw"][1]),
          ("pitch", angles_deg[:, 0], priors.POSE_DEG["pitch"][1]),
          ("roll", angles_deg[:, 2], priors.POSE_DEG["roll"][1]),
          ("light elevation", elevation, None), ("light azimuth", azimuth, None)]
fig, ax = plt.subplots(1, 5, figsize=(13, 2.4))
for a, (name, x, limit) in zip(ax, panels, strict=True):
    a.hist(x.numpy(), bins=40, color="0.4")
    if limit is not None:
        for s in (-limit, limit):
            a.axvline(s, color="r", lw=0.8)
    a.set_title(f"{name} (deg)", fontsize=9)
    a.set_yticks([])
plt.tight_layout()
plt.show()
print(f"light elevation {elevation.mean():.1f} ± {elevation.std():.1f} deg, "
      f"azimuth {azimuth.mean():.1f} ± {azimuth.std():.1f} deg (red lines: the pose truncation limits)")

# %% [markdown]
# ## 2. The two domains: human and toon
#
# `cddfm3d.world.render(coeffs, domain, size, seed)` turns coefficients into images in [−1, 1] (the generator's
# range). The same coefficients give the same face in both domains — this pairing is what the cross-domain part of
# CDDFM3D (notebook 06) is about, and here we have it exactly.
#
# - **human**: MiniFace's albedo lit by the SH light (Gouraud shading), antialiased by supersampling, over a smooth
#   random background (a two-colour gradient and a soft blob).
# - **toon**: the same face drawn as a cartoon — eyes enlarged by a radial warp of the 3D shape, a flat skin tone
#   from a small cartoon palette with saturated painted features (brows, lips, eyes), **cel shading** (the lighting
#   quantised to three bands), dark **outlines** at the silhouette, at depth creases and around the painted
#   features, over a **flat pastel background**.
#
# `seed` drives what is not in the coefficients (backgrounds, palette jitter), so a render is a pure function of
# (coeffs, domain, size, seed).

# %%
faces = sample_coeffs(8, seed=SEED + 1)
human = render(faces, "human", 64, seed=SEED)
toon = render(faces, "toon", 64, seed=SEED)
print("human", tuple(human.shape), f"range [{human.min():.2f}, {human.max():.2f}]",
      "| toon", tuple(toon.shape), f"range [{toon.min():.2f}, {toon.max():.2f}]")
viz.show(torch.cat([human, toon]), nrow=8, scale=2)
print("top: human; bottom: the same coefficients in the toon domain")

# %% [markdown]
# The toon domain's style constants: eye magnification, the cel-shading bands, and the two palettes (skin tones and
# backgrounds).

# %%
print("eye magnification:", domains.EYE_ENLARGE, "| cel bands (shade):", domains.CEL_LEVELS,
      "at irradiance", domains.CEL_THRESHOLDS)
skin = torch.cat([domains.TOON_SKIN, torch.ones(8 - len(domains.TOON_SKIN), 3)])   # padded with white to one row
swatches = torch.cat([skin, domains.TOON_BACKGROUNDS]).view(-1, 3, 1, 1).expand(-1, 3, 16, 16)   # 16-px squares
viz.show(swatches, nrow=8, scale=2, value_range=(0, 1))
print("top: the cartoon skin tones; bottom: the flat backgrounds")

# %% [markdown]
# Renders come in any size from 32 to 256 px; the shipped networks use 64 px. One face at 32, 64 and 128 px (shown
# at the same scale):

# %%
SIZES = (32, 64, 128)
one = faces[:1]
row = [F.interpolate(render(one, d, s, seed=SEED), size=128, mode="nearest") for d in ("human", "toon") for s in SIZES]
viz.show(torch.cat(row), nrow=len(SIZES))

# %% [markdown]
# The toon style is drawn for 64 px and up: its outlines are about one pixel wide at any size, so at 32 px they
# swallow much of the face.

# %% [markdown]
# ## 3. Datasets
#
# The networks train on rendered **datasets**: `cddfm3d.world.datasets.write_dataset(folder, n, seed, domains,
# size)` writes sharded safetensors files (images as uint8, coefficients as float32) and a `dataset.json` with the
# config and shard list. Every image is a pure function of the config, and the writer is **resumable**: re-running
# it on a partly written folder skips the complete shards. From the command line:
#
# ```
# python -m cddfm3d make-world --out out/world/train --n 30000 --seed 0 --domains human
# ```
#
# (`make mini-assets` writes the training, held-out and floor sets this way.) Here a small one in a temporary folder:

# %%
N_DATA = 64 if FAST else 256
tmp = tempfile.TemporaryDirectory()
data_dir = Path(tmp.name) / "mini"
config = dict(seed=SEED + 7, domains=("human", "toon"), size=64, shard_size=N_DATA // 2, progress=False)
t0 = time.perf_counter()
write_dataset(data_dir, N_DATA, **config)
t_write = time.perf_counter() - t0
t0 = time.perf_counter()
write_dataset(data_dir, N_DATA, **config)     # same config again: every shard is complete, nothing is rendered
t_resume = time.perf_counter() - t0
print(f"rendered {N_DATA} faces x 2 domains in {t_write:.1f} s; the second call took {t_resume:.2f} s")
for f in sorted(data_dir.iterdir()):
    print(f"  {f.name:<26} {f.stat().st_size / 1e3:8.1f} kB")
print((data_dir / "dataset.json").read_text())

# %%
ds = WorldDataset(data_dir, "human", with_coeffs=True)
ds_toon = WorldDataset(data_dir, "toon")
img, c = ds[0]
print(len(ds), "items; item 0: image", tuple(img.shape), img.dtype, f"in [{img.min():.2f}, {img.max():.2f}],",
      "coeffs", tuple(c.shape))
print("stored as", ds.images.dtype, tuple(ds.images.shape))
viz.show(torch.cat([ds.image_batch(list(range(8))), ds_toon.image_batch(list(range(8)))]), nrow=8, scale=2)
# the coefficients of shard 0 are sample_coeffs(k, seed=shard_seed(seed, 0)): ground truth for every image
shard0 = sample_coeffs(ds.config["shard_size"], seed=shard_seed(ds.config["seed"], 0))
print("shard 0 coefficients equal sample_coeffs(..., shard_seed(seed, 0)):",
      torch.equal(ds.coeffs[:len(shard0)], shard0))

# %% [markdown]
# ## 4. The generator
#
# `cddfm3d.assets.load("mini/generator")` loads the shipped StyleGAN2: the full architecture (mapping MLP, modulated
# convolutions, noise inputs, skip ToRGB) at 64 px with narrow layers, trained by `python -m cddfm3d train-gan` on
# human-domain renders. Loading checks the file's size and sha256 against `assets/MANIFEST.json` and returns the
# network in eval mode without gradients.

# %%
G = cddfm3d.assets.load("mini/generator", DEVICE)
print(f"{G.resolution} px, z_dim {G.z_dim}, w_dim {G.w_dim}, {G.num_ws} W+ entries, "
      f"{len(G.style_layers)} style layers, {G.style_dim} StyleSpace dims, "
      f"{sum(p.numel() for p in G.parameters()):,} parameters")
N_SAMPLES = 16
samples = {psi: generate(G, N_SAMPLES, seed=SEED, truncation_psi=psi) for psi in (1.0, 0.7)}
for psi, x in samples.items():
    print(f"truncation psi = {psi}:", tuple(x.shape))
    viz.show(x, nrow=8, scale=2)

# %% [markdown]
# Truncation (`ψ < 1`) pulls `w` toward the average face: fewer failures, less variety (notebook 01).
#
# **How good is it?** FID's Inception features would mostly measure ImageNet texture statistics of 64-px renders.
# The manifest instead reports a Fréchet distance in the **reconstruction network's features** (a network trained
# on this world sees shape, pose, light and colour), between generator samples and as many held-out renders
# (`n_fd` of each) — next to its **floor**, the same distance between two disjoint sets of real renders (a perfect
# generator would score about the floor). It also records how long the GAN trained and its batch-1 CPU latency.

# %%
gen_entry = cddfm3d.assets.entry("mini/generator")
m = gen_entry["metrics"]
labels = {"fd_recon_features": "FD generator vs held-out renders (recon-net features)",
          "fd_floor_renders_vs_renders": "FD floor: renders vs renders",
          "fd_ratio_to_floor": "FD / floor", "n_fd": "images per set", "feature_dim": "feature dimension",
          "train_kimg": "training images seen (thousands)", "train_steps": "training steps",
          "latency_ms_batch1_cpu": "latency, batch 1 (ms, at shipping)", "cpu_threads": "CPU threads at shipping"}
display(viz.table([{"metric": labels.get(k, k), "value": v} for k, v in m.items()]))
latency = generator_latency_ms(G, repeats=10)
print(f"latency measured now: {latency:.1f} ms per image (batch 1, {DEVICE}, {torch.get_num_threads()} thread(s)); "
      f"at shipping: {m['latency_ms_batch1_cpu']:.1f} ms on {m['cpu_threads']} thread(s)")

# %% [markdown]
# The two latencies are measured the same way (median of batch-1 forward passes) but rarely agree: the number
# depends on the CPU, the thread count and what else the machine runs. The shipping number was taken on an idle
# machine with 2 threads. `setup_notebook` runs this notebook on **one thread** on machines with at most 2 cores
# (and on larger ones, on the cores the load average leaves idle; `cddfm3d.config.interactive_threads`), which costs
# a little on an idle machine and saves a lot on a busy one: PyTorch's OpenMP threads wait for each other at every
# operation, so when another process holds a core, a 2-thread batch-1 pass waits for its descheduled thread.
# Measured on a 2-core machine (for issue 8): 1 thread 9–10 ms idle and 9–11 ms while the other core runs a
# PyTorch job; 2 threads 7 ms idle but 130–720 ms next to that job. `generator_latency_ms(G, threads=2)` repeats
# the comparison on your machine.

# %% [markdown]
# ## 5. The reconstruction network
#
# CDDFM3D labels every generated image with its 3DMM coefficients using a face-reconstruction network
# (Deep3DFaceRecon in the paper). The mini world's `mini/recon` is a small CNN with the same output heads
# (257 coefficients), trained by `python -m cddfm3d train-recon` on renders with known coefficients.
#
# First on **fresh renders** (a seed no dataset used), where the ground truth is known. `evaluate_recon` reports the
# mean distance of the 68 projected landmarks (pixels at 64 px), per-group coefficient errors and the photometric
# error of the re-rendered fit. For scale, next to each error: the error of always guessing the average face.

# %%
net = cddfm3d.assets.load("mini/recon", DEVICE)
fm = mini_model(DEVICE)
N_EVAL = 128 if FAST else 1000
CHUNK = 250   # rendered in chunks for the progress bar (about 4 s per chunk on one core)
true = sample_coeffs(N_EVAL, seed=SEED + 100)
fresh = torch.cat([render(true[i:i + CHUNK], "human", 64, seed=SEED + 100 + i)
                   for i in tqdm(range(0, N_EVAL, CHUNK), desc="rendering", unit="chunk")]).to(DEVICE)
ev = evaluate_recon(net, fm, fresh, true, progress=True)

def guess_mean(group):  # error of predicting the dataset mean for every image
    x = true[:, SLICES[group]]
    return (x - x.mean(0)).pow(2).mean().sqrt().item()
ang = torch.rad2deg(true[:, SLICES["angle"]])
rows = [{"metric": "landmark error (px, 64-px images)", "net": ev["landmark_px"], "average-face guess": float("nan")}]
for g in ("id", "exp", "tex", "gamma", "trans"):
    rows.append({"metric": f"RMSE {g}", "net": ev[f"rmse_{g}"], "average-face guess": guess_mean(g)})
for k, name in enumerate(("pitch", "yaw", "roll")):
    rows.append({"metric": f"{name} error (deg)", "net": ev[f"angle_deg_{name}"],
                 "average-face guess": (ang[:, k] - ang[:, k].mean()).abs().mean().item()})
with torch.no_grad():
    pred_all = net(fresh).cpu()
light_err = {}
light_true, light_pred = light_angles_deg(true[:, SLICES["gamma"]]), light_angles_deg(pred_all[:, SLICES["gamma"]])
for name, t, p in zip(("elevation", "azimuth"), light_true, light_pred, strict=True):
    light_err[name] = ((p - t).abs().mean().item(), (t - t.mean()).abs().mean().item())
    rows.append({"metric": f"light {name} error (deg)", "net": light_err[name][0],
                 "average-face guess": light_err[name][1]})
rows.append({"metric": "photometric (re-render vs image)", "net": ev["photometric"],
             "average-face guess": float("nan")})
display(viz.table(rows))

# %% [markdown]
# The group errors hide which coefficients are readable from a 64-px image. Per coefficient, the fraction of its
# variance that the prediction explains, R² = 1 − MSE / variance (1: exact, 0: no better than the average face),
# for the first 20 coefficients of identity, expression and texture, and for pose and translation:

# %%
r2 = 1 - (pred_all - true).pow(2).mean(0) / true.var(0)
fig, ax = plt.subplots(1, 4, figsize=(13, 2.2), gridspec_kw={"width_ratios": [20, 20, 20, 6]})
for a, g in zip(ax, ("id", "exp", "tex"), strict=False):
    a.bar(range(20), r2[SLICES[g]][:20].clamp(min=-0.1).numpy(), color="0.4")
    a.set_title(f"{g} 0-19", fontsize=9)
a = ax[3]
a.bar(range(6), torch.cat([r2[SLICES["angle"]], r2[SLICES["trans"]]]).clamp(min=-0.1).numpy(), color="0.4")
a.set_xticks(range(6), ["pitch", "yaw", "roll", "tx", "ty", "tz"], rotation=90, fontsize=8)
a.set_title("pose, trans", fontsize=9)
for a in ax:
    a.set_ylim(-0.1, 1)
    a.axhline(0, color="k", lw=0.5)
plt.tight_layout()
plt.show()

# %% [markdown]
# Pose and the landmarks are recovered well; within identity, expression and texture, the leading coefficients much
# better than the later ones. That is expected, and the same holds for the real Deep3DFaceRecon: the later PCA
# directions barely change a small image, so the network returns about their average. (CDDFM3D only needs the
# coefficients to move consistently with the image; the editing networks of notebook 05 are judged on what the
# reconstruction network can see.) Below: input, re-render of the prediction, overlay, and the landmarks — ground
# truth in green, prediction in red.

# %%
K = 6
with torch.no_grad():
    pred = net(fresh[:K])
    rec = reconstruction_rows(fresh[:K], pred, fm)
viz.show(torch.cat([fresh[:K], rec["render"], rec["overlay"]]).cpu(), nrow=K, scale=2)
print("rows: fresh renders; render of the predicted coefficients; overlay")
lm_true = fm(true[:K].to(DEVICE), image_size=64).landmarks.cpu()
fig, ax = plt.subplots(1, K, figsize=(2 * K, 2.2))
for k in range(K):
    draw_landmarks(lm_true[k], image=(fresh[k].cpu() + 1) / 2, ax=ax[k], color="lime", size=3)
    draw_landmarks(rec["landmarks"][k].cpu(), ax=ax[k], color="red", size=3)
plt.tight_layout()
plt.show()

# %% [markdown]
# Now on **generator samples** — the situation in CDDFM3D, where there is no ground truth. We predict coefficients,
# re-render them (with `landmark_panel` for the 68 landmarks), and judge the fit photometrically. As a baseline, the
# same distance between each sample and the fit of *another* sample.
#
# Because the predictions are plain coefficients, we can also render them in the toon domain: **the same identities
# in the toon domain** — the correspondence that CDDFM3D's domain adaptation has to learn, given here for free.

# %%
x = samples[0.7][:8].to(DEVICE)
with torch.no_grad():
    pred_g = net(x)
    rec_g = reconstruction_rows(x, pred_g, fm)
    toon_g = render(pred_g.cpu(), "toon", 64, seed=SEED).cpu()
viz.show(torch.cat([x.cpu(), rec_g["render"].cpu(), rec_g["overlay"].cpu(), toon_g]), nrow=8, scale=2)
print("rows: generator samples; render of the predicted coefficients; overlay; the prediction in the toon domain")
viz.show(landmark_panel(x[:4].cpu(), rec_g["landmarks"][:4].cpu(), zoom=3), nrow=4)
target = (x + 1) / 2
ren = (rec_g["render"] + 1) / 2
photo_fit = float(photometric_loss(ren, target, rec_g["mask"]))
photo_other = float(photometric_loss(ren.roll(1, 0), target, rec_g["mask"].roll(1, 0)))
photo_all = evaluate_recon(net, fm, samples[0.7].to(DEVICE))["photometric"]
print(f"photometric error of the fit: {photo_fit:.4f} (these 8), {photo_all:.4f} (all {N_SAMPLES}); "
      f"against another sample's fit: {photo_other:.4f}; on renders (section above): {ev['photometric']:.4f}")

# %% [markdown]
# ## 6. Provenance
#
# Each shipped file has a manifest entry: sha256 and size (checked at every load), the architecture config, the
# metrics above and the exact **commands** that produced it — datasets, training (resumes included, one line per
# run) and the evaluation that wrote the entry.

# %%
for name in ("mini/generator", "mini/recon"):
    e = cddfm3d.assets.entry(name)
    print(f"{name}: {e['file']}, {e['size'] / 1e6:.2f} MB, created {e.get('created', '?')}")
    print("  sha256 ", e["sha256"])
    print("  config ", json.dumps(e["config"]))
    print("  " + textwrap.fill(e.get("description", ""), 110, subsequent_indent="  "))
    print("  commands:")
    for line in e["command"].splitlines():
        print("    " + line)
    print()

# %% [markdown]
# A damaged or hand-edited file is refused rather than silently giving different results. To see this without
# touching `assets/`, we copy the manifest and the generator to a temporary folder, flip one byte, and point
# `$CDDFM3D_ASSETS` at it for a moment:

# %%
bad_dir = Path(tmp.name) / "assets"
(bad_dir / "mini").mkdir(parents=True)
shutil.copy(cddfm3d.assets.manifest_path(), bad_dir / "MANIFEST.json")
bad_file = bad_dir / gen_entry["file"]
shutil.copy(cddfm3d.assets.path("mini/generator"), bad_file)
with open(bad_file, "r+b") as f:
    f.seek(gen_entry["size"] // 2)
    b = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([b[0] ^ 1]))
old = os.environ.get("CDDFM3D_ASSETS")
os.environ["CDDFM3D_ASSETS"] = str(bad_dir)
try:
    cddfm3d.assets.load("mini/generator")
    integrity_error = None
except cddfm3d.assets.AssetIntegrityError as err:
    integrity_error = str(err)
finally:
    if old is None:
        os.environ.pop("CDDFM3D_ASSETS")
    else:
        os.environ["CDDFM3D_ASSETS"] = old
print(textwrap.fill(str(integrity_error), 110))

# %% [markdown]
# **Rebuilding.** `make mini-assets` runs the whole chain from scratch — render the training, held-out and floor
# datasets, train the generator and the reconstruction network (both resumable: re-run after an interruption),
# evaluate them and register them in `assets/MANIFEST.json`. It takes hours on 2 CPU cores and minutes on one GPU
# (the trainers use CUDA when present). A rebuilt file has a different sha256 (training is not bit-reproducible
# across machines), so the manifest is rewritten along with it.

# %% [markdown]
# ## 7. Switching to the real assets
#
# The real world uses the FFHQ StyleGAN2, BFM09 (in Deep3DFaceRecon's layout), the Deep3DFaceRecon_pytorch
# checkpoint, VGG16 (for LPIPS) and an ArcFace backbone. cddfm3d never ships or downloads them; you obtain them
# yourself and tell the package where they are. `cddfm3d.assets.describe()` lists every asset and whether it is
# found:

# %%
display(viz.table([dict(r, message=textwrap.shorten(r["message"], 90)) for r in cddfm3d.assets.describe()],
                  ["name", "kind", "source", "ok", "message"]))

# %% [markdown]
# Each user-supplied file is located by an environment variable or by a key of the `[real]` table in
# `~/.config/cddfm3d/config.toml` (or the file named by `$CDDFM3D_CONFIG`; relative paths there are relative to the
# config file); the environment variable wins. For example:
#
# ```toml
# [real]
# generator = "/data/weights/stylegan2-ffhq-config-f.pt"
# bfm       = "/data/BFM/BFM_model_front.mat"
# recon     = "/data/Deep3DFaceRecon/checkpoints/face_recon/epoch_20.pth"
# ```

# %%
display(viz.table([{"asset": a.name, "environment variable": a.env, "[real] key": a.key, "file": a.what}
                   for a in cddfm3d.assets.REAL_ASSETS.values()]))
# what you see when one is missing: the error names the file, where the path came from and how to obtain it
try:
    print("real/bfm is configured:", cddfm3d.assets.real_path("real/bfm"))
except (cddfm3d.assets.AssetError, cddfm3d.assets.AssetValidationError) as err:
    print(textwrap.fill(str(err), 110))

# %% [markdown]
# With the files in place, a notebook switches worlds through its `WORLD` parameter; the loaders return the same
# types as in the mini world (a `Generator`, a `MorphableModel`, a `ReconNet`), so the rest of the code is
# unchanged. This cell only loads them when `WORLD == "real"`:

# %%
if WORLD == "real":
    G_real = cddfm3d.assets.load("real/generator", DEVICE)
    fm_real = cddfm3d.assets.load("real/bfm", DEVICE)
    net_real = cddfm3d.assets.load("real/recon", DEVICE)
    print(f"real generator: {G_real.resolution} px, {len(G_real.style_layers)} style layers, {G_real.style_dim} dims")
    print(f"real recon net: {net_real.image_size} px input, backbone {net_real.config['backbone']}")
else:
    print(f"WORLD = {WORLD!r}: the real assets are not loaded (set WORLD = 'real' to load them)")

# %% [markdown]
# ## Check your understanding
#
# - Why can the mini world report a landmark error for its reconstruction network, but the real world cannot?
# - Why is a Fréchet distance only meaningful next to its floor?
# - The generator never saw a toon face. How, then, did we get "the same identities in the toon domain"? What does
#   notebook 06 have to do instead?

# %%
# Checks run by CI
MAX_LANDMARK_PX = 3.0      # at 64 px
# priors: shapes, truncation limits, light direction matches the prior
assert coeffs.shape == (N_PRIOR, 257) and torch.isfinite(coeffs).all()
for k, name in enumerate(("pitch", "yaw", "roll")):
    assert angles_deg[:, k].abs().max() <= priors.POSE_DEG[name][1] + 1e-3
assert abs(elevation.mean().item() - priors.LIGHT_ELEVATION_DEG[0]) < 3
assert abs(azimuth.mean().item() - priors.LIGHT_AZIMUTH_DEG[0]) < 5
assert torch.equal(sample_coeffs(N_PRIOR, seed=SEED), coeffs)   # deterministic in seed
# domains: shape, range, human != toon, flat toon backgrounds (top-left corner)
for im in (human, toon):
    assert im.shape == (8, 3, 64, 64) and im.min() >= -1 and im.max() <= 1
assert (human - toon).abs().mean() > 0.05
assert toon[:, :, :4, :4].flatten(2).std(2).max() < 1e-3                 # flat toon backgrounds ...
assert human[:, :, :16, :16].flatten(2).std(2).mean(1).median() > 0.01    # ... human ones are gradients
# dataset: round trip and ground truth
assert len(ds) == N_DATA and ds.images.dtype == torch.uint8 and torch.equal(ds.coeffs[:len(shard0)], shard0)
# generator
assert all(s.shape == (N_SAMPLES, 3, 64, 64) and torch.isfinite(s).all() for s in samples.values())
assert samples[1.0].std(0).mean() > samples[0.7].std(0).mean()     # truncation reduces variety
# reconstruction network on fresh renders
assert ev["landmark_px"] < MAX_LANDMARK_PX, ev["landmark_px"]
guess_deg = {name: (ang[:, k] - ang[:, k].mean()).abs().mean().item()
             for k, name in enumerate(("pitch", "yaw", "roll"))}
assert ev["angle_deg_yaw"] < 0.4 * guess_deg["yaw"]
assert ev["angle_deg_pitch"] < 0.8 * guess_deg["pitch"] and ev["angle_deg_roll"] < 0.8 * guess_deg["roll"]
assert light_err["azimuth"][0] < 0.9 * light_err["azimuth"][1]
# on generator samples: the fit explains its own image better than another one
assert math.isfinite(photo_all) and photo_fit < photo_other
# manifest: hashes, metrics
for name in ("mini/generator", "mini/recon"):
    e = cddfm3d.assets.entry(name)
    assert len(e["sha256"]) == 64 and cddfm3d.assets.sha256_file(cddfm3d.assets.path(name)) == e["sha256"]
    assert e["command"].strip()
for key in ("fd_recon_features", "fd_floor_renders_vs_renders"):
    assert isinstance(m[key], (int, float)) and math.isfinite(m[key]) and m[key] >= 0, key
assert m["fd_floor_renders_vs_renders"] > 0
assert integrity_error is not None and "sha256" in integrity_error
tmp.cleanup()
print("all checks passed")
