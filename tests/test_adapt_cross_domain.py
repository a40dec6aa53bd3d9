"""The cross-domain pipeline (cddfm3d.adapt.cross_domain) and its ground-truth evaluation (cddfm3d.adapt.evaluation).

The shipped toon generator is the domain generator; every image of the pipeline is checked against a direct
decode by the generator it must come from (the toon one for the toon images, the human one for the counterparts)."""
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
    return CrossDomainEditor(editor, assets.load("mini/generator_toon"))


@pytest.fixture(scope="module")
def sources():
    truth = sample_coeffs(4, seed=21)
    return render(truth, "human", 64, seed=21), truth


def test_pipeline_decodes_the_projection_and_edits_only_the_attribute_layers(cde, sources):
    images, _ = sources
    r = cde.edit(images[:2], {"pose": {"delta": {1: 0.3}}}, steps=STEPS, progress=False)
    G, H = cde.G_domain, cde.editor.G

    def decode(gen, s):
        with torch.no_grad():
            return gen.synthesis_from_styles(gen.unflatten_styles(s), noise=r.projection.noise).clamp(-1, 1)

    assert torch.allclose(r.reconstruction, decode(G, r.projection.styles), atol=1e-5)
    assert torch.allclose(r.reconstruction, r.projection.image, atol=1e-5)
    assert torch.allclose(r.image, decode(G, r.edited_styles), atol=1e-5)
    # the human counterparts: the same styles through the human generator, a different image
    assert torch.allclose(r.human, decode(H, r.styles), atol=1e-5)
    assert torch.allclose(r.human_edited, decode(H, r.edited_styles), atol=1e-5)
    assert not torch.allclose(r.human, r.reconstruction, atol=0.05)
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
