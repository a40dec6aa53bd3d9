"""The face editor in a real browser (issue 11 §3): headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium with an explicit driver path, so Selenium Manager never downloads anything)
opens notebook 08 in JupyterLab, runs all cells, moves a slider with the keyboard and sees the displayed image change;
then the same on the standalone Voilà page started by the command line the ``editor`` command runs. The time from
the key press to the new image's ``load`` event is printed (``-s`` shows it): the change -> displayed latency.

Skipped, with the reason, where chromium, chromedriver or selenium is missing (``.ci/run`` installs them)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import cddfm3d
from cddfm3d.ui import app

pytestmark = pytest.mark.slow

REPO = Path(cddfm3d.__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
NOTEBOOK = REPO / "notebooks" / "08_face_editor.ipynb"
SERVER_START_S = 120        # generous: 2 shared CPU cores
EDITOR_READY_S = 300        # the notebook runs all its cells before the kernel takes slider events
IMAGE_CHANGE_S = 60
SLIDER = ".cddfm3d-shape-0 .noUi-handle"
IMAGE = "img.cddfm3d-image"
BOX = ".cddfm3d-box-shape-0 input"
CODE_INPUT = ".jp-CodeCell .jp-InputArea, .jp-InputArea-editor, .cm-editor"   # (markdown cells have an InputArea)


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.is_file():
            return f"{path} not found (Debian's chromium and chromium-driver packages; .ci/run installs them)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kernel_env(tmp: Path) -> dict[str, str]:
    """The servers' (and so their kernels') environment: FAST mode, one thread, Jupyter's state in ``tmp``."""
    env = dict(os.environ)
    env.update(CDDFM3D_FAST="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
               IPYTHONDIR=str(tmp / "ipython"), PYTHONUNBUFFERED="1")
    return env


class Server:
    """A server process in its own process group; :meth:`stop` ends the group (the server and its kernels)."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict[str, str], log: Path, url: str):
        self.url, self.log = url, log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, path: str | None, timeout: float = SERVER_START_S) -> None:
        """Until GET ``path`` answers 200 (``None``: until the port accepts connections)."""
        host, port = self.url.split("//")[1].split(":")
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if path is None:
                    socket.create_connection((host, int(port)), timeout=5).close()
                    return
                with urllib.request.urlopen(self.url + path, timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        self._log.flush()
        return self.log.read_bytes()[-n:].decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self._log.close()


def chrome_driver():
    """Headless Debian Chromium through its chromedriver (explicit path: Selenium Manager never downloads a
    driver). Also used by ``benchmarks/bench_editor.py --browser``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")          # belt and braces: no Selenium Manager downloads
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100",
                "--disable-gpu", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    d = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    d.set_page_load_timeout(SERVER_START_S)
    return d


@pytest.fixture(scope="module")
def driver():
    reason = _missing()
    if reason:
        pytest.skip(reason)
    d = chrome_driver()
    try:
        yield d
    finally:
        d.quit()


@pytest.fixture
def notebook_dir(tmp_path) -> Path:
    """A copy of notebook 08 in a fresh folder (the servers' root)."""
    if not NOTEBOOK.is_file():
        pytest.fail(f"{NOTEBOOK} is missing")
    work = tmp_path / "nb"
    work.mkdir()
    shutil.copy2(NOTEBOOK, work / NOTEBOOK.name)
    return work


@pytest.fixture
def servers():
    started: list[Server] = []
    yield started
    for s in started:
        s.stop()


def wait_for(driver, css: str, timeout: float):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(
        EC.visibility_of_element_located((By.CSS_SELECTOR, css)))


