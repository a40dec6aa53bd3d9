"""Reconstruction network: image -> 257 morphable-model coefficients (Deep3DFaceRecon_pytorch's regressor).

Architecture (reference face3d.md §3.1): a backbone producing a pooled feature map [B, C, 1, 1] and seven
1x1-conv heads ``final_layers.0..6`` with 80, 64, 80, 3, 27, 2, 1 output channels (id, exp, tex, angle,
gamma, translation xy, translation z), concatenated in that order to [B, 257]. Heads are zero-initialised,
so an untrained network predicts the mean face, frontal, ambient light, centred.

Two backbones:

* ``"resnet50"`` -- torchvision ResNet-50 (v1.5, ``weights=None``, fc removed). State-dict keys are
  ``backbone.conv1.weight`` ... ``final_layers.6.bias`` (332 entries), exactly as the official
  ``epoch_20.pth`` (``ReconNet.from_deep3d``). The official net takes RGB in [0, 1], 224 x 224, aligned
  with :mod:`cddfm3d.face3d.align`.
* ``"small"`` -- a compact conv net for the low-resolution mini world: a 3x3 stem, then strided
  conv-norm-ReLU stages (width doubling, capped at 8 x width) down to ~4 x 4, global average pooling.
  Native input range [-1, 1] (the generator's range).

``input_range`` is what :meth:`ReconNet.forward` receives ("0_1" or "-1_1"); images are converted to the
backbone's native range internally, so e.g. the official net can be fed generator images in [-1, 1] with
``ReconNet.from_deep3d(path, input_range="-1_1")``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from ..serialization import read_native_safetensors, save_safetensors, state_dict_problems
from .morphable import N_COEFFS

HEAD_SIZES = (80, 64, 80, 3, 27, 2, 1)  # id, exp, tex, angle, gamma, trans xy, trans z
RESNET50_FEATURES = 2048
INPUT_RANGES = ("0_1", "-1_1")
RANGE_BOUNDS = {"0_1": (0.0, 1.0), "-1_1": (-1.0, 1.0)}
# Values accepted by the check, per input range: wide enough for unclamped generator output (the mini generator
# reaches about +-2.3, FFHQ StyleGAN2 about +-1.3, i.e. -0.15..1.15 after (x + 1) / 2) and resampling overshoot, so
# that net(G(z)) works; narrow enough to catch the convention mistakes: a 0..255 image (both ranges) and a [-1, 1]
# image given to a [0, 1] network (its dark pixels fall below -0.5).
ACCEPTED_VALUES = {"0_1": (-0.5, 1.5), "-1_1": (-4.0, 4.0)}
NATIVE_RANGE = {"resnet50": "0_1", "small": "-1_1"}
NATIVE_FORMAT = "cddfm3d.ReconNet"
NATIVE_VERSION = "1"
DEEP3D_HELP = ("the official checkpoint is checkpoints/<name>/epoch_20.pth of sicxu/Deep3DFaceRecon_pytorch "
               "(download it yourself as described in that repository's README; it is never fetched by cddfm3d)")

assert sum(HEAD_SIZES) == N_COEFFS


class ReconCheckpointError(ValueError):
    """A reconstruction-network file is missing, unreadable, or does not match the architecture."""


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    raise ValueError(f"ReconNet: norm must be 'batch' or 'group', found {kind!r}")


class SmallBackbone(nn.Module):
    """Compact conv net: stem (3x3, stride 1) + ``n_stages`` stride-2 stages + global average pool.

    Each stage is conv3x3(stride 2)-norm-ReLU-conv3x3-norm-ReLU; widths ``width * 2**i`` capped at
    ``8 * width``. Output [B, out_channels, 1, 1].
    """

    def __init__(self, width: int = 32, n_stages: int = 4, norm: str = "batch"):
        super().__init__()
        layers = [nn.Conv2d(3, width, 3, 1, 1, bias=False), _norm(norm, width), nn.ReLU(inplace=True)]
        ch = width
        for i in range(n_stages):
            out = width * min(2 ** (i + 1), 8)
            layers += [nn.Conv2d(ch, out, 3, 2, 1, bias=False), _norm(norm, out), nn.ReLU(inplace=True),
                       nn.Conv2d(out, out, 3, 1, 1, bias=False), _norm(norm, out), nn.ReLU(inplace=True)]
            ch = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))


def _resnet50() -> nn.Module:
    from torchvision.models import resnet50

    net = resnet50(weights=None)  # never download: the official weights come from epoch_20.pth
    net.fc = nn.Identity()        # no parameters -> no fc keys, as Deep3D's use_last_fc=False
    return net


class ReconNet(nn.Module):
    """Image -> coefficients [B, 257] (id 80, exp 64, tex 80, angle 3, gamma 27, trans 3).

    Args:
        backbone: "resnet50" (Deep3DFaceRecon_pytorch layout) or "small" (mini world).
        image_size: the square input size the net is used at (224 for the official net); ``forward``
            checks it.
        width: base width of the small backbone (ignored for resnet50).
        n_stages: stride-2 stages of the small backbone; default ``round(log2(image_size / 4))``.
        norm: "batch" or "group" normalisation in the small backbone.
        input_range: range of the images given to ``forward``: "0_1" or "-1_1"; default the backbone's
            native range ("0_1" for resnet50, "-1_1" for small).
    """

    def __init__(self, backbone: str = "resnet50", image_size: int | None = None, width: int = 32,
                 n_stages: int | None = None, norm: str = "batch", input_range: str | None = None):
        super().__init__()
        if backbone not in NATIVE_RANGE:
            raise ValueError(f"ReconNet: backbone must be one of {sorted(NATIVE_RANGE)}, found {backbone!r}")
        if image_size is None:
            image_size = 224 if backbone == "resnet50" else 64
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"ReconNet: image_size must be an int >= 8, found {image_size!r}")
        if backbone == "small":
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise ValueError(f"ReconNet: width must be a positive int, found {width!r}")
            if n_stages is None:
                n_stages = max(1, round(math.log2(image_size / 4)))
            if isinstance(n_stages, bool) or not isinstance(n_stages, int) or n_stages < 1:
                raise ValueError(f"ReconNet: n_stages must be a positive int, found {n_stages!r}")
            self.backbone = SmallBackbone(width, n_stages, norm)
            feat = self.backbone.out_channels
            self._config = {"backbone": backbone, "image_size": image_size, "width": width,
                            "n_stages": n_stages, "norm": norm}
        else:
            self.backbone = _resnet50()
            feat = RESNET50_FEATURES
            self._config = {"backbone": backbone, "image_size": image_size}
        self.feature_dim = feat
        self.final_layers = nn.ModuleList([nn.Conv2d(feat, k, 1, bias=True) for k in HEAD_SIZES])
        for layer in self.final_layers:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.native_range = NATIVE_RANGE[backbone]
        self.input_range = input_range or self.native_range

    # ------------------------------------------------------------------ configuration
    @property
    def input_range(self) -> str:
        return self._input_range

    @input_range.setter
    def input_range(self, value: str) -> None:
        if value not in INPUT_RANGES:
            raise ValueError(f"ReconNet: input_range must be one of {INPUT_RANGES}, found {value!r}")
        self._input_range = value

    @property
    def config(self) -> dict:
        """Constructor arguments (JSON-serialisable) that rebuild this architecture."""
        return dict(self._config, input_range=self.input_range)

    @property
    def image_size(self) -> int:
        return self._config["image_size"]

    # ------------------------------------------------------------------ forward
    def to_native(self, images: torch.Tensor) -> torch.Tensor:
        """Convert images from ``input_range`` to the backbone's native range (out of place)."""
        if self.input_range == self.native_range:
            return images
        if self.input_range == "-1_1":   # native [0, 1]
            return (images + 1.0) * 0.5
        return images * 2.0 - 1.0        # [0, 1] -> native [-1, 1]

    def features(self, images: torch.Tensor, check: bool = True) -> torch.Tensor:
        """Pooled backbone features [B, C, 1, 1] of images in ``input_range``; ``check`` as in :meth:`forward`."""
        self._check_images(images, check)
        x = self.to_native(images.to(self.final_layers[0].weight.dtype))
        f = self.backbone(x)
        return f.reshape(f.shape[0], -1, 1, 1)

    def forward(self, images: torch.Tensor, check: bool = True) -> torch.Tensor:
        """images [B, 3, S, S] (RGB, S = ``image_size``, floating point, values in ``input_range``: [0, 1] or
        [-1, 1]; the check accepts ``ACCEPTED_VALUES``, which leaves room for unclamped generator output) ->
        coefficients [B, 257].

        Raises ``TypeError`` for a non-tensor and ``ValueError`` for another shape or a non-float dtype (always),
        and with ``check=True`` for NaN/Inf values or values outside the range (a float image in 0..255 would
        otherwise give meaningless coefficients without complaint, as would a [-1, 1] image given to a [0, 1]
        network). The message names the range, dtype and shape found and the
        conversion. ``check=False`` skips that value scan (it reads the tensor's minimum and maximum back, a
        synchronisation on a GPU): for training loops whose inputs are known to be right, or that add noise or
        keep generator output far outside its range on purpose.
        """
        f = self.features(images, check)
        return torch.cat([head(f) for head in self.final_layers], 1).flatten(1)

    def _check_images(self, images, check: bool = True) -> None:
        s, r = self.image_size, self.input_range
        fix = "image / 255" if r == "0_1" else "image / 127.5 - 1"
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"ReconNet: images must be a torch.Tensor [B, 3, {s}, {s}], found {type(images).__name__}")
        shape = tuple(images.shape)
        if images.ndim != 4 or shape[1] != 3 or shape[2:] != (s, s):
            hint = ""
            if shape == (3, s, s):
                hint = "; add the batch dimension: images[None]"
            elif images.ndim == 4 and shape[1:] == (s, s, 3):
                hint = "; the channels come last: pass images.permute(0, 3, 1, 2)"
            elif images.ndim == 4 and shape[1] in (1, 4) and shape[2:] == (s, s):
                hint = ("; grey images: images.expand(-1, 3, -1, -1)" if shape[1] == 1
                        else "; RGBA images: drop the alpha channel, images[:, :3]")
            elif images.ndim == 4 and shape[1] == 3:
                hint = f"; resize or align the images to {s} x {s} (cddfm3d.face3d.align)"
            raise ValueError(f"ReconNet: images must be [B, 3, {s}, {s}] (RGB, range {r}), found shape {shape}"
                             + hint)
        if not images.is_floating_point():
            raise ValueError(f"ReconNet: images must be floating point in range {r}, found {images.dtype} "
                             f"(for uint8 images in 0..255 pass {fix})")
        if not check or images.numel() == 0:
            return
        lo, hi = (float(v) for v in torch.aminmax(images.detach()))
        where = f"found dtype {images.dtype}, shape {shape}"
        if not (math.isfinite(lo) and math.isfinite(hi)):
            bad = int((~torch.isfinite(images.detach())).sum())
            raise ValueError(f"ReconNet: images contain {bad} NaN/Inf value(s) ({where}); drop or repair those "
                             f"images first")
        a, b = RANGE_BOUNDS[r]
        ok_lo, ok_hi = ACCEPTED_VALUES[r]
        if lo >= ok_lo and hi <= ok_hi:
            return
        if hi > 5.0 and lo >= -0.5:
            hint = f"this looks like a 0..255 image: pass {fix}"
        elif r == "0_1" and lo >= -1.1 and hi <= 1.1:
            hint = "this looks like a [-1, 1] image: pass (image + 1) / 2, or set net.input_range = '-1_1'"
        else:
            hint = f"rescale the images to [{a:g}, {b:g}] (or pass check=False if this is intended)"
        raise ValueError(f"ReconNet: images must have values in [{a:g}, {b:g}] (input_range {r!r}; accepted "
                         f"[{ok_lo:g}, {ok_hi:g}]), found values in [{lo:.4g}, {hi:.4g}] ({where}); {hint}")

    def extra_repr(self) -> str:
        return f"config={self.config}"

    # ------------------------------------------------------------------ Deep3DFaceRecon checkpoint
    @classmethod
    def from_deep3d(cls, path, device=None, input_range: str = "0_1") -> ReconNet:
        """Load the official Deep3DFaceRecon_pytorch ``epoch_20.pth`` (key ``net_recon``, strict), in eval mode.

        The file is read with ``torch.load(weights_only=True)`` (tensors and primitive state only). A
        ``module.`` prefix (DataParallel) is stripped. Other entries (``opt_00``, ``sched_00``) are ignored.
        A bare state dict with the same keys is accepted too.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ReconNet.from_deep3d: {path} does not exist; {DEEP3D_HELP}")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many types for non-checkpoint files
            native = " (a .safetensors file written by ReconNet.save: read it with ReconNet.load)" \
                if path.suffix == ".safetensors" else ""
            raise ReconCheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                                       f"{str(e).splitlines()[0] if str(e) else ''}){native}; {DEEP3D_HELP}") from e
        if not isinstance(ckpt, dict):
            raise ReconCheckpointError(f"{path}: expected a dict with key 'net_recon', found {type(ckpt).__name__}")
        if "net_recon" in ckpt:
            sd = ckpt["net_recon"]
            where = f"{path}['net_recon']"
        elif any(isinstance(k, str) and k.removeprefix("module.").startswith(("backbone.", "final_layers."))
                 for k in ckpt):
            sd, where = ckpt, str(path)
        else:
            keys = sorted(map(str, ckpt))[:8]
            gan = ("; it looks like a StyleGAN2 checkpoint: load it with cddfm3d.stylegan2.load_generator"
                   if {"g_ema", "G_ema", "latent_avg"} & set(ckpt) else "")
            raise ReconCheckpointError(f"{path}: no 'net_recon' entry (found keys {keys}){gan}; is this a "
                                       f"Deep3DFaceRecon_pytorch checkpoint? {DEEP3D_HELP}")
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise ReconCheckpointError(f"{where}: expected a state dict of tensors, found {type(sd).__name__}")
        sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
        net = cls("resnet50", image_size=224, input_range=input_range)
        _load_strict(net, sd, where)
        net.eval()
        if device is not None:
            net.to(device)
        return net

    # ------------------------------------------------------------------ native format
    def save(self, path) -> None:
        """Write safetensors with the JSON config in its metadata (atomic: temp file + rename)."""
        meta = {"format": NATIVE_FORMAT, "version": NATIVE_VERSION, "config": json.dumps(self.config)}
        save_safetensors(self, path, meta)

    @classmethod
    def load(cls, path, device=None) -> ReconNet:
        """Read a file written by :meth:`save` (strict), in eval mode."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ReconNet.load: {path} does not exist")
        tensors, meta = read_native_safetensors(
            path, NATIVE_FORMAT, "ReconNet.save", ReconCheckpointError,
            unreadable_hint="; for the official epoch_20.pth use ReconNet.from_deep3d")
        try:
            config = json.loads(meta["config"])
            net = cls(**config)
        except (KeyError, json.JSONDecodeError, TypeError, ValueError) as e:
            raise ReconCheckpointError(f"{path}: metadata field 'config' is missing or invalid ({e})") from e
        _load_strict(net, tensors, str(path))
        net.eval()
        if device is not None:
            net.to(device)
        return net


def _load_strict(net: nn.Module, sd: dict, where: str) -> None:
    """load_state_dict(strict=True) with an error that lists missing/unexpected keys and shape mismatches."""
    problems = state_dict_problems(net, sd, noun="key")
    if problems:
        raise ReconCheckpointError(f"{where}: does not match ReconNet({net.config['backbone']!r}, "
                                   f"{len(net.state_dict())} keys): " + "; ".join(problems))
    net.load_state_dict(sd, strict=True)
