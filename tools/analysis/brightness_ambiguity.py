"""The albedo-light brightness ambiguity of the mini world, in numbers (explained-variance ceilings).

    python tools/analysis/brightness_ambiguity.py --n 2000            # ~30 s
    python tools/analysis/brightness_ambiguity.py --n 2000 --ambient-std 0.02 --tint-std 0.01   # another world

A vertex's colour is albedo x irradiance per channel, so dividing the albedo of channel c by a gain g_c and
multiplying that channel's SH light (DC 0.8 included) by g_c leaves the face's colours unchanged -- up to the part
of albedo / g that MiniFace's texture basis cannot represent (non-skin regions such as the eye whites do not follow
the skin tone). This script draws ``--n`` faces from the prior, measures the spread of the log skin albedo and of
the log DC light per channel, and builds the coefficients an oracle would give that knows everything except how
the brightness of each channel splits between albedo and light (the best split for two independent log-normal
gains: w = var(log albedo) / (var(log albedo) + var(log light)) of the product goes to the albedo; the texture
coefficients of albedo / g by least squares). It prints that oracle's explained variance per attribute -- what
the split costs an estimator that cannot use the cues the basis leaves (not a bound for one that can: on clean
renders an analysis-by-synthesis fit recovers more, see recon_ceiling.py) -- and how much the transform changes
``--renders`` 64-px renders, i.e. how small those cues are.
"""
from __future__ import annotations

import argparse

import torch

from cddfm3d.face3d.lighting import INIT_AMBIENT
from cddfm3d.face3d.measures import attribute_features, explained_variance
from cddfm3d.face3d.morphable import SLICES, MorphableModel
from cddfm3d.face3d.render import render as render_face
from cddfm3d.world import render, sample_coeffs


def split_brightness(fm: MorphableModel, coeffs: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Coefficients [n, 257] with albedo / gain and light x gain per channel (``gain`` [n, 3]); tex by least
    squares in the texture basis, gamma exactly (the DC term carries Deep3D's +0.8)."""
    out = coeffs.clone()
    n = len(coeffs)
    albedo = fm.compute_albedo(coeffs[:, SLICES["tex"]]) * 255
    target = (albedo / gain[:, None, :] - fm.mean_tex).reshape(n, -1)
    out[:, SLICES["tex"]] = torch.linalg.lstsq(fm.tex_base, target.T).solution.T
    g = coeffs[:, SLICES["gamma"]].reshape(n, 3, 9).clone()
    g[:, :, 0] += INIT_AMBIENT
    g = g * gain[:, :, None]
    g[:, :, 0] -= INIT_AMBIENT
    out[:, SLICES["gamma"]] = g.reshape(n, 27)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="faces drawn from the prior (default 2000)")
    p.add_argument("--renders", type=int, default=64, help="faces rendered to measure the image change (default 64)")
    p.add_argument("--seed", type=int, default=4242, help="coefficient seed (default 4242)")
    p.add_argument("--ambient-std", type=float, default=None, help="draw the light with this ambient std instead of "
                   "the world prior's (cddfm3d.world.priors.AMBIENT_STD): what a changed world would allow")
    p.add_argument("--tint-std", type=float, default=None, help="the same for the light's tint (TINT_STD)")
    args = p.parse_args(argv)
    from cddfm3d.world import priors
    for name, value in (("AMBIENT_STD", args.ambient_std), ("TINT_STD", args.tint_std)):
        if value is not None:
            setattr(priors, name, value)    # read by priors.light_gamma at each draw
    torch.set_num_threads(1)
    fm = MorphableModel.mini(dtype=torch.float64)
    c = sample_coeffs(args.n, seed=args.seed).double()
    log_a = fm.compute_albedo(c[:, SLICES["tex"]])[:, fm.skin_mask].mean(1).log()          # [n, 3]
    log_l = (c[:, SLICES["gamma"]].reshape(-1, 3, 9)[:, :, 0] + INIT_AMBIENT).log()         # [n, 3]
    va, vl = log_a.var(0), log_l.var(0)
    w = va / (va + vl)
    prod = log_a + log_l
    best = log_a.mean(0) + w * (prod - prod.mean(0))
    oracle = split_brightness(fm, c, torch.exp(log_a - best))
    print(f"{args.n} prior faces. std of log skin albedo (R, G, B): {', '.join(f'{v:.3f}' for v in va.sqrt())}; "
          f"std of log DC light: {', '.join(f'{v:.3f}' for v in vl.sqrt())}; share of the product's log variance "
          f"given to the albedo: {', '.join(f'{v:.2f}' for v in w)}\n")
    print("| attribute | ev of an oracle that misses only the brightness split |\n|---|---|")
    for a in ("albedo", "light", "shape", "expression", "pose"):
        ev = explained_variance(attribute_features(fm, oracle, a), attribute_features(fm, c, a))
        print(f"| {a} | {ev:.3f} |")
    k = min(args.renders, args.n)
    diff = (render(c[:k].float(), "human", 64, seed=3) - render(oracle[:k].float(), "human", 64, seed=3)) / 2 * 255
    _, mask = render_face(fm(c[:k], image_size=64), size=64, supersample=2)
    d = diff.abs().amax(1).double()[mask[:, 0] > 0.99]
    print(f"\nImage change of the oracle's split on {k} renders (0-255, max over RGB, face pixels): median "
          f"{float(d.median()):.2f}, > 2: {float((d > 2).double().mean()):.1%}, "
          f"> 5: {float((d > 5).double().mean()):.1%} of pixels; RMS over the whole image "
          f"{float(diff.square().mean().sqrt()):.2f}.")


if __name__ == "__main__":
    main()
