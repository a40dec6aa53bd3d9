"""Strip notebook outputs, execution counts and widget state; normalise the kernelspec.

    python tools/clean_notebooks.py notebooks/           # clean in place
    python tools/clean_notebooks.py --check notebooks/   # exit 1 if any notebook is not clean (CI)

Cells tagged ``golden`` keep their outputs (deliberate reference outputs compared by nbval).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def clean(nb) -> None:
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if "golden" not in cell.metadata.get("tags", []):
            cell.outputs = []
            cell.execution_count = None
        for key in ("execution", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--check", action="store_true", help="report unclean notebooks instead of rewriting them")
    args = ap.parse_args(argv)
    files = [f for p in map(Path, args.paths) for f in (sorted(p.glob("*.ipynb")) if p.is_dir() else [p])]
    dirty = []
    for f in files:
        original = f.read_text()
        nb = nbformat.reads(original, as_version=4)
        clean(nb)
        text = nbformat.writes(nb) + "\n"
        if text != original:
            dirty.append(f)
            if not args.check:
                f.write_text(text)
    if args.check and dirty:
        print("not clean (run `make clean-notebooks`):", *map(str, dirty), sep="\n  ")
        return 1
    print(f"{len(files)} notebook(s) {'checked' if args.check else 'cleaned'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
