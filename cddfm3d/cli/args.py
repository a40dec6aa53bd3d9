"""Argument types and option groups shared by the commands of :mod:`cddfm3d.cli`.

Each type checks its value when argparse reads it, before any work starts: a wrong value raises
``argparse.ArgumentTypeError`` (argparse's usage line and one ``error:`` line, exit status 2).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path


# ------------------------------------------------------------------------------------------------ argument types
def _int_at_least(lo: int, hi: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, found {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise argparse.ArgumentTypeError(f"expected an integer {bounds}, found {value}")
        return value

    parse.__name__ = "int"
    return parse


def _float(lo: float | None = None, strict: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, found {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, found {text!r}")
        if lo is not None and (value <= lo if strict else value < lo):
            raise argparse.ArgumentTypeError(f"expected a number {'>' if strict else '>='} {lo:g}, found {value:g}")
        return value

    parse.__name__ = "float"
    return parse


def _power_of_two(text: str) -> int:
    value = _int_at_least(4)(text)
    if value & (value - 1):
        raise argparse.ArgumentTypeError(f"expected a power of two >= 4, found {value}")
    return value


def _device(text: str) -> str:
    """A torch device string that exists on this machine: cpu, cuda, cuda:N, mps."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; expected cpu, cuda or cuda:N "
                                         f"(an index of torch.cuda.device_count())") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"device {text!r} requested but CUDA is not available here "
                                             f"(torch.cuda.is_available() is False); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"device {text!r} requested but only {torch.cuda.device_count()} CUDA "
                                             f"device(s) exist")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise argparse.ArgumentTypeError(f"device {text!r} requested but MPS is not available here")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"unsupported device {text!r}; expected cpu, cuda or cuda:N")
    return text


def _existing_dir(text: str) -> str:
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such folder")
    return text


def _existing_file(text: str) -> str:
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder, not a file (give its files, e.g. {text}/*.png)")
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return text


def _out_dir(text: str) -> str:
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: exists and is not a folder")
    return text


SEED = _int_at_least(0, 2 ** 31 - 1)
POSITIVE = _int_at_least(1)


def _named_path(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, found {text!r}")
    if not Path(path).exists():
        raise argparse.ArgumentTypeError(f"{text!r}: {path} does not exist")
    return name, path


def _share(text: str) -> float:
    """A share in (0, 1]."""
    value = _float(0, strict=True)(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], found {value:g}")
    return value


def _open_fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    value = _float(0, strict=True)(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), found {value:g}")
    return value


def _attribute_weight(text: str) -> tuple[str, float]:
    """``NAME=W`` with an attribute name and a weight >= 0."""
    from ..face3d.measures import ATTRIBUTES

    name, sep, value = text.partition("=")
    if not sep or name not in ATTRIBUTES:
        raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT with NAME one of {', '.join(ATTRIBUTES)}, "
                                         f"found {text!r}")
    return name, _float(0)(value)


def _loss_weight(text: str) -> tuple[str, float]:
    """``NAME`` or ``NAME=W``: a loss of train-t (pdc, vdc, wpdc, feature, official) and its weight (default 1)."""
    from ..editing.losses import LOSS_NAMES

    name, sep, value = text.partition("=")
    if name not in LOSS_NAMES:
        raise argparse.ArgumentTypeError(f"expected NAME or NAME=WEIGHT with NAME one of {', '.join(LOSS_NAMES)}, "
                                         f"found {text!r}")
    return name, _float(0)(value) if sep else 1.0


def _term_weight(text: str) -> tuple[str, float]:
    """``TERM=W``: a loss term of train-f and its weight (finite, >= 0)."""
    from ..editing.f_training import LOSS_TERMS

    name, sep, value = text.partition("=")
    if not sep or name not in LOSS_TERMS:
        raise argparse.ArgumentTypeError(f"expected TERM=WEIGHT with TERM one of {', '.join(LOSS_TERMS)}, found "
                                         f"{text!r}")
    try:
        w = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the weight must be a number, found {value!r}") from None
    if not w >= 0 or w == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: the weight must be finite and >= 0, found {w}")
    return name, w


# ------------------------------------------------------------------------------------------------ option groups
def _data_options(p: argparse.ArgumentParser, data: str, export: str) -> None:
    """--data, --domain and --out of a training command."""
    from ..world.domains import DOMAINS

    p.add_argument("--data", type=_existing_dir, required=True, help=data)
    p.add_argument("--domain", default="human", choices=DOMAINS, help="domain to read from a mini-world "
                   "dataset (default: human)")
    p.add_argument("--out", type=_out_dir, required=True, help=f"run folder (checkpoint.pt, {export}, log.json, "
                   "commands.txt)")


def _gan_options(p: argparse.ArgumentParser, kimg: float, snapshot_kimg: float, augment: str,
                 d_warmup_steps: int) -> None:
    """The StyleGAN2 training options train-gan and finetune share, with each command's defaults."""
    p.add_argument("--resolution", type=_power_of_two, default=64, help="image size, a power of two (default: 64)")
    p.add_argument("--batch", type=POSITIVE, default=16, help="total batch size over all processes (default: 16)")
    p.add_argument("--kimg", type=_float(0, strict=True), default=kimg, help="train until this many thousand "
                   f"images were shown (default: {kimg:g})")
    p.add_argument("--snapshot-kimg", type=_float(0, strict=True), default=snapshot_kimg, help="write a checkpoint "
                   f"every this many thousand images (default: {snapshot_kimg:g})")
    p.add_argument("--gamma", type=_float(0), default=0.1, help="R1 weight (default: 0.1)")
    p.add_argument("--lr", type=_float(0, strict=True), default=0.002, help="Adam learning rate of G and D "
                   "(default: 0.002, StyleGAN2's)")
    p.add_argument("--augment", default=augment, choices=["none", "translate_flip", "ada"], help="augmentation of "
                   f"the discriminator's inputs (default: {augment}; ada: adaptive, off until D overfits)")
    p.add_argument("--ada-target", type=_float(0, strict=True), default=0.6, help="ADA's target for "
                   "E[sign(D(real))] (default: 0.6)")
    p.add_argument("--ada-kimg", type=_float(0, strict=True), default=100.0, help="ADA: thousand images for the "
                   "probability to go from 0 to 1 (default: 100)")
    p.add_argument("--init-discriminator", type=_existing_file, default=None, metavar="FILE",
                   help="start D from this discriminator file (default: a fresh D)")
    p.add_argument("--d-warmup-steps", type=_int_at_least(0), default=d_warmup_steps, metavar="N",
                   help=f"train only D for the first N steps (G and its EMA frozen; default: {d_warmup_steps})")


def _run_options(p: argparse.ArgumentParser) -> None:
    """Options every training command shares (the resumable run's)."""
    p.add_argument("--seed", type=SEED, default=0, help="random seed of the run: initialisation, batches, noise "
                   "(default: 0)")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint in --out and start afresh")
    p.add_argument("--stop-at-step", type=POSITIVE, default=None, metavar="N",
                   help="stop once the run has made N optimisation steps in all (the schedule stays that of the "
                        "full run; re-run without it to continue)")
    p.add_argument("--device", type=_device, default=None, help="cpu, cuda or cuda:N (default: cuda when "
                   "available, else cpu)")
