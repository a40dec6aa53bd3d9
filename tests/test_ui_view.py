"""The editor's ipywidgets view (issue 11 §2) on the real mini-world model: every widget drives the model and the
displayed PNG is exactly the model's panel (decoded and compared pixel for pixel), reset restores the source bytes,
clamping and errors land on the message line, and the slider throttle coalesces a drag (asyncio loop) or updates
at once (no loop)."""
from __future__ import annotations

import asyncio
import base64
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cddfm3d.editing import ATTRIBUTE_SLICES
from cddfm3d.ui import Editor, EditorModel
from cddfm3d.ui import app, view
from cddfm3d.ui.view import png_bytes

SEED = 2
KEY = ("expression", 0)


@pytest.fixture(scope="module")
def model():
    return EditorModel.from_assets("mini", threads=1)


@pytest.fixture
def editor(model):
    model.load_sample(SEED)
    return Editor(model)


def shown(editor) -> np.ndarray:
    """The image the widget displays, decoded."""
    assert editor.image.format == "png"
    return np.asarray(Image.open(io.BytesIO(editor.image.value)).convert("RGB"))


def expected(editor) -> np.ndarray:
    m = editor.model
    return m.panel(show_landmarks=editor.show_landmarks.value, show_render=editor.show_render.value,
                   show_source=True, scale=editor.scale)


def away(model, key, by: float = 1.0) -> float:
    """A value inside the control's range, ``by`` away from the current one."""
    c = model.control(*key)
    v = model.value(*key)
    return v + by if v + by <= c.maximum else v - by


def test_png_bytes_roundtrip_and_errors():
    a = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(a)))), a)
    with pytest.raises(ValueError, match=r"uint8 image \[H, W, 3\], found float32 \[5, 7, 3\]"):
        png_bytes(a.astype(np.float32))
    with pytest.raises(ValueError, match=r"found uint8 \[5, 7\]"):
        png_bytes(a[..., 0])


def test_one_slider_per_control_grouped_by_attribute(editor, model):
    assert editor.seed.value == SEED == model.noise_seed
    keys = [(c.attribute, c.index) for c in model.controls]
    assert list(editor.sliders) == keys and list(editor.boxes) == keys
    assert editor.tabs.titles == tuple(editor.attributes) == tuple(dict.fromkeys(k[0] for k in keys))
    for c in model.controls:
        s = editor.sliders[(c.attribute, c.index)]
        assert (s.min, s.max, s.step) == (c.minimum, c.maximum, c.step)
        assert editor.boxes[(c.attribute, c.index)].value == model.source_value(c.attribute, c.index)
    assert np.array_equal(shown(editor), expected(editor))
    assert "ms" in editor.latency.value and editor.message_text == ""


def test_slider_edits_the_model_and_the_image(editor, model):
    before = editor.image.value
    v = away(model, KEY)
    editor.sliders[KEY].value = v
    assert model.value(*KEY) == v and editor.boxes[KEY].value == v
    assert editor.image.value != before
    img = shown(editor)
    assert np.array_equal(img, expected(editor))
    tile = model.image.shape[1] * editor.scale
    source_tile = np.asarray(Image.open(io.BytesIO(before)))[:, :tile]
    assert np.array_equal(img[:, :tile], source_tile)               # the source tile stays
    assert not np.array_equal(img[:, tile:2 * tile], source_tile)  # the edit moved
    assert editor.message_text == ""


def test_box_value_out_of_range_is_clamped_with_the_models_message(editor, model):
    key = ("shape", 1)
    c = model.control(*key)
    editor.boxes[key].value = c.maximum + 7
    assert model.value(*key) == c.maximum
    assert editor.sliders[key].value == c.maximum and editor.boxes[key].value == c.maximum
    with warnings.catch_warnings(record=True) as caught:   # the model's own warning for the same request
        warnings.simplefilter("always")
        model.set(*key, c.maximum + 7)
    assert editor.message_text == str(caught[0].message) and c.label in editor.message_text
    assert "warning" in editor.message.value or "#a15c00" in editor.message.value
    assert np.array_equal(shown(editor), expected(editor))


