"""Generator / discriminator checkpoint I/O.

Reads (a) rosinality/stylegan2-pytorch ``.pt`` files (``g_ema`` [+ ``latent_avg``], or training checkpoints with
``args`` and optimizer states), (b) NVIDIA stylegan2-ada-pytorch network pickles (``G_ema``/``D``) without
executing pickled code, (c) the native format: one safetensors file whose metadata holds the JSON config.
Every external file goes through one path: infer the configuration from tensor names and shapes, build our
model, rename tensors into it, and check that every tensor is present with the expected shape.

Files seen in the wild that are handled on the way: state dicts saved from ``nn.DataParallel`` /
``DistributedDataParallel`` (every key prefixed ``module.``: stripped), a bare rosinality ``g_ema`` state dict, old
rosinality generators without ``noises.noise_*`` buffers (filled reproducibly and flagged), checkpoints without an
EMA generator (the training generator is used and flagged), and files that cannot be read get a message saying
what they are: NVIDIA TensorFlow pickles (with the conversion commands), whole pickled models, zip archives that are
not PyTorch checkpoints, Deep3DFaceRecon checkpoints.
"""
from __future__ import annotations

import argparse
import json
import logging
import pickle
import re
import zipfile
from pathlib import Path

import torch

from ..serialization import read_native_safetensors, save_safetensors
from .discriminator import Discriminator
from .generator import Generator
from .safe_pickle import PersistentRecord, TensorFlowPickleError, UnsafePickleError, safe_load_pickle

log = logging.getLogger(__name__)

NATIVE_FORMAT = "cddfm3d.stylegan2"
NATIVE_VERSION = "1"
NOISE_SEED = 0  # seed of the constant noise filled in for generators saved without noise buffers

TENSORFLOW_HELP = (
    "cddfm3d does not read TensorFlow networks; convert the file to a supported format first, in an environment "
    "with NVIDIA's code: (a) with NVlabs/stylegan2-ada-pytorch, `python legacy.py --source=<this file> "
    "--dest=<new>.pkl` writes a PyTorch network pickle that load_generator reads; or (b) with "
    "rosinality/stylegan2-pytorch, `python convert_weight.py --repo <path to NVlabs/stylegan2> <this file>` writes a "
    "<name>.pt with 'g_ema' and 'latent_avg'")


class CheckpointError(ValueError):
    """A checkpoint cannot be read: the message names the file, the field and what was expected."""


# ----------------------------------------------------------------------------------------------- sniffing
def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) < 8:
        raise CheckpointError(f"{path}: file is too short ({len(head)} bytes) to be a checkpoint")
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    header_len = int.from_bytes(head[:8], "little")
    if head[8:9] == b"{" and 0 < header_len < 100_000_000:
        return "safetensors"
    if head[0] == 0x80:  # pickle protocol opcode: NVIDIA pickle, or a legacy (pre-1.6) torch.save file
        return "pickle"
    raise CheckpointError(f"{path}: unrecognised file type (first bytes {head[:8]!r}); expected a rosinality .pt "
                          f"(torch zip), an NVIDIA .pkl network pickle or a cddfm3d .safetensors file")


def _torch_load(path: Path):
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if not any(n.endswith("data.pkl") for n in names):
            raise CheckpointError(f"{path}: is a zip archive but not a PyTorch checkpoint (no '<name>/data.pkl' "
                                  f"entry; it holds {names[:5]}{' ...' if len(names) > 5 else ''}); expected a "
                                  f"rosinality .pt written by torch.save")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if m:
            raise CheckpointError(f"{path}: the checkpoint pickles a Python object of class '{m.group(1)}' (for "
                                  f"example a whole model saved with torch.save(model)); cddfm3d reads tensors only "
                                  f"and never runs code from a file. Re-save the weights where that class is "
                                  f"importable: torch.save({{'g_ema': model.state_dict()}}, path)") from e
        raise CheckpointError(f"{path}: cannot read the torch checkpoint ({type(e).__name__}: {e}). "
                              f"Is the file complete? (truncated downloads are a common cause)") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: cannot read the torch checkpoint ({type(e).__name__}: {e}). "
                              f"Is the file complete? (truncated downloads are a common cause)") from e


