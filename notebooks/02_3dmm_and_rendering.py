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
# # 02 · The 3DMM and rendering
#
# **Goals.** After this notebook you can
# - read the 257 coefficients that CDDFM3D uses to express every edit (identity 80, expression 64, texture 80,
#   angles 3, SH lighting 27, translation 3) and see what each group does;
# - look at a face mesh in 3D (plotly) and render it with the package's differentiable rasterizer;
# - fit coefficients to an image by analysis-by-synthesis and measure how well they are recovered.
#
# **Runtime.** About 20 seconds in FAST mode and 45 seconds in full mode (half of it in the fit), measured on one
# thread of a 2-core machine that other jobs kept busy; no GPU needed.
#
# The morphable model here is **MiniFace**, the package's procedural face model with exactly the layout and
# conventions of BFM as Deep3DFaceRecon uses it. With `WORLD = "real"` the notebook loads your own
# `BFM_model_front.mat` instead (configured as `real/bfm`, see notebook 00, section 7).

# %% tags=["parameters"]
WORLD = "mini"   # "real": the BFM configured as real/bfm ($CDDFM3D_BFM or the [real] table of the config file)
FAST = None      # None: decided by cddfm3d.fast_mode() (on in CI)
SEED = 0
DEVICE = None    # None: CUDA when available, else CPU

# %%
import matplotlib.pyplot as plt
import torch

import cddfm3d
from cddfm3d import viz
from cddfm3d.face3d import SLICES, MorphableModel, PinholeCamera, draw_landmarks, fit, plotly_mesh, rasterize, render

FAST = cddfm3d.fast_mode() if FAST is None else FAST
DEVICE = cddfm3d.device(DEVICE)
cddfm3d.setup_notebook(SEED)   # seeds, plotly renderer, CPU threads for interactive work
if WORLD == "real":
    fm = cddfm3d.assets.load("real/bfm", DEVICE)      # MorphableModel.from_bfm of the configured file
elif WORLD == "mini":
    fm = MorphableModel.mini().to(DEVICE)
else:
    raise ValueError(f"WORLD must be 'mini' or 'real', found {WORLD!r}")
print(f"{fm.name}: {fm(fm.zeros(1).to(DEVICE)).vertices.shape[1]} vertices, {fm.faces.shape[0]} triangles")
SIZE = 128


def show_faces(coeffs, nrow):
    img, _ = render(fm(coeffs.to(DEVICE)), size=SIZE)
    viz.show(img, nrow=nrow, value_range=(0, 1))


def variation(name, amount=1.0):
    """Coefficients [257]: a named variation of MiniFace, or "group k" (one PCA coefficient, any model)."""
    if name in fm.named_directions:
        return fm.direction(name, amount)
    group, k = name.split()
    c = fm.zeros(1)[0]
    c[SLICES[group].start + int(k)] = amount
    return c


# BFM has no named variations: with it, the rows and targets below use its leading PCA coefficients.
NAMED = bool(fm.named_directions)


# %% [markdown]
# ## The 257 coefficients
#
# `fm.split(coeffs)` cuts a coefficient vector into its six groups. Identity, expression and texture are weights of
# PCA bases whose columns are already scaled by their standard deviations, so each coefficient is roughly N(0, 1).
# Angles are Euler angles in radians (R = Rz·Ry·Rx), lighting is 9 spherical-harmonics coefficients per colour
# (Deep3D adds 0.8 to each DC term), translation is in the model's units (decimetres).

# %%
c = fm.zeros(1)
for name, part in fm.split(c).items():
    print(f"{name:>6}: {part.shape[1]:3d} coefficients")
out = fm(c.to(DEVICE))
print("outputs:", {k: tuple(getattr(out, k).shape)
                   for k in ("shape", "vertices", "normals", "albedo", "colors", "landmarks")})

# %% [markdown]
# ### Identity, expression, texture
#
# Each row varies one named semantic direction from −2 to +2 standard deviations (MiniFace's bases come from a PCA
# over a population built from these named variations; with BFM, the rows are its first three PCA coefficients).

# %%
steps = torch.linspace(-2, 2, 5)
if NAMED:
    rows = {"identity": ["face_width", "jaw_width", "nose_length"],
            "expression": ["jaw_open", "smile", "brow_raise"],
            "texture": ["skin_tone", "lip_colour", "brow_darkness"]}
else:
    rows = {"identity": ["id 0", "id 1", "id 2"], "expression": ["exp 0", "exp 1", "exp 2"],
            "texture": ["tex 0", "tex 1", "tex 2"]}
for group, names in rows.items():
    coeffs = torch.stack([variation(n, float(a)) for n in names for a in steps])
    print(group, "rows:", ", ".join(names))
    show_faces(coeffs, nrow=len(steps))

# %% [markdown]
# ### Pose, lighting and translation

# %%
angles = torch.tensor([-0.6, -0.3, 0.0, 0.3, 0.6])
pose = fm.zeros(15)
for i in range(3):
    pose[i * 5:(i + 1) * 5, 224 + i] = angles * (0.5 if i != 1 else 1.0)
print("rows: pitch, yaw, roll")
show_faces(pose, nrow=5)
light = fm.zeros(5)
# SH band 1 terms (indices 1..3 of each colour's 9) move the light; same for R, G, B
for k, (band, val) in enumerate([(1, 0.0), (1, 0.4), (2, 0.4), (3, 0.4), (3, -0.4)]):
    for col in range(3):
        light[k, 227 + col * 9 + band] = val
