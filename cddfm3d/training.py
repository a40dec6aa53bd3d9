"""One resumable run for every trainer: named state, exact resume, atomic checkpoints, provenance, DDP rank.

Every trainer of the package (the GAN, the reconstruction network, and the later stages: T, F^i, fine-tuning,
embedding) is a :class:`ResumableRun`. A subclass creates its networks, optimizers and random generators, declares
them with :meth:`ResumableRun.track`, implements one iteration (:meth:`~ResumableRun.train_step`) and the file
users want (:meth:`~ResumableRun.export`); the base owns everything else:

* the state: every tracked module, optimizer and ``torch.Generator``; the step counter; the JSON log; the config;
  **all** global random states (torch CPU, every CUDA device when CUDA is initialised, Python's ``random``,
  NumPy's global generator) and the subclass's extra scalars (:meth:`~ResumableRun.extra_state`);
* the checkpoint ``<out>/checkpoint.pt``, written atomically (temp file + rename), then the export, then
  ``<out>/log.json``; read back with ``torch.load(weights_only=True)`` (no pickled code is ever executed);
* resume: the saved config must agree with the requested one on the fields that fix the architecture
  (:attr:`~ResumableRun.arch_keys`); everything else (length of the run, learning rate, ...) may change;
  an uninterrupted run and a run interrupted and resumed any number of times give bit-identical results;
* the loop: tqdm progress, a snapshot every ``snapshot_every`` steps, and a deliberate stop at an absolute step
  (``stop_at_step``) that keeps the full run's schedule. SIGINT (Ctrl-C, a notebook's interrupt) and SIGTERM
  (``timeout``, batch schedulers, ``docker stop``) end the current step, save the checkpoint at that step boundary
  and raise :class:`RunInterrupted`; a second Ctrl-C stops at once. An exception inside a step leaves the
  checkpoint at the last snapshot, because a half-done step (weights updated, random streams advanced) cannot be
  resumed exactly;
* torchrun / DistributedDataParallel: only rank 0 writes files; every rank's random states are gathered into the
  checkpoint and each rank gets its own back on resume;
* provenance: :func:`record_command` appends the command line to ``<out>/commands.txt`` when a command starts and
  the run appends where it stopped, so :func:`rebuild_commands` can state the commands that reproduce its
  files exactly (an interrupted-then-resumed command is one command; a run stopped early gets
  ``--stop-at-step``).

The state layout (keys of ``checkpoint.pt``) is flat, ``{name: state}`` for the tracked objects, so checkpoints
written before this base existed still resume.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shlex
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .serialization import atomic_write

CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "log.json"
COMMANDS_FILE = "commands.txt"
STOP_MARK = "# stopped"
STOP_OPTION = "--stop-at-step"


# ------------------------------------------------------------------------------------------------ distributed
def dist_info() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless ``torch.distributed`` is initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def allreduce_gradients(module: torch.nn.Module) -> None:
    """Average the gradients of ``module`` over all ranks (data-parallel training); no-op in one process."""
    _, world = dist_info()
    if world == 1:
        return
    for p in module.parameters():
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad /= world


def init_distributed(device_type: str = "cuda") -> torch.device:
    """Initialise ``torch.distributed`` from torchrun's environment (``WORLD_SIZE``, ``LOCAL_RANK``) and return
    this rank's device; without torchrun, just the device (``cuda`` falls back to ``cpu`` without CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return torch.device(device_type if device_type != "cuda" or torch.cuda.is_available() else "cpu")
    backend = "nccl" if device_type == "cuda" and torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def is_main_process() -> bool:
    """True on rank 0 (or without torch.distributed); also reads torchrun's ``RANK`` before initialisation."""
    rank, _ = dist_info()
    return rank == 0 and int(os.environ.get("RANK", "0")) == 0