def _read_external(path: Path) -> tuple[str, dict]:
    """-> (format, container dict) for rosinality / NVIDIA files."""
    kind = _sniff(path)
    if kind == "torch-zip":
        return "rosinality", _torch_load(path)
    if kind == "pickle":
        try:
            obj = safe_load_pickle(path)
        except TensorFlowPickleError as e:
            raise CheckpointError(f"{path}: this is a TensorFlow StyleGAN/StyleGAN2 network pickle from NVIDIA's TF "
                                  f"code (it holds '{e.global_name}' objects, the format of the official "
                                  f"stylegan2-ffhq-config-f.pkl); it is not supported. {TENSORFLOW_HELP}") from e
        except UnsafePickleError as e:
            raise CheckpointError(f"{path}: {e}. Supported pickles are NVIDIA stylegan2-ada-pytorch network "
                                  f"snapshots; a pickled model of another project must be re-saved as a state dict "
                                  f"(torch.save({{'g_ema': model.state_dict()}}, path))") from e
        except (EOFError, Exception) as e:  # noqa: BLE001 - any parse failure of a foreign file is reported
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"{path}: cannot unpickle ({type(e).__name__}: {e}); the file may be "
                                  f"truncated or not a network pickle") from e
        if isinstance(obj, int):  # legacy torch.save files start with a pickled magic number
            return "rosinality", _torch_load(path)
        return "nvidia", obj
    raise CheckpointError(f"{path}: expected an external checkpoint, found a {kind} file")


# ----------------------------------------------------------------------------------------------- native
def save_generator(G: Generator, path) -> None:
    """Write the native format: safetensors with the JSON config in its metadata (atomic write)."""
    _save_native(G, path, "generator")


def save_discriminator(D: Discriminator, path) -> None:
    _save_native(D, path, "discriminator")


def _save_native(module: torch.nn.Module, path, kind: str) -> None:
    meta = {"format": NATIVE_FORMAT, "version": NATIVE_VERSION, "kind": kind, "config": json.dumps(module.config)}
    save_safetensors(module, path, meta)


def _load_native(path: Path, kind: str) -> torch.nn.Module:
    tensors, meta = read_native_safetensors(path, NATIVE_FORMAT, "cddfm3d.stylegan2.save_generator", CheckpointError)
    if meta.get("kind") != kind:
        raise CheckpointError(f"{path}: holds a {meta.get('kind')!r}, expected a {kind!r}")
    try:
        config = json.loads(meta["config"])
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: metadata field 'config' is missing or not JSON") from e
    config["channels"] = {int(k): v for k, v in config["channels"].items()}
    module = Generator(**config) if kind == "generator" else Discriminator(**config)
    _assign(module, tensors, path, source_names={k: k for k in tensors})
    return module


