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
# # 08 · The face editor
#
# **Goals.** After this notebook you can
# - edit a generated face with sliders: four shape, four expression and four albedo coefficients, pitch / yaw /
#   roll in degrees, and the light as four controls a person understands (ambient level, azimuth, elevation,
#   strength);
# - say what happens between a slider and the picture: the sliders set **target 3DMM coefficients** P_t, the
#   attribute predictor T gives the source's coefficients P_s = T(s), and each attribute's editing network F^i turns
#   P_t − P_s into a change of the styles on its own layers, which the generator decodes with the source's noise;
# - script a sequence of edits, render the 3DMM coefficients each edit was asked to reach, and save the edit as a
#   clip (GIF or MP4).
#
# **Runtime.** Under a minute on one thread of a 2-core machine (the projection of §6: about 2 s in FAST mode, 22 s
# otherwise). No GPU needed.
#
# **Standalone.** `python -m cddfm3d editor` serves this notebook with Voilà as a page without code cells, for
# people who only want to edit faces.
#
# Everything here calls `cddfm3d.ui` and `cddfm3d.editing` (the shipped mini world's G, T, layer sets and F^i); the
# notebook defines no part of the method.

# %% tags=["parameters"]
FAST = None      # None: decided by cddfm3d.fast_mode() (on in CI)
SEED = 3         # the generated face the editor opens with
DEVICE = None    # None: CUDA when available, else CPU

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Image, Markdown, display

import cddfm3d
from cddfm3d.editing import ATTRIBUTE_SLICES, ATTRIBUTES, FaceEditor
from cddfm3d.face3d.measures import attribute_distance
from cddfm3d.images import from_uint8
from cddfm3d.ui import Editor, EditorModel
from cddfm3d.world import mini_model

FAST = cddfm3d.fast_mode() if FAST is None else FAST
DEVICE = cddfm3d.device(DEVICE)
cddfm3d.setup_notebook(SEED)
m = EditorModel.from_assets("mini", device=DEVICE, threads=1)   # one thread: stays smooth when the other core is busy
m.load_sample(SEED)
print("FAST:", FAST, "| device:", DEVICE, "| CPU threads:", torch.get_num_threads())

# %% [markdown]
# ## 1. The editor
#
# Move a slider: the picture shows the source, the edit and the 3DMM render of the coefficients the edit was asked
# to reach. Each slider change runs only the editing network of its attribute (and those after it that are in
# use) and the generator; T(s) and the noise are computed once per face. The readout under the picture gives the
# latency of the last change.
#
# **Load image** edits a picture you bring: upload a PNG or JPEG face (a render, a toon or a sketch), pick its
# domain and press **Project**. The image is projected into that domain's generator (the message line counts the
# steps, about 22 s on one CPU core), then the sliders start at T of the projected styles and edit it like any face.

# %%
editor = Editor(m)
display(editor.widget)

# %% [markdown]
# ## 2. How the pieces connect
#
# ```
#  seed ─► z ─► G.mapping ─► w ─► styles s ─► T ─► P_s (257 coefficients)
#                                   │                 │
#                                   │        sliders ─┴─► P_t   (targets of one or several attributes)
#                                   ▼
#              s_g = F^light(… F^shape(s, P_t^shape − P_s^shape) …, P_t^light − P_s^light)
#                                   ▼
#                    G.synthesis_from_styles(s_g, noise of the source)  ─►  edited image
# ```
#
# Each F^i writes only on its attribute's reduced StyleSpace S^i (notebook 03's layer sets), so an attribute
# whose sliders sit at the source's values is not touched at all: resetting every slider gives back the source
# image bit for bit. The controls and their units:

# %%
rows = [f"| {c.attribute} | {c.index} | {c.label} | {c.minimum:g} … {c.maximum:g} | {c.unit} | "
        f"{m.source_value(c.attribute, c.index):+.2f} |" for c in m.controls]
display(Markdown("| attribute | index | control | range | unit | this face |\n|---|---|---|---|---|---|\n"
                 + "\n".join(rows)))

# %% [markdown]
# Shape, expression and albedo sliders are the first four PCA coefficients of the 3DMM in units of the mini
# world's prior standard deviation (±3 spans nearly every face the prior draws). Pose is in degrees. The light
# sliders are the parameters of one white directional light plus ambient
# (`cddfm3d.face3d.lighting.directional_light`); the editor reads the source's four values off T(s) and adds the
# change of the directional light to the source's SH coefficients, so its tint and second-order terms stay.
#
# ## 3. A scripted sequence of edits
#
# The same calls, driven by code, on a second model of the same face (the live editor above keeps your edits):
# each column adds one edit to the previous ones. Under each edit, the 3DMM render of the coefficients it was asked
# to reach.

