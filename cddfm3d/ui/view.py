"""The face editor's ipywidgets view: a thin layer over :class:`cddfm3d.ui.model.EditorModel`.

::

    from cddfm3d.ui import EditorModel, Editor
    m = EditorModel.from_assets("mini")
    m.load_sample(0)
    Editor(m).widget          # display it in a notebook (or serve the notebook with ``python -m cddfm3d editor``)

Layout (top to bottom): the image (source | edit | 3DMM render, a PNG in an ``ipywidgets.Image``), the latency
readout and message line, the seed box with "Load sample", the toggles, one tab per attribute with a slider and a
number box per control and a reset button, "Reset all", the "advanced" row (any coefficient of an attribute, raw
3DMM units) and the clip row (path, frames, "Save clip").

Every change goes through the model; the view keeps no state of its own besides the display options. Slider
events are throttled: while a slider is dragged the image is recomputed at most once per ``interval_ms`` (the
first event at once, later ones coalesced), and a trailing update always applies the last value. The timer is the
running asyncio loop's ``call_later`` (the kernel's loop inside Jupyter and Voilà); without a running loop (plain
Python, tests) every event updates at once. Warnings of the model (a clamped value) and errors of any action are
shown on the message line, never as tracebacks.
"""
from __future__ import annotations

import asyncio
import html
import io
import time
import warnings

import ipywidgets as W
import numpy as np
from PIL import Image as PILImage

__all__ = ["Editor", "png_bytes"]

INTERVAL_MS = 40.0          # throttle of slider events: at most one image per 40 ms while dragging (25 per second)
MAX_SEED = 2 ** 31 - 1
MAX_CLIP_FRAMES = 600


def png_bytes(image: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG file bytes of a uint8 image ``[H, W, 3]`` (Pillow; level 1 favours speed over size: a 256 x 768 panel
    encodes in a few ms). Raises ``ValueError`` for another dtype or shape."""
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"png_bytes: expected a uint8 image [H, W, 3], found {a.dtype} {list(a.shape)}")
    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


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
        seed: the initial value of the seed box (default: the model's ``noise_seed``, the seed of a face loaded
            by ``load_sample``; 0 when it has none).
        clip_path: the initial value of the clip path box (``.gif`` or ``.mp4``).

    Test hooks: ``sliders[(attribute, index)]`` (``FloatSlider``), ``boxes[(attribute, index)]`` (``FloatText``,
    the same value typed; out-of-range values are clamped by the model with a message), ``image``
    (``ipywidgets.Image``, PNG), ``reset_buttons[attribute]`` and ``reset_all``, ``show_landmarks`` and
    ``show_render`` (``ToggleButton``), ``advanced_attribute`` / ``advanced_index`` / ``advanced_value`` /
    ``advanced_apply``, ``seed`` / ``load_button``, ``clip_path`` / ``clip_frames`` / ``clip_button``, ``latency``
    and ``message`` (``HTML``); ``message_text`` is the message line as plain text and ``updates`` counts image
    refreshes.

    Raises ``ValueError`` for ``scale < 1`` or ``interval_ms <= 0``.
    """

    def __init__(self, model, scale: int = 4, interval_ms: float = INTERVAL_MS, seed: int | None = None,
                 clip_path: str = "edit.gif"):
        if int(scale) != scale or scale < 1:
            raise ValueError(f"Editor: scale must be an integer >= 1, found {scale!r}")
        if not interval_ms > 0:
            raise ValueError(f"Editor: interval_ms must be > 0, found {interval_ms!r}")
        self.model = model
        self.scale = int(scale)
        self.interval_s = float(interval_ms) / 1000.0
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
        self.seed = W.BoundedIntText(value=int(seed), min=0, max=MAX_SEED, description="Seed",
                                     layout=W.Layout(width="180px"))
        self.load_button = W.Button(description="Load sample", icon="refresh")
        self.load_button.on_click(lambda _: self._guarded(self._load_sample))

        self.show_landmarks = W.ToggleButton(value=False, description="Show landmarks", icon="dot-circle-o")
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

        self.clip_path = W.Text(value=str(clip_path), description="Clip", layout=W.Layout(width="300px"))
        self.clip_frames = W.BoundedIntText(value=24, min=2, max=MAX_CLIP_FRAMES, description="frames",
                                            style={"description_width": "50px"}, layout=W.Layout(width="140px"))
        self.clip_button = W.Button(description="Save clip", icon="film")
        self.clip_button.on_click(lambda _: self._guarded(self._save_clip))

        self.widget = W.VBox([
            self.image,
            W.HBox([self.latency, self.message]),
            W.HBox([self.seed, self.load_button, self.show_landmarks, self.show_render]),
            self.tabs,
            self.reset_all,
            W.HBox([self.advanced_attribute, self.advanced_index, self.advanced_value, self.advanced_apply]),
            W.HBox([self.clip_path, self.clip_frames, self.clip_button]),
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
        self._syncing = True
        try:
            for key, slider in self.sliders.items():
                if attribute is None or key[0] == attribute:
                    value = float(self.model.value(*key))
                    slider.value = value
                    self.boxes[key].value = value
        finally:
            self._syncing = False

    def _refresh(self) -> None:
        """Encode the model's panel into the image and update the latency readout."""
        t0 = time.perf_counter()
        panel = self.model.panel(show_landmarks=self.show_landmarks.value, show_render=self.show_render.value,
                                 show_source=True, scale=self.scale)
        self.image.value = png_bytes(panel)
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
        current = float(self.model.value(*key)) if current is None else current
        grid = min(max(s.min + round((current - s.min) / s.step) * s.step, s.min), s.max)
        return value != current and abs(value - grid) <= 1e-6 * s.step

    def _on_box(self, key: tuple[str, int], value: float) -> None:
        if self._syncing:
            return
        self._request(key, float(value))

    def _request(self, key: tuple[str, int], value: float) -> None:
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

    def _apply(self, pending: dict[tuple[str, int], float]) -> None:
        for key, value in pending.items():
            used = float(self.model.set(key[0], key[1], value))
            if not np.isclose(used, value, rtol=1e-6, atol=1e-9):   # clamped: show the value the model used
                self._syncing = True
                try:
                    self.sliders[key].value = used
                    self.boxes[key].value = used
                finally:
                    self._syncing = False
        self._refresh()

    def flush(self) -> None:
        """Apply a pending throttled slider value now (cancels the trailing timer)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush(_running_loop())

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

    def _on_toggle(self) -> None:
        self.show_landmarks.description = "Hide landmarks" if self.show_landmarks.value else "Show landmarks"
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
        self.flush()
        path = self.model.save_clip(self.clip_path.value, frames=int(self.clip_frames.value))
        return f"wrote {path}"
