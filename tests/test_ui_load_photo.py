"""The editor's "load a photo" (issue 13 §3): a photograph's face is detected, Deep3D-aligned, read by a 3DMM fit
and embedded (PIE or the W+ projector) into the editor's own generator; the embedding becomes the source.

Photographs: scikit-image's astronaut.png (one face) and chelsea.png (a cat: no human face). References,
independent of the model's code: ``cddfm3d.photo.align_photo`` / ``photo_to_coefficients`` and
``cddfm3d.adapt.pie_embed`` / ``project`` called directly on the same crop and seed, the generator's own
``synthesis_from_styles``, T called directly, a fresh ``FaceEditor.edit`` from scratch, numpy float64 block means for
the crop's reduction, and dlib's descriptors recomputed with the landmarks scaled by hand. Embeddings use a few steps
(this file tests the plumbing; PIE, the projector and the fit have their own tests).
"""
from __future__ import annotations

import datetime
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cddfm3d.editing import ATTRIBUTE_SLICES
from cddfm3d.editing.face_editor import FaceEditor
from cddfm3d.images import from_uint8, to_uint8
from cddfm3d.ui import EditorModel
from cddfm3d.ui import model as model_module
from cddfm3d.ui.image_input import to_resolution

STEPS = 4            # embedding steps in this file (PIE: 3 in W, 1 in W+)
FIT_STEPS = 10       # 3DMM fit steps
@pytest.fixture(scope="module")
def astronaut(photo, photo_data) -> Path:
    return photo_data / "astronaut.png"


@pytest.fixture(scope="module")
def chelsea(photo, photo_data) -> Path:
    return photo_data / "chelsea.png"


@pytest.fixture(scope="module")
def m():
    threads = torch.get_num_threads()
    yield EditorModel.from_assets("mini")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def loaded(m, astronaut):
    """(the PIE result of load_photo on the astronaut, the model's state right after)."""
    m.load_sample(5)
    result = m.load_photo(astronaut, steps=STEPS, fit_steps=FIT_STEPS)
    state = {"styles": m.source_styles, "image": m.source_image, "input": m.input_image, "psnr": m.projection_psnr,
             "distance": m.photo_identity_distance, "fit": m.photo_fit}
    return result, state


@pytest.fixture(scope="module")
def crop_x(photo, astronaut) -> torch.Tensor:
    """The astronaut's aligned 128-px crop (align_photo, called directly) reduced to the generator's 64 px."""
    crop = photo.align_photo(astronaut, size=128).crop
    return to_resolution(from_uint8(torch.from_numpy(crop).permute(2, 0, 1)[None]), 64)


@pytest.fixture(scope="module")
def direct(m, crop_x):
    """pie_embed on the same crop, seed and steps, called directly with the model's FaceEditor as the rig."""
    from cddfm3d.adapt import pie_embed

    return pie_embed(m.editor.G, crop_x, steps=STEPS, editor=m.editor, seed=0, progress=False)


def hwc(x: torch.Tensor) -> np.ndarray:
    return (x[0] if x.ndim == 4 else x).permute(1, 2, 0).numpy()


# ---------------------------------------------------------------------------------------------- the source
def test_the_source_is_the_pie_embedding_of_the_aligned_crop(m, loaded, direct, crop_x, photo, astronaut):
    result, state = loaded
    assert torch.equal(state["styles"], direct.styles) and torch.equal(result.styles, direct.styles)
    assert len(result.noise) == len(direct.noise) and all(torch.equal(a, b) for a, b in
                                                          zip(result.noise, direct.noise, strict=True))
    for k in direct.energies:
        assert torch.equal(result.energies[k], direct.energies[k]), k
    G = m.editor.G
    with torch.no_grad():
        decoded = G.synthesis_from_styles(G.unflatten_styles(direct.styles), noise=list(direct.noise))
    assert np.array_equal(state["image"], hwc(to_uint8(decoded)))          # decoded with the embedding's noise maps
    assert np.array_equal(state["image"], hwc(to_uint8(direct.image)))
    assert state["psnr"] == float(direct.psnr[0]) and math.isfinite(state["psnr"])
    assert np.array_equal(state["input"], hwc(to_uint8(crop_x)))
    # the input is the 128-px crop reduced by 2 x 2 block means (float64 reference)
    crop = photo.align_photo(astronaut, size=128).crop.astype(np.float64)
    blocks = crop.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
    assert np.abs(state["input"].astype(np.float64) - blocks).max() <= 0.5 + 1e-3
    assert np.array_equal(state["fit"].crop, photo.align_photo(astronaut, size=128).crop)


