"""Cross-domain edits measured against ground truth (issue 12 §4).

Held-out renders of an out-of-domain style come with their true coefficients, so the whole pipeline of
:class:`~cddfm3d.adapt.cross_domain.CrossDomainEditor` can be scored on what a person would see:

* **T on inverted images**: the explained variance (per attribute, in the spaces of
  :mod:`cddfm3d.face3d.measures`) of T(s) of the projection by the true coefficients: how well the human-trained T
  reads an out-of-domain face through the shared latent;
* **inversion**: PSNR of the projection, and the domain network's reading of the projection against the truth
  (what the inversion kept of each attribute);
* **edits** (swap targets, as the editing evaluation: source n gets the attribute of source v = pairing[n], here
  the **true** coefficients of v): the edited domain image is read by the domain's reconstruction network (P_g).
  ``completion`` = 1 - mean d_i(P_g, P_t) / mean d_i(P_r, P_t) with P_r the same network's reading of the
  unedited projection (the edit's own starting point); ``completion_truth`` uses the true source coefficients
  instead (the pipeline as a whole, inversion losses included); ``leakage[j]`` = mean d_j(P_g, P_r) / mean
  d_j between two random sources' truths, and ``leakage_mean`` its mean over j != i. Ratios of means, as in
  :mod:`cddfm3d.editing.evaluation`.
"""
from __future__ import annotations

import math

import torch

from ..editing import ATTRIBUTE_SLICES
from ..editing.evaluation import _mean_distance, derangement
from ..editing.labels import label_images
from ..face3d.measures import ATTRIBUTES, attribute_features, explained_variance
from ..images import to_uint8
from .cross_domain import CrossDomainEditor
from .projection import DEFAULT_STEPS, ProjectionResult

CHUNK = 256   # sources per attribute-distance batch (the editing evaluation's accumulator)


def _read(net, model, images: torch.Tensor) -> torch.Tensor:
    """The network's coefficient readings [N, 257] (float64, on ``model``'s device) of images in [-1, 1] (quantised
    to uint8 as every stored image is); ``model`` on the network's device."""
    dev = next(net.parameters()).device
    return label_images(net, to_uint8(images).to(dev), model)[0].double().to(model.mean_shape.device)


def _mean_d(model, a, b, attr) -> float:
    return _mean_distance(model, a, b, attr, CHUNK)