def test_reset_buttons_restore_the_source(editor, model):
    source_bytes = editor.image.value
    source_values = {k: model.value(*k) for k in editor.sliders}
    editor.sliders[KEY].value = away(model, KEY)
    yaw = ("pose", 1)
    editor.sliders[yaw].value = away(model, yaw, 10.0)
    editor.reset_buttons["expression"].click()
    assert model.value(*KEY) == source_values[KEY] and editor.boxes[KEY].value == source_values[KEY]
    assert editor.sliders[KEY].value == pytest.approx(source_values[KEY])
    assert model.value(*yaw) != source_values[yaw]                  # the other attribute keeps its edit
    assert np.array_equal(shown(editor), expected(editor)) and editor.image.value != source_bytes
    n0 = editor.updates
    editor.reset_all.click()
    assert editor.updates == n0 + 1                                   # one image; the slider syncs made no edits
    assert editor.image.value == source_bytes
    assert np.array_equal(model.image, model.source_image)
    assert {k: b.value for k, b in editor.boxes.items()} == source_values
    assert editor.message_text == "reset all attributes"


def test_toggles_change_the_panel(editor, model):
    plain = shown(editor)
    editor.show_landmarks.value = True
    dots = shown(editor)
    assert np.array_equal(dots, expected(editor)) and editor.show_landmarks.description == "Hide target landmarks"
    tip = editor.show_landmarks.tooltip
    assert "target 3DMM coefficients" in tip and "not detected on the edited face" in tip
    tile = model.image.shape[1] * editor.scale
    changed = np.any(dots != plain, axis=(0, 2))
    assert changed[tile:2 * tile].any() and not changed[:tile].any() and not changed[2 * tile:].any()
    editor.show_render.value = False
    img = shown(editor)
    assert img.shape[1] == 2 * tile and np.array_equal(img, expected(editor))
    assert editor.show_render.description == "Show 3DMM render"


def test_advanced_row(editor, model):
    before = editor.image.value
    k = ATTRIBUTE_SLICES["shape"].start + 10
    editor.advanced_attribute.value, editor.advanced_index.value, editor.advanced_value.value = "shape", 10, 2.5
    editor.advanced_apply.click()
    assert model.coeffs[k] == pytest.approx(2.5, abs=1e-6)
    assert editor.image.value != before and np.array_equal(shown(editor), expected(editor))
    assert "coefficient 10" in editor.message_text
    # a coefficient that has a slider: the slider follows the model
    old = editor.boxes[KEY].value
    editor.advanced_attribute.value, editor.advanced_index.value, editor.advanced_value.value = "expression", 0, 1.5
    editor.advanced_apply.click()
    assert editor.boxes[KEY].value == model.value(*KEY) != old
    assert model.coeffs[ATTRIBUTE_SLICES["expression"].start] == pytest.approx(1.5, abs=1e-6)
    # a bad index: the model's error on the message line, nothing changes
    shown_before = editor.image.value
    editor.advanced_index.value = 500
    editor.advanced_apply.click()
    assert editor.message_text.startswith("ValueError: ") and "500" in editor.message_text
    assert "b00020" in editor.message.value and editor.image.value == shown_before


def test_load_sample_moves_image_and_sliders(editor, model):
    before = editor.image.value
    seed0 = {k: b.value for k, b in editor.boxes.items()}
    editor.sliders[KEY].value = away(model, KEY)      # an edit, dropped by loading
    editor.seed.value = SEED + 1
    n0, m0 = editor.updates, len(model.latencies_ms)
    editor.load_button.click()
    assert editor.updates == n0 + 1 and len(model.latencies_ms) == m0   # setting the sliders made no edits
    assert editor.message_text == f"loaded sample {SEED + 1}"
    assert editor.image.value != before and np.array_equal(shown(editor), expected(editor))
    assert np.array_equal(model.image, model.source_image)
    moved = 0
    for key, box in editor.boxes.items():
        c = model.control(*key)
        assert box.value == model.source_value(*key)
        assert editor.sliders[key].value == pytest.approx(min(max(box.value, c.minimum), c.maximum))
        moved += box.value != seed0[key]
    assert moved >= len(editor.boxes) // 2


def downloaded(editor) -> tuple[str, bytes]:
    """The file name and bytes the page's download link hands over (parsed from its HTML)."""
    text = editor.clip_download.value
    name = text.split('download="', 1)[1].split('"', 1)[0]
    mime, data = text.split('href="data:', 1)[1].split('"', 1)[0].split(";base64,")
    return name, mime, base64.b64decode(data)


