"""The Makefile's ``mini-assets`` recipe is exactly what the manifest records for the shipped files."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def recipe_commands(target: str = "mini-assets") -> list[str]:
    """`make -n mini-assets` with the install stamp assumed up to date: the commands, as ``python -m cddfm3d ...``,
    and the ``git show`` line that recreates the generator's fine-tuning start file."""
    out = subprocess.run(["make", "-n", "--no-print-directory", target, "PY=python", "VENV=", "STAMP="], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    lines = [ln.strip().removeprefix("/bin/") for ln in out.stdout.splitlines()]   # $(VENV)/bin/torchrun, VENV=
    return [ln for ln in lines if ln.startswith(("python -m cddfm3d ", "git show ", "torchrun "))]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_mini_assets_recipe_matches_the_manifest():
    recipe = recipe_commands()
    assert len(recipe) == 9, recipe
    manifest = json.loads((ROOT / "assets" / "MANIFEST.json").read_text())["assets"]
    covered = set()
    for name in ("mini/generator", "mini/recon"):
        recorded = [c for c in manifest[name]["command"].splitlines() if not c.startswith("#")]   # comments
        # the recorded commands appear in the recipe, in the recipe's order
        positions = [recipe.index(c) for c in recorded]
        assert positions == sorted(positions), name
        covered |= set(recorded)
    assert covered == set(recipe)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_editing_assets_recipe_matches_the_manifest():
    recipe = recipe_commands("editing-assets")
    assert len(recipe) == 18, recipe
    manifest = json.loads((ROOT / "assets" / "MANIFEST.json").read_text())["assets"]
    covered = set()
    names = ["mini/attribute_predictor", "mini/layer_sets", "mini/recon_independent"]
    names += [f"mini/manipulator/{a}" for a in ("shape", "expression", "albedo", "pose", "light")]
    for name in names:
        # comments, and the world's renders (made by mini-assets) that the independent evaluator reads
        recorded = [c for c in manifest[name]["command"].splitlines()
                    if not c.startswith("#") and " make-world " not in f" {c} "]
        positions = [recipe.index(c) for c in recorded]
        assert positions == sorted(positions), name
        covered |= set(recorded)
    assert covered == set(recipe)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_domain_assets_recipe_matches_the_manifest():
    recipe = recipe_commands("domain-assets")
    manifest = json.loads((ROOT / "assets" / "MANIFEST.json").read_text())["assets"]
    covered = set()
    for name in ("mini/recon_toon", "mini/generator_toon", "mini/recon_sketch", "mini/generator_sketch"):
        # comments, and the human world's held-out renders (made by mini-assets) that the toon networks read
        recorded = [c for c in manifest[name]["command"].splitlines()
                    if not c.startswith("#") and "--out out/world/heldout " not in c]
        positions = [recipe.index(c) for c in recorded]
        assert positions == sorted(positions), name
        covered |= set(recorded)
    assert covered == set(recipe)
