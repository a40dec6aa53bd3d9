"""The face editor's ipywidgets view: a thin layer over :class:`cddfm3d.ui.model.EditorModel`.

::

    from cddfm3d.ui import EditorModel, Editor
    m = EditorModel.from_assets("mini")
    m.load_sample(0)
    Editor(m).widget          # display it in a notebook (or serve the notebook with ``python -m cddfm3d editor``)

Layout (top to bottom): the image ([input |] source | edit | 3DMM render, a PNG in an ``ipywidgets.Image``), the
latency readout and message line, the seed box with "Load sample", the toggles, the "Load image" row (a file upload,
the image's domain, the projection steps and "Project"), the "Load photo" row (face index, embedding, steps and
"Load photo", on the same upload), one tab per attribute with a slider and a
number box per control and a reset button, "Reset all", the "advanced" row (any coefficient of an attribute, raw
3DMM units), the clip row (path, frames, "Save clip") and, once a clip is saved, the clip itself (a GIF in an
``ipywidgets.Image``, an MP4 in an ``ipywidgets.Video``) with a download link (the file's bytes as a ``data:`` URL).

Every change goes through the model, and the sliders and number boxes always show the value the model used: a
clamped value shows the clamped number in both, and a refused one (NaN, inf) puts both back on the model's current
value with the error on the message line. When code changes the model behind the widget (``m.set``, ``m.reset``,
``m.load_sample``), :meth:`Editor.refresh` re-reads it.

**Load image.** "Project" decodes the uploaded file (:func:`cddfm3d.ui.image_input.decode_image`) and calls the
model's :meth:`~cddfm3d.ui.model.EditorModel.load_image` with the chosen domain (``"human"`` and the domains whose
generator is at hand, :meth:`~cddfm3d.ui.model.EditorModel.available_domains`) and steps (default: the model's
:meth:`~cddfm3d.ui.model.EditorModel.projection_steps`). The projection takes seconds (about 22 s at the default
300 steps on one busy CPU core), so the message line counts its steps while it runs (updated at most every
:data:`PROGRESS_INTERVAL_S`; the kernel sends each update at once) and then gives the projection's PSNR; the sliders
then show T of the projected styles, and the picture starts with the input, then the projection it edits.

**Load photo.** The row under it takes the same upload as a photograph: "Load photo" calls the model's
:meth:`~cddfm3d.ui.model.EditorModel.load_photo` with the face index (0: the largest), the embedding (PIE or the
W+ projector) and its steps (default :meth:`~cddfm3d.ui.model.EditorModel.photo_steps`): dlib finds the face, the
3DMM is fitted to it, and the aligned crop is embedded into the model's generator while the message line counts
the steps; it then gives the fit's landmark error, the embedding's PSNR and dlib's identity distance between the
crop and the embedding, and the picture shows the crop, its 3DMM fit, the embedding, the edit and its render. The
mini generator knows only its synthetic faces: a photograph is out of its domain, and the embedding a best effort.

The view keeps no state of its own besides the display options. Slider and number box events are throttled: while
a slider is dragged the image is recomputed at most once per ``interval_ms`` (the first event at once, later ones
coalesced), and a trailing update always applies the last value. The timer is the running asyncio loop's
``call_later`` (the kernel's loop inside Jupyter and Voilà); without a running loop (plain Python, tests) every event
updates at once. Warnings of the model (a clamped value) and errors of any action are
shown on the message line, never as tracebacks.
"""
from __future__ import annotations

import asyncio
import base64
import html
import numbers
import os
import time
import warnings
from pathlib import Path

import ipywidgets as W
import numpy as np

from ..viz import png_bytes   # also re-exported (__all__)
from .app import CLIP_DIR_ENV    # the folder of the default clip path (``python -m cddfm3d editor`` sets it)
from .image_input import decode_image
from .model import CLIP_SUFFIXES, check_scale

__all__ = ["Editor", "png_bytes", "default_clip_path", "download_link", "CLIP_DIR_ENV"]

