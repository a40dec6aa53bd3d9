"""ArcFace face recognition for the real world: InsightFace's IResNet backbone and a differentiable recognizer.

**Network** (:class:`IResNet`). The "improved ResNet" of Duta et al. 2020 (arXiv:2004.04989) as InsightFace's
``recognition/arcface_torch`` trains it for ArcFace (Deng et al. 2019), with the same parameter names, so that a
``backbone.pth`` of its model zoo (e.g. ``ms1mv3_arcface_r100_fp16``) loads strictly:

* stem: ``conv1`` (3x3, 3 -> 64, stride 1, padding 1, no bias), ``bn1``, ``prelu`` (one slope per channel);
* ``layer1`` .. ``layer4``: IBasicBlocks of widths 64, 128, 256, 512; each stage halves the resolution in its first
  block (112 -> 56 -> 28 -> 14 -> 7). A block computes ``bn1 -> conv1 (3x3, stride 1) -> bn2 -> prelu -> conv2
  (3x3, the block's stride) -> bn3`` and adds the input, or ``downsample(input)`` = (1x1 conv with the stride, no
  bias; BatchNorm2d) in the first block of a stage (keys ``downsample.0``, ``downsample.1``);
* head: ``bn2`` (BatchNorm2d 512), dropout (identity in eval mode), flatten, ``fc`` Linear(512 * 7 * 7, 512),
  ``features`` BatchNorm1d(512) whose weight is fixed at 1 (not trained).

Every batch norm has eps 1e-5. Depths (blocks per stage): :data:`DEPTHS` (r18 ... r200); r100 has 65.2 M parameters.
The input is a 112 x 112 RGB crop in [-1, 1] (``(x / 255 - 0.5) / 0.5`` of 8-bit pixels).

**Recognizer** (:class:`ArcFaceRecognizer`). Images of any size [B, 3, H, W] in [-1, 1] -> unit-length identity
features [B, 512], differentiable in the pixels, for :func:`cddfm3d.adapt.pie_embed`'s ``recognizer=``. Each face
is cut out as ArcFace's training crops were: the least-squares similarity (rotation, uniform scale, translation;
Umeyama 1991, :func:`similarity_transform`) that takes the face's 5 points (eye centres, nose tip, mouth corners)
onto ArcFace's 5-point template at 112 px (:data:`ARCFACE_TEMPLATE_112`), applied with bilinear ``grid_sample``.
Points are pixels of the input image, x right, y down, pixel centres on integers (pixel (i, j) spans [j - 0.5,
j + 0.5] x [i - 0.5, i + 0.5]), the convention of ``cv2.warpAffine`` with which InsightFace cuts its crops and of
``grid_sample(align_corners=False)`` after the mapping x_norm = (2 x + 1) / W - 1. Outside the image the crop is
black (-1), as ``cv2.warpAffine``'s default border. Where the crop shrinks the face by 2x or more, the image is
first box-filtered by the integer factor k = floor(source px per crop px) (``avg_pool2d``), so that bilinear
sampling does not alias; this departs from InsightFace's plain ``warpAffine`` only by that anti-aliasing.

Default points: the frontal FFHQ points of the image size (:func:`cddfm3d.editing.labels.ffhq_template_5p`), where a
real FFHQ generator's faces and :func:`cddfm3d.photo.align_photo` ``(..., framing="ffhq")`` crops have them.

Because the features have unit length, the squared Euclidean distance PIE's ``recognition`` energy takes is
2 (1 - cos), cos the cosine similarity ArcFace verification thresholds.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CROP_SIZE = 112
EMBEDDING_DIM = 512
BN_EPS = 1e-5
WIDTHS = (64, 128, 256, 512)
DEPTHS: dict[str, tuple[int, int, int, int]] = {
    "r18": (2, 2, 2, 2), "r34": (3, 4, 6, 3), "r50": (3, 4, 14, 3), "r100": (3, 13, 30, 3), "r200": (6, 26, 60, 6),
}
# ArcFace's 5-point template in its 112 x 112 crop (pixels, y down): left eye, right eye, nose tip, left and right
# mouth corners (left/right as seen in the image), InsightFace's alignment constants.
ARCFACE_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                 [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
DEFAULT_ASSET = "real/arcface"


# --------------------------------------------------------------------------------------------------- network
def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """One residual block of :class:`IResNet` (module docstring): [B, cin, H, W] -> [B, cout, H / stride, W / stride].
    A ``downsample`` branch (1x1 conv + batch norm) is built when the stride or the width changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False),
                                            nn.BatchNorm2d(cout, eps=BN_EPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return y + (x if self.downsample is None else self.downsample(x))


def _layers(layers: str | Sequence[int]) -> tuple[int, int, int, int]:
    if isinstance(layers, str):
        if layers not in DEPTHS:
            raise ValueError(f"IResNet: unknown depth {layers!r}, expected one of {sorted(DEPTHS)} or 4 block counts")
        return DEPTHS[layers]
    out = tuple(layers)
    if len(out) != 4 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in out):
        raise ValueError(f"IResNet: layers must be a depth name {sorted(DEPTHS)} or 4 block counts >= 1, found "
                         f"{layers!r}")
    return out  # type: ignore[return-value]


