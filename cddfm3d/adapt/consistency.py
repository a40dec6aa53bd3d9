"""Latent consistency of a fine-tuned generator, measured on images (issue 12 §2).

The paper's claim: with the mapping network and the affines frozen, a latent draws "the same face" in the human
generator and in the domain generator, only in another style. In the mini world this is measurable: for fresh
latents z, the human image ``G_human(z)`` is read by the human reconstruction network and the domain image
``G_domain(z)`` (the same z through the domain generator's own mapping and affines, the same noise) by the domain's
reconstruction network, and the two readings are compared per attribute in the spaces of
:mod:`cddfm3d.face3d.measures` (vertex offsets for shape and expression, colours for albedo, irradiance for light,
degrees for pose):

* ``ev``: explained variance of the domain reading by the human reading (1 = the same attribute values; 0 = no
  better than the average face; negative = worse);
* ``distance``: the mean distance between the two readings, and ``relative_distance`` = that over the mean
  distance between the human readings of two unrelated latents (0 = same face, 1 = as far as a random other face);
* ``ev_centred``: the explained variance after removing each side's mean (a constant shift of the style, e.g.
  toons drawn a little turned or a darker shading on average, is not an inconsistency of the latent);
* ``correlation``: the pooled correlation of the centred features, sum(a_c * b_c) / sqrt(sum a_c^2 sum b_c^2) over
  samples and entries (scale-free: 1 = the same variation up to a scale, 0 = unrelated). EV and distance are strict
  (any offset or scale counts); correlation shows whether the latent still carries the attribute at all.

Two reference rows put the numbers in scale: ``noise_ceiling`` (the human generator against itself with other
noise, read by the human network: how consistent two images of one latent can be at all) and the readings' own
spread. A fine-tuning that trains everything changes ``w -> s``, which :func:`latent_consistency` reports
(``w_to_s_identical``) beside the image measures.
"""
from __future__ import annotations

import torch

from ..editing.labels import label_images
from ..editing.pairs import noise_for
from ..face3d.measures import ATTRIBUTES, attribute_distance, attribute_features, explained_variance
from ..images import to_uint8
from .finetuning import latent_inconsistency


def _readings(G, net, model, z: torch.Tensor, noise_seeds, batch: int) -> torch.Tensor:
    out = []
    dev = G.w_avg.device
    for i in range(0, len(z), batch):
        ws = G.mapping(z[i:i + batch].to(dev)).unsqueeze(1).repeat(1, G.num_ws, 1)
        img = G.synthesis(ws, noise=noise_for(G, noise_seeds[i:i + batch], dev))
        coeffs, _ = label_images(net, to_uint8(img).to(next(net.parameters()).device), model)
        out.append(coeffs.double().cpu())
    return torch.cat(out)


def compare_readings(model, reference: torch.Tensor, other: torch.Tensor, shuffle_seed: int = 0) -> dict:
    """Per attribute: ``ev`` of ``other`` [N, 257] by ``reference`` [N, 257] (features of ``model``),
    ``ev_centred`` and ``correlation`` (module docstring), ``distance`` (mean attribute distance),
    ``random_pair_distance`` (mean distance between reference rows paired by a seeded derangement) and
    ``relative_distance`` (their ratio). Raises ``ValueError`` for N < 2 or shapes that differ."""
    from ..editing.evaluation import derangement

    if reference.shape != other.shape or reference.ndim != 2 or reference.shape[0] < 2:
        raise ValueError(f"compare_readings: expected two [N >= 2, 257] tensors of one shape, found "
                         f"{tuple(reference.shape)} and {tuple(other.shape)}")
    mm = model  # used as given (never .to(): the caller's instance may be shared); sums run in float64
    perm = derangement(reference.shape[0], shuffle_seed)
    ref, oth = reference.double().to(mm.mean_shape.device), other.double().to(mm.mean_shape.device)
    result = {}
    for a in ATTRIBUTES:
        f_o, f_r = attribute_features(mm, oth, a).double(), attribute_features(mm, ref, a).double()
        ev = explained_variance(f_o, f_r)
        c_o, c_r = f_o - f_o.mean(0), f_r - f_r.mean(0)
        ev_c = explained_variance(c_o, c_r)
        den = float((c_o.square().sum() * c_r.square().sum()).sqrt())
        dist = float(attribute_distance(mm, ref, oth, a).mean())
        rand = float(attribute_distance(mm, ref, ref[perm], a).mean())
        result[a] = {"ev": ev, "ev_centred": ev_c, "correlation": float((c_o * c_r).sum()) / den if den > 0
                     else float("nan"), "distance": dist, "random_pair_distance": rand,
                     "relative_distance": dist / rand if rand > 0 else float("nan")}
    return result


