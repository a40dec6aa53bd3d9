"""The editor's "load an image" (issue 12 §4): an image of a domain is projected into that domain's generator and
edited with the human world's T and F^i, decoded by the domain's generator with the projection's noise maps.

The domain generators here are stand-ins (``mini/generator_toon`` / ``_sketch`` are shipped by another part of the
issue): a copy of ``mini/generator`` whose synthesis weights (not the affines, not the mapping) are scaled, i.e. a
latent-consistent generator that draws other images from the same s. References, independent of the model's code:
the stand-in's own ``synthesis_from_styles`` of the projection's styles and noise, T called directly, a fresh
``FaceEditor`` over the stand-in doing ``edit`` from scratch, a fresh model for ``load_sample``, numpy float64 for
the image conversions (block means, adaptive windows, bilinear weights, alpha compositing), and files written and
read back with imageio. Projections use few steps (this file tests the plumbing; the projector has its own tests).
"""
from __future__ import annotations

import copy
import datetime
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

import cddfm3d.assets.manifest as manifest
from cddfm3d import assets
from cddfm3d.assets import AssetError
from cddfm3d.editing import ATTRIBUTE_SLICES
from cddfm3d.editing.face_editor import FaceEditor
from cddfm3d.images import from_uint8, to_uint8
from cddfm3d.stylegan2 import Generator
from cddfm3d.ui import Editor, EditorModel
from cddfm3d.ui import image_input, model as model_module, view
from cddfm3d.world import render, sample_coeffs

STEPS = 6          # projection steps in this file


def stand_in(G: Generator, factor: float) -> Generator:
    """A latent-consistent stand-in for a fine-tuned domain generator: ``G`` with every synthesis weight outside
    the modulation affines scaled by ``factor`` (mapping and affines bitwise ``G``'s)."""
    out = copy.deepcopy(G).eval()
    with torch.no_grad():
        for name, p in out.named_parameters():
            if name.startswith("synthesis_network.") and ".affine." not in name:
                p.mul_(factor)
    return out


def hwc(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).numpy() if x.ndim == 4 else x.permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def human():
    threads = torch.get_num_threads()
    yield assets.load("mini/generator").eval()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def toon(human):
    return stand_in(human, 0.9)


