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
# # 07 · Inversion and PIE: embedding a face so that its edits behave
#
# **Goals.** After this notebook you can
# - embed an image into the generator two ways — plain projection (Image2StyleGAN-style, `cddfm3d.adapt.project`)
#   and PIE (Tewari et al. 2020, `cddfm3d.adapt.pie_embed`) — and compare them on a held-out render whose true
#   3DMM coefficients are known;
# - name PIE's five energies, say what each measures, and read their history over the W and then the W+ stage;
# - edit both embeddings with the FaceEditor's F^i (pose, expression, light) and score the edits against the
#   truth with a reconstruction network that neither method optimised with;
# - take a photograph through the real-photo front end (`cddfm3d.photo`): detection, 68 landmarks, Deep3D's
#   alignment, the 3DMM fit, the embedding, the dlib identity distance, and edits — and say why the mini
#   generator cannot embed a real face faithfully.
#
# **Runtime.** About 1.5 minutes in FAST mode on one thread of a 2-core machine: 4 held-out renders and 80
# optimisation steps per embedding, where both methods default to 300 steps; full
# mode embeds 16 renders with 300 steps each (about 15 minutes). No GPU needed.
#
# **What is live and what is shipped.** Every embedding, fit and score is computed here. The networks are the
# shipped mini world's: the generator, T and the five F^i, the reconstruction network R (`mini/recon`, which PIE
# reads the images with) and an independent one (`mini/recon_independent`, used only to score). The photo front end
# uses dlib and the model files of `face-recognition-models` (the `photo` extra); nothing is downloaded.

# %% tags=["parameters"]
FAST = None      # None: decided by cddfm3d.fast_mode() (on in CI)
SEED = 0
DEVICE = None    # None: CUDA when available, else CPU
WORLD = "mini"   # the held-out renders need the mini world's ground truth; see section 4 for a real generator

# %%
import math
import os
import time

import matplotlib.pyplot as plt
import numpy as np
import skimage
import torch
from IPython.display import Markdown, display

import cddfm3d
from cddfm3d import assets, photo, viz
from cddfm3d.adapt import CrossDomainEditor, cross_domain_table, evaluate_cross_domain, pie_embed, project
from cddfm3d.adapt.pie import DEFAULT_WEIGHTS, ENERGIES, PIEEnergies, recon_reader
from cddfm3d.editing import FaceEditor
from cddfm3d.editing.pairs import noise_for
from cddfm3d.face3d import draw_landmarks
from cddfm3d.face3d.viz import reconstruction_rows
from cddfm3d.ui.image_input import to_resolution
from cddfm3d.world import mini_model, render, sample_coeffs

FAST = cddfm3d.fast_mode() if FAST is None else FAST
DEVICE = cddfm3d.device(DEVICE)
cddfm3d.setup_notebook(SEED)
print("FAST:", FAST, "| device:", DEVICE, "| CPU threads:", torch.get_num_threads())
if WORLD != "mini":
    raise ValueError(f"WORLD must be 'mini' for this notebook, found {WORLD!r}: its comparisons need renders with "
                     f"known coefficients, which only the mini world has (section 4 says what a real generator needs)")

editor = FaceEditor.load("mini", DEVICE)          # G, T and the five F^i
G = editor.G
recon = assets.load("mini/recon", DEVICE).eval()  # R: what PIE reads images with
judge = assets.load("mini/recon_independent", DEVICE).eval()   # scores edits; neither method sees it
model = mini_model(DEVICE)
read = recon_reader(recon)
xd = CrossDomainEditor(editor, G)                 # the human generator as its own "domain": invert, T, F^i, decode


def decode(styles, noise):
    """G's image [B, 3, 64, 64] in [-1, 1] of flat styles with the embedding's noise maps (on the CPU)."""
    return xd.decode(G, styles.to(DEVICE), noise).cpu()