# Pixel checksum of the displayed image (a blob: URL of the same origin, so a canvas may read it) and the times of
# the last key press and of the image loads after it.
WATCH_JS = """
const img = document.querySelector(arguments[0]);
window.__cddfm3d = {key: null, loads: []};
document.addEventListener('keydown', () => { window.__cddfm3d.key = performance.now(); }, true);
img.addEventListener('load', () => { window.__cddfm3d.loads.push(performance.now()); });
"""
IDLE_JS = """
const e = document.querySelector('.jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator');
const busy = [...document.querySelectorAll('.jp-InputArea-prompt')].some(p => p.textContent.includes('*'));
return !!e && e.getAttribute('data-status') === 'idle' && !busy;
"""
PIXELS_JS = """
const img = document.querySelector(arguments[0]);
if (!img || !img.complete || !img.naturalWidth) return null;
const c = document.createElement('canvas');
c.width = img.naturalWidth; c.height = img.naturalHeight;
const g = c.getContext('2d'); g.drawImage(img, 0, 0);
const d = g.getImageData(0, 0, c.width, c.height).data;
let h = 0; for (let i = 0; i < d.length; i++) { h = (h * 31 + d[i]) >>> 0; }
const w = c.width / 3, tiles = [0, 0];               // source | edit | render: checksums of the first two tiles
for (let y = 0; y < c.height; y++) for (let x = 0; x < 2 * w; x++) for (let k = 0; k < 3; k++) {
    const t = x < w ? 0 : 1;
    tiles[t] = (tiles[t] * 31 + d[4 * (y * c.width + (x % w)) + k + (t ? 4 * w : 0)]) >>> 0;
}
return [img.src, c.width, c.height, h, tiles[0] === tiles[1]];
"""


def pixels(driver) -> list:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 30).until(lambda d: d.execute_script(PIXELS_JS, IMAGE))


def press(driver, handle, key) -> tuple[list, float]:
    """One key press on the focused slider handle; the image's src and pixels must change. Returns the new image's
    [src, width, height, checksum] and the key -> image-loaded time in ms."""
    from selenium.webdriver.support.ui import WebDriverWait

    before = pixels(driver)
    driver.execute_script("arguments[0].focus(); window.__cddfm3d.loads = [];", handle)
    handle.send_keys(key)
    after = WebDriverWait(driver, IMAGE_CHANGE_S, poll_frequency=0.05).until(
        lambda d: (p := d.execute_script(PIXELS_JS, IMAGE)) and p[0] != before[0] and p)
    assert after[1:3] == before[1:3]                      # same panel size
    assert after[3] != before[3], "the image src changed but its pixels did not"
    t = driver.execute_script("return window.__cddfm3d;")
    time.sleep(0.3)                                       # past the throttle: the next press is its own update
    return after, t["loads"][0] - t["key"]


def settled(driver, quiet: float = 1.5, timeout: float = IMAGE_CHANGE_S) -> tuple[list, str]:
    """The image and the slider's number box (set by the kernel) once neither changed for ``quiet`` s."""
    from selenium.webdriver.common.by import By

    last, since, end = None, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < end:
        now = (pixels(driver)[1:], driver.find_element(By.CSS_SELECTOR, BOX).get_attribute("value"))
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return last
        time.sleep(0.1)
    raise AssertionError(f"the editor did not settle within {timeout} s")


def exercise_the_editor(driver) -> tuple[list[float], int]:
    """Three single key presses on the shape-0 slider, each changing the image; then a burst of six (a fast drag)
    whose final image must be the image of the last value: one step back and one forward (single presses, each
    its own update) must give the same pixels. Returns the single presses' key -> image times (ms) and the number
    of images the burst displayed (the throttle coalesces the events in between)."""
    from selenium.webdriver.common.keys import Keys

    handle = wait_for(driver, SLIDER, EDITOR_READY_S)
    wait_for(driver, IMAGE, 30)
    driver.execute_script(WATCH_JS, IMAGE)
    up, down = Keys.ARROW_RIGHT, Keys.ARROW_LEFT
    if float(handle.get_attribute("aria-valuenow")) > 0:    # room for ten steps either way of a [-3, 3] slider
        up, down = down, up
    opened, _ = settled(driver)          # the browser drew the sliders (snapping them to their grids): no edit
    assert opened[3], "the editor does not open on the source: its edit tile differs from the source tile"
    latencies = [press(driver, handle, up)[1] for _ in range(3)]
    assert not pixels(driver)[4]
    driver.execute_script("arguments[0].focus(); window.__cddfm3d.loads = [];", handle)
    handle.send_keys(up * 6)
    burst, value = settled(driver)
    n_images = len(driver.execute_script("return window.__cddfm3d.loads;"))
    press(driver, handle, down)
    final, _ = press(driver, handle, up)
    assert settled(driver) == (final[1:], value)
    assert final[1:] == burst, "after a burst of key presses the image is not the image of the last value"
    return latencies, n_images


