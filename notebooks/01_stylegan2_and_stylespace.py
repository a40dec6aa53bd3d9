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
# # 01 · StyleGAN2 and StyleSpace
#
# **Goals.** After this notebook you can
# - follow a latent through StyleGAN2: **Z → W → W+ → S**;
# - read the StyleSpace layer table (which layer, how many channels, which W+ entry feeds it, tRGB or not);
# - compute per-channel statistics of S and edit a single channel in units of its standard deviation;
# - check that rendering from W and rendering from S are the *same* computation.
#
# **Runtime.** About 10 seconds in FAST mode and 20 seconds in full mode, measured on one thread of a 2-core
# machine that other jobs kept busy; no GPU needed.
#
# Everything here calls `cddfm3d.stylegan2`; the notebook defines no part of the method.

# %% tags=["parameters"]
WORLD = "mini"   # "real" would load a user-supplied FFHQ StyleGAN2 (see notebook 00)
FAST = None      # None: decided by cddfm3d.fast_mode() (on in CI)
SEED = 0
DEVICE = None    # None: CUDA when available, else CPU

# %%
import math

import matplotlib.pyplot as plt
import torch
from IPython.display import display

import cddfm3d
from cddfm3d import viz
from cddfm3d.stylegan2 import (
    Generator,
    channel_sensitivity,
    edit_channel,
    flatten_styles,
    layer_table,
    style_stats,
    top_channels,
    unflatten_styles,
)

FAST = cddfm3d.fast_mode() if FAST is None else FAST
DEVICE = cddfm3d.device(DEVICE)
cddfm3d.setup_notebook(SEED)   # seeds, plotly renderer, CPU threads for interactive work
print("FAST:", FAST, "| device:", DEVICE, "| CPU threads:", torch.get_num_threads())

# %% [markdown]
# ## The generator
#
# We use the shipped mini-world generator (notebook 00): a StyleGAN2 with the full architecture (mapping MLP,
# modulated convolutions, noise inputs, skip ToRGB), 64 px with narrow layers, trained on the mini world's
# human-domain face renders. `cddfm3d.assets.load` checks the file against the asset manifest and returns it in
# eval mode without gradients. With `WORLD = "real"` the same line loads your FFHQ StyleGAN2 instead (see notebook
# 00, section 7); everything below is then the same computation at 1024 px.

# %%
G = cddfm3d.assets.load("real/generator" if WORLD == "real" else "mini/generator", DEVICE)
print(f"{G.resolution} px, z_dim {G.z_dim}, w_dim {G.w_dim}, {G.num_ws} W+ entries, "
      f"{len(G.style_layers)} style layers, {G.style_dim} StyleSpace dims")
print(f"{sum(p.numel() for p in G.parameters()):,} parameters")

# %% [markdown]
# ## Z → W → W+ → S
#
# 1. **Z**: a Gaussian vector `z`.
# 2. **W**: the mapping MLP turns `z` into `w` (after normalising `z`); truncation pulls `w` toward the average
#    `G.w_avg`: `w' = w_avg + ψ (w − w_avg)`.
# 3. **W+**: one `w` per synthesis input, `[B, num_ws, w_dim]`. Sampling broadcasts one `w`; style mixing and
#    inversion use different ones.
# 4. **S (StyleSpace)**: every modulated layer (3×3 convs *and* ToRGB 1×1 convs) has its own affine map
#    `A_l`; `s_l = A_l(w_{i(l)})` scales the layer's input channels. S is the list of these outputs.

# %%
z = torch.randn(4, G.z_dim, device=DEVICE)
w = G.mapping(z)                                   # [4, w_dim]
w_trunc = G.mapping(z, truncation_psi=0.7)         # pulled toward w_avg
ws = w.unsqueeze(1).repeat(1, G.num_ws, 1)         # W+: [4, num_ws, w_dim]
styles = G.w_to_styles(ws)                         # S: list of [4, C_l]
print("z", tuple(z.shape), "-> w", tuple(w.shape), "-> W+", tuple(ws.shape))
print("S:", len(styles), "tensors, first shapes", [tuple(s.shape) for s in styles[:5]], "...")
print("distance to w_avg: psi=1", (w - G.w_avg).norm(dim=1).mean().item(),
      " psi=0.7", (w_trunc - G.w_avg).norm(dim=1).mean().item())


# %% [markdown]
# ## The layer table
#
# Order: 4×4 conv, 4×4 tRGB, then per block: up-conv, conv, tRGB. A layer's style dimension is its **input**
# channel count. Each tRGB shares its W+ entry with the next block's up-conv, which is why S is finer than W+.