# %% [markdown]
# ## 1. Plain projection vs PIE on held-out renders
#
# The targets are renders of the mini world (`cddfm3d.world.render`) of coefficients drawn from its priors: the
# generator never produced them, and their true coefficients are known. Both methods start from the mean w and
# share the projector's machinery (perceptual + pixel loss, Adam with the StyleGAN2 learning-rate ramp, decaying
# latent noise, optimised noise maps):
#
# - **projection** optimises only the reconstruction, in W+ (one w per layer; Image2StyleGAN);
# - **PIE** adds four energies that look at what happens when the embedding is *edited* (section 2) and optimises
#   in W first (one w for all layers, 2/3 of the steps) and then in W+ from there.

# %%
N = 4 if FAST else 16
STEPS = 80 if FAST else 300
truth = sample_coeffs(N, seed=SEED + 2024)
images = render(truth, "human", G.resolution, seed=SEED + 2024).float().to(DEVICE)

proj = project(G, images, space="w+", steps=STEPS, seed=SEED, progress=False)
pie = pie_embed(G, images, steps=STEPS, editor=editor, recon=recon, model=model, seed=SEED, progress=False)
with torch.no_grad():
    w_stage = decode(G.flatten_styles(G.w_to_styles(pie.w_ws)), pie.noise)

display(viz.table([{"method": name, "steps": r.steps, "s / image": r.seconds / N, "PSNR dB": float(r.psnr.mean()),
                    "perceptual": float(r.perceptual_distance.mean()), "MSE": float(r.mse.mean())}
                   for name, r in (("projection W+", proj), ("PIE (W, then W+)", pie))], floatfmt="{:.3f}"))
print("perceptual distance:", proj.perceptual, "| PIE's default weights:", DEFAULT_WEIGHTS)
K = min(N, 8)
display(Markdown(f"For {K} of the {N} renders, rows: held-out render (target); projection W+; PIE; PIE's W-stage "
                 f"latent (decoded with the final noise maps)."))
viz.show(torch.cat([x[:K].cpu() for x in (images, proj.image, pie.image, w_stage)]), nrow=K, scale=2)

# %% [markdown]
# **Reading.** Both reconstruct the renders closely; PIE pays a little reconstruction (about 2 dB of PSNR) for its
# other energies and for spending two thirds of its steps in W, which cannot fit as freely as W+. The W-stage row
# shows how much W alone already gets.

# %% [markdown]
# ## 2. The energies one by one
#
# `pie_embed` minimises, per image I and over the latent and the noise maps, a weighted sum of (the weights are
# `cddfm3d.adapt.pie.DEFAULT_WEIGHTS`; 0 switches a term off and skips its work):
#
# - **`synth`** — the embedding draws I: perceptual distance + MSE of G(s) against I (the projector's loss).
# - **`identity`** — the embedding is a fixed point of the rig: F^i(s, ΔP = 0) − s on F^i's own layers, divided
#   per dimension by the style spread F^i was trained with, squared; mean over pose, expression and light.
# - **`edit`** — an edit toward another face's attribute reaches it: s_e = F^i(s, P_v^i − T(s)^i) for a pool face
#   v; R reads G(s_e); the distance of attribute i to v's, as a fraction of the distance between two random faces.
# - **`invariance`** — that edit leaves the rest of I alone: R's reading of G(s_e) against R(I) on the four other
#   attributes, same units.
# - **`recognition`** — the embedding and its edit are the same person as I: R's shape and albedo of G(s) and of
#   G(s_e) against R(I) (dlib's descriptor, used for photographs below, is not differentiable).
#
# Each step edits one attribute, cycling pose → expression → light, toward pool face (step + seed) mod 16 of a
# fixed pool of 16 generated faces. `pie.energies` holds the unweighted per-step values [steps, B];
# `pie.history` the weighted ones and the projector's parts.

# %%
stage_w = pie.stages[0][1]
names = [k for k in ENERGIES if k in pie.energies]
fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8))
steps_axis = np.arange(pie.steps)
for ax, k in zip(axes, names, strict=True):
    e = pie.energies[k].mean(1).numpy()
    ax.plot(steps_axis, e, color="C0", lw=0.8, alpha=0.5 if k in ("edit", "invariance", "recognition") else 1,
            label="PIE")
    if k in ("edit", "invariance", "recognition"):     # one attribute per step: a mean over each pose/exp/light cycle
        ax.plot(steps_axis[1:-1], np.convolve(e, np.ones(3) / 3, mode="valid"), color="C0", lw=1.6)
    if k == "synth":
        ax.plot(steps_axis, (proj.history["perceptual"] + proj.history["mse"]).mean(1).numpy(), color="C1",
                lw=1.2, label="projection W+")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.axvline(stage_w - 0.5, color="gray", ls="--", lw=0.8)
    ax.set_title(f"{k} (weight {pie.weights[k]:g})", fontsize=9)
    ax.set_xlabel("step (W | W+)", fontsize=8)
