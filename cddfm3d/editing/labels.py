"""Labels of generated images: the reconstruction network's 257 coefficients and the 68 landmarks they project to.

Two ways to present an image to the network (``align``):

* ``"none"`` (mini world): the whole generated image is the network's input (the mini ReconNet was trained on
  whole 64-px renders, so image size == ``recon.image_size``).
* ``"self"`` (real world: FFHQ generator at 1024 px + Deep3DFaceRecon at 224 px). Deep3D's network expects the
  5-point alignment of :mod:`cddfm3d.face3d.align` (POS fit to the 3D 5-point template, rescale to 102 px/dm, crop
  224), and no landmark detector is available. **Self-alignment** uses the network as its own detector:

  1. round 0 aligns with the 5 points of an FFHQ-aligned frontal face (:func:`ffhq_template_5p`: the template's
     frontal projection placed where FFHQ's alignment rule puts the eyes and mouth -- the crop side is 4 x the
     eye distance, centred at eye midpoint + 0.1 x (mouth midpoint - eye midpoint));
  2. reconstruct the crop, project the 68 landmarks of the coefficients with the morphable model at the crop size,
     map them back to the full image (:func:`cddfm3d.face3d.align.unalign_landmarks`), take their 5 points
     (:func:`~cddfm3d.face3d.align.extract_5p`) and align again;
  3. repeat step 2 ``rounds`` times (default :data:`SELF_ALIGN_ROUNDS` = 2, i.e. 3 reconstructions); the labels
     are those of the last round: coefficients of the last crop, landmarks in the full image.

  A sample whose projected 5 points are degenerate (see :func:`cddfm3d.face3d.align.landmark_problem`: off the
  image, collapsed) keeps the previous round's points for the next crop; :class:`SelfAlignment` reports which.

Images are uint8 in 0..255 (as stored in the pairs) or float in the generator's [-1, 1]; they are converted to the
network's ``input_range`` here. Landmarks are in the input image's pixels (x right, y down, pixel centres on
integers), from the model's camera scaled to the image (or crop) size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..face3d.align import (TEMPLATE_5P, align_tensor, default_rescale, extract_5p, landmark_problem,
                            unalign_landmarks)
from ..face3d.camera import rotation_matrix
from ..face3d.morphable import SLICES
from ..images import to_range

ALIGNS = ("none", "self")
SELF_ALIGN_ROUNDS = 2
# FFHQ's alignment rule (Karras et al. 2019, the ffhq-dataset alignment script): the crop side is
# max(2 x eye distance, 1.8 x eye-to-mouth distance) x 2, centred at eye midpoint + 0.1 x (eye-to-mouth vector).
FFHQ_EYE_FACTOR, FFHQ_MOUTH_FACTOR, FFHQ_CENTRE_SHIFT = 2.0, 1.8, 0.1


def ffhq_template_5p(height: int, width: int | None = None) -> np.ndarray:
    """The 5 alignment points [5, 2] (pixels, y down) of a frontal face with the 3D template's proportions
    (:data:`cddfm3d.face3d.align.TEMPLATE_5P`, orthographic frontal view) placed in a ``height`` x ``width`` image
    as FFHQ's alignment places faces (see the module constants). For the template, 2 x eye distance (1.243 dm)
    exceeds 1.8 x eye-to-mouth (1.208 dm), so the eye distance is width / 4 (256 px at 1024)."""
    width = height if width is None else width
    p = TEMPLATE_5P[:, :2] * np.array([1.0, -1.0])                   # y down, dm
    eyes, mouth = p[:2].mean(0), p[3:].mean(0)
    eye_dist, eye_mouth = np.linalg.norm(p[1] - p[0]), np.linalg.norm(mouth - eyes)
    half_side = max(eye_dist * FFHQ_EYE_FACTOR, eye_mouth * FFHQ_MOUTH_FACTOR)  # |x| of FFHQ's quad, dm
    centre = eyes + FFHQ_CENTRE_SHIFT * (mouth - eyes)
    scale = min(height, width) / (2.0 * half_side)                   # px per dm
    return (p - centre) * scale + np.array([(width - 1) / 2.0, (height - 1) / 2.0])


def ffhq_points(images: torch.Tensor) -> torch.Tensor:
    """:func:`ffhq_template_5p` for every image of ``images`` [B, C, H, W]: [B, 5, 2] float64 on their device."""
    b, _, h, w = images.shape
    return torch.as_tensor(ffhq_template_5p(h, w), dtype=torch.float64, device=images.device).expand(b, 5, 2).clone()


def read_aligned(recon, unit: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reconstruction network's coefficients [B, 257] (float32) of the Deep3D crops (:func:`align_tensor` at
    ``recon.image_size``, 102 px/dm scaled) of images ``unit`` [B, 3, H, W] in [0, 1] at ``points`` [B, 5 | 68, 2]
    (pixels, y down), and the crops' ``trans_params`` [B, 5]. Differentiable in the pixels (runs in the caller's
    grad mode): one round of :func:`self_align`, and PIE's reader of real generators."""
    size = recon.image_size
    crops, _, tp = align_tensor(unit, points, size=size, rescale=default_rescale(size))
    x = crops if recon.input_range == "0_1" else crops * 2.0 - 1.0
    return recon(x.float(), check=False).float(), tp


