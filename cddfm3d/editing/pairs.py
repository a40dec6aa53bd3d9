"""Training pairs (s, image, P) for T and the F^i (DESIGN.md step 2; issue 9 §1): ``python -m cddfm3d gen-pairs``.

Per sample ``i`` of a run with seed ``seed``:

* latents: ``sample_latents(G, 1, torch.Generator().manual_seed(sample_seed(seed, i, "latent")), mixing)``
  (:mod:`cddfm3d.editing.latents`: the official 5-way contiguous W+ mixing, no truncation, or plain W);
* styles ``s = G.flatten_styles(G.w_to_styles(ws))`` (tRGB included, [G.style_dim]);
* noise: the per-layer noise maps drawn from ``noise_seed = sample_seed(seed, i, "noise")`` on the CPU
  (:func:`noise_for`), so that the image is reproduced exactly by
  ``G.synthesis_from_styles(G.unflatten_styles(styles[i:i+1]), noise=noise_for(G, noise_seed[i:i+1]))``
  (the official code draws the noise at random and loses it);
* image: :func:`cddfm3d.images.to_uint8` (``((x + 1) * 127.5).round().clamp(0, 255)``), the mini world datasets'
  conversion;
* labels: :func:`cddfm3d.editing.labels.label_images` of the **uint8** image (coefficients [257], 68 landmarks
  in the image's pixels), so that labels can be recomputed from the stored images.

**Each sample is computed on its own (a batch of one).** PyTorch's CPU kernels give results that depend on the
batch they run in at the float-rounding level (measured on the mini generator: batches of 1, 7, 16 and 32 vs 64
change styles by up to 1.5e-5, a few uint8 pixels per 64 images, and coefficients by up to 7e-4), so batched
generation could not be independent of the batch size, nor could one stored sample be re-synthesised exactly on
its own. Computed one by one, every stored value is a pure function of (networks, seed, index): independent of
``batch``, of where an interrupted run resumed and of the number of torchrun ranks. It is still specific to the
device type, the number of CPU threads and the library versions, which each shard records (``environment``).

Files (``out_dir``)::

    pairs.json                  format, version, config, networks (sha256), shards, commands, complete
    pairs-00000.safetensors     styles float32 [k, D], ws float32 [k, num_ws, w_dim], noise_seed int64 [k],
                                images uint8 [k, 3, H, W], coeffs float32 [k, 257], landmarks float32 [k, 68, 2],
                                index int64 [k]

Shard ``j`` holds samples ``j * shard_size ...``; shards are written atomically (temp file + rename). A run on a
folder that holds pairs of the same config and networks continues at the missing shards; another config is refused
naming the field. Under torchrun, rank r writes shards r, r + world, ... and rank 0 writes ``pairs.json``.
"""
from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..assets.integrity import sha256_file
from ..images import to_uint8
from ..serialization import atomic_write, check_json_header, save_safetensors, state_sha256
from ..stylegan2.stylespace import layer_table
from ..training import dist_info
from .labels import ALIGNS, SELF_ALIGN_ROUNDS, label_images
from .latents import MIXINGS, sample_latents

FORMAT = "cddfm3d.pairs"
VERSION = 1
META_FILE = "pairs.json"
SHARD_META_KEY = "cddfm3d.pairs"  # a shard's one metadata entry: JSON of format, shard, start, environment
FIELDS = ("styles", "ws", "noise_seed", "images", "coeffs", "landmarks", "index")
SEED_MASK = 2 ** 63 - 1


def shard_name(j: int) -> str:
    return f"pairs-{j:05d}.safetensors"