# ----------------------------------------------------------------------------------------------- mapping
def _assign(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path, source_names: dict[str, str],
            transforms: dict | None = None) -> None:
    """Copy ``tensors`` (already renamed to our names) into ``module``; every persistent tensor must be there with
    the right number of elements, and nothing may be left over. ``source_names`` maps our name -> file name."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in tensors]
    if missing:
        names = [source_names.get(k, k) for k in missing[:5]]
        raise CheckpointError(f"{path}: missing tensor(s) {names}{' ...' if len(missing) > 5 else ''} "
                              f"({len(missing)} of {len(expected)} missing)")
    extra = [k for k in tensors if k not in expected]
    if extra:
        names = [source_names.get(k, k) for k in extra[:5]]
        raise CheckpointError(f"{path}: unexpected tensor(s) {names} for the inferred configuration")
    with torch.no_grad():
        for k, dst in expected.items():
            src = tensors[k]
            if not isinstance(src, torch.Tensor):
                raise CheckpointError(f"{path}: '{source_names.get(k, k)}' is a {type(src).__name__}, not a tensor")
            if src.numel() != dst.numel() or (src.ndim > 0 and src.squeeze().shape != dst.squeeze().shape):
                raise CheckpointError(f"{path}: tensor '{source_names.get(k, k)}' has shape {tuple(src.shape)}, "
                                      f"expected {tuple(dst.shape)}")
            if not src.is_floating_point():
                raise CheckpointError(f"{path}: tensor '{source_names.get(k, k)}' has dtype {src.dtype}, expected "
                                      f"a floating-point tensor")
            if not torch.isfinite(src).all():
                raise CheckpointError(f"{path}: tensor '{source_names.get(k, k)}' contains NaN or Inf")
        state = {k: tensors[k].reshape(expected[k].shape).to(expected[k].dtype) for k in expected}
        module.load_state_dict(state, strict=True)


def _require(sd: dict, key: str, path: Path, ndim: int | None = None) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(f"{path}: missing tensor '{key}'")
    t = sd[key]
    if not isinstance(t, torch.Tensor) or (ndim is not None and t.ndim != ndim):
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise CheckpointError(f"{path}: tensor '{key}' has shape {shape}, expected {ndim} dimensions")
    return t


def _strip_module_prefix(sd):
    """Drop the ``module.`` prefix that ``nn.DataParallel`` / ``DistributedDataParallel`` put before every key of a
    state dict saved from the wrapper (only when every key has it; a partial prefix is left for the name check)."""
    if isinstance(sd, dict) and sd and all(isinstance(k, str) and k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


# rosinality names --------------------------------------------------------------------------------------
_ROS_IGNORED = re.compile(r"(\.blur\.kernel|\.upsample\.kernel|\.kernel)$")
_ROS_MAPPING = re.compile(r"(module\.)?style\.\d+\.weight")


def _rosinality_generator_entry(obj, path: Path) -> tuple[dict, torch.Tensor | None, str]:
    """-> (generator state dict, latent_avg or None, where it came from) of a rosinality checkpoint."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a rosinality checkpoint (a dict with key 'g_ema'), found a "
                              f"{type(obj).__name__}")
    if "g_ema" in obj:
        return obj["g_ema"], obj.get("latent_avg"), "'g_ema'"
    if any(isinstance(k, str) and _ROS_MAPPING.fullmatch(k) for k in obj):  # torch.save(g_ema.state_dict())
        return obj, None, "the file's top-level state dict (a bare generator state dict)"
    if isinstance(obj.get("g"), dict):
        log.warning("%s: no 'g_ema' (the moving average of the generator used for sampling); using 'g', the "
                    "training generator, whose images are usually worse", path)
        return obj["g"], obj.get("latent_avg"), "'g' (the training generator; the file has no 'g_ema')"
    found = sorted(map(str, obj))[:8]
    hint = ""
    if "net_recon" in obj:
        hint = "; this is a Deep3DFaceRecon_pytorch checkpoint: load it with ReconNet.from_deep3d"
    elif any(str(k).removeprefix("module.").startswith(("backbone.", "final_layers.")) for k in obj):
        hint = "; this looks like a reconstruction network state dict: load it with ReconNet.from_deep3d"
    raise CheckpointError(f"{path}: expected a rosinality checkpoint with key 'g_ema' (or a bare generator state "
                          f"dict with 'style.1.weight' ...), found keys {found}{hint}")


