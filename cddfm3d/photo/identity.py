"""Face identity with dlib's face recognition network: a 128-D descriptor per face, compared by Euclidean distance.

The network (``dlib_face_recognition_resnet_model_v1.dat``, a 29-layer ResNet trained with a metric loss) maps a
face to a unit-scale vector in R^128 such that faces of one person lie close together. dlib computes it on a 150 x
150 chip that it cuts from the photo itself, rotated and scaled by the face's landmarks with 25 % padding
(``get_face_chip``), so the descriptor depends on the photo and the landmarks, not on our Deep3D alignment.

Threshold: dlib's ``python_examples/face_recognition.py`` states that with a Euclidean distance threshold of 0.6
the model reaches 99.38 % accuracy on the LFW benchmark (distance < 0.6: the same person). That is
``SAME_PERSON_THRESHOLD``.
"""
from __future__ import annotations

import numpy as np

from .detect import Face
from .models import load_model, require_dlib
from .reading import load_photo

DESCRIPTOR_DIM = 128
SAME_PERSON_THRESHOLD = 0.6     # dlib's python_examples/face_recognition.py (99.38 % on LFW at this threshold)
CHIP_PADDING = 0.25             # dlib's default padding of the 150 x 150 chip (fraction of the face size)


def face_descriptor(photo, face, num_jitters: int = 0) -> np.ndarray:
    """The 128-D identity descriptor [128] float64 of a face in ``photo`` (a path, image bytes or a uint8 array), by
    dlib's ``compute_face_descriptor`` on the 150 x 150 chip it aligns by the face's 68 landmarks
    (``padding=CHIP_PADDING``). Norms are about 1.4 (not normalised).

    ``face``: a :class:`~cddfm3d.photo.Face` found in this photo, or 68 iBUG landmarks [68, 2] (x, y pixels of this
    photo, e.g. :attr:`AlignedFace.landmarks` of a crop, or a render's ``FaceOutput.landmarks[0]``), so that images
    too small for the detector (a 64-px crop) can be described. ``num_jitters`` > 0 averages that many randomly
    jittered chips (dlib: slower, slightly more robust; 0 is deterministic). The descriptor is not differentiable.

    Raises ``ValueError`` for a photo as :func:`read_photo` does, a ``face`` that is neither, landmarks with
    NaN/Inf, or a negative ``num_jitters``; ``ImportError`` without dlib or its model files."""
    dlib = require_dlib()

    if isinstance(face, Face):
        lm, box = face.landmarks, face.box
    else:
        lm = np.asarray(face.detach().cpu() if hasattr(face, "detach") else face)
        if lm.shape != (68, 2) or not np.issubdtype(lm.dtype, np.number):
            raise ValueError(f"face_descriptor: face must be a cddfm3d.photo.Face (from detect_faces / find_face) or "
                             f"68 landmarks [68, 2], found {type(face).__name__} {getattr(lm, 'shape', '')}")
        lm = lm.astype(np.float64)
        if not np.isfinite(lm).all():
            raise ValueError("face_descriptor: the landmarks contain NaN/Inf")
        box = np.concatenate([lm.min(0), lm.max(0)])
    if isinstance(num_jitters, bool) or not isinstance(num_jitters, int) or num_jitters < 0:
        raise ValueError(f"face_descriptor: num_jitters must be an int >= 0, found {num_jitters!r}")
    image, _ = load_photo(photo, "face_descriptor")
    left, top, right, bottom = (int(round(v)) for v in box)
    points = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in lm])
    shape = dlib.full_object_detection(dlib.rectangle(left, top, right, bottom), points)
    d = load_model("descriptor").compute_face_descriptor(image, shape, num_jitters, CHIP_PADDING)
    return np.array(d, np.float64)


def descriptor_distance(a, b) -> np.ndarray | float:
    """Euclidean distance between descriptors ``a`` and ``b`` ([128] or [N, 128], broadcast against each other):
    a float for two single descriptors, else an array of the broadcast batch shape. Below
    ``SAME_PERSON_THRESHOLD`` (0.6) dlib calls two faces the same person. Raises ``ValueError`` when the last
    dimension is not 128 or the shapes do not broadcast."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.shape[-1:] != (DESCRIPTOR_DIM,) or y.shape[-1:] != (DESCRIPTOR_DIM,):
        raise ValueError(f"descriptor_distance: descriptors must be [..., {DESCRIPTOR_DIM}], found {x.shape} and "
                         f"{y.shape}")
    try:
        d = np.sqrt(((x - y) ** 2).sum(-1))
    except ValueError:
        raise ValueError(f"descriptor_distance: shapes {x.shape} and {y.shape} do not broadcast") from None
    return float(d) if d.ndim == 0 else d


def identity_distance(image_a, image_b, landmarks, landmarks_size: int | None = None) -> float:
    """dlib's identity distance between two images of one face framed alike (a photo crop and its embedding), both
    described at the same 68 ``landmarks`` [68, 2] (pixels, y down, centres on integers): images too small for the
    detector still get descriptors, and the distance measures the pixels, not the landmarks. ``landmarks_size``:
    the side of the image the landmarks were found in (e.g. a 128-px crop) when it differs from ``image_a``'s;
    they are rescaled about pixel centres, ``(x + 0.5) * S / landmarks_size - 0.5``. Raises as
    :func:`face_descriptor`."""
    lm = np.asarray(landmarks, np.float64)
    if landmarks_size is not None:
        lm = (lm + 0.5) * (np.asarray(image_a).shape[0] / landmarks_size) - 0.5
    return float(descriptor_distance(face_descriptor(image_a, lm), face_descriptor(image_b, lm)))


__all__ = ["CHIP_PADDING", "DESCRIPTOR_DIM", "SAME_PERSON_THRESHOLD", "descriptor_distance", "face_descriptor",
           "identity_distance"]
