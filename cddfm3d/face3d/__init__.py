"""3D face components: morphable models (BFM loader, built-in MiniFace), camera, SH lighting, rendering,
visualisation. See reference face3d.md for the conventions (Deep3DFaceRecon's 257 coefficients)."""
from .bfm import BFMFormatError, convert_bfm09, convert_bfm09_dir, load_bfm_front
from .camera import PinholeCamera, rotation_matrix
from .lighting import sh_basis, shade
from .morphable import LAYOUT, N_COEFFS, SLICES, FaceOutput, MorphableModel, point_buffer
from .viz import draw_landmarks, overlay_render, plot_mesh_2d, plotly_mesh, show_image, to_numpy_image

# The rasterizer and renderer live in their own modules (written separately); keep the package importable
# while they are absent.
try:
    from .raster import rasterize
except ImportError as _exc:  # only a missing raster.py is tolerated; its own import errors propagate
    if getattr(_exc, "name", None) != f"{__name__}.raster":
        raise
    rasterize = None
try:
    from .render import render
except ImportError as _exc:
    if getattr(_exc, "name", None) != f"{__name__}.render":
        raise
    render = None

__all__ = [
    "BFMFormatError", "convert_bfm09", "convert_bfm09_dir", "load_bfm_front",
    "PinholeCamera", "rotation_matrix", "sh_basis", "shade",
    "LAYOUT", "N_COEFFS", "SLICES", "FaceOutput", "MorphableModel", "point_buffer",
    "draw_landmarks", "overlay_render", "plot_mesh_2d", "plotly_mesh", "show_image", "to_numpy_image",
    "rasterize", "render",
]
