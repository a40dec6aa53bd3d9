"""Baseline editors for the evaluation of the F^i (issue 10 §3).

An *editor* for attribute i is a callable ``F(s, delta) -> s_g``: ``s`` flat StyleSpace styles [B, D]
(``G.flatten_styles`` layout, D = ``G.style_dim``), ``delta = P_t^i - P_s^i`` [B, k_i] (the change of attribute i's
coefficients: shape 80, expression 64, albedo 80, pose 3, light 27; :data:`cddfm3d.editing.ATTRIBUTE_SLICES`), and
``s_g`` the edited styles [B, D]. A *method* is a dict ``{attribute: editor}``.

* :func:`identity_editor` -- no edit at all (``s_g = s``): the zero of completion and of leakage.
* :class:`LinearDirections` / :func:`fit_linear_directions` / :func:`fit_linear_baseline` -- the InterFaceGAN-style
  baseline: a StyleSpace offset linear in the coefficient change, ``s_g = s + delta @ A_i``, over the full S (every
  channel of every layer), with ``A_i`` regressed on pairs by least squares.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..face3d.measures import ATTRIBUTES
from ..face3d.morphable import N_COEFFS
from . import ATTRIBUTE_SLICES

FIT_CHUNK = 4096      # rows per float64 chunk of the normal equations


def identity_editor(s: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The editor that edits nothing: returns ``s`` [B, D] unchanged (``delta`` is ignored)."""
    return s


def _check_attribute(attribute, who: str) -> str:
    if attribute not in ATTRIBUTE_SLICES:
        raise ValueError(f"{who}: unknown attribute {attribute!r}; expected one of {ATTRIBUTES}")
    return attribute


def _width(attribute: str) -> int:
    sl = ATTRIBUTE_SLICES[attribute]
    return sl.stop - sl.start


