"""How far each MiniFace component moves the image at the mini world's prior scale: markdown tables.

    python tools/analysis/component_visibility.py --size 64            # a few seconds

For each coefficient group, :func:`cddfm3d.face3d.measures.component_visibility` gives the RMS over visible
vertices of one prior standard deviation (:func:`cddfm3d.world.priors.prior_std`) of each component at the mean
face: screen motion in pixels (id, exp, angle, trans), albedo change (tex) and lit-colour change (gamma) in 0-255
units. For id and exp also the shading change (lit colour through the normals, 0-255) under the light prior's
mean light, and each component's share of the group's 3-D vertex variance -- the space ev_shape / ev_expression
are measured in, so a component no one can see caps those measures by its share. Per group: the top components,
how many pass the threshold (``--px`` pixels, ``--rgb`` 0-255 units), the share of the group's image variance
(sum of m_k^2) and of its 3-D / albedo variance they hold, the total RMS (root of the sum of m_k^2), and the prior
std each of the top components would need to move ``--target`` px.
"""
from __future__ import annotations

import argparse

import torch

from cddfm3d.face3d.measures import component_visibility
from cddfm3d.face3d.morphable import SLICES, MorphableModel
from cddfm3d.world import priors

GAMMA_MEAN_SAMPLES = 100_000


def mean_light() -> torch.Tensor:
    """The light prior's mean SH gamma [27] (a fixed-seed sample mean)."""
    return priors.light_gamma(GAMMA_MEAN_SAMPLES, torch.Generator().manual_seed(1)).mean(0)


def feature_variance(fm: MorphableModel, group: str, std: torch.Tensor) -> torch.Tensor:
    """Each component's variance [K] in the group's attribute feature (identity / expression vertex offsets,
    dm^2 per vertex; albedo, (0-1)^2 per vertex): std_k^2 |basis column k|^2 / N over all vertices."""
    base = {"id": fm.id_base, "exp": fm.exp_base, "tex": fm.tex_base / 255.0}[group].double()
    return std.square() * base.square().sum(0) / fm.n_vertices


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=64, help="image size in px (default 64)")
    p.add_argument("--px", type=float, default=0.3, help="motion threshold in px (default 0.3)")
    p.add_argument("--rgb", type=float, default=2.0, help="colour threshold in 0-255 units (default 2)")
    p.add_argument("--target", type=float, default=1.0, help="motion (px) the needed-std column aims at (default 1)")
    p.add_argument("--top", type=int, default=10, help="components listed per group (default 10)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    fm = MorphableModel.mini(dtype=torch.float64)
    std_all = priors.prior_std()
    lit = fm.zeros(1)
    lit[0, SLICES["gamma"]] = mean_light()
    print(f"MiniFace at {args.size} px, mean face, frontal; one prior std per component; RMS over visible vertices.\n")
    for group in ("id", "exp", "tex", "angle", "trans", "gamma"):
        std = std_all[SLICES[group]]
        m = component_visibility(fm, group, std, args.size)
        colour = group in ("tex", "gamma")
        unit = "0-255" if colour else "px"
        if colour:
            m = m * 255
        thr = args.rgb if colour else args.px
        order = torch.argsort(m, descending=True)
        shading = (component_visibility(fm, group, std, args.size, coeffs=lit[0], quantity="colour") * 255
                   if group in ("id", "exp") else None)
        fvar = feature_variance(fm, group, std) if group in ("id", "exp", "tex") else None
        print(f"### {group} (prior std {float(std.min()):.4g}" + ("" if std.min() == std.max() else
                                                                  f"-{float(std.max()):.4g}") + ")\n")
        head = ["rank", "component", f"motion ({unit})"]
        if shading is not None:
            head += ["shading (0-255)"]
        if fvar is not None:
            head += ["3-D / albedo variance share"]
        if not colour:
            head += [f"std for {args.target:g} px"]
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for r, k in enumerate(order[:args.top].tolist()):
            cells = [str(r + 1), str(k), f"{float(m[k]):.3f}"]
            if shading is not None:
                cells.append(f"{float(shading[k]):.2f}")
            if fvar is not None:
                cells.append(f"{float(fvar[k] / fvar.sum()):.3f}")
            if not colour:
                cells.append(f"{float(std[k] * args.target / m[k]):.3g}" if m[k] > 0 else "-")
            print("| " + " | ".join(cells) + " |")
        above = m >= thr
        share_img = float(m[above].square().sum() / m.square().sum())
        line = (f"\n{int(above.sum())} of {len(m)} components move >= {thr:g} {unit}, holding {share_img:.0%} of the "
                f"group's image variance")
        if fvar is not None:
            line += f" and {float(fvar[above].sum() / fvar.sum()):.0%} of its 3-D / albedo variance"
        line += f"; total RMS {float(m.square().sum().sqrt()):.3f} {unit}"
        if shading is not None:
            line += (f"; shading total RMS {float(shading.square().sum().sqrt()):.2f} (0-255), "
                     f"{int((shading >= args.rgb).sum())} components change shading >= {args.rgb:g}")
        print(line + ".\n")


if __name__ == "__main__":
    main()