@torch.no_grad()
def latent_consistency(G_human, G_domain, net_human, net_domain, model, n: int = 1000, seed: int = 0,
                       batch: int = 100) -> dict:
    """How far the same latent draws the same face in ``G_human`` and ``G_domain`` (module docstring).

    Args:
        G_human, G_domain: generators of one architecture (eval mode); z ~ N(0, I) of ``n`` samples from a CPU
            generator seeded with ``seed``, mapped by each generator's own mapping (no truncation); noise from
            :func:`cddfm3d.editing.pairs.noise_for` with seeds ``seed * n + i`` (the same for both).
        net_human, net_domain: the reconstruction networks that read each domain (``net(images) -> [B, 257]``).
        model: the morphable model of their coefficients (MiniFace in the mini world).

    Returns ``{"n", "seed", "w_to_s_identical", "w_to_s_changed" (tensor names), "consistency": {attribute:
    compare_readings row}, "noise_ceiling": {attribute: row}}``. Raises ``ValueError`` for n < 2 or
    generators of different architectures."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"latent_consistency: n must be an int >= 2, found {n!r}")
    changed = latent_inconsistency(G_human, G_domain)
    z = torch.randn(n, G_human.z_dim, generator=torch.Generator().manual_seed(int(seed)))
    seeds = [int(seed) * n + i for i in range(n)]
    other_seeds = [s + 10 ** 9 for s in seeds]
    human = _readings(G_human, net_human, model, z, seeds, batch)
    domain = _readings(G_domain, net_domain, model, z, seeds, batch)
    human_again = _readings(G_human, net_human, model, z, other_seeds, batch)
    return {"n": n, "seed": int(seed), "w_to_s_identical": not changed, "w_to_s_changed": changed,
            "consistency": compare_readings(model, human, domain, seed),
            "noise_ceiling": compare_readings(model, human, human_again, seed)}


def _cell(row: dict) -> str:
    return f"{row['ev']:.3f} / {row['correlation']:.3f} / {row['relative_distance']:.3f}"


def consistency_table(results: dict[str, dict]) -> str:
    """A markdown table of several :func:`latent_consistency` results (``{row name: result}``): whether ``w -> s`` is
    shared, then per attribute the explained variance, the correlation and the relative distance; the human
    generator's noise ceiling as the last row."""
    head = "| generator | w -> s shared | " + " | ".join(f"{a}: EV / corr. / rel. dist." for a in ATTRIBUTES) + " |"
    rows = [head, "|" + "---|" * (len(ATTRIBUTES) + 2)]
    ceiling = None
    for name, r in results.items():
        cells = [_cell(r["consistency"][a]) for a in ATTRIBUTES]
        rows.append(f"| {name} | {'yes' if r['w_to_s_identical'] else 'no'} | " + " | ".join(cells) + " |")
        ceiling = ceiling or r["noise_ceiling"]
    if ceiling is not None:
        cells = [_cell(ceiling[a]) for a in ATTRIBUTES]
        rows.append("| human vs itself, other noise (ceiling) | yes | " + " | ".join(cells) + " |")
    return "\n".join(rows)


__all__ = ["latent_consistency", "compare_readings", "consistency_table"]