# %%
script = EditorModel.from_assets("mini", device=DEVICE, threads=1)
script.load_sample(SEED)
steps = [("source", None), ("yaw +25°", ("pose", 1, script.source_value("pose", 1) + 25)),
         ("expression[0] +2", ("expression", 0, script.source_value("expression", 0) + 2)),
         ("shape[0] −2", ("shape", 0, script.source_value("shape", 0) - 2)),
         ("albedo[0] +2", ("albedo", 0, script.source_value("albedo", 0) + 2)),
         ("light azimuth −60°", ("light", 1, script.source_value("light", 1) - 60))]
script.reset()
frames, renders, coeffs = [], [], []
for _label, change in steps:
    if change is not None:
        script.set(*change)
    frames.append(script.image.copy())
    renders.append(script.render.copy())
    coeffs.append(script.coeffs.copy())
fig, axes = plt.subplots(2, len(steps), figsize=(2.0 * len(steps), 4.3))
for j, (label, _) in enumerate(steps):
    axes[0, j].imshow(frames[j], interpolation="nearest")
    axes[0, j].set_title(label, fontsize=9)
    axes[1, j].imshow(renders[j], interpolation="nearest")
for ax in axes.flat:
    ax.set_axis_off()
axes[1, 0].set_title("3DMM render of the targets", fontsize=8, loc="left")
plt.tight_layout()
plt.show()
print("latency of these changes (ms):", np.round(list(script.latencies_ms)[-(len(steps) - 1):], 1))

# %% [markdown]
# ## 4. Do the sliders do what they say? Read back by the reconstruction network
#
# The editor trusts the networks it was given; here the shipped reconstruction network reads each edited image
# back (it never sees T or the sliders), and each step's change is measured with the evaluation's distances
# (vertex space for shape and expression, colour space for albedo, degrees for pose, shading space for light),
# divided by the mean distance between two random faces. The edited attribute should move most.

# %%
recon = cddfm3d.assets.load("mini/recon", DEVICE).eval()
fm = mini_model(DEVICE)
with torch.no_grad():
    read = recon(from_uint8(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)).to(DEVICE)).double()
faces = FaceEditor.load("mini", DEVICE)           # random faces: the unit of each attribute's distance
seeds = [100 + k for k in range(8 if FAST else 32)]
with torch.no_grad():
    pool = recon(from_uint8(faces.synthesize(torch.cat([faces.styles_from_seed(k) for k in seeds]), seeds))).double()
scale = {}
for a in ATTRIBUTES:
    d = attribute_distance(fm, pool[:, None].expand(-1, len(pool), -1).reshape(-1, 257),
                           pool[None].expand(len(pool), -1, -1).reshape(-1, 257), a)
    scale[a] = float(d.sum() / (len(pool) * (len(pool) - 1)))
moved = np.zeros((len(steps) - 1, len(ATTRIBUTES)))
for j in range(1, len(steps)):
    for k, a in enumerate(ATTRIBUTES):
        moved[j - 1, k] = float(attribute_distance(fm, read[j - 1:j], read[j:j + 1], a)) / scale[a]
fig, ax = plt.subplots(figsize=(5.5, 3.2))
im = ax.imshow(moved, cmap="magma")
ax.set_xticks(range(len(ATTRIBUTES)), ATTRIBUTES, fontsize=8)
ax.set_yticks(range(len(steps) - 1), [s[0] for s in steps[1:]], fontsize=8)
for (i, k), v in np.ndenumerate(moved):
    ax.text(k, i, f"{v:.2f}", ha="center", va="center", color="w" if v < moved.max() / 2 else "k", fontsize=7)
ax.set_title("change of each attribute per step (read by the recon)", fontsize=9)
plt.colorbar(im, ax=ax)
plt.tight_layout()
plt.show()

# %% [markdown]
# The editing networks reach only part of each target (notebook 05 measures the completion: about 0.5–0.75 for the
# shipped mini F^i), and some change leaks into other attributes: the shipped shape network, for one, also moves
# the expression (its layer set shares most layers with expression's, notebook 03). Every slider moves its own
# attribute most as the reconstruction network reads it, but the last albedo coefficient (3) moves the face only a
# little: the mini generator's faces vary little there (notebook 04), so F^i has little to learn from. These are the
# open goals of the editing networks, not of the editor, which passes on exactly what F^i and G give it.
#
# ## 5. A clip of the edit
#
# `save_clip` writes the path from the source to the current edit (every slider moved along together) as a GIF or
# an MP4.

