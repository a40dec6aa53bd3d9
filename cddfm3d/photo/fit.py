"""Photograph -> aligned face crop -> 3DMM coefficients (one call: :func:`photo_to_coefficients`).

Pipeline: read (upright RGB, :func:`~cddfm3d.photo.read_photo`) -> detect and choose a face with its 68 dlib
landmarks (:func:`~cddfm3d.photo.find_face`) -> Deep3D's 5-point alignment
(:func:`cddfm3d.face3d.align.align_image`: POS fit of the 5 points to Deep3D's 3D template, bicubic resize to
``102 * size / 224`` px per dm, crop ``size`` x ``size`` centred on the template origin) -> analysis-by-synthesis
fit of the morphable model (:func:`cddfm3d.face3d.fit`) to the crop and its 68 landmarks.

Framing. The mini world renders MiniFace with Deep3D's camera, so a crop of any ``size`` is framed like a world
render of that size (checked in ``tests/test_photo.py``: the mean face aligned by its own landmarks keeps them
within 0.5 px at 64 px and its scale within 2 %; over the world's priors the alignment has no systematic scale or
shift, while each face's identity and expression move its 5 points and so its crop by up to about +-10 % in
scale, as in Deep3D). The coefficients do not depend on the crop size (the camera scales with it); a crop at 128 px
reduced to 64 px (e.g. :func:`cddfm3d.ui.image_input.to_resolution`) is the mini generator's framing.

A real FFHQ StyleGAN2 generator was trained on FFHQ-aligned faces instead: ``align_photo(..., framing="ffhq",
size=1024)`` cuts the face out by FFHQ's rule (:mod:`cddfm3d.photo.ffhq`) for embedding a photograph into such a
generator. The framing only matters for embedding: :func:`photo_to_coefficients` always fits the morphable model
to the Deep3D crop, the framing its camera assumes.
"""
from __future__ import annotations

import numbers
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..face3d.align import align_image, align_landmarks, unalign_landmarks
from ..face3d.fitting import FitResult, fit
from .detect import Face, _find_face
from .ffhq import crop_to_photo, ffhq_align, photo_to_crop

DEFAULT_SIZE = 128      # fit resolution: the trial (MiniFace at 128 px); the mini generator is 64 px
DEFAULT_STEPS = 300     # Adam steps of the fit (12 % pose stage, then every coefficient)
FRAMINGS = ("deep3d", "ffhq")   # align_photo's crops: Deep3D's 5-point alignment (the world's), FFHQ's alignment


@dataclass
class AlignedFace:
    """A face of a photograph cut out by Deep3D's or FFHQ's alignment (``framing``, one of :data:`FRAMINGS`).

    crop: uint8 RGB [S, S, 3] (S = size; the area outside the photo is black for ``"deep3d"``, the nearest photo
    pixel for ``"ffhq"``). landmarks: [68, 2] float64, the face's dlib landmarks mapped into the crop (x right,
    y down, pixels). trans_params: for ``"deep3d"`` [5] float64 Deep3D's ``[w0, h0, s', t_x, t_y]`` (photo width
    and height, scale, template origin with y up); for ``"ffhq"`` [4, 2] float64 FFHQ's quad in photo pixels
    (corners top-left, bottom-left, bottom-right, top-right of the crop, :func:`cddfm3d.photo.ffhq.ffhq_quad`).
    face: the :class:`~cddfm3d.photo.Face` in the photo. photo: the upright RGB photo [H, W, 3] uint8. source: how
    the photo was given (file name or array size). framing: ``"deep3d"`` or ``"ffhq"``.
    """

    crop: np.ndarray
    landmarks: np.ndarray
    trans_params: np.ndarray
    face: Face
    photo: np.ndarray
    source: str = ""
    framing: str = "deep3d"

    @property
    def size(self) -> int:
        return int(self.crop.shape[0])

    def tensor(self, device=None) -> torch.Tensor:
        """The crop as float32 [1, 3, S, S] RGB in [0, 1] (what :func:`cddfm3d.face3d.fit` takes)."""
        return torch.from_numpy(self.crop).permute(2, 0, 1)[None].float().div(255.0).to(device)

    def to_photo(self, points) -> np.ndarray:
        """Crop pixel coordinates [..., K, 2] (y down) -> photo pixel coordinates, float64 (the inverse of the
        alignment's landmark map: :func:`cddfm3d.face3d.align.unalign_landmarks` for ``"deep3d"``,
        :func:`cddfm3d.photo.ffhq.crop_to_photo` for ``"ffhq"``)."""
        if self.framing == "ffhq":
            return crop_to_photo(points, self.trans_params, self.size)
        return unalign_landmarks(np.asarray(points, np.float64), self.trans_params, self.size)

    def to_crop(self, points) -> np.ndarray:
        """Photo pixel coordinates [..., K, 2] (y down) -> crop pixel coordinates, float64 (the alignment's
        landmark map; :attr:`landmarks` is ``to_crop(face.landmarks)``)."""
        if self.framing == "ffhq":
            return photo_to_crop(points, self.trans_params, self.size)
        return align_landmarks(np.asarray(points, np.float64), self.trans_params, self.size)