def project_landmarks(model, coeffs: torch.Tensor, image_size: int) -> torch.Tensor:
    """The 68 landmarks [B, 68, 2] (pixels of an ``image_size`` image, y down) of coefficients [B, 257]: the same
    numbers as ``model(coeffs, image_size=image_size).landmarks``, computed on the 68 keypoint vertices only
    (posed shape R @ S + t of those vertices, projected by the model's camera scaled to ``image_size``) instead of
    the whole mesh with normals and colours, about 50x less work per sample."""
    kp = model.keypoints
    rows = (3 * kp[:, None] + torch.arange(3, device=kp.device)).reshape(-1)        # xyz rows of the keypoints
    c = coeffs.to(model.mean_shape.dtype)
    shape = model.mean_shape[kp] + (c[:, :144] @ model.shape_base[rows].T).reshape(len(c), -1, 3)
    rot = rotation_matrix(c[:, SLICES["angle"]])
    posed = shape @ rot.transpose(1, 2) + c[:, None, SLICES["trans"]]
    return model.camera.scaled(image_size).project(posed)[..., :2]


def _check_images(images) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        found = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"label_images: images must be a tensor [B, 3, H, W] (uint8 0..255 or float in [-1, 1]), "
                         f"found {found}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"label_images: images must be uint8 (0..255) or float ([-1, 1]), found {images.dtype}")


@dataclass
class SelfAlignment:
    """Result of :func:`self_align` for B images and R = rounds + 1 reconstructions.

    coeffs [B, 257] (last round, relative to the last crop); landmarks [B, 68, 2] (last round, full-image pixels);
    and per round: round_coeffs [R, B, 257]; round_landmarks [R, B, 68, 2] (full-image pixels); points
    [R, B, 5, 2] (float64) the 5 points the round's crop was aligned with (full-image pixels; round 0: the FFHQ
    template); trans_params [R, B, 5] (float64) each crop's ``[w0, h0, s', t_x, t_y]``; kept [R, B] bool: the sample
    kept the previous round's points because the projected ones were degenerate (always False in round 0)."""

    round_coeffs: torch.Tensor
    round_landmarks: torch.Tensor
    points: torch.Tensor
    trans_params: torch.Tensor
    kept: torch.Tensor

    @property
    def coeffs(self) -> torch.Tensor:
        return self.round_coeffs[-1]

    @property
    def landmarks(self) -> torch.Tensor:
        return self.round_landmarks[-1]


