"""Command line: ``python -m cddfm3d <command>`` (or the ``cddfm3d`` console script). The parser and ``main``;
each pipeline stage adds its commands from a module of its own (:mod:`.world`, :mod:`.adapt`, :mod:`.editing`,
:mod:`.manipulators`), with the argument types they share in :mod:`.args`.

Every argument is checked by its argparse type before any work starts or any file is written; a wrong value ends
with argparse's usage line and one ``error:`` line (exit status 2). Errors found later in user input (a missing
folder, a checkpoint of another architecture) also end with one ``error:`` line and status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import adapt, editing, manipulators, world

# the commands in the order ``--help`` lists them (the order they joined the project)
COMMANDS = ("demo", "make-world", "train-recon", "ship-mini", "ship-evaluator", "ship-domain", "ship-editing", "ship-f",
            "evaluate", "train-gan", "invert", "finetune", "gen-pairs", "select-layers", "train-t", "train-f", "editor")
STAGES = (world, adapt, editing, manipulators)


def prog_name(argv0: str | None = None) -> str:
    """``cddfm3d`` when run as the console script, ``python -m cddfm3d`` otherwise."""
    name = Path(argv0 if argv0 is not None else (sys.argv[0] if sys.argv else "")).name
    return "cddfm3d" if name in ("cddfm3d", "cddfm3d.exe") else "python -m cddfm3d"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog or prog_name(), description="CDDFM3D: StyleSpace face manipulation "
                                "with 3D guidance. Each command is one stage of the pipeline.")
    sub = p.add_subparsers(dest="command", metavar="<command>")
    stage = {name: module for module in STAGES for name in module.PARSERS}
    if sorted(stage) != sorted(COMMANDS):     # a command added to a stage module but not listed (or listed twice)
        raise RuntimeError(f"cddfm3d.cli: COMMANDS {sorted(COMMANDS)} differ from the stage modules' commands "
                           f"{sorted(stage)}")
    for name in COMMANDS:
        stage[name].PARSERS[name](sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:   # argparse reports a bad argument (usage + one error line) and exits 2; --help exits 0
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    args.argv = argv
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from ..training import RunInterrupted

    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:  # user errors: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunInterrupted as e:  # SIGINT / SIGTERM: the run saved its checkpoint at a step boundary
        print(f"{args.command}: {e}", file=sys.stderr)
        return e.exit_code