def _check_size(size, who: str) -> int:
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or not 32 <= size <= 1024:
        raise ValueError(f"{who}: size must be an int in [32, 1024] (crop side in pixels), found {size!r}")
    return int(size)


def align_photo(photo, face="largest", size: int = DEFAULT_SIZE, detector: str = "hog", upsample: int = 0,
                threshold: float = 0.0, *, framing: str = "deep3d") -> AlignedFace:
    """Detect the faces of ``photo`` (a path, image bytes or a uint8 array), choose one (``face``: ``"largest"``
    or an index, largest first) and cut it out at ``size`` x ``size`` px.

    ``framing``: ``"deep3d"`` (default): Deep3D's 5-point alignment, the mini world's framing and what the 3DMM
    fit needs; ``"ffhq"``: FFHQ's alignment (:mod:`cddfm3d.photo.ffhq`), the framing of a real FFHQ generator, for
    embedding the photo into one (``size`` = the generator's resolution, 1024 for FFHQ).

    Raises :class:`~cddfm3d.photo.NoFaceError` (a ``ValueError``) when no face is found,
    :class:`~cddfm3d.photo.FaceIndexError` for an index out of range, ``ValueError`` for bad options (an unknown
    framing lists :data:`FRAMINGS`) or a bad photo, ``FileNotFoundError`` for a missing file, ``ImportError``
    without dlib or its model files."""
    size = _check_size(size, "align_photo")
    if not isinstance(framing, str) or framing not in FRAMINGS:
        raise ValueError(f"align_photo: framing must be one of {FRAMINGS}, found {framing!r}")
    image, source, chosen = _find_face(photo, face, detector, upsample, threshold, "align_photo")
    if framing == "ffhq":
        al = ffhq_align(image, chosen.landmarks, size)
        return AlignedFace(al.image, al.landmarks, al.quad, chosen, image, source, framing)
    al = align_image(image, chosen.landmarks, size=size)
    crop = np.array(al.image.convert("RGB"), np.uint8)  # a writable copy
    return AlignedFace(crop, al.landmarks, al.trans_params, chosen, image, source, framing)


@dataclass
class PhotoFit:
    """Result of :func:`photo_to_coefficients`.

    coeffs: [1, 257] float32 on the CPU, the morphable model's coefficients (Deep3D's layout: id, exp, tex,
    angle, gamma, trans) of the photographed face. fit: the :class:`cddfm3d.face3d.FitResult` (history, final
    render [1, 3, S, S] in [0, 1], projected landmarks). aligned: the :class:`AlignedFace` (``.crop`` uint8
    [S, S, 3], ``.landmarks`` [68, 2] in the crop, ``.face`` the detection). lm_px_before / lm_px_after: mean
    distance in crop pixels between the 68 target landmarks and the model's, at the start (mean face, frontal)
    and at the returned coefficients. seconds: wall time of the fit alone.
    """

    coeffs: torch.Tensor
    fit: FitResult
    aligned: AlignedFace
    lm_px_before: float
    lm_px_after: float
    seconds: float

    @property
    def crop(self) -> np.ndarray:
        return self.aligned.crop

    @property
    def landmarks(self) -> np.ndarray:
        return self.aligned.landmarks

    @property
    def face(self) -> Face:
        return self.aligned.face


