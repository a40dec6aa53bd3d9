"""Faces in a photograph with dlib: detection boxes, 68 iBUG landmarks, and the choice of one face.

Detectors (``DETECTORS``):

* ``"hog"`` (default): dlib's frontal face detector, HOG features with a linear SVM over an image pyramid (King,
  "Max-Margin Object Detection", 2015; five sub-detectors for frontal and turned faces). Its window is 80 x 80
  px, so it finds faces of about that size and larger; ``upsample=1`` doubles the image first (faces down to
  about 40 px, at about 4x the time, and more false positives: on scikit-image's astronaut.png it also reports the
  mission patch on the suit, at score 0.12 against the face's 1.16). ``threshold`` shifts the SVM's decision value
  (0 = dlib's default; higher = stricter). Fast: about 0.02 s for a 512 x 512 photo on one CPU core.
* ``"cnn"``: dlib's MMOD CNN face detector (``mmod_human_face_detector.dat``), more robust to pose and light,
  about 1.6 s for a 512 x 512 photo on one CPU core; ``threshold`` is compared with its confidence.

Landmarks: dlib's 68-point shape predictor (an ensemble of regression trees, Kazemi and Sullivan 2014, trained on
iBUG 300-W) inside each box, in the iBUG order that :func:`cddfm3d.face3d.align.extract_5p` and the morphable
models use. Coordinates are pixels of the upright photo, x right, y down, pixel centres on integers (dlib gives
integer positions).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ..face3d.align import extract_5p
from .models import load_model, require_dlib
from .reading import load_photo

DETECTORS = ("hog", "cnn")
DETECTOR_NAMES = {"hog": "dlib's HOG frontal face detector", "cnn": "dlib's MMOD CNN face detector"}


class NoFaceError(ValueError):
    """No face was found in the photograph (the message names the photo, its size and the detector used)."""


class FaceIndexError(ValueError, IndexError):
    """The face index asked for is not among the faces found (the message says how many there are)."""


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face in a photograph.

    box: [4] float64 (left, top, right, bottom) in pixels of the upright photo, dlib's rectangle: right and bottom
    are the last column and row inside, so the width is right - left + 1 (the box may reach outside the photo).
    score: the detector's decision value (HOG: SVM score; CNN: confidence); larger is surer.
    landmarks: [68, 2] float64 iBUG points (x, y), pixels of the photo (y down).
    detector: the detector that found it (a key of ``DETECTORS``).
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    detector: str = "hog"

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0] + 1)

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1] + 1)

    @property
    def area(self) -> float:
        """Box area in square pixels (the order of :func:`detect_faces`)."""
        return self.width * self.height

    @property
    def landmarks5(self) -> np.ndarray:
        """[5, 2] alignment points from the 68 (:func:`cddfm3d.face3d.align.extract_5p`, Deep3D's choice): eye
        centres (image-left, image-right), nose tip, mouth corners."""
        return extract_5p(self.landmarks)


def _check_options(detector, upsample, threshold, who: str) -> None:
    if detector not in DETECTORS:
        raise ValueError(f"{who}: detector must be one of {DETECTORS}, found {detector!r}")
    if isinstance(upsample, bool) or not isinstance(upsample, numbers.Integral) or not 0 <= upsample <= 3:
        raise ValueError(f"{who}: upsample must be an int in [0, 3] (times the photo is doubled before detection), "
                         f"found {upsample!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not np.isfinite(threshold):
        raise ValueError(f"{who}: threshold must be a finite number, found {threshold!r}")


def _detect(image: np.ndarray, detector: str, upsample: int, threshold: float) -> list[Face]:
    """Detections on the RGB uint8 image, largest box first (ties: higher score first)."""
    dlib = require_dlib()

    if detector == "hog":
        rects, scores, _ = load_model("hog_detector").run(image, int(upsample), float(threshold))
        found = list(zip(rects, scores, strict=True))
    else:
        found = [(d.rect, d.confidence) for d in load_model("cnn_detector")(image, int(upsample))
                 if d.confidence >= threshold]
    predictor = load_model("landmarks68")
    faces = []
    for rect, score in found:
        r = dlib.rectangle(rect.left(), rect.top(), rect.right(), rect.bottom())
        shape = predictor(image, r)
        lm = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
        box = np.array([r.left(), r.top(), r.right(), r.bottom()], np.float64)
        faces.append(Face(box, float(score), lm, detector))
    faces.sort(key=lambda f: (-f.area, -f.score))
    return faces


def detect_faces(photo, detector: str = "hog", upsample: int = 0, threshold: float = 0.0) -> list[Face]:
    """Every face dlib finds in ``photo`` (a path, image bytes or a uint8 array; :func:`read_photo`), each with
    its 68 landmarks, sorted by box area, largest first; equal areas (common: HOG boxes come in the sizes of its
    pyramid levels) by score, surest first. An empty list when there is none.

    ``detector``: ``"hog"`` or ``"cnn"`` (module docstring); ``upsample``: 0..3 doublings of the photo before
    detection; ``threshold``: HOG decision-value offset, or the CNN's minimum confidence.
    Raises ``ValueError`` for bad options and as :func:`read_photo` for a bad photo; ``ImportError`` (naming
    the pip package) without dlib or its model files."""
    _check_options(detector, upsample, threshold, "detect_faces")
    image, _ = load_photo(photo, "detect_faces")
    return _detect(image, detector, upsample, threshold)


def choose_face(faces: list[Face], face="largest", source: str = "the photo", detector: str = "hog",
                upsample: int = 0) -> Face:
    """One of ``faces`` (as :func:`detect_faces` returns them, largest first): ``face="largest"`` (the first) or an
    int index into the list (negative counts from the end, as Python). ``source``, ``detector`` and ``upsample``
    only word the messages.

    Raises :class:`NoFaceError` (a ``ValueError``) when ``faces`` is empty, :class:`FaceIndexError` (a
    ``ValueError`` and ``IndexError``) for an index outside the list, saying how many faces were found, and
    ``ValueError`` for another kind of ``face``."""
    if not (face == "largest" if isinstance(face, str) else
            isinstance(face, numbers.Integral) and not isinstance(face, bool)):
        raise ValueError(f"choose_face: face must be 'largest' or an int index into the faces found (largest first), "
                         f"found {face!r}")
    if not faces:
        hint = ("; for faces smaller than about 80 px try upsample=1, for turned or dim faces detector='cnn'"
                if detector == "hog" else "; for small faces try upsample=1")
        raise NoFaceError(f"no face found in {source} by {DETECTOR_NAMES.get(detector, detector)} "
                          f"(upsample={upsample}){hint}")
    if face == "largest":
        return faces[0]
    n = len(faces)
    if not -n <= face < n:
        sizes = ", ".join(f"{f.width:.0f}x{f.height:.0f}" for f in faces)
        raise FaceIndexError(f"face index {face} is out of range: {n} face{'s' if n != 1 else ''} found in {source} "
                             f"(valid indices 0..{n - 1}, largest first; box sizes {sizes} px)")
    return faces[int(face)]


def find_face(photo, face="largest", detector: str = "hog", upsample: int = 0,
              threshold: float = 0.0) -> tuple[np.ndarray, Face]:
    """(the upright RGB photo [H, W, 3] uint8, the chosen :class:`Face`): :func:`detect_faces` then
    :func:`choose_face`. Raises as both; a :class:`NoFaceError` names the photo (file name or array size)."""
    image, _, chosen = _find_face(photo, face, detector, upsample, threshold, "find_face")
    return image, chosen


def _find_face(photo, face, detector, upsample, threshold, who: str) -> tuple[np.ndarray, str, Face]:
    _check_options(detector, upsample, threshold, who)
    image, label = load_photo(photo, who)
    faces = _detect(image, detector, upsample, threshold)
    source = f"{label} ({image.shape[1]}x{image.shape[0]})" if label.startswith("'") else label
    return image, source, choose_face(faces, face, source, detector, upsample)


__all__ = ["DETECTORS", "Face", "FaceIndexError", "NoFaceError", "choose_face", "detect_faces", "find_face"]