# %%
display(viz.table(layer_table(G), ["layer", "name", "channels", "resolution", "w_index", "offset", "is_torgb"]))

# %% [markdown]
# For reference, the same table for the FFHQ configuration (1024 px, config-f): 26 layers, 9088 dimensions,
# 6048 of them in conv layers. Building the architecture takes a second; no weights are needed.

# %%
G1024 = Generator(1024)
conv_dims = sum(m.channels for m in G1024.style_layers if not m.is_torgb)
print(len(G1024.style_layers), "layers,", G1024.style_dim, "dims,", conv_dims, "without tRGB")
print("paper channel id '9_409' ->", G1024.style_layers[9].name, "channel 409, flat index", G1024.style_index(9, 409))
assert (len(G1024.style_layers), G1024.style_dim, conv_dims) == (26, 9088, 6048)
del G1024

# %% [markdown]
# ## Per-channel statistics
#
# Edits in StyleSpace are measured in units of a channel's standard deviation over random samples.
# `style_stats` samples `z`, maps it, converts to S and accumulates mean and std per channel (in float64).

# %%
N_STATS = 1000 if FAST else 10000
stats = style_stats(G, n=N_STATS, seed=SEED)
fig, ax = plt.subplots(1, 2, figsize=(10, 3))
ax[0].plot(stats.flat_mean().cpu(), lw=0.5)
ax[0].set_title("mean of each S channel")
ax[1].plot(stats.flat_std().cpu(), lw=0.5)
ax[1].set_title("std of each S channel")
for a in ax:
    for m in G.style_layers:
        a.axvline(m.offset, color="r" if m.is_torgb else "0.8", lw=0.5)
    a.set_xlabel("flat S index (red: start of a tRGB layer)")
plt.show()

# %% [markdown]
# ## Which channels matter? Single-channel edits
#
# `channel_sensitivity` estimates, for every channel, how much the image changes (RMS over pixels) per 1 std of that
# channel, from random projections of the Jacobian. We edit the most effective conv channels by
# −10 … +10 std — one channel at a time, everything else fixed.

# %%
sens = channel_sensitivity(G, n=8, probes=2, seed=SEED, stats=stats)
chosen = top_channels(sens, G.style_layers, k=4)
for layer, c, v in chosen:
    print(f"layer {layer:2d} ({G.style_layers[layer].name}), channel {c:3d}: {v:.4f} RMS change per std")
alphas = [-10, -5, 0, 5, 10]
with torch.no_grad():
    base = G.w_to_styles(G.mapping(torch.randn(1, G.z_dim, device=DEVICE), truncation_psi=0.7))
    rows = [G.synthesis_from_styles(edit_channel(base, layer, c, a, stats), noise="const")
            for layer, c, _ in chosen for a in alphas]
viz.show(torch.cat(rows), nrow=len(alphas), scale=2)

# %% [markdown]
# ## W path = S path
#
# `G.synthesis(ws)` is *implemented* as `G.synthesis_from_styles(G.w_to_styles(ws))`, so both give bit-identical
# images for the same noise. Flattening S into one vector and back is lossless too.

# %%
noise = G.make_noise("random", batch_size=4)
with torch.no_grad():
    img_w = G.synthesis(ws, noise=noise)
    img_s = G.synthesis_from_styles(unflatten_styles(flatten_styles(styles), G.style_layers), noise=noise)
print("max |W path - S path| =", (img_w - img_s).abs().max().item())
viz.show(img_w, nrow=4, scale=2)

# %% [markdown]
# ## Check your understanding
#
# - Why does a 1024 px generator have 18 W+ entries but 26 style layers?
# - Why are tRGB channels usually excluded when searching for semantic channels?
# - What would change in this notebook with the FFHQ generator (`WORLD = "real"`)? (Only the generator line — and
#   the run time.)

# %%
# Checks run by CI
assert torch.equal(img_w, img_s)
assert len(G.style_layers) == 3 * int(math.log2(G.resolution)) - 4
assert all(G.style_layers[i].w_index == G.style_layers[i + 1].w_index
           for i in range(len(G.style_layers) - 1) if G.style_layers[i].is_torgb)
assert (torch.cat(rows[:5]) - rows[2]).abs().amax(dim=(1, 2, 3)).gt(0).sum() == 4   # only alpha=0 is unchanged
assert stats.flat_std().min() > 0
print("all checks passed")