def photo_to_coefficients(photo, face="largest", size: int = DEFAULT_SIZE, steps=DEFAULT_STEPS, model=None,
                          device=None, detector: str = "hog", upsample: int = 0, threshold: float = 0.0,
                          progress: bool = False, **fit_options) -> PhotoFit:
    """A photograph's face as morphable-model coefficients, in one call: :func:`align_photo` then
    :func:`cddfm3d.face3d.fit` of ``model`` to the crop with the aligned 68 landmarks. The crop is always
    Deep3D-framed (the model's camera assumes that framing); ``align_photo(..., framing="ffhq")`` is for embedding
    the photo into a real FFHQ generator, not for this fit.

    Args:
        photo: a path, the bytes of an image file, or a uint8 array [H, W(, 1|3|4)] (grayscale, RGBA, 16-bit and
            EXIF-rotated files are read upright as RGB).
        face: ``"largest"`` or an int index into the faces found (largest first).
        size: crop and fit resolution in px (default 128; coefficients do not depend on it).
        steps: fit steps, an int or (pose_steps, all_steps) (default 300: about 8 s at 128 px on one CPU core).
        model: the morphable model (default MiniFace, :func:`cddfm3d.world.mini_model` on ``device``); a BFM
            :class:`~cddfm3d.face3d.MorphableModel` works the same way.
        device: where to fit (default CPU); detection and alignment always run on the CPU.
        detector, upsample, threshold: as :func:`~cddfm3d.photo.detect_faces`.
        progress: show the fit's tqdm bar.
        fit_options: passed on to :func:`cddfm3d.face3d.fit` (``lr``, ``weights``, ``fit_groups``, ``init``,
            ``mask``, ``renderer``); ``steps`` and these are checked before the photo is read.

    Returns :class:`PhotoFit`. Raises as :func:`align_photo` and :func:`cddfm3d.face3d.fit`.
    """
    bad = sorted(set(fit_options) - {"lr", "weights", "fit_groups", "init", "mask", "renderer"})
    if bad:
        raise TypeError(f"photo_to_coefficients: unexpected option(s) {bad}; fit options are lr, weights, "
                        f"fit_groups, init, mask, renderer")
    from ..face3d.fitting import _check_options

    try:    # the fit's options are checked before the photo is read and its face found
        _check_options(steps, fit_options.get("lr", 0.05), fit_options.get("weights"), fit_options.get("fit_groups"))
    except (TypeError, ValueError) as e:
        raise type(e)(f"photo_to_coefficients: {e}") from None
    aligned = align_photo(photo, face, size, detector, upsample, threshold)
    device = torch.device(device) if device is not None else torch.device("cpu")
    if model is None:
        from ..world import mini_model

        model = mini_model(device)
    target = torch.from_numpy(aligned.landmarks).float()[None]
    t0 = time.perf_counter()
    result = fit(aligned.tensor(device), model, landmarks=target.to(device), steps=steps, device=device,
                 progress=progress, **fit_options)
    seconds = time.perf_counter() - t0
    return PhotoFit(result.coeffs.detach().float().cpu(), result, aligned,
                    float(result.initial_losses["lm_px"]), float(result.losses["lm_px"]), seconds)


__all__ = ["DEFAULT_SIZE", "DEFAULT_STEPS", "FRAMINGS", "AlignedFace", "PhotoFit", "align_photo",
           "photo_to_coefficients"]
