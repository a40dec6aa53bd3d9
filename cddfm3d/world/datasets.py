"""Rendered mini-world datasets: sharded safetensors files of images (uint8) and their coefficients.

Layout of a dataset folder::

    dataset.json              format, config (n, seed, size, domains, shard_size) and the shard list
    shard-00000.safetensors   coeffs float32 [k, 257], index int64 [k], <domain> uint8 [k, 3, size, size] ...

Shard ``j`` holds samples ``j * shard_size ...``; its coefficients are ``sample_coeffs(k, seed=s)`` with
``s = shard_seed(seed, j)``, and its images are rendered ``render_batch`` at a time, the batch starting at offset
``o`` with ``render(coeffs[o:o + render_batch], domain, size, seed=s * 7919 + o)``, so every image is a pure function
of the dataset's config. Shards are written atomically; re-running the writer on a partial folder skips the shards
already complete (same config), so an interrupted job loses at most one shard.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import Dataset
from ..progress import progress_bar

from ..images import from_uint8, to_uint8
from ..serialization import atomic_write, read_safetensors, save_safetensors
from .domains import DOMAINS, MAX_SIZE, MIN_SIZE, render
from .priors import sample_coeffs

FORMAT = "cddfm3d.world-dataset"
VERSION = "1"
META_FILE = "dataset.json"


def shard_seed(seed: int, shard: int) -> int:
    """Seed of shard ``shard`` of a dataset with seed ``seed``: ``seed * 1_000_003 + shard``.

    Distinct (seed, shard) pairs get distinct seeds while ``shard < 1_000_003``; the images of the shard's render
    batch at offset ``o`` use ``shard_seed * 7919 + o`` (see the module docstring).
    """
    return int(seed) * 1_000_003 + int(shard)


def _shard_name(j: int) -> str:
    return f"shard-{j:05d}.safetensors"


MAX_SEED = 2 ** 31  # keeps the derived render seeds inside torch.Generator's range


def _config(n, seed, size, domains, shard_size, batch) -> dict:
    return {"n": int(n), "seed": int(seed), "size": int(size), "domains": list(domains), "shard_size": int(shard_size),
            "render_batch": int(batch)}


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def write_dataset(out_dir, n: int, seed: int = 0, domains=("human",), size: int = 64, shard_size: int = 1000,
                  progress: bool = True, batch: int = 250) -> Path:
    """Render ``n`` samples into ``out_dir`` (resumable); returns the folder."""
    domains = tuple(domains)
    bad = [d for d in domains if d not in DOMAINS]
    if bad or not domains:
        raise ValueError(f"write_dataset: domains must be a non-empty subset of {DOMAINS}, found {list(domains)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"write_dataset: n must be a positive int, found {n!r}")
    # Everything is checked before the folder is touched: a bad call must not leave a dataset.json behind.
    for name, value, lo, hi in (("shard_size", shard_size, 1, None), ("batch", batch, 1, None),
                                ("seed", seed, 0, MAX_SEED - 1), ("size", size, MIN_SIZE, MAX_SIZE)):
        if not _is_int(value) or value < lo or (hi is not None and value > hi):
            raise ValueError(f"write_dataset: {name} must be an int in [{lo}, {hi if hi is not None else 'inf'}], "
                             f"found {value!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = _config(n, seed, size, domains, shard_size, batch)
    meta_path = out / META_FILE
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("config") != config:
            raise ValueError(f"{meta_path}: this folder holds a dataset with config {old.get('config')}, "
                             f"not {config}; use another folder or delete it")
    n_shards = -(-n // shard_size)
    shards = [{"file": _shard_name(j), "n": min(shard_size, n - j * shard_size)} for j in range(n_shards)]
    meta = {"format": FORMAT, "version": VERSION, "config": config, "shards": shards, "complete": False}
    atomic_write(meta_path, lambda p: Path(p).write_text(json.dumps(meta, indent=2)))
    bar = progress_bar(total=n, desc=f"rendering {out.name}", unit="img", enabled=progress)
    for j, shard in enumerate(shards):
        path = out / shard["file"]
        if path.exists() and _shard_ok(path, shard["n"], domains, size):
            bar.update(shard["n"])
            continue
        s = shard_seed(seed, j)
        coeffs = sample_coeffs(shard["n"], seed=s)
        tensors = {"coeffs": coeffs, "index": torch.arange(j * shard_size, j * shard_size + shard["n"])}
        for d in domains:
            parts = []
            for k in range(0, shard["n"], batch):
                # The background stream depends on the batch too; keep it a function of (seed, shard, offset).
                img = render(coeffs[k:k + batch], d, size, seed=s * 7919 + k)
                parts.append(to_uint8(img))
                bar.update(len(img) if d == domains[-1] else 0)
            tensors[d] = torch.cat(parts)
        save_safetensors(tensors, path, {"format": FORMAT, "shard": str(j)})
    bar.close()
    meta["complete"] = True
    atomic_write(meta_path, lambda p: Path(p).write_text(json.dumps(meta, indent=2)))
    return out


def _shard_ok(path: Path, n: int, domains, size: int) -> bool:
    try:
        t, _ = read_safetensors(path)
    except Exception:  # a damaged shard is simply rendered again
        return False
    return t["coeffs"].shape == (n, 257) and all(d in t and tuple(t[d].shape) == (n, 3, size, size) for d in domains)


def read_meta(root) -> dict:
    path = Path(root) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a mini-world dataset (no {META_FILE}); "
                                f"make one with `python -m cddfm3d make-world --out {root}`")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: field 'format': expected {FORMAT!r}, found {meta.get('format')!r}")
    if not meta.get("complete"):
        raise ValueError(f"{path}: the dataset is incomplete (interrupted?); run make-world again with the "
                         f"same arguments to finish it")
    return meta


class WorldDataset(Dataset):
    """A rendered dataset in memory. Items: image [3, S, S] in [-1, 1], or (image, coeffs [257]) with
    ``with_coeffs=True``. ``domain`` picks which of the stored domains to read."""

    def __init__(self, root, domain: str = "human", with_coeffs: bool = False, limit: int | None = None):
        self.root = Path(root)
        meta = read_meta(self.root)
        cfg = meta["config"]
        if domain not in cfg["domains"]:
            raise ValueError(f"{self.root}: domain {domain!r} not stored; this dataset has {cfg['domains']}")
        images, coeffs = [], []
        for shard in meta["shards"]:
            t, _ = read_safetensors(self.root / shard["file"])
            images.append(t[domain])
            coeffs.append(t["coeffs"])
        self.images = torch.cat(images)[:limit]
        self.coeffs = torch.cat(coeffs)[:limit]
        self.domain, self.size, self.with_coeffs = domain, cfg["size"], with_coeffs
        self.config = cfg

    def __len__(self) -> int:
        return len(self.images)

    def image_batch(self, idx) -> torch.Tensor:
        """Float images [k, 3, S, S] in [-1, 1] for a list or tensor of indices."""
        return from_uint8(self.images[idx])

    def __getitem__(self, i: int):
        img = from_uint8(self.images[i])
        return (img, self.coeffs[i]) if self.with_coeffs else img
