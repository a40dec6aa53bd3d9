"""Deep3DFaceRecon's losses and weights (reference face3d.md §2.11), as pure functions.

Every function works in the dtype of its inputs (float64 for exact checks), never mutates its inputs, and
reduces over the **whole batch** the way Deep3D does (so a batch loss is not the mean of per-image losses
where Deep3D normalises by a batch-wide count).

Weights (``DEEP3D_WEIGHTS``): color 1.92, lm 1.6e-3, reg 3e-4, gamma 10, reflc 5, feat 0.2; inside ``reg``
the groups are weighted id 1.0, exp 0.8, tex 1.7e-2. The landmark loss is in pixel units of a 224 px image;
at other sizes scale the landmarks by 224 / size first so that the weights keep their meaning.
"""
from __future__ import annotations


import torch

from .morphable import SLICES

DEEP3D_WEIGHTS = {"color": 1.92, "lm": 1.6e-3, "reg": 3e-4, "gamma": 10.0, "reflc": 5.0, "feat": 0.2}
REG_WEIGHTS = {"id": 1.0, "exp": 0.8, "tex": 1.7e-2}
LANDMARK_HIGH_WEIGHT = 20.0
LANDMARK_HIGH_IDS = (28, 29, 30) + tuple(range(60, 68))  # lower nose bridge + tip, inner lips (0-based)
PHOTO_EPS = 1e-6


def landmark_weights(dtype=torch.float32, device=None) -> torch.Tensor:
    """Deep3D's per-landmark weights [68]: 20 at 0-based ids 28-30 and 60-67, else 1."""
    w = torch.ones(68, dtype=dtype, device=device)
    w[list(LANDMARK_HIGH_IDS)] = LANDMARK_HIGH_WEIGHT
    return w


def photometric_loss(rendered: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                     skin_mask: torch.Tensor | None = None, eps: float = PHOTO_EPS) -> torch.Tensor:
    """Masked per-pixel L2 colour distance (Deep3D ``photo_loss``)::

        M = mask.detach() * skin_mask                      (skin_mask defaults to 1)
        L = sum_{b,h,w} sqrt(eps + sum_c (rendered - target)^2) * M / max(sum M, 1)

    rendered, target: [B, C, H, W]; mask, skin_mask: [B, 1, H, W] (or broadcastable), values in [0, 1].
    The render mask is detached as in Deep3D: the loss moves colours and interior geometry, not coverage.
    """
    if rendered.shape != target.shape or rendered.ndim != 4:
        raise ValueError(f"photometric_loss: rendered and target must both be [B, C, H, W], found "
                         f"{tuple(rendered.shape)} and {tuple(target.shape)}")
    m = mask.detach().to(rendered.dtype)
    if skin_mask is not None:
        m = m * skin_mask.detach().to(rendered.dtype)
    m = m.expand(rendered.shape[0], 1, *rendered.shape[2:])
    dist = torch.sqrt(eps + ((rendered - target) ** 2).sum(1, keepdim=True))
    return (dist * m).sum() / m.sum().clamp_min(1.0)


