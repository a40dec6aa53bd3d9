"""cddfm3d.editing.evaluation (evaluate, EditingEvaluation) and cddfm3d.editing.baselines (the linear baseline).

The evaluation is checked on the shipped mini generator, recon and T with a handful of sources: exact values where
the images are bitwise equal (the identity editor; an editor that returns the swap partner's styles with every
source on the same noise, batch 1), a brute-force float64 recomputation of every measure from the kept readings,
and an independent re-synthesis and re-reading of the sources. The linear baseline is checked against numpy's
float64 least squares on synthetic linear problems.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import cddfm3d.assets
from cddfm3d.editing import ATTRIBUTE_SLICES, ATTRIBUTES
from cddfm3d.editing.baselines import (LinearDirections, fit_linear_baseline, fit_linear_directions,
                                       identity_editor)
from cddfm3d.editing.evaluation import PERFECT, EditingEvaluation, derangement, evaluate
from cddfm3d.editing.labels import label_images
from cddfm3d.editing.latents import sample_latents
from cddfm3d.editing.pairs import resynthesize
from cddfm3d.face3d import ReconNet
from cddfm3d.face3d.measures import attribute_distance
from cddfm3d.face3d.morphable import MorphableModel
from cddfm3d.images import to_uint8
from cddfm3d.world.domains import mini_model, render
from cddfm3d.world.priors import sample_coeffs

N_SOURCES = 5


@pytest.fixture(scope="module")
def nets():
    G = cddfm3d.assets.load("mini/generator")
    R = cddfm3d.assets.load("mini/recon")
    T = cddfm3d.assets.load("mini/attribute_predictor")
    # An independent second evaluator: another architecture (narrower, 3 stages, group norm, [0, 1] input) with
    # seeded random heads (the constructor zeroes them), so its readings differ from the shipped recon's.
    torch.manual_seed(7)
    R2 = ReconNet("small", image_size=64, width=8, n_stages=3, norm="group", input_range="0_1")
    for layer in R2.final_layers:
        torch.nn.init.normal_(layer.weight, std=0.2)
    return G, R, T, R2.eval()


def _styles(G, n, seed):
    with torch.no_grad():
        ws = sample_latents(G, n, torch.Generator().manual_seed(seed), "official5")
        return G.flatten_styles(G.w_to_styles(ws))


@pytest.fixture(scope="module")
def sources(nets):
    G = nets[0]
    return _styles(G, N_SOURCES, 123), torch.tensor([1000 + 17 * i for i in range(N_SOURCES)])


# ---------------------------------------------------------------------------------------------- derangement
def test_derangement_is_a_seeded_permutation_without_fixed_points():
    for n in (2, 3, 7, 50):
        for seed in range(5):
            p = derangement(n, seed)
            assert sorted(p.tolist()) == list(range(n))
            assert bool((p != torch.arange(n)).all())
            assert torch.equal(p, derangement(n, seed))
    assert not torch.equal(derangement(50, 0), derangement(50, 1))
    with pytest.raises(ValueError, match="n must be an int >= 2"):
        derangement(1)


# ---------------------------------------------------------------------------------------------- linear baseline
def _synthetic(n, d, attribute, noise, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = ATTRIBUTE_SLICES[attribute].stop - ATTRIBUTE_SLICES[attribute].start
    a_true = torch.randn(k, d, generator=g, dtype=torch.float64)
    coeffs = torch.randn(n, 257, generator=g, dtype=torch.float64) * 0.5 + 0.1
    styles = (torch.randn(d, generator=g, dtype=torch.float64) + coeffs[:, ATTRIBUTE_SLICES[attribute]] @ a_true
              + noise * torch.randn(n, d, generator=g, dtype=torch.float64))
    return styles, coeffs, a_true


def _numpy_fit(styles, coeffs, attribute, ridge=0.0):
    s = styles.numpy().astype(np.float64)
    p = coeffs[:, ATTRIBUTE_SLICES[attribute]].numpy().astype(np.float64)
    sc, pc = s - s.mean(0), p - p.mean(0)
    if ridge == 0:
        return np.linalg.lstsq(pc, sc, rcond=None)[0]
    n = len(s)
    return np.linalg.solve(pc.T @ pc / n + ridge * np.eye(p.shape[1]), pc.T @ sc / n)


@pytest.mark.parametrize("attribute", ["pose", "light", "shape"])
def test_linear_directions_match_numpy_least_squares(attribute, monkeypatch):
    import cddfm3d.editing.baselines as baselines

    monkeypatch.setattr(baselines, "FIT_CHUNK", 37)            # several chunks of the normal equations
    styles, coeffs, a_true = _synthetic(300, 24, attribute, noise=1e-3)
    ref = _numpy_fit(styles, coeffs, attribute)
    fit = fit_linear_directions(styles.float(), coeffs.float(), attribute)
    assert fit.directions.dtype == torch.float32 and fit.directions.shape == a_true.shape
    np.testing.assert_allclose(fit.directions.numpy(), ref, rtol=0, atol=2e-5 * np.abs(ref).max())
    assert float((fit.directions.double() - a_true).abs().max()) < 0.01          # the true directions
    ridge_ref = _numpy_fit(styles, coeffs, attribute, ridge=0.3)
    ridged = fit_linear_directions(styles.float(), coeffs.float(), attribute, ridge=0.3)
    np.testing.assert_allclose(ridged.directions.numpy(), ridge_ref, rtol=0, atol=2e-5 * np.abs(ridge_ref).max())
    assert float(ridged.directions.norm()) < float(fit.directions.norm())        # ridge shrinks


def test_linear_directions_rank_deficient_is_minimum_norm():
    styles, coeffs, _ = _synthetic(20, 16, "shape", noise=0.1)       # 20 pairs, 80 coefficients
    ref = _numpy_fit(styles, coeffs, "shape")                        # numpy's minimum-norm solution
    fit = fit_linear_directions(styles.float(), coeffs.float(), "shape")
    np.testing.assert_allclose(fit.directions.numpy(), ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def test_linear_editor_moves_exactly_and_baseline_covers_attributes():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(27, 40, generator=g)
    ed = LinearDirections(a, "light")
    s = torch.randn(6, 40, generator=g)
    delta = torch.randn(6, 27, generator=g)
    out = ed(s, delta)
    ref = s.double() + delta.double() @ a.double()
    assert float((out.double() - ref).abs().max()) < 1e-5
    assert torch.equal(ed(s, torch.zeros(6, 27)), s)                 # no offset: delta 0 edits nothing
    assert identity_editor(s, delta) is s
    styles, coeffs, _ = _synthetic(50, 12, "pose", noise=0.0)
    method = fit_linear_baseline(styles.float(), coeffs.float(), attributes=("pose", "light"))
    assert sorted(method) == ["light", "pose"] and method["light"].directions.shape == (27, 12)


def test_linear_directions_bad_input():
    a = torch.zeros(3, 10)
    with pytest.raises(ValueError, match="unknown attribute 'hair'"):
        LinearDirections(a, "hair")
    with pytest.raises(ValueError, match=r"directions must be a float tensor \[3, D\]"):
        LinearDirections(torch.zeros(4, 10), "pose")
    ed = LinearDirections(a, "pose")
    with pytest.raises(ValueError, match=r"s must be styles \[B, 10\], found \(2, 9\)"):
        ed(torch.zeros(2, 9), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"delta must be \[B, 3\] with B = 2.*found \(2, 4\)"):
        ed(torch.zeros(2, 10), torch.zeros(2, 4))
    s, c = torch.zeros(5, 10), torch.zeros(5, 257)
    with pytest.raises(ValueError, match=r"coeffs must be a float tensor \[N, 257\]"):
        fit_linear_directions(s, torch.zeros(5, 256), "pose")
    with pytest.raises(ValueError, match="same rows N, found 5 and 4"):
        fit_linear_directions(s, torch.zeros(4, 257), "pose")
    with pytest.raises(ValueError, match="need N >= 2"):
        fit_linear_directions(s[:1], c[:1], "pose")
    with pytest.raises(ValueError, match="ridge must be a finite number >= 0"):
        fit_linear_directions(s, c, "pose", ridge=-1.0)
    with pytest.raises(ValueError, match="styles contain NaN"):
        fit_linear_directions(torch.full((5, 10), float("nan")), c, "pose")


# ---------------------------------------------------------------------------------------------- evaluate
@pytest.fixture(scope="module")
def linear(nets):
    """The linear baseline of three attributes, fitted on T's predictions for 64 other generated styles."""
    G, _, T, _ = nets
    fit_styles = _styles(G, 64, 5)
    with torch.no_grad():
        return fit_linear_baseline(fit_styles, T(fit_styles), attributes=("shape", "pose", "light"))


