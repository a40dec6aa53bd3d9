"""Keep each notebook paired with its py:percent script (jupytext), or check that the pairs agree.

    python tools/sync_notebooks.py notebooks/           # sync every pair: the newer file of each pair wins
    python tools/sync_notebooks.py --check notebooks/   # exit 1 if a pair is missing or differs (CI)

Every ``notebooks/NAME.ipynb`` is paired with ``notebooks/NAME.py`` in jupytext's ``py:percent`` format (the
pairing is recorded in the notebook's metadata, ``jupytext.formats``). The script is the reviewable source:
edit it in any editor, or edit the notebook in Jupyter with jupytext installed (both files are saved together).
Syncing keeps the notebook's cell ids and outputs for the cells it can match (jupytext's
``combine_inputs_with_outputs``). A pair agrees when both files give the same cells: type, source and the
metadata jupytext writes into the script (e.g. the ``parameters`` tag).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

FORMATS = "ipynb,py:percent"


def _cells(nb) -> list[tuple]:
    return [(c.cell_type, c.source, dict(c.metadata)) for c in nb.cells]


def pair_problems(ipynb: Path) -> list[str]:
    """What is wrong with the pair of ``ipynb`` (empty when the notebook and its script agree)."""
    import jupytext

    script = ipynb.with_suffix(".py")
    nb = jupytext.read(ipynb)
    problems = []
    formats = nb.metadata.get("jupytext", {}).get("formats")
    if formats != FORMATS:
        problems.append(f"{ipynb}: metadata jupytext.formats is {formats!r}, expected {FORMATS!r} "
                        f"(run `jupytext --set-formats {FORMATS} {ipynb}`)")
    if not script.exists():
        return problems + [f"{ipynb}: its paired script {script} is missing"]
    ids = [c.get("id") for c in nb.cells]
    if None in ids or len(set(ids)) != len(ids):
        problems.append(f"{ipynb}: cell ids are missing or repeated")
    # The notebook as jupytext would write it into the script, read back, against the script as it is.
    expected = _cells(jupytext.reads(jupytext.writes(nb, fmt="py:percent"), fmt="py:percent"))
    found = _cells(jupytext.read(script, fmt="py:percent"))
    for k, (e, f) in enumerate(zip(expected, found, strict=False)):
        if e != f:
            what = "type" if e[0] != f[0] else "source" if e[1] != f[1] else "metadata"
            first = (e[1].splitlines() or [""])[0][:60]
            problems.append(f"{ipynb} and {script} differ at cell {k} ({what}; the notebook's cell starts "
                            f"{first!r})")
            break
    else:
        if len(expected) != len(found):
            problems.append(f"{ipynb} has {len(expected)} cells, {script} has {len(found)}")
    return problems


def sync(ipynb: Path) -> None:
    """Pair ``ipynb`` with its script if it is not yet, then let jupytext sync the pair (the newer file wins)."""
    import jupytext
    from jupytext.cli import jupytext as jupytext_cli

    nb = jupytext.read(ipynb)
    if nb.metadata.get("jupytext", {}).get("formats") != FORMATS and not ipynb.with_suffix(".py").exists():
        jupytext_cli(["--quiet", "--set-formats", FORMATS, str(ipynb)])
    jupytext_cli(["--quiet", "--sync", str(ipynb)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="notebooks (.ipynb) or folders of notebooks")
    ap.add_argument("--check", action="store_true", help="report pairs that differ instead of syncing them")
    args = ap.parse_args(argv)
    files = [f for p in map(Path, args.paths) for f in (sorted(p.glob("*.ipynb")) if p.is_dir() else [p])]
    if args.check:
        problems = [msg for f in files for msg in pair_problems(f)]
        if problems:
            print("notebook pairs out of sync (run `make sync-notebooks`):", *problems, sep="\n  ")
            return 1
        print(f"{len(files)} notebook pair(s) in sync")
        return 0
    for f in files:
        sync(f)
    print(f"{len(files)} notebook pair(s) synced")
    return 0


if __name__ == "__main__":
    sys.exit(main())
