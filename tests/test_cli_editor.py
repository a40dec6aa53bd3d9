"""``python -m cddfm3d editor`` (issue 11 §2): its help, the Voilà command line it runs (parsed by Voilà's own
option parser, so a misspelt option fails here), the URL it prints, and the clear error when the notebook is missing
(a wheel install) -- all without starting a server."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

import cddfm3d
from cddfm3d.cli import main
from cddfm3d.ui import app

REPO = Path(cddfm3d.__file__).resolve().parent.parent


class FakePopen:
    """Records the command instead of starting Voilà."""
    calls: list = []

    def __init__(self, cmd, cwd=None, env=None):
        FakePopen.calls.append({"cmd": list(cmd), "cwd": cwd, "env": env})

    def wait(self, timeout=None):
        return 0


@pytest.fixture
def fake_popen(monkeypatch):
    FakePopen.calls = []
    monkeypatch.setattr(app.subprocess, "Popen", FakePopen)
    return FakePopen.calls


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    """A source root with a notebooks/08_face_editor.ipynb."""
    nb = tmp_path / app.NOTEBOOK
    nb.parent.mkdir(parents=True)
    nb.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    monkeypatch.setattr(app, "source_root", lambda: tmp_path)
    return nb


def test_help(capsys):
    assert main(["editor", "--help"]) == 0
    text = capsys.readouterr().out
    for fragment in ("--port", "--no-browser", "Voilà", "localhost"):
        assert fragment in text


def test_source_root_is_the_repository():
    assert app.source_root() == REPO
    assert (app.source_root() / "cddfm3d" / "ui" / "app.py").is_file()


def test_voila_command_is_parsed_by_voila(tmp_path):
    from voila.app import Voila
    from voila.configuration import VoilaConfiguration

    nb = tmp_path / "editor.ipynb"
    cmd = app.voila_command(nb, 9123, open_browser=False)
    assert cmd[:4] == [sys.executable, "-m", "voila", str(nb)]
    v = Voila()
    v.parse_command_line(cmd[3:])          # what `python -m voila` does with its arguments
    assert v.port == 9123 and v.ip == "127.0.0.1" and v.port_retries == 0
    assert v.open_browser is False
    assert v.extra_args == [str(nb)]
    conf = VoilaConfiguration(config=v.config)
    assert conf.strip_sources is True and conf.show_tracebacks is False
    v_open = Voila()
    v_open.parse_command_line(app.voila_command(nb, 9124)[3:])
    assert v_open.open_browser is True and v_open.port == 9124


def test_editor_runs_voila_on_the_checkout_notebook(checkout, fake_popen, capsys):
    assert main(["editor", "--no-browser", "--port", "9125"]) == 0
    out = capsys.readouterr().out
    assert "http://127.0.0.1:9125/" in out and str(checkout) in out
    (call,) = fake_popen
    assert call["cmd"] == app.voila_command(checkout, 9125, open_browser=False)
    assert Path(call["cwd"]) == checkout.parent
    # the kernel runs in notebooks/, but clips go to the folder the command was run in, and the output says where
    assert call["env"][app.CLIP_DIR_ENV] == str(Path.cwd().resolve()) and f"clips are saved in {Path.cwd()}" in out


def test_clip_folder(checkout, fake_popen, tmp_path, monkeypatch):
    from cddfm3d.ui import view

    app.serve(port=9126, open_browser=False, clip_dir=tmp_path)
    env = fake_popen[0]["env"]
    assert env[app.CLIP_DIR_ENV] == str(tmp_path.resolve())
    monkeypatch.setenv(app.CLIP_DIR_ENV, env[app.CLIP_DIR_ENV])      # what the kernel's editor then defaults to
    assert view.default_clip_path() == tmp_path.resolve() / "edit.gif"
    with pytest.raises(NotADirectoryError, match=f"clip folder {tmp_path / 'nope'} is not a folder"):
        app.serve(port=9126, open_browser=False, clip_dir=tmp_path / "nope")
    assert len(fake_popen) == 1                                        # nothing started for the bad folder


def test_missing_notebook_is_a_clear_error(tmp_path, monkeypatch, fake_popen, capsys):
    monkeypatch.setattr(app, "source_root", lambda: tmp_path)
    assert main(["editor", "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the editor notebook is not at ")
    assert str(tmp_path / "notebooks" / "08_face_editor.ipynb") in err and "wheel" in err
    assert len(err.strip().splitlines()) == 1 and not fake_popen       # no traceback, nothing started


@pytest.mark.parametrize("port", ["0", "70000", "http"])
def test_bad_port(port, fake_popen, capsys):
    assert main(["editor", "--port", port]) == 2
    assert "argument --port" in capsys.readouterr().err and not fake_popen


def test_pick_port():
    assert app.pick_port(1234) == 1234
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        try:
            held.bind((app.HOST, app.DEFAULT_PORT))   # occupy the default (unless something else already does)
        except OSError:
            pass
        port = app.pick_port()
        assert port != app.DEFAULT_PORT
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((app.HOST, port))                      # the port picked is free


def test_finds_the_checkout_notebook():
    assert app.find_notebook() == REPO / "notebooks" / "08_face_editor.ipynb"
