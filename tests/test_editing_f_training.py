"""Training F^i (issue 10 §1): the loss terms against float64 references, T's view of an edit against exact cases,
the trainer's checks, exact resume, and learning on the shipped mini generator and T.

Pairs are built in memory: styles of random latents of the shipped mini generator, labels = the shipped T's
predictions plus a little prior-scaled noise (standing in for the reconstruction network's labels), images (render
mode only) re-synthesised from the styles.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from cddfm3d import assets
from cddfm3d.editing import ATTRIBUTE_SLICES, ATTRIBUTES
from cddfm3d.editing.f_training import (DENSE_GEOMETRY_WEIGHT, EDGE_SCALE, EXPORT_FILE, FTrainConfig, FTrainer,
                                        jaw_contour, landmark_term, split_indices, t_view, train_f)
from cddfm3d.editing.latents import sample_latents
from cddfm3d.editing.manipulator import LatentManipulator
from cddfm3d.editing.labels import label_images
from cddfm3d.editing.pairs import noise_for, resynthesize
from cddfm3d.serialization import state_sha256
from cddfm3d.face3d import ReconNet
from cddfm3d.face3d.measures import attribute_distance
from cddfm3d.face3d.morphable import MorphableModel
from cddfm3d.serialization import read_safetensors
from cddfm3d.world.domains import mini_model
from cddfm3d.world.priors import prior_std, sample_coeffs

N_PAIRS = 160


@pytest.fixture(scope="module")
def world():
    G = assets.load("mini/generator")
    T = assets.load("mini/attribute_predictor")
    with torch.no_grad():
        ws = sample_latents(G, N_PAIRS, torch.Generator().manual_seed(0))
        styles = G.flatten_styles(G.w_to_styles(ws))
        noise = torch.randn(N_PAIRS, 257, generator=torch.Generator().manual_seed(1))
        labels = T(styles) + 0.05 * prior_std().float() * noise
    return {"G": G, "T": T, "sets": assets.load("mini/layer_sets"), "styles": styles, "labels": labels,
            "channels": [m.channels for m in G.style_layers]}


@pytest.fixture(scope="module")
def fm64():
    return MorphableModel.mini(dtype=torch.float64)


def tiny(attribute="expression", **kw) -> FTrainConfig:
    cfg = dict(attribute=attribute, edit_layers=[0, 3, 9, 13], steps=10, batch_size=8, lr=3e-3, warmup=2,
               val_fraction=0.2, eval_every=4, eval_max=8, checkpoint_every=3)
    return FTrainConfig(**{**cfg, **kw})


def trainer_for(world, tmp_path, cfg, n=40, **kw) -> FTrainer:
    return FTrainer(cfg, world["T"], world["styles"][:n], world["labels"][:n], world["channels"], tmp_path, **kw)


def perturb(module, seed, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


# ============================================================================================ loss terms
def landmark_brute_force(pred, target) -> float:
    """[mean squared difference over mouth points 48-67 + 20 x the same over points 0-47] / 68 (x and y, every
    sample), the official formula, by explicit loops in Python floats."""
    p, t = pred.double().tolist(), target.double().tolist()
    sums = {"mouth": 0.0, "other": 0.0}
    counts = {"mouth": 0, "other": 0}
    for b in range(len(p)):
        for i in range(68):
            part = "mouth" if 48 <= i <= 67 else "other"
            for c in range(2):
                sums[part] += (p[b][i][c] - t[b][i][c]) ** 2
                counts[part] += 1
    return (sums["mouth"] / counts["mouth"] + 20 * sums["other"] / counts["other"]) / 68


def test_landmark_term_is_the_official_formula():
    g = torch.Generator().manual_seed(0)
    pred, target = 64 * torch.rand(3, 68, 2, generator=g), 64 * torch.rand(3, 68, 2, generator=g)
    assert landmark_term(pred, target).item() == pytest.approx(landmark_brute_force(pred, target), rel=1e-6)
    pred64, target64 = pred.double(), target.double()
    assert landmark_term(pred64, target64).item() == pytest.approx(landmark_brute_force(pred, target), rel=1e-12)
    # one pixel on a mouth point weighs 1/20 of one pixel on an eye point
    mouth, eye = target64.clone(), target64.clone()
    mouth[0, 60, 0] += 1
    eye[0, 40, 0] += 1
    ratio = landmark_term(eye, target64) / landmark_term(mouth, target64)
    assert ratio.item() == pytest.approx(20 * 20 / 48, rel=1e-12)     # x20 weight, over 48 instead of 20 points


def test_jaw_contour_is_the_canonical_shape_of_keypoints_0_to_16(fm64):
    c = sample_coeffs(5, seed=3).double()
    full = fm64(c).shape[:, fm64.keypoints[:17], :2]
    torch.testing.assert_close(jaw_contour(fm64, c), full, rtol=0, atol=1e-12)
    moved = c.clone()
    moved[:, ATTRIBUTE_SLICES["pose"]] += 0.3          # pose, translation, albedo, light do not move it
    moved[:, 144:] += 0.5
    torch.testing.assert_close(jaw_contour(fm64, moved), full, rtol=0, atol=1e-12)
    for a in ("shape", "expression"):                   # identity and expression do
        other = c.clone()
        other[:, ATTRIBUTE_SLICES[a]] += 1.0
        assert (jaw_contour(fm64, other) - full).abs().max() > 1e-3, a


def image_reading(G, recon, s_hat, seeds) -> torch.Tensor:
    """The reconstruction network's reading (``label_images``: converted to its input range) of G's image of each
    row of ``s_hat`` alone, on its own noise seed, clamped to [-1, 1]."""
    out = []
    for s, seed in zip(s_hat, seeds, strict=True):
        image = G.synthesis_from_styles(G.unflatten_styles(s[None]), noise=noise_for(G, [int(seed)]))
        out.append(label_images(recon, image.clamp(-1, 1), mini_model())[0])
    return torch.cat(out)


def reference_terms(trainer: FTrainer, fm64, w_rows, v_rows, G=None, recon=None, seeds=None) -> dict:
    """Every loss term recomputed in float64 from the module docstring's definitions (P_edit, P_cons built by
    slice assignment, the whole 3DMM forward for landmarks, contours and vertices). With G, recon and seeds: the
    image mode (P_hat read from each edited image synthesised alone; the labels as references; with the config's
    delta_from "labels" the editor's delta from the labels too)."""
    F, T, sl, size = trainer.net, trainer.T, ATTRIBUTE_SLICES[trainer.cfg.attribute], trainer.image_size
    ew = trainer.cfg.edit_weight
    with torch.no_grad():
        s_w = trainer.styles[w_rows]
        P_w, P_v = T(s_w), T(trainer.styles[v_rows])
        if trainer.cfg.delta_from == "labels":
            s_hat = F(s_w, (trainer.labels[v_rows] - trainer.labels[w_rows])[:, sl])
        else:
            s_hat = F(s_w, (P_v - P_w)[:, sl])
        P_hat = (T(s_hat) if G is None else image_reading(G, recon, s_hat, seeds[w_rows])).double()
        ds0 = (F(s_w, torch.zeros(len(w_rows), F.p_dim)) - s_w).double()
    if G is not None:
        P_w, P_v = trainer.labels[w_rows], trainer.labels[v_rows]
    P_w, P_v = P_w.double(), P_v.double()
    P_edit, P_cons = P_v.clone(), P_hat.clone()
    P_edit[:, sl] = P_hat[:, sl]
    P_cons[:, sl] = P_w[:, sl]
    ends = np.cumsum(trainer.net.config["layer_channels"])       # the flat layout, from the channel counts
    edited = torch.zeros(ds0.shape[1], dtype=torch.bool)
    for k in trainer.cfg.edit_layers:
        edited[ends[k] - trainer.net.config["layer_channels"][k]:ends[k]] = True
    std = F.net.style_std.double()
    out = {"rec": ((ds0 / std)[:, edited] ** 2).mean().item()}

    def forward(P):
        return fm64(P, image_size=size)

    def param(P, rows):
        o, r = forward(P), forward(trainer.labels[rows].double())
        colour = torch.sqrt(1e-6 + ((o.colors - r.colors) ** 2).sum(-1)).mean()
        geometry = ((o.screen[..., :2] - r.screen[..., :2]) ** 2).sum(-1).mean()
        return (colour + DENSE_GEOMETRY_WEIGHT * geometry).item()

    out["render"] = (ew * param(P_edit, v_rows) + param(P_cons, w_rows)) / 2
    out["landmark"] = (ew * landmark_brute_force(forward(P_edit).landmarks, forward(P_v).landmarks)
                       + landmark_brute_force(forward(P_cons).landmarks, forward(P_w).landmarks)) / 2
    kp = fm64.keypoints[:17]
    if trainer.cfg.attribute == "shape":
        # P_edit: v's coefficients with P_hat's identity (the official P_hat would carry w's expression)
        out["edge"] = EDGE_SCALE * ((fm64(P_edit).shape[:, kp, :2] - fm64(P_v).shape[:, kp, :2]) ** 2).mean().item()
    return out


@pytest.mark.parametrize("attribute,edit_weight", [("shape", 1.0), ("expression", 1.0), ("expression", 2.5)])
def test_loss_terms_match_float64_references(world, fm64, tmp_path, attribute, edit_weight):
    weights = {"rec": 2.0, "render": 3.0, "landmark": 0.5, "edge": 0.25}
    tr = trainer_for(world, tmp_path, tiny(attribute, weights=weights, edit_weight=edit_weight))
    perturb(tr.net, seed=4)
    w_rows, v_rows = torch.tensor([0, 5, 7, 2]), torch.tensor([11, 3, 30, 8])
    with torch.no_grad():
        terms = {k: v.item() for k, v in tr.losses(w_rows, v_rows).items()}
    ref = reference_terms(tr, fm64, w_rows, v_rows)
    assert set(terms) == {"total", *ref}                    # edge only for shape
    assert ("edge" in terms) == (attribute == "shape") and tr.cfg.weight("edge") == (0.25 if attribute == "shape"
                                                                                      else 0.0)
    for k, v in ref.items():
        assert v > 0 and terms[k] == pytest.approx(v, rel=2e-4), (k, terms[k], v)
    assert terms["total"] == pytest.approx(sum(weights[k] * ref[k] for k in ref), rel=2e-4)
    # the rec term is a mean over the edited dimensions, not diluted over all of S
    D, n_edit = tr.styles.shape[1], sum(world["channels"][k] for k in tr.cfg.edit_layers)
    assert n_edit < D / 2
    F = tr.net
    with torch.no_grad():
        ds0 = F.offset(tr.styles[w_rows], torch.zeros(4, F.p_dim)) / F.net.style_std
    assert terms["rec"] == pytest.approx(ds0.square().sum().item() / (4 * n_edit), rel=1e-4)
    assert terms["rec"] == pytest.approx(ds0.square().mean().item() * D / n_edit, rel=1e-4)


def test_t_view_against_exact_cases(world):
    T, fm = world["T"], mini_model()
    s = world["styles"][:12]
    untrained = LatentManipulator("light", world["channels"], world["sets"]["light"])
    v = t_view(untrained, T, s, fm)
    assert v["completion_T"] == 0.0 and v["leakage_T_mean"] == 0.0 and v["n"] == 12
    assert set(v["leakage_T"]) == set(ATTRIBUTES) - {"light"}

    class Swap(torch.nn.Module):
        """Returns the target's styles: T then reads the target exactly (completion 1) and every other attribute
        moves by exactly the source-target distance (leakage 1)."""
        attribute = "pose"

        def forward(self, styles, delta):
            return styles.roll(-1, 0)

    v = t_view(Swap(), T, s, fm)
    assert v["completion_T"] == pytest.approx(1.0, abs=1e-4)
    for b, x in v["leakage_T"].items():
        assert x == pytest.approx(1.0, abs=1e-4), b

    class Half(torch.nn.Module):
        """Moves the styles half-way to the target's: T's reading, by a float64 re-computation of the ratios."""
        attribute = "expression"

        def forward(self, styles, delta):
            return (styles + styles.roll(-1, 0)) / 2

    v = t_view(Half(), T, s, fm)
    with torch.no_grad():
        P_s = T(s)
        P_t, P_g = P_s.roll(-1, 0), T((s + s.roll(-1, 0)) / 2)
    d = {a: (attribute_distance(fm, P_g, P_t, a).double().mean(), attribute_distance(fm, P_s, P_t, a).double().mean(),
             attribute_distance(fm, P_g, P_s, a).double().mean()) for a in ATTRIBUTES}
    assert v["completion_T"] == pytest.approx(1 - (d["expression"][0] / d["expression"][1]).item(), abs=1e-5)
    for b in v["leakage_T"]:
        assert v["leakage_T"][b] == pytest.approx((d[b][2] / d[b][1]).item(), rel=1e-5), b


def test_split_indices():
    tr, va = split_indices(50, 0.2, 3)
    assert len(va) == 10 and len(tr) == 40
    assert sorted(tr.tolist() + va.tolist()) == list(range(50))
    assert torch.equal(split_indices(50, 0.2, 3)[1], va) and not torch.equal(split_indices(50, 0.2, 4)[1], va)
    assert len(split_indices(10, 0.01, 0)[1]) == 1      # at least one held out


# ============================================================================================ checks
def test_config_validation():
    base = dict(attribute="pose", edit_layers=[3, 0])
    assert FTrainConfig(**base).edit_layers == [0, 3]
    for field, bad, pattern in [
        ("batch_size", 7, "batch_size must be even"),
        ("batch_size", 2, "batch_size must be even and >= 4"),
        ("batch_size", 0, "batch_size must be an int >= 1"),
        ("attribute", "hair", "attribute: expected one of"),
        ("loss_mode", "pixels", "loss_mode must be one of"),
        ("activation", "tanh", "activation must be None or one of"),
        ("weights", {"perceptual": 1.0}, "weights: expected .* found {'perceptual': 1.0}"),
        ("weights", {"rec": -1.0}, "found {'rec': -1.0}"),
        ("weights", {"rec": float("nan")}, "found {'rec': nan}"),
        ("weights", {"rec": float("inf")}, "found {'rec': inf}"),
        ("weights", {"rec": True}, "found {'rec': True}"),
        ("val_fraction", 1.0, "val_fraction must be in"),
        ("lr", 0.0, "lr must be > 0"),
        ("steps", 0, "steps must be an int >= 1"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            FTrainConfig(**{**base, field: bad})
    cfg = FTrainConfig(**base, weights={"edge": 3.0, "landmark": 0})
    assert cfg.weight("edge") == 0.0 and cfg.weight("landmark") == 0.0 and cfg.weight("render") == 10.0
    assert FTrainConfig(attribute="shape", edit_layers=[0], weights={"edge": 3.0}).weight("edge") == 3.0


def test_trainer_rejects_bad_inputs(world, tmp_path):
    n_layers = len(world["channels"])
    with pytest.raises(ValueError, match=rf"edit_layers \[0, {n_layers}\] must be a non-empty subset of the "
                                         rf"{n_layers} style layers"):
        trainer_for(world, tmp_path, tiny(edit_layers=[0, n_layers]))
    with pytest.raises(ValueError, match=r"styles must be \[N, 1408\]"):
        FTrainer(tiny(), world["T"], world["styles"][:20, :100], world["labels"][:20], world["channels"], tmp_path)
    with pytest.raises(ValueError, match=r"labels must be \[20, 257\]"):
        FTrainer(tiny(), world["T"], world["styles"][:20], world["labels"][:19], world["channels"], tmp_path)
    with pytest.raises(ValueError, match="loss_mode 'render' needs the pairs' images"):
        trainer_for(world, tmp_path, tiny(loss_mode="render"))
    with pytest.raises(ValueError, match=r"images must be uint8 \[40, 3, S, S\], found torch.float32"):
        trainer_for(world, tmp_path, tiny(loss_mode="render"), images=torch.zeros(40, 3, 64, 64))
    with pytest.raises(ValueError, match="image_size 224 differs from the images' side 64"):
        trainer_for(world, tmp_path, tiny(loss_mode="render"), images=torch.zeros(40, 3, 64, 64, dtype=torch.uint8),
                    image_size=224)
    with pytest.raises(ValueError, match=r"half a batch \(16\) is larger than the training split \(8 pairs\)"):
        trainer_for(world, tmp_path, tiny(batch_size=32), n=10)
    assert not (tmp_path / "checkpoint.pt").exists()


# ============================================================================================ training
def test_t_stays_frozen_and_only_the_layer_set_is_edited(world, tmp_path):
    T = copy.deepcopy(world["T"]).requires_grad_(True)       # the caller's T may even require gradients
    before = {k: v.clone() for k, v in T.state_dict().items()}
    cfg = tiny(steps=4)
    tr = FTrainer(cfg, T, world["styles"][:40], world["labels"][:40], world["channels"], tmp_path)
    tr.start(resume=False)
    tr.train(progress=False)
    for k, v in before.items():
        assert torch.equal(T.state_dict()[k], v) and torch.equal(tr.T.state_dict()[k], v), k
    assert all(p.grad is None for p in T.parameters()) and all(p.grad is None for p in tr.T.parameters())
    assert not tr.T.training and not tr.net.training
    s = world["styles"][40:46]
    delta = torch.randn(6, 64, generator=torch.Generator().manual_seed(0))
    s_g = tr.net(s, delta)
    offsets = tr.net.net.offsets
    for k in range(len(world["channels"])):
        a, b = offsets[k], offsets[k + 1]
        assert torch.equal(s_g[:, a:b], s[:, a:b]) != (k in cfg.edit_layers), k
    # the export is the trained network
    F = LatentManipulator.load(tmp_path / EXPORT_FILE)
    assert F.edit_layers == cfg.edit_layers and torch.equal(F(s, delta), s_g)


def test_resume_is_bit_exact(world, tmp_path):
    styles, labels, T, ch = world["styles"][:40], world["labels"][:40], world["T"], world["channels"]
    cfg = tiny()
    full = train_f(cfg, T, styles, labels, ch, tmp_path / "full", progress=False)
    first = train_f(cfg, T, styles, labels, ch, tmp_path / "parts", progress=False, stop_at_step=5)
    assert first.step == 5 and not torch.equal(first.net.net.out[0].weight, full.net.net.out[0].weight)
    torch.manual_seed(1234)                                   # whatever happened in between
    rest = train_f(cfg, T, styles, labels, ch, tmp_path / "parts", progress=False)
    assert rest.step == full.step == 10
    for k, v in full.net.state_dict().items():
        assert torch.equal(rest.net.state_dict()[k], v), k
    for a, b in zip(full.opt.state.values(), rest.opt.state.values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)        # Adam's moments
    assert torch.equal(full.rng.get_state(), rest.rng.get_state())
    assert rest.log == full.log and [e["step"] for e in full.log if "val" in e] == [4, 8, 10]
    (ta, ma), (tb, mb) = (read_safetensors(tmp_path / d / EXPORT_FILE) for d in ("parts", "full"))
    assert ma == mb and ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    # the run's identity: the same architecture, pairs and T
    with pytest.raises(ValueError, match="code_dim=32 in the checkpoint, code_dim=16 requested"):
        FTrainer(tiny(code_dim=16), T, styles, labels, ch, tmp_path / "parts").start()
    with pytest.raises(ValueError, match="trained on 40 pairs, 39 given"):
        FTrainer(cfg, T, styles[:39], labels[:39], ch, tmp_path / "parts").start()
    with pytest.raises(ValueError, match="'labels_sha256'.*other pairs"):
        FTrainer(cfg, T, styles, labels.flip(0), ch, tmp_path / "parts").start()
    other_T = copy.deepcopy(T)
    perturb(other_T, seed=1, scale=1e-3)
    with pytest.raises(ValueError, match="'predictor_sha256'.*other T"):
        FTrainer(cfg, other_T, styles, labels, ch, tmp_path / "parts").start()


def test_param_mode_learns_an_expression_edit(world, tmp_path):
    """60 steps on 128 training pairs: T's view of the held-out edits goes from exactly 0 completion to well above
    (measured 0.35) while the other attributes move little (measured mean leakage 0.13; moving the whole face to
    the target's, as a StyleRig-without-selection failure would, gives 1)."""
    cfg = FTrainConfig(attribute="expression", edit_layers=world["sets"]["expression"], steps=60, batch_size=16,
                       lr=3e-3, warmup=5, val_fraction=0.2, eval_every=30, checkpoint_every=100)
    tr = FTrainer(cfg, world["T"], world["styles"], world["labels"], world["channels"], tmp_path)
    before = tr.evaluate()
    assert before["n"] == 32 and before["completion_T"] == 0.0 and before["leakage_T_mean"] == 0.0
    tr.start(resume=False)
    tr.train(progress=False)
    after = tr.evaluate()
    assert after["completion_T"] > 0.2, after
    assert after["leakage_T_mean"] < 0.3 and max(after["leakage_T"].values()) < 0.4, after
    vals = [e for e in tr.log if "val" in e]
    assert [e["step"] for e in vals] == [30, 60] and vals[-1]["val"] == after
    losses = [e["total"] for e in tr.log if "total" in e]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))


@pytest.fixture(scope="module")
def rendered(world):
    """24 pairs with their images, re-synthesised by the shipped generator."""
    n = 24
    seeds = torch.arange(100, 100 + n)
    return world["styles"][:n], world["labels"][:n], resynthesize(world["G"], world["styles"][:n], seeds)


@pytest.mark.parametrize("attribute", ["shape", "light"])
def test_render_mode_steps(world, rendered, tmp_path, attribute):
    styles, labels, images = rendered
    cfg = tiny(attribute, loss_mode="render", render_batch=3, steps=2, eval_every=2)
    tr = FTrainer(cfg, world["T"], styles, labels, world["channels"], tmp_path, images=images)
    assert tr.image_size == images.shape[-1] == 64
    perturb(tr.net, seed=2)
    w_rows, v_rows = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7])
    terms = tr.losses(w_rows, v_rows)
    assert set(terms) == {"total", "rec", "render", "landmark"} | ({"edge"} if attribute == "shape" else set())
    assert all(bool(torch.isfinite(v)) and v.item() > 0 for v in terms.values()), terms
    # the photometric term compares with the images: other images, another value
    tr.images = 255 - images
    assert tr.losses(w_rows, v_rows)["render"].item() != pytest.approx(terms["render"].item(), rel=1e-3)
    tr.images = images
    # ... and differs from the per-vertex variant on the same rows
    param = trainer_for(world, tmp_path / "p", tiny(attribute, loss_mode="param"), n=24)
    param.net.load_state_dict(tr.net.state_dict())
    assert param.losses(w_rows, v_rows)["landmark"].item() == pytest.approx(terms["landmark"].item(), rel=1e-5)
    w0 = [p.detach().clone() for p in tr.net.parameters()]
    tr.start(resume=False)
    tr.train(progress=False)
    assert tr.step == 2 and all(torch.isfinite(torch.tensor(e["total"])) for e in tr.log if "total" in e)
    assert all(not torch.equal(a, b) for a, b in zip(w0, tr.net.parameters(), strict=True))