class LinearDirections(nn.Module):
    """InterFaceGAN-style linear editor of one attribute: ``s_g = s + delta @ A`` (no offset: delta = 0 edits
    nothing), over every channel of S.

    Args:
        directions: ``A`` [k, D] float: row c is the StyleSpace direction of one unit of coefficient c of the
            attribute (k = the attribute's width, D = ``G.style_dim``); stored as a float32 buffer.
        attribute: one of :data:`cddfm3d.editing.ATTRIBUTES`.

    ``forward(s [B, D], delta [B, k]) -> s_g [B, D]`` in ``s``'s dtype. The module starts in eval mode.

    Raises ``ValueError`` for an unknown attribute, directions that are not a finite [k, D] float tensor, and
    (forward) ``s`` / ``delta`` of another shape, naming the argument, the shape expected and the shape found.
    """

    def __init__(self, directions: torch.Tensor, attribute: str):
        super().__init__()
        who = "LinearDirections"
        self.attribute = _check_attribute(attribute, who)
        k = _width(attribute)
        if (not isinstance(directions, torch.Tensor) or not directions.is_floating_point() or directions.ndim != 2
                or directions.shape[0] != k or directions.shape[1] < 1):
            found = (f"{tuple(directions.shape)} {directions.dtype}" if isinstance(directions, torch.Tensor)
                     else type(directions).__name__)
            raise ValueError(f"{who}: directions must be a float tensor [{k}, D] for attribute {attribute!r}, "
                             f"found {found}")
        if not bool(torch.isfinite(directions).all()):
            raise ValueError(f"{who}: directions contain NaN/Inf")
        self.register_buffer("directions", directions.detach().float().clone())
        self.eval()                  # nothing is trained by gradient: an editor ready for evaluate()

    @property
    def style_dim(self) -> int:
        return self.directions.shape[1]

    @property
    def p_dim(self) -> int:
        return self.directions.shape[0]

    def forward(self, s: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        who = f"LinearDirections({self.attribute})"
        if not isinstance(s, torch.Tensor) or s.ndim != 2 or s.shape[1] != self.style_dim:
            found = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            raise ValueError(f"{who}: s must be styles [B, {self.style_dim}], found {found}")
        if not isinstance(delta, torch.Tensor) or delta.ndim != 2 or tuple(delta.shape) != (s.shape[0], self.p_dim):
            found = tuple(delta.shape) if isinstance(delta, torch.Tensor) else type(delta).__name__
            raise ValueError(f"{who}: delta must be [B, {self.p_dim}] with B = {s.shape[0]} (the rows of s), "
                             f"found {found}")
        a = self.directions.to(device=s.device)
        return s + (delta.to(device=s.device, dtype=a.dtype) @ a).to(s.dtype)

    def extra_repr(self) -> str:
        return f"attribute={self.attribute!r}, p_dim={self.p_dim}, style_dim={self.style_dim}"


def _check_rows(x, name: str, width: int | None, who: str, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 2 or (
            width is not None and x.shape[1] != width):
        want = f"[N, {width}]" if width is not None else "[N, D]"
        found = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who}: {name} must be a float tensor {want} ({what}), found {found}")
    return x


@torch.no_grad()
def fit_linear_directions(styles: torch.Tensor, coeffs: torch.Tensor, attribute: str,
                          ridge: float = 0.0) -> LinearDirections:
    """Fit the InterFaceGAN-style linear directions of ``attribute`` on pairs (styles, coefficients).

    InterFaceGAN (Shen et al., "Interpreting the Latent Space of GANs for Semantic Face Editing", CVPR 2020) moves
    a latent code along one linear direction per attribute. Here there is one direction per coefficient of the
    attribute, regressed jointly: with the centred styles ``S~ = S - mean(S)`` [N, D] and the centred coefficients
    of the attribute ``P~ = P^i - mean(P^i)`` [N, k]::

        A = argmin_A (1/N) ||P~ A - S~||_F^2 + ridge ||A||_F^2 = (P~^T P~ / N + ridge I)^(-1) P~^T S~ / N

    so ``delta @ A`` is the mean change of the styles that goes with a change ``delta`` of the coefficients.
    ``ridge = 0`` gives ordinary least squares (the minimum-norm solution if P~ is rank deficient:
    ``torch.linalg.lstsq`` with the SVD-based "gelsd" driver on the normal equations); ``ridge > 0`` solves the
    regularised normal equations (``torch.linalg.solve``). Everything is computed in float64 on the CPU, the
    normal equations accumulated over chunks of :data:`FIT_CHUNK` rows.

    Args:
        styles: [N, D] float flat styles (N >= 2).
        coeffs: [N, 257] float coefficients of the same samples: the pairs' reconstruction labels or T's
            predictions (the caller's choice); only the attribute's slice is used.
        attribute: one of :data:`cddfm3d.editing.ATTRIBUTES`.
        ridge: >= 0, in squared coefficient units per sample (see the objective).

    Returns:
        :class:`LinearDirections` with ``A`` [k, D] (float32), on the CPU.

    Raises:
        ValueError: unknown attribute; ``styles`` / ``coeffs`` not float [N, D] / [N, 257], different N, N < 2,
            NaN/Inf in them; ``ridge`` negative or not finite.
    """
    who = "fit_linear_directions"
    _check_attribute(attribute, who)
    _check_rows(styles, "styles", None, who, "flat StyleSpace styles")
    _check_rows(coeffs, "coeffs", N_COEFFS, who, "3DMM coefficients")
    n = styles.shape[0]
    if coeffs.shape[0] != n:
        raise ValueError(f"{who}: styles and coeffs must have the same rows N, found {n} and {coeffs.shape[0]}")
    if n < 2:
        raise ValueError(f"{who}: need N >= 2 pairs to centre and fit, found N = {n}")
    if isinstance(ridge, bool) or not isinstance(ridge, int | float) or not math.isfinite(ridge) or ridge < 0:
        raise ValueError(f"{who}: ridge must be a finite number >= 0, found {ridge!r}")
    p = coeffs[:, ATTRIBUTE_SLICES[attribute]]
    for name, t in (("styles", styles), ("coeffs", p)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{who}: {name} contain NaN/Inf")
    k, d = p.shape[1], styles.shape[1]
    s_mean = torch.zeros(d, dtype=torch.float64)
    p_mean = torch.zeros(k, dtype=torch.float64)
    for i in range(0, n, FIT_CHUNK):
        s_mean += styles[i:i + FIT_CHUNK].detach().to("cpu", torch.float64).sum(0)
        p_mean += p[i:i + FIT_CHUNK].detach().to("cpu", torch.float64).sum(0)
    s_mean /= n
    p_mean /= n
    gram = torch.zeros(k, k, dtype=torch.float64)
    cross = torch.zeros(k, d, dtype=torch.float64)
    for i in range(0, n, FIT_CHUNK):
        pc = p[i:i + FIT_CHUNK].detach().to("cpu", torch.float64) - p_mean
        sc = styles[i:i + FIT_CHUNK].detach().to("cpu", torch.float64) - s_mean
        gram += pc.T @ pc
        cross += pc.T @ sc
    gram /= n
    cross /= n
    if ridge > 0:
        a = torch.linalg.solve(gram + ridge * torch.eye(k, dtype=torch.float64), cross)
    else:
        a = torch.linalg.lstsq(gram, cross, driver="gelsd").solution
    return LinearDirections(a, attribute)


def fit_linear_baseline(styles: torch.Tensor, coeffs: torch.Tensor, attributes=ATTRIBUTES,
                        ridge: float = 0.0) -> dict[str, LinearDirections]:
    """The linear baseline as a method: ``{attribute: fit_linear_directions(styles, coeffs, attribute, ridge)}``
    for each of ``attributes`` (same arguments and errors as :func:`fit_linear_directions`)."""
    return {a: fit_linear_directions(styles, coeffs, a, ridge=ridge) for a in attributes}


__all__ = ["identity_editor", "LinearDirections", "fit_linear_directions", "fit_linear_baseline", "FIT_CHUNK"]
