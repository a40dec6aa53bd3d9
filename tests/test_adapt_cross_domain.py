"""The cross-domain pipeline (cddfm3d.adapt.cross_domain) and its ground-truth evaluation (cddfm3d.adapt.evaluation).

The human generator stands in for a domain generator here (a fine-tuned one is a generator of the same
architecture), so every image of the pipeline can be checked against a direct computation."""
import numpy as np
import pytest
import torch

from cddfm3d import assets
from cddfm3d.adapt.cross_domain import CrossDomainEditor
from cddfm3d.adapt.evaluation import cross_domain_table, evaluate_cross_domain
from cddfm3d.editing import ATTRIBUTE_SLICES, FaceEditor
from cddfm3d.face3d.measures import ATTRIBUTES, attribute_distance
from cddfm3d.world.domains import mini_model, render
from cddfm3d.world.priors import sample_coeffs

STEPS = 12


@pytest.fixture(scope="module")
def cde():
    editor = FaceEditor.load("mini")
    return CrossDomainEditor(editor, editor.G)


@pytest.fixture(scope="module")
def sources():
    truth = sample_coeffs(4, seed=21)
    return render(truth, "human", 64, seed=21), truth


def test_pipeline_decodes_the_projection_and_edits_only_the_attribute_layers(cde, sources):
    images, _ = sources
    r = cde.edit(images[:2], {"pose": {"delta": {1: 0.3}}}, steps=STEPS, progress=False)
    G = cde.G_domain
    with torch.no_grad():
        direct = G.synthesis_from_styles(G.unflatten_styles(r.projection.styles), noise=r.projection.noise)
    assert torch.allclose(r.reconstruction, direct.clamp(-1, 1), atol=1e-5)
    assert torch.allclose(r.reconstruction, r.projection.image, atol=1e-5)
    # the domain generator is the human one here: the human counterpart is the same image
    assert torch.equal(r.human, r.reconstruction) and torch.equal(r.human_edited, r.image)
    # P_s = T(s); the target is P_s with yaw + 0.3; F^pose wrote only on its layer set
    assert torch.allclose(r.coeffs, cde.editor.T(r.styles))
    expected = r.coeffs.clone()
    expected[:, ATTRIBUTE_SLICES["pose"].start + 1] += 0.3
    assert torch.allclose(r.target_coeffs, expected)
    changed = (r.edited_styles != r.styles).any(0)
    allowed = torch.zeros_like(changed)
    F = cde.editor.manipulators["pose"]
    start = np.cumsum([0] + F.config["layer_channels"])
    for k in F.edit_layers:
        allowed[start[k]:start[k + 1]] = True
    assert changed.any() and not (changed & ~allowed).any()
    assert not torch.allclose(r.image, r.reconstruction)
    # an empty edit decodes the projection itself; a given projection is not projected again
    same = cde.edit(r.projection, {})
    assert torch.equal(same.image, same.reconstruction) and same.projection is r.projection


def test_domain_generator_of_another_architecture_is_refused(cde):
    other = type(cde.G_domain)(64, z_dim=32, w_dim=32, mapping_layers=2, channel_max=32)
    with pytest.raises(ValueError, match="architecture"):
        CrossDomainEditor(cde.editor, other)


def test_evaluation_measures_follow_their_formulas(cde, sources):
    images, truth = sources
    model = mini_model()
    res = evaluate_cross_domain(cde, assets.load("mini/recon"), model, images, truth,
                                attributes=("pose", "expression"), steps=STEPS, batch=2)
    assert res["n"] == 4 and res["space"] == "w+" and len(res["projections"]) == 2
    P_r, v = res["readings"]["reconstruction"], res["pairing"]
    t = truth.double()

    def d(a, b, attr):
        return float(attribute_distance(model, a, b, attr).double().mean())

    for attr in ("pose", "expression"):
        P_g = res["readings"]["edited"][attr]
        P_t = P_r.clone()
        P_t[:, ATTRIBUTE_SLICES[attr]] = t[v][:, ATTRIBUTE_SLICES[attr]]
        row = res["edits"][attr]
        assert row["completion"] == pytest.approx(1 - d(P_g, P_t, attr) / d(P_r, P_t, attr), rel=1e-5)
        assert row["completion_truth"] == pytest.approx(1 - d(P_g, P_t, attr) / d(t, P_t, attr), rel=1e-5)
        for j in ATTRIBUTES:
            if j != attr:
                assert row["leakage"][j] == pytest.approx(d(P_g, P_r, j) / d(t, t[v], j), rel=1e-5)
        assert row["leakage_mean"] == pytest.approx(np.mean(list(row["leakage"].values())))
    # reusing the projections gives the same numbers without projecting again
    again = evaluate_cross_domain(cde, assets.load("mini/recon"), model, images, truth, attributes=("pose",),
                                  projections=res["projections"])
    assert again["edits"]["pose"]["completion"] == pytest.approx(res["edits"]["pose"]["completion"], rel=1e-9)
    table = cross_domain_table({"w+": res})
    assert "| w+ |" in table and "pose: completion" in table
    with pytest.raises(ValueError, match="N >= 2"):
        evaluate_cross_domain(cde, assets.load("mini/recon"), model, images[:1], truth[:1])