INTERVAL_MS = 40.0          # throttle of slider events: at most one image per 40 ms while dragging (25 per second)
MAX_SEED = 2 ** 31 - 1
MAX_CLIP_FRAMES = 600
MAX_PROJECTION_STEPS = 10000
MAX_FACE_INDEX = 99          # the face box of "Load photo" (faces of a photo, largest first)
PROGRESS_INTERVAL_S = 0.5   # the projection's progress on the message line: at most one update per this many seconds
IMAGE_ACCEPT = "image/*,.png,.jpg,.jpeg"   # what the upload's file dialog offers
MAX_CLIP_SHOW_BYTES = 20 * 2 ** 20   # a saved clip larger than this is neither shown nor offered for download in
                                     # the page (it would travel through the kernel's websocket twice, base64-coded)
CLIP_MIME = {".gif": "image/gif", ".mp4": "video/mp4"}
LANDMARKS_LABEL = {False: "Show target landmarks", True: "Hide target landmarks"}
LANDMARKS_TIP = ("The 68 landmarks of the target 3DMM coefficients (where the sliders ask the face to go), drawn on "
                 "the edit; they are not detected on the edited face, which the edit moves only part of the way.")


def default_clip_path() -> Path:
    """``<folder>/edit.gif``, absolute: folder = ``$CDDFM3D_EDITOR_CLIP_DIR`` when set and non-empty, else the current
    working directory."""
    folder = os.environ.get(CLIP_DIR_ENV) or os.getcwd()
    return Path(folder).expanduser().resolve() / "edit.gif"


