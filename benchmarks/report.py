"""What the benchmark scripts share: timing a command, the machine line and the markdown result table.

The scripts import it as a sibling module (``python benchmarks/bench_*.py`` puts this folder first on ``sys.path``).
"""
from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], threads: int, quiet_stderr: bool = False) -> float:
    """Wall seconds of ``cmd`` run from the repository root with ``threads`` OpenMP/MKL threads and tqdm off
    (start-up included). Raises ``subprocess.CalledProcessError`` when the command fails."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TQDM_DISABLE="1")
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL if quiet_stderr else None)
    return time.perf_counter() - t


def machine_line(device: str, details: str = "") -> str:
    """``"x86_64, 2 CPUs, device cpu, load average 1.23; <details>"`` (the load average when called)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    line = f"{platform.machine()}, {os.cpu_count()} CPUs, device {device}, load average {load:.2f}"
    return f"{line}; {details}" if details else line


def print_table(header: str, columns: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int) -> None:
    """Print ``header``, a blank line and a markdown table; columns from ``numeric_from`` on are right-aligned."""
    print(header)
    print()
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---:" if i >= numeric_from else "---" for i in range(len(columns))) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