plt.tight_layout()
plt.show()

display(viz.table([{"energy": k, "weight": pie.weights[k], "first step": float(pie.energies[k][0].mean()),
                    "end of W stage": float(pie.energies[k][stage_w - 3:stage_w].mean()),
                    "last 3 steps": float(pie.energies[k][-3:].mean()),
                    "weighted, last 3 steps": pie.weights[k] * float(pie.energies[k][-3:].mean())}
                   for k in names], floatfmt="{:.4f}"))
print("stages:", pie.stages)

# %% [markdown]
# **Reading.** `synth` falls several-fold, more slowly than the projection's (orange): W fits less freely than W+,
# and the other energies pull. At the dashed line the W+ stage starts with its own learning-rate ramp and latent
# noise (hence the jump) and then brings `synth` down further. The edit energy starts low (the mean face is easy to
# edit) and *grows* as the embedding becomes a particular face: it need not reach zero, it has to stay lower than
# for an embedding that ignores it (section 3). `invariance` and `recognition` fall with `synth`: reconstructing
# the face also brings its re-read attributes toward the input's. `identity` is small in its own units (the
# shipped F^i leave a face almost unchanged when asked for no change); its weight brings it to the size of the
# others (the last column).
#
# The W stage leaves one w in every layer; the W+ stage then lets the layers differ:

# %%
w_spread = float((pie.w_ws - pie.w_ws[:, :1]).abs().amax())
wplus_spread = float((pie.ws - pie.ws[:, :1]).abs().amax())
print(f"largest difference between layers' w: after the W stage {w_spread:.2e}, after the W+ stage "
      f"{wplus_spread:.3f}")

# %% [markdown]
# ## 3. Editing the two embeddings side by side
#
# The same edits through the FaceEditor (`editor.edit(s, edits)`: P_s = T(s), then F^i(s, P_t^i − P_s^i)),
# decoded with each embedding's noise maps: yaw ∓20°, the most varied expression coefficient ∓2 spreads, and a
# light from the left and from the right (`editor.sweep`). Because the targets are renders, the row "truth" can
# show what a perfect edit would look like: the **true** coefficients with the same change, rendered.

# %%
EDITS, LABELS = [], []
for attr in ("pose", "expression", "light"):
    labels, edits = editor.sweep(attr, steps=(-2, 2))
    LABELS += labels
    EDITS += edits
print("columns: target/embedding |", " | ".join(LABELS))


def edit_row(r, k):
    """The embedding r's image k and its edits (one per EDITS), [1 + len(EDITS), 3, 64, 64]."""
    s = r.styles[k:k + 1]
    noise = [n[k:k + 1] for n in r.noise]
    return torch.cat([decode(s, noise)] + [decode(editor.edit(s, e), noise) for e in EDITS])


def truth_row(k):
    """Render k and the renders of its true coefficients with each edit applied. The whole batch is rendered with
    row k replaced, so that row k keeps its background and random stream (they depend on the batch)."""
    P = truth[k:k + 1].to(DEVICE)
    out = [images[k:k + 1].cpu()]
    for e in EDITS:
        batch = truth.clone()
        batch[k] = editor.target_coeffs(proj.styles[k:k + 1], e, P_s=P)[0].cpu().to(truth.dtype)
        out.append(render(batch, "human", G.resolution, seed=SEED + 2024)[k:k + 1])
    return torch.cat(out)


SHOW = min(2, N)
rows = []
for k in range(SHOW):
    rows += [truth_row(k), edit_row(proj, k), edit_row(pie, k)]
display(Markdown(f"For {SHOW} renders, rows: the truth edited; the projection's edits; PIE's edits. Columns: "
                 f"unedited, then {', '.join(LABELS)}."))
