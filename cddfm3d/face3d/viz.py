"""Pictures of morphable-model outputs: matplotlib overlays and previews, plotly 3D meshes.

matplotlib and plotly are imported inside the functions so that importing the package stays cheap.
Images may be tensors [3, H, W] / [H, W, 3] or numpy arrays, values in [0, 1].
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
