"""Where a reconstruction network's light error lies: its SH bands, replaced one at a time by the truth.

    OMP_NUM_THREADS=1 python tools/analysis/light_error_bands.py --world out/world/heldout --n 2000   # ~1 min

Reads ``--n`` renders of a world folder (``make-world``; human domain) with the network (``--recon FILE``, default
the shipped ``mini/recon``) and prints the explained variance of the light (SH irradiance over camera-facing
normals, :mod:`cddfm3d.face3d.measures`) of its readings as they are and with one group of SH coefficients taken
from the truth: the DC term (ambient brightness and tint, which trade off with the albedo's brightness), band 1 (the
light's direction and strength) and band 2 (the world prior's small second-order terms), then DC and band 2
together. A group whose truth lifts the explained variance most is where the network's light error lies. Also
prints what the world's prior puts in each group: the explained variance left when that group is set to its mean.
"""
from __future__ import annotations

import argparse

import torch

from cddfm3d import assets
from cddfm3d.face3d import ReconNet
from cddfm3d.face3d.measures import attribute_features, explained_variance
from cddfm3d.face3d.morphable import SLICES, MorphableModel
from cddfm3d.images import from_uint8
from cddfm3d.world.datasets import WorldDataset

GROUPS = {"DC": [0], "band 1": [1, 2, 3], "band 2": [4, 5, 6, 7, 8], "DC + band 2": [0, 4, 5, 6, 7, 8]}


def with_group(coeffs: torch.Tensor, source: torch.Tensor, group: list[int]) -> torch.Tensor:
    """``coeffs`` [N, 257] with the SH coefficients ``group`` (indices 0-8, every colour) taken from ``source``
    ([N, 257], or [1, 257] to broadcast)."""
    out = coeffs.clone()
    g = out[:, SLICES["gamma"]].reshape(len(out), 3, 9)
    g[:, :, group] = source[:, SLICES["gamma"]].reshape(len(source), 3, 9)[:, :, group]
    out[:, SLICES["gamma"]] = g.reshape(len(out), 27)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", required=True, help="make-world folder (held-out renders)")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--recon", default=None, help="recon .safetensors (default: the shipped mini/recon)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    fm = MorphableModel.mini(dtype=torch.float64)
    held = WorldDataset(args.world, "human", limit=args.n)
    net = (assets.load("mini/recon") if args.recon is None else ReconNet.load(args.recon)).eval()
    with torch.no_grad():
        pred = torch.cat([net(from_uint8(held.images[i:i + 250])) for i in range(0, len(held.images), 250)])
    pred, true = pred.double(), held.coeffs.double()
    truth = attribute_features(fm, true, "light")

    def ev(c: torch.Tensor) -> float:
        return explained_variance(attribute_features(fm, c, "light"), truth)

    mean = true.mean(0, keepdim=True)
    print(f"{len(true)} renders of {args.world}, {args.recon or 'mini/recon'}\n")
    print("| SH group | EV with the truth's group | EV of the truth with the group at its mean |\n|---|---|---|")
    print(f"| none | {ev(pred):.3f} | 1.000 |")
    for name, group in GROUPS.items():
        print(f"| {name} | {ev(with_group(pred, true, group)):.3f} | {ev(with_group(true, mean, group)):.3f} |")


if __name__ == "__main__":
    main()