def test_save_clip_shows_the_written_file_with_a_download_link(editor, model, tmp_path):
    import imageio.v3 as iio

    assert editor.clip_image.layout.display == "none" and editor.clip_download.value == ""   # nothing saved yet
    editor.sliders[("pose", 1)].value = away(model, ("pose", 1), 20.0)
    editor.clip_path.value, editor.clip_frames.value = str(tmp_path / "c.gif"), 6
    editor.clip_button.click()
    data = (tmp_path / "c.gif").read_bytes()
    assert editor.message_text == f"wrote {(tmp_path / 'c.gif').resolve()} ({len(data) / 1024:.0f} kB)"
    frames = iio.imread(tmp_path / "c.gif", index=None)
    assert 2 <= len(frames) <= 6 and frames.shape[1:3] == model.image.shape[:2]
    assert editor.clip_image.format == "gif" and editor.clip_image.value == data      # the page shows that file
    assert editor.clip_image.layout.display is None and editor.clip_video.layout.display == "none"
    assert downloaded(editor) == ("c.gif", "image/gif", data)
    # an MP4 goes to the video widget, and the GIF is taken off the page
    editor.clip_path.value = str(tmp_path / "c.mp4")
    editor.clip_button.click()
    data = (tmp_path / "c.mp4").read_bytes()
    assert editor.message_text.startswith(f"wrote {(tmp_path / 'c.mp4').resolve()} (")
    assert editor.clip_video.format == "mp4" and editor.clip_video.value == data
    assert editor.clip_video.layout.display is None
    assert editor.clip_image.layout.display == "none" and editor.clip_image.value == b""
    assert downloaded(editor) == ("c.mp4", "video/mp4", data)


def test_save_clip_errors_and_the_size_limit(editor, model, tmp_path, monkeypatch):
    editor.clip_path.value, editor.clip_frames.value = str(tmp_path / "c.txt"), 4
    editor.clip_button.click()
    assert editor.message_text.startswith("ValueError: ") and "c.txt" in editor.message_text
    assert not (tmp_path / "c.txt").exists() and editor.clip_download.value == ""
    monkeypatch.setattr(view, "MAX_CLIP_SHOW_BYTES", 100)
    editor.clip_path.value = str(tmp_path / "big.gif")
    editor.clip_button.click()
    size = (tmp_path / "big.gif").stat().st_size
    assert size > 100
    assert editor.message_text.startswith(f"wrote {(tmp_path / 'big.gif').resolve()} (")
    assert "not shown or offered for download" in editor.message_text
    assert "open it from that path" in editor.message_text
    assert editor.clip_download.value == "" and editor.clip_image.value == b""
    assert editor.clip_image.layout.display == "none"