def failed(driver, server: Server, tmp_path: Path) -> None:
    """Print what helps to see why: the server's log, the page's screenshot path and its visible text."""
    shot = tmp_path / "page.png"
    driver.save_screenshot(str(shot))
    print(f"server log:\n{server.tail()}\nscreenshot: {shot}\npage text:\n"
          f"{driver.execute_script('return document.body.innerText')[:3000]}")


def report(what: str, result: tuple[list[float], int]) -> None:
    latencies, n_images = result
    print(f"\n{what}: key press -> new image displayed: " + ", ".join(f"{x:.0f}" for x in latencies) + " ms; "
          f"a burst of 6 key presses displayed {n_images} images")


def test_jupyterlab_runs_notebook_08_and_a_slider_changes_the_image(driver, notebook_dir, servers, tmp_path):
    from selenium.webdriver.common.by import By

    port = free_port()
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                          "checkForUpdates": False}))
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
           "--ServerApp.port_retries=0", "--allow-root", "--IdentityProvider.token=", "--ServerApp.password=",
           f"--ServerApp.root_dir={notebook_dir}", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           f"--LabApp.user_settings_dir={tmp_path / 'lab-settings'}",
           f"--LabApp.workspaces_dir={tmp_path / 'lab-workspaces'}"]
    server = Server(cmd, notebook_dir, kernel_env(tmp_path), tmp_path / "lab.log", f"http://127.0.0.1:{port}")
    servers.append(server)
    server.wait_ready("/api/status")
    try:
        driver.get(f"{server.url}/lab/tree/{NOTEBOOK.name}")
        wait_for(driver, ".jp-NotebookPanel .jp-Cell", SERVER_START_S)
        wait_for(driver, ".jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator", SERVER_START_S)
        # Run > Run All Cells
        driver.find_element(By.XPATH, "//li[contains(@class,'lm-MenuBar-item')][.//*[text()='Run']]").click()
        wait_for(driver, "li.lm-Menu-item[data-command='runmenu:run-all']", 30).click()
        wait_for(driver, SLIDER, EDITOR_READY_S)
        # the kernel takes the slider's messages once the notebook's last cell has run
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, EDITOR_READY_S, poll_frequency=0.5).until(lambda d: d.execute_script(IDLE_JS))
        errors = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type*='error']")
        assert not errors, errors[0].text[:2000]
        report("JupyterLab", exercise_the_editor(driver))
    except Exception:
        failed(driver, server, tmp_path)
        raise


def test_voila_app_serves_the_editor_and_a_slider_changes_the_image(driver, notebook_dir, servers, tmp_path):
    port = free_port()
    nb = notebook_dir / NOTEBOOK.name
    server = Server(app.voila_command(nb, port, open_browser=False), notebook_dir, kernel_env(tmp_path),
                    tmp_path / "voila.log", app.editor_url(port).rstrip("/"))
    servers.append(server)
    server.wait_ready(None)          # a GET of the page would run the notebook in a kernel of its own
    try:
        driver.get(app.editor_url(port))       # Voilà runs the notebook for this request, then shows the page
        report("Voilà", exercise_the_editor(driver))
        assert not driver.find_elements("css selector", CODE_INPUT), "Voilà shows code cells"
    except Exception:
        failed(driver, server, tmp_path)
        raise