@pytest.fixture(scope="module")
def identity_and_linear(nets, sources, linear):
    """Identity and linear methods, two evaluators, both targets, ragged batches (5 sources, batch 3)."""
    G, R, T, R2 = nets
    methods = {"identity": {a: identity_editor for a in ATTRIBUTES}, "linear": linear}
    styles, seeds = sources
    return evaluate(G, T, methods, styles, seeds, {"recon": R, "second": R2}, batch=3, seed=4, keep_readings=True)


def test_identity_editor_gives_zero_completion_and_leakage(identity_and_linear):
    ev = identity_and_linear
    for e in ev.evaluators:
        for t in ev.targets:
            for a in ATTRIBUTES:
                sc = ev.score("identity", e, t, a)
                assert sc.source_distance > 0
                assert sc.completion == 0.0 and sc.target_distance == sc.source_distance
                assert all(v == 0.0 for b, v in sc.leakage.items() if b != a)
                assert math.isnan(sc.leakage[a]) and sc.offdiag_leakage == 0.0
                assert (math.isnan(sc.identity) if a == "shape" else sc.identity == 0.0)
                assert abs(sc.fd) < 1e-6                     # the same feature set on both sides
            m = ev.leakage_matrix("identity", e, t)
            assert m.shape == (5, 5) and np.isnan(np.diag(m)).all() and (m[~np.eye(5, dtype=bool)] == 0).all()
    assert not ev.goals_met("identity")
    assert len(ev.goal_failures("identity")) == 2 * 2 * 5          # completion misses only
    assert ev.goals_met("identity", completion=-0.1, leakage=0.1)