def test_sliders_read_t_of_the_embedding(m, loaded, direct):
    m.reset()
    with torch.no_grad():
        P = m.editor.T(direct.styles).double()[0]
    assert np.allclose(m.source_coeffs, P.numpy(), atol=1e-6)
    yaw = math.degrees(float(P[ATTRIBUTE_SLICES["pose"].start + 1]))
    assert m.value("pose", 1) == pytest.approx(yaw, abs=1e-3)
    reference = EditorModel.from_assets("mini")
    reference.load_styles(direct.styles, noise_seed=0)
    for c in m.controls:
        key = (c.attribute, c.index)
        assert m.value(*key) == reference.value(*key) == m.source_value(*key), key
    assert m.noise_seed is None and m.domain == "human"


def test_an_edit_is_f_then_g_with_the_embeddings_noise_and_reset_gives_it_back(m, loaded, direct):
    result, state = loaded
    m.set("pose", 1, m.source_value("pose", 1) + 20)
    m.set("expression", 0, m.source_value("expression", 0) + 1.5)
    assert not np.array_equal(m.image, state["image"])
    scratch = FaceEditor(m.editor.G, m.editor.T, m.editor.manipulators)
    with torch.no_grad():
        s_g = scratch.edit(direct.styles, m.edits)
        image = m.editor.G.synthesis_from_styles(m.editor.G.unflatten_styles(s_g), noise=list(direct.noise))
    assert torch.allclose(m.styles, s_g, atol=1e-5)
    assert np.abs(m.image.astype(int) - hwc(to_uint8(image)).astype(int)).max() <= 1
    m.reset()
    assert torch.equal(m.styles, state["styles"]) and np.array_equal(m.image, state["image"])
    assert m.photo_fit is state["fit"] and m.photo_identity_distance == state["distance"]


# ---------------------------------------------------------------------------------------------- the photo's reading
def test_the_3dmm_fit_the_render_and_the_identity_distance(m, loaded, photo, astronaut):
    result, state = loaded
    fit = m.photo_fit
    assert isinstance(fit, photo.PhotoFit) and fit.coeffs.shape == (1, 257)
    assert bool(torch.isfinite(fit.coeffs).all()) and fit.lm_px_after < fit.lm_px_before
    again = photo.photo_to_coefficients(astronaut, steps=FIT_STEPS)         # the same fit, called directly
    assert torch.allclose(fit.coeffs, again.coeffs, atol=1e-5)
    # the render tile: the fit's render reduced to 64 px
    render = to_uint8(to_resolution(fit.fit.image.float().clamp(0, 1) * 2 - 1, 64))
    assert np.array_equal(m.photo_render, hwc(render)) and m.photo_render.shape == (64, 64, 3)
    assert m.photo_render[0, 0].tolist() == [0, 0, 0] and m.photo_render[32, 32].sum() > 0   # face on black
    # the distance: dlib's descriptors of the input and of the embedding with the fit's landmarks at 64 px
    lm = (fit.fit.landmarks[0].double().numpy() + 0.5) * 64 / 128 - 0.5
    d = photo.descriptor_distance(photo.face_descriptor(state["input"], lm), photo.face_descriptor(state["image"], lm))
    assert m.photo_identity_distance == pytest.approx(d, abs=1e-9)
    assert math.isfinite(d) and 0 < d < 2
    # the panel: crop | fit | embedding | edit | render
    m.reset()
    panel = m.panel(scale=1)
    tiles = [panel[:, 64 * k:64 * (k + 1)] for k in range(5)]
    assert panel.shape == (64, 5 * 64, 3)
    assert np.array_equal(tiles[0], state["input"]) and np.array_equal(tiles[1], m.photo_render)
    assert np.array_equal(tiles[2], state["image"]) and np.array_equal(tiles[3], m.image)
    assert np.array_equal(tiles[4], m.render)
    assert m.panel(scale=1, show_fit=False).shape == (64, 4 * 64, 3)