# ============================================================================================ image mode
@pytest.fixture(scope="module")
def image_world(world):
    """The pairs as gen-pairs makes them: noise seeds, and labels = the shipped recon's readings of the images."""
    G, recon = world["G"], assets.load("mini/recon").eval()
    seeds = torch.arange(N_PAIRS) * 7 + 100
    with torch.no_grad():
        labels, _ = label_images(recon, resynthesize(G, world["styles"], seeds), mini_model())
    return {"recon": recon, "seeds": seeds, "labels": labels}


def image_trainer(world, iw, tmp_path, cfg, n=40, **kw) -> FTrainer:
    return FTrainer(cfg, world["T"], world["styles"][:n], iw["labels"][:n], world["channels"], tmp_path,
                    G=world["G"], recon=iw["recon"], noise_seeds=iw["seeds"][:n], **kw)


@pytest.mark.parametrize("attribute,delta_from", [("shape", "T"), ("light", "T"), ("light", "labels")])
def test_image_mode_loss_terms_match_float64_references(world, image_world, fm64, tmp_path, attribute, delta_from):
    """P_hat is the recon's reading of each edited image (synthesised alone on its source's noise), and the
    references are the labels, not T's predictions; the editor's delta comes from T or from the labels."""
    weights = {"rec": 2.0, "render": 3.0, "landmark": 0.5, "edge": 0.25}
    tr = image_trainer(world, image_world, tmp_path, tiny(attribute, weights=weights, through="image",
                                                         edit_weight=1.5, delta_from=delta_from))
    perturb(tr.net, seed=5)
    w_rows, v_rows = torch.tensor([1, 6, 9, 3]), torch.tensor([12, 2, 31, 8])
    with torch.no_grad():
        terms = {k: v.item() for k, v in tr.losses(w_rows, v_rows).items()}
        in_t_mode = {k: v.item() for k, v in trainer_for(world, tmp_path / "t", tiny(attribute, weights=weights,
                                                                                      edit_weight=1.5))
                     .losses(w_rows, v_rows).items()}
    ref = reference_terms(tr, fm64, w_rows, v_rows, world["G"], image_world["recon"], image_world["seeds"][:40])
    assert set(terms) == {"total", *ref}
    for k, v in ref.items():
        assert v > 0 and terms[k] == pytest.approx(v, rel=5e-4), (k, terms[k], v)
    assert terms["total"] == pytest.approx(sum(weights[k] * ref[k] for k in ref), rel=5e-4)
    assert abs(terms["render"] - in_t_mode["render"]) > 1e-3 * terms["render"]     # another P_hat, other references


