"""Fixtures shared by the photograph tests (test_photo, test_ui_load_photo, test_adapt_inversion)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

DLIB_REASON = "the photo front end needs dlib and face-recognition-models: pip install 'cddfm3d[photo]'"


@pytest.fixture(scope="session")
def photo():
    """The ``cddfm3d.photo`` module, or a skip naming the photo extra when dlib or its model files are missing."""
    pytest.importorskip("dlib", reason=DLIB_REASON)
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip(DLIB_REASON)
    import cddfm3d.photo as photo

    return photo


@pytest.fixture(scope="session")
def photo_data() -> Path:
    """scikit-image's data folder (``astronaut.png``: one face; ``chelsea.png``: a cat), found without importing
    scikit-image; a skip when it is not installed."""
    spec = importlib.util.find_spec("skimage")
    if spec is None:
        pytest.skip("the test photographs come with scikit-image: pip install 'cddfm3d[photo]'")
    return Path(next(iter(spec.submodule_search_locations))) / "data"
