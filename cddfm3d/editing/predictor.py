"""The attribute predictor T of CDDFM3D (the official code's APNet): flat StyleSpace styles s [B, D] -> the 257
3DMM coefficients that the reconstruction network reads from the image ``G(s)``.

Architecture (official APNet, cddfm3d_method.md §3): an MLP with four ELU hidden layers and a linear output,
Xavier-uniform weights, PyTorch's default biases. The official widths for D = 9088 (FFHQ-1024 config-f) are
4096, 2048, 1024, 512; here each is scaled by D / 9088 and kept at least :data:`MIN_HIDDEN` = 512 (the official
narrowest layer, twice the output width), so a small generator's T has no hidden layer narrower than its output
(for the mini generator, D = 1408: 635, 512, 512, 512).

Two changes to the official network (which normalises neither side):

* **inputs standardised per channel**: ``(s - style_mean) / style_std`` with both buffers fitted on the training
  styles (:meth:`AttributePredictor.fit_normalisation`); StyleSpace channels differ in spread by orders of
  magnitude, and raw inputs let a few channels dominate the first layer;
* **outputs in prior-std units**: the MLP's output z is mapped to coefficients ``coeff_mean + coeff_scale * z``.
  ``coeff_mean`` is the training labels' mean. ``coeff_scale`` is, for the mini world, the prior standard
  deviation of each coefficient (:func:`cddfm3d.world.priors.prior_std`, the spread the renders were drawn from);
  for any other label source (the real world: Deep3D's coefficients of FFHQ-generator images) the labels' own
  standard deviation (floored at 1e-3). Which one was used is recorded in the file (``coeff_scale_source``).

``T(s)`` always returns coefficients [B, 257] in the coefficient units of the labels.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..assets import register_kind
from ..face3d.measures import coefficient_scale
from ..face3d.morphable import N_COEFFS
from ..serialization import read_native_safetensors, save_safetensors, state_dict_problems

OFFICIAL_STYLE_DIM = 9088                      # FFHQ-1024 config-f, tRGB included
OFFICIAL_HIDDEN = (4096, 2048, 1024, 512)      # APNet's hidden widths for that input
MIN_HIDDEN = 512
STYLE_STD_FLOOR = 1e-6                         # a constant style channel is centred, not blown up
SCALE_SOURCES = ("prior_std", "labels_std", "unfitted")
FORMAT = "cddfm3d.AttributePredictor"
VERSION = "1"


class PredictorFileError(ValueError):
    """An attribute-predictor file is unreadable, of another format, or does not match its architecture."""


def scaled_hidden(style_dim: int, min_width: int = MIN_HIDDEN) -> tuple[int, ...]:
    """The official APNet widths (4096, 2048, 1024, 512 for D = 9088) scaled by ``style_dim / 9088`` (rounded),
    each at least ``min_width``. Raises ``ValueError`` for a ``style_dim`` < 1."""
    if isinstance(style_dim, bool) or not isinstance(style_dim, int) or style_dim < 1:
        raise ValueError(f"scaled_hidden: style_dim must be a positive int, found {style_dim!r}")
    return tuple(max(round(h * style_dim / OFFICIAL_STYLE_DIM), min_width) for h in OFFICIAL_HIDDEN)


class AttributePredictor(nn.Module):
    """T: flat styles s [B, D] -> coefficients [B, 257] (see the module docstring).

    Args:
        style_dim: D, the generator's ``G.style_dim`` (tRGB included).
        hidden: the four (or any number >= 1 of) hidden widths; default :func:`scaled_hidden`.

    Buffers (saved with the weights): ``style_mean``, ``style_std`` [D]; ``coeff_mean``, ``coeff_scale`` [257].
    A new predictor has the identity normalisation (0 / 1) until :meth:`fit_normalisation`.

    Raises ``ValueError`` for a ``style_dim`` or widths that are not positive ints.
    """

    def __init__(self, style_dim: int, hidden: Sequence[int] | None = None):
        super().__init__()
        hidden = scaled_hidden(style_dim) if hidden is None else tuple(hidden)
        if (isinstance(style_dim, bool) or not isinstance(style_dim, int) or style_dim < 1 or not hidden
                or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden)):
            raise ValueError(f"AttributePredictor: style_dim and hidden widths must be positive ints, found "
                             f"style_dim={style_dim!r}, hidden={hidden!r}")
        self.style_dim = style_dim
        self.hidden = hidden
        layers: list[nn.Module] = []
        width = style_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ELU()]
            width = h
        layers.append(nn.Linear(width, N_COEFFS))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)   # as the official APNet; biases keep PyTorch's default
        self.register_buffer("style_mean", torch.zeros(style_dim))
        self.register_buffer("style_std", torch.ones(style_dim))
        self.register_buffer("coeff_mean", torch.zeros(N_COEFFS))
        self.register_buffer("coeff_scale", torch.ones(N_COEFFS))
        self.coeff_scale_source = "unfitted"

    @property
    def config(self) -> dict:
        """The constructor's arguments (JSON-serialisable)."""
        return {"style_dim": self.style_dim, "hidden": list(self.hidden)}

    # ------------------------------------------------------------------ normalisation
    @torch.no_grad()
    def fit_normalisation(self, styles: torch.Tensor, coeffs: torch.Tensor,
                          coeff_scale: torch.Tensor | None = None) -> AttributePredictor:
        """Fit the buffers on training data: ``style_mean``/``style_std`` = per-channel mean and std of ``styles``
        [N, D] (std floored at 1e-6), ``coeff_mean`` = mean of ``coeffs`` [N, 257], ``coeff_scale`` = the given
        ``coeff_scale`` [257] (the mini world: ``prior_std()``; recorded as ``"prior_std"``) or, when ``None``, the
        labels' std floored at 1e-3 (:func:`cddfm3d.face3d.measures.coefficient_scale`, ``"labels_std"``).
        Statistics in float64. Returns ``self``.

        Raises ``ValueError`` for shapes other than [N >= 2, D] / [N, 257], non-finite values, or a
        ``coeff_scale`` that is not [257] finite and > 0."""
        s = _check_styles(styles, self.style_dim, "fit_normalisation: styles")
        c = _check_coeffs(coeffs, "fit_normalisation: coeffs")
        if len(s) != len(c) or len(s) < 2:
            raise ValueError(f"fit_normalisation: need as many style rows as coefficient rows (>= 2), found "
                             f"{len(s)} and {len(c)}")
        s64, c64 = s.double(), c.double()
        if not bool(torch.isfinite(s64).all()) or not bool(torch.isfinite(c64).all()):
            raise ValueError("fit_normalisation: styles or coeffs contain NaN/Inf")
        self.style_mean.copy_(s64.mean(0))
        self.style_std.copy_(s64.std(0).clamp_min(STYLE_STD_FLOOR))
        self.coeff_mean.copy_(c64.mean(0))
        if coeff_scale is None:
            self.coeff_scale.copy_(coefficient_scale(c64))
            self.coeff_scale_source = "labels_std"
        else:
            scale = torch.as_tensor(coeff_scale).detach().double().cpu().flatten()
            if scale.shape != (N_COEFFS,) or not bool(torch.isfinite(scale).all()) or bool((scale <= 0).any()):
                raise ValueError(f"fit_normalisation: coeff_scale must be [{N_COEFFS}] finite values > 0, found "
                                 f"shape {tuple(scale.shape)}, range [{float(scale.min())}, {float(scale.max())}]")
            self.coeff_scale.copy_(scale)
            self.coeff_scale_source = "prior_std"
        return self

    def standardise(self, styles: torch.Tensor) -> torch.Tensor:
        """The network's input ``(s - style_mean) / style_std`` [B, D]."""
        return (styles - self.style_mean) / self.style_std

    def to_coeffs(self, z: torch.Tensor) -> torch.Tensor:
        """Coefficients [B, 257] of outputs ``z`` in prior-std units: ``coeff_mean + coeff_scale * z``."""
        return self.coeff_mean + self.coeff_scale * z

    def to_units(self, coeffs: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_coeffs`: ``(coeffs - coeff_mean) / coeff_scale``."""
        return (coeffs - self.coeff_mean) / self.coeff_scale

    def forward(self, styles: torch.Tensor, check: bool = True) -> torch.Tensor:
        """Styles [B, D] (``G.flatten_styles(...)``) -> coefficients [B, 257]. ``check=False`` skips the shape
        check (training loops). Raises ``ValueError`` for styles that are not a float [B, D] tensor."""
        if check:
            _check_styles(styles, self.style_dim, "AttributePredictor: styles")
        return self.to_coeffs(self.mlp(self.standardise(styles.to(self.style_mean.dtype))))

    # ------------------------------------------------------------------ files
    def save(self, path) -> Path:
        """Write safetensors (weights and the four buffers) with the config, format, version and
        ``coeff_scale_source`` in its metadata, atomically. Returns the path."""
        meta = {"format": FORMAT, "version": VERSION, "config": json.dumps(self.config),
                "coeff_scale_source": self.coeff_scale_source}
        return save_safetensors(self, path, meta)

    @classmethod
    def load(cls, path, device=None) -> AttributePredictor:
        """Read a file written by :meth:`save` (strict: every tensor, no extra ones, shapes as the config says),
        in eval mode on ``device`` (default CPU).

        Raises ``FileNotFoundError`` for a missing file, :class:`PredictorFileError` (a ``ValueError``) naming the
        file and the field for an unreadable file, another format or version, a bad config, or tensors that do
        not match it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"AttributePredictor.load: {path} does not exist")
        tensors, meta = read_native_safetensors(path, FORMAT, "AttributePredictor.save", PredictorFileError,
                                                version=VERSION)
        try:
            config = json.loads(meta["config"])
            net = cls(config["style_dim"], config["hidden"])
        except (KeyError, TypeError, ValueError) as e:
            raise PredictorFileError(f"{path}: metadata field 'config' is missing or invalid ({e!r}); expected "
                                     f"{{\"style_dim\": D, \"hidden\": [widths]}}") from e
        source = meta.get("coeff_scale_source")
        if source not in SCALE_SOURCES:
            raise PredictorFileError(f"{path}: metadata field 'coeff_scale_source' is {source!r}, expected one of "
                                     f"{SCALE_SOURCES}")
        _load_strict(net, tensors, path)
        net.coeff_scale_source = source
        net.eval()
        return net if device is None else net.to(device)

    def extra_repr(self) -> str:
        return f"style_dim={self.style_dim}, hidden={self.hidden}, coeff_scale_source={self.coeff_scale_source!r}"


def _load_strict(net: nn.Module, sd: dict, path: Path) -> None:
    problems = state_dict_problems(net, sd)
    if problems:
        raise PredictorFileError(f"{path}: does not match AttributePredictor({net.config}): " + "; ".join(problems))
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise PredictorFileError(f"{path}: tensor(s) {bad[:5]} contain NaN/Inf")
    net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)


def _check_styles(styles, dim: int, who: str) -> torch.Tensor:
    return _check_rows(styles, "B", dim, f"flat StyleSpace styles, G.style_dim = {dim}", who)


def _check_coeffs(coeffs, who: str) -> torch.Tensor:
    return _check_rows(coeffs, "N", N_COEFFS, "id 80, exp 64, tex 80, angle 3, gamma 27, trans 3", who)


def _check_rows(x, rows: str, dim: int, what: str, who: str) -> torch.Tensor:
    """``x`` itself when it is a float tensor [rows, dim]; else ``ValueError`` naming ``who``, the expected shape
    with ``what`` its columns hold, and what was found (dtype / type, or shape)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        found = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who}: expected a float tensor [{rows}, {dim}] ({what}), found {found}")
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{who}: expected [{rows}, {dim}] ({what}), found {tuple(x.shape)}")
    return x


def load_attribute_predictor(path, device=None) -> AttributePredictor:
    """Loader of asset kind ``"editing.AttributePredictor"``: :meth:`AttributePredictor.load`."""
    return AttributePredictor.load(path, device)


register_kind("editing.AttributePredictor", load_attribute_predictor)

__all__ = ["AttributePredictor", "PredictorFileError", "scaled_hidden", "load_attribute_predictor",
           "OFFICIAL_HIDDEN", "OFFICIAL_STYLE_DIM", "MIN_HIDDEN"]