def test_image_mode_checks_and_init(world, image_world, tmp_path):
    cfg = tiny(through="image")
    with pytest.raises(ValueError, match="through='image' needs G, recon and noise_seeds"):
        trainer_for(world, tmp_path, cfg)
    with pytest.raises(ValueError, match=r"noise_seeds must be \[40\] ints .* found torch.int64 \(39,\)"):
        FTrainer(cfg, world["T"], world["styles"][:40], image_world["labels"][:40], world["channels"], tmp_path,
                 G=world["G"], recon=image_world["recon"], noise_seeds=image_world["seeds"][:39])
    small = ReconNet("small", image_size=32, width=8, n_stages=3).eval()
    with pytest.raises(ValueError, match="image_size 32 must be G's resolution 64"):
        FTrainer(cfg, world["T"], world["styles"][:40], image_world["labels"][:40], world["channels"], tmp_path,
                 G=world["G"], recon=small, noise_seeds=image_world["seeds"][:40])
    with pytest.raises(ValueError, match="through must be one of"):
        tiny(through="images")
    with pytest.raises(ValueError, match="delta_from must be one of .*'labels' only with through='image'"):
        tiny(delta_from="labels")                       # T mode: T's predictions are the references too
    with pytest.raises(ValueError, match="delta_from must be one of"):
        tiny(through="image", delta_from="recon")
    run = image_trainer(world, image_world, tmp_path / "run", tiny(through="image", steps=1, checkpoint_every=1))
    run.start(resume=False)
    run.train(progress=False)
    with pytest.raises(ValueError, match="delta_from='T' in the checkpoint, delta_from='labels' requested"):
        image_trainer(world, image_world, tmp_path / "run", tiny(through="image", steps=1,
                                                                 delta_from="labels")).start()
    with pytest.raises(ValueError, match="edit_weight must be a finite number >= 0"):
        tiny(edit_weight=-1.0)
    # init: another trainer's network on the same pairs and T is taken over exactly; another architecture refused
    donor = trainer_for(world, tmp_path / "donor", tiny())
    perturb(donor.net, seed=9)
    tr = image_trainer(world, image_world, tmp_path / "img", cfg, init=donor.net)
    for k, v in donor.net.state_dict().items():
        assert torch.equal(tr.net.state_dict()[k], v), k
    with pytest.raises(ValueError, match=r"init differs from this run's network in code_dim \(init 32, run 16\)"):
        image_trainer(world, image_world, tmp_path / "x", tiny(through="image", code_dim=16), init=donor.net)
    with pytest.raises(ValueError, match="init's normalisation 'net.style_mean' differs"):
        FTrainer(tiny(), world["T"], world["styles"][40:80], world["labels"][40:80], world["channels"],
                 tmp_path / "y", init=donor.net)
    with pytest.raises(ValueError, match="init must be a LatentManipulator, found OrderedDict"):
        trainer_for(world, tmp_path / "z", tiny(), init=donor.net.state_dict())
    with pytest.raises(ValueError, match="G's style dimension 1408 is not the pairs' 1000"):
        FTrainer(tiny(edit_layers=[0], through="image"), torch.nn.Linear(1000, 257), world["styles"][:40, :1000],
                 image_world["labels"][:40], [1000], tmp_path / "w", G=world["G"], recon=image_world["recon"],
                 noise_seeds=image_world["seeds"][:40])
    # training moves F only: G, the recon and T stay as they were, and the run records what it read
    G_before = {k: v.clone() for k, v in world["G"].state_dict().items()}
    tr.start(resume=False)
    tr.train(progress=False, max_steps=2)
    assert all(torch.equal(world["G"].state_dict()[k], v) for k, v in G_before.items())
    assert all(p.grad is None for p in tr.G.parameters()) and all(p.grad is None for p in tr.recon.parameters())
    state = torch.load(tmp_path / "img" / "checkpoint.pt", weights_only=True)
    assert state["init_sha256"] == state_sha256(donor.net)
    assert state["generator_sha256"] == state_sha256(world["G"])
    assert state["recon_sha256"] == state_sha256(image_world["recon"])
    # a run continues from its own start: resuming with another init, or with one where it had none, is refused
    other_init = copy.deepcopy(donor.net)
    perturb(other_init, seed=3)
    with pytest.raises(ValueError, match=r"field 'init_sha256' is [0-9a-f]{12}\.\.\., the init given is"):
        image_trainer(world, image_world, tmp_path / "img", cfg, init=other_init).start()
    plain = image_trainer(world, image_world, tmp_path / "plain", cfg)
    plain.start(resume=False)
    plain.train(progress=False, max_steps=1)
    with pytest.raises(ValueError, match="field 'init_sha256' is none \\(the run started afresh\\)"):
        image_trainer(world, image_world, tmp_path / "plain", cfg, init=donor.net).start()
    resumed = image_trainer(world, image_world, tmp_path / "img", cfg, init=donor.net).start()   # the same init
    assert resumed.step == 2 and resumed.init_sha256 == state_sha256(donor.net)
    other = copy.deepcopy(image_world["recon"])
    perturb(other, seed=2, scale=1e-3)
    with pytest.raises(ValueError, match="'recon_sha256'.*other recon"):
        FTrainer(cfg, world["T"], world["styles"][:40], image_world["labels"][:40], world["channels"],
                 tmp_path / "img", G=world["G"], recon=other, noise_seeds=image_world["seeds"][:40]).start()


