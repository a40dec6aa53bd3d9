"""3D face components: morphable models (BFM loader, built-in MiniFace), camera, SH lighting, rendering,
visualisation. See reference face3d.md for the conventions (Deep3DFaceRecon's 257 coefficients)."""
from ..assets import register_kind
from .bfm import BFMFormatError, convert_bfm09, convert_bfm09_dir, load_bfm_front
from .camera import PinholeCamera, rotation_matrix
from .lighting import light_angles_deg, light_direction, sh_basis, shade
from .mesh import ColoredMesh, point_buffer
from .morphable import LAYOUT, N_COEFFS, SLICES, FaceOutput, MorphableModel
from .align import (TEMPLATE_5P, Aligned, align_image, align_landmarks, align_tensor, extract_5p, pos, pos_torch,
                    unalign_landmarks)
from .fitting import FitResult, fit
from .arcface import ArcFaceRecognizer, IResNet, load_arcface
from .losses import (DEEP3D_WEIGHTS, coeff_reg_loss, gamma_loss, identity_loss, landmark_loss, landmark_weights,
                     photometric_loss, reflectance_loss)
from .recon import ReconCheckpointError, ReconNet
from .viz import (draw_landmarks, landmark_panel, overlay_render, plot_mesh_2d, plotly_mesh, reconstruction_rows,
                  show_image, to_numpy_image)

from .raster import Fragments, interpolate, interpolate_packed, rasterize
from .render import render

__all__ = [
    "BFMFormatError", "convert_bfm09", "convert_bfm09_dir", "load_bfm_front",
    "PinholeCamera", "rotation_matrix", "sh_basis", "shade", "light_direction", "light_angles_deg",
    "LAYOUT", "N_COEFFS", "SLICES", "FaceOutput", "MorphableModel", "ColoredMesh", "point_buffer",
    "draw_landmarks", "overlay_render", "plot_mesh_2d", "plotly_mesh", "show_image", "to_numpy_image",
    "landmark_panel", "reconstruction_rows",
    "rasterize", "render", "interpolate", "interpolate_packed", "Fragments",
    "ReconNet", "ReconCheckpointError", "TEMPLATE_5P", "Aligned", "extract_5p", "pos", "pos_torch", "align_image",
    "align_tensor", "align_landmarks", "unalign_landmarks", "DEEP3D_WEIGHTS", "photometric_loss", "landmark_loss",
    "landmark_weights", "coeff_reg_loss", "gamma_loss", "reflectance_loss", "identity_loss", "fit", "FitResult",
    "ArcFaceRecognizer", "IResNet", "load_arcface",
]

# asset kinds of this package's types: cddfm3d.assets.load picks the loader by the entry's kind
register_kind("face3d.ReconNet", ReconNet.load)  # a ReconNet written by ReconNet.save (safetensors)
register_kind("face3d.Deep3DFaceRecon", ReconNet.from_deep3d)  # the official Deep3DFaceRecon epoch_20.pth
register_kind("face3d.MorphableModel", lambda path, device: MorphableModel.from_bfm(path))  # BFM_model_front.mat