@pytest.fixture(scope="module")
def m(toon):
    return EditorModel.from_assets("mini", domain_generators={"toon": toon})


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A 64 px render of the mini world (uint8 [64, 64, 3]): the kind of image a person loads."""
    return hwc(to_uint8(render(sample_coeffs(1, seed=7), "human", size=64, seed=7))).copy()


@pytest.fixture(scope="module")
def projected(m, face):
    """(ProjectionResult, the model's state right after loading ``face`` as a toon)."""
    proj = m.load_image(face, domain="toon", steps=STEPS)
    state = {"styles": m.source_styles, "image": m.source_image, "input": m.input_image, "coeffs": m.source_coeffs,
             "psnr": m.projection_psnr, "values": {(c.attribute, c.index): m.value(c.attribute, c.index)
                                                   for c in m.controls}}
    return proj, state


def same_source(m, proj, state) -> None:
    assert torch.equal(m.source_styles, state["styles"])
    assert np.array_equal(m.source_image, state["image"]) and np.array_equal(m.input_image, state["input"])
    assert m.projection_psnr == state["psnr"] and m.domain == "toon" and m.noise_seed is None


# ---------------------------------------------------------------------------------------------- model: sources
def test_the_same_pixels_as_array_tensor_or_png_give_the_same_source(m, face, projected, tmp_path):
    proj, state = projected
    assert np.array_equal(state["input"], face)                         # 64 px: not resized
    x = from_uint8(torch.from_numpy(face).permute(2, 0, 1))
    png = tmp_path / "face.png"
    import imageio.v3 as iio

    iio.imwrite(png, face)
    rgba = np.concatenate([face, np.full((64, 64, 1), 255, np.uint8)], axis=2)
    for given in (x, x[None], png, str(png), rgba):
        other = m.load_image(given, domain="toon", steps=STEPS)
        for a, b in zip(other.noise, proj.noise, strict=True):
            assert torch.equal(a, b)
        same_source(m, proj, state)


def test_the_source_is_the_domain_generators_decode_of_the_projection(m, face, projected, toon, human):
    proj, state = projected
    m.load_image(face, domain="toon", steps=STEPS)
    s = proj.styles
    assert torch.equal(m.source_styles, s) and m.domain == "toon" and m.noise_seed is None
    with torch.no_grad():
        decoded = toon.synthesis_from_styles(toon.unflatten_styles(s), noise=list(proj.noise))
        as_human = human.synthesis_from_styles(human.unflatten_styles(s), noise=list(proj.noise))
    assert np.array_equal(m.source_image, hwc(to_uint8(decoded)))
    assert np.array_equal(m.source_image, hwc(to_uint8(proj.image)))
    assert np.array_equal(m.image, m.source_image)
    assert not np.array_equal(m.source_image, hwc(to_uint8(as_human)))     # the toon generator decoded it
    target = from_uint8(torch.from_numpy(face).permute(2, 0, 1)[None]).double()
    mse = float((proj.image.double() - target).square().mean())
    assert m.projection_psnr == pytest.approx(10 * math.log10(4 / mse), abs=1e-3)
    assert m.projection_psnr == float(proj.psnr[0]) and 10 < m.projection_psnr < 60


def test_sliders_start_at_T_of_the_projection_as_load_styles_maps_them(m, face, projected):
    proj, state = projected
    m.load_image(face, domain="toon", steps=STEPS)
    with torch.no_grad():
        P = m.editor.T(proj.styles).double()[0]
    assert np.allclose(m.source_coeffs, P.numpy(), atol=1e-6)
    assert m.value("pose", 1) == pytest.approx(math.degrees(float(P[ATTRIBUTE_SLICES["pose"].start + 1])), abs=1e-3)
    reference = EditorModel.from_assets("mini")
    reference.load_styles(proj.styles, noise_seed=0)                  # the same styles through load_styles
    for c in m.controls:
        key = (c.attribute, c.index)
        assert m.value(*key) == reference.value(*key) == state["values"][key], key
        assert m.source_value(*key) == reference.source_value(*key), key


def test_an_edit_is_f_then_the_domain_generator_and_reset_gives_the_projection_back(m, face, projected, toon):
    proj, state = projected
    m.load_image(face, domain="toon", steps=STEPS)
    used = m.set("pose", 1, m.source_value("pose", 1) + 20)
    m.set("expression", 0, m.source_value("expression", 0) + 1.5)
    assert not np.array_equal(m.image, m.source_image)
    scratch = FaceEditor(toon, m.editor.T, m.editor.manipulators)      # edit + decode from scratch
    with torch.no_grad():
        s_g = scratch.edit(proj.styles, m.edits)
        want = toon.synthesis_from_styles(toon.unflatten_styles(s_g), noise=list(proj.noise))
    assert torch.allclose(m.styles, s_g, atol=1e-5)
    assert np.abs(m.image.astype(int) - hwc(to_uint8(want)).astype(int)).max() <= 1
    assert m.value("pose", 1) == used
    frames = m.clip_frames(3)
    assert np.array_equal(frames[0], m.source_image) and np.array_equal(frames[-1], m.image)
    m.reset()
    assert np.array_equal(m.image, state["image"]) and torch.equal(m.styles, proj.styles)
    panel = m.panel(show_render=False, scale=1)                        # input | projection | edit
    assert np.array_equal(panel, np.concatenate([face, state["image"], state["image"]], axis=1))
    assert m.panel(show_render=False, scale=1, show_input=False).shape == (64, 128, 3)


def test_load_sample_afterwards_is_exactly_a_fresh_models(m, face, projected):
    m.load_image(face, domain="toon", steps=STEPS)
    fresh = EditorModel.from_assets("mini")
    for model in (m, fresh):
        model.load_sample(5)
        model.set("pose", 1, 10.0)
    assert m.domain == fresh.domain == "human" and m.noise_seed == 5
    assert m.input_image is None and m.projection_psnr is None
    assert torch.equal(m.source_styles, fresh.source_styles)
    assert np.array_equal(m.source_image, fresh.source_image) and np.array_equal(m.image, fresh.image)
    assert np.array_equal(m.panel(), fresh.panel())
    m.load_styles(fresh.source_styles, noise_seed=5)
    assert np.array_equal(m.source_image, fresh.source_image) and m.domain == "human"


def test_each_domain_decodes_with_its_own_generator_and_human_is_the_models(m, face, human, toon):
    proj = m.load_image(face, domain="human", steps=STEPS)
    assert m.domain == "human" and m.generator("human") is m.editor.G
    with torch.no_grad():
        decoded = human.synthesis_from_styles(human.unflatten_styles(proj.styles), noise=list(proj.noise))
    assert np.array_equal(m.source_image, hwc(to_uint8(decoded)))
    assert m.generator("toon") is toon
    assert m.domains == ["human", "toon", "sketch"]
    assert "toon" in m.available_domains() and m.available_domains()[0] == "human"


def test_domain_generators_are_loaded_once_when_first_used(toon, face, monkeypatch):
    sketch = stand_in(toon, 1.1)
    loaded = []
    real_load = assets.load

    def load(name, *args, **kwargs):
        loaded.append(name)
        return sketch if name == "mini/generator_sketch" else real_load(name, *args, **kwargs)

    monkeypatch.setattr(assets, "load", load)
    other = EditorModel.from_assets("mini")
    assert "mini/generator_sketch" not in loaded
    other.load_image(face, domain="sketch", steps=2)
    other.load_image(face, domain="human", steps=2)
    other.load_image(face, domain="sketch", steps=2)
    assert loaded.count("mini/generator_sketch") == 1 and other.generator("sketch") is sketch
    assert other.domain == "sketch" and "sketch" in other.available_domains()


def test_a_missing_domain_generator_names_the_commands_that_make_it(face, monkeypatch):
    real = manifest.read_manifest()

    def without_domains():
        return {**real, "assets": {k: v for k, v in real["assets"].items() if not k.startswith("mini/generator_")}}

    monkeypatch.setattr(manifest, "read_manifest", without_domains)
    other = EditorModel.from_assets("mini")
    other.load_sample(3)
    assert other.available_domains() == ["human"]
    with pytest.raises(AssetError) as info:            # an AssetError is a FileNotFoundError
        other.load_image(face, domain="sketch", steps=2)
    text = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for part in ("EditorModel.load_image: the sketch domain has no generator", "unknown asset 'mini/generator_sketch'",
                 "finetune --data", "--domain sketch", "ship-domain --domain sketch", "domain_generators"):
        assert part in text, part
    assert other.noise_seed == 3 and other.domain == "human"       # the source is unchanged


def test_progress_is_reported_once_per_step(m, face):
    seen = []
    m.load_image(face, domain="toon", steps=STEPS, progress=lambda step, steps: seen.append((step, steps)))
    assert seen == [(k, STEPS) for k in range(1, STEPS + 1)]
    m.load_image(face, domain="toon", steps=1, progress=True)           # the projector's own bar


def test_default_steps_follow_fast_mode(monkeypatch):
    from cddfm3d.adapt.projection import DEFAULT_STEPS

    monkeypatch.setenv("CDDFM3D_FAST", "1")
    assert EditorModel.projection_steps() == model_module.FAST_PROJECTION_STEPS == 30
    monkeypatch.setenv("CDDFM3D_FAST", "0")
    assert EditorModel.projection_steps() == DEFAULT_STEPS == 300


def test_bad_requests_are_refused_before_projecting(m, face, toon, tmp_path, monkeypatch):
    m.load_sample(8)
    calls = []
    monkeypatch.setattr("cddfm3d.adapt.projection.project", lambda *a, **k: calls.append(1))
    cases = [
        (dict(domain="oil"), ValueError, r"EditorModel.load_image: unknown domain 'oil'; expected one of "
                                         r"\['human', 'toon', 'sketch'\]"),
        (dict(domain=None), ValueError, "unknown domain None"),
        (dict(space="z"), ValueError, r"space must be one of \['w', 'w\+', 's'\], found 'z'"),
        (dict(steps=0), ValueError, r"steps must be an int >= 1 or None \(the default\), found 0"),
        (dict(steps=2.5), ValueError, "found 2.5"), (dict(steps=True), ValueError, "found True"),
        (dict(progress="yes"), ValueError, r"progress must be True, False or a callable progress\(step, steps\)"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            m.load_image(face, **{"domain": "toon", **kwargs})
    images = [
        (tmp_path / "nope.png", FileNotFoundError, r"EditorModel.load_image: image file '.*nope.png' not found"),
        (tmp_path, ValueError, "is a folder, not an image file"),
        (face.astype(np.float32), ValueError, r"a numpy image must be uint8 0..255, found float32 \(64, 64, 3\) "
                                              r"\(for a float image give a torch tensor"),
        (face[:, :, :2], ValueError, r"must be \[H, W, 3\] .* found shape \(64, 64, 2\)"),
        (face[None], ValueError, r"found shape \(1, 64, 64, 3\)"),
        (torch.from_numpy(face).permute(2, 0, 1), ValueError, r"floating point in \[-1, 1\], found torch.uint8 "
                                                              r"\(3, 64, 64\) \(uint8 0..255: "),
        (torch.zeros(64, 64, 3), ValueError, r"found \(64, 64, 3\); channels first: x.permute\(2, 0, 1\)"),
        (torch.zeros(2, 3, 64, 64), ValueError, r"found \(2, 3, 64, 64\); one image at a time"),
        (torch.full((3, 64, 64), 2.0), ValueError, r"values in \[-1, 1\], found \[2, 2\] \(from \[0, 1\]"),
        (torch.full((3, 64, 64), float("nan")), ValueError, "NaN or Inf"),
        (np.zeros((0, 5, 3), np.uint8), ValueError, r"the image is empty, shape \(0, 5, 3\)"),
        ([[0]], ValueError, r"image must be a numpy uint8 array .* found list"),
    ]
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    images.append((garbage, ValueError, r"cannot read '.*garbage.png' as an image"))
    for image, error, message in images:
        with pytest.raises(error, match=message):
            m.load_image(image, domain="toon")
    assert calls == [] and m.noise_seed == 8 and m.domain == "human" and m.input_image is None


def test_add_domain_refuses_what_t_and_f_cannot_read(human, toon):
    editor = FaceEditor.load("mini")
    bent = copy.deepcopy(human)
    with torch.no_grad():
        next(p for n, p in bent.named_parameters() if ".affine." in n).add_(0.01)
    other_arch = Generator(**{**human.config, "mapping_layers": 2,
                              "channels": {int(k): v for k, v in human.config["channels"].items()}})
    for domain, G, message in (("human", toon, r"domain must be a non-empty name other than 'human'"),
                               ("", toon, "domain must be a non-empty name"),
                               ("toon", object(), "the toon generator must be a cddfm3d.stylegan2.Generator, found "
                                                  "object"),
                               ("toon", bent, r"maps w to s differently .*\(1 mapping / affine tensors differ"),
                               ("toon", other_arch, "the toon generator's architecture .* differs")):
        with pytest.raises(ValueError, match=message):
            EditorModel(editor, domain_generators={domain: G})
    with pytest.raises(ValueError, match="domain_generators must be a mapping"):
        EditorModel(editor, domain_generators=[toon])
    ok = EditorModel(editor, domain_generators={"oil": toon})            # any other name of a consistent G
    assert ok.domains == ["human", "toon", "sketch", "oil"] and ok.generator("oil") is toon


# ---------------------------------------------------------------------------------------------- image conversion
def test_conversion_reduces_by_area_enlarges_bilinearly_crops_and_composites():
    rng = np.random.default_rng(0)
    f64 = lambda a: a.astype(np.float64) / 127.5 - 1                 # noqa: E731 -- from_uint8 in float64
    big = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    x, what = image_input.generator_input(big, 64)
    assert what == "uint8 array 128x128 RGB" and x.shape == (1, 3, 64, 64) and x.dtype == torch.float32
    block = f64(big).reshape(64, 2, 64, 2, 3).mean((1, 3))            # exact 2 x 2 box mean
    assert np.abs(hwc(x) - block).max() < 1e-6

    odd = rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)
    x, _ = image_input.generator_input(odd, 64)
    want = np.empty((64, 64, 3))
    lo = [math.floor(i * 100 / 64) for i in range(64)]
    hi = [math.ceil((i + 1) * 100 / 64) for i in range(64)]
    for i in range(64):
        for j in range(64):
            want[i, j] = f64(odd[lo[i]:hi[i], lo[j]:hi[j]]).mean((0, 1))
    assert np.abs(hwc(x) - want).max() < 1e-6

    small = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x, _ = image_input.generator_input(small, 64)
    src = np.clip((np.arange(64) + 0.5) / 2 - 0.5, 0, 31)             # half-pixel centres
    i0 = np.floor(src).astype(int)
    i1, t = np.minimum(i0 + 1, 31), src - np.floor(src)
    a = f64(small)
    rows = a[i0] * (1 - t)[:, None, None] + a[i1] * t[:, None, None]
    want = rows[:, i0] * (1 - t)[None, :, None] + rows[:, i1] * t[None, :, None]
    assert np.abs(hwc(x) - want).max() < 1e-5

    wide = rng.integers(0, 256, (64, 81, 3), dtype=np.uint8)          # 17 extra columns: 8 left, 9 right
    x, what = image_input.generator_input(wide, 64)
    assert what == "uint8 array 81x64 RGB" and np.abs(hwc(x) - f64(wide[:, 8:72])).max() < 1e-6

    rgba = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    x, what = image_input.generator_input(rgba, 64)
    alpha = rgba[:, :, 3:] / 255.0
    assert what.endswith("RGBA") and np.abs(hwc(x) - (f64(rgba[:, :, :3]) * alpha + (1 - alpha))).max() < 1e-6
    gray = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    for given in (gray, gray[:, :, None], from_uint8(torch.from_numpy(gray))[None]):
        x, what = image_input.generator_input(given, 64)
        assert what.endswith("grayscale") and np.abs(hwc(x) - np.repeat(f64(gray)[:, :, None], 3, 2)).max() < 1e-6


def test_files_are_read_as_imageio_reads_them(tmp_path):
    import imageio.v3 as iio

    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.png", a)
    assert np.array_equal(image_input.read_image(tmp_path / "a.png"), a)
    iio.imwrite(tmp_path / "a.jpg", a, quality=95)
    assert np.array_equal(image_input.read_image(tmp_path / "a.jpg"), iio.imread(tmp_path / "a.jpg"))
    deep = (rng.integers(0, 65536, (20, 20), dtype=np.uint16))
    Image.fromarray(deep).save(tmp_path / "deep.png")                     # 16-bit grayscale PNG
    assert np.array_equal(image_input.read_image(tmp_path / "deep.png"), np.round(deep / 257.0).astype(np.uint8))
    data = (tmp_path / "a.png").read_bytes()
    assert np.array_equal(image_input.decode_image(memoryview(data), "a.png"), a)
    with pytest.raises(ValueError, match=r"decode_image: 'x.png' is empty \(0 bytes\)"):
        image_input.decode_image(b"", "x.png")
    with pytest.raises(ValueError, match=r"decode_image: cannot read 'x.png' as an image"):
        image_input.decode_image(b"GIF89a nonsense", "x.png")


# ---------------------------------------------------------------------------------------------- view
def upload(editor, name: str, data: bytes) -> None:
    """What ipywidgets 8's FileUpload holds after the browser sent a file."""
    editor.upload.value = ({"name": name, "type": "image/png", "size": len(data), "content": memoryview(data),
                            "last_modified": datetime.datetime.now(datetime.UTC)},)


def png_of(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def shown(editor) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(editor.image.value)).convert("RGB"))


def test_the_view_projects_an_uploaded_image_with_progress_then_the_psnr(m, face, monkeypatch):
    m.load_sample(2)
    editor = Editor(m, scale=1)
    row = next(w for w in editor.widget.children if editor.upload in getattr(w, "children", ()))
    assert list(row.children) == [editor.upload, editor.domain, editor.project_steps, editor.project_button]
    assert "image/*" in editor.upload.accept and editor.upload.multiple is False
    assert list(editor.domain.options) == m.available_domains() and "toon" in editor.domain.options
    assert editor.project_steps.value == m.projection_steps()

    editor.project_button.click()                                      # nothing uploaded yet
    assert editor.message_text.startswith("ValueError: Project: no image yet") and m.noise_seed == 2

    monkeypatch.setattr(view, "PROGRESS_INTERVAL_S", 0.0)                # every step on the message line
    seen = []
    editor.message.observe(lambda change: seen.append(change["new"]), names="value")
    before, n0 = editor.image.value, editor.updates
    upload(editor, "my toon.png", png_of(face))
    editor.domain.value, editor.project_steps.value = "toon", STEPS
    editor.project_button.click()
    steps_shown = [f"step {k}/{STEPS}" for k in range(1, STEPS + 1)]
    texts = " | ".join(seen)
    assert all(f"projecting my toon.png into the toon generator: {s} (" in texts for s in steps_shown), texts
    assert seen[0].find(f"{STEPS} steps ...") > 0                          # said before the first step
    assert editor.message_text.startswith(f"projected my toon.png into the toon generator ({STEPS} steps, ")
    assert f"PSNR {m.projection_psnr:.1f} dB" in editor.message_text
    assert m.domain == "toon" and np.array_equal(m.input_image, face) and not editor.project_button.disabled
    assert editor.updates == n0 + 1 and editor.image.value != before
    panel = m.panel(show_landmarks=False, show_render=True, scale=1)
    assert np.array_equal(shown(editor), panel) and panel.shape == (64, 4 * 64, 3)
    for key, box in editor.boxes.items():
        assert box.value == m.value(*key) == m.source_value(*key)
    editor.sliders[("pose", 1)].value = m.value("pose", 1) + 10         # then it edits like any source
    assert not np.array_equal(m.image, m.source_image) and np.array_equal(shown(editor), m.panel(scale=1))
    editor.reset_all.click()
    assert np.array_equal(m.image, m.source_image)

    assert Editor(m).domain.value == "toon"                            # a new view opens on the source's domain

    upload(editor, "broken.png", b"\x89PNG broken")
    editor.project_button.click()
    assert editor.message_text.startswith("ValueError: Project: cannot read 'broken.png' as an image")
    assert m.domain == "toon" and not editor.project_button.disabled