def test_image_mode_learns_an_edit_read_from_the_images(world, image_world, tmp_path):
    """40 steps from the identity: the recon's reading of the held-out edited images moves toward the targets'
    labels (pose completion read from the images: 0 before, measured 0.45 after), while the expression read from
    them moves 0.19 of the mean distance between two faces (measured)."""
    cfg = FTrainConfig(attribute="pose", edit_layers=world["sets"]["pose"], steps=40, batch_size=16, lr=3e-3,
                       warmup=5, val_fraction=0.2, eval_every=100, checkpoint_every=100, through="image")
    tr = image_trainer(world, image_world, tmp_path, cfg, n=N_PAIRS)
    fm = mini_model()
    rows = tr.val_idx
    targets = rows.roll(-1)
    L = image_world["labels"]

    def read_edits():
        with torch.no_grad():
            s = world["styles"][rows]
            delta = (tr.P[targets] - tr.P[rows])[:, ATTRIBUTE_SLICES["pose"]]
            return image_reading(world["G"], image_world["recon"], tr.net(s, delta), image_world["seeds"][rows])

    def completion(read):
        return 1 - float(attribute_distance(fm, read, L[targets], "pose").mean()
                         / attribute_distance(fm, L[rows], L[targets], "pose").mean())

    assert abs(completion(read_edits())) < 0.02
    tr.start(resume=False)
    tr.train(progress=False)
    after = read_edits()
    assert completion(after) > 0.25
    moved = float(attribute_distance(fm, after, L[rows], "expression").mean()
                  / attribute_distance(fm, L[rows], L[targets], "expression").mean())
    assert moved < 0.4