def _rosinality_generator(sd: dict, latent_avg, path: Path) -> Generator:
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: 'g_ema' is a {type(sd).__name__}, expected a state dict")
    sd = _strip_module_prefix(sd)
    n_mlp = len([k for k in sd if re.fullmatch(r"style\.\d+\.weight", k)])
    if n_mlp == 0:
        raise CheckpointError(f"{path}: no mapping layers ('style.1.weight' ...) in 'g_ema'")
    w_dim, z_dim = _require(sd, "style.1.weight", path, 2).shape
    n_blocks = len([k for k in sd if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k)])
    resolution = 2 ** (n_blocks + 2)
    channels = {4: _require(sd, "input.input", path, 4).shape[1]}
    for i in range(n_blocks):
        channels[2 ** (i + 3)] = _require(sd, f"convs.{2 * i + 1}.conv.weight", path, 5).shape[1]
    G = Generator(resolution, z_dim=z_dim, w_dim=w_dim, mapping_layers=n_mlp, channels=channels)
    names: dict[str, str] = {}  # ours -> theirs

    def put(ours, theirs):
        names["mapping_network." + ours if ours.startswith("fc") or ours == "w_avg" else "synthesis_network." + ours] \
            = theirs

    for n in range(n_mlp):
        put(f"fc{n}.weight", f"style.{n + 1}.weight")
        put(f"fc{n}.bias", f"style.{n + 1}.bias")
    put("const", "input.input")

    noise_names: dict[int, str] = {}  # j -> our buffer name

    def styled(ours, theirs, noise_j):
        put(f"{ours}.weight", f"{theirs}.conv.weight")
        put(f"{ours}.affine.weight", f"{theirs}.conv.modulation.weight")
        put(f"{ours}.affine.bias", f"{theirs}.conv.modulation.bias")
        put(f"{ours}.noise_strength", f"{theirs}.noise.weight")
        put(f"{ours}.bias", f"{theirs}.activate.bias")
        put(f"{ours}.noise_const", f"noises.noise_{noise_j}")
        noise_names[noise_j] = f"synthesis_network.{ours}.noise_const"

    def torgb(ours, theirs):
        put(f"{ours}.weight", f"{theirs}.conv.weight")
        put(f"{ours}.affine.weight", f"{theirs}.conv.modulation.weight")
        put(f"{ours}.affine.bias", f"{theirs}.conv.modulation.bias")
        put(f"{ours}.bias", f"{theirs}.bias")

    styled("b4.conv1", "conv1", 0)
    torgb("b4.torgb", "to_rgb1")
    for i in range(n_blocks):
        k = i + 3
        styled(f"b{2 ** k}.conv0", f"convs.{2 * i}", 2 * k - 5)
        styled(f"b{2 ** k}.conv1", f"convs.{2 * i + 1}", 2 * k - 4)
        torgb(f"b{2 ** k}.torgb", f"to_rgbs.{i}")
    used = set(names.values())
    extra = [k for k in sd if k not in used and not _ROS_IGNORED.search(k)]
    if extra:
        raise CheckpointError(f"{path}: unexpected tensor(s) in 'g_ema': {extra[:5]} (not a StyleGAN2 'skip' "
                              f"generator of the inferred configuration: {resolution}px, {n_mlp} mapping layers)")
    tensors = {ours: sd[theirs] for ours, theirs in names.items() if theirs in sd}
    if latent_avg is not None:
        tensors["mapping_network.w_avg"] = latent_avg
        names["mapping_network.w_avg"] = "latent_avg"
    else:
        tensors["mapping_network.w_avg"] = torch.zeros(w_dim)  # replaced below
    fill_noise = not any(k.startswith("noises.") for k in sd)
    if fill_noise:
        # Generators saved before rosinality added the noise buffers (e.g. the official 256-px 550000.pt) have
        # none: fill N(0, 1) maps from one seeded generator, in layer order j = 0, 1, ... (a partial set is an error)
        g = torch.Generator().manual_seed(NOISE_SEED)
        shapes = {k: v.shape for k, v in G.state_dict().items()}
        for j in sorted(noise_names):
            tensors[noise_names[j]] = torch.randn(shapes[noise_names[j]], generator=g)
    _assign(G, tensors, path, names)
    G.noise_const_source = (f"filled with N(0, 1) from torch.Generator seed {NOISE_SEED} in layer order (the file "
                            f"has no 'noises.noise_*' buffers)" if fill_noise else "read from the file")
    G.w_avg_source = "read from the file ('latent_avg')"
    if latent_avg is None:
        # rosinality training checkpoints carry no average w; use a reproducible estimate (seed 0, 10k samples)
        G.mapping_network.w_avg.copy_(G.mean_w(10000, seed=0))
        G.w_avg_source = "estimated from 10000 samples (seed 0)"
    return G