def landmark_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted squared landmark distance (Deep3D ``landmark_loss``)::

        L = sum_{b,k} w_k * ||pred_bk - target_bk||^2 / (B * K)

    pred, target: [B, K, 2] pixels (K = 68 for the default weights, see :func:`landmark_weights`).
    """
    if pred.shape != target.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"landmark_loss: pred and target must both be [B, K, 2], found {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    if weights is None:
        if pred.shape[1] != 68:
            raise ValueError(f"landmark_loss: default weights need 68 landmarks, found {pred.shape[1]}; pass weights")
        weights = landmark_weights(pred.dtype, pred.device)
    weights = weights.to(pred.dtype)
    if weights.shape[-1] != pred.shape[1]:
        raise ValueError(f"landmark_loss: weights must have {pred.shape[1]} entries, found {tuple(weights.shape)}")
    d2 = ((pred - target) ** 2).sum(-1)
    return (d2 * weights).sum() / (pred.shape[0] * pred.shape[1])


def _coeff_groups(coeffs_or_groups) -> dict:
    if isinstance(coeffs_or_groups, dict):
        return coeffs_or_groups
    c = coeffs_or_groups
    if not isinstance(c, torch.Tensor) or c.ndim != 2 or c.shape[1] != 257:
        raise ValueError(f"expected coefficients [B, 257] or a dict of groups, found "
                         f"{tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__}")
    return {k: c[:, s] for k, s in SLICES.items()}


def coeff_reg_loss(coeffs, w_id: float = REG_WEIGHTS["id"], w_exp: float = REG_WEIGHTS["exp"],
                   w_tex: float = REG_WEIGHTS["tex"]) -> torch.Tensor:
    """Coefficient regularisation (Deep3D ``reg_loss``, first term)::

        L = (w_id ||id||^2 + w_exp ||exp||^2 + w_tex ||tex||^2) summed over the batch / B

    ``coeffs``: [B, 257] or a dict with 'id', 'exp', 'tex' ([B, n] each).
    """
    g = _coeff_groups(coeffs)
    b = g["id"].shape[0]
    return (w_id * (g["id"] ** 2).sum() + w_exp * (g["exp"] ** 2).sum() + w_tex * (g["tex"] ** 2).sum()) / b


def gamma_loss(coeffs) -> torch.Tensor:
    """Lighting regularisation toward monochrome light (Deep3D ``reg_loss``, second term)::

        g = gamma.reshape(B, 3, 9);  L = mean_{b,c,k} (g_bck - mean_c g_bck)^2

    ``coeffs``: [B, 257], a dict with 'gamma', or gamma itself [B, 27] (colour-major).
    """
    if isinstance(coeffs, torch.Tensor) and coeffs.ndim == 2 and coeffs.shape[1] == 27:
        gamma = coeffs
    else:
        gamma = _coeff_groups(coeffs)["gamma"]
    g = gamma.reshape(-1, 3, 9)
    return ((g - g.mean(1, keepdim=True)) ** 2).mean()


def reflectance_loss(albedo: torch.Tensor, skin_mask: torch.Tensor) -> torch.Tensor:
    """Albedo variance over the skin region (Deep3D ``reflectance_loss``)::

        mu_bc = sum_n m_n T_bnc / sum_n m_n
        L = sum_{b,n,c} (m_n (T_bnc - mu_bc))^2 / (B * sum_n m_n)

    albedo T: [B, N, 3] in [0, 1]; skin_mask m: [N] (bool or 0/1).
    """
    if albedo.ndim != 3 or albedo.shape[-1] != 3:
        raise ValueError(f"reflectance_loss: albedo must be [B, N, 3], found {tuple(albedo.shape)}")
    if skin_mask.shape != (albedo.shape[1],):
        raise ValueError(f"reflectance_loss: skin_mask must be [N={albedo.shape[1]}], found {tuple(skin_mask.shape)}")
    m = skin_mask.to(albedo.dtype).reshape(1, -1, 1)
    total = m.sum()
    mean = (albedo * m).sum(1, keepdim=True) / total
    return (((albedo - mean) * m) ** 2).sum() / (albedo.shape[0] * total)


def identity_loss(feat_a: torch.Tensor, feat_b: torch.Tensor) -> torch.Tensor:
    """Perceptual identity loss (Deep3D ``perceptual_loss``): mean over the batch of 1 - cos(feat_a, feat_b).

    Features [B, D] from a face-recognition network (ArcFace in Deep3D; the crops are the caller's job).
    """
    if feat_a.shape != feat_b.shape or feat_a.ndim != 2:
        raise ValueError(f"identity_loss: features must both be [B, D], found {tuple(feat_a.shape)} and "
                         f"{tuple(feat_b.shape)}")
    a = torch.nn.functional.normalize(feat_a, dim=-1)
    b = torch.nn.functional.normalize(feat_b, dim=-1)
    return (1.0 - (a * b).sum(-1)).mean()
