"""Losses of the attribute predictor T: predicted coefficients vs the reconstruction network's labels, [B, 257].

Every loss below is a function of ``pred`` and ``target`` in coefficient units; those that compare parameters do
so in units of a per-coefficient scale σ [257] (T's output units, :class:`~cddfm3d.editing.predictor.
AttributePredictor`: the prior std in the mini world). :class:`TLoss` combines them with weights.

* **PDC** (3DDFA's parameter distance cost), :func:`pdc_loss`: ``mean_i ((p_i - g_i) / σ_i)^2``.
* **VDC** (3DDFA's vertex distance cost), :func:`vdc_loss`: the mean over vertices of the squared Euclidean
  distance of the posed vertices ``V(p) = R(angles) S(id, exp) + t`` of prediction and label, dm^2. It sees only
  id, exp, angles and trans (albedo and light do not move vertices). In :class:`TLoss` it is divided by the
  labels' per-sample total variance of V, so 1 is as bad as predicting the average posed face.
* **WPDC** (3DDFA's weighted parameter distance cost; Zhu et al., "Face Alignment Across Large Poses: A 3D
  Solution", CVPR 2016, §4.2, and the TPAMI 2017 version), :func:`wpdc_weights` / :func:`wpdc_loss`::

      WPDC = mean_i w_i ((p_i - g_i) / σ_i)^2,     w_i = P * d_i / sum_j d_j   (P = 257: the weights average 1)
      d_i  = || O(g with its i-th entry replaced by p_i) - O(g) ||

  with the weights treated as constants (no gradient), as in 3DDFA. d_i is how much the current error of
  parameter i alone moves the face. 3DDFA's observation O is the posed vertex set, which every one of its
  parameters moves; ours also has albedo and light parameters, which move no vertex, so O stacks three parts,
  each divided by its spread over the labels (:func:`observation_scale`) so that no unit dominates::

      O(p) = [ V(p) / s_V,  albedo(tex) / s_A,  irradiance(gamma) over LIGHT_NORMALS / s_L ]

  O is linear in id, exp, tex, trans and gamma (once the label's rotation is fixed), so for those
  ``d_i = |p_i - g_i| * ||column i of O||`` exactly (a rotation keeps norms); the three angles are substituted
  explicitly. The 3DDFA paper normalises the weights by their sum (the authors' code by their maximum); we use
  the sum, times P.
* **feature** (:func:`feature_terms`): for each attribute of :data:`~cddfm3d.face3d.measures.ATTRIBUTES`, the
  squared distance of its features (:func:`~cddfm3d.face3d.measures.attribute_features`: identity / expression
  vertex parts in dm, albedo colour, SH irradiance over camera-facing normals, angles in degrees), plus the
  translation in dm, each divided by the labels' per-sample total variance of those features: a batch estimate
  of 1 - explained variance in the very space where the attribute is measured; the loss is their mean.
* **official** (:func:`official_wpdc_loss`): the official CDDFM3D code's "WPDC" (cddfm3d_method.md §3), which is
  not 3DDFA's: one random half (128 of 257) of the parameters of the label is replaced by the detached
  prediction; the elementwise squared differences of posed vertices plus lit vertex colours between that copy
  and the label, divided by their Frobenius norm, averaged and multiplied by 10000, give one scalar w; the loss
  is the mean over the 257 parameters of ``weight * diff^2`` with weight w on the chosen half and 1 elsewhere.
  We compare parameters in σ units (the official code uses raw coefficients); the weight w depends on the batch
  size and vertex count, as in the original.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..face3d.camera import rotation_matrix
from ..face3d.measures import ATTRIBUTE_GROUPS, ATTRIBUTES, Moments, attribute_features, feature_metric
from ..face3d.morphable import N_COEFFS, SLICES, MorphableModel
from ..face3d.recon_training import attribute_scale

LOSS_NAMES = ("pdc", "vdc", "wpdc", "feature", "official")
FEATURE_TERMS = ATTRIBUTES + ("trans",)
OBSERVATION_PARTS = ("vertices", "albedo", "light")
OFFICIAL_HALF = 128          # parameters the official code re-weights per step
OFFICIAL_FACTOR = 10000.0    # the official code's multiplier of the normalised vertex/colour difference


# ------------------------------------------------------------------------------------------------ PDC
def pdc_loss(pred: torch.Tensor, target: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Parameter distance cost: ``mean ((pred - target) / scale)^2`` over the batch and the 257 coefficients;
    ``scale`` [257] (> 0) in coefficient units. Scalar, in squared scale units."""
    return ((pred - target) / scale).square().mean()


