"""Latent consistency measured on images (cddfm3d.adapt.consistency)."""
import numpy as np
import pytest
import torch

from cddfm3d import assets
from cddfm3d.adapt.consistency import compare_readings, consistency_table, latent_consistency
from cddfm3d.face3d.measures import ATTRIBUTES, attribute_features
from cddfm3d.face3d.morphable import MorphableModel
from cddfm3d.world.domains import mini_model
from cddfm3d.world.priors import sample_coeffs


@pytest.fixture(scope="module")
def human():
    return assets.load("mini/generator"), assets.load("mini/recon")


def test_compare_readings_against_numpy():
    model = MorphableModel.mini().double()  # a private float64 instance (mini_model() is shared: never .to() it)
    a, b = sample_coeffs(12, seed=1).double(), sample_coeffs(12, seed=2).double()
    b = 0.7 * a + 0.3 * b  # related readings
    rows = compare_readings(model, a, b, shuffle_seed=3)
    from cddfm3d.editing.evaluation import derangement

    perm = derangement(12, 3).numpy()
    for attr in ATTRIBUTES:
        fa, fb = (attribute_features(model, x, attr).numpy() for x in (a, b))
        ev = 1 - ((fb - fa) ** 2).sum() / ((fa - fa.mean(0)) ** 2).sum()
        w = 1 if attr == "pose" else 3
        dist = np.sqrt((((fa - fb).reshape(12, -1, w)) ** 2).sum(-1).mean(-1)).mean()
        rand = np.sqrt((((fa - fa[perm]).reshape(12, -1, w)) ** 2).sum(-1).mean(-1)).mean()
        assert rows[attr]["ev"] == pytest.approx(ev, rel=1e-9, abs=1e-12), attr
        assert rows[attr]["distance"] == pytest.approx(dist, rel=1e-9), attr
        assert rows[attr]["relative_distance"] == pytest.approx(dist / rand, rel=1e-9), attr
        ca, cb = fa - fa.mean(0), fb - fb.mean(0)
        assert rows[attr]["ev_centred"] == pytest.approx(1 - ((cb - ca) ** 2).sum() / (ca ** 2).sum(), rel=1e-9)
        corr = (ca * cb).sum() / np.sqrt((ca ** 2).sum() * (cb ** 2).sum())
        assert rows[attr]["correlation"] == pytest.approx(corr, rel=1e-9), attr
        assert 0 < rows[attr]["ev"] < 1
    with pytest.raises(ValueError, match="N >= 2"):
        compare_readings(model, a[:1], b[:1])


def test_a_generator_is_consistent_with_itself_and_not_with_a_stranger(human):
    G, net = human
    model = mini_model()
    same = latent_consistency(G, G, net, net, model, n=8, seed=0, batch=4)
    assert same["w_to_s_identical"] and same["w_to_s_changed"] == []
    for attr in ATTRIBUTES:
        assert same["consistency"][attr]["ev"] == pytest.approx(1.0, abs=1e-9)
        assert same["consistency"][attr]["distance"] == pytest.approx(0.0, abs=1e-9)
        # another noise changes the image a little: the ceiling is below 1 but far above a stranger's
        assert same["noise_ceiling"][attr]["relative_distance"] < 0.8, attr
    # a generator whose mapping differs (another w for each z): readings unrelated to the human ones
    stranger = type(G)(**G.config)
    stranger.load_state_dict(G.state_dict())
    with torch.no_grad():
        stranger.mapping_network.fc0.weight.copy_(torch.randn_like(stranger.mapping_network.fc0.weight))
    other = latent_consistency(G, stranger.eval(), net, net, model, n=8, seed=0, batch=4)
    assert not other["w_to_s_identical"] and any(k.startswith("mapping_network.") for k in other["w_to_s_changed"])
    mean_rel = np.mean([other["consistency"][a]["relative_distance"] for a in ATTRIBUTES])
    assert mean_rel > 0.6
    # a constant shift of every reading keeps the centred EV and the correlation and lowers the strict EV
    model64 = MorphableModel.mini().double()
    h = sample_coeffs(16, seed=4).double()
    shifted = h + 0.5
    row = compare_readings(model64, h, shifted)["expression"]
    assert row["ev_centred"] == pytest.approx(1.0, abs=1e-9) and row["correlation"] == pytest.approx(1.0, abs=1e-9)
    assert row["ev"] < 0.9
    table = consistency_table({"itself": same, "stranger": other})
    assert table.count("\n") == 4 and "| stranger | no |" in table and "ceiling" in table
    with pytest.raises(ValueError, match="n must be"):
        latent_consistency(G, G, net, net, model, n=1)
