"""Numerical equivalence with the two reference implementations, on golden fixtures they produced.

tests/fixtures/stylegan2/README.md says how the fixtures were made (reference code run outside this repository;
only data is stored). Tolerances: images <= 1e-4 max abs, mapping <= 1e-5 (fp32, CPU).
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from cddfm3d.stylegan2 import load_discriminator, load_generator

FIX = Path(__file__).parent / "fixtures" / "stylegan2"
IMG_TOL, MAP_TOL = 1e-4, 1e-5


def arrays(name):
    with np.load(FIX / name) as f:
        return {k: torch.from_numpy(f[k]) for k in f.files}


def maxdiff(a, b):
    return (a.float() - b.float()).abs().max().item()


@pytest.fixture(scope="module")
def ros():
    return load_generator(FIX / "rosinality_g32.pt"), arrays("rosinality_g32_io.npz")


@pytest.fixture(scope="module")
def nv():
    return load_generator(FIX / "nvidia_g32.pkl"), arrays("nvidia_g32_io.npz")


def test_rosinality_mapping_styles_and_images(ros):
    G, a = ros
    torch.set_num_threads(1)
    assert G.config["channels"] == {"4": 32, "8": 32, "16": 32, "32": 16} and G.num_ws == 8
    assert maxdiff(G.mapping(a["z"]), a["w"]) <= MAP_TOL
    styles = G.w_to_styles(a["ws"])
    for layer, s in enumerate(styles):
        assert maxdiff(s, a[f"style_{layer:02d}"]) <= MAP_TOL, f"style layer {layer}"
    noise = [a[f"noise_{j}"] for j in range(G.num_noise)]
    for fused in (True, False):
        assert maxdiff(G.synthesis(a["ws"], noise=noise, fused=fused), a["image"]) <= IMG_TOL
    assert maxdiff(G.synthesis(a["ws"], noise="const"), a["image_const"]) <= IMG_TOL
    torch.testing.assert_close(G.w_avg, a["latent_avg"], rtol=0, atol=0)
    img_trunc = G.synthesis(G.mapping(a["z"], truncation_psi=0.7), noise=noise)
    assert maxdiff(img_trunc, a["image_trunc"]) <= IMG_TOL


def test_rosinality_training_checkpoint_and_discriminator(ros):
    G, a = ros
    G_train = load_generator(FIX / "rosinality_train32.pt")  # args Namespace + optimizer states, no latent_avg
    noise = [a[f"noise_{j}"] for j in range(G.num_noise)]
    assert maxdiff(G_train.synthesis(a["ws"], noise=noise), a["image"]) <= IMG_TOL
    D = load_discriminator(FIX / "rosinality_train32.pt")
    assert maxdiff(D(a["d_in"]), a["d_out"]) <= 1e-5


def test_nvidia_mapping_and_truncation(nv):
    G, a = nv
    assert maxdiff(G.mapping(a["z"]), a["w"]) <= MAP_TOL
    assert maxdiff(G.mapping(a["z"], truncation_psi=0.7), a["w_trunc"]) <= MAP_TOL
    assert maxdiff(G.mapping(a["z"], truncation_psi=0.7, truncation_cutoff=4), a["w_trunc_cut"]) <= MAP_TOL
    torch.testing.assert_close(G.w_avg, a["w_avg"], rtol=0, atol=0)


def test_nvidia_styles_and_images(nv):
    G, a = nv
    for layer, s in enumerate(G.w_to_styles(a["ws"])):  # raw affine outputs, tRGB not multiplied by the weight gain
        assert maxdiff(s, a[f"style_{layer:02d}"]) <= MAP_TOL, f"style layer {layer}"
    noise = [a[f"noise_{j}"] for j in range(G.num_noise)]
    for fused in (True, False):
        assert maxdiff(G.synthesis(a["ws"], noise="const", fused=fused), a["image_const"]) <= IMG_TOL
        assert maxdiff(G.synthesis(a["ws"], noise=noise, fused=fused), a["image_const_unfused"]) <= IMG_TOL
        assert maxdiff(G.synthesis(a["ws"], noise="zero", fused=fused), a["image_none"]) <= IMG_TOL
    assert maxdiff(G.synthesis(a["ws"][:1], noise="const"), a["image_b1_fused"]) <= IMG_TOL
    assert maxdiff(G(a["z"], truncation_psi=0.7, noise="const"), a["image_trunc"]) <= IMG_TOL


def test_nvidia_discriminator(nv):
    _, a = nv
    D = load_discriminator(FIX / "nvidia_g32.pkl")
    assert D.mbstd_group_size == 4
    assert maxdiff(D(a["image_const"]), a["d_out"]) <= 1e-5