# ------------------------------------------------------------------------------------------------ schedule
def warmup_cosine(step: int, lr: float, warmup: int, steps: int) -> float:
    """Learning rate at the 0-based ``step`` of a run of ``steps`` steps: a linear warm-up over ``warmup`` steps,
    then a cosine decay to 0 at ``steps`` (and 0 after it)::

        step < warmup:   lr * (step + 1) / warmup
        otherwise:       lr * (1 + cos(pi * min(t, 1))) / 2,   t = (step - warmup) / max(steps - warmup, 1)

    (the warm-up of Goyal et al. 2017, "Accurate, large minibatch SGD", followed by the cosine of Loshchilov &
    Hutter 2017, "SGDR", without restarts). ``warmup = 0`` starts at ``lr``. Same units as ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(steps - warmup, 1)
    return lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


# ------------------------------------------------------------------------------------------------ random states
def global_rng_state() -> dict:
    """Every global random state a training step may draw from: torch CPU, each CUDA device (when CUDA has been
    initialised), Python's ``random`` and NumPy's legacy global generator. Only tensors, ints and tuples, so the
    checkpoint loads with ``weights_only=True``."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state["numpy"] = (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_global_rng_state(state: dict, cuda: bool = True) -> None:
    """Restore :func:`global_rng_state`. With ``cuda``, CUDA states are restored on as many devices as both sides
    have; without (a run on the CPU), they are ignored and CUDA is not initialised."""
    torch.set_rng_state(state["torch"])
    if "python" in state:
        random.setstate(_as_tuple(state["python"]))
    if "numpy" in state:
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if cuda and state.get("cuda") and torch.cuda.is_available():
        n = min(len(state["cuda"]), torch.cuda.device_count())
        for i in range(n):
            torch.cuda.set_rng_state(state["cuda"][i], i)


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


# ------------------------------------------------------------------------------------------------ provenance
def record_command(out_dir, argv) -> None:
    """Append ``python -m cddfm3d <argv>`` (under torchrun: the torchrun line) to ``out_dir/commands.txt`` (creating
    the folder); rank 0 only.

    Together with the stop lines a run appends (:meth:`ResumableRun.record_stop`) this is the provenance that
    :func:`rebuild_commands` turns into the commands that reproduce the folder's files."""
    if not is_main_process():
        return
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / COMMANDS_FILE, "a") as f:
        f.write(_launcher() + " " + " ".join(shlex.quote(a) for a in argv) + "\n")


def _launcher() -> str:
    """``python -m cddfm3d``, or the torchrun line that started this process group (its size fixes the per-rank
    seeds, so it is part of what reproduces a run)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return "python -m cddfm3d"
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return f"torchrun --nnodes {max(world // max(local, 1), 1)} --nproc_per_node {local} -m cddfm3d"


def read_commands(*dirs) -> list[str]:
    """The recorded command lines of each folder, in order (comment lines and blank lines skipped).

    Raises ``FileNotFoundError`` naming the missing ``commands.txt``."""
    lines = []
    for d in dirs:
        lines += [ln for ln in _read_lines(d) if not ln.startswith("#")]
    return lines


def rebuild_commands(*dirs) -> list[str]:
    """The commands that reproduce each folder's current files, from its ``commands.txt``.

    The same command run again (a resume after an interruption, or a re-run that finds the work done, with or
    without another ``--stop-at-step``) is one command, the last, because resuming is exact. A command whose run
    stopped before its end (the last one, or one followed
    by a different command, as a longer schedule) gets ``--stop-at-step N``, the step it reached (replacing one it
    had). Folders without stop lines (datasets) give their lines, repeats merged.
    Raises ``FileNotFoundError`` naming the missing ``commands.txt``."""
    out = []
    for d in dirs:
        runs: list[list] = []   # [command, stopped_at_step or None (finished / unknown)]
        for ln in _read_lines(d):
            if ln.startswith(STOP_MARK):
                if runs:
                    runs[-1][1] = _parse_stop(ln)
            elif ln.startswith("#"):
                continue
            elif runs and _without_stop(runs[-1][0]) == _without_stop(ln):
                runs[-1] = [ln, None]   # the same command again resumes the same run (or finds it done)
            else:
                runs.append([ln, None])
        # a command whose run saved nothing (stopped at step 0) produced nothing
        out += [cmd if stop is None else _with_stop(cmd, stop) for cmd, stop in runs if stop != 0]
    return out


def _without_stop(command: str) -> list[str]:
    words = shlex.split(command)
    if STOP_OPTION in words[:-1]:
        i = words.index(STOP_OPTION)
        del words[i:i + 2]
    return words


def _with_stop(command: str, step: int) -> str:
    return shlex.join(_without_stop(command) + [STOP_OPTION, str(step)])


def _read_lines(d) -> list[str]:
    p = Path(d) / COMMANDS_FILE
    if not p.is_file():
        raise FileNotFoundError(f"{p}: missing; it records the commands that produced {d} (written by "
                                f"make-world and by every training command)")
    return [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]


def _parse_stop(line: str) -> int | None:
    """``# stopped at step N of M (...)`` -> N when the run ended before M, else None (finished)."""
    parts = line.split()
    try:
        step, total = int(parts[4]), int(parts[6])
    except (IndexError, ValueError):
        return None
    return step if step < total else None