def download_link(data: bytes, name: str, mime: str) -> str:
    """An HTML anchor that downloads ``data`` as ``name``: ``<a download=name href="data:<mime>;base64,...">``,
    labelled with the name and size in kB. No size limit here (see :data:`MAX_CLIP_SHOW_BYTES`)."""
    href = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    label = f"Download {name} ({len(data) / 1024:.0f} kB)"
    return (f'<a download="{html.escape(name, quote=True)}" href="{href}" target="_blank" '
            f'class="cddfm3d-download">{html.escape(label)}</a>')


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Editor:
    """Widgets bound to an editor model (module docstring).

    Args:
        model: an :class:`~cddfm3d.ui.model.EditorModel` with a face loaded (``load_sample`` / ``load_styles``).
        scale: nearest-neighbour upscaling of the displayed panel (``model.panel(scale=...)``), >= 1.
        interval_ms: the slider throttle, > 0 (module docstring).
        seed: the initial value of the seed box, an int in [0, 2**31 - 1] (default: the model's ``noise_seed``,
            the seed of a face loaded by ``load_sample``; 0 when it has none).
        clip_path: the initial value of the clip path box, a ``str`` or path ending in ``.gif`` or ``.mp4``
            (default: :func:`default_clip_path`); shown and reported as a full path.

    Test hooks: ``sliders[(attribute, index)]`` (``FloatSlider``), ``boxes[(attribute, index)]`` (``FloatText``,
    the same value typed; out-of-range values are clamped by the model with a message), ``image``
    (``ipywidgets.Image``, PNG), ``reset_buttons[attribute]`` and ``reset_all``, ``show_landmarks`` (the 68
    landmarks of the *target* 3DMM coefficients ``model.coeffs``, i.e. where the edit aims; they are not detected on
    the edited face, which F^i moves only part of the way) and ``show_render`` (``ToggleButton``),
    ``advanced_attribute`` / ``advanced_index`` / ``advanced_value`` / ``advanced_apply``, ``seed`` /
    ``load_button``, ``upload`` (``FileUpload``) / ``domain`` (``Dropdown``) / ``project_steps`` / ``project_button``,
    ``photo_face`` / ``photo_embed`` (``Dropdown``) / ``photo_steps`` / ``photo_button``,
    ``clip_path`` / ``clip_frames`` / ``clip_button``, the saved clip's ``clip_image`` (GIF) or
    ``clip_video`` (MP4) and ``clip_download`` (``HTML`` link), ``latency`` and ``message`` (``HTML``);
    ``message_text`` is the message line as plain text and ``updates`` counts image refreshes.

    Raises ``ValueError`` for a ``scale`` that is not an int in [1, 16] (the model's
    :func:`~cddfm3d.ui.model.check_scale`, shared with ``panel`` and ``save_clip``); ``TypeError`` for an argument of
    the wrong type (``interval_ms`` not a real number, ``seed`` not an int, ``clip_path`` not a str or path) and
    ``ValueError`` for a value out of range (``interval_ms`` not finite and > 0, ``seed`` outside [0, 2**31 - 1],
    ``clip_path`` with another suffix); each message names the argument, what it expects and what it found.
    """

    def __init__(self, model, scale: int = 4, interval_ms: float = INTERVAL_MS, seed: int | None = None,
                 clip_path: str | os.PathLike | None = None):
        scale = check_scale(scale, "Editor")
        interval_ms = _check_interval(interval_ms)
        seed = None if seed is None else _check_seed(seed)
        clip_path = default_clip_path() if clip_path is None else _check_clip_path(clip_path)
        self.model = model
        self.scale = scale
        self.interval_s = interval_ms / 1000.0
        self.updates = 0
        self.message_text = ""
        self._syncing = False            # True while widget values are set from the model: no edits then
        self._pending: dict[tuple[str, int], float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._last_flush = -float("inf")  # loop time of the last throttled update

        self.image = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.image.add_class("cddfm3d-image")
        self.latency = W.HTML()
        self.latency.add_class("cddfm3d-latency")
        self.message = W.HTML()
        self.message.add_class("cddfm3d-message")

        if seed is None:
            seed = getattr(model, "noise_seed", 0)
            seed = seed if isinstance(seed, int) and 0 <= seed <= MAX_SEED else 0
        self.seed = W.BoundedIntText(value=seed, min=0, max=MAX_SEED, description="Seed",
                                     layout=W.Layout(width="180px"))
        self.load_button = W.Button(description="Load sample", icon="refresh")
        self.load_button.on_click(lambda _: self._guarded(self._load_sample))

        self.upload = W.FileUpload(accept=IMAGE_ACCEPT, multiple=False, description="Load image",
                                   layout=W.Layout(width="160px"))
        self.upload.add_class("cddfm3d-upload")
        domains = model.available_domains()
        try:
            current = model.domain                      # the loaded source's domain first
        except RuntimeError:                            # no source yet: the refresh below says so
            current = None
        self.domain = W.Dropdown(options=domains, value=current if current in domains else domains[0],
                                 description="Domain",
                                 style={"description_width": "55px"}, layout=W.Layout(width="170px"))
        self.project_steps = W.BoundedIntText(value=model.projection_steps(), min=1, max=MAX_PROJECTION_STEPS,
                                              description="steps", style={"description_width": "40px"},
                                              layout=W.Layout(width="130px"))
        self.project_button = W.Button(description="Project", icon="upload",
                                       tooltip="Project the uploaded image into the domain's generator and edit it")
        self.project_button.add_class("cddfm3d-project")
        self.project_button.on_click(lambda _: self._guarded(self._project))

        self.photo_face = W.BoundedIntText(value=0, min=0, max=MAX_FACE_INDEX, description="face",
                                           tooltip="Which face of the photo: 0 is the largest, then by size",
                                           style={"description_width": "35px"}, layout=W.Layout(width="110px"))
        self.photo_embed = W.Dropdown(options=[("PIE", "pie"), ("Project W+", "project")], value="pie",
                                      description="embed", style={"description_width": "45px"},
                                      layout=W.Layout(width="170px"))
        self.photo_steps = W.BoundedIntText(value=model.photo_steps("pie"), min=2, max=MAX_PROJECTION_STEPS,
                                            description="steps", style={"description_width": "40px"},
                                            layout=W.Layout(width="130px"))
        self.photo_embed.observe(lambda ch: self._guarded(self._on_embed, ch["new"]), names="value")
        self.photo_button = W.Button(description="Load photo", icon="camera",
                                     tooltip="Find a face in the uploaded photograph, fit the 3DMM to it and embed it "
                                             "into the generator (the mini generator knows only synthetic faces: "
                                             "a photo is out of its domain)")
        self.photo_button.add_class("cddfm3d-load-photo")
        self.photo_button.on_click(lambda _: self._guarded(self._load_photo))

        self.show_landmarks = W.ToggleButton(value=False, description=LANDMARKS_LABEL[False], icon="dot-circle-o",
                                             tooltip=LANDMARKS_TIP, layout=W.Layout(width="190px"))
        self.show_render = W.ToggleButton(value=True, description="Hide 3DMM render", icon="cube")
        for toggle in (self.show_landmarks, self.show_render):
            toggle.observe(lambda _: self._guarded(self._on_toggle), names="value")

        self.sliders: dict[tuple[str, int], W.FloatSlider] = {}
        self.boxes: dict[tuple[str, int], W.FloatText] = {}
        self.reset_buttons: dict[str, W.Button] = {}
        tabs, titles = [], []
        for attribute in self.attributes:
            rows = []
            for c in (c for c in model.controls if c.attribute == attribute):
                key = (c.attribute, int(c.index))
                label = f"{c.label} ({c.unit})" if getattr(c, "unit", "") else c.label
                slider = W.FloatSlider(value=model.value(*key), min=c.minimum, max=c.maximum, step=c.step,
                                       description=label, continuous_update=True, readout=False,
                                       style={"description_width": "140px"}, layout=W.Layout(width="420px"))
                slider.add_class("cddfm3d-slider")
                slider.add_class(f"cddfm3d-{c.attribute}-{int(c.index)}")
                box = W.FloatText(value=model.value(*key), step=c.step, layout=W.Layout(width="90px"))
                box.add_class(f"cddfm3d-box-{c.attribute}-{int(c.index)}")
                slider.observe(lambda ch, key=key: self._on_slider(key, ch["new"]), names="value")
                box.observe(lambda ch, key=key: self._on_box(key, ch["new"]), names="value")
                self.sliders[key], self.boxes[key] = slider, box
                rows.append(W.HBox([slider, box]))
            reset = W.Button(description=f"Reset {attribute}", icon="undo")
            reset.on_click(lambda _, a=attribute: self._guarded(self._reset, a))
            self.reset_buttons[attribute] = reset
            tabs.append(W.VBox([*rows, reset]))
            titles.append(attribute)
        self.tabs = W.Tab(children=tabs, titles=titles)
        self.reset_all = W.Button(description="Reset all", icon="undo", button_style="warning")
        self.reset_all.on_click(lambda _: self._guarded(self._reset, None))

        self.advanced_attribute = W.Dropdown(options=list(self.attributes), description="Advanced",
                                             layout=W.Layout(width="220px"))
        self.advanced_index = W.BoundedIntText(value=0, min=0, max=10 ** 6, description="k",
                                               style={"description_width": "20px"}, layout=W.Layout(width="110px"))
        self.advanced_value = W.FloatText(value=0.0, description="value", style={"description_width": "40px"},
                                          layout=W.Layout(width="160px"))
        self.advanced_apply = W.Button(description="Set coefficient")
        self.advanced_apply.on_click(lambda _: self._guarded(self._set_coefficient))

        self.clip_path = W.Text(value=str(clip_path), description="Clip", layout=W.Layout(width="420px"))
        self.clip_frames = W.BoundedIntText(value=24, min=2, max=MAX_CLIP_FRAMES, description="frames",
                                            style={"description_width": "50px"}, layout=W.Layout(width="140px"))
        self.clip_button = W.Button(description="Save clip", icon="film")
        self.clip_button.on_click(lambda _: self._guarded(self._save_clip))
        self.clip_image = W.Image(format="gif", layout=W.Layout(display="none", max_width="100%"))
        self.clip_video = W.Video(format="mp4", autoplay=True, loop=True, controls=True,
                                  layout=W.Layout(display="none", max_width="100%"))
        self.clip_download = W.HTML()
        for w, name in ((self.clip_image, "clip-image"), (self.clip_video, "clip-video"),
                        (self.clip_download, "clip-download")):
            w.add_class(f"cddfm3d-{name}")

        self.widget = W.VBox([
            self.image,
            W.HBox([self.latency, self.message]),
            W.HBox([self.seed, self.load_button, self.show_landmarks, self.show_render]),
            W.HBox([self.upload, self.domain, self.project_steps, self.project_button]),
            W.HBox([W.HTML("<b>or as a photo:</b>", layout=W.Layout(width="160px")), self.photo_face,
                    self.photo_embed, self.photo_steps, self.photo_button]),
            self.tabs,
            self.reset_all,
            W.HBox([self.advanced_attribute, self.advanced_index, self.advanced_value, self.advanced_apply]),
            W.HBox([self.clip_path, self.clip_frames, self.clip_button]),
            W.VBox([self.clip_image, self.clip_video, self.clip_download]),
        ])
        self.widget.add_class("cddfm3d-editor")
        self._guarded(self._refresh)

    # ------------------------------------------------------------------------------------------------ helpers
    @property
    def attributes(self) -> list[str]:
        """The model's attributes in the order of its controls."""
        return list(dict.fromkeys(c.attribute for c in self.model.controls))

    def _ipython_display_(self):   # ``Editor(m)`` as the last line of a cell shows the widget
        from IPython.display import display

        display(self.widget)

    def _say(self, text: str, kind: str = "info") -> None:
        self.message_text = text
        color = {"info": "#333", "warning": "#a15c00", "error": "#b00020"}[kind]
        self.message.value = f'<span style="color:{color}">{html.escape(text)}</span>' if text else ""

    def _guarded(self, action, *args) -> None:
        """Run ``action`` with the model's warnings shown on the message line and any error shown there instead of
        a traceback."""
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                note = action(*args)
        except Exception as e:  # noqa: BLE001 -- the message line is the user's only error display
            self._say(f"{type(e).__name__}: {e}", "error")
            return
        texts = list(dict.fromkeys(str(w.message) for w in caught))
        if texts:
            self._say(" ".join(texts), "warning")
        else:
            self._say(note or "")

    def _sync_from_model(self, attribute: str | None = None) -> None:
        """Set the sliders and boxes of ``attribute`` (all when None) to the model's values without edits."""
        for key in self.sliders:
            if attribute is None or key[0] == attribute:
                self._show_value(key, float(self.model.value(*key)))

    def _refresh(self) -> None:
        """Encode the model's panel into the image and update the latency readout."""
        t0 = time.perf_counter()
        panel = self.model.panel(show_landmarks=self.show_landmarks.value, show_render=self.show_render.value,
                                 show_source=True, scale=self.scale)
        self.image.value = png_bytes(panel, compress_level=1)    # speed over size
        self.updates += 1
        view_ms = (time.perf_counter() - t0) * 1000.0
        model_ms = getattr(self.model, "last_latency_ms", None)
        model_text = "-" if model_ms is None or not np.isfinite(model_ms) else f"{model_ms:.1f} ms"
        self.latency.value = f"<code>edit {model_text} · panel + PNG {view_ms:.1f} ms</code>"

    # ------------------------------------------------------------------------------------------------ edits
    def _on_slider(self, key: tuple[str, int], value: float) -> None:
        if self._syncing or self._is_snap(key, value):
            return
        self._syncing = True
        try:
            self.boxes[key].value = float(value)
        finally:
            self._syncing = False
        self._request(key, float(value))

    def _is_snap(self, key: tuple[str, int], value: float) -> bool:
        """True when ``value`` is the model's value moved to the slider's grid (``min + n * step``, within
        ``[min, max]``): what the browser sends back when it draws a slider at a value between grid points (a
        source's value) -- not an edit. A user's move lands on a grid point too, but the nearest one to the model's
        value is where the slider is already drawn."""
        s = self.sliders[key]
        current = self._pending.get(key)          # a value waiting for the throttle's timer is the current one
        if not (isinstance(current, float) and np.isfinite(current)):    # none, or one the model will refuse
            current = float(self.model.value(*key))
        grid = min(max(s.min + round((current - s.min) / s.step) * s.step, s.min), s.max)
        return value != current and abs(value - grid) <= 1e-6 * s.step

    def _on_box(self, key: tuple[str, int], value) -> None:
        if self._syncing:
            return
        self._request(key, value)    # the slider follows once the model has it (``_apply``): the value it used

    def _request(self, key: tuple[str, int], value) -> None:
        """Queue a value; apply it now (no loop, or the throttle interval has passed) or at the trailing timer."""
        self._pending[key] = value
        loop = _running_loop()
        if loop is None:
            self._flush()
            return
        if self._timer is not None:          # a trailing update is scheduled: it will apply the newest value
            return
        wait = self._last_flush + self.interval_s - loop.time()
        if wait <= 0:
            self._flush(loop)
        else:
            self._timer = loop.call_later(wait, self._on_timer, loop)

    def _on_timer(self, loop) -> None:
        self._timer = None
        self._flush(loop)

    def _flush(self, loop=None) -> None:
        pending, self._pending = self._pending, {}
        if not pending:
            return
        self._guarded(self._apply, pending)
        if loop is not None:
            self._last_flush = loop.time()

    def _apply(self, pending: dict) -> None:
        """Set each pending value on the model and show the value it used (the same, or clamped) in the slider and
        the box; a value the model refuses puts both back on its current value. Then one image. Raises the first
        refusal (after the image), for the message line."""
        errors = []
        for key, value in pending.items():
            try:
                used = float(self.model.set(key[0], key[1], value))
            except (TypeError, ValueError) as e:
                errors.append(e)
                used = float(self.model.value(*key))
            self._show_value(key, used)
        self._refresh()
        if errors:
            raise errors[0]

    def _show_value(self, key: tuple[str, int], value: float) -> None:
        """Put ``value`` in the slider and the box of ``key`` without an edit."""
        self._syncing = True
        try:
            self.sliders[key].value = value
            self.boxes[key].value = value
        finally:
            self._syncing = False

    def flush(self) -> None:
        """Apply a pending throttled slider value now (cancels the trailing timer)."""
        self._cancel_timer()
        self._flush(_running_loop())

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def refresh(self) -> None:
        """Show the model as it is now, after code changed it behind the widget (``m.set``, ``m.reset``,
        ``m.load_sample``, ...): every slider and number box, the seed box (the model's ``noise_seed`` when it has
        a valid one), the image and the latency readout. Makes no edit: a slider value still waiting for the
        throttle's timer is dropped (the model is the truth), and the widget updates trigger nothing. Errors of the
        model (e.g. ``RuntimeError`` when no face is loaded) are raised to the caller and shown on the message
        line."""
        self._cancel_timer()
        self._pending.clear()
        try:
            self._sync_from_model()
            seed = getattr(self.model, "noise_seed", None)
            if isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED:
                self.seed.value = int(seed)
            self._sync_domains()
            self._refresh()
        except Exception as e:
            self._say(f"{type(e).__name__}: {e}", "error")
            raise
        self._say("")

    # ------------------------------------------------------------------------------------------------ buttons
    def _reset(self, attribute: str | None) -> str:
        self.flush()
        self.model.reset(attribute)
        self._sync_from_model(attribute)
        self._refresh()
        return f"reset {attribute or 'all attributes'}"

    def _load_sample(self) -> str:
        self.flush()
        seed = int(self.seed.value)
        self.model.load_sample(seed)
        self._sync_from_model()
        self._refresh()
        return f"loaded sample {seed}"

    def _sync_domains(self) -> None:
        """The domain menu: the model's available domains (a generator shipped since the view was made appears),
        keeping the chosen one."""
        domains = self.model.available_domains()
        if list(self.domain.options) != domains:
            chosen = self.domain.value
            self.domain.options = domains
            self.domain.value = chosen if chosen in domains else domains[0]

    def _uploaded(self, who: str = "Project") -> tuple[str, bytes]:
        """(name, content) of the uploaded file (the last one). ipywidgets 8 holds a tuple of dicts with ``name``,
        ``type``, ``size``, ``content`` (memoryview) and ``last_modified``."""
        files = self.upload.value
        files = list(files.values()) if isinstance(files, dict) else list(files)    # ipywidgets 7: {name: {...}}
        if not files:
            raise ValueError(f"{who}: no image yet; choose a PNG or JPEG file with the 'Load image' button first")
        f = files[-1]
        return str(f.get("name") or "image"), bytes(f["content"])

    def _project(self) -> str:
        """Project the uploaded image into the chosen domain's generator (the model's ``load_image``), counting the
        steps on the message line, then show it and its sliders. Returns the message: the PSNR."""
        self.flush()
        name, content = self._uploaded()
        pixels = decode_image(content, name, "Project")
        domain, steps = self.domain.value, int(self.project_steps.value)
        where = f"{name} into the {domain} generator"
        t0 = time.perf_counter()
        report = self._step_reporter(f"projecting {where}", t0)
        self._say(f"projecting {where}: {steps} steps ...")
        self.project_button.disabled = True
        try:
            self.model.load_image(pixels, domain=domain, steps=steps, progress=report)
        finally:
            self.project_button.disabled = False
        seconds = time.perf_counter() - t0
        self._sync_from_model()
        self._refresh()
        return (f"projected {where} ({steps} steps, {seconds:.1f} s): PSNR {self.model.projection_psnr:.1f} dB; "
                f"the sliders start at T of its styles")

    def _step_reporter(self, what: str, t0: float):
        """A ``progress(step, total)`` callback that writes ``what: step k/n (t s)`` on the message line, at most
        every :data:`PROGRESS_INTERVAL_S` seconds and at the last step."""
        last = [t0]

        def report(step: int, total: int) -> None:
            now = time.perf_counter()
            if step == total or now - last[0] >= PROGRESS_INTERVAL_S:
                last[0] = now
                self._say(f"{what}: step {step}/{total} ({now - t0:.0f} s)")

        return report

    def _on_embed(self, embed: str) -> None:
        """A new embedding method: its default steps in the steps box (PIE needs at least 2: W, then W+)."""
        self.photo_steps.min = 2 if embed == "pie" else 1
        self.photo_steps.value = self.model.photo_steps(embed)

    def _load_photo(self) -> str:
        """The uploaded file as a photograph (the model's ``load_photo``: the chosen face found, aligned, fitted by
        the 3DMM and embedded), counting the embedding's steps on the message line, then show it and its sliders.
        Returns the message: the fit's landmark error, the PSNR and dlib's identity distance."""
        from ..photo import SAME_PERSON_THRESHOLD, FaceIndexError, NoFaceError

        self.flush()
        name, content = self._uploaded("Load photo")
        face, embed, steps = int(self.photo_face.value), self.photo_embed.value, int(self.photo_steps.value)
        method = "PIE" if embed == "pie" else "W+ projection"
        t0 = time.perf_counter()
        report = self._step_reporter(f"embedding face {face} of {name} ({method})", t0)
        self._say(f"reading {name}: finding face {face} and fitting the 3DMM ({self.model.photo_fit_steps()} steps), "
                  f"then the {method} ({steps} steps) ...")
        self.photo_button.disabled = True
        try:
            self.model.load_photo(content, face=face, embed=embed, steps=steps, progress=report)
        except (NoFaceError, FaceIndexError) as e:      # the model got bytes: name the uploaded file
            raise type(e)(f"{name}: {e}") from None
        finally:
            self.photo_button.disabled = False
        seconds = time.perf_counter() - t0
        self._sync_from_model()
        self._refresh()
        fit = self.model.photo_fit
        return (f"loaded face {face} of {name} ({method}, {steps} steps, {seconds:.1f} s): 3DMM fit landmark error "
                f"{fit.lm_px_before:.1f} -> {fit.lm_px_after:.1f} px; embedding PSNR "
                f"{self.model.projection_psnr:.1f} dB, dlib identity distance {self.model.photo_identity_distance:.2f} "
                f"(one person below {SAME_PERSON_THRESHOLD}); a photo is out of the mini generator's domain, so the "
                f"embedding is a best effort")

    def _on_toggle(self) -> None:
        self.show_landmarks.description = LANDMARKS_LABEL[bool(self.show_landmarks.value)]
        self.show_render.description = "Hide 3DMM render" if self.show_render.value else "Show 3DMM render"
        self._refresh()

    def _set_coefficient(self) -> str:
        self.flush()
        attribute, k, value = self.advanced_attribute.value, int(self.advanced_index.value), self.advanced_value.value
        self.model.set_coefficient(attribute, k, float(value))
        self._sync_from_model(attribute)
        self._refresh()
        return f"{attribute} coefficient {k} set to {value:g}"

    def _save_clip(self) -> str:
        """Write the clip, then show it in the page with a download link (both left out, with the reason, when the
        file is over :data:`MAX_CLIP_SHOW_BYTES`). Returns the message: the full path and size."""
        self.flush()
        path = Path(self.model.save_clip(self.clip_path.value, frames=int(self.clip_frames.value))).resolve()
        data = path.read_bytes()
        size = f"{len(data) / 1024:.0f} kB"
        self.clip_image.layout.display = self.clip_video.layout.display = "none"
        self.clip_image.value = self.clip_video.value = b""
        if len(data) > MAX_CLIP_SHOW_BYTES:
            self.clip_download.value = ""
            return (f"wrote {path} ({size}); over the page's {MAX_CLIP_SHOW_BYTES // 2 ** 20} MB limit, so it is not "
                    f"shown or offered for download here: open it from that path")
        suffix = path.suffix.lower()
        view = self.clip_image if suffix == ".gif" else self.clip_video
        view.value = data
        view.layout.display = None
        self.clip_download.value = download_link(data, path.name, CLIP_MIME[suffix])
        return f"wrote {path} ({size})"


def _type_name(value) -> str:
    return type(value).__name__


def _check_interval(interval_ms) -> float:
    if isinstance(interval_ms, bool) or not isinstance(interval_ms, numbers.Real):
        raise TypeError(f"Editor: interval_ms must be a number of milliseconds > 0, found {_type_name(interval_ms)} "
                        f"{interval_ms!r}")
    value = float(interval_ms)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"Editor: interval_ms must be a finite number of milliseconds > 0, found {interval_ms!r}")
    return value


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"Editor: seed must be an int in [0, {MAX_SEED}] or None, found {_type_name(seed)} {seed!r}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"Editor: seed must be an int in [0, {MAX_SEED}] or None, found {seed!r}")
    return int(seed)


def _check_clip_path(clip_path) -> Path:
    if not isinstance(clip_path, (str, os.PathLike)):
        raise TypeError(f"Editor: clip_path must be a str or path ending in one of {list(CLIP_SUFFIXES)}, found "
                        f"{_type_name(clip_path)} {clip_path!r}")
    path = Path(clip_path).expanduser()
    if path.suffix.lower() not in CLIP_SUFFIXES:
        raise ValueError(f"Editor: clip_path must end in one of {list(CLIP_SUFFIXES)}, found {str(clip_path)!r}")
    return path.resolve()