def test_linear_baseline_evaluated_and_report_serialises(identity_and_linear):
    ev = identity_and_linear
    sc = ev.score("linear", "recon", "swap", "pose")
    assert math.isfinite(sc.completion) and math.isfinite(sc.fd) and sc.moved["pose"] > 0
    assert ev.score("linear", "recon", "swap", "albedo") is None        # no editor: absent
    m = ev.leakage_matrix("linear", "recon", "prior")
    assert np.isnan(m[ATTRIBUTES.index("albedo")]).all() and np.isfinite(m[ATTRIBUTES.index("pose"), 0])
    assert "linear / recon / swap / albedo: no editor" in ev.goal_failures("linear")
    d = ev.to_dict()
    text = json.dumps(d, allow_nan=False)
    back = EditingEvaluation.from_dict(json.loads(text))
    assert back.to_dict() == d and back.table() == ev.table()
    with pytest.raises(ValueError, match="field 'format'"):
        EditingEvaluation.from_dict(dict(d, format="other"))
    table = ev.table()
    for t in ("swap", "prior"):
        assert f"target: {t} (n = {N_SOURCES}" in table
    rows = [line.split("|")[1:3] for line in table.splitlines() if line.startswith("| ") and "method" not in line]
    rows = [(m.strip(), a.strip()) for m, a in rows]
    for m in ("identity", "linear"):
        for a in ATTRIBUTES + ("mean",):
            assert rows.count((m, a)) == 2                              # once per target kind
    assert "| second: completion |" in table and "| recon: FD |" in table
    assert "| linear | albedo | - | - | - | - |" in table


def test_readings_are_the_sources_and_edits_on_the_sources_noise(nets, sources, linear, identity_and_linear):
    """Independent re-synthesis, one sample at a time with each source's own noise seed, and one-image readings:
    the evaluation's readings (batches of 3) equal them up to the batch rounding of the CPU kernels."""
    G, R, T, R2 = nets
    styles, seeds = sources
    ev, rd = identity_and_linear, identity_and_linear.readings
    model = mini_model()
    edit = ev.readings.deltas[("prior", "pose")]
    with torch.no_grad():
        edited_styles = linear["pose"](styles, edit)
    for e, net in (("recon", R), ("second", R2)):
        for key, st in (("source", styles), ("edited", edited_styles)):
            images = resynthesize(G, st, seeds)
            own = torch.cat([label_images(net, images[i:i + 1], model)[0] for i in range(N_SOURCES)])
            got = rd.source[e] if key == "source" else rd.edited[("linear", e, "prior", "pose")]
            scale = float(own.abs().max())
            assert float((got - own).abs().max()) < 2e-3 * scale, (e, key)
    # the swap partner's reading is the measured swap target
    sc = ev.score("linear", "recon", "swap", "pose")
    assert sc.source_distance == pytest.approx(ev.random_distance["recon"]["pose"], rel=1e-12)