# %%
work = tempfile.TemporaryDirectory(prefix="cddfm3d_nb08_")
clip = script.save_clip(Path(work.name) / "edit.gif", frames=8 if FAST else 24, fps=8)
display(Image(data=clip.read_bytes(), format="gif", width=256))
print(clip.name, clip.stat().st_size, "bytes")

# %% [markdown]
# ## 6. Editing an image of another domain
#
# The editor also edits images it did not generate. `load_image` projects the image into the generator of its
# domain (the StyleGAN2 projector, `cddfm3d.adapt.project`, in W+), and the projection's styles s become the source:
# the sliders start at T(s), edits go through the same F^i, and the domain's generator decodes every edit with the
# projection's noise maps. For a toon or a sketch that generator is `mini/generator_toon` / `mini/generator_sketch`:
# the human generator fine-tuned to the domain with its mapping network and affines frozen (notebook 06), so w → s
# is the human generator's and the human-trained T and F^i read and write its StyleSpace unchanged. The same s
# through the human generator shows the face's human counterpart.

# %%
from cddfm3d.images import to_uint8  # noqa: E402
from cddfm3d.world import render, sample_coeffs  # noqa: E402

DOMAIN = "toon" if "toon" in m.available_domains() else "human"
given = to_uint8(render(sample_coeffs(1, seed=SEED), DOMAIN, size=64, seed=SEED))[0].permute(1, 2, 0).numpy()
cross = EditorModel.from_assets("mini", device=DEVICE, threads=1)
proj = cross.load_image(given, domain=DOMAIN)          # 300 steps, or 30 in FAST mode
projection = cross.source_image.copy()
cross.set("pose", 1, cross.source_value("pose", 1) + 20)
edited = cross.image.copy()
human = cross.generator("human")
with torch.no_grad():
    counterpart = [to_uint8(human.synthesis_from_styles(human.unflatten_styles(s), noise=list(proj.noise)))[0]
                   .permute(1, 2, 0).cpu().numpy() for s in (cross.source_styles, cross.styles)]
tiles = [(f"input ({DOMAIN})", given), (f"projection, {cross.projection_psnr:.1f} dB", projection),
         ("yaw +20°", edited), ("same s, human G", counterpart[0]), ("edit, human G", counterpart[1])]
fig, axes = plt.subplots(1, len(tiles), figsize=(2.1 * len(tiles), 2.5))
for ax, (title, img) in zip(axes, tiles, strict=True):
    ax.imshow(img, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
plt.tight_layout()
plt.show()
print(f"{DOMAIN}: {proj.steps} steps in {proj.seconds:.1f} s; perceptual distance {proj.perceptual}")

# %% [markdown]
# ## Check your understanding
#
# - Why does resetting every slider give back exactly the source image, although F^i(s, 0) need not equal s?
# - The light sliders change the source's SH coefficients by the change of a directional light. What would be lost
#   if they set the SH coefficients of a directional light outright?
# - Which steps of the matrix above leak most, and which layer sets (notebook 03) do those attributes share?
#
# ## Checks run by CI

# %%
import imageio.v3 as iio  # noqa: E402

script.reset()
assert np.array_equal(script.image, script.source_image)   # reset gives the source back bit for bit
size = script.source_image.shape[0]
assert script.image.dtype == np.uint8 and script.image.shape == (size, size, 3)
assert script.render.shape == script.image.shape and script.landmarks.shape == (68, 2)
assert len(script.controls) == 4 + 4 + 4 + 3 + 4
for j, (_, change) in enumerate(steps[1:]):
    k = ATTRIBUTES.index(change[0])
    assert moved[j, k] == moved[j].max() or moved[j, k] > 0.3, (change, moved[j])   # the slider's own attribute
yaw = np.degrees(read[:, ATTRIBUTE_SLICES["pose"]][:, 1].cpu().numpy())
assert yaw[1] - yaw[0] > 5, yaw[:2]                                   # yaw +25° reads back as a clear turn
assert len(iio.imread(clip, index=None)) == (8 if FAST else 24)
cross.reset()
assert np.array_equal(cross.image, projection)             # reset gives the projection back bit for bit
assert cross.domain == DOMAIN and cross.noise_seed is None and np.array_equal(cross.input_image, given)
assert not np.array_equal(edited, projection)
assert cross.projection_psnr > 15, cross.projection_psnr
work.cleanup()
print("all checks passed")