# ------------------------------------------------------------------------------------------------ VDC
def posed_vertices(model: MorphableModel, coeffs: torch.Tensor) -> torch.Tensor:
    """Posed vertices ``R(angles) (mean + id_base id + exp_base exp) + trans`` [B, N, 3], dm (no camera)."""
    c = coeffs.to(model.mean_shape.dtype)
    shape = model.compute_shape(c[:, SLICES["id"]], c[:, SLICES["exp"]])
    return shape @ rotation_matrix(c[:, SLICES["angle"]]).transpose(1, 2) + c[:, None, SLICES["trans"]]


def vdc_loss(model: MorphableModel, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Vertex distance cost (3DDFA): mean over the batch and the N vertices of ``|V(pred) - V(target)|^2``, dm^2,
    with V the posed vertices (:func:`posed_vertices`). Scalar."""
    return (posed_vertices(model, pred) - posed_vertices(model, target)).square().sum(-1).mean()


# ------------------------------------------------------------------------------------------------ WPDC
@torch.no_grad()
def observation_scale(model: MorphableModel, coeffs: torch.Tensor, n: int = 2000, chunk: int = 250
                      ) -> torch.Tensor:
    """(s_V, s_A, s_L) [3]: the RMS over entries of the per-entry std, over the first ``n`` label rows, of the
    posed vertex coordinates (dm), the albedo colour and the light's irradiance features (RGB 0-1): the units
    that make the three parts of WPDC's observation comparable. Raises ``ValueError`` for fewer than 2 rows."""
    c = coeffs[:n].to(model.mean_shape)
    if len(c) < 2:
        raise ValueError(f"observation_scale: need at least 2 coefficient rows, found {len(c)}")
    fns = (lambda x: posed_vertices(model, x).flatten(1), lambda x: attribute_features(model, x, "albedo"),
           lambda x: attribute_features(model, x, "light"))
    out = []
    for fn in fns:
        acc = Moments("observation_scale")
        for i in range(0, len(c), chunk):
            acc.update(fn(c[i:i + chunk]))
        out.append(math.sqrt(max(float(acc.variance(ddof=1).mean()), 1e-24)))
    return torch.tensor(out, dtype=torch.float64)


def observation_columns(model: MorphableModel) -> torch.Tensor:
    """Norm of the change of each part of WPDC's observation for a unit change of each coefficient: [257] in the
    parts' own units (dm for id, exp, trans; RGB for tex, gamma; 0 for the angles, which are not linear). id and
    exp: the basis columns' norms over the 3N vertex coordinates; trans: sqrt(N); tex: the texture basis columns'
    norms / 255; gamma: the norm of the irradiance features' change per unit (the features are affine in
    gamma)."""
    dtype = model.mean_shape.dtype
    cols = torch.zeros(N_COEFFS, dtype=dtype, device=model.mean_shape.device)
    cols[SLICES["id"].start:SLICES["exp"].stop] = model.shape_base.norm(dim=0)
    cols[SLICES["trans"]] = math.sqrt(model.n_vertices)
    cols[SLICES["tex"]] = model.tex_base.norm(dim=0) / 255.0
    g = SLICES["gamma"]
    probe = model.zeros(g.stop - g.start + 1)
    probe[1:, g] = torch.eye(g.stop - g.start, dtype=dtype, device=probe.device)
    light = attribute_features(model, probe, "light")
    cols[g] = (light[1:] - light[:1]).norm(dim=1)
    return cols


@torch.no_grad()
def wpdc_distances(model: MorphableModel, pred: torch.Tensor, target: torch.Tensor,
                   obs_scale: torch.Tensor | None = None, columns: torch.Tensor | None = None) -> torch.Tensor:
    """d_i [B, 257] of the module docstring: how far WPDC's observation moves when the label's i-th coefficient
    is replaced by the prediction's. ``obs_scale`` (s_V, s_A, s_L) [3] (default 1, 1, 1); ``columns`` the cached
    :func:`observation_columns`. The trans and angle entries of d come from the vertices part, tex from the
    albedo part, gamma from the light part."""
    dtype = model.mean_shape.dtype
    p, g = pred.detach().to(dtype), target.detach().to(dtype)
    s = torch.ones(3, dtype=dtype) if obs_scale is None else torch.as_tensor(obs_scale, dtype=dtype)
    s = s.to(p.device)
    cols = observation_columns(model) if columns is None else columns.to(p)
    part = torch.empty(N_COEFFS, dtype=dtype, device=p.device)
    part[:] = s[0]
    part[SLICES["tex"]] = s[1]
    part[SLICES["gamma"]] = s[2]
    d = (p - g).abs() * cols / part
    # angles: R' S - R S for the label's canonical shape S, one angle at a time
    a = SLICES["angle"]
    shape = model.compute_shape(g[:, SLICES["id"]], g[:, SLICES["exp"]])           # [B, N, 3]
    rot = rotation_matrix(g[:, a])
    for k in range(3):
        angles = g[:, a].clone()
        angles[:, k] = p[:, a.start + k]
        diff = shape @ (rotation_matrix(angles) - rot).transpose(1, 2)
        d[:, a.start + k] = diff.flatten(1).norm(dim=1) / s[0]
    return d


def wpdc_weights(model: MorphableModel, pred: torch.Tensor, target: torch.Tensor,
                 obs_scale: torch.Tensor | None = None, columns: torch.Tensor | None = None,
                 eps: float = 1e-12) -> torch.Tensor:
    """3DDFA's weights [B, 257] (detached): ``w_i = P d_i / sum_j d_j`` (:func:`wpdc_distances`); all ones for a
    sample whose prediction equals its label."""
    d = wpdc_distances(model, pred, target, obs_scale, columns)
    total = d.sum(1, keepdim=True)
    return torch.where(total > eps, N_COEFFS * d / total.clamp_min(eps), torch.ones_like(d)).to(pred.dtype)


def wpdc_loss(model: MorphableModel, pred: torch.Tensor, target: torch.Tensor, scale: torch.Tensor,
              obs_scale: torch.Tensor | None = None, columns: torch.Tensor | None = None) -> torch.Tensor:
    """3DDFA's weighted parameter distance cost ``mean_i w_i ((pred_i - target_i) / scale_i)^2`` (batch mean);
    see the module docstring for w."""
    w = wpdc_weights(model, pred, target, obs_scale, columns)
    return (w * ((pred - target) / scale).square()).mean()


# ------------------------------------------------------------------------------------------------ official variant
def official_wpdc_loss(model: MorphableModel, pred: torch.Tensor, target: torch.Tensor, scale: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """The official CDDFM3D code's random-half "WPDC" (module docstring); the half is drawn with ``generator``
    (CPU). Scalar."""
    half = torch.randperm(N_COEFFS, generator=generator)[:OFFICIAL_HALF].to(pred.device)
    copy = target.detach().clone()
    copy[:, half] = pred.detach()[:, half].to(copy.dtype)
    with torch.no_grad():
        a, b = model(copy.to(model.mean_shape), check=False), model(target.to(model.mean_shape), check=False)
        d = (a.vertices - b.vertices).square() + (a.colors - b.colors).square()
        norm = d.norm()
        w = (d / norm).mean() * OFFICIAL_FACTOR if norm > 0 else d.new_zeros(())
    weight = torch.ones(N_COEFFS, dtype=pred.dtype, device=pred.device)
    weight[half] = w.to(pred.dtype)
    return (weight * ((pred - target) / scale).square()).mean()


# ------------------------------------------------------------------------------------------------ features
@torch.no_grad()
def feature_scale(model: MorphableModel, coeffs: torch.Tensor, n: int = 2000) -> torch.Tensor:
    """Per-sample total variance [6] of each feature term (:data:`FEATURE_TERMS`: the five attributes, then the
    translation in dm) over the first ``n`` label rows; the denominators of :func:`feature_terms`."""
    c = coeffs[:n].to(model.mean_shape)
    t = c[:, SLICES["trans"]].double()
    trans = float((t - t.mean(0)).square().sum(1).mean()) if len(c) > 1 else 0.0
    return torch.cat([attribute_scale(model, c, n), torch.tensor([max(trans, 1e-12)])]).double()


def feature_metrics(model: MorphableModel) -> dict[str, torch.Tensor]:
    """``{attribute: M [k, k] float64}`` of :func:`~cddfm3d.face3d.measures.feature_metric` for the five
    attributes: what :func:`feature_terms` needs to compute the squared feature distances as quadratic forms."""
    return {a: feature_metric(model, a) for a in ATTRIBUTES}


def feature_terms(model: MorphableModel, pred: torch.Tensor, target: torch.Tensor, scale: torch.Tensor,
                  metrics: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """``{term: mean over the batch of |f(pred) - f(target)|^2 / scale[term]}`` for each of :data:`FEATURE_TERMS`
    (``scale`` from :func:`feature_scale`): batch estimates of 1 - explained variance.

    With ``metrics`` (:func:`feature_metrics` of ``model``) each squared distance is computed as
    ``|(pred_g - target_g) @ M|^2`` on the attribute's k coefficients, equal to the distance of the full features
    (tests/test_editing_predictor.py checks it in float64) at a fraction of the cost (shape: 80 instead of 21606
    entries per sample); without them, on the full features of
    :func:`~cddfm3d.face3d.measures.attribute_features`."""
    out = {}
    for i, name in enumerate(FEATURE_TERMS):
        if name == "trans":
            d = pred[:, SLICES["trans"]] - target[:, SLICES["trans"]]
        elif metrics is not None:
            group = SLICES[ATTRIBUTE_GROUPS[name]]
            d = (pred[:, group] - target[:, group]) @ metrics[name].to(pred)
        else:
            p, g = pred.to(model.mean_shape.dtype), target.to(model.mean_shape.dtype)
            d = attribute_features(model, p, name) - attribute_features(model, g, name)
        out[name] = (d.square().sum(1).mean() / scale[i]).to(pred.dtype)
    return out


# ------------------------------------------------------------------------------------------------ combined
@dataclass
class TLossConfig:
    """Weights of the losses (names from :data:`LOSS_NAMES`), e.g. ``{"feature": 1.0, "pdc": 0.1}``."""

    weights: dict = field(default_factory=lambda: {"feature": 1.0, "pdc": 0.1})

    def __post_init__(self):
        check_loss_weights(self.weights)


def check_loss_weights(weights) -> dict:
    """Validate ``{name: weight}``: names in :data:`LOSS_NAMES`, finite weights >= 0, at least one > 0.
    Raises ``ValueError`` naming what is wrong."""
    if not isinstance(weights, dict) or not weights:
        raise ValueError(f"T losses: expected a non-empty {{name: weight}} with names from {LOSS_NAMES}, found "
                         f"{weights!r}")
    for k, w in weights.items():
        if k not in LOSS_NAMES:
            raise ValueError(f"T losses: unknown loss {k!r}; expected one of {LOSS_NAMES}")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"T losses: weight of {k!r} must be a finite number >= 0, found {w!r}")
    if not any(w > 0 for w in weights.values()):
        raise ValueError(f"T losses: at least one weight must be > 0, found {weights}")
    return weights


class TLoss(nn.Module):
    """The weighted sum of the selected losses; ``loss(pred, target, generator)`` -> ``{"total": scalar, <each
    term>: scalar}`` (terms: ``pdc``, ``vdc``, ``wpdc``, ``official``, ``feature`` and its parts
    ``feature_<term>``).

    Args:
        model: the :class:`MorphableModel` of the labels.
        scale: σ [257], the parameter losses' unit (T's ``coeff_scale``).
        weights: ``{name: weight}``.
        stats: the label statistics the selected losses need, ``TLoss.label_stats(model, coeffs, weights)``:
            ``vertex_var`` (VDC: per-vertex total variance of the posed vertices, dm^2), ``obs_scale`` [3]
            (WPDC) and ``feature_scale`` [6] (feature).

    Raises ``ValueError`` for bad weights or a missing statistic.
    """

    NEEDS = {"vdc": "vertex_var", "wpdc": "obs_scale", "feature": "feature_scale"}

    def __init__(self, model: MorphableModel, scale: torch.Tensor, weights: dict, stats: dict | None = None):
        super().__init__()
        check_loss_weights(weights)
        self.__dict__["model"] = model   # used, not owned: TLoss.to() must not move a shared model
        self.weights = {k: float(w) for k, w in weights.items() if w > 0}
        self.register_buffer("scale", torch.as_tensor(scale).float().clone())
        stats = stats or {}
        for name in self.weights:
            key = self.NEEDS.get(name)
            if key is not None and key not in stats:
                raise ValueError(f"TLoss: loss {name!r} needs the label statistic {key!r} "
                                 f"(TLoss.label_stats(model, coeffs, weights)); found {sorted(stats)}")
        for key in set(self.NEEDS.values()) & set(stats):
            self.register_buffer(key, torch.as_tensor(stats[key]).double().clone())
        if "wpdc" in self.weights:
            self.register_buffer("columns", observation_columns(model).detach().clone())
        if "feature" in self.weights:   # quadratic forms of the feature distances, one buffer per attribute
            for a, m in feature_metrics(model).items():
                self.register_buffer(f"metric_{a}", m.float())

    @staticmethod
    @torch.no_grad()
    def label_stats(model: MorphableModel, coeffs: torch.Tensor, weights: dict | None = None, n: int = 2000
                    ) -> dict:
        """The label statistics that the losses of ``weights`` (default: all) need, from the first ``n`` rows of
        the training labels (float64)."""
        names = set(LOSS_NAMES if weights is None else [k for k, w in weights.items() if w > 0])
        out = {}
        if names & {"vdc", "wpdc"}:
            obs = observation_scale(model, coeffs, n)
            out["obs_scale"] = obs
            out["vertex_var"] = 3 * obs[0] ** 2   # 3 coordinates times the mean per-coordinate variance
        if "feature" in names:
            out["feature_scale"] = feature_scale(model, coeffs, n)
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None = None
                ) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        total = pred.new_zeros(())
        for name, w in self.weights.items():
            if name == "pdc":
                value = pdc_loss(pred, target, self.scale)
            elif name == "vdc":   # per-vertex squared distance over the per-vertex variance: 1 - EV estimate
                value = (vdc_loss(self.model, pred, target) / self.vertex_var).to(pred.dtype)
            elif name == "wpdc":
                value = wpdc_loss(self.model, pred, target, self.scale, self.obs_scale, self.columns)
            elif name == "official":
                value = official_wpdc_loss(self.model, pred, target, self.scale, generator)
            else:
                metrics = {a: getattr(self, f"metric_{a}") for a in ATTRIBUTES}   # (buffers follow .to())
                parts = feature_terms(self.model, pred, target, self.feature_scale, metrics)
                terms.update({f"feature_{k}": v for k, v in parts.items()})
                value = torch.stack(list(parts.values())).mean()
            terms[name] = value
            total = total + w * value
        return {"total": total, **terms}


__all__ = ["LOSS_NAMES", "FEATURE_TERMS", "pdc_loss", "posed_vertices", "vdc_loss", "observation_scale",
           "observation_columns", "wpdc_distances", "wpdc_weights", "wpdc_loss", "official_wpdc_loss",
           "feature_scale", "feature_metrics", "feature_terms", "TLossConfig", "check_loss_weights", "TLoss"]
