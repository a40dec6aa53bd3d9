"""Slider latency of the face editor (issue 11 §4): a slider change to a new image, through the model and once through
the browser.

    python benchmarks/bench_editor.py [--changes 200] [--threads 1 2] [--device cpu|cuda] [--browser]

* model: ``EditorModel.from_assets("mini")`` with each thread setting, a scripted drag over every control (each
  slider swept through 10 values and back, the attributes in turn, so most changes re-run one F^i), timed per change
  as the view does it: ``m.set`` (F^i from the changed attribute on, the generator with the source's noise) plus
  ``m.panel()`` and its PNG encoding (the bytes the ``ipywidgets.Image`` gets). Median, p95 and maximum, with the
  other core idle and with the other core busy (a one-thread matrix-product loop in another process);
* ``--browser``: the Voilà app (``python -m cddfm3d editor``) in headless Debian Chromium, a slider moved by the
  arrow key ``--presses`` times; change -> displayed is the time from the key press until the page's image shows new
  bytes (the widget round trip: browser -> kernel -> browser), median and p95.

Goal (issue 11): p95 <= 30 ms on 2 CPU cores in the mini world, robust when the other core is busy.
Prints a markdown table (paste it into benchmarks/README.md with the machine's description).
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np

from report import machine_line, print_table  # benchmarks/report.py

BUSY = ("import torch\ntorch.set_num_threads(1)\na = torch.randn(384, 384)\nwhile True:\n    a = (a @ a).tanh()\n")


@contextmanager
def other_core_busy(busy: bool):
    """A one-thread CPU hog in another process while the block runs (nothing when ``busy`` is false)."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY], env=dict(os.environ, OMP_NUM_THREADS="1")) if busy else None
    try:
        if proc is not None:
            time.sleep(2.0)                      # let it start and hold its core
        yield
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def drag_values(m) -> list[tuple[str, int, float]]:
    """(attribute, index, value) of a scripted drag: each control from its source value through 10 values toward
    the top of its range and back."""
    script = []
    for c in m.controls:
        v0 = m.source_value(c.attribute, c.index)
        top = v0 + 0.5 * (c.maximum - v0)
        path = list(np.linspace(v0, top, 10)) + list(np.linspace(top, v0, 10))
        script += [(c.attribute, c.index, float(v)) for v in path]
    return script


def model_latency(device: str, threads: int, changes: int, busy: bool) -> list[float]:
    """Latencies (ms) of ``changes`` slider changes: ``m.set`` + ``m.panel()`` + PNG encoding."""
    from PIL import Image

    from cddfm3d.ui import EditorModel

    m = EditorModel.from_assets("mini", device=device, threads=threads)
    m.load_sample(0)
    script = drag_values(m)
    out = []
    with other_core_busy(busy):
        for i in range(changes + 10):
            attribute, index, value = script[i % len(script)]
            t = time.perf_counter()
            m.set(attribute, index, value)
            buf = io.BytesIO()
            Image.fromarray(m.panel()).save(buf, format="PNG")
            if i >= 10:                          # warm-up
                out.append((time.perf_counter() - t) * 1000)
    return out


def browser_latency(presses: int) -> list[float]:
    """Change -> displayed (ms) in the Voila app: arrow-key presses on the shape-0 slider (half up, half back down),
    each timed from the key press to the ``load`` event of the image with new pixels, with the harness of the
    browser tests (``tests/test_ui_browser.py``: its server, headless Chromium and key-press helpers)."""
    import shutil
    import tempfile
    from pathlib import Path

    from selenium.webdriver.common.keys import Keys

    from cddfm3d.ui import app

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import test_ui_browser as ub

    reason = ub._missing()
    if reason:
        raise SystemExit(f"--browser: {reason}")
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "nb").mkdir()
        nb = Path(shutil.copy2(ub.NOTEBOOK, tmp / "nb" / ub.NOTEBOOK.name))
        port = ub.free_port()
        server = ub.Server(app.voila_command(nb, port, open_browser=False), nb.parent, ub.kernel_env(tmp),
                           tmp / "voila.log", app.editor_url(port).rstrip("/"))
        driver = ub.chrome_driver()
        try:
            server.wait_ready(None)
            driver.get(app.editor_url(port))
            handle = ub.wait_for(driver, ub.SLIDER, ub.EDITOR_READY_S)
            ub.wait_for(driver, ub.IMAGE, 30)
            driver.execute_script(ub.WATCH_JS, ub.IMAGE)
            ub.settled(driver)
            keys = [Keys.ARROW_RIGHT] * (presses // 2) + [Keys.ARROW_LEFT] * (presses - presses // 2)
            for key in keys:
                out.append(ub.press(driver, handle, key)[1])
        finally:
            driver.quit()
            server.stop()
    return out


def stats(ms: list[float]) -> str:
    a = np.asarray(ms)
    return f"{np.median(a):.1f} | {np.percentile(a, 95):.1f} | {a.max():.1f}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--changes", type=int, default=200, help="timed slider changes per row (default 200)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread settings (default 1 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--browser", action="store_true", help="also measure change -> displayed in the Voila app")
    p.add_argument("--presses", type=int, default=40, help="key presses for --browser (default 40)")
    args = p.parse_args(argv)
    rows = []
    for threads in args.threads:
        for busy in (False, True):
            ms = model_latency(args.device, threads, args.changes, busy)
            rows.append((f"model: set + panel + PNG, {threads} thread(s)", "busy" if busy else "idle", stats(ms)))
    if args.browser:
        rows.append(("browser: key press -> new image shown (Voila, Chromium)", "idle",
                     stats(browser_latency(args.presses))))
    print_table(machine_line(args.device, f"{args.changes} changes per model row after 10 warm-up; milliseconds"),
                ("path", "other core", "median", "p95", "max"), rows, numeric_from=2)

if __name__ == "__main__":
    main()
