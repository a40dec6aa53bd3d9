"""The command line as a new user meets it: every argument checked before work starts (no traceback, no file
written), help text on every option, the program name in the usage line."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from cddfm3d import cli


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_has_help():
    for name, sub in subparsers(cli.build_parser()).items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and len(action.help) > 10, (name, action.option_strings)


@pytest.mark.parametrize("argv, fragment", [
    (["demo", "--device", "gpu"], "unknown device 'gpu'"),
    (["demo", "--device", "cuda"], "CUDA is not available"),
    (["demo", "--n", "0"], "argument --n: expected an integer in [1, 256], found 0"),
    (["demo", "--n", "three"], "expected an integer, found 'three'"),
    (["demo", "--channels", "-1"], "argument --channels"),
    (["demo", "--truncation", "nan"], "expected a finite number"),
    (["demo", "--seed", "-3"], "argument --seed"),
    (["demo", "--generator", "/nonexistent/g.pt"], "/nonexistent/g.pt: no such file"),
    (["make-world", "--out", "{tmp}/w", "--n", "-5"], "argument --n"),
    (["make-world", "--out", "{tmp}/w", "--n", "5", "--size", "16"],
     "argument --size: expected an integer in [32, 256]"),
    (["make-world", "--out", "{tmp}/w", "--n", "5", "--shard-size", "0"], "argument --shard-size"),
    (["train-gan", "--data", "{tmp}/none", "--out", "{tmp}/w"], "{tmp}/none: no such folder"),
    (["train-gan", "--data", "{tmp}", "--out", "{tmp}/w", "--resolution", "48"], "expected a power of two"),
    (["train-gan", "--data", "{tmp}", "--out", "{tmp}/w", "--kimg", "0"], "argument --kimg: expected a number > 0"),
    (["train-gan", "--data", "{tmp}", "--out", "{tmp}/w", "--gamma", "-1"], "argument --gamma"),
    (["train-gan", "--data", "{tmp}", "--out", "{tmp}/w", "--stop-at-step", "0"], "argument --stop-at-step"),
    (["train-recon", "--data", "{tmp}", "--out", "{tmp}/w", "--lr", "0"], "argument --lr"),
    (["train-recon", "--data", "{tmp}", "--out", "{tmp}/w", "--batch", "0"], "argument --batch"),
    (["train-recon", "--data", "{tmp}", "--out", "{tmp}/w", "--steps", "1e3"], "argument --steps"),
    (["ship-mini", "--gan", "{tmp}", "--recon", "{tmp}", "--train-data", "{tmp}", "--heldout", "{tmp}",
      "--floor", "{tmp}", "--n-fd", "1"], "argument --n-fd"),
])
def test_bad_arguments_fail_cleanly_before_any_work(tmp_path, capsys, argv, fragment):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    before = sorted(tmp_path.rglob("*"))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert fragment.replace("{tmp}", str(tmp_path)) in err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("python -m cddfm3d ")
    assert sorted(tmp_path.rglob("*")) == before   # nothing written, no folder created


def test_out_must_be_a_folder(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert cli.main(["make-world", "--out", str(f), "--n", "2"]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


def test_user_errors_found_later_are_one_line(tmp_path, capsys):
    """A folder that exists but holds no dataset: one error line, no commands.txt written."""
    assert cli.main(["train-recon", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_program_name_in_usage():
    assert cli.prog_name("/usr/local/bin/cddfm3d") == "cddfm3d"
    assert cli.prog_name("/x/cddfm3d/__main__.py") == "python -m cddfm3d"
    assert cli.build_parser("cddfm3d").format_usage().startswith("usage: cddfm3d ")
    out = subprocess.run([sys.executable, "-m", "cddfm3d", "--help"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("usage: python -m cddfm3d ")
    script = subprocess.run([sys.executable, "-c", "import sys; from cddfm3d.cli import main; "
                             "sys.argv[0] = '/some/bin/cddfm3d'; raise SystemExit(main(['--help']))"],
                            capture_output=True, text=True, check=True)
    assert script.stdout.startswith("usage: cddfm3d ")


def test_demo_refusals_leave_no_folder(tmp_path, capsys):
    from cddfm3d.stylegan2 import Generator, save_generator

    g32 = tmp_path / "g32.safetensors"
    save_generator(Generator(32, z_dim=8, w_dim=8, mapping_layers=1, channel_max=8), g32)
    assert cli.main(["demo", "--out", str(tmp_path / "out"), "--generator", str(g32)]) == 2
    assert "32 px" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert cli.main(["demo", "--out", str(tmp_path / "out"), "--channels", "100000"]) == 2
    assert "argument --channels: expected an integer in [1, 32]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_batch_larger_than_the_dataset_is_refused(tmp_path, capsys):
    from cddfm3d.world.datasets import write_dataset

    data = write_dataset(tmp_path / "w", 6, size=32, progress=False)
    for cmd in (["train-recon", "--batch", "7"], ["train-gan", "--batch", "8", "--resolution", "32"]):
        assert cli.main(cmd + ["--data", str(data), "--out", str(tmp_path / "run"), "--device", "cpu"]) == 2
        assert f"--batch {cmd[2]} is larger than the training set (6 images in {data})" in capsys.readouterr().err
        assert not (tmp_path / "run").exists()