def test_progress_is_reported_once_per_embedding_step(m, astronaut):
    seen = []
    m.load_photo(astronaut, steps=STEPS, fit_steps=2, progress=lambda k, n: seen.append((k, n)))
    assert seen == [(k, STEPS) for k in range(1, STEPS + 1)]


def test_the_projector_path(m, astronaut, crop_x):
    from cddfm3d.adapt import project

    m.load_sample(1)
    result = m.load_photo(astronaut, embed="project", steps=3, fit_steps=2)
    reference = project(m.editor.G, crop_x, space="w+", steps=3, seed=0, progress=False)
    assert result.space == "w+" and torch.equal(m.source_styles, reference.styles)
    assert np.array_equal(m.source_image, hwc(to_uint8(reference.image)))
    assert m.projection_psnr == float(reference.psnr[0]) and m.noise_seed is None
    assert m.photo_fit is not None and math.isfinite(m.photo_identity_distance) and m.photo_identity_distance > 0
    m.load_sample(1)                                          # another source forgets the photo
    assert m.photo_fit is None and m.photo_identity_distance is None and m.photo_render is None
    assert m.panel(scale=1).shape == (64, 3 * 64, 3)


# ---------------------------------------------------------------------------------------------- errors
def test_a_cat_a_missing_face_and_missing_dlib_leave_the_source_unchanged(m, astronaut, chelsea, photo,
                                                                           monkeypatch):
    m.load_sample(3)
    before = m.source_styles
    with pytest.raises(photo.NoFaceError, match=r"no face found in 'chelsea.png' \(451x300\)"):
        m.load_photo(chelsea, steps=STEPS, fit_steps=2)
    with pytest.raises(photo.FaceIndexError, match=r"face index 1 is out of range: 1 face found"):
        m.load_photo(astronaut, face=1, steps=STEPS, fit_steps=2)
    with pytest.raises(FileNotFoundError):
        m.load_photo(astronaut.with_name("nope.png"))
    monkeypatch.setitem(sys.modules, "dlib", None)             # as if dlib were not installed
    with pytest.raises(ImportError, match=r"cddfm3d.photo needs dlib \(pip package 'dlib-bin'\).*cddfm3d\[photo\]"):
        m.load_photo(astronaut, steps=STEPS, fit_steps=2)
    assert torch.equal(m.source_styles, before) and m.noise_seed == 3 and m.photo_fit is None


