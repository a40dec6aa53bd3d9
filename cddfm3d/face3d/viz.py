"""Pictures of morphable-model outputs: matplotlib overlays and previews, plotly 3D meshes, and image tensors
for grids (``landmark_panel``, ``reconstruction_rows``; tile them with ``cddfm3d.viz.grid`` / ``show``).

matplotlib and plotly are imported inside the functions so that importing the package stays cheap.
For the matplotlib helpers, images may be tensors [3, H, W] / [H, W, 3] or numpy arrays, values in [0, 1];
the tensor helpers take and return batches [B, 3, H, W] in [-1, 1] (the generator's range).
"""
from __future__ import annotations

import numpy as np
import torch

# iBUG-68 polylines (closed ones repeat their first index) for drawing landmark connections.
IBUG_PARTS = (
    list(range(0, 17)), list(range(17, 22)), list(range(22, 27)), list(range(27, 31)), list(range(31, 36)),
    list(range(36, 42)) + [36], list(range(42, 48)) + [42], list(range(48, 60)) + [48],
    list(range(60, 68)) + [60],
)


PANEL_ZOOM = 4  # landmark panels are upscaled so that 68 dots are visible on 64-px faces
LANDMARK_RGB = (-1.0, 1.0, -1.0)  # green in [-1, 1]


def landmark_panel(images: torch.Tensor, landmarks: torch.Tensor, zoom: int = PANEL_ZOOM,
                   color=LANDMARK_RGB) -> torch.Tensor:
    """Images [B, 3, S, S] in [-1, 1] upscaled ``zoom`` times (nearest) with landmarks [B, K, 2] drawn as dots.

    Landmarks are in pixel coordinates of the input (x right, y down, pixel centres at integers); each becomes a
    3 x 3 dot of ``color`` (RGB in [-1, 1]) centred on the upscaled pixel centre ``(x + 0.5) * zoom - 0.5``.
    Dots outside the image are skipped. Returns a new tensor [B, 3, S * zoom, S * zoom]; the input is unchanged.
    """
    if images.ndim != 4 or landmarks.ndim != 3 or landmarks.shape[-1] != 2 or len(images) != len(landmarks):
        raise ValueError(f"landmark_panel: expected images [B, 3, H, W] and landmarks [B, K, 2], found "
                         f"{tuple(images.shape)} and {tuple(landmarks.shape)}")
    big = images.repeat_interleave(zoom, 2).repeat_interleave(zoom, 3).clone()
    height, width = big.shape[-2:]
    dot = torch.tensor(color, dtype=big.dtype, device=big.device).view(3, 1, 1)
    centres = ((landmarks + 0.5) * zoom - 0.5).round().long()
    for b in range(len(big)):
        for x, y in centres[b].tolist():
            if 0 <= x < width and 0 <= y < height:
                big[b, :, max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = dot
    return big


def reconstruction_rows(images: torch.Tensor, coeffs: torch.Tensor, fm, alpha: float = 0.6) -> dict:
    """Render predicted coefficients next to the images they were predicted from.

    ``images`` [B, 3, S, S] in [-1, 1], ``coeffs`` [B, 257], ``fm`` a MorphableModel. Returns a dict of
    ``render`` [B, 3, S, S] in [-1, 1] (the face of ``coeffs``, 2x supersampled, black background), ``overlay``
    (the render blended over the image with weight ``alpha`` where the face is), ``landmarks`` [B, 68, 2] (pixels of
    the S-px image) and ``mask`` [B, 1, S, S] (face coverage in [0, 1]).
    """
    from .render import render

    size = images.shape[-1]
    out = fm(coeffs, image_size=size)
    rendered, mask = render(out, size=size, supersample=2)
    rendered = rendered * 2 - 1
    overlay = images * (1 - alpha * mask) + rendered * alpha * mask
    return {"render": rendered, "overlay": overlay, "landmarks": out.landmarks, "mask": mask}


def to_numpy_image(image) -> np.ndarray:
    """[3, H, W] or [H, W, 3] (or [1, ...] batch of one) tensor/array -> float numpy [H, W, 3] in [0, 1]."""
    a = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, float)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3):
        raise ValueError(f"expected an image [3, H, W] or [H, W, 3], found shape {np.shape(image)}")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, -1)
    return np.clip(a, 0.0, 1.0)


def _axes(ax, size=4.0):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(size, size))
    ax.set_axis_off()
    return ax


def show_image(image, ax=None, title: str | None = None):
    """Show one image; returns the Axes."""
    ax = _axes(ax)
    ax.imshow(to_numpy_image(image), interpolation="nearest")
    if title:
        ax.set_title(title)
    return ax


def overlay_render(image, render, mask=None, alpha: float = 0.6, ax=None, title: str | None = None):
    """Blend ``render`` over ``image`` with ``alpha`` where ``mask`` (default: render non-black) is set."""
    img, ren = to_numpy_image(image), to_numpy_image(render)
    if mask is None:
        m = (ren.sum(-1, keepdims=True) > 0).astype(float)
    else:
        m = to_numpy_image(mask)[..., :1]
    out = img * (1 - alpha * m) + ren * alpha * m
    return show_image(out, ax=ax, title=title)