def _rosinality_discriminator(sd: dict, path: Path) -> Discriminator:
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: 'd' is a {type(sd).__name__}, expected a state dict")
    sd = _strip_module_prefix(sd)
    convs = sorted({int(m.group(1)) for k in sd if (m := re.match(r"convs\.(\d+)\.", k))})
    if not convs:
        raise CheckpointError(f"{path}: 'd' has no 'convs.*' tensors")
    n_blocks = len(convs) - 1
    resolution = 2 ** (n_blocks + 2)
    channels = {resolution: _require(sd, "convs.0.0.weight", path, 4).shape[0]}
    for j in range(1, n_blocks + 1):
        res = resolution >> (j - 1)
        channels[res // 2] = _require(sd, f"convs.{j}.conv2.1.weight", path, 4).shape[0]
    D = Discriminator(resolution, channels=channels)
    names = {"fromrgb.weight": "convs.0.0.weight", "fromrgb.bias": "convs.0.1.bias",
             "conv.weight": "final_conv.0.weight", "conv.bias": "final_conv.1.bias",
             "fc.weight": "final_linear.0.weight", "fc.bias": "final_linear.0.bias",
             "out.weight": "final_linear.1.weight", "out.bias": "final_linear.1.bias"}
    for j in range(1, n_blocks + 1):
        res = resolution >> (j - 1)
        names.update({f"b{res}.conv0.weight": f"convs.{j}.conv1.0.weight",
                      f"b{res}.conv0.bias": f"convs.{j}.conv1.1.bias",
                      f"b{res}.conv1.weight": f"convs.{j}.conv2.1.weight",
                      f"b{res}.conv1.bias": f"convs.{j}.conv2.2.bias",
                      f"b{res}.skip.weight": f"convs.{j}.skip.1.weight"})
    _assign(D, {o: sd[t] for o, t in names.items() if t in sd}, path, names)
    return D


# NVIDIA names ------------------------------------------------------------------------------------------
def _is_stylegan3(rec: PersistentRecord) -> bool:
    # persistence stores the bare class name; StyleGAN3's source defines a Fourier-feature SynthesisInput
    return "class SynthesisInput" in rec.module_src or any(k.startswith("synthesis.input.") for k in rec.tensors())


def _nvidia_record(obj, key: str, path: Path) -> PersistentRecord:
    if not isinstance(obj, dict) or key not in obj:
        found = sorted(obj.keys()) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: expected a network pickle with key '{key}', found {found}")
    rec = obj[key]
    if not isinstance(rec, PersistentRecord):
        raise CheckpointError(f"{path}: '{key}' is a {type(rec).__name__}, expected a pickled NVIDIA network")
    return rec


def _nvidia_generator(obj, path: Path) -> Generator:
    source = "'G_ema'"
    if isinstance(obj, dict) and "G_ema" not in obj and isinstance(obj.get("G"), PersistentRecord):
        log.warning("%s: no 'G_ema' (the moving average of the generator used for sampling); using 'G', the "
                    "training generator, whose images are usually worse", path)
        rec, source = obj["G"], "'G' (the training generator; the file has no 'G_ema')"
    else:
        rec = _nvidia_record(obj, "G_ema", path)
    if rec.class_name.rsplit(".", 1)[-1] != "Generator" or _is_stylegan3(rec):
        kind = "a StyleGAN3 generator" if _is_stylegan3(rec) else f"a {rec.class_name}"
        raise CheckpointError(f"{path}: G_ema is {kind}; only StyleGAN2 generators are supported")
    kw = rec.init_kwargs
    syn_kw, map_kw = dict(kw.get("synthesis_kwargs") or {}), dict(kw.get("mapping_kwargs") or {})
    if kw.get("c_dim", 0):
        raise CheckpointError(f"{path}: conditional generator (c_dim={kw['c_dim']}) is not supported")
    arch = syn_kw.get("architecture", "skip")
    if arch != "skip":
        raise CheckpointError(f"{path}: synthesis architecture '{arch}' is not supported (only 'skip', the "
                              f"architecture of all official StyleGAN2 generators)")
    if syn_kw.get("num_fp16_res", 0):
        log.info("%s: num_fp16_res=%s; running every layer in float32 (NVIDIA's force_fp32 behaviour)", path,
                 syn_kw["num_fp16_res"])
    t = rec.tensors()
    nm = len([k for k in t if re.fullmatch(r"mapping\.fc\d+\.weight", k)])
    if nm == 0:
        raise CheckpointError(f"{path}: no mapping layers ('mapping.fc0.weight' ...) in G_ema")
    if any(k.startswith("mapping.embed") for k in t):
        raise CheckpointError(f"{path}: conditional generator (mapping.embed) is not supported")
    w_dim, z_dim = _require(t, "mapping.fc0.weight", path, 2).shape
    ress = sorted({int(m.group(1)) for k in t if (m := re.match(r"synthesis\.b(\d+)\.", k))})
    resolution = ress[-1]
    channels = {4: _require(t, "synthesis.b4.const", path, 3).shape[0]}
    for r in ress[1:]:
        channels[r] = _require(t, f"synthesis.b{r}.conv1.weight", path, 4).shape[0]
    G = Generator(resolution, z_dim=z_dim, w_dim=w_dim, mapping_layers=nm, channels=channels,
                  lr_multiplier=float(map_kw.get("lr_multiplier", 0.01)), conv_clamp=syn_kw.get("conv_clamp"))
    tensors, names = {}, {}
    for k, v in t.items():
        if k.endswith("resample_filter"):
            continue  # derived filters; regenerated, never copied (rosinality and NVIDIA differ by 4x)
        if k.startswith("mapping."):
            ours = "mapping_network." + k[len("mapping."):]
        elif k == "synthesis.b4.const":
            ours = "synthesis_network.const"
        elif k.startswith("synthesis."):
            ours = "synthesis_network." + k[len("synthesis."):]
        else:
            raise CheckpointError(f"{path}: unexpected tensor '{k}' in G_ema")
        tensors[ours], names[ours] = v, k
    _assign(G, tensors, path, names)
    G.weights_source = source
    G.w_avg_source = G.noise_const_source = "read from the file"
    return G


def _nvidia_mbstd(rec: PersistentRecord, epi: dict, path: Path) -> tuple[int | None, int]:
    """(group size, channels) of the minibatch-std layer: the pickled ``b4.mbstd`` layer's own attributes (what
    NVIDIA's forward uses), else ``init_kwargs['epilogue_kwargs']``, else NVIDIA's defaults (4, 1). A group size of
    None means one group of the whole batch."""
    group, channels = epi.get("mbstd_group_size", 4), epi.get("mbstd_num_channels", 1)
    b4 = (rec.state.get("_modules") or {}).get("b4")
    mbstd = (b4.state.get("_modules") or {}).get("mbstd") if isinstance(b4, PersistentRecord) else None
    if isinstance(mbstd, PersistentRecord):
        group = mbstd.state.get("group_size", group)
        channels = mbstd.state.get("num_channels", channels)
    if group is not None and (isinstance(group, bool) or not isinstance(group, int) or group < 1):
        raise CheckpointError(f"{path}: D minibatch-std group size is {group!r}, expected a positive int or None")
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise CheckpointError(f"{path}: D minibatch-std channel count is {channels!r}, expected a positive int")
    return group, channels


def _nvidia_discriminator(obj, path: Path) -> Discriminator:
    rec = _nvidia_record(obj, "D", path)
    if rec.class_name.rsplit(".", 1)[-1] != "Discriminator":
        raise CheckpointError(f"{path}: D is a {rec.class_name}, expected a StyleGAN2 discriminator")
    kw = rec.init_kwargs
    if kw.get("c_dim", 0):
        raise CheckpointError(f"{path}: conditional discriminator (c_dim={kw['c_dim']}) is not supported")
    if kw.get("architecture", "resnet") != "resnet":
        raise CheckpointError(f"{path}: discriminator architecture '{kw.get('architecture')}' is not supported "
                              f"(only 'resnet')")
    epi = dict(kw.get("epilogue_kwargs") or {})
    t = {k: v for k, v in rec.tensors().items() if not k.endswith("resample_filter")}
    ress = sorted({int(m.group(1)) for k in t if (m := re.match(r"b(\d+)\.", k))})
    resolution = ress[-1]
    channels = {resolution: _require(t, f"b{resolution}.fromrgb.weight", path, 4).shape[0]}
    for r in ress[1:]:
        channels[r // 2] = _require(t, f"b{r}.conv1.weight", path, 4).shape[0]
    group, n_mbstd = _nvidia_mbstd(rec, epi, path)
    D = Discriminator(resolution, channels=channels, mbstd_group_size=group, mbstd_num_channels=n_mbstd,
                      conv_clamp=kw.get("conv_clamp"))
    tensors, names = {}, {}
    for k, v in t.items():
        if k.startswith(f"b{resolution}.fromrgb."):
            ours = k.split(".", 1)[1]
        elif k.startswith("b4."):
            ours = k[len("b4."):]
        else:
            ours = k
        tensors[ours], names[ours] = v, k
    _assign(D, tensors, path, names)
    return D


# ----------------------------------------------------------------------------------------------- public
def _check_path(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, expected a checkpoint file")
    return path


def load_generator(path, device=None) -> Generator:
    """Load a StyleGAN2 generator from a rosinality ``.pt``, an NVIDIA ``.pkl`` or a native ``.safetensors`` file.

    The resolution, channel table, mapping depth and style dimension are inferred from the file. The model is
    returned in eval mode without gradients on ``device`` (default CPU).

    Accepted rosinality layouts: ``{'g_ema': sd, 'latent_avg': w}`` (converted weights), training checkpoints
    (``g``, ``d``, ``g_ema``, optimizers, ``args``), a bare ``g_ema`` state dict, and any of these saved from
    ``nn.DataParallel`` (``module.`` prefixes are stripped). Three string attributes on the result say where the
    parts came from, so that substitutes are visible:

    * ``G.weights_source``: ``"'g_ema'"`` / ``"'G_ema'"``; when the file has no EMA generator, the training
      generator (``g`` / ``G``) is used, a warning is logged and this says so.
    * ``G.w_avg_source``: ``"read from the file ..."`` or, without ``latent_avg``, ``"estimated from 10000 samples
      (seed 0)"`` (the mean of mapped z, :meth:`Generator.mean_w`).
    * ``G.noise_const_source``: ``"read from the file"`` or, for generators saved before rosinality added the
      ``noises.noise_*`` buffers, ``"filled with N(0, 1) from torch.Generator seed 0 ..."`` (one generator, layer
      order j = 0, 1, ..., each map ``torch.randn(res, res)``).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is not a supported StyleGAN2 generator; the message names the file and the field
            and, for known foreign formats (NVIDIA TensorFlow pickles, whole pickled models, Deep3DFaceRecon
            checkpoints, StyleGAN3), says what the file is and how to convert it.
    """
    path = _check_path(path)
    kind = _sniff(path)
    if kind == "safetensors":
        G = _load_native(path, "generator")
        G.weights_source, G.w_avg_source, G.noise_const_source = "native file", "read from the file", \
            "read from the file"
    else:
        fmt, obj = _read_external(path)
        if fmt == "rosinality":
            sd, latent_avg, source = _rosinality_generator_entry(obj, path)
            G = _rosinality_generator(sd, latent_avg, path)
            G.weights_source = source
        else:
            G = _nvidia_generator(obj, path)
    return G.eval().requires_grad_(False).to(device or "cpu")


def load_discriminator(path, device=None) -> Discriminator:
    """Load the discriminator of a rosinality training checkpoint (``d``), an NVIDIA pickle (``D``) or a native
    file."""
    path = _check_path(path)
    if _sniff(path) == "safetensors":
        D = _load_native(path, "discriminator")
    else:
        fmt, obj = _read_external(path)
        if fmt == "rosinality":
            if not isinstance(obj, dict) or "d" not in obj:
                found = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
                raise CheckpointError(f"{path}: no discriminator ('d') in this rosinality checkpoint (found "
                                      f"{found}); only training checkpoints written by train.py hold one")
            D = _rosinality_discriminator(obj["d"], path)
        else:
            D = _nvidia_discriminator(obj, path)
    return D.eval().requires_grad_(False).to(device or "cpu")