# ------------------------------------------------------------------------------------------------ stopping
class RunInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM at a step boundary, after its checkpoint was written.

    ``signum``: the signal; ``step``: the step saved; ``exit_code``: the shell convention 128 + signal."""

    def __init__(self, signum: int, step: int):
        self.signum, self.step = int(signum), int(step)
        super().__init__(f"interrupted by {signal.Signals(self.signum).name} at step {self.step}; the checkpoint "
                         f"is saved, re-run the same command to resume")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _StopSignals:
    """While active (main thread only; elsewhere signals cannot be caught and this does nothing), SIGINT and
    SIGTERM set :attr:`requested` instead of interrupting: the loop finishes its step and stops. A second SIGINT
    raises ``KeyboardInterrupt`` at once (the checkpoint then stays at the last snapshot)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                try:
                    self._previous[s] = signal.signal(s, self._handle)
                except (ValueError, OSError):  # not settable here (embedded interpreters)
                    pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signum

    def __exit__(self, *exc) -> bool:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False


# ------------------------------------------------------------------------------------------------ the run
class ResumableRun:
    """Base of every trainer; see the module docstring.

    Subclasses set :attr:`name` and :attr:`arch_keys`, build their objects in ``__init__`` after calling
    ``super().__init__`` and :meth:`track` them, and implement :meth:`train_step` (one iteration; returns float
    statistics), :attr:`total_steps` and :meth:`export`. :meth:`run_loop` drives the iterations."""

    name = "train"
    arch_keys: tuple[str, ...] = ()
    log_every = 10

    def __init__(self, config, out_dir, device=None):
        if not dataclasses.is_dataclass(config):
            raise TypeError(f"{type(self).__name__}: config must be a dataclass instance, found {type(config)}")
        self.cfg = config
        self.out = Path(out_dir)
        self.device = torch.device(device or "cpu")
        self.rank, self.world = dist_info()
        self.step = 0
        self.log: list[dict] = []
        self.stop_at_step: int | None = None
        self.command: list[str] | None = None   # CLI arguments, recorded in commands.txt when the loop starts
        self._saved_step = 0                      # step of the checkpoint on disk (0: none yet)
        self._tracked: dict[str, Any] = {}

    # ----------------------------------------------------------- declared state
    def track(self, **objects) -> None:
        """Declare modules, optimizers (anything with ``state_dict``/``load_state_dict``) and ``torch.Generator``
        objects by name; they are saved and restored under that name."""
        for key, obj in objects.items():
            if not (isinstance(obj, torch.Generator) or hasattr(obj, "load_state_dict")):
                raise TypeError(f"track({key}=...): expected a module, optimizer or torch.Generator, found "
                                f"{type(obj).__name__}")
            if key in self._reserved():
                raise ValueError(f"track: {key!r} is a reserved checkpoint key")
            self._tracked[key] = obj

    @staticmethod
    def _reserved() -> set[str]:
        return {"step", "config", "log", "rank_rng", "format"}

    def extra_state(self) -> dict:
        """Subclass hook: further state (ints, floats, tensors) saved at the top level of the checkpoint."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Subclass hook: restore what :meth:`extra_state` saved (``state`` is the whole checkpoint)."""

    def config_dict(self) -> dict:
        return json.loads(config_json(self.cfg))

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT_FILE

    def state_dict(self) -> dict:
        """The full state. Under torch.distributed every rank's random states are collected (a collective call:
        all ranks must call it, as they do at the same step boundaries)."""
        rng = self._rank_rng_state()
        if self.world > 1:
            ranks: list = [None] * self.world
            torch.distributed.all_gather_object(ranks, rng)
        else:
            ranks = [rng]
        state = {"format": "cddfm3d.run/1", "step": self.step, "config": config_json(self.cfg),
                 "log": json.dumps(self.log), "rank_rng": ranks}
        for key, obj in self._tracked.items():
            state[key] = obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()
        state.update(self.extra_state())
        return state

    def _rank_rng_state(self) -> dict:
        return {"global": global_rng_state(),
                "generators": {k: g.get_state() for k, g in self._tracked.items() if isinstance(g, torch.Generator)}}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state written by :meth:`state_dict` (or by the trainers before this base, whose layout is the
        same but for the random states); refuses one whose architecture fields differ."""
        self.check_compatible(json.loads(state["config"]))
        for key, obj in self._tracked.items():
            if key not in state:
                raise ValueError(f"{self.checkpoint_path}: no {key!r} in the checkpoint (found {sorted(state)})")
            if isinstance(obj, torch.Generator):
                obj.set_state(state[key])
            else:
                obj.load_state_dict(state[key])
        self.step = self._saved_step = int(state["step"])
        self.log = json.loads(state["log"])
        if "rank_rng" in state:
            ranks = state["rank_rng"]
            own = ranks[self.rank] if self.rank < len(ranks) else None
            if own is not None:
                set_global_rng_state(own["global"], cuda=self.device.type == "cuda")
                for k, g_state in own["generators"].items():
                    self._tracked[k].set_state(g_state)
        elif "torch_rng" in state:      # layout of the trainers before this base
            torch.set_rng_state(state["torch_rng"])
        self.load_extra_state(state)

    def resumed_start(self, state: dict, given_sha256: str | None) -> tuple[str | None, str | None]:
        """``(init_sha256, init_file)`` recorded in a checkpoint ``state`` by a run that started from other weights
        (fine-tuning: ``train-recon --init``, ``train-f --init``; ``(None, None)`` for a run started afresh), after
        checking that the start given to this call (its state sha256, None for none) is that run's own: a resumed
        run continues from its own start. Raises ``ValueError`` naming the checkpoint otherwise."""
        saved = state.get("init_sha256")
        if given_sha256 is not None and given_sha256 != saved:
            was = f"{saved[:12]}..." if saved else "none (the run started afresh)"
            raise ValueError(f"{self.checkpoint_path}: field 'init_sha256' is {was}, the init given is "
                             f"{given_sha256[:12]}...: a run continues from its own start; resume it with the same "
                             f"--init file (or none), or start the new init in another directory")
        return saved, state.get("init_file")

    def check_compatible(self, saved: dict) -> None:
        """Raise ``ValueError`` naming the checkpoint and the first differing architecture field. A field the saved
        config lacks (a checkpoint written before the field existed) counts as the field's default, which is what
        that run did."""
        now = self.config_dict()
        defaults = _field_defaults(self.cfg)
        for key in self.arch_keys:
            if saved.get(key, defaults.get(key)) != now.get(key):
                raise ValueError(
                    f"{self.checkpoint_path}: the checkpoint's architecture differs from the requested one: "
                    f"{key}={saved.get(key)!r} in the checkpoint, {key}={now.get(key)!r} requested; use another "
                    f"output directory, or start afresh (--no-resume / resume=False)")

    # ----------------------------------------------------------- files
    def export(self) -> None:
        """Subclass hook: write the run's deliverable (e.g. ``generator.safetensors``) into :attr:`out`."""

    def save(self) -> None:
        """Checkpoint (atomically), then the export, then ``log.json``; only rank 0 writes."""
        state = self.state_dict()
        if self.rank != 0:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write(self.checkpoint_path, lambda tmp: torch.save(state, tmp))
        self._saved_step = self.step
        self.export()
        text = json.dumps(self.log)
        atomic_write(self.out / LOG_FILE, lambda tmp: tmp.write_text(text))

    def try_resume(self) -> bool:
        """Load ``checkpoint.pt`` if there is one; True when resumed."""
        if not self.checkpoint_path.exists():
            return False
        # CPU first: the random states must stay CPU tensors; load_state_dict moves the rest to the device.
        state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        self.load_state_dict(state)
        return True

    def start(self, resume: bool = True, stop_at_step: int | None = None,
              command: list[str] | None = None) -> ResumableRun:
        """Resume from the folder's checkpoint when ``resume`` (and there is one), else start afresh.

        ``stop_at_step``: end the loop at this absolute step (the schedule stays that of the whole run).
        ``command``: the command-line arguments that started the run, appended to ``commands.txt`` by the loop."""
        if stop_at_step is not None and (isinstance(stop_at_step, bool) or not isinstance(stop_at_step, int)
                                         or stop_at_step < 1):
            raise ValueError(f"stop_at_step must be a positive int, found {stop_at_step!r}")
        self.stop_at_step = stop_at_step
        self.command = None if command is None else list(command)
        if resume:
            self.try_resume()
        return self

    def record_stop(self) -> None:
        """Append ``# stopped at step N of M`` to ``commands.txt`` when the folder has one (a run started from the
        command line): N is the step of the checkpoint on disk, M the step the run was asked to reach."""
        path = self.out / COMMANDS_FILE
        if self.rank == 0 and path.is_file():
            with open(path, "a") as f:
                end = getattr(self, "_end", self.total_steps)
                f.write(f"{STOP_MARK} at step {self._saved_step} of {end} "
                        f"({time.strftime('%Y-%m-%d %H:%M:%S')})\n")

    # ----------------------------------------------------------- the loop
    def train_step(self) -> dict:
        """One iteration (the base increments :attr:`step` after it); returns float statistics for the log."""
        raise NotImplementedError

    @property
    def total_steps(self) -> int:
        """Steps of the whole run."""
        raise NotImplementedError

    def progress_position(self) -> int:
        """Position of the progress bar (steps by default; the GAN counts images)."""
        return self.step

    def log_fields(self) -> dict:
        """Subclass hook: fields added to every log entry besides the step and the statistics."""
        return {}

    def run_in_train_mode(self, net: torch.nn.Module, *, snapshot_every: int, progress: bool = True,
                          max_steps: int | None = None) -> dict:
        """:meth:`run_loop` with ``net`` in training mode, put back in eval mode when the loop ends (also when it
        raises or is interrupted). Returns ``{step, seconds}``: the absolute step reached and the loop's seconds."""
        net.train()
        try:
            result = self.run_loop(snapshot_every=snapshot_every, progress=progress, max_steps=max_steps)
        finally:
            net.eval()
        return dict(step=self.step, seconds=result["seconds"])

    def run_loop(self, *, snapshot_every: int, progress: bool = True, max_steps: int | None = None,
                 unit: str = "step", scale: int = 1) -> dict:
        """Run :meth:`train_step` until :attr:`total_steps`, ``stop_at_step`` or ``max_steps`` more steps.

        ``snapshot_every`` (steps, >= 1) sets how often the checkpoint is written; it is also written when the loop
        ends, and at the step boundary after SIGINT / SIGTERM, which then raise :class:`RunInterrupted`. An
        exception inside a step propagates with the checkpoint left at the last snapshot (see the module
        docstring). The bar shows ``progress_position()`` out of ``total_steps * scale`` ``unit``.
        Returns ``{step, seconds, steps_per_second}``."""
        from .progress import progress_bar

        self._end = self.total_steps if self.stop_at_step is None else min(self.total_steps, self.stop_at_step)
        if self.command is not None:   # after every check of the inputs and of the checkpoint: provenance
            record_command(self.out, self.command)
        bar = progress_bar(total=self.total_steps * scale,
                           initial=min(self.progress_position(), self.total_steps * scale),
                           unit=unit, desc=self.name, enabled=progress and self.rank == 0)
        done, t0, clean = 0, time.perf_counter(), False
        with _StopSignals() as stop:
            try:
                while self.step < self._end and (max_steps is None or done < max_steps):
                    if self._stop_requested(stop):
                        break
                    stats = self.train_step()
                    self.step += 1
                    done += 1
                    bar.update(scale)
                    if self.step % self.log_every == 0:
                        bar.set_postfix({k: f"{v:.4g}" for k, v in stats.items()})
                        self.log.append(dict(step=self.step, **self.log_fields(), **stats))
                    if self.step % max(int(snapshot_every), 1) == 0:
                        self.save()
                clean = True
            finally:
                if clean:   # at a step boundary: the state is consistent (and every rank is at the same one)
                    self.save()
                self.record_stop()
                bar.close()
        if stop.requested is not None:
            raise RunInterrupted(stop.requested, self.step)
        seconds = time.perf_counter() - t0
        return dict(step=self.step, seconds=seconds, steps_per_second=done / max(seconds, 1e-9))

    def _stop_requested(self, stop: _StopSignals) -> bool:
        """True when a stop signal arrived; under torch.distributed, when it arrived on any rank (so that all stop
        at the same step)."""
        if self.world > 1:
            flag = torch.tensor([0.0 if stop.requested is None else float(stop.requested)],
                                device=self.device if self.device.type == "cuda" else "cpu")
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            if flag.item() > 0 and stop.requested is None:
                stop.requested = int(flag.item())
        return stop.requested is not None