@pytest.mark.parametrize("method", ["identity", "linear"])
def test_measures_equal_brute_force_recomputation(identity_and_linear, method):
    ev = identity_and_linear
    _check_brute_force(ev, method, MorphableModel.mini().double())


def _check_brute_force(ev, method, f64):
    rd = ev.readings
    for e in ev.evaluators:
        ps = rd.source[e]
        for t in ev.targets:
            pt = ps[rd.pairing] if t == "swap" else rd.prior
            for a in ATTRIBUTES:
                sc = ev.score(method, e, t, a)
                if sc is None:
                    assert (method, e, t, a) not in rd.edited
                    continue
                pg = rd.edited[(method, e, t, a)]
                completion, leak, off = _brute_force(f64, ps, pg, pt, rd.pairing.tolist(), a)
                assert sc.completion == pytest.approx(completion, rel=1e-4, abs=1e-5), (e, t, a)
                for b in ATTRIBUTES:
                    if b == a:
                        assert math.isnan(sc.leakage[b])
                    else:
                        assert sc.leakage[b] == pytest.approx(leak[b], rel=1e-4, abs=1e-7), (e, t, a, b)
                assert sc.offdiag_leakage == pytest.approx(off, rel=1e-4, abs=1e-7)
                assert (math.isnan(sc.identity) if a == "shape"
                        else sc.identity == pytest.approx(leak["shape"], rel=1e-4, abs=1e-7))


def _brute_force(model, ps, pg, pt, partner, a):
    """Every measure of one edit from the readings, one sample at a time, sums in Python floats (float64)."""
    n = len(ps)

    def d(x, y, attr, i):
        return float(attribute_distance(model, x[i:i + 1].double(), y[i:i + 1].double(), attr)[0])

    d_gt = sum(d(pg, pt, a, i) for i in range(n)) / n
    d_st = sum(d(ps, pt, a, i) for i in range(n)) / n
    leak = {}
    for b in ATTRIBUTES:
        moved = sum(d(pg, ps, b, i) for i in range(n)) / n
        rand = sum(float(attribute_distance(model, ps[i:i + 1].double(), ps[partner[i]:partner[i] + 1].double(),
                                            b)[0]) for i in range(n)) / n
        leak[b] = moved / rand
    off = [leak[b] for b in ATTRIBUTES if b != a]
    return 1.0 - d_gt / d_st, leak, sum(off) / len(off)


def test_swap_editor_exact_completion_and_brute_force_measures(nets):
    """Every source on the same noise seed and batch 1: the edit that returns the swap partner's styles produces
    the partner's image bit for bit, so swap completion is exactly 1 and the readings equal the partner's."""
    G, R, T, R2 = nets
    styles = _styles(G, N_SOURCES, 321)
    seeds = [99] * N_SOURCES
    pairing = derangement(N_SOURCES, 11)
    received = []

    def to_partner(s, delta):
        rows = [int(torch.nonzero((styles == r).all(1))[0]) for r in s]
        received.append((rows, delta.clone()))
        return styles[pairing[rows]]

    ev = evaluate(G, T, {"partner": {a: to_partner for a in ATTRIBUTES}}, styles, torch.tensor(seeds),
                  {"recon": R, "second": R2}, batch=1, seed=11, keep_readings=True)
    rd = ev.readings
    assert ev.pairing == pairing.tolist() and torch.equal(rd.pairing, pairing)
    # The sources' readings: an independent re-synthesis (pairs.resynthesize) and one-image readings.
    model = mini_model()
    images = resynthesize(G, styles, seeds)
    for e, net in (("recon", R), ("second", R2)):
        own = torch.cat([label_images(net, images[i:i + 1], model)[0] for i in range(N_SOURCES)])
        assert torch.equal(rd.source[e], own)
    # The editors' deltas: T(s_v)^i - T(s)^i for swap, prior^i - T(s)^i for prior, and what the editor received.
    with torch.no_grad():
        p = T(styles)
    prior = sample_coeffs(N_SOURCES, 11)
    assert torch.equal(rd.prior, prior)
    for a in ATTRIBUTES:
        sl = ATTRIBUTE_SLICES[a]
        torch.testing.assert_close(rd.deltas[("swap", a)], p[pairing, sl] - p[:, sl], rtol=0, atol=1e-5)
        torch.testing.assert_close(rd.deltas[("prior", a)], prior[:, sl] - p[:, sl], rtol=0, atol=1e-5)
    assert len(received) == 2 * 5 * N_SOURCES           # batch 1: one call per target kind, attribute, source
    calls = iter(received)
    for t in ev.targets:
        for a in ATTRIBUTES:
            for i in range(N_SOURCES):
                rows, delta = next(calls)
                assert rows == [i] and torch.equal(delta[0], rd.deltas[(t, a)][i])
    # The swap edit is the partner's image: exact completion 1, readings equal the partner's.
    f64 = MorphableModel.mini().double()
    for e in ev.evaluators:
        ps = rd.source[e]
        for t in ev.targets:
            for a in ATTRIBUTES:
                pg = rd.edited[("partner", e, t, a)]
                assert torch.equal(pg, ps[pairing])
                sc = ev.score("partner", e, t, a)
                if t == "swap":
                    assert sc.completion == 1.0 and sc.target_distance == 0.0
                    assert all(v == 1.0 for b, v in sc.leakage.items() if b != a)
                if t == "swap":                                  # the partner is as far as a random face
                    assert sc.moved[a] == ev.random_distance[e][a] == sc.source_distance
    _check_brute_force(ev, "partner", f64)