viz.show(torch.cat(rows), nrow=1 + len(EDITS), scale=2)

# %% [markdown]
# **Measured on fresh pool faces.** PIE optimised its edit energies against a pool of 16 generated faces (pool
# seed 0). Here both embeddings are scored by the same energies, unweighted, on **another** pool (seed 99), every
# image edited toward each of its 16 faces for each of pose, expression and light (48 edits per image): a check
# that PIE learnt an embedding that edits well, not one that fits its training pool.

# %%
held_out = PIEEnergies(editor, read, model, images, {"identity": 1.0, "edit": 1.0, "invariance": 1.0},
                       seeds=proj.seeds, pool_size=16, pool_seed=99)


def pool_scores(r, passes=48):
    held_out.step = 0
    acc = {}
    with torch.no_grad():
        for _ in range(passes):
            for k, v in held_out.energies(r.styles, r.image, r.noise).items():
                acc[k] = acc.get(k, 0) + v.cpu() / passes
    return acc


scores = {"projection W+": pool_scores(proj), "PIE": pool_scores(pie)}
display(viz.table([{"embedding": name, **{k: float(v.mean()) for k, v in sc.items()},
                    "edit + invariance": float((sc["edit"] + sc["invariance"]).mean())}
                   for name, sc in scores.items()], floatfmt="{:.4f}"))

# %% [markdown]
# **Scored against the truth.** `evaluate_cross_domain` (notebook 06) with the generator as its own domain: each
# embedding gets another render's **true** pose, expression or light (a swap edit through T and F^i), and the
# edited image is read by `mini/recon_independent`. **completion**: 1 = the edited image shows the target (from the
# embedding's own reading; "vs truth" from the true source); **leakage**: how far the other attributes moved,
# relative to two random faces (0 = not at all). "T(s) EV (mean)": how much of the renders' true coefficients T
# reads from the embedding (explained variance averaged over the five attributes; 1 = all of it).

# %%
ATTRS = ("pose", "expression", "light")
evs = {name: evaluate_cross_domain(xd, judge, model, images, truth.to(DEVICE), attributes=ATTRS,
                                   projections=[r], seed=SEED)
       for name, r in (("projection W+", proj), ("PIE", pie))}
display(Markdown(cross_domain_table({f"{name}, {STEPS} steps, {N} renders": ev for name, ev in evs.items()})))
display(viz.table([{"embedding": name, **{f"{a} completion": ev["edits"][a]["completion"] for a in ATTRS},
                    **{f"{a} leakage": ev["edits"][a]["leakage_mean"] for a in ATTRS}}
                   for name, ev in evs.items()], floatfmt="{:.3f}"))

# %% [markdown]
# **Reading.** With only a few renders (FAST mode: 4) the completions are noisy — one pair of faces more or less
# moves them by 0.1 or more — so read the direction, not the decimals. The full comparison, 16 renders and 300
# steps with each energy ablated in turn, is `benchmarks/bench_pie.py` (its table: the PIE section of
# `benchmarks/README.md`). In this run PIE's pose and light edits complete further than the projection's, at a
# similar leakage. Expression edits fail for both (negative completion, leakage near 1): the targets are other
# renders' true expressions, drawn from the world prior, while the shipped generator's faces vary in expression
# only about a quarter as much as the prior (`benchmarks/README.md`, "Editing", prior targets), so F^expression is
# asked for faces the generator cannot draw.

# %% [markdown]
# ## 4. A photograph
#
# scikit-image ships `astronaut.png`, NASA's public-domain portrait of Eileen Collins. `cddfm3d.photo` takes it
# from file to 3DMM coefficients; each step is one call.
#
# **Detection and 68 landmarks.** dlib's HOG face detector and its 68-point shape predictor (`detect_faces`:
# every face, largest first; `find_face`: the one to use). The 5 points Deep3D aligns with (eye centres, nose tip,
# mouth corners) are taken from the 68.

