"""File writing and reading shared by every stage: atomic writes, safetensors files with JSON metadata, the
format/version header of the package's JSON files."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch


def _umask() -> int:
    """The process's file-creation mask: read from ``/proc/self/status`` (Linux), else set and restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it onto ``path``: an interrupted
    write never leaves a half-written file under the real name.

    The file gets the permissions of an ordinary new file, ``0o666`` less the umask (``rw-r--r--`` under the
    usual 022), whatever ``write`` created (safetensors' writer creates ``rw-------`` files), so every file a
    command writes is readable alike."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_safetensors(module_or_tensors, path, metadata: dict[str, str]) -> Path:
    """Write a state dict (or a tensor dict) as safetensors with string ``metadata``, atomically."""
    from safetensors.torch import save_file

    sd = module_or_tensors.state_dict() if isinstance(module_or_tensors, torch.nn.Module) else module_or_tensors
    tensors = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_safetensors(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; safetensors' own errors propagate for the caller to word."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})



def copy_as_float16(src, dest) -> Path:
    """Copy the safetensors file ``src`` to ``dest`` with every floating-point tensor rounded to float16 (integer
    tensors, such as batch-norm counters, and the metadata unchanged; the metadata gains ``storage_dtype:
    float16``), atomically. The package's loaders copy tensors into float32 modules, so such a file loads as the
    original network with its weights rounded to float16 (relative error <= 2**-11 for values in float16's normal
    range, 6e-8 absolute below it). It halves the size of shipped networks whose outputs tolerate that rounding:
    measure them after the copy. Raises ``ValueError`` for a floating tensor outside float16's range (65504)."""
    tensors, meta = read_safetensors(src)
    out = {}
    for k, v in tensors.items():
        if v.is_floating_point():
            peak = float(v.abs().max()) if v.numel() else 0.0
            if peak > torch.finfo(torch.float16).max:
                raise ValueError(f"{src}: tensor {k!r} holds {peak:g}, beyond float16's range")
            v = v.to(torch.float16)
        out[k] = v
    return save_safetensors(out, dest, {**meta, "storage_dtype": "float16"})


def check_json_header(doc, where: str, fmt: str, version: int, error: type[Exception] = ValueError) -> dict:
    """``doc`` (a parsed JSON file of the package) itself when it is a JSON object whose fields ``format`` and
    ``version`` equal ``fmt`` and ``version``; else ``error(message)`` naming ``where`` (the file), the field, what
    it holds and what was expected. Other fields are the caller's to check."""
    if not isinstance(doc, dict):
        raise error(f"{where}: expected a JSON object, found {type(doc).__name__}")
    for field, expected in (("format", fmt), ("version", version)):
        if doc.get(field) != expected:
            raise error(f"{where}: field '{field}' is {doc.get(field)!r}, expected {expected!r}")
    return doc


def read_native_safetensors(path, fmt: str, written_by: str, error: type[Exception], *, version: str | None = None,
                            unreadable_hint: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a package-native safetensors file: its metadata field ``format`` must equal ``fmt``
    and, when ``version`` is given, its field ``version`` must equal ``version``.

    Raises ``error(message)`` naming ``path``: for a file safetensors cannot read (with safetensors' reason, then
    ``unreadable_hint``), and for another format or version (found vs expected; ``written_by`` names the function
    that writes ``fmt`` files). Other metadata fields are the caller's to check."""
    try:
        tensors, meta = read_safetensors(path)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise error(f"{path}: cannot read safetensors file ({e}){unreadable_hint}") from e
    if meta.get("format") != fmt:
        raise error(f"{path}: safetensors metadata field 'format' is {meta.get('format')!r}, expected {fmt!r} "
                    f"(a file written by {written_by})")
    if version is not None and meta.get("version") != version:
        raise error(f"{path}: safetensors metadata field 'version' is {meta.get('version')!r}, expected {version!r}")
    return tensors, meta


def state_dict_problems(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor],
                        noun: str = "tensor") -> list[str]:
    """What keeps ``module.load_state_dict(state_dict, strict=True)`` from loading, as message parts: the missing
    entries, the unexpected entries and the shape mismatches (``"name: expected (..), found (..)"``), each part
    giving its count and at most five names. ``noun`` names an entry in the messages (``"tensor"``, ``"key"``).
    Returns an empty list when names and shapes all match; the caller raises its own error with the parts."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: expected {tuple(own[k].shape)}, found {tuple(state_dict[k].shape)}"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing {noun}(s) {missing[:5]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected {noun}(s) {unexpected[:5]}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es) {shapes[:5]}")
    return parts


def state_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's state dict: for each entry in key order, the key, dtype, shape and the raw bytes of the
    CPU tensor. Equal weights give equal hashes whatever file (or none) they came from."""
    h = hashlib.sha256()
    for key, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