def test_bad_options_are_refused_before_any_work(m, astronaut, monkeypatch):
    m.load_sample(4)
    calls = []
    monkeypatch.setattr("cddfm3d.photo.photo_to_coefficients", lambda *a, **k: calls.append(1))
    cases = [
        (dict(embed="gan"), r"EditorModel.load_photo: embed must be one of \['pie', 'project'\], found 'gan'"),
        (dict(steps=1), r"steps must be an int >= 2 or None \(the default\), found 1"),
        (dict(embed="project", steps=0), r"steps must be an int >= 1 or None \(the default\), found 0"),
        (dict(steps=2.5), "found 2.5"), (dict(steps=True), "found True"),
        (dict(fit_steps=0), r"fit_steps must be an int >= 1, a pair \(pose_steps, all_steps\).*found 0"),
        (dict(fit_steps=(0, 0)), r"found \(0, 0\)"), (dict(fit_steps=(1, 2, 3)), r"found \(1, 2, 3\)"),
        (dict(fit_steps=1.5), "found 1.5"),
        (dict(progress="yes"), r"progress must be True, False or a callable progress\(step, steps\)"),
        (dict(pie_options=[1]), "pie_options must be a mapping of pie_embed keyword arguments, found list"),
        (dict(pie_options={"seed": 3}), r"pie_options may not set \['seed'\]"),
        (dict(pie_options={"identity": 1}), r"pie_options \[.identity.\] are not pie_embed arguments; it takes"),
        (dict(embed="project", pie_options={"lr": 0.01}), "pie_options are pie_embed's, given with embed='project'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            m.load_photo(astronaut, **kwargs)
    assert calls == [] and m.noise_seed == 4 and m.photo_fit is None


def test_default_steps_follow_fast_mode(monkeypatch):
    from cddfm3d.adapt.pie import DEFAULT_STEPS as PIE_STEPS
    from cddfm3d.photo import DEFAULT_STEPS as FIT_STEPS_FULL

    assert EditorModel.photo_steps() == model_module.FAST_PIE_STEPS          # pytest runs in FAST mode
    assert EditorModel.photo_steps("project") == model_module.FAST_PROJECTION_STEPS
    assert EditorModel.photo_fit_steps() == model_module.FAST_FIT_STEPS
    monkeypatch.setenv("CDDFM3D_FAST", "0")
    assert EditorModel.photo_steps() == PIE_STEPS == 300 and EditorModel.photo_fit_steps() == FIT_STEPS_FULL == 300
    assert EditorModel.photo_steps("project") == EditorModel.projection_steps() == 300
    with pytest.raises(ValueError, match=r"embed must be one of \['pie', 'project'\], found 'w\+'"):
        EditorModel.photo_steps("w+")


# ---------------------------------------------------------------------------------------------- view
def upload(editor, name: str, data: bytes) -> None:
    editor.upload.value = ({"name": name, "type": "image/png", "size": len(data), "content": memoryview(data),
                            "last_modified": datetime.datetime.now(datetime.UTC)},)


def test_the_view_loads_an_uploaded_photo_with_progress_then_the_distance(m, astronaut, chelsea, monkeypatch):
    import io

    from PIL import Image

    from cddfm3d.ui import Editor, view

    m.load_sample(2)
    editor = Editor(m, scale=1)
    row = next(w for w in editor.widget.children if editor.photo_button in getattr(w, "children", ()))
    assert list(row.children)[1:] == [editor.photo_face, editor.photo_embed, editor.photo_steps, editor.photo_button]
    assert editor.photo_steps.value == m.photo_steps("pie")
    editor.photo_embed.value = "project"
    assert editor.photo_steps.value == m.photo_steps("project")
    editor.photo_embed.value = "pie"

    editor.photo_button.click()                                          # nothing uploaded yet
    assert editor.message_text.startswith("ValueError: Load photo: no image yet") and m.noise_seed == 2

    monkeypatch.setattr(view, "PROGRESS_INTERVAL_S", 0.0)
    monkeypatch.setattr(EditorModel, "photo_fit_steps", staticmethod(lambda: 2))    # a short fit
    seen = []
    editor.message.observe(lambda change: seen.append(change["new"]), names="value")
    upload(editor, "astronaut.png", astronaut.read_bytes())
    editor.photo_steps.value = STEPS
    editor.photo_button.click()
    texts = " | ".join(seen)
    assert "reading astronaut.png: finding face 0 and fitting the 3DMM (2 steps), then the PIE (4 steps)" in texts
    assert all(f"embedding face 0 of astronaut.png (PIE): step {k}/{STEPS} (" in texts for k in range(1, STEPS + 1))
    assert editor.message_text.startswith(f"loaded face 0 of astronaut.png (PIE, {STEPS} steps, "), editor.message_text
    assert f"dlib identity distance {m.photo_identity_distance:.2f}" in editor.message_text
    assert f"PSNR {m.projection_psnr:.1f} dB" in editor.message_text and not editor.photo_button.disabled
    assert m.photo_fit is not None and m.noise_seed is None
    shown = np.asarray(Image.open(io.BytesIO(editor.image.value)).convert("RGB"))
    assert np.array_equal(shown, m.panel(scale=1)) and shown.shape == (64, 5 * 64, 3)
    for key, box in editor.boxes.items():
        assert box.value == m.value(*key) == m.source_value(*key)

    before = m.source_styles
    upload(editor, "chelsea.png", chelsea.read_bytes())
    editor.photo_button.click()
    assert editor.message_text.startswith("NoFaceError: chelsea.png: no face found in the given image bytes")
    assert torch.equal(m.source_styles, before) and not editor.photo_button.disabled