# %%
ASTRONAUT = os.path.join(os.path.dirname(skimage.__file__), "data", "astronaut.png")
t0 = time.perf_counter()
faces = photo.detect_faces(ASTRONAUT)
t_detect = time.perf_counter() - t0
image, face = photo.find_face(ASTRONAUT)
print(f"{len(faces)} face(s) in {image.shape[1]}x{image.shape[0]} px ({t_detect:.2f} s); box {face.box.tolist()}, "
      f"score {face.score:.2f}")

aligned = photo.align_photo(ASTRONAUT, size=128)      # Deep3D's alignment: the crop framed like a world render
fig, ax = plt.subplots(1, 2, figsize=(9, 4.5))
draw_landmarks(face.landmarks, image=image / 255.0, ax=ax[0], size=4, title="detection, 68 landmarks, 5 points")
x0, y0, x1, y1 = face.box
ax[0].add_patch(plt.Rectangle((x0, y0), x1 - x0 + 1, y1 - y0 + 1, fill=False, color="yellow", lw=1))
ax[0].scatter(*face.landmarks5.T, s=30, c="red", marker="x", zorder=4)
draw_landmarks(aligned.landmarks, image=aligned.crop / 255.0, ax=ax[1], size=6,
               title=f"Deep3D alignment: {aligned.size} px crop")
plt.tight_layout()
plt.show()

# %% [markdown]
# **The 3DMM fit.** `photo_to_coefficients` runs the same alignment and fits MiniFace (the mini world's morphable
# model) to the crop by analysis-by-synthesis: a pose stage on the landmarks, then every coefficient on the
# photometric, landmark and prior losses (`cddfm3d.face3d.fit`). The coefficients are the photo's 3D reading:
# shape, expression, skin tone, pose and light, in the units the editor's sliders use.