class IResNet(nn.Module):
    """InsightFace's ArcFace backbone (module docstring): crops [B, 3, 112, 112] in [-1, 1] -> features [B, 512]
    (not normalised; :class:`ArcFaceRecognizer` normalises them).

    Args:
        layers: a name of :data:`DEPTHS` ("r18", "r34", "r50", "r100", "r200") or 4 block counts.
        dropout: dropout probability before ``fc`` (0 in arcface_torch's configs; no effect in eval mode).

    The parameter names are arcface_torch's, so its ``backbone.pth`` loads with ``load_state_dict(strict=True)``;
    :meth:`from_state_dict` infers the depth from the keys. ValueError for an unknown depth name or bad counts."""

    def __init__(self, layers: str | Sequence[int] = "r100", dropout: float = 0.0):
        super().__init__()
        self.layers = _layers(layers)
        self.conv1 = _conv3x3(3, WIDTHS[0])
        self.bn1 = nn.BatchNorm2d(WIDTHS[0], eps=BN_EPS)
        self.prelu = nn.PReLU(WIDTHS[0])
        cin = WIDTHS[0]
        for i, (width, n) in enumerate(zip(WIDTHS, self.layers, strict=True)):
            blocks = [IBasicBlock(cin, width, stride=2)] + [IBasicBlock(width, width) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = width
        self.bn2 = nn.BatchNorm2d(WIDTHS[-1], eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        side = CROP_SIZE // 2 ** len(WIDTHS)  # 7
        self.fc = nn.Linear(WIDTHS[-1] * side * side, EMBEDDING_DIM)
        self.features = nn.BatchNorm1d(EMBEDDING_DIM, eps=BN_EPS)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1:] != (3, CROP_SIZE, CROP_SIZE):
            raise ValueError(f"IResNet: expected crops [B, 3, {CROP_SIZE}, {CROP_SIZE}], found {tuple(x.shape)}")
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], where: str = "state dict") -> IResNet:
        """An IResNet (float32, eval mode, CPU) holding ``state_dict`` (arcface_torch's ``backbone.pth`` content;
        a ``module.`` prefix of every key, as DistributedDataParallel writes, is removed; float16 tensors are
        upcast). The depth comes from the keys (:func:`infer_layers`). ValueError naming ``where`` (the file) and
        the missing, unexpected or misshapen keys when the dict does not fit exactly; missing
        ``num_batches_tracked`` counters (unused in eval mode) are tolerated."""
        sd = _strip_module(state_dict, where)
        net = cls(infer_layers(sd, where))
        own = net.state_dict()
        missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in sd if k not in own]
        wrong = [f"{k}: expected {list(own[k].shape)}, found {list(sd[k].shape)}" for k in own
                 if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or wrong:
            raise ValueError(f"{where}: not an arcface_torch IResNet-{_name(net.layers)} state dict: "
                             f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
                             f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}, "
                             f"wrong shapes {wrong[:8]}")
        full = {k: (sd[k] if k in sd else own[k]) for k in own}
        full = {k: v.float() if v.is_floating_point() else v for k, v in full.items()}
        net.load_state_dict(full, strict=True)
        return net.eval()


def _name(layers: Sequence[int]) -> str:
    for name, counts in DEPTHS.items():
        if tuple(layers) == counts:
            return name
    return f"custom{tuple(layers)}"


def _strip_module(state_dict: Mapping[str, Any], where: str) -> dict[str, torch.Tensor]:
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise ValueError(f"{where}: expected a non-empty state dict {{name: tensor}}, found "
                         f"{type(state_dict).__name__}")
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{where}: expected tensors, but {bad[:5]} are not (a training checkpoint? arcface_torch's "
                         f"backbone.pth holds the backbone's state_dict() only)")
    sd = dict(state_dict)
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


_BLOCK_RE = re.compile(r"layer([1-4])\.(\d+)\.")


