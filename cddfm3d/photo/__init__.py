"""Real photographs in: reading, face detection, 68 landmarks, identity descriptors, Deep3D alignment and the
3DMM fit of a photographed face, with dlib and the model files of ``face-recognition-models`` (the ``photo``
extra: ``pip install 'cddfm3d[photo]'``; nothing is downloaded at run time).

One call: ``photo_to_coefficients("face.jpg")`` -> :class:`PhotoFit` (coefficients [1, 257] of MiniFace, the fit,
the aligned crop and its landmarks, the detection, the landmark error before and after). The steps one by one:
:func:`read_photo`, :func:`detect_faces` / :func:`find_face`, :func:`align_photo` (``framing="deep3d"``, the
world's and the fit's; ``framing="ffhq"`` for a real FFHQ generator, :mod:`cddfm3d.photo.ffhq`),
:func:`face_descriptor` and :func:`descriptor_distance`. Importing this package does not need dlib; calling a
detector does (``ImportError`` naming the pip package otherwise).
"""
from .detect import DETECTORS, Face, FaceIndexError, NoFaceError, choose_face, detect_faces, find_face
from .fit import DEFAULT_SIZE, DEFAULT_STEPS, FRAMINGS, AlignedFace, PhotoFit, align_photo, photo_to_coefficients
from .identity import SAME_PERSON_THRESHOLD, descriptor_distance, face_descriptor, identity_distance
from .models import INSTALL_HINT, MODEL_FILES, model_path
from .reading import read_photo

__all__ = [
    "read_photo", "DETECTORS", "Face", "NoFaceError", "FaceIndexError", "detect_faces", "choose_face", "find_face",
    "AlignedFace", "align_photo", "PhotoFit", "photo_to_coefficients", "DEFAULT_SIZE", "DEFAULT_STEPS",
    "FRAMINGS", "face_descriptor", "descriptor_distance", "identity_distance", "SAME_PERSON_THRESHOLD", "model_path",
    "MODEL_FILES", "INSTALL_HINT",
]