def test_delta_readers_take_p_s_and_the_swap_target_from_an_evaluators_readings(nets, sources):
    """A method in delta_readers gets delta = (the evaluator's reading of the swap partner's image, or the prior
    draw) - (its reading of the source image); the same editors without it get T's delta; the field round-trips."""
    G, R, T, R2 = nets
    styles, seeds = sources
    got = {"by_T": {}, "by_second": {}}

    def recorder(name):
        def editor(s, delta, a):
            rows = tuple(int(torch.nonzero((styles == r).all(1))[0]) for r in s)
            got[name].setdefault(a, []).append((rows, delta.clone()))
            return s
        return {a: (lambda s, d, a=a: editor(s, d, a)) for a in ATTRIBUTES}

    ev = evaluate(G, T, {"by_T": recorder("by_T"), "by_second": recorder("by_second")}, styles, seeds,
                  {"recon": R, "second": R2}, batch=N_SOURCES, seed=6, keep_readings=True,
                  delta_readers={"by_second": "second"})
    rd, pairing = ev.readings, ev.readings.pairing
    read = rd.source["second"]
    for a in ATTRIBUTES:
        sl = ATTRIBUTE_SLICES[a]
        (rows_s, d_swap), (rows_p, d_prior) = got["by_second"][a]
        assert rows_s == rows_p == tuple(range(N_SOURCES))
        torch.testing.assert_close(d_swap, read[pairing, sl] - read[:, sl], rtol=0, atol=1e-6)
        torch.testing.assert_close(d_prior, rd.prior[:, sl] - read[:, sl], rtol=0, atol=1e-6)
        (_, t_swap), (_, t_prior) = got["by_T"][a]
        assert torch.equal(t_swap, rd.deltas[("swap", a)]) and torch.equal(t_prior, rd.deltas[("prior", a)])
        assert not torch.allclose(t_swap, d_swap)        # T does not read the images exactly
    assert ev.delta_readers == {"by_second": "second"}
    back = EditingEvaluation.from_dict(json.loads(json.dumps(ev.to_dict(), allow_nan=False)))
    assert back.delta_readers == ev.delta_readers and back.table() == ev.table()
    assert "by_second: P_s read by second" in ev.table()
    for bad in ({"nope": "second"}, {"by_T": "third"}):
        with pytest.raises(ValueError, match="delta_readers must map method names"):
            evaluate(G, T, {"by_T": recorder("by_T")}, styles, seeds, {"recon": R}, delta_readers=bad)


