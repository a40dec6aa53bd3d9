"""Notebooks are paired with py:percent scripts (jupytext), in sync, and committed without outputs."""
import importlib.util
import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sync_tool = _tool("sync_notebooks")
clean_tool = _tool("clean_notebooks")


def _small_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A title\n\nSome text."),
                nbformat.v4.new_code_cell("SEED = 0", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("x = SEED + 1\nprint(x)")]
    nb.metadata["kernelspec"] = dict(clean_tool.KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    path.write_text(nbformat.writes(nb) + "\n")
    return path


@pytest.fixture()
def pair(tmp_path):
    ipynb = _small_notebook(tmp_path / "nb.ipynb")
    sync_tool.sync(ipynb)   # pairs it and writes nb.py
    return ipynb, ipynb.with_suffix(".py")


def test_repository_notebooks_are_paired_in_sync_and_clean(capsys):
    assert len(NOTEBOOKS) >= 3
    for ipynb in NOTEBOOKS:
        assert sync_tool.pair_problems(ipynb) == [], ipynb
        params = [c for c in nbformat.read(ipynb, as_version=4).cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1, f"{ipynb.name}: one parameters cell"
    assert clean_tool.main(["--check", str(ROOT / "notebooks")]) == 0, capsys.readouterr().out


def test_a_synced_pair_agrees_and_keeps_ids_and_tags(pair):
    ipynb, script = pair
    text = script.read_text()
    assert "# %% tags=[\"parameters\"]" in text and "# # A title" in text
    assert sync_tool.pair_problems(ipynb) == []
    ids = [c.id for c in nbformat.read(ipynb, as_version=4).cells]
    # Edit the script (the newer file wins), sync: the notebook takes the edit and keeps its cell ids and tags.
    script.write_text(text.replace("x = SEED + 1", "x = SEED + 2"))
    os.utime(script, (ipynb.stat().st_mtime + 10,) * 2)
    assert sync_tool.pair_problems(ipynb) != []
    sync_tool.sync(ipynb)
    nb = nbformat.read(ipynb, as_version=4)
    assert [c.id for c in nb.cells] == ids
    assert nb.cells[2].source.startswith("x = SEED + 2")
    assert nb.cells[1].metadata["tags"] == ["parameters"]
    assert sync_tool.pair_problems(ipynb) == []


def test_an_edited_script_is_detected(pair):
    ipynb, script = pair
    script.write_text(script.read_text().replace("print(x)", "print(x + 1)"))
    problems = sync_tool.pair_problems(ipynb)
    assert len(problems) == 1 and "cell 2 (source" in problems[0]
    assert sync_tool.main(["--check", str(ipynb)]) == 1


def test_an_edited_notebook_tag_or_extra_cell_is_detected(pair):
    ipynb, _ = pair
    nb = nbformat.read(ipynb, as_version=4)
    nb.cells[1].metadata["tags"] = []
    nbformat.write(nb, ipynb)
    assert "cell 1 (metadata" in " ".join(sync_tool.pair_problems(ipynb))
    nb.cells[1].metadata["tags"] = ["parameters"]
    nb.cells.append(nbformat.v4.new_code_cell("y = 3"))
    nbformat.write(nb, ipynb)
    assert "has 4 cells" in " ".join(sync_tool.pair_problems(ipynb))


def test_a_missing_script_or_pairing_is_detected(tmp_path):
    ipynb = _small_notebook(tmp_path / "lonely.ipynb")
    problems = sync_tool.pair_problems(ipynb)
    assert any("jupytext.formats" in p for p in problems) and any("lonely.py" in p for p in problems)


def test_outputs_are_detected_except_in_golden_cells(pair, capsys):
    ipynb, _ = pair
    assert clean_tool.main(["--check", str(ipynb)]) == 0
    nb = nbformat.read(ipynb, as_version=4)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nb.cells[2].execution_count = 1
    nbformat.write(nb, ipynb)
    assert clean_tool.main(["--check", str(ipynb)]) == 1
    assert "nb.ipynb" in capsys.readouterr().out
    nb.cells[2].metadata["tags"] = ["golden"]   # a deliberate reference output stays
    ipynb.write_text(nbformat.writes(nb) + "\n")
    assert clean_tool.main([str(ipynb)]) == 0
    assert clean_tool.main(["--check", str(ipynb)]) == 0
    assert nbformat.read(ipynb, as_version=4).cells[2].outputs[0]["text"] == "1\n"
