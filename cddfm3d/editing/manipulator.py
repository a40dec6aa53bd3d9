"""The latent manipulation network: a StyleSpace offset from a change of 3DMM coefficients (DESIGN.md step 5).

:class:`StyleManipulator` maps (styles s, coefficient change dP) to an offset ds on a chosen subset of style layers,
s_g = s + ds. It is the paper's per-attribute network E^i / D^i (``cddfm3d_method.md`` section 5) written for any
layer subset: the StyleRig-style mapping over the full S of the layer-selection procedure
(:mod:`cddfm3d.stylespace.rig`, ``edit_layers`` = every layer) and the editing networks F^i over a reduced
StyleSpace S^i (``edit_layers`` = the attribute's layer set).

For every edited layer k (C_k channels)::

    e_k  = E_k((s_k - mean_k) / std_k)                              Linear(C_k -> code_dim)
    h_k  = act(D1_k([e_k ; dP / p_scale]))                          Linear(code_dim + p_dim -> hidden_k)
    ds_k = std_k * D2_k(h_k)                                        Linear(hidden_k -> C_k), zero-initialised

Differences from the official code, each a weak point it lists: head k reads layer k's own encoding and writes
layer k (the official heads read one layer and write another); inputs are standardised per channel and dP is in
units of ``p_scale`` (the official code normalises neither); the output is in units of each channel's std;
``activation`` adds a non-linearity between the two decoder linears (``None`` gives the official purely linear
network); the last linear starts at zero, so an untrained network does not edit (ds = 0) and layers that no loss
reaches stay unedited. hidden_k defaults to max(32, C_k // 2) (256 for the 512-channel layers, as the official
widths).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..assets import register_kind
from ..face3d.measures import ATTRIBUTE_GROUPS, ATTRIBUTES
from ..face3d.morphable import SLICES
from ..serialization import read_native_safetensors, save_safetensors, state_dict_problems

ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "lrelu": lambda: nn.LeakyReLU(0.2)}


class StyleManipulator(nn.Module):
    """ds = D(E(s), dP) on ``edit_layers`` (module docstring).

    Args:
        layer_channels: channels of every style layer of the generator, in order (``[m.channels for m in
            G.style_layers]``); the flat style vector has ``sum(layer_channels)`` entries.
        edit_layers: indices of the layers the network writes (distinct, in range); every other layer's offset is 0.
        p_dim: width of dP (80 shape, 64 expression, 80 albedo, 3 pose, 27 light).
        style_mean, style_std: per-channel mean and std of the flat styles [D] (default 0 and 1); std must be > 0.
        p_scale: per-entry scale of dP [p_dim] (default 1), > 0.
        code_dim: width of each layer's encoding (32 as the official code).
        hidden: hidden width of every decoder head, or one per edited layer (default max(32, C_k // 2)).
        activation: "elu" (default), "relu", "lrelu" or None (the official linear decoder).

    Shapes: ``forward(s [B, D], dp [B, p_dim]) -> ds [B, D]``; :meth:`edit` returns s + ds.

    Raises:
        ValueError: empty, repeated or out-of-range ``edit_layers``; statistics of the wrong size or a std / scale
            that is not > 0; unknown activation.
    """

    def __init__(self, layer_channels: Sequence[int], edit_layers: Sequence[int], p_dim: int,
                 style_mean: torch.Tensor | None = None, style_std: torch.Tensor | None = None,
                 p_scale: torch.Tensor | None = None, code_dim: int = 32, hidden: int | Sequence[int] | None = None,
                 activation: str | None = "elu"):
        super().__init__()
        channels = [int(c) for c in layer_channels]
        edit = [int(k) for k in edit_layers]
        if not edit or len(set(edit)) != len(edit) or any(not 0 <= k < len(channels) for k in edit):
            raise ValueError(f"StyleManipulator: edit_layers must be distinct indices in [0, {len(channels)}), "
                             f"found {list(edit_layers)}")
        if activation is not None and activation not in ACTIVATIONS:
            raise ValueError(f"StyleManipulator: activation must be one of {sorted(ACTIVATIONS)} or None, "
                             f"found {activation!r}")
        if isinstance(p_dim, bool) or not isinstance(p_dim, int) or p_dim < 1:
            raise ValueError(f"StyleManipulator: p_dim must be an int >= 1, found {p_dim!r}")
        D = sum(channels)
        mean = torch.zeros(D) if style_mean is None else torch.as_tensor(style_mean, dtype=torch.float32).flatten()
        std = torch.ones(D) if style_std is None else torch.as_tensor(style_std, dtype=torch.float32).flatten()
        scale = torch.ones(p_dim) if p_scale is None else torch.as_tensor(p_scale, dtype=torch.float32).flatten()
        for name, t, size in (("style_mean", mean, D), ("style_std", std, D), ("p_scale", scale, p_dim)):
            if t.numel() != size:
                raise ValueError(f"StyleManipulator: {name} must have {size} entries, found {t.numel()}")
        if not bool((std > 0).all()) or not bool((scale > 0).all()):
            raise ValueError("StyleManipulator: style_std and p_scale must be > 0 everywhere")
        if hidden is None:
            widths = [max(32, channels[k] // 2) for k in edit]
        elif isinstance(hidden, int):
            widths = [hidden] * len(edit)
        else:
            widths = [int(h) for h in hidden]
            if len(widths) != len(edit):
                raise ValueError(f"StyleManipulator: hidden has {len(widths)} widths for {len(edit)} edited layers")
        self.layer_channels, self.edit_layers, self.p_dim = channels, edit, p_dim
        self.code_dim, self.activation_name, self.hidden_widths = code_dim, activation, widths
        offsets = [0]
        for c in channels:
            offsets.append(offsets[-1] + c)
        self.offsets = offsets
        self.register_buffer("style_mean", mean)
        self.register_buffer("style_std", std)
        self.register_buffer("p_scale", scale)
        self.encoders = nn.ModuleList(nn.Linear(channels[k], code_dim) for k in edit)
        self.hidden = nn.ModuleList(nn.Linear(code_dim + p_dim, h) for h in widths)
        self.out = nn.ModuleList(nn.Linear(h, channels[k]) for h, k in zip(widths, edit, strict=True))
        self.act = ACTIVATIONS[activation]() if activation is not None else nn.Identity()
        for lin in self.out:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    @property
    def style_dim(self) -> int:
        return self.offsets[-1]

    def edited_columns(self, device=None) -> torch.Tensor:
        """The flat-style columns this network writes (those of ``edit_layers``), increasing: int64 [E] on ``device``
        (default CPU)."""
        return torch.cat([torch.arange(self.offsets[k], self.offsets[k + 1])
                          for k in sorted(self.edit_layers)]).to(device)

    def forward(self, s: torch.Tensor, dp: torch.Tensor) -> torch.Tensor:
        """Offsets ds [B, D] (zero outside ``edit_layers``) for flat styles s [B, D] and dP [B, p_dim]."""
        if s.ndim != 2 or s.shape[1] != self.style_dim:
            raise ValueError(f"StyleManipulator: s must be [B, {self.style_dim}], found {tuple(s.shape)}")
        if dp.ndim != 2 or dp.shape != (s.shape[0], self.p_dim):
            raise ValueError(f"StyleManipulator: dp must be [{s.shape[0]}, {self.p_dim}], found {tuple(dp.shape)}")
        x = (s - self.style_mean) / self.style_std
        q = dp / self.p_scale
        parts = [torch.zeros_like(s[:, a:b]) for a, b in zip(self.offsets[:-1], self.offsets[1:], strict=True)]
        for j, k in enumerate(self.edit_layers):
            a, b = self.offsets[k], self.offsets[k + 1]
            e = self.encoders[j](x[:, a:b])
            h = self.act(self.hidden[j](torch.cat([e, q], 1)))
            parts[k] = self.out[j](h) * self.style_std[a:b]
        return torch.cat(parts, 1)

    def edit(self, s: torch.Tensor, dp: torch.Tensor) -> torch.Tensor:
        """Edited styles s + ds [B, D]."""
        return s + self(s, dp)

    def extra_repr(self) -> str:
        return (f"layers={len(self.layer_channels)}, edit_layers={self.edit_layers}, p_dim={self.p_dim}, "
                f"code_dim={self.code_dim}, activation={self.activation_name}")


# ------------------------------------------------------------------------------------------ F^i, one per attribute
FORMAT = "cddfm3d.LatentManipulator"
VERSION = "1"


class ManipulatorFileError(ValueError):
    """A latent-manipulator file that cannot be read, names the file and the field."""


def attribute_width(attribute: str) -> int:
    """k_i: the number of coefficients of ``attribute`` (shape 80, expression 64, albedo 80, pose 3, light 27)."""
    if attribute not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {attribute!r}; expected one of {ATTRIBUTES}")
    sl = SLICES[ATTRIBUTE_GROUPS[attribute]]
    return sl.stop - sl.start


class LatentManipulator(nn.Module):
    """The latent manipulation network F^i of one attribute (the paper's E^i / D^i; ``cddfm3d_method.md`` §5):
    ``F(s, delta) -> s_g = s + ds`` with ds from a :class:`StyleManipulator` over the attribute's reduced
    StyleSpace S^i (its layer set), so ``s_g`` equals ``s`` outside those layers.

    Args:
        attribute: one of :data:`ATTRIBUTES`; fixes k_i = ``attribute_width(attribute)``.
        layer_channels, edit_layers, style_mean, style_std, code_dim, hidden, activation: as
            :class:`StyleManipulator` (``activation=None``: the paper's and official code's linear network).
        p_scale: per-coefficient scale [k_i] of delta (e.g. the std of T's predictions of the attribute).

    Shapes: ``s`` [B, D] flat styles (``G.flatten_styles`` layout, D = ``sum(layer_channels)``), ``delta`` =
    P_t^i - P_s^i [B, k_i] in coefficient units; returns [B, D]. ``delta = 0`` asks for no change (the
    reconstruction loss of training makes ds ~ 0 there; an untrained network returns ``s`` exactly).

    Raises:
        ValueError: unknown attribute; the :class:`StyleManipulator` argument errors; inputs of the wrong shape.
    """

    def __init__(self, attribute: str, layer_channels: Sequence[int], edit_layers: Sequence[int],
                 style_mean: torch.Tensor | None = None, style_std: torch.Tensor | None = None,
                 p_scale: torch.Tensor | None = None, code_dim: int = 32, hidden: int | Sequence[int] | None = None,
                 activation: str | None = None):
        super().__init__()
        self.attribute = attribute
        self.net = StyleManipulator(layer_channels, sorted(int(k) for k in edit_layers), attribute_width(attribute),
                                    style_mean, style_std, p_scale, code_dim, hidden, activation)

    @property
    def config(self) -> dict:
        n = self.net
        return {"attribute": self.attribute, "layer_channels": list(n.layer_channels), "edit_layers":
                list(n.edit_layers), "code_dim": n.code_dim, "hidden": list(n.hidden_widths),
                "activation": n.activation_name}

    @property
    def style_dim(self) -> int:
        return self.net.style_dim

    @property
    def edit_layers(self) -> list[int]:
        return list(self.net.edit_layers)

    @property
    def p_dim(self) -> int:
        return self.net.p_dim

    def offset(self, s: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """ds [B, D] (zero outside the layer set)."""
        return self.net(s, delta)

    def forward(self, s: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Edited flat styles s + ds [B, D]."""
        return s + self.net(s, delta)

    def save(self, path) -> Path:
        """Write safetensors (weights and the statistics buffers) with format, version and config in the
        metadata, atomically. Returns the path."""
        return save_safetensors(self, path, {"format": FORMAT, "version": VERSION, "config": json.dumps(self.config)})

    @classmethod
    def load(cls, path, device=None) -> LatentManipulator:
        """Read a file written by :meth:`save` (strict: every tensor, no extra ones), in eval mode with gradients
        off, on ``device`` (default CPU). Raises ``FileNotFoundError`` for a missing file and
        :class:`ManipulatorFileError` naming the file and the field for another format or version, a bad config or
        tensors that do not match it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"LatentManipulator.load: {path} does not exist")
        tensors, meta = read_native_safetensors(path, FORMAT, "LatentManipulator.save", ManipulatorFileError,
                                                version=VERSION)
        try:
            c = json.loads(meta["config"])
            net = cls(c["attribute"], c["layer_channels"], c["edit_layers"], code_dim=c["code_dim"],
                      hidden=c["hidden"], activation=c["activation"])
        except (KeyError, TypeError, ValueError) as e:
            raise ManipulatorFileError(f"{path}: metadata field 'config' is missing or invalid ({e!r}); expected "
                                       f"{{attribute, layer_channels, edit_layers, code_dim, hidden, activation}}"
                                       ) from e
        problems = state_dict_problems(net, tensors)
        if problems:
            raise ManipulatorFileError(f"{path}: does not match LatentManipulator({c}): " + "; ".join(problems))
        bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise ManipulatorFileError(f"{path}: tensor(s) {bad[:5]} contain NaN/Inf")
        net.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
        net.eval().requires_grad_(False)
        return net if device is None else net.to(device)

    def extra_repr(self) -> str:
        return f"attribute={self.attribute!r}"


def load_latent_manipulator(path, device=None) -> LatentManipulator:
    """Loader of asset kind ``"editing.LatentManipulator"``: :meth:`LatentManipulator.load`."""
    return LatentManipulator.load(path, device)


register_kind("editing.LatentManipulator", load_latent_manipulator)
