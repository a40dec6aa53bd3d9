"""Switch notebooks/01_stylegan2_and_stylespace.ipynb from the untrained stand-in generator to the shipped one.

    python tools/notebooks/make_01.py            # then: python tools/clean_notebooks.py notebooks

Notebook 01 has no generator script of its own; this one edits the cells that talked about the untrained
generator and leaves every other cell as it is. It is idempotent: running it on the edited notebook changes
nothing.
"""
from __future__ import annotations

from pathlib import Path

import nbformat

PATH = Path(__file__).resolve().parents[2] / "notebooks" / "01_stylegan2_and_stylespace.ipynb"

GENERATOR_MD = """\
## The generator

We use the shipped mini-world generator (notebook 00): a StyleGAN2 with the full architecture (mapping MLP,
modulated convolutions, noise inputs, skip ToRGB), 64 px with narrow layers, trained on the mini world's
human-domain face renders. `cddfm3d.assets.load` checks the file against the asset manifest and returns it in
eval mode without gradients. With `WORLD = "real"` the same line loads your FFHQ StyleGAN2 instead (see notebook
00, section 7); everything below is then the same computation at 1024 px."""

GENERATOR_CODE = """\
G = cddfm3d.assets.load("real/generator" if WORLD == "real" else "mini/generator", DEVICE)
print(f"{G.resolution} px, z_dim {G.z_dim}, w_dim {G.w_dim}, {G.num_ws} W+ entries, "
      f"{len(G.style_layers)} style layers, {G.style_dim} StyleSpace dims")
print(f"{sum(p.numel() for p in G.parameters()):,} parameters")"""

OLD_QUESTION = "- What would change in this notebook with the shipped generator? (Only the generator line.)"
NEW_QUESTION = ("- What would change in this notebook with the FFHQ generator (`WORLD = \"real\"`)? "
                "(Only the generator line — and the run time.)")


def main() -> None:
    nb = nbformat.read(PATH, as_version=4)
    code_idx = [i for i, c in enumerate(nb.cells)
                if c.cell_type == "code" and ("default_generator" in c.source or '"mini/generator", DEVICE)' in c.source)]
    if len(code_idx) != 1:
        raise SystemExit(f"{PATH}: expected one generator cell, found {len(code_idx)}")
    i = code_idx[0]
    nb.cells[i].source = GENERATOR_CODE
    md = nb.cells[i - 1]
    if md.cell_type != "markdown" or not md.source.startswith("## The generator"):
        raise SystemExit(f"{PATH}: cell {i - 1} should be the '## The generator' markdown cell")
    md.source = GENERATOR_MD
    for c in nb.cells:
        if c.cell_type == "markdown" and OLD_QUESTION in c.source:
            c.source = c.source.replace(OLD_QUESTION, NEW_QUESTION)
    PATH.write_text(nbformat.writes(nb) + "\n")
    print("wrote", PATH)


if __name__ == "__main__":
    main()
