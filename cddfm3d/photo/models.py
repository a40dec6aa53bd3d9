"""dlib and the model files of ``face-recognition-models``: found on disk, checked, loaded once per process.

The four model files ship inside the ``face-recognition-models`` wheel (the ``photo`` extra) under
``face_recognition_models/models/``. That package's own ``__init__`` imports ``pkg_resources``, which current
setuptools no longer provides, so the folder is found from the import system's record of the package
(``importlib.util.find_spec(...).submodule_search_locations``) without importing it. Nothing is downloaded.

Models (``MODEL_FILES``): ``"landmarks68"`` (iBUG 300-W 68-point shape predictor), ``"landmarks5"`` (5-point shape
predictor), ``"descriptor"`` (ResNet producing the 128-D face descriptor), ``"cnn_detector"`` (MMOD CNN face
detector). The HOG frontal face detector is built into dlib (no file).
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
from pathlib import Path

MODELS_PACKAGE = "face_recognition_models"
MODEL_FILES = {
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "descriptor": "dlib_face_recognition_resnet_model_v1.dat",
    "cnn_detector": "mmod_human_face_detector.dat",
}
INSTALL_HINT = "pip install 'cddfm3d[photo]'"


def require_dlib():
    """The imported ``dlib`` module. Raises ``ImportError`` naming the pip package (``dlib-bin``) and the extra
    when dlib is not installed."""
    try:
        return importlib.import_module("dlib")
    except ImportError as e:
        raise ImportError(f"cddfm3d.photo needs dlib (pip package 'dlib-bin'), which is not installed ({e}); "
                          f"install the photo extra: {INSTALL_HINT}") from None


def models_dir() -> Path:
    """The folder holding the ``face-recognition-models`` files (found without importing that package). Raises
    ``ImportError`` naming the pip package and the extra when it is not installed."""
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        d = Path(loc) / "models"
        if d.is_dir():
            return d
    raise ImportError(f"cddfm3d.photo needs the dlib model files of the pip package 'face-recognition-models', "
                      f"which is not installed (no {MODELS_PACKAGE}/models folder on the import path); install "
                      f"the photo extra: {INSTALL_HINT}")


def model_path(name: str) -> Path:
    """The path of model ``name`` (a key of ``MODEL_FILES``). Raises ``ValueError`` for an unknown name and
    ``ImportError`` when the package or the file is missing (a broken install)."""
    if name not in MODEL_FILES:
        raise ValueError(f"model_path: unknown model {name!r}; expected one of {sorted(MODEL_FILES)}")
    p = models_dir() / MODEL_FILES[name]
    if not p.is_file():
        raise ImportError(f"cddfm3d.photo: the model file {str(p)!r} of the pip package 'face-recognition-models' "
                          f"is missing; reinstall it: pip install --force-reinstall face-recognition-models")
    return p


@functools.cache
def load_model(name: str):
    """The dlib object of model ``name``, loaded once per process and shared (dlib's models are read-only):
    ``"hog_detector"`` (``dlib.get_frontal_face_detector()``), ``"cnn_detector"``
    (``dlib.cnn_face_detection_model_v1``), ``"landmarks68"`` / ``"landmarks5"`` (``dlib.shape_predictor``),
    ``"descriptor"`` (``dlib.face_recognition_model_v1``). Raises as :func:`require_dlib` and :func:`model_path`."""
    dlib = require_dlib()
    if name == "hog_detector":
        return dlib.get_frontal_face_detector()
    path = str(model_path(name))
    if name == "cnn_detector":
        return dlib.cnn_face_detection_model_v1(path)
    if name in ("landmarks68", "landmarks5"):
        return dlib.shape_predictor(path)
    return dlib.face_recognition_model_v1(path)


__all__ = ["INSTALL_HINT", "MODEL_FILES", "load_model", "model_path", "models_dir", "require_dlib"]