def infer_layers(state_dict: Mapping[str, torch.Tensor], where: str = "state dict") -> tuple[int, int, int, int]:
    """Blocks per stage (4 counts) of an IResNet state dict, from its ``layerN.K.`` keys (K = 0 .. count - 1).
    ValueError naming ``where`` when a stage has no block or its block indices are not 0 .. count - 1."""
    found: dict[int, set[int]] = {i: set() for i in range(1, 5)}
    for k in state_dict:
        m = _BLOCK_RE.match(k)
        if m:
            found[int(m.group(1))].add(int(m.group(2)))
    counts = []
    for stage, idx in found.items():
        if not idx or idx != set(range(len(idx))):
            raise ValueError(f"{where}: not an arcface_torch IResNet state dict: stage layer{stage} has block indices "
                             f"{sorted(idx)}, expected 0 .. n-1 for n >= 1 (keys like 'layer{stage}.0.conv1.weight'); "
                             f"known depths {DEPTHS}")
        counts.append(len(idx))
    return tuple(counts)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------- alignment
def similarity_transform(src, dst) -> np.ndarray:
    """The similarity (rotation, uniform scale >= 0, translation; no reflection) that maps points ``src`` [N, 2]
    onto ``dst`` [N, 2] best in least squares, as a float64 3x3 matrix M with dst ~ (M @ [x, y, 1])[:2]
    (Umeyama 1991, "Least-squares estimation of transformation parameters between two point patterns"). N >= 2.
    ValueError for bad shapes, non-finite points or coincident ``src`` points."""
    x, y = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if x.ndim != 2 or x.shape[1] != 2 or x.shape != y.shape or len(x) < 2:
        raise ValueError(f"similarity_transform: src and dst must both be [N, 2] with N >= 2, found "
                         f"{list(x.shape)} and {list(y.shape)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("similarity_transform: points must be finite")
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    var_x = (xc ** 2).sum(1).mean()
    if var_x <= 1e-12:
        raise ValueError(f"similarity_transform: the source points coincide ({x.tolist()})")
    cov = yc.T @ xc / len(x)
    u, d, vt = np.linalg.svd(cov)
    s = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = (u * s) @ vt
    scale = (d * s).sum() / var_x
    m = np.eye(3)
    m[:2, :2] = scale * rot
    m[:2, 2] = my - scale * rot @ mx
    return m


def _pixel_to_norm(size_h: float, size_w: float) -> np.ndarray:
    """3x3: pixel coordinates (centres on integers) -> grid_sample's normalised coordinates (align_corners=False)."""
    return np.array([[2.0 / size_w, 0, 1.0 / size_w - 1], [0, 2.0 / size_h, 1.0 / size_h - 1], [0, 0, 1]])


def _points(points, batch: int, height: int, width: int) -> np.ndarray:
    if points is None:
        from ..editing.labels import ffhq_template_5p  # lazy: cddfm3d.editing imports cddfm3d.face3d
        return np.broadcast_to(ffhq_template_5p(height, width), (batch, 5, 2))
    p = points.detach().cpu().double().numpy() if isinstance(points, torch.Tensor) else np.asarray(points, np.float64)
    if p.shape == (5, 2):
        p = np.broadcast_to(p, (batch, 5, 2))
    if p.shape != (batch, 5, 2) or not np.isfinite(p).all():
        raise ValueError(f"ArcFaceRecognizer: points must be finite [5, 2] or [B={batch}, 5, 2] pixels (x, y down), "
                         f"found shape {list(p.shape)}")
    return p


class ArcFaceRecognizer(nn.Module):
    """Identity features of faces for PIE's ``recognition`` energy (module docstring).

    ``rec(images, points=None)``: images [B, 3, H, W] float in [-1, 1] -> features [B, 512], unit length (float32),
    differentiable in ``images``. ``points``: the 5 face points [5, 2] (shared) or [B, 5, 2] in the images' pixels
    (x right, y down, pixel centres on integers; order: left eye, right eye, nose tip, left and right mouth corner as
    seen in the image); default the frontal FFHQ points of H x W (:func:`cddfm3d.editing.labels.ffhq_template_5p`).
    :meth:`crop` gives the 112-px crops the network sees.

    Args:
        net: an :class:`IResNet` (or any module [B, 3, 112, 112] -> [B, K]); it is frozen and always runs in eval
            mode (fixed batch-norm statistics), also after ``rec.train()``.

    Build from weights with :meth:`from_state_dict` or :func:`load_arcface`. ValueError for images or points of the
    wrong shape."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> ArcFaceRecognizer:
        super().train(mode)
        self.net.eval()
        return self

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], where: str = "state dict") -> ArcFaceRecognizer:
        """A recognizer around :meth:`IResNet.from_state_dict` (same errors; ``where`` names the source)."""
        return cls(IResNet.from_state_dict(state_dict, where))

    def transforms(self, points, batch: int, height: int, width: int) -> np.ndarray:
        """[B, 3, 3] float64: the similarities taking each image's 5 points onto :data:`ARCFACE_TEMPLATE_112`."""
        p = _points(points, batch, height, width)
        return np.stack([similarity_transform(q, ARCFACE_TEMPLATE_112) for q in p])

    def crop(self, images: torch.Tensor, points=None) -> torch.Tensor:
        """ArcFace's aligned crops [B, 3, 112, 112] in [-1, 1] of ``images`` [B, 3, H, W] (class docstring),
        differentiable in ``images``; black (-1) outside the image."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3 \
                or not images.is_floating_point():
            found = f"{tuple(images.shape)} {images.dtype}" if isinstance(images, torch.Tensor) else type(images)
            raise ValueError(f"ArcFaceRecognizer: images must be float [B, 3, H, W] in [-1, 1], found {found}")
        B, _, H, W = images.shape
        mats = self.transforms(points, B, H, W)
        # source px per crop px = 1 / scale; box-filter by its integer part when it is 2 or more
        scale = np.sqrt(np.abs(np.linalg.det(mats[:, :2, :2])))
        factors = np.maximum(1, np.floor(1.0 / scale)).astype(int)
        out_denorm = np.linalg.inv(_pixel_to_norm(CROP_SIZE, CROP_SIZE))
        crops = images.new_empty(B, 3, CROP_SIZE, CROP_SIZE)
        for k in np.unique(factors):
            idx = np.nonzero(factors == k)[0]
            src = images[torch.as_tensor(idx, device=images.device)]
            if k > 1:
                src = F.avg_pool2d(src, int(k))
            h, w = src.shape[-2:]
            # source px -> pooled px: pooled pixel i averages source pixels i k .. i k + k - 1
            pool = np.array([[1.0 / k, 0, 0.5 / k - 0.5], [0, 1.0 / k, 0.5 / k - 0.5], [0, 0, 1]])
            theta = np.stack([_pixel_to_norm(h, w) @ pool @ np.linalg.inv(mats[i]) @ out_denorm for i in idx])
            theta_t = torch.as_tensor(theta[:, :2], dtype=images.dtype, device=images.device)
            grid = F.affine_grid(theta_t, [len(idx), 3, CROP_SIZE, CROP_SIZE], align_corners=False)
            warped = F.grid_sample(src + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1
            crops = crops.index_copy(0, torch.as_tensor(idx, device=images.device), warped)
        return crops

    def forward(self, images: torch.Tensor, points=None) -> torch.Tensor:
        return F.normalize(self.net(self.crop(images, points)).float(), dim=1)


def load_arcface(path_or_asset: str | Path = DEFAULT_ASSET, device: Any = None) -> ArcFaceRecognizer:
    """An :class:`ArcFaceRecognizer` (eval mode, frozen, on ``device``; default CPU) from arcface_torch's
    ``backbone.pth``: the user-supplied asset ``"real/arcface"`` (path from ``$CDDFM3D_ARCFACE`` or the ``[real]``
    ``arcface`` key of the config file, see :mod:`cddfm3d.assets.real`), another asset name, or a file path.
    Nothing is downloaded. Raises :class:`cddfm3d.assets.AssetError` when the asset is not configured or its file is
    missing (the message says how to obtain it), FileNotFoundError for a missing path, ValueError naming the file
    for content that is not a (matching) IResNet state dict."""
    from .. import assets
    from ..assets.state_dicts import load_state_dict

    if isinstance(path_or_asset, str) and (assets.is_real(path_or_asset) or path_or_asset in assets.available()):
        sd = assets.load(path_or_asset)
        where = f"{path_or_asset} ({assets.path(path_or_asset)})"
    else:
        p = Path(path_or_asset).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"load_arcface: {p} is not a file (expected arcface_torch's backbone.pth, or an "
                                    f"asset name such as {DEFAULT_ASSET!r})")
        sd, where = load_state_dict(p), str(p)
    rec = ArcFaceRecognizer.from_state_dict(sd, where)
    return rec.to(device) if device is not None else rec


__all__ = ["IResNet", "IBasicBlock", "ArcFaceRecognizer", "load_arcface", "infer_layers", "similarity_transform",
           "ARCFACE_TEMPLATE_112", "DEPTHS", "CROP_SIZE", "EMBEDDING_DIM"]