trans = fm.zeros(5)
trans[:, 254] = torch.tensor([-0.4, -0.2, 0.0, 0.2, 0.4])
print("row 1: lighting; row 2: x translation")
show_faces(torch.cat([light, trans]), nrow=5)

# %% [markdown]
# ## The mesh in 3D
#
# An interactive plotly mesh with the lit vertex colours (rotate it with the mouse).

# %%
fig = plotly_mesh(fm(variation("smile" if NAMED else "exp 0", 1.5).unsqueeze(0).to(DEVICE)))
fig.show()

# %% [markdown]
# ## The renderer
#
# `rasterize(verts, faces, H, W)` takes projected vertices (x, y, depth) in pixel coordinates, finds the nearest
# triangle per pixel with a z-buffer (no gradients needed there) and then computes perspective-correct barycentric
# coordinates of the winners differentiably. `render` uses it to interpolate the lit colours, with supersampling
# for antialiasing. Gradients flow from pixels to every coefficient.

# %%
c = variation("smile" if NAMED else "exp 0").unsqueeze(0)
c[0, 225] = 0.4                                  # some yaw
out = fm(c.to(DEVICE))
cam = PinholeCamera().scaled(SIZE)
screen = cam.project(out.vertices)
frag = rasterize(screen, fm.faces, SIZE, SIZE)
img, mask = render(out, size=SIZE)
fig, ax = plt.subplots(1, 4, figsize=(12, 3))
ax[0].imshow(frag.face_index[0].cpu() % 97, cmap="tab20")
ax[0].set_title("triangle index")
ax[1].imshow(frag.depth[0].cpu().masked_fill(~frag.mask[0].cpu(), float("nan")))
ax[1].set_title("depth")
ax[2].imshow(img[0].permute(1, 2, 0).cpu())
ax[2].set_title("render")
draw_landmarks(out.landmarks[0].cpu() * SIZE / out.image_size, image=img[0].cpu(), ax=ax[3], title="68 landmarks")
for a in ax:
    a.axis("off")
plt.show()

# %%
# gradients reach the coefficients through the renderer
c = fm.zeros(1).to(DEVICE).requires_grad_(True)
img, mask = render(fm(c), size=64)
img.mean().backward()
print("gradient norm per group:", {k: round(v.norm().item(), 5) for k, v in fm.split(c.grad).items()})

# %% [markdown]
# ## Fitting: analysis by synthesis
#
# Render a target with known coefficients, then recover them with `cddfm3d.face3d.fit` (photometric + landmark +
# regularisation losses at Deep3D's weights, first pose and landmarks, then all groups).

# %%
g = torch.Generator().manual_seed(SEED)
if NAMED:
    true = torch.stack([variation("jaw_open") + variation("brow_raise"), variation("smile") + variation("pucker", 0.5)])
else:
    true = torch.stack([variation("exp 0") + variation("exp 1"), variation("exp 2") + variation("exp 3", 0.5)])
true[:, 224:227] = torch.tensor([[0.10, -0.30, 0.05], [-0.05, 0.25, -0.05]])   # pitch, yaw, roll
true[:, 254:256] = torch.tensor([[0.05, -0.03], [-0.04, 0.02]])
true[:, 0:80] = torch.randn(2, 80, generator=g) * 0.8                            # identity
tgt_out = fm(true.to(DEVICE))
FIT_SIZE = 64
target, _ = render(tgt_out, size=FIT_SIZE)
target_lm = tgt_out.landmarks * FIT_SIZE / tgt_out.image_size
# identity known here (as when the identity comes from elsewhere); tz and identity trade off at this narrow FOV
groups = ["exp", "tex", "angle", "gamma", "trans"]
steps = (30, 170) if FAST else (60, 440)
res = fit(target, fm, landmarks=target_lm, init=torch.cat([true[:, :80], torch.zeros(2, 177)], 1),
          steps=steps, fit_groups=groups, device=DEVICE, progress=False)
est = res.coeffs.cpu()
angle_err = (est[:, 224:227] - true[:, 224:227]).abs().max().item()
trans_err = (est[:, 254:256] - true[:, 254:256]).abs().max().item()
lm_start, lm_end = res.initial_losses["lm_px"], res.losses["lm_px"]
print(f"landmark error {lm_start:.3f} px -> {lm_end:.3f} px (in {FIT_SIZE}-px images)")
print(f"photometric loss {res.initial_losses['color']:.4f} -> {res.losses['color']:.4f}")
print(f"max angle error {angle_err:.4f} rad, max x/y translation error {trans_err:.4f}")
viz.show(torch.cat([target, res.image.cpu()]), nrow=2, value_range=(0, 1), scale=2)
print("top: targets; bottom: fitted renders")

# %%
hist = res.history
fig, ax = plt.subplots(1, 2, figsize=(10, 3))
ax[0].semilogy(hist["lm_px"])
ax[0].set_title("landmark error (px)")
ax[1].semilogy(hist["total"])
ax[1].set_title("total loss")
for a in ax:
    a.set_xlabel("step")
plt.show()

# %% [markdown]
# ## Check your understanding
#
# - Which coefficient groups can a landmark loss alone not recover? Why does the photometric term help?
# - Why is depth (tz) ambiguous with face size under a 12.6° field of view?

# %%
# Checks run by CI
assert lm_end < 0.25 * lm_start
assert res.losses["color"] < 0.5 * res.initial_losses["color"]
assert angle_err < 0.05 and trans_err < 0.05
print("all checks passed")
