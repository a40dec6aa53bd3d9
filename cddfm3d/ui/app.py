"""The standalone editor page: notebook 08 (``notebooks/08_face_editor.ipynb``) served by Voilà on localhost, code
cells hidden (Voilà's default ``strip_sources``), for people who only want to edit faces::

    python -m cddfm3d editor [--port N] [--no-browser]

Voilà runs the notebook in its own folder, so :func:`serve` points the editor's default clip path at the folder the
command was run in (the environment variable ``CDDFM3D_EDITOR_CLIP_DIR``, see
:func:`cddfm3d.ui.view.default_clip_path`); the page also shows a saved clip with a download link.

The notebook is read from the source checkout (the repository root is the parent of the ``cddfm3d`` package
folder). A wheel install carries no ``notebooks/`` folder; there :func:`find_notebook` raises
``FileNotFoundError`` naming the path it looked at.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

__all__ = ["NOTEBOOK", "DEFAULT_PORT", "CLIP_DIR_ENV", "source_root", "find_notebook", "pick_port", "voila_command",
           "editor_url", "serve"]

NOTEBOOK = Path("notebooks") / "08_face_editor.ipynb"
DEFAULT_PORT = 8866                       # Voilà's own default
HOST = "127.0.0.1"                        # never listens beyond this machine


def source_root() -> Path:
    """The folder holding the ``cddfm3d`` package folder: the repository root in a source checkout."""
    return Path(__file__).resolve().parent.parent.parent


def find_notebook(root: Path | None = None) -> Path:
    """``<root>/notebooks/08_face_editor.ipynb`` (root: :func:`source_root`). Raises ``FileNotFoundError`` naming
    that path when it is missing (e.g. a wheel install, which has no notebooks)."""
    root = source_root() if root is None else Path(root)
    path = root / NOTEBOOK
    if not path.is_file():
        raise FileNotFoundError(f"the editor notebook is not at {path}: `editor` serves notebooks/{NOTEBOOK.name} "
                                f"of a source checkout (git clone the repository and run it there); an installed "
                                f"wheel has no notebooks/ folder")
    return path


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def pick_port(port: int | None = None) -> int:
    """``port`` when given (Voilà then fails if it is taken); else :data:`DEFAULT_PORT` if free, else a free port
    the system picks."""
    if port is not None:
        return int(port)
    if _port_free(DEFAULT_PORT):
        return DEFAULT_PORT
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def voila_command(notebook: Path | str, port: int, open_browser: bool = True,
                  python: str | None = None) -> list[str]:
    """The Voilà command line serving ``notebook`` on ``HOST:port`` with its code cells hidden and no tracebacks
    shown to the page; ``open_browser`` False adds ``--no-browser``. ``python``: the interpreter (default: this
    one, whose environment has cddfm3d, its kernel and voila). The port is fixed (``port_retries=0``) so that the
    printed URL is the served one."""
    cmd = [python or sys.executable, "-m", "voila", str(notebook), f"--port={int(port)}", f"--Voila.ip={HOST}",
           "--Voila.port_retries=0", "--strip_sources=True", "--show_tracebacks=False"]
    if not open_browser:
        cmd.append("--no-browser")
    return cmd


def editor_url(port: int) -> str:
    """The page's address for a server started by :func:`voila_command`."""
    return f"http://{HOST}:{int(port)}/"


CLIP_DIR_ENV = "CDDFM3D_EDITOR_CLIP_DIR"  # the folder of the editor's default clip (cddfm3d.ui.view.default_clip_path)


def serve(port: int | None = None, open_browser: bool = True, notebook: Path | str | None = None,
          clip_dir: Path | str | None = None) -> int:
    """Serve the editor notebook until interrupted (Ctrl-C); prints the URL and the clip folder first. Returns
    Voilà's exit status (0 after Ctrl-C). ``clip_dir``: the folder of the editor's default clip path (default: the
    current working directory), passed to the kernel as ``$CDDFM3D_EDITOR_CLIP_DIR``. Raises ``FileNotFoundError``
    (see :func:`find_notebook`) or ``NotADirectoryError`` for a ``clip_dir`` that is not a folder, before starting
    anything."""
    path = find_notebook() if notebook is None else Path(notebook)
    if not path.is_file():
        raise FileNotFoundError(f"the editor notebook is not at {path}")
    clip_dir = Path(os.getcwd() if clip_dir is None else clip_dir).expanduser().resolve()
    if not clip_dir.is_dir():
        raise NotADirectoryError(f"the editor's clip folder {clip_dir} is not a folder")
    port = pick_port(port)
    cmd = voila_command(path, port, open_browser=open_browser)
    print(f"cddfm3d editor: serving {path} at {editor_url(port)} (Ctrl-C stops it); clips are saved in {clip_dir}",
          flush=True)
    proc = subprocess.Popen(cmd, cwd=path.parent, env={**os.environ, CLIP_DIR_ENV: str(clip_dir)})
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 0