def config_differences(run: dict, init: dict) -> str:
    """The fields where a start network's config ``init`` differs from the run's network config ``run``, as
    ``"k (init a, run b), ..."`` ("" when none): the message of a fine-tuning start of another architecture."""
    return ", ".join(f"{k} (init {init.get(k)!r}, run {v!r})" for k, v in run.items() if init.get(k) != v)


def _field_defaults(config) -> dict:
    """The defaults of a dataclass config's fields, JSON-normalised as :func:`config_json` writes them (fields
    without a default are left out)."""
    out = {}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return json.loads(json.dumps(out))


def config_json(config) -> str:
    """A dataclass config as JSON (tuples become lists)."""
    return json.dumps(dataclasses.asdict(config), indent=2)


class ScheduledRun(ResumableRun):
    """A :class:`ResumableRun` of ``cfg.steps`` steps whose learning rate follows :func:`warmup_cosine` (``cfg.lr``,
    ``cfg.warmup``, ``cfg.steps``) and whose deliverable is ``self.net`` written with its ``save(path)`` to
    ``out/<export_file>``: the recon, T and F^i trainers. Subclasses set :attr:`export_file` and call
    :meth:`apply_lr` on their optimizer at the start of each :meth:`train_step`."""

    export_file = "model.safetensors"

    def lr_at(self, step: int) -> float:
        """Learning rate at the 0-based ``step``."""
        return warmup_cosine(step, self.cfg.lr, self.cfg.warmup, self.cfg.steps)

    def apply_lr(self, optimizer: torch.optim.Optimizer) -> None:
        """Set every parameter group of ``optimizer`` to the learning rate of the current step."""
        for group in optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)

    def export(self) -> None:
        self.net.save(self.out / self.export_file)

    @property
    def total_steps(self) -> int:
        return self.cfg.steps

    def log_fields(self) -> dict:
        return {"lr": self.lr_at(self.step - 1)}


__all__ = ["ResumableRun", "RunInterrupted", "config_json", "config_differences", "dist_info", "allreduce_gradients",
           "init_distributed",
           "is_main_process", "global_rng_state", "set_global_rng_state", "record_command", "read_commands",
           "rebuild_commands", "warmup_cosine", "ScheduledRun", "CHECKPOINT_FILE", "LOG_FILE", "COMMANDS_FILE",
           "STOP_OPTION"]