def test_evaluate_bad_input(nets, sources):
    G, R, T, _ = nets
    styles, seeds = sources
    ok = {"id": {"pose": identity_editor}}
    ev = {"recon": R}
    with pytest.raises(ValueError, match=r"method 'bad', attribute 'pose': the editor returned \(1, 1408\)"):
        evaluate(G, T, {"bad": {"pose": lambda s, d: s[:1]}}, styles[:2], seeds[:2], ev, targets=("swap",))
    with pytest.raises(ValueError, match="returned NaN/Inf"):
        evaluate(G, T, {"nan": {"pose": lambda s, d: s * float("nan")}}, styles[:2], seeds[:2], ev,
                 targets=("swap",))
    with pytest.raises(ValueError, match="unknown attribute 'hair'"):
        evaluate(G, T, {"m": {"hair": identity_editor}}, styles, seeds, ev)
    with pytest.raises(ValueError, match=r"attributes must be distinct names"):
        evaluate(G, T, ok, styles, seeds, ev, attributes=("pose", "hair"))
    with pytest.raises(ValueError, match=r"targets must be distinct names"):
        evaluate(G, T, ok, styles, seeds, ev, targets=("swap", "random"))
    with pytest.raises(ValueError, match=r"styles must be float \[N, 1408\].*found \(5, 1407\)"):
        evaluate(G, T, ok, styles[:, :-1], seeds, ev)
    with pytest.raises(ValueError, match="N >= 2 sources.*found N = 1"):
        evaluate(G, T, ok, styles[:1], seeds[:1], ev)
    with pytest.raises(ValueError, match="noise_seeds must be N = 5 ints"):
        evaluate(G, T, ok, styles, seeds[:4], ev)
    with pytest.raises(ValueError, match="evaluators must be a non-empty dict"):
        evaluate(G, T, ok, styles, seeds, {})
    with pytest.raises(ValueError, match="methods must be a non-empty dict"):
        evaluate(G, T, {}, styles, seeds, ev)
    with pytest.raises(ValueError, match="the editor must be callable"):
        evaluate(G, T, {"m": {"pose": 3}}, styles, seeds, ev)
    with pytest.raises(ValueError, match=r"prior\(n, seed\)'s result must be finite float coefficients \[5, 257\]"):
        evaluate(G, T, ok, styles, seeds, ev, prior=lambda n, s: torch.zeros(n, 256))
    R.train()
    try:
        with pytest.raises(ValueError, match="evaluator 'recon' is in training mode"):
            evaluate(G, T, ok, styles, seeds, ev)
    finally:
        R.eval()


