"""Read NVIDIA stylegan2-ada-pytorch / stylegan3 network pickles without executing pickled code.

NVIDIA's snapshots pickle every network through ``torch_utils.persistence``: the object is rebuilt by
exec'ing the module source stored in the pickle. We never do that. A whitelisting unpickler maps the
persistence reconstructor to a plain record (class name + instance ``__dict__``) and allows only tensor,
numpy and container reconstructors (:data:`ALLOWED_GLOBALS`); any other global is refused with its name before it
is imported. NVIDIA's TensorFlow-era pickles (``dnnlib.tflib.network.Network``) are recognised by that first class
name and reported as such (:class:`TensorFlowPickleError`), not as a security refusal.
"""
from __future__ import annotations

import importlib
import io
import pickle
from collections import OrderedDict
from dataclasses import dataclass, field

import torch


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global that is not on the whitelist (nothing was executed)."""


@dataclass
class PersistentRecord:
    """What NVIDIA's ``_reconstruct_persistent_obj`` would have rebuilt: class name and instance state."""

    class_name: str
    state: dict = field(repr=False)
    module_src: str = field(default="", repr=False)  # kept as text, never executed

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Flat {name: tensor} of parameters and buffers, like ``named_parameters() + named_buffers()``."""
        return _module_tensors(self.state, prefix)

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setstate__(self, state):  # EasyDict pickles as a dict; tolerate an attribute state too
        if isinstance(state, dict):
            self.update(state)


def _module_tensors(state, prefix: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    if isinstance(state, PersistentRecord):
        state = state.state
    if not isinstance(state, dict):
        return out
    for key in ("_parameters", "_buffers"):
        for name, t in (state.get(key) or {}).items():
            if t is not None:
                out[prefix + name] = t.detach() if isinstance(t, torch.Tensor) else t
    for name, sub in (state.get("_modules") or {}).items():
        if sub is not None:
            sub_state = sub.state if isinstance(sub, PersistentRecord) else getattr(sub, "__dict__", sub)
            out.update(_module_tensors(sub_state, f"{prefix}{name}."))
    return out


def _reconstruct_persistent_obj(meta):
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise UnsafePickleError(f"unsupported persistent object record: {type(meta).__name__}")
    return PersistentRecord(class_name=str(meta.get("class_name")), state=meta.get("state") or {},
                            module_src=str(meta.get("module_src") or ""))


def _load_storage_from_bytes(b: bytes):
    # torch pickles storages as a nested torch.save zip; read it with the weights-only loader.
    return torch.load(io.BytesIO(b), weights_only=True, map_location="cpu")


class _Module:
    """Stand-in for a plain torch.nn.Module pickled without persistence: keeps its __dict__ only."""

    def __setstate__(self, state):
        self.__dict__.update(state)


_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
}
# dtypes pickle by name (torch.float32 -> GLOBAL torch float32)
for _dt in ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"):
    _ALLOWED[("torch", _dt)] = getattr(torch, _dt)

_NUMPY_OK = ("_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer")
_NUMPY_MODULES = ("numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                  "numpy._core.numeric")

#: Every (module, name) global the unpickler resolves; anything else is refused without being imported.
ALLOWED_GLOBALS = frozenset(_ALLOWED) | frozenset((m, n) for m in _NUMPY_MODULES for n in _NUMPY_OK)

# Modules of NVIDIA's TensorFlow code (StyleGAN, StyleGAN2, StyleGAN2-ADA TF releases): their network pickles hold
# dnnlib.tflib.network.Network objects whose weights are TensorFlow variables; recognised by name only.
_TENSORFLOW_MODULES = ("dnnlib.tflib", "tensorflow")


class TensorFlowPickleError(pickle.UnpicklingError):
    """The pickle is a TensorFlow-era NVIDIA network pickle (recognised by its first class; nothing executed)."""

    def __init__(self, module: str, name: str):
        self.global_name = f"{module}.{name}"
        super().__init__(f"the pickle holds '{self.global_name}' objects: a TensorFlow network pickle of NVIDIA's "
                         f"StyleGAN/StyleGAN2 TF code")


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS` (plus the NVIDIA persistence record).

    Raises :class:`TensorFlowPickleError` for NVIDIA TensorFlow networks and :class:`UnsafePickleError` for any other
    global; in both cases before the global is imported or anything from the pickle is called."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module in _NUMPY_MODULES and name in _NUMPY_OK:
            try:  # numpy 2 renamed numpy.core to numpy._core; old pickles name the former
                return getattr(importlib.import_module(module.replace("numpy.core", "numpy._core")), name)
            except (ImportError, AttributeError):
                return getattr(importlib.import_module(module), name)
        if module in _TENSORFLOW_MODULES or module.startswith(tuple(m + "." for m in _TENSORFLOW_MODULES)):
            raise TensorFlowPickleError(module, name)
        raise UnsafePickleError(f"refusing to load global '{module}.{name}': it is not on the whitelist of "
                                f"tensor/container types (nothing from the pickle was executed)")


def safe_load_pickle(path_or_file) -> object:
    """Unpickle with the whitelist. Raises `UnsafePickleError` naming the first refused global."""
    if hasattr(path_or_file, "read"):
        return SafeUnpickler(path_or_file).load()
    with open(path_or_file, "rb") as f:
        return SafeUnpickler(f).load()