def draw_landmarks(landmarks, image=None, ax=None, color: str = "lime", size: float = 6.0,
                   connect: bool = True, numbers: bool = False, title: str | None = None):
    """Draw 68 (or any K) landmarks [K, 2] in pixel coordinates (x right, y down) on ``image`` or ``ax``."""
    lm = landmarks.detach().cpu().numpy() if isinstance(landmarks, torch.Tensor) else np.asarray(landmarks)
    if lm.ndim == 3 and lm.shape[0] == 1:
        lm = lm[0]
    if lm.ndim != 2 or lm.shape[1] != 2:
        raise ValueError(f"draw_landmarks: expected landmarks [K, 2], found shape {lm.shape}")
    if image is not None:
        ax = show_image(image, ax=ax, title=title)
    else:
        ax = _axes(ax)
        if title:
            ax.set_title(title)
    if connect and len(lm) == 68:
        for part in IBUG_PARTS:
            ax.plot(lm[part, 0], lm[part, 1], "-", color=color, lw=0.8, alpha=0.7)
    ax.scatter(lm[:, 0], lm[:, 1], s=size, c=color, zorder=3)
    if numbers:
        for k, (px, py) in enumerate(lm):
            ax.annotate(str(k), (px, py), fontsize=5, color=color)
    if image is None:
        ax.invert_yaxis() if not ax.yaxis_inverted() else None
        ax.set_aspect("equal")
    return ax


def _vertex_rgb(out, index: int, color: str) -> np.ndarray:
    if color == "colors":
        rgb = out.colors[index]
    elif color == "albedo":
        rgb = out.albedo[index]
    elif color == "normals":
        rgb = out.normals[index] * 0.5 + 0.5
    else:
        raise ValueError(f"color must be 'colors', 'albedo' or 'normals', found {color!r}")
    return rgb.detach().float().cpu().clamp(0, 1).numpy()


def plot_mesh_2d(out, index: int = 0, ax=None, color: str = "colors", background: str = "black",
                 title: str | None = None):
    """Quick painter's-algorithm preview of a :class:`FaceOutput` in its image frame (no rasterizer needed).

    Faces are drawn far to near with the mean colour of their vertices; back faces are skipped.
    """
    from matplotlib.collections import PolyCollection

    size = out.camera.image_size
    scr = out.screen[index].detach().float().cpu().numpy()
    faces = out.faces.detach().cpu().numpy()
    rgb = _vertex_rgb(out, index, color)
    tri = scr[faces]                                     # [F, 3, 3]
    # Screen y points down, so counter-clockwise-in-world faces are clockwise here: signed area < 0.
    e1, e2 = tri[:, 1, :2] - tri[:, 0, :2], tri[:, 2, :2] - tri[:, 0, :2]
    front = (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) < 0
    order = np.argsort(-tri[:, :, 2].mean(1)[front], kind="stable")
    polys = tri[front][order, :, :2]
    cols = rgb[faces[front][order]].mean(1)
    ax = _axes(ax)
    ax.set_facecolor(background)
    ax.add_collection(PolyCollection(polys, facecolors=cols, edgecolors=cols, linewidths=0.3))
    ax.set_xlim(-0.5, size - 0.5)
    ax.set_ylim(size - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_axis_on()
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def plotly_mesh(out, index: int = 0, color: str = "colors", posed: bool = True, title: str | None = None):
    """Interactive 3D mesh (plotly ``Mesh3d`` with per-vertex colours) of sample ``index`` of a FaceOutput.

    ``posed=False`` shows the canonical shape; ``color`` is 'colors' (lit), 'albedo' or 'normals'.
    """
    import plotly.graph_objects as go

    v = (out.vertices if posed else out.shape)[index].detach().float().cpu().numpy()
    f = out.faces.detach().cpu().numpy()
    rgb = (_vertex_rgb(out, index, color) * 255).round().astype(int)
    vertexcolor = [f"rgb({r},{g},{b})" for r, g, b in rgb]
    mesh = go.Mesh3d(x=v[:, 0], y=v[:, 1], z=v[:, 2], i=f[:, 0], j=f[:, 1], k=f[:, 2],
                     vertexcolor=vertexcolor, flatshading=False,
                     # Colours are already lit by the SH model: switch plotly's own lighting off.
                     lighting=dict(ambient=1.0, diffuse=0.0, specular=0.0, roughness=1.0, fresnel=0.0),
                     hoverinfo="skip")
    fig = go.Figure(mesh)
    fig.update_layout(
        title=title, margin=dict(l=0, r=0, t=30 if title else 0, b=0),
        scene=dict(aspectmode="data", xaxis_visible=False, yaxis_visible=False, zaxis_visible=False,
                   camera=dict(eye=dict(x=0.0, y=0.0, z=2.0), up=dict(x=0.0, y=1.0, z=0.0))))
    return fig