# ------------------------------------------------------------------------------------------------ perfect edit
def test_perfect_reference_reads_the_world_renders_of_the_exact_edits(nets, sources):
    """The perfect-edit reference (method PERFECT): its readings are the evaluators' readings of the world's renders
    of the source coefficients and of the same coefficients with the edited slice set to the target, rendered alone
    (batch 1) with the same background; its measures equal the brute force on those readings, with its own leakage
    normaliser (the renders' paired distances)."""
    G, R, T, R2 = nets
    styles, seeds = sources
    coeffs = sample_coeffs(N_SOURCES, 5)
    ev = evaluate(G, T, {"id": {a: identity_editor for a in ("pose", "shape")}}, styles, seeds,
                  {"recon": R, "second": R2}, attributes=("pose", "shape"), batch=1, seed=3, keep_readings=True,
                  reference=coeffs)
    assert ev.methods == ("id", PERFECT)
    rd, pairing, model = ev.readings, derangement(N_SOURCES, 3), mini_model()
    prior = sample_coeffs(N_SOURCES, 3)

    def own(net, c, i):   # one render alone, the background of source i's batch (seed * 1_000_003 + i)
        return label_images(net, to_uint8(render(c[None], "human", size=64, seed=3 * 1_000_003 + i)), model)[0]

    f64 = MorphableModel.mini().double()
    rendered = {}
    for e, net in (("recon", R), ("second", R2)):
        ps = rendered[e] = torch.cat([own(net, coeffs[i], i) for i in range(N_SOURCES)])
        for t in ("swap", "prior"):
            for a in ("pose", "shape"):
                sl = ATTRIBUTE_SLICES[a]
                edited = coeffs.clone()
                edited[:, sl] = coeffs[pairing, sl] if t == "swap" else prior[:, sl]
                pg = torch.cat([own(net, edited[i], i) for i in range(N_SOURCES)])
                assert torch.equal(rd.edited[(PERFECT, e, t, a)], pg)
                pt = ps[pairing] if t == "swap" else prior
                completion, leak, off = _brute_force(f64, ps, pg, pt, pairing.tolist(), a)
                sc = ev.score(PERFECT, e, t, a)
                assert sc.completion == pytest.approx(completion, rel=1e-4, abs=1e-5)
                assert sc.offdiag_leakage == pytest.approx(off, rel=1e-4, abs=1e-7)
                for b in ATTRIBUTES:
                    assert math.isnan(sc.leakage[b]) if b == a else sc.leakage[b] == pytest.approx(leak[b], 1e-4)
        assert torch.equal(rd.reference_source[e], ps)
        rand = {b: sum(float(attribute_distance(f64, ps[i:i + 1].double(), ps[pairing[i]:pairing[i] + 1].double(),
                                                b)[0]) for i in range(N_SOURCES)) / N_SOURCES for b in ATTRIBUTES}
        for b in ATTRIBUTES:
            assert ev.reference_random_distance[e][b] == pytest.approx(rand[b], rel=1e-4)
    # the generated methods keep the generated sources' readings and normaliser
    assert not torch.allclose(rd.source["recon"], rendered["recon"])
    assert ev.random_distance["recon"]["pose"] != ev.reference_random_distance["recon"]["pose"]
    back = EditingEvaluation.from_dict(json.loads(json.dumps(ev.to_dict(), allow_nan=False)))
    assert back.reference_random_distance == ev.reference_random_distance
    assert back.to_dict() == ev.to_dict()
    # each row is rendered alone: another batch size renders the same images (readings equal up to the batch
    # rounding of the recon's CPU kernels)
    again = evaluate(G, T, {"id": {"pose": identity_editor}}, styles, seeds, {"recon": R}, attributes=("pose",),
                     batch=3, seed=3, keep_readings=True, reference=coeffs)
    torch.testing.assert_close(again.readings.reference_source["recon"], rendered["recon"], rtol=0, atol=2e-4)
    torch.testing.assert_close(again.readings.edited[(PERFECT, "recon", "swap", "pose")],
                               rd.edited[(PERFECT, "recon", "swap", "pose")], rtol=0, atol=2e-4)
    assert ev.score("id", "recon", "swap", "pose").completion == pytest.approx(0.0, abs=1e-6)
    assert "| perfect | pose |" in ev.table()


def test_perfect_reference_shares_the_background_between_source_and_edit(nets, sources):
    """A renderer that ignores the edited slice makes every perfect edit the source image itself: completion and
    leakage exactly 0 (a background drawn anew for the edit would move every reading). Rows are rendered one at a
    time, seeded by their index."""
    G, R, T, _ = nets
    styles, seeds = sources
    coeffs = sample_coeffs(N_SOURCES, 6)
    calls = []

    def pose_blind(c, seed):
        calls.append((len(c), seed))
        c = c.clone()
        c[:, ATTRIBUTE_SLICES["pose"]] = 0
        return render(c, "human", size=64, seed=seed)

    ev = evaluate(G, T, {"id": {"pose": identity_editor}}, styles, seeds, {"recon": R}, attributes=("pose",),
                  targets=("swap",), batch=2, seed=1, reference=coeffs, render_fn=pose_blind)
    sc = ev.score(PERFECT, "recon", "swap", "pose")
    assert sc.completion == 0.0 and sc.target_distance == sc.source_distance
    assert all(v == 0.0 for b, v in sc.leakage.items() if b != "pose") and sc.fd == 0.0
    assert calls == [(1, 1_000_003 + k) for k in range(N_SOURCES)] * 2      # sources, then the edit: row by row


def test_perfect_reference_bad_input(nets, sources):
    G, R, T, _ = nets
    styles, seeds = sources
    ok = {"id": {"pose": identity_editor}}
    with pytest.raises(ValueError, match=r"reference must be finite float coefficients \[5, 257\].*found \(4, 257\)"):
        evaluate(G, T, ok, styles, seeds, {"recon": R}, reference=torch.zeros(4, 257))
    bad = torch.zeros(5, 257)
    bad[2, 3] = float("nan")
    with pytest.raises(ValueError, match="reference must be finite"):
        evaluate(G, T, ok, styles, seeds, {"recon": R}, reference=bad)
    with pytest.raises(ValueError, match="'perfect' is the perfect-edit reference's"):
        evaluate(G, T, {PERFECT: {"pose": identity_editor}}, styles, seeds, {"recon": R},
                 reference=torch.zeros(5, 257))
