"""The paper's layer-selection procedure (``cddfm3d_method.md`` section 4): train a StyleRig-style mapping over the
full StyleSpace for one attribute, then perturb only that attribute's coefficients and see which layers move.

1. **Mapping** (:func:`train_rig`): a :class:`~cddfm3d.editing.manipulator.StyleManipulator` over every style layer,
   s_g = s + F(s, dP^i), trained through a frozen, differentiable attribute predictor T (any callable
   s [B, D] -> P [B, 257]) on random pairs of faces (s, v) from a pool of styles, with target P_t^i = T(v)^i (the
   official pairing: the attribute of another random face). With sigma_P the per-coefficient std of T over the
   pool, the loss is the weighted sum of

   * ``edit``: mean over the attribute's coefficients of ((T(s_g) - T(v)) / sigma_P)^2 -- the edit reaches the
     target;
   * ``keep``: the same over the other four attributes' coefficients against T(s) -- nothing else changes;
   * ``rec``: mean of (F(s, 0) / sigma_s)^2 -- no change asked, no change made (dP = 0 => ds = 0);
   * ``l2``: mean of (ds / sigma_s)^2 -- the smallest edit that does it. Without it, layers that T ignores would
     keep whatever offset the optimisation leaves there and look "responsive"; with it (and the zero-initialised
     output layer) they stay at 0.

2. **Response** (:func:`rig_layer_response`): on fresh random pairs, perturb only P^i (dP^i = T(v)^i - T(s)^i) and
   measure per layer l the RMS over channels of (F(s, dP) - F(s, 0))_l / sigma_l (style std per channel), averaged
   over faces: stds per channel, so layers of different widths compare.

:func:`rig_response` runs both for every attribute and returns a
:class:`~cddfm3d.stylespace.response.LayerResponse` whose matrix feeds :func:`~cddfm3d.stylespace.selection.
select_layers` like the reconstruction-based one.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from ..progress import progress_bar

from ..editing.manipulator import StyleManipulator
from ..face3d.measures import ATTRIBUTE_GROUPS, ATTRIBUTES
from ..face3d.morphable import SLICES
from .response import LayerResponse

Predictor = Callable[[torch.Tensor], torch.Tensor]
STD_FLOOR = 1e-6


@dataclass
class RigConfig:
    """Training settings of :func:`train_rig` (Adam, constant learning rate)."""

    steps: int = 400
    batch_size: int = 64
    lr: float = 1e-3
    code_dim: int = 32
    activation: str | None = "elu"
    weight_edit: float = 1.0
    weight_keep: float = 1.0
    weight_rec: float = 1.0
    weight_l2: float = 0.01
    seed: int = 0

    def check(self) -> RigConfig:
        for name in ("steps", "batch_size", "code_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"RigConfig.{name} must be an int >= 1, found {v!r}")
        if not self.lr > 0:
            raise ValueError(f"RigConfig.lr must be > 0, found {self.lr!r}")
        for name in ("weight_edit", "weight_keep", "weight_rec", "weight_l2"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"RigConfig.{name} must be >= 0, found {getattr(self, name)!r}")
        return self


def _slice(attribute: str) -> slice:
    if attribute not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {attribute!r}; expected one of {ATTRIBUTES}")
    return SLICES[ATTRIBUTE_GROUPS[attribute]]


def _other_index(attribute: str) -> torch.Tensor:
    return torch.cat([torch.arange(257)[_slice(a)] for a in ATTRIBUTES if a != attribute])


def _check_pool(styles: torch.Tensor, layer_channels: Sequence[int], who: str) -> None:
    D = sum(int(c) for c in layer_channels)
    if not isinstance(styles, torch.Tensor) or styles.ndim != 2 or styles.shape[1] != D or styles.shape[0] < 2:
        found = tuple(styles.shape) if isinstance(styles, torch.Tensor) else type(styles).__name__
        raise ValueError(f"{who}: styles must be a tensor [N >= 2, {D}] (flat styles of the layer table), "
                         f"found {found}")


@torch.no_grad()
def predict_all(T: Predictor, styles: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """T over a pool of flat styles [N, D] in batches -> [N, 257] (no gradients)."""
    out = [T(styles[i:i + batch_size]) for i in range(0, len(styles), batch_size)]
    P = torch.cat(out)
    if P.ndim != 2 or P.shape != (len(styles), 257):
        raise ValueError(f"T must return [B, 257] coefficients, found {tuple(out[0].shape)} for a batch")
    return P


@dataclass
class RigResult:
    """A trained mapping and its training record: ``net``; ``history`` (per-step losses, every 10th step);
    ``p_scale`` [257] (sigma_P); ``style_std`` [D]; ``config``."""

    net: StyleManipulator
    history: list[dict]
    p_scale: torch.Tensor
    style_std: torch.Tensor
    config: RigConfig


def train_rig(T: Predictor, styles: torch.Tensor, layer_channels: Sequence[int], attribute: str,
              config: RigConfig | None = None, style_std: torch.Tensor | None = None, progress: bool = False
              ) -> RigResult:
    """Train the mapping of step 1 (module docstring) for ``attribute`` on the pool ``styles`` [N, D].

    Args:
        T: frozen differentiable predictor, flat styles [B, D] -> [B, 257]; never modified (gradients flow through
            it to the styles only).
        styles: pool of flat styles (e.g. ``G.flatten_styles(...)`` of random faces), on T's device.
        layer_channels: channels of every style layer (``[m.channels for m in G.style_layers]``).
        attribute: one of :data:`ATTRIBUTES`.
        config: :class:`RigConfig`.
        style_std: per-channel std [D] (default: the pool's, floored at 1e-6).

    Raises:
        ValueError: unknown attribute, a pool that does not match ``layer_channels``, T's output not [B, 257], a
            bad config.
    """
    who = "train_rig"
    cfg = (config or RigConfig()).check()
    sl = _slice(attribute)
    _check_pool(styles, layer_channels, who)
    dev = styles.device
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)   # the network's initialisation
    P_all = predict_all(T, styles)
    p_scale = P_all.std(0)
    p_scale = p_scale.clamp_min(1e-3 * float(p_scale.max()) + 1e-12)
    std = styles.std(0).clamp_min(STD_FLOOR) if style_std is None else style_std.to(dev).float()
    net = StyleManipulator(layer_channels, range(len(layer_channels)), sl.stop - sl.start,
                           style_mean=styles.mean(0), style_std=std, p_scale=p_scale[sl], code_dim=cfg.code_dim,
                           activation=cfg.activation).to(dev)
    other = _other_index(attribute).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    params = list(net.parameters())
    history = []
    N = len(styles)
    for step in progress_bar(range(cfg.steps), desc=f"rig {attribute}", unit="step", enabled=progress):
        i = torch.randint(N, (cfg.batch_size,), generator=gen).to(dev)
        j = torch.randint(N, (cfg.batch_size,), generator=gen).to(dev)
        s, Ps, Pt = styles[i], P_all[i], P_all[j]
        dp = (Pt - Ps)[:, sl]
        ds = net(s, dp)
        Pg = T(s + ds)
        edit = ((Pg - Pt)[:, sl] / p_scale[sl]).square().mean()
        keep = ((Pg - Ps)[:, other] / p_scale[other]).square().mean()
        rec = (net(s, torch.zeros_like(dp)) / std).square().mean()
        l2 = (ds / std).square().mean()
        loss = cfg.weight_edit * edit + cfg.weight_keep * keep + cfg.weight_rec * rec + cfg.weight_l2 * l2
        grads = torch.autograd.grad(loss, params)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 10 == 0 or step == cfg.steps - 1:
            terms = {"loss": loss, "edit": edit, "keep": keep, "rec": rec, "l2": l2}
            history.append({"step": step} | {k: float(v.detach()) for k, v in terms.items()})
    net.eval().requires_grad_(False)
    return RigResult(net, history, p_scale, std, cfg)


@torch.no_grad()
def rig_layer_response(result: RigResult, T: Predictor, styles: torch.Tensor, attribute: str, n: int = 256,
                       seed: int = 0) -> dict:
    """Step 2 (module docstring) for a trained mapping: perturb only P^i on ``n`` random pairs of the pool.

    Returns {"response": [L] float64 (RMS over channels of the offset in style stds, mean over faces),
    "completion": mean over faces of 1 - |T(s_g)^i - P_t^i| / |P_s^i - P_t^i| (in sigma_P units; 1 = target
    reached through T), "leakage": RMS change of the other attributes' coefficients in sigma_P units}."""
    net = result.net
    sl = _slice(attribute)
    _check_pool(styles, net.layer_channels, "rig_layer_response")
    gen = torch.Generator().manual_seed(seed)
    dev = styles.device
    i = torch.randint(len(styles), (n,), generator=gen).to(dev)
    j = torch.randint(len(styles), (n,), generator=gen).to(dev)
    s = styles[i]
    Ps, Pt = predict_all(T, s), predict_all(T, styles[j])
    dp = (Pt - Ps)[:, sl]
    ds = net(s, dp) - net(s, torch.zeros_like(dp))
    z = (ds / result.style_std).double()
    off = net.offsets
    resp = torch.stack([z[:, off[k]:off[k + 1]].square().mean(1).sqrt().mean() for k in range(len(off) - 1)])
    Pg = predict_all(T, s + net(s, dp))
    sc = result.p_scale.to(dev)
    before = ((Ps - Pt)[:, sl] / sc[sl]).norm(dim=1)
    after = ((Pg - Pt)[:, sl] / sc[sl]).norm(dim=1)
    ok = before > 1e-12
    completion = float((1 - after[ok] / before[ok]).mean()) if bool(ok.any()) else float("nan")
    other = _other_index(attribute).to(dev)
    leakage = float(((Pg - Ps)[:, other] / sc[other]).square().mean().sqrt())
    return {"response": resp.cpu(), "completion": completion, "leakage": leakage}


def rig_response(T: Predictor, styles: torch.Tensor, layer_names: Sequence[str], layer_channels: Sequence[int],
                 attributes: Sequence[str] = ATTRIBUTES, config: RigConfig | None = None, n: int = 256,
                 seed: int = 0, style_std: torch.Tensor | None = None, progress: bool = False) -> LayerResponse:
    """The paper's response matrix [L, 5]: :func:`train_rig` then :func:`rig_layer_response` per attribute.

    ``styles`` [N, D] is the pool both steps draw from (training pairs and the ``n`` evaluation pairs; ``seed``
    of the evaluation pairs; the training seed is ``config.seed``). ``matrix`` is in style stds per channel
    (RMS), ``stderr`` is NaN (not estimated), ``scale`` is empty, and ``settings`` records the config and, per
    attribute, the completion and leakage through T and the final losses."""
    if len(layer_names) != len(layer_channels):
        raise ValueError(f"rig_response: {len(layer_names)} layer names for {len(layer_channels)} layers")
    if tuple(attributes) != ATTRIBUTES:
        raise ValueError(f"rig_response: attributes must be {ATTRIBUTES} (the matrix columns), found {attributes}")
    cfg = (config or RigConfig()).check()
    cols, diag = [], {}
    for a in attributes:
        res = train_rig(T, styles, layer_channels, a, cfg, style_std=style_std, progress=progress)
        out = rig_layer_response(res, T, styles, a, n=n, seed=seed)
        cols.append(out["response"])
        diag[a] = {"completion": out["completion"], "leakage": out["leakage"], "final": res.history[-1]}
    matrix = torch.stack(cols, 1).double()
    settings = {"method": "rig", "n": n, "seed": seed, "pool": len(styles), "config": asdict(cfg),
                "diagnostics": diag, "unit": "style std per channel (RMS over the layer)"}
    return LayerResponse(matrix, torch.full_like(matrix, float("nan")), {}, list(layer_names), ATTRIBUTES, settings)