@torch.no_grad()
def self_align(recon, images: torch.Tensor, model, rounds: int = SELF_ALIGN_ROUNDS) -> SelfAlignment:
    """Self-aligned reconstruction of full generated images (see the module docstring).

    ``images`` [B, 3, H, W] uint8 or float in [-1, 1]; ``recon`` a ReconNet (crop size ``recon.image_size``);
    ``model`` a MorphableModel on the images' device; ``rounds`` >= 0 re-alignments. Returns :class:`SelfAlignment`.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"self_align: rounds must be an int >= 0, found {rounds!r}")
    _check_images(images)
    unit = to_range(images, "0_1")          # aligned in [0, 1]: the area outside the image is black, as Deep3D's
    b, _, h, w = unit.shape
    size = recon.image_size
    pts = ffhq_points(unit)
    rec = {"coeffs": [], "landmarks": [], "points": [], "tp": [], "kept": [torch.zeros(b, dtype=torch.bool)]}
    for r in range(rounds + 1):
        coeffs, tp = read_aligned(recon, unit, pts)
        lm_crop = project_landmarks(model, coeffs, size)                              # [B, 68, 2], crop pixels
        landmarks = unalign_landmarks(lm_crop.double(), tp.double())                 # full-image pixels
        for key, value in (("coeffs", coeffs), ("landmarks", landmarks), ("points", pts), ("tp", tp)):
            rec[key].append(value.clone())
        if r == rounds:
            break
        new = extract_5p(landmarks)
        kept = torch.tensor([landmark_problem(new[i], h, w) is not None for i in range(b)])
        pts = torch.where(kept[:, None, None].to(new.device), pts, new)
        rec["kept"].append(kept)
    return SelfAlignment(round_coeffs=torch.stack(rec["coeffs"]), round_landmarks=torch.stack(rec["landmarks"]).float(),
                         points=torch.stack(rec["points"]), trans_params=torch.stack(rec["tp"]).double(),
                         kept=torch.stack(rec["kept"]))


@torch.no_grad()
def label_images(recon, images: torch.Tensor, model, align: str = "none", rounds: int = SELF_ALIGN_ROUNDS
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The reconstruction network's labels of generated images.

    Args:
        recon: a :class:`cddfm3d.face3d.ReconNet` in eval mode (any ``input_range``; images are converted to it).
        images: [B, 3, H, W] uint8 (0..255, as the pairs store them) or float in the generator's [-1, 1], on
            ``recon``'s device. With ``align="none"``, H = W = ``recon.image_size``.
        model: the :class:`cddfm3d.face3d.MorphableModel` the network's coefficients belong to (MiniFace for the
            mini world, BFM for Deep3D), on the same device.
        align: ``"none"`` (whole image) or ``"self"`` (self-alignment, see the module docstring).
        rounds: re-alignments of ``"self"`` (ignored for ``"none"``).

    Returns:
        (coeffs [B, 257] float32, landmarks [B, 68, 2] float32 in the image's pixels, y down).

    Raises ValueError for an unknown ``align``, images of another layout or dtype, and (``"none"``) images whose
    size is not the network's.
    """
    if align not in ALIGNS:
        raise ValueError(f"label_images: align must be one of {ALIGNS}, found {align!r}")
    if align == "self":
        out = self_align(recon, images, model, rounds)
        return out.coeffs, out.landmarks
    _check_images(images)
    x = to_range(images, recon.input_range)
    size = recon.image_size
    if tuple(x.shape[2:]) != (size, size):
        raise ValueError(f"label_images: align='none' needs images of the network's size {size} x {size}, found "
                         f"{tuple(x.shape[2:])}; use align='self' for larger generated images")
    coeffs = recon(x, check=False).float()
    landmarks = project_landmarks(model, coeffs, size).float()
    return coeffs, landmarks


__all__ = ["ALIGNS", "SELF_ALIGN_ROUNDS", "SelfAlignment", "ffhq_template_5p", "label_images", "project_landmarks",
           "self_align", "to_range"]