# %%
FIT_STEPS = 150 if FAST else photo.DEFAULT_STEPS
fitted = photo.photo_to_coefficients(ASTRONAUT, size=128, steps=FIT_STEPS, device=DEVICE)
crop = aligned.tensor() * 2 - 1                                  # [1, 3, 128, 128] in [-1, 1]
rec = reconstruction_rows(crop.to(DEVICE), fitted.coeffs.to(DEVICE), model)
fig, ax = plt.subplots(1, 3, figsize=(10, 3.6))
ax[0].imshow(aligned.crop)
ax[0].set_title("aligned crop")
ax[1].imshow(((rec["render"][0].cpu().permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy())
ax[1].set_title("fitted MiniFace render")
draw_landmarks(fitted.landmarks, image=aligned.crop / 255.0, ax=ax[2], size=5, color="lime")
draw_landmarks(rec["landmarks"][0].cpu(), ax=ax[2], size=5, color="red", connect=False,
               title="landmarks: dlib (green), fit (red)")
for a in ax:
    a.axis("off")
plt.tight_layout()
plt.show()
yaw, pitch = (math.degrees(float(fitted.coeffs[0, 224 + i])) for i in (1, 0))
print(f"{FIT_STEPS} fit steps in {fitted.seconds:.1f} s; mean landmark error {fitted.lm_px_before:.2f} px (mean "
      f"face, frontal) -> {fitted.lm_px_after:.2f} px; yaw {yaw:+.1f} deg, pitch {pitch:+.1f} deg")

# %% [markdown]
# **The embedding.** The crop reduced to the generator's 64 px (`cddfm3d.ui.image_input.to_resolution`) is
# embedded both ways, with the same code and steps as the renders.

# %%
target = to_resolution(crop, G.resolution).to(DEVICE)
photo_proj = project(G, target, space="w+", steps=STEPS, seed=SEED, progress=False)
photo_pie = pie_embed(G, target, steps=STEPS, editor=editor, recon=recon, model=model, seed=SEED, progress=False)
fit64 = reconstruction_rows(target, fitted.coeffs.to(DEVICE), model)["render"].cpu()
with torch.no_grad():
    photo_w = decode(G.flatten_styles(G.w_to_styles(photo_pie.w_ws)), photo_pie.noise)
display(Markdown("Columns: the photo crop at 64 px; its 3DMM fit (MiniFace render); projection W+; PIE; PIE's "
                 "W-stage latent (final noise maps)."))
viz.show(torch.cat([target.cpu(), fit64, photo_proj.image.cpu(), photo_pie.image.cpu(), photo_w]), nrow=5, scale=3)
for name, r, on_renders in (("projection W+", photo_proj, proj), ("PIE", photo_pie, pie)):
    P = editor.predict(r.styles)
    print(f"{name}: PSNR {float(r.psnr[0]):.1f} dB (renders: {float(on_renders.psnr.mean()):.1f} dB); "
          f"T reads yaw {math.degrees(float(P[0, 225])):+.1f} deg, pitch {math.degrees(float(P[0, 224])):+.1f} deg "
          f"(the photo's fit: {yaw:+.1f}, {pitch:+.1f})")

# %% [markdown]
# **Reading: out of the mini generator's domain.** The mini generator was trained only on renders of MiniFace — a
# low-dimensional synthetic face with smooth shading on a plain background: no hair, no clothes, no photographic
# texture — so none of its faces is this photograph, and the PSNR stays far below that of the renders. The W latent
# (PIE's first stage, last column) stays closer to what the generator draws: a synthetic face outline on a plain
# background, with her smile. W+ has the freedom to leave the generator's faces: the projection paints a blurred
# likeness (hair, smile, background tones) with colour casts and smears that no face of the generator has, and PIE,
# pulled between that and its edit energies, ends in between. Neither is a faithful embedding, and T's reading of
# them (printed above) agrees only roughly with the photo's own 3DMM fit.
#
# The method is not the limit, the generator is. With `WORLD = "real"` — your FFHQ StyleGAN2 (`real/generator`,
# notebook 00) with T and the F^i trained on it — the same calls embed a photograph properly: cut the face out as
# FFHQ's faces were (`photo.align_photo(path, size=1024, framing="ffhq")`), and `pie_embed(G, x, editor=...,
# recon=deep3d, model=bfm)` reads the generator's 1024-px faces through Deep3D's alignment at FFHQ's frontal points
# (`cddfm3d.adapt.pie.recon_reader(recon, "ffhq")`, chosen when the generator's size is not the network's);
# `python -m cddfm3d invert photo.jpg --photo --generator ffhq.pt --method project --out DIR` does the projector's
# half from the shell. No FFHQ weights ship with the package, so this notebook does not run that path (the tests run
# it on random-weight stand-ins at full size).

# %% [markdown]
# **Identity.** dlib's face recognition network maps a face to a 128-D descriptor; two faces closer than 0.6
# (`photo.SAME_PERSON_THRESHOLD`) are the same person by dlib's rule. The descriptor of the face in the full photo
# is the reference. Images of 64 px are too small for the detector, so their descriptors use 68 landmarks given
# directly: the photo's own landmarks mapped into the 64-px crop, and for generated faces the landmarks of R's
# reading. Two baselines frame the numbers: the 64-px crop itself (what the resolution alone costs) and unrelated
# faces of the generator (strangers).

# %%
def lm64(img):
    """The 68 landmarks [68, 2] of R's reading of a 64-px image [1, 3, 64, 64] in [-1, 1]."""
    with torch.no_grad():
        return reconstruction_rows(img.to(DEVICE), read(img.to(DEVICE)), model)["landmarks"][0].cpu().numpy()


def u8(img):
    return viz.to_uint8(img.cpu())[0]


ref = photo.face_descriptor(image, face)
scale = G.resolution / aligned.size
crop_lm64 = (aligned.landmarks + 0.5) * scale - 0.5                   # pixel centres under area reduction
strangers = decode(torch.cat([editor.styles_from_seed(500 + i) for i in range(4)]),
                   noise_for(G, [500 + i for i in range(4)], DEVICE))


def distance_to_photo(img, landmarks=None):
    """dlib descriptor distance between the photo's face and a 64-px image [1, 3, 64, 64] (landmarks: R's)."""
    lm = lm64(img) if landmarks is None else landmarks
    return photo.descriptor_distance(ref, photo.face_descriptor(u8(img), lm))


dist = {"aligned crop at 64 px": distance_to_photo(target, crop_lm64),
        "projection W+": distance_to_photo(photo_proj.image),
        "PIE": distance_to_photo(photo_pie.image),
        "generated strangers (mean of 4)": float(np.mean([distance_to_photo(x[None]) for x in strangers]))}
display(viz.table([{"image": k, "descriptor distance to the photo": v,
                    "same person (< 0.6)": v < photo.SAME_PERSON_THRESHOLD} for k, v in dist.items()],
                  floatfmt="{:.3f}"))

# %% [markdown]
# **Reading.** The photo's own 64-px crop stays the same person to dlib (what the resolution alone costs). The
# embeddings sit near the threshold: in FAST mode (80 steps) both above it, PIE further; with 300 steps the
# projection came under it (0.55 in our full run), PIE stayed above (0.64). That is W+ copying her hair and layout,
# not a faithful face: the generator's unrelated faces are only about 0.8 away. At 64 px and on synthetic faces the
# descriptor separates far less than on photographs, so read these distances as a ranking, not as a verdict.

# %% [markdown]
# **Edits of the photo's embedding.** The same edits as in section 3, on both embeddings of the photo. F^i was
# trained on the generator's own faces; on these off-manifold latents the pose edits still turn the head, and the
# light edits recolour the whole image along with the shading — what "out of domain" means in practice.
# In the slider editor (notebook 08, `python -m cddfm3d editor`) this whole pipeline is one call,
# `EditorModel.load_photo(path)`: the fit, the PIE embedding and the identity distance, then the sliders.

# %%
display(Markdown(f"Rows: projection W+, PIE. Columns: embedding, then {', '.join(LABELS)}."))
viz.show(torch.cat([edit_row(photo_proj, 0), edit_row(photo_pie, 0)]), nrow=1 + len(EDITS), scale=2)

# %% [markdown]
# **No face.** `chelsea.png`, scikit-image's cat: the human face detector finds nothing, and every entry point
# raises `photo.NoFaceError` (a `ValueError`) naming the photo, its size, the detector and what to try.

# %%
CAT = os.path.join(os.path.dirname(skimage.__file__), "data", "chelsea.png")
viz.show(photo.read_photo(CAT)[::2, ::2].copy())
try:
    photo.photo_to_coefficients(CAT)
    no_face = None
except photo.NoFaceError as err:
    no_face = err
    print(f"{type(err).__name__}: {err}")

# %% [markdown]
# ## Check your understanding
#
# - Why does the `edit` energy *rise* during the optimisation, and why is that not a failure?
# - Why is the projection's W+ embedding a fair baseline for PIE's, and what would a W projection change?
# - Why must the edits be scored by `mini/recon_independent` rather than by `mini/recon`?
# - Which part of the photograph's pipeline would change with a generator trained on real faces, and which would not?
#
# ## 5. Checks
#
# What must hold whatever the seed: the W stage leaves one w in every layer and the W+ stage moves them apart;
# PIE's edits on fresh pool faces reach their targets closer, with the rest of the face kept better, than the
# projection's (edit + invariance, unweighted); PIE pays at most a few dB of PSNR for it and its pose edits complete;
# the photo pipeline finds the astronaut's one face, the fit lowers the landmark error, the photo's own crop stays
# the same person to dlib, the photo is harder to embed than the renders, and the cat raises `NoFaceError`.

# %%
assert w_spread == 0.0 and wplus_spread > 0
assert pie.stages == [("w", stage_w), ("w+", STEPS - stage_w)] and set(pie.energies) == set(ENERGIES)
sc_proj, sc_pie = scores["projection W+"], scores["PIE"]
assert float((sc_pie["edit"] + sc_pie["invariance"]).mean()) < float((sc_proj["edit"] + sc_proj["invariance"]).mean())
assert float(pie.psnr.mean()) > float(proj.psnr.mean()) - 3.0
assert evs["PIE"]["edits"]["pose"]["completion"] > 0.2
assert len(faces) == 1 and fitted.lm_px_after < fitted.lm_px_before
assert dist["aligned crop at 64 px"] < photo.SAME_PERSON_THRESHOLD
assert float(photo_pie.psnr[0]) < float(pie.psnr.mean()) and float(photo_proj.psnr[0]) < float(proj.psnr.mean())
assert isinstance(no_face, photo.NoFaceError) and "chelsea.png" in str(no_face)
print("all checks passed")