@torch.no_grad()
def evaluate_cross_domain(editor: CrossDomainEditor, net_domain, model, images: torch.Tensor,
                          true_coeffs: torch.Tensor, attributes=("pose", "expression"), space: str = "w+",
                          steps: int = DEFAULT_STEPS, seed: int = 0, batch: int = 16,
                          projections: list[ProjectionResult] | None = None, progress: bool = False) -> dict:
    """Score the cross-domain pipeline on out-of-domain ``images`` [N, 3, H, W] in [-1, 1] with known
    ``true_coeffs`` [N, 257] (module docstring). ``net_domain``: the reconstruction network of their domain;
    ``model``: the morphable model (MiniFace). Projections are computed in batches of ``batch`` (space ``space``,
    ``steps`` steps, seeds ``seed + i``) unless given (``projections``: the list a previous call returned, to
    score other edits or generators' decodes of the same inversions). Returns a dict: ``n``, ``space``,
    ``steps``, ``psnr``, ``t_on_inverted`` and ``inversion`` ({attribute: EV}), ``edits`` ({attribute: {
    completion, completion_truth, leakage {j: value}, leakage_mean}}), ``projections``, ``pairing`` [N] and the
    ``readings`` the measures were computed from ([N, 257] float64: ``reconstruction`` (P_r), ``T`` (T(s)),
    ``edited`` {attribute: P_g}). Raises
    ``ValueError`` for N < 2, mismatched lengths or an attribute without an F^i."""
    N = images.shape[0]
    if N < 2 or true_coeffs.shape != (N, 257):
        raise ValueError(f"evaluate_cross_domain: need N >= 2 images and true coefficients [N, 257], found "
                         f"{tuple(images.shape)} and {tuple(true_coeffs.shape)}")
    bad = [a for a in attributes if a not in editor.editor.attributes]
    if bad:
        raise ValueError(f"evaluate_cross_domain: no F^i for {bad}; the editor has {editor.editor.attributes}")
    mm = model
    dev = mm.mean_shape.device          # every reading and the truth live where the model's bases are
    truth = true_coeffs.double().to(dev)
    if projections is None:
        with torch.enable_grad():  # the projector optimises; everything after it is inference
            projections = [editor.invert(images[i:i + batch], space=space, steps=steps, seed=seed + i,
                                         progress=progress) for i in range(0, N, batch)]
    styles = torch.cat([p.styles for p in projections]).to(editor.device)
    noises = [[n.to(editor.device) for n in p.noise] for p in projections]
    sizes = [p.styles.shape[0] for p in projections]
    if sum(sizes) != N:
        raise ValueError(f"evaluate_cross_domain: the projections hold {sum(sizes)} images, expected {N}")
    psnr = torch.cat([p.psnr.cpu() for p in projections]).double()

    def decode(s: torch.Tensor) -> torch.Tensor:
        out, o = [], 0
        for k, noise in zip(sizes, noises, strict=True):
            out.append(editor.decode(editor.G_domain, s[o:o + k], noise).cpu())
            o += k
        return torch.cat(out)

    P_T = editor.editor.predict(styles).double().to(dev)
    P_r = _read(net_domain, model, decode(styles))
    pairing = derangement(N, seed)
    result = {"n": N, "space": projections[0].space, "steps": projections[0].steps,
              "psnr": float(psnr.mean()), "perceptual": projections[0].perceptual,
              "t_on_inverted": {a: explained_variance(attribute_features(mm, P_T, a),
                                                      attribute_features(mm, truth, a)) for a in ATTRIBUTES},
              "inversion": {a: explained_variance(attribute_features(mm, P_r, a),
                                                  attribute_features(mm, truth, a)) for a in ATTRIBUTES},
              "edits": {}, "projections": projections, "pairing": pairing,
              "readings": {"reconstruction": P_r, "T": P_T, "edited": {}}}
    scale = {j: _mean_d(mm, truth, truth[pairing], j) for j in ATTRIBUTES}
    for attr in attributes:
        sl = ATTRIBUTE_SLICES[attr]
        goal = truth[pairing][:, sl].to(editor.device, styles.dtype)
        s_g = editor.editor.edit(styles, {attr: {"target": goal}})
        P_g = _read(net_domain, model, decode(s_g))
        P_t = P_r.clone()
        P_t[:, sl] = truth[pairing][:, sl]
        d_g = _mean_d(mm, P_g, P_t, attr)
        row = {"completion": 1 - d_g / max(_mean_d(mm, P_r, P_t, attr), 1e-300),
               "completion_truth": 1 - d_g / max(_mean_d(mm, truth, P_t, attr), 1e-300),
               "leakage": {j: _mean_d(mm, P_g, P_r, j) / scale[j] for j in ATTRIBUTES if j != attr}}
        row["leakage_mean"] = sum(row["leakage"].values()) / len(row["leakage"])
        result["readings"]["edited"][attr] = P_g
        result["edits"][attr] = row
    return result


def cross_domain_table(results: dict[str, dict]) -> str:
    """Markdown table of several :func:`evaluate_cross_domain` results ``{row name: result}``: PSNR, T's mean
    EV on the inversions, and per edited attribute completion / completion vs truth / leakage."""
    attrs = list(next(iter(results.values()))["edits"])
    head = "| setting | PSNR dB | T(s) EV (mean) | " + " | ".join(
        f"{a}: completion / vs truth / leakage" for a in attrs) + " |"
    rows = [head, "|" + "---|" * (3 + len(attrs))]
    for name, r in results.items():
        ev = [v for v in r["t_on_inverted"].values() if not math.isnan(v)]
        cells = [f"{r['edits'][a]['completion']:.3f} / {r['edits'][a]['completion_truth']:.3f} / "
                 f"{r['edits'][a]['leakage_mean']:.3f}" for a in attrs]
        rows.append(f"| {name} | {r['psnr']:.1f} | {sum(ev) / len(ev):.3f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


__all__ = ["evaluate_cross_domain", "cross_domain_table"]