def test_clip_path_defaults_to_a_full_path(model, tmp_path, monkeypatch):
    monkeypatch.delenv(app.CLIP_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    model.load_sample(SEED)
    assert Editor(model).clip_path.value == str(tmp_path.resolve() / "edit.gif")
    assert Editor(model, clip_path="sub/x.MP4").clip_path.value == str(tmp_path.resolve() / "sub" / "x.MP4")
    folder = tmp_path / "clips"
    monkeypatch.setenv(app.CLIP_DIR_ENV, str(folder))   # what `python -m cddfm3d editor` passes to the kernel
    assert Editor(model).clip_path.value == str(folder.resolve() / "edit.gif") == str(view.default_clip_path())


def test_no_loop_updates_at_once(editor, model):
    n0 = editor.updates
    for i, step in enumerate((0.5, 1.0, 1.5)):
        v = away(model, KEY, step) if i == 0 else editor.sliders[KEY].value + 0.5 * np.sign(step)
        v = float(np.clip(v, -3, 3))
        editor.sliders[KEY].value = v
        assert editor.updates == n0 + i + 1 and model.value(*KEY) == v
        assert np.array_equal(shown(editor), expected(editor))


def test_loop_throttles_a_drag_with_a_trailing_update(model):
    model.load_sample(SEED)
    c = model.control(*KEY)
    start = model.value(*KEY)
    direction = 1.0 if start < 0 else -1.0
    values = [float(np.clip(start + direction * 0.2 * i, c.minimum, c.maximum)) for i in range(1, 7)]
    interval_ms = 50.0

    async def drag():
        editor = Editor(model, interval_ms=interval_ms)
        n0, m0 = editor.updates, len(model.latencies_ms)
        for v in values:                                   # a fast drag: six events with no pause between them
            editor.sliders[KEY].value = v
        assert editor.updates == n0 + 1 and model.value(*KEY) == values[0]     # the first at once
        assert editor.boxes[KEY].value == values[-1]       # the number box follows every event
        await asyncio.sleep(interval_ms / 1000 * 6)
        assert editor.updates == n0 + 2 and model.value(*KEY) == values[-1]    # the trailing one: the last value
        assert len(model.latencies_ms) == m0 + 2           # the four in between never reached the model
        assert np.array_equal(shown(editor), expected(editor))
        await asyncio.sleep(interval_ms / 1000 * 2)        # idle longer than the interval: the next is immediate
        editor.sliders[KEY].value = values[0]
        assert editor.updates == n0 + 3 and model.value(*KEY) == values[0]
        editor.sliders[KEY].value = values[1]              # ... and one right after it waits for the timer
        assert editor.updates == n0 + 3
        editor.reset_all.click()                           # a button applies or drops the pending value first
        assert editor.updates == n0 + 5 and model.value(*KEY) == start
        await asyncio.sleep(interval_ms / 1000 * 3)        # no stale trailing update after the reset
        assert editor.updates == n0 + 5 and model.value(*KEY) == start

    asyncio.run(drag())


@pytest.mark.parametrize("kwargs, error, message", [
    ({"scale": 0}, ValueError, r"Editor: scale must be an int in \[1, 16\], found 0"),
    ({"scale": 17}, ValueError, r"scale must be an int in \[1, 16\], found 17"),   # the panel's own limit
    ({"scale": "a"}, ValueError, r"Editor: scale must be an int in \[1, 16\], found 'a'"),
    ({"scale": 2.0}, ValueError, r"Editor: scale must be an int .* found 2.0"),
    ({"scale": True}, ValueError, r"Editor: scale must be an int .* found True"),
    ({"interval_ms": 0}, ValueError, r"Editor: interval_ms must be a finite number of milliseconds > 0, found 0"),
    ({"interval_ms": float("nan")}, ValueError, r"interval_ms must be a finite number .* found nan"),
    ({"interval_ms": "5"}, TypeError, r"Editor: interval_ms must be a number of milliseconds > 0, found str '5'"),
    ({"seed": -1}, ValueError, r"Editor: seed must be an int in \[0, 2147483647\] or None, found -1"),
    ({"seed": 2 ** 31}, ValueError, r"seed must be an int in \[0, 2147483647\] or None, found 2147483648"),
    ({"seed": 1.5}, TypeError, r"Editor: seed must be an int .* found float 1.5"),
    ({"clip_path": "x.txt"}, ValueError, r"Editor: clip_path must end in one of \['.gif', '.mp4'\], found 'x.txt'"),
    ({"clip_path": 3}, TypeError, r"Editor: clip_path must be a str or path .* found int 3"),
])
def test_bad_arguments(model, kwargs, error, message):
    model.load_sample(SEED)
    with pytest.raises(error, match=message):
        Editor(model, **kwargs)


def test_good_arguments_of_other_int_types(model):
    model.load_sample(SEED)
    e = Editor(model, scale=np.int64(2), interval_ms=np.float32(25), seed=np.int32(7), clip_path=Path("a.gif"))
    assert (e.scale, e.interval_s, e.seed.value) == (2, 0.025, 7) and type(e.scale) is int
    assert shown(e).shape[0] == model.image.shape[0] * 2


def test_the_browsers_snap_of_a_slider_is_not_an_edit(editor, model):
    """A browser draws a slider at a source value between grid points at the nearest grid point and sends that
    value back: no edit (the model, the box and the image keep the source); a real move one step on is an edit."""
    key = ("shape", 0)
    s = editor.sliders[key]
    source = model.value(*key)
    grid = s.min + round((source - s.min) / s.step) * s.step
    assert abs(grid - source) > 1e-6                    # the seed's value is off the grid
    n0, image = editor.updates, editor.image.value
    s.value = grid + 1e-15                              # the browser's float arithmetic, not exactly Python's
    assert model.value(*key) == source and editor.boxes[key].value == source
    assert editor.updates == n0 and editor.image.value == image
    s.value = grid + s.step
    assert model.value(*key) == pytest.approx(grid + s.step) and editor.updates == n0 + 1
    s.value = grid                                      # back to the grid point: now a move like any other
    assert model.value(*key) == grid and editor.updates == n0 + 2
    editor.reset_all.click()                            # reset: the slider is drawn at the source value again
    assert model.value(*key) == source and editor.image.value == image


def test_the_box_moves_the_slider_and_a_later_drag_is_an_edit(editor, model):
    """Typing in the number box moves the slider to the value the model used; the browser's echo of that slider
    (the nearest grid point) is no edit, a real move afterwards is."""
    key = ("shape", 0)
    s, box = editor.sliders[key], editor.boxes[key]
    typed = 1.23
    assert abs(typed - (s.min + round((typed - s.min) / s.step) * s.step)) > 1e-6    # off the slider's grid
    box.value = typed
    assert model.value(*key) == typed and s.value == typed and box.value == typed
    assert np.array_equal(shown(editor), expected(editor)) and editor.message_text == ""
    n0, image = editor.updates, editor.image.value
    s.value = s.min + round((typed - s.min) / s.step) * s.step     # the browser draws it on the grid: its echo
    assert model.value(*key) == typed and box.value == typed and editor.updates == n0 and editor.image.value == image
    s.value = 1.5                                                  # the user drags it
    assert model.value(*key) == 1.5 and box.value == 1.5 and editor.updates == n0 + 1
    s.value = 1.25                                                 # and back to the grid point next to 1.23
    assert model.value(*key) == 1.25 and box.value == 1.25 and editor.updates == n0 + 2
    assert np.array_equal(shown(editor), expected(editor))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_refused_box_value_puts_both_back_on_the_model(editor, model, bad):
    key = ("expression", 1)
    editor.boxes[key].value = 0.75
    image = editor.image.value
    editor.boxes[key].value = bad
    assert model.value(*key) == 0.75
    assert editor.boxes[key].value == 0.75 and editor.sliders[key].value == 0.75
    with pytest.raises(ValueError) as refused:                     # the model's own message for the same value
        model.set(*key, bad)
    assert editor.message_text == f"ValueError: {refused.value}" and "b00020" in editor.message.value
    assert editor.image.value == image                             # same edit, same pixels
    editor.boxes[key].value = -0.5                                 # the next good value is an edit as usual
    assert model.value(*key) == -0.5 == editor.sliders[key].value and editor.message_text == ""


def test_a_non_number_never_reaches_the_model(editor, model):
    """The box's trait refuses text (what a front end would send for a non-number): nothing changes."""
    from traitlets import TraitError

    key = ("albedo", 0)
    before, image = model.value(*key), editor.image.value
    with pytest.raises(TraitError):
        editor.boxes[key].set_state({"value": "abc"})
    assert model.value(*key) == before == editor.boxes[key].value and editor.image.value == image


def test_refresh_shows_changes_made_by_code(editor, model):
    """Code changes the model behind the widget; refresh() makes every slider, box, the seed and the image match,
    without an edit of its own."""
    edits = {("expression", 0): 1.5, ("pose", 1): -20.0, ("light", 0): 0.3, ("shape", 3): -2.0}
    for key, v in edits.items():
        model.set(*key, v)
    assert editor.sliders[("pose", 1)].value != -20.0                 # stale until refreshed
    stale = editor.image.value
    n0, m0 = editor.updates, len(model.latencies_ms)
    editor.refresh()
    assert editor.updates == n0 + 1 and len(model.latencies_ms) == m0   # one image, no edit
    for key in editor.sliders:
        c = model.control(*key)
        assert editor.boxes[key].value == model.value(*key)
        assert editor.sliders[key].value == pytest.approx(min(max(model.value(*key), c.minimum), c.maximum))
    for key, v in edits.items():
        assert model.value(*key) == pytest.approx(v) and editor.boxes[key].value == pytest.approx(v)
    assert editor.image.value != stale and np.array_equal(shown(editor), expected(editor))
    assert f"{model.last_latency_ms:.1f} ms" in editor.latency.value
    model.load_sample(SEED + 3)                                       # a new face from code: the seed box follows
    editor.refresh()
    assert editor.seed.value == SEED + 3 and np.array_equal(shown(editor), expected(editor))
    assert all(editor.boxes[k].value == model.source_value(*k) for k in editor.boxes)


def test_refresh_drops_a_pending_slider_value(model):
    model.load_sample(SEED)
    interval_ms = 50.0

    async def run():
        editor = Editor(model, interval_ms=interval_ms)
        editor.sliders[KEY].value = 0.5                    # at once
        editor.boxes[KEY].value = 1.0                      # waits for the timer ...
        assert model.value(*KEY) == 0.5 and editor.sliders[KEY].value == 0.5
        model.set(*KEY, -1.0)                              # ... while code sets another value
        editor.refresh()
        await asyncio.sleep(interval_ms / 1000 * 3)
        assert model.value(*KEY) == -1.0 == editor.sliders[KEY].value == editor.boxes[KEY].value
        editor.boxes[KEY].value = 2.0                      # a box value applied by the trailing timer moves the slider
        editor.boxes[KEY].value = 2.5
        await asyncio.sleep(interval_ms / 1000 * 3)
        assert model.value(*KEY) == 2.5 == editor.sliders[KEY].value == editor.boxes[KEY].value
        assert np.array_equal(shown(editor), expected(editor))

    asyncio.run(run())


def test_refresh_raises_the_models_error(model):
    model.load_sample(SEED)
    editor = Editor(model)
    editor.model = EditorModel(model.editor)              # the same editor, no face loaded
    with pytest.raises(RuntimeError):
        editor.refresh()
    assert editor.message_text.startswith("RuntimeError: ")