# -------------------------------------------------------------------------------------------------- seeds & noise
def sample_seed(seed: int, index: int, stream: str) -> int:
    """The seed of sample ``index``'s random stream ``stream`` ("latent" or "noise") in a run with ``seed``: the
    first 8 bytes (little endian) of sha256("cddfm3d.pairs/<stream>/<seed>/<index>"), masked to 63 bits (so it
    fits int64). Distinct (seed, index, stream) give unrelated streams."""
    digest = hashlib.sha256(f"{FORMAT}/{stream}/{int(seed)}/{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & SEED_MASK


def noise_for(G, noise_seeds, device=None) -> list[torch.Tensor]:
    """The per-layer noise maps of samples with the given noise seeds.

    ``noise_seeds``: [B] ints (tensor or sequence). Each sample draws, from a CPU ``torch.Generator`` seeded with its
    seed, one ``randn(1, 1, r, r)`` per conv layer in G's noise order (``G.style_layers`` with a ``noise_index``);
    the maps are stacked over the samples. Returns ``G.num_noise`` tensors [B, 1, r, r] float32 on ``device``
    (default: G's device), the ``noise`` argument of ``G.synthesis_from_styles``. CPU draws make the noise the same
    on every device."""
    seeds = [int(s) for s in (noise_seeds.tolist() if isinstance(noise_seeds, torch.Tensor) else noise_seeds)]
    if device is None:
        device = G.w_avg.device
    res = [m.resolution for m in sorted((m for m in G.style_layers if m.noise_index is not None),
                                         key=lambda m: m.noise_index)]
    per_sample = []
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        per_sample.append([torch.randn(1, 1, r, r, generator=g) for r in res])
    return [torch.cat([maps[j] for maps in per_sample]).to(device) for j in range(len(res))]


@torch.no_grad()
def resynthesize(G, styles: torch.Tensor, noise_seeds, device=None) -> torch.Tensor:
    """uint8 images [B, 3, H, W] of stored ``styles`` [B, D] and ``noise_seeds`` [B], one sample at a time as
    :func:`generate_pairs` computes them (so they equal the stored images on the same device and threads)."""
    device = G.w_avg.device if device is None else torch.device(device)
    out = []
    for i in range(len(styles)):
        st = G.unflatten_styles(styles[i:i + 1].to(device))
        out.append(to_uint8(G.synthesis_from_styles(st, noise=noise_for(G, noise_seeds[i:i + 1], device))).cpu())
    return torch.cat(out)


# -------------------------------------------------------------------------------------------------- provenance
def network_record(module: torch.nn.Module, source: str | None = None, sha256: str | None = None) -> dict:
    """``{"sha256", "state_sha256", "source"}`` of a network: ``sha256`` is the file's (or the asset manifest's) when
    given, else the state-dict hash; ``state_sha256`` (always the state-dict hash) decides whether a folder may be
    resumed with these weights."""
    state = state_sha256(module)
    return {"sha256": sha256 or state, "state_sha256": state, "source": source or "in-memory module"}


def file_record(module: torch.nn.Module, path) -> dict:
    """:func:`network_record` of a module loaded from ``path`` (sha256 of the file)."""
    return network_record(module, str(path), sha256_file(Path(path)))


def _environment(device: torch.device) -> dict:
    return {"torch": torch.__version__, "device": device.type, "threads": torch.get_num_threads(),
            "machine": platform.machine()}


# -------------------------------------------------------------------------------------------------- generation
def _one_sample(G, recon, model, seed: int, index: int, mixing: str, align: str, rounds: int, device) -> dict:
    """Every stored field of sample ``index`` (a batch of one; see the module docstring)."""
    ws = sample_latents(G, 1, torch.Generator().manual_seed(sample_seed(seed, index, "latent")), mixing, device)
    styles = G.flatten_styles(G.w_to_styles(ws))
    noise_seed = sample_seed(seed, index, "noise")
    image = to_uint8(G.synthesis_from_styles(G.unflatten_styles(styles), noise=noise_for(G, [noise_seed], device)))
    coeffs, landmarks = label_images(recon, image, model, align=align, rounds=rounds)
    return {"styles": styles.float(), "ws": ws.float(), "noise_seed": torch.tensor([noise_seed]), "images": image,
            "coeffs": coeffs.float(), "landmarks": landmarks.float(), "index": torch.tensor([index])}


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def default_align(G, recon) -> str:
    """``"none"`` when the generator's images have the network's input size (mini world), else ``"self"``."""
    return "none" if G.resolution == recon.image_size else "self"


def pairs_config(G, recon, n: int, seed: int, mixing: str, shard_size: int, align: str, rounds: int) -> dict:
    """The ``config`` of ``pairs.json``: what decides the content of the shards besides the networks' weights."""
    return {"n": n, "seed": seed, "mixing": mixing, "shard_size": shard_size, "align": align,
            "rounds": rounds if align == "self" else 0, "resolution": G.resolution, "num_ws": G.num_ws,
            "w_dim": G.w_dim, "style_dim": G.style_dim, "recon_image_size": recon.image_size,
            "recon_input_range": recon.input_range, "layers": layer_table(G)}


@torch.no_grad()
def generate_pairs(G, recon, out_dir, n: int, seed: int = 0, mixing: str = "official5", batch: int = 64,
                   device=None, shard_size: int = 5000, model=None, align: str | None = None,
                   rounds: int = SELF_ALIGN_ROUNDS, progress: bool = True, networks: dict | None = None,
                   command: list[str] | None = None, max_shards: int | None = None) -> Path:
    """Generate ``n`` training pairs into ``out_dir`` (resumable; see the module docstring). Returns the folder.

    Args:
        G: a :class:`cddfm3d.stylegan2.Generator`; recon: a :class:`cddfm3d.face3d.ReconNet` (both moved to
            ``device`` and put in eval mode).
        n, seed: number of samples (>= 1) and run seed (0 .. 2**63 - 1).
        mixing: ``"official5"`` (default) or ``"w"`` (:func:`~cddfm3d.editing.latents.sample_latents`).
        batch: samples gathered per step (progress granularity). Results do not depend on it: every sample is
            computed alone.
        device: where the networks run (default: G's device).
        shard_size: samples per shard file; an interrupted run loses at most the shard in progress.
        model: the morphable model of ``recon``'s coefficients, moved to ``device`` (default: :func:`default_model`).
        align: ``"none"``, ``"self"`` or None (:func:`default_align`); rounds: self-alignment re-alignments.
        networks: provenance of the weights, ``{"generator": record, "recon": record}``
            (:func:`network_record` / :func:`file_record`; default: state-dict hashes, source "in-memory module").
        command: command-line arguments; recorded with :func:`cddfm3d.training.record_command` once the folder is
            complete, and the rebuilt commands are stored in ``pairs.json``.
        max_shards: write at most this many missing shards, then return (the folder stays incomplete).

    Raises ValueError for bad arguments (before anything is written) and for a folder holding pairs of another
    config or other networks (naming the field, the folder's value and the requested one).
    """
    for name, value, lo in (("n", n, 1), ("batch", batch, 1), ("shard_size", shard_size, 1), ("seed", seed, 0),
                            ("rounds", rounds, 0)):
        if not _is_int(value) or value < lo or value > SEED_MASK:
            raise ValueError(f"generate_pairs: {name} must be an int in [{lo}, 2**63 - 1], found {value!r}")
    if mixing not in MIXINGS:
        raise ValueError(f"generate_pairs: mixing must be one of {MIXINGS}, found {mixing!r}")
    align = default_align(G, recon) if align is None else align
    if align not in ALIGNS:
        raise ValueError(f"generate_pairs: align must be one of {ALIGNS} (or None), found {align!r}")
    if align == "none" and G.resolution != recon.image_size:
        raise ValueError(f"generate_pairs: align='none' needs generated images of the network's size "
                         f"{recon.image_size}, the generator makes {G.resolution} px; use align='self'")
    device = torch.device(device) if device is not None else G.w_avg.device
    model = default_model(recon, device) if model is None else model.to(device)
    G, recon = G.to(device).eval(), recon.to(device).eval()
    rank, world = dist_info()

    out = Path(out_dir)
    config = pairs_config(G, recon, n, seed, mixing, shard_size, align, rounds)
    nets = dict(networks or {})
    nets.setdefault("generator", network_record(G))
    nets.setdefault("recon", network_record(recon))
    nets["model"] = {"name": getattr(model, "name", type(model).__name__), "state_sha256": state_sha256(model)}
    n_shards = -(-n // shard_size)
    meta = {"format": FORMAT, "version": VERSION, "config": config, "networks": nets,
            "shards": [{"file": shard_name(j), "start": j * shard_size, "n": min(shard_size, n - j * shard_size)}
                       for j in range(n_shards)], "complete": False}
    old = _read_existing(out)
    if old is not None:
        check_compatible(out / META_FILE, old, meta)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _write_meta(out, meta)

    from ..progress import progress_bar

    mine = [j for j in range(n_shards) if j % world == rank]
    todo = [j for j in mine if not _shard_ok(out / shard_name(j), meta["shards"][j]["n"], config)]
    if max_shards is not None:
        todo = todo[:max_shards]
    bar = progress_bar(total=sum(meta["shards"][j]["n"] for j in mine), desc=f"gen-pairs {out.name}", unit="pair",
                       enabled=progress and rank == 0)
    bar.update(sum(meta["shards"][j]["n"] for j in mine if j not in todo))
    env = _environment(device)
    for j in todo:
        start, k = meta["shards"][j]["start"], meta["shards"][j]["n"]
        parts: list[dict] = []
        for b0 in range(start, start + k, batch):
            parts += [_one_sample(G, recon, model, seed, i, mixing, align, rounds, device)
                      for i in range(b0, min(b0 + batch, start + k))]
            bar.update(min(batch, start + k - b0))
        tensors = {f: torch.cat([p[f] for p in parts]).cpu() for f in FIELDS}
        # one metadata key: safetensors writes several in a random order, and equal shards must be equal files
        info = {"format": FORMAT, "version": VERSION, "shard": j, "start": start, "environment": env}
        save_safetensors(tensors, out / shard_name(j), {SHARD_META_KEY: json.dumps(info, sort_keys=True)})
    bar.close()
    if world > 1:
        torch.distributed.barrier()
    if rank == 0 and all((out / s["file"]).is_file() for s in meta["shards"]):
        for s in meta["shards"]:   # hashed afresh: a shard rewritten by this run replaces an older one
            _, smeta = read_safetensors_header(out / s["file"])
            s["sha256"] = sha256_file(out / s["file"])
            s["environment"] = json.loads(smeta.get(SHARD_META_KEY, "{}")).get("environment", {})
        meta["complete"] = True
        if command is not None:
            from ..training import rebuild_commands, record_command

            record_command(out, command)
            meta["commands"] = rebuild_commands(out)
        _write_meta(out, meta)
    return out


def default_model(recon, device=None):
    """The morphable model of ``recon``'s coefficients: the shared MiniFace (:func:`cddfm3d.world.domains.mini_model`)
    for the small backbone, the configured ``real/bfm`` asset for Deep3D's ResNet-50."""
    if recon.config["backbone"] == "small":
        from ..world.domains import mini_model

        return mini_model(device)
    from .. import assets

    return assets.load("real/bfm", device)


def _write_meta(out: Path, meta: dict) -> None:
    text = json.dumps(meta, indent=2)
    atomic_write(out / META_FILE, lambda p: Path(p).write_text(text))


def _read_existing(out: Path) -> dict | None:
    path = out / META_FILE
    if not path.is_file():
        if out.is_dir() and any(out.glob("pairs-*.safetensors")):
            raise ValueError(f"{out}: holds pair shards but no {META_FILE}; use another folder or delete the shards")
        return None
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); use another folder or delete it") from e
    _check_header(path, meta)
    return meta


def _check_header(path: Path, meta) -> None:
    check_json_header(meta, str(path), FORMAT, VERSION)
    for field, kind in (("config", dict), ("networks", dict), ("shards", list)):
        if not isinstance(meta.get(field), kind):
            raise ValueError(f"{path}: field '{field}': expected a JSON {'object' if kind is dict else 'array'}, "
                             f"found {meta.get(field)!r}")


def check_compatible(path: Path, old: dict, new: dict) -> None:
    """Raise ValueError naming the first config field (or network weights) where the folder's ``pairs.json`` and the
    requested run differ."""
    for key in sorted(set(old["config"]) | set(new["config"])):
        a, b = old["config"].get(key), new["config"].get(key)
        if a != b:
            raise ValueError(f"{path}: the folder holds pairs of another config: field 'config.{key}' is {a!r} in the "
                             f"folder, {b!r} requested; use another --out folder (or the folder's arguments to "
                             f"resume)")
    for net in ("generator", "recon", "model"):
        a = old["networks"].get(net, {}).get("state_sha256")
        b = new["networks"][net]["state_sha256"]
        if a != b:
            raise ValueError(f"{path}: the folder's pairs were made with other {net} weights: field "
                             f"'networks.{net}.state_sha256' is {a!r} in the folder, {b!r} requested "
                             f"(source {new['networks'][net].get('name') or new['networks'][net].get('source')})")


def expected_shapes(config: dict, k: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """(shape, dtype) of every field of a shard of ``k`` samples under ``config``."""
    r = config["resolution"]
    return {"styles": ((k, config["style_dim"]), torch.float32),
            "ws": ((k, config["num_ws"], config["w_dim"]), torch.float32),
            "noise_seed": ((k,), torch.int64), "images": ((k, 3, r, r), torch.uint8),
            "coeffs": ((k, 257), torch.float32), "landmarks": ((k, 68, 2), torch.float32),
            "index": ((k,), torch.int64)}


def read_safetensors_header(path: Path) -> tuple[dict[str, tuple[tuple[int, ...], str]], dict]:
    """({field: (shape, dtype name)}, metadata) of a safetensors file without reading its tensors; safetensors'
    errors propagate."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        fields = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
        return fields, dict(f.metadata() or {})


_DTYPE_NAMES = {torch.float32: "F32", torch.int64: "I64", torch.uint8: "U8"}


def shard_problem(path: Path, k: int, config: dict, fields=FIELDS) -> str | None:
    """Why shard ``path`` is not a complete shard of ``k`` samples with ``fields`` under ``config``, or None."""
    if not path.is_file():
        return "missing"
    try:
        header, _ = read_safetensors_header(path)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for damaged files
        return f"not a readable safetensors file ({type(e).__name__}: {e})"
    want = expected_shapes(config, k)
    for f in fields:
        if f not in header:
            return f"field {f!r} is missing (found {sorted(header)})"
        shape, dtype = want[f]
        if header[f] != (shape, _DTYPE_NAMES[dtype]):
            return (f"field {f!r}: expected shape {list(shape)} {_DTYPE_NAMES[dtype]}, found {list(header[f][0])} "
                    f"{header[f][1]}")
    return None


def _shard_ok(path: Path, k: int, config: dict) -> bool:
    return shard_problem(path, k, config) is None


# -------------------------------------------------------------------------------------------------- reading
def read_meta(root) -> dict:
    """The validated ``pairs.json`` of a complete pairs folder (FileNotFoundError / ValueError naming the file and
    the field otherwise)."""
    path = Path(root) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a pairs folder (no {META_FILE}); make one with "
                                f"`python -m cddfm3d gen-pairs --out {root} --n N`")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    _check_header(path, meta)
    missing = [k for k in ("n", "style_dim", "num_ws", "w_dim", "resolution", "shard_size") if k not in meta["config"]]
    if missing:
        raise ValueError(f"{path}: field 'config' lacks {missing}")
    if not meta.get("complete"):
        raise ValueError(f"{path}: the pairs are incomplete (field 'complete' is {meta.get('complete')!r}); run the "
                         f"same gen-pairs command again to finish them")
    total = sum(s.get("n", 0) for s in meta["shards"])
    if total != meta["config"]["n"]:
        raise ValueError(f"{path}: field 'shards' holds {total} samples, config.n is {meta['config']['n']}")
    return meta


class PairDataset(Dataset):
    """The pairs of a ``gen-pairs`` folder, with the requested ``fields`` held in memory.

    ``fields``: any of ``styles`` [D] float32, ``ws`` [num_ws, w_dim] float32, ``noise_seed`` [] int64,
    ``images`` [3, H, W] uint8, ``coeffs`` [257] float32, ``landmarks`` [68, 2] float32, ``index`` [] int64.
    ``dataset[i]`` is ``{field: tensor}`` of sample i; :meth:`load_fields` gives whole tensors.
    ``verify``: check each shard's sha256 against ``pairs.json`` (reads every shard file once).

    Raises FileNotFoundError (no ``pairs.json``, a missing shard) and ValueError naming the file and the field
    (malformed or incomplete ``pairs.json``, an unknown field, a shard whose fields have other shapes or dtypes, a
    damaged shard or one whose sha256 differs)."""

    def __init__(self, root, fields=("styles", "coeffs"), verify: bool = True):
        self.root = Path(root)
        self.meta = read_meta(self.root)
        self.config = self.meta["config"]
        fields = tuple(fields)
        bad = [f for f in fields if f not in FIELDS]
        if bad or not fields:
            raise ValueError(f"PairDataset: fields must be a non-empty subset of {FIELDS}, found {list(fields)}")
        self.fields = fields
        for s in self.meta["shards"]:
            path = self.root / s["file"]
            if not path.is_file():
                raise FileNotFoundError(f"{path}: shard listed in {self.root / META_FILE} is missing")
            problem = shard_problem(path, s["n"], self.config, fields)
            if problem is not None:
                raise ValueError(f"{path}: {problem}")
            if verify and s.get("sha256") and sha256_file(path) != s["sha256"]:
                raise ValueError(f"{path}: sha256 differs from {META_FILE} (field 'shards[].sha256': expected "
                                 f"{s['sha256']}, found {sha256_file(path)}); the shard was changed or damaged, "
                                 f"delete it and re-run the gen-pairs command")
        self._data = self.load_fields(fields)

    @property
    def generator_sha256(self) -> str:
        """sha256 of the generator's weights file (or asset manifest entry; state-dict hash for in-memory ones)."""
        return self.meta["networks"]["generator"]["sha256"]

    @property
    def recon_sha256(self) -> str:
        return self.meta["networks"]["recon"]["sha256"]

    def load_fields(self, names) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` of every sample, concatenated over the shards in order (``[n, ...]``)."""
        names = tuple(names)
        bad = [f for f in names if f not in FIELDS]
        if bad:
            raise ValueError(f"PairDataset.load_fields: unknown field(s) {bad}; available: {list(FIELDS)}")
        if hasattr(self, "_data") and all(f in self._data for f in names):
            return {f: self._data[f] for f in names}
        from safetensors import safe_open

        parts: dict[str, list[torch.Tensor]] = {f: [] for f in names}
        for s in self.meta["shards"]:
            path = self.root / s["file"]
            try:
                with safe_open(str(path), framework="pt") as fh:
                    keys = set(fh.keys())
                    for f in names:
                        if f not in keys:
                            raise ValueError(f"{path}: field {f!r} is missing (found {sorted(keys)})")
                        parts[f].append(fh.get_tensor(f))
            except ValueError:
                raise
            except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for damaged files
                raise ValueError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from e
        return {f: torch.cat(v) for f, v in parts.items()}

    def __len__(self) -> int:
        return int(self.config["n"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"PairDataset: index {i} out of range for {len(self)} pairs")
        return {f: t[i] for f, t in self._data.items()}


__all__ = ["FORMAT", "VERSION", "META_FILE", "FIELDS", "PairDataset", "generate_pairs", "noise_for", "resynthesize",
           "sample_seed", "to_uint8", "network_record", "file_record", "read_meta",
           "default_align", "default_model", "pairs_config"]
