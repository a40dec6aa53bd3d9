"""cddfm3d.ui.EditorModel on the shipped mini world (G, T, the five F^i; the reconstruction network as the reader).

References, independent of the model's code: the edit read back from the image by ``mini/recon`` with the
evaluation's measures (:func:`attribute_distance`, normalised by the mean distance between random faces), a fresh
:class:`FaceEditor` doing ``edit`` + ``synthesize`` from scratch, T and the prior's std for the slider units, the
morphable model for the landmarks, ``directional_light`` in float64 for the light mapping, and the files read back
with imageio.
"""
from __future__ import annotations

import copy
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from cddfm3d import assets
from cddfm3d.editing import ATTRIBUTE_SLICES, ATTRIBUTES
from cddfm3d.editing.face_editor import FaceEditor
from cddfm3d.editing.labels import label_images
from cddfm3d.face3d.lighting import directional_light
from cddfm3d.face3d.measures import attribute_distance
from cddfm3d.images import from_uint8
from cddfm3d.ui import Control, EditorModel
from cddfm3d.ui.controls import light_params, light_target
from cddfm3d.ui.model import LATENCY_HISTORY, _block_multiple, check_scale
from cddfm3d.world.domains import mini_model
from cddfm3d.world.priors import POSE_DEG, prior_std

STD = {"shape": 0.9, "expression": 0.8, "albedo": 0.7}     # the mini prior's ID/EXP/TEX_SCALE, written out
START = {"shape": 0, "expression": 80, "albedo": 144, "pose": 224, "light": 227}


@pytest.fixture(scope="module")
def m():
    threads = torch.get_num_threads()
    yield EditorModel.from_assets("mini")                  # threads=1: the interactive default (process-wide)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference():
    return FaceEditor.load("mini")       # a second editor of the same networks: edit + synthesize from scratch


@pytest.fixture(scope="module")
def reader():
    recon = assets.load("mini/recon").eval()
    fm = mini_model()

    def read(image: np.ndarray) -> torch.Tensor:
        x = from_uint8(torch.from_numpy(image).permute(2, 0, 1)[None])
        with torch.no_grad():
            return label_images(recon, x, fm)[0]
    return read, fm


@pytest.fixture(scope="module")
def random_distance(m, reader):
    """{attribute: mean distance between the recon readings of random faces} (the evaluation's leakage unit)."""
    read, fm = reader
    P = []
    for seed in range(100, 116):
        m.load_sample(seed)
        P.append(read(m.source_image))
    P = torch.cat(P)
    return {a: float(attribute_distance(fm, P, P.roll(1, 0), a).mean()) for a in ATTRIBUTES}


def edits_from_coeffs(m) -> dict:
    """The FaceEditor edits of the model's current P_t: a target for each attribute whose coefficients differ."""
    c, s = m.coeffs, m.source_coeffs
    return {a: {"target": torch.from_numpy(c[ATTRIBUTE_SLICES[a]].copy())} for a in ATTRIBUTES
            if not np.array_equal(c[ATTRIBUTE_SLICES[a]], s[ATTRIBUTE_SLICES[a]])}


def check_against_reference(m, reference):
    s = m.source_styles
    ref = reference.edit(s, edits_from_coeffs(m))
    assert torch.equal(m.styles, ref)
    img = reference.synthesize(ref, [m.noise_seed])[0].permute(1, 2, 0).numpy()
    assert np.array_equal(m.image, img)


# ---------------------------------------------------------------------------------------------- controls
def test_controls_are_the_documented_sliders(m):
    cs = m.controls
    assert [(c.attribute, c.index) for c in cs] == (
        [("shape", k) for k in range(4)] + [("expression", k) for k in range(4)] + [("albedo", k) for k in range(4)]
        + [("pose", k) for k in range(3)] + [("light", k) for k in range(4)])
    for c in cs[:12]:
        assert (c.minimum, c.maximum, c.unit) == (-3.0, 3.0, "std")
    for c, name in zip(cs[12:15], ("pitch", "yaw", "roll"), strict=True):
        limit = POSE_DEG[name][1]
        assert c.unit == "deg" and c.maximum == -c.minimum and c.maximum > limit and c.label.lower() == name
    assert [c.label for c in cs[15:]] == ["Light ambient", "Light azimuth", "Light elevation", "Light strength"]
    assert all(c.minimum < c.maximum and 0 < c.step < c.maximum - c.minimum for c in cs)
    with pytest.raises(AttributeError):
        cs[0].minimum = 0.0                                        # frozen
    assert isinstance(cs[0], Control) and m.control("pose", 1).label == "Yaw"


def test_slider_values_are_the_source_coefficients_in_their_units(m):
    m.load_sample(5)
    with torch.no_grad():
        P = m.editor.T(m.editor.styles_from_seed(5))[0].double()
    for k in range(4):
        for a in ("shape", "expression", "albedo"):
            assert m.value(a, k) == m.source_value(a, k)
            assert m.source_value(a, k) == pytest.approx(float(P[START[a] + k]) / STD[a], rel=1e-6)
    for k in range(3):
        assert m.source_value("pose", k) == pytest.approx(math.degrees(float(P[224 + k])), rel=1e-6)
    gamma = P[227:254]
    light = [m.source_value("light", k) for k in range(4)]
    assert torch.allclose(directional_light(light[2], light[1], light[3], light[0])[1:4],
                          gamma.reshape(3, 9).mean(0)[1:4], atol=1e-6)   # white band-1 = the colours' mean
    # a set writes the documented coefficient, exactly as float32 of value x unit
    m.set("shape", 2, 1.25)
    m.set("pose", 1, -20.0)
    c = m.coeffs
    assert c.dtype == np.float32 and c.shape == (257,)
    assert c[2] == np.float32(1.25 * 0.9) and c[225] == np.float32(math.radians(-20.0))
    assert m.value("shape", 2) == 1.25 and m.value("pose", 1) == -20.0
    untouched = np.ones(257, bool)
    untouched[[2, 225]] = False
    assert np.array_equal(c[untouched], m.source_coeffs[untouched])
    # the advanced access: any coefficient, raw units; the slider reads it back in its unit
    m.set_coefficient("shape", 3, 0.45)
    m.set_coefficient("expression", 40, -1.0)
    assert m.coeffs[3] == np.float32(0.45) and m.coeffs[120] == np.float32(-1.0)
    assert m.value("shape", 3) == pytest.approx(0.5, rel=1e-6)


def test_light_controls_write_the_documented_gamma(m):
    m.load_sample(6)
    src = torch.from_numpy(m.source_coeffs[227:254]).double()
    p_s = [m.source_value("light", k) for k in range(4)]
    m.set("expression", 0, 1.0)
    assert np.array_equal(m.coeffs[227:254], m.source_coeffs[227:254])          # untouched light: exact
    azimuth = p_s[1] + 30.0 if p_s[1] < 0 else p_s[1] - 30.0
    m.set("light", 1, azimuth)
    m.set("light", 3, 0.5)
    p = [p_s[0], azimuth, p_s[2], 0.5]
    expected = src + (directional_light(p[2], p[1], p[3], p[0]) - directional_light(p_s[2], p_s[1], p_s[3], p_s[0]))
    assert np.array_equal(m.coeffs[227:254], expected.float().numpy())
    m.set("light", 1, p_s[1])
    m.set("light", 3, p_s[3])                                                     # back on the source's values
    assert np.array_equal(m.coeffs[227:254], m.source_coeffs[227:254])


# ---------------------------------------------------------------------------------------------- what moves
# Every control, with its step in the control's unit. The shipped F^i of some controls move their coefficient too
# little for the recon to read it as a clear change (measured on seeds 1-3, one CPU thread, the world-v2 mini assets of
# session 14; "mine" / "other" = the mean attribute distance of the recon readings over the random-face distance,
# "completion" = the read change / the requested change): those are xfail (not strict), so they still run and show as
# XPASS when F^i improves. The T-side check below must pass for all of them. (The v1 assets had four more here:
# expression 2 and 3, albedo 1, pose 2; they pass now with margins of 0.07-0.6.)
WEAK = {
    ("shape", 3): "borderline: mine 0.345 (threshold 0.3) vs pose 0.273; completion 0.31/0.60/0.49",
    ("albedo", 2): "borderline: mine 0.329 (threshold 0.3) vs shape 0.149; completion 0.97/0.68/0.77",
    ("albedo", 3): "mine 0.114 < 0.3 (it is the largest: expression 0.082); completion 0.38/0.36/0.33",
}
STEPS = {"shape": [2.0] * 4, "expression": [2.0] * 4, "albedo": [2.0] * 4, "pose": [15.0, 26.0, 20.0],
         "light": [0.2, 50.0, 40.0, 0.3]}
ALL_CONTROLS = [(a, k, step) for a, steps in STEPS.items() for k, step in enumerate(steps)]
MOVES = [pytest.param(a, k, step, marks=pytest.mark.xfail(strict=False, reason=WEAK[(a, k)]))
         if (a, k) in WEAK else (a, k, step) for a, k, step in ALL_CONTROLS]
SEEDS = (1, 2, 3)


def read_control(P: torch.Tensor, attribute: str, index: int) -> float:
    """The control's value of coefficients P [1, 257] (recon-read or T's), computed here from its definition."""
    if attribute == "pose":
        return math.degrees(float(P[0, 224 + index]))
    if attribute != "light":
        return float(P[0, START[attribute] + index]) / STD[attribute]
    g = P[0, 227:254].double().reshape(3, 9).mean(0)
    d = torch.stack([-g[3], -g[1], g[2]])                # toward the light (lighting.light_direction's formula)
    if index == 0:
        return float(g[0])
    if index == 1:
        return math.degrees(math.atan2(float(d[0]), float(d[2])))
    if index == 2:
        return math.degrees(math.asin(float(d[1] / d.norm())))
    return float(d.norm() / directional_light(0.0, 0.0, 1.0, float(g[0]))[1:4].norm())


def completion(before: torch.Tensor, after: torch.Tensor, attribute: str, index: int, requested: float) -> float:
    """The read change of the control (after - before, azimuth wrapped to (-180, 180]) / the requested change."""
    change = read_control(after, attribute, index) - read_control(before, attribute, index)
    if (attribute, index) == ("light", 1):
        change = (change + 180.0) % 360.0 - 180.0
    return change / requested


@pytest.fixture(scope="module")
def effects(m, reader):
    """effect(attribute, index, step) -> per seed: (source image, edited image, T(s), T(s_g), requested change),
    computed once per control."""
    cache = {}

    def effect(attribute, index, step):
        if (attribute, index) not in cache:
            rows = []
            for seed in SEEDS:
                m.load_sample(seed)
                c = m.control(attribute, index)
                src = m.source_value(attribute, index)
                target = c.clamp(src - step if src > (c.minimum + c.maximum) / 2 else src + step)
                m.set(attribute, index, target)
                with torch.no_grad():
                    Ts, Te = m.editor.T(m.source_styles), m.editor.T(m.styles)
                rows.append((m.source_image, m.image, Ts, Te, target - src))
            cache[(attribute, index)] = rows
        return cache[(attribute, index)]
    return effect


@pytest.mark.parametrize("attribute,index,step", ALL_CONTROLS)
def test_each_control_moves_T_of_the_edited_styles_toward_its_target(effects, attribute, index, step):
    """T-side (no recon): T(s_g) moves the control's coefficient in the requested direction, by more than 2 % of
    the request, on every seed (measured: at least 0.055 of it, albedo 3; most 0.3-0.9)."""
    got = [completion(Ts, Te, attribute, index, requested) for _, _, Ts, Te, requested in
           effects(attribute, index, step)]
    assert all(abs(requested) > 0 for *_, requested in effects(attribute, index, step))
    assert min(got) > 0.02, got


@pytest.mark.parametrize("attribute,index,step", MOVES)
def test_each_control_moves_its_attribute_more_than_the_others(effects, reader, random_distance, attribute, index,
                                                               step):
    read, fm = reader
    moved, done = [], []
    for source, edited, _, _, requested in effects(attribute, index, step):
        Ps, Pe = read(source), read(edited)
        moved.append([float(attribute_distance(fm, Pe, Ps, a)) / random_distance[a] for a in ATTRIBUTES])
        done.append(completion(Ps, Pe, attribute, index, requested))
    moved = np.mean(moved, 0)
    mine = moved[ATTRIBUTES.index(attribute)]
    others = {a: round(float(x), 3) for a, x in zip(ATTRIBUTES, moved, strict=True) if a != attribute}
    assert mine > max(others.values()), (mine, others)
    assert mine > 0.3, mine                                 # a visible change: 0.3 of the random-face distance
    assert min(done) > 0.1, done                            # read back in the requested direction, every seed


# ---------------------------------------------------------------------------------------------- exactness
def test_reset_and_source_values_restore_the_source_bit_for_bit(m):
    m.load_sample(7)
    s0, img0 = m.source_styles, m.source_image
    for c in m.controls:                                     # every control put on its own source value
        assert m.set(c.attribute, c.index, m.source_value(c.attribute, c.index)) == m.source_value(c.attribute,
                                                                                                   c.index)
    assert torch.equal(m.styles, s0) and np.array_equal(m.image, img0) and m.edits == {}
    m.set("shape", 0, 2.0)
    m.set("light", 1, 0.0)
    m.set("pose", 2, 5.0)
    assert not np.array_equal(m.image, img0)
    m.set("shape", 0, m.source_value("shape", 0))            # back by hand: that attribute leaves the chain
    assert sorted(m.edits) == ["light", "pose"]
    m.reset("light")
    assert list(m.edits) == ["pose"] and m.value("light", 1) == m.source_value("light", 1)
    assert np.array_equal(m.coeffs[227:254], m.source_coeffs[227:254])
    m.set_coefficient("albedo", 10, 1.0)
    m.reset()
    assert torch.equal(m.styles, s0) and np.array_equal(m.image, img0)
    assert np.array_equal(m.coeffs, m.source_coeffs)
    assert all(m.value(c.attribute, c.index) == m.source_value(c.attribute, c.index) for c in m.controls)


def test_the_cached_chain_equals_a_from_scratch_edit_and_reruns_only_what_changed(m, reference, monkeypatch):
    m.load_sample(8)
    steps, predicts = [], []
    real_step, real_predict = m.editor.step, m.editor.predict
    monkeypatch.setattr(m.editor, "step", lambda s, a, d: steps.append(a) or real_step(s, a, d))
    monkeypatch.setattr(m.editor, "predict", lambda s: predicts.append(1) or real_predict(s))
    script = [  # (call, args, F^i expected to run)
        ("set", ("light", 1, 40.0), ["light"]),
        ("set", ("shape", 0, 1.0), ["shape", "light"]),
        ("set", ("albedo", 2, -1.5), ["albedo", "light"]),
        ("set", ("light", 3, 0.2), ["light"]),
        ("set", ("pose", 1, 10.0), ["pose", "light"]),
        ("set", ("pose", 1, 10.0), []),                       # the same value again: nothing to do
        ("set_coefficient", ("expression", 5, 0.7), ["expression", "albedo", "pose", "light"]),
        ("set", ("shape", 0, -1.0), ["shape", "expression", "albedo", "pose", "light"]),
        ("reset", ("albedo",), ["pose", "light"]),
        ("set", ("albedo", 2, m.source_value("albedo", 2)), []),
        ("reset", ("light",), []),                            # the last link: the styles of pose are the result
    ]
    for call, args, expected in script:
        steps.clear()
        n = len(m.latencies_ms)
        getattr(m, call)(*args)
        assert steps == expected, (call, args, steps)
        assert len(m.latencies_ms) == n + 1 and 0 < m.last_latency_ms < 10_000
        check_against_reference(m, reference)
    assert predicts == []                                     # T(s) once per source, at the load
    m.load_sample(9)
    assert predicts == [1]


def test_load_styles_and_a_swapped_generator(m, reference):
    s = reference.styles_from_seed(11)
    m.load_styles(s[0], noise_seed=3)
    assert torch.equal(m.source_styles, s) and m.noise_seed == 3
    assert np.array_equal(m.source_image, reference.synthesize(s, [3])[0].permute(1, 2, 0).numpy())
    m.set("pose", 1, 0.0)
    check_against_reference(m, reference)
    G = assets.load("mini/generator").eval()
    with torch.no_grad():
        for p in G.synthesis_network.parameters():
            p.mul_(0.9)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        other = EditorModel.from_assets("mini", threads=1, generator=G)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    other.load_styles(s.numpy(), noise_seed=3)
    assert other.editor.G is G
    assert np.array_equal(other.source_coeffs, m.source_coeffs)       # T reads the styles, not the image
    assert not np.array_equal(other.source_image, m.source_image)


# ---------------------------------------------------------------------------------------------- light mapping
def test_light_params_invert_directional_light_in_float64():
    g = torch.Generator().manual_seed(0)
    n = 200
    elev = torch.rand(n, generator=g, dtype=torch.float64) * 140 - 60
    azim = torch.rand(n, generator=g, dtype=torch.float64) * 180 - 90
    strength = torch.rand(n, generator=g, dtype=torch.float64) * 0.95 + 0.05
    ambient = torch.rand(n, generator=g, dtype=torch.float64) - 0.5
    gamma = directional_light(elev, azim, strength, ambient)
    for i in range(n):
        got = light_params(gamma[i])
        want = (float(ambient[i]), float(azim[i]), float(elev[i]), float(strength[i]))
        assert got == pytest.approx(want, abs=1e-9)
        # and back: the parameters give the same gamma
        assert torch.allclose(directional_light(got[2], got[1], got[3], got[0]), gamma[i], rtol=0, atol=1e-12)
    # a tinted light with second-order terms (the prior's): angles and strength exact, ambient the colour mean
    tint = torch.tensor([1.03, 0.98, 0.96], dtype=torch.float64)
    base = directional_light(30.0, -20.0, 0.4, 0.05).reshape(3, 9) * tint[:, None]
    base[:, 0] += (tint - 1) * 0.8
    base[:, 4:] = torch.randn(3, 5, generator=g, dtype=torch.float64) * 0.03
    got = light_params(base.reshape(27))
    assert got == pytest.approx(((0.8 + 0.05) * float(tint.mean()) - 0.8, -20.0, 30.0, 0.4), abs=1e-9)
    # the target keeps the source's tint and second order; unchanged parameters give the source exactly
    p_s = got
    assert torch.equal(light_target(base.reshape(27), p_s, p_s), base.reshape(27))
    p = (p_s[0], 45.0, p_s[2], 0.6)
    diff = light_target(base.reshape(27), p_s, p) - base.reshape(27)
    assert torch.allclose(diff, directional_light(p[2], p[1], p[3], p[0]) - directional_light(p_s[2], p_s[1],
                                                                                                 p_s[3], p_s[0]))
    # no band-1 terms: no direction, strength 0
    assert light_params(torch.zeros(27)) == (0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"gamma must be \[27\]"):
        light_params(torch.zeros(26))


# ---------------------------------------------------------------------------------------------- outputs
def test_render_landmarks_and_panel(m):
    m.load_sample(12)
    m.set("pose", 1, 25.0)
    H = m.image.shape[0]
    r, lm = m.render, m.landmarks
    assert r.dtype == np.uint8 and r.shape == m.image.shape and lm.dtype == np.float32 and lm.shape == (68, 2)
    with torch.no_grad():
        ref = mini_model()(torch.from_numpy(m.coeffs)[None], image_size=H).landmarks[0].numpy()
    assert np.allclose(lm, ref, atol=1e-4)
    m.set("pose", 1, -25.0)                                  # the cache follows the coefficients
    assert not np.allclose(m.landmarks, lm, atol=0.5) and not np.array_equal(m.render, r)
    assert abs(m.landmarks[:, 0].mean() - lm[:, 0].mean()) > 1   # turned the other way: the face moves across
    scale = 3
    plain = m.panel(scale=scale)
    assert plain.shape == (H * scale, 3 * H * scale, 3) and plain.dtype == np.uint8
    up = [x.repeat(scale, 0).repeat(scale, 1) for x in (m.source_image, m.image, m.render)]
    assert np.array_equal(plain, np.concatenate(up, 1))
    assert m.panel(show_render=False, show_source=False, scale=1).shape == (H, H, 3)
    assert np.array_equal(m.panel(show_render=False, scale=2)[:, :2 * H], m.source_image.repeat(2, 0).repeat(2, 1))
    dots = m.panel(show_landmarks=True, scale=scale)
    changed = np.argwhere((dots != plain).any(-1))
    assert len(changed) > 68 and changed[:, 1].min() >= H * scale and changed[:, 1].max() < 2 * H * scale
    assert np.all(dots[tuple(changed.T)] == (0, 255, 0))
    centres = (m.landmarks + 0.5) * scale - 0.5
    yx = changed - [0, H * scale]
    nearest = np.abs(yx[:, None, :] - centres[None, :, ::-1]).max(-1).min(1)
    assert nearest.max() <= 1.5                              # every changed pixel is in a landmark's 3 x 3 dot
    with pytest.raises(ValueError, match="scale must be an int in"):
        m.panel(scale=0)


def test_clips_are_readable_with_the_requested_frames(m, tmp_path):
    import imageio.v3 as iio

    m.load_sample(13)
    m.set("pose", 1, -20.0)
    m.set("light", 1, 60.0)
    frames = m.clip_frames(5)
    assert frames.shape == (5, *m.image.shape) and frames.dtype == np.uint8
    assert np.array_equal(frames[0], m.source_image) and np.array_equal(frames[-1], m.image)
    steps = [np.abs(frames[k + 1].astype(int) - frames[k]).mean() for k in range(4)]
    assert min(steps) > 0                                     # a path, not a jump
    src, cur = m.source_image.astype(int), m.image.astype(int)
    for suffix, n, scale, tol in ((".gif", 6, 1, 6.0), (".mp4", 5, 2, 8.0)):
        path = m.save_clip(tmp_path / f"clip{suffix}", frames=n, fps=10, scale=scale)
        got = iio.imread(path, index=None)[..., :3].astype(int)
        assert got.shape == (n, 64 * scale, 64 * scale, 3), suffix
        first, last = got[0][::scale, ::scale], got[-1][::scale, ::scale]
        assert np.abs(first - src).mean() < tol and np.abs(last - cur).mean() < tol, suffix
        assert np.abs(first - src).mean() < np.abs(first - cur).mean(), suffix
    for bad, message in (("clip.avi", "must end in one of"), ("clip", "must end in one of")):
        with pytest.raises(ValueError, match=message):
            m.save_clip(tmp_path / bad)
    with pytest.raises(ValueError, match="frames must be an int >= 2"):
        m.save_clip(tmp_path / "x.gif", frames=1)
    with pytest.raises(ValueError, match="fps must be > 0"):
        m.save_clip(tmp_path / "x.gif", fps=0)
    # MP4 sizes: up to the next multiple of 16 by nearest neighbours
    a = np.arange(50 * 40 * 3, dtype=np.uint8).reshape(1, 50, 40, 3)
    b = _block_multiple(a, 16)
    assert b.shape == (1, 64, 48, 3) and set(np.unique(b)) <= set(np.unique(a))
    assert np.array_equal(b[0, 0], a[0, 0, (np.arange(48) * 40) // 48]) and _block_multiple(b, 16) is b


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_values_are_refused_or_clamped_with_a_message(m, reference):
    fresh = EditorModel(reference)
    with pytest.raises(RuntimeError, match="no source face yet; call load_sample"):
        _ = fresh.image
    with pytest.raises(RuntimeError, match="no source face yet"):
        fresh.set("shape", 0, 1.0)
    assert math.isnan(fresh.last_latency_ms)
    m.load_sample(14)
    for bad in (math.nan, math.inf, -math.inf, "1.0", None):
        with pytest.raises(ValueError, match=r"Shape 0 \(shape 0\) must be a finite number"):
            m.set("shape", 0, bad)
    with pytest.raises(ValueError, match=r"unknown attribute 'hair'; expected one of \['shape', 'expression', "
                                         r"'albedo', 'pose', 'light'\]"):
        m.set("hair", 0, 1.0)
    with pytest.raises(ValueError, match=r"pose control index must be one of 0 \(Pitch\), 1 \(Yaw\), 2 \(Roll\); "
                                         r"found 3"):
        m.set("pose", 3, 1.0)
    for index in (4, -1, True, 1.0):
        with pytest.raises(ValueError, match="shape control index must be one of 0"):
            m.set("shape", index, 1.0)
    with pytest.raises(ValueError, match=r"light coefficient index must be in \[0, 26\], found 27"):
        m.set_coefficient("light", 27, 0.1)
    with pytest.raises(ValueError, match=r"expression\[3\] must be a finite number, found nan"):
        m.set_coefficient("expression", 3, math.nan)
    with pytest.raises(ValueError, match="unknown attribute 'trans'"):
        m.reset("trans")
    assert m.edits == {}                                      # nothing refused changed anything
    with pytest.warns(UserWarning, match=r"Yaw \(pose 1\) = 90 is outside its range \[-52.5, 52.5\] deg; using 52.5"):
        assert m.set("pose", 1, 90.0) == 52.5
    assert m.value("pose", 1) == 52.5
    with pytest.warns(UserWarning, match=r"Shape 2 \(shape 2\) = -7 is outside its range \[-3, 3\] std; using -3"):
        m.set("shape", 2, -7)
    assert m.coeffs[2] == np.float32(-3 * 0.9)
    with pytest.raises(ValueError, match=r"styles must be floats \[1, \d+\] or \[\d+\] \(tensor, array or list\), "
                                         r"found torch.float32 \(2, "):
        m.load_styles(torch.zeros(2, m.editor.G.style_dim))
    with pytest.raises(ValueError, match="styles have NaN or Inf"):
        m.load_styles(torch.full((m.editor.G.style_dim,), math.nan))
    with pytest.raises(ValueError, match="seed must be an int, found '3'"):
        m.load_sample("3")
    with pytest.raises(ValueError, match="threads must be an int >= 1 or None, found 0"):
        EditorModel.from_assets("mini", threads=0)


def test_bad_sources_are_refused_naming_what_was_expected_and_found(m):
    m.load_sample(14)
    D = m.editor.G.style_dim
    expected = (rf"EditorModel.load_styles: styles must be floats \[1, {D}\] or \[{D}\] \(tensor, array or list\), "
                r"found ")
    for bad, found in (("abc", "str"), (None, "NoneType"), (b"x", "bytes"),
                       ([[0.0], [1.0, 2.0]], "a list that is not a rectangular array of numbers"),
                       (["a"] * D, rf"a list of <U1 \({D},\)"), ({"s": 1.0}, "a dict of object"),
                       (torch.zeros(D, dtype=torch.int64), rf"torch.int64 \({D},\)"),
                       (np.zeros((1, D), bool), rf"torch.bool \(1, {D}\)"),
                       ([0.5] * (D - 1), rf"torch.float64 \({D - 1},\)")):
        with pytest.raises(ValueError, match=expected + found):
            m.load_styles(bad)
    for bad, message in ((2 ** 70, r"seed must be in \[0, 2\*\*63 - 1\], found 1180591620717411303424"),
                         (-1, r"seed must be in \[0, 2\*\*63 - 1\], found -1"), (1.5, "seed must be an int, found 1.5"),
                         (True, "seed must be an int, found True")):
        with pytest.raises(ValueError, match="EditorModel.load_sample: " + message):
            m.load_sample(bad)
        with pytest.raises(ValueError, match="EditorModel.load_styles: noise_" + message):
            m.load_styles(m.source_styles, noise_seed=bad)
    assert m.noise_seed == 14                                 # nothing refused changed the source
    m.load_sample(np.int64(2 ** 63 - 1))                      # the ends of the range are seeds
    assert m.noise_seed == 2 ** 63 - 1
    m.load_styles([float(x) for x in m.source_styles[0]], noise_seed=0)   # a plain list of floats is fine


def test_worlds_unknown_and_real_are_refused_with_what_is_missing(monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("nothing may be loaded for a refused world")

    monkeypatch.setattr(FaceEditor, "load", no_load)
    with pytest.raises(ValueError, match=r"unknown world 'bogus'; expected one of \['mini', 'real'\]"):
        EditorModel.from_assets("bogus")
    with pytest.raises(ValueError) as info:
        EditorModel.from_assets("real")
    text = str(info.value)
    for part in ("real/attribute_predictor", "real/manipulator/<attribute>", "mini world only", "gen-pairs",
                 "train-t", "train-f", "EditorModel(FaceEditor(G, T, manipulators)", "assets.load('real/bfm')"):
        assert part in text, part
    assert "ship-f" not in text                               # ship-f writes mini/... only


def test_a_swapped_generator_is_checked_and_the_worlds_is_not_loaded(monkeypatch):
    G = assets.load("mini/generator").eval()
    with pytest.raises(ValueError, match=r"generator must be a cddfm3d.stylegan2.Generator .*found object"):
        EditorModel.from_assets("mini", generator=object())
    with pytest.raises(ValueError, match=r"generator must be a cddfm3d.stylegan2.Generator .*found FaceEditor"):
        EditorModel.from_assets("mini", generator=FaceEditor.load("mini"))
    loaded = []
    real_load = assets.load
    monkeypatch.setattr(assets, "load", lambda name, *a, **k: loaded.append(name) or real_load(name, *a, **k))
    other = EditorModel.from_assets("mini", generator=G)
    assert other.editor.G is G and "mini/generator" not in loaded and "mini/attribute_predictor" in loaded
    assert sorted(n for n in loaded if "manipulator" in n) == sorted(f"mini/manipulator/{a}" for a in ATTRIBUTES)


def test_the_worlds_pieces_are_constructor_arguments(reference):
    """Units and morphable model given explicitly (what a real-world editor passes: T's labels' std and BFM)."""
    std = prior_std() * torch.linspace(0.5, 2.0, 257, dtype=torch.float64)
    fm = mini_model()
    other_fm = copy.deepcopy(fm)
    with torch.no_grad():
        other_fm.mean_shape.add_(torch.tensor([0.05, -0.03, 0.0]).repeat(other_fm.mean_shape.numel() // 3)
                                 .reshape(other_fm.mean_shape.shape))
    e = EditorModel(reference, coeff_std=std, model=other_fm)
    e.load_sample(4)
    P = e.source_coeffs.astype(np.float64)
    for a, k in (("shape", 1), ("expression", 2), ("albedo", 3)):
        i = START[a] + k
        assert e.source_value(a, k) == pytest.approx(P[i] / float(std[i]), rel=1e-12)
        e.set(a, k, 1.5)
        assert e.coeffs[i] == np.float32(1.5 * float(std[i]))
    H = e.image.shape[0]
    with torch.no_grad():
        want = other_fm(torch.from_numpy(e.coeffs)[None], image_size=H).landmarks[0].numpy()
        mini = fm(torch.from_numpy(e.coeffs)[None], image_size=H).landmarks[0].numpy()
    assert np.allclose(e.landmarks, want, atol=1e-4) and not np.allclose(e.landmarks, mini, atol=0.1)
    for kwargs, message in (({"coeff_std": torch.ones(256)}, r"coeff_std must be 257 positive finite numbers, found "
                                                             r"shape \(256,\)"),
                            ({"coeff_std": -torch.ones(257)}, r"found shape \(257,\), range \[-1, -1\]"),
                            ({"coeff_std": "x"}, "coeff_std must be 257 positive finite numbers, found str"),
                            ({"model": "bfm"}, r"model must be a cddfm3d.face3d.MorphableModel .*found str")):
        with pytest.raises(ValueError, match=message):
            EditorModel(reference, **kwargs)
    with pytest.raises(ValueError, match="editor must be a cddfm3d.editing.FaceEditor, found str"):
        EditorModel("mini")


def test_clip_paths_are_checked_before_rendering_and_written_atomically(m, tmp_path, monkeypatch):
    import imageio.v3 as iio

    m.load_sample(13)
    m.set("pose", 1, -20.0)
    rendered = []
    real_frames = m.clip_frames
    monkeypatch.setattr(m, "clip_frames", lambda n: rendered.append(n) or real_frames(n))
    missing = tmp_path / "nope" / "sub" / "x.gif"
    with pytest.raises(FileNotFoundError, match=f"cannot write '{missing}': the folder '{missing.parent}' does not"):
        m.save_clip(missing)
    (tmp_path / "d.gif").mkdir()
    with pytest.raises(IsADirectoryError, match="d.gif': it is a folder"):
        m.save_clip(tmp_path / "d.gif")
    for bad in ("a", 2.0, True, 0, 17):
        with pytest.raises(ValueError, match=r"EditorModel.save_clip: scale must be an int in \[1, 16\]"):
            m.save_clip(tmp_path / "x.gif", scale=bad)
    with pytest.raises(ValueError, match="EditorModel.clip_frames: frames must be an int >= 2, found 1"):
        m.clip_frames(1)
    assert rendered == [1]                                    # only the direct call: nothing else rendered
    # a failing write leaves no partial file, and an older clip under that name stays as it was
    path = m.save_clip(tmp_path / "ok.gif", frames=3)
    before = path.read_bytes()

    def broken(target, *args, **kwargs):
        with open(target, "wb") as f:
            f.write(b"GIF89a partial")
        raise OSError("disk full")

    monkeypatch.setattr(iio, "imwrite", broken)
    for name in ("ok.gif", "new.mp4"):
        with pytest.raises(OSError, match="disk full"):
            m.save_clip(tmp_path / name, frames=3)
    assert path.read_bytes() == before and not (tmp_path / "new.mp4").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.gif", "ok.gif"]   # no temporary left behind


def test_the_shared_scale_check():
    assert check_scale(1) == 1 and check_scale(np.int64(16), "Editor") == 16 and type(check_scale(np.int64(3))) is int
    for bad in (0, 17, 2.0, "4", True, np.bool_(True), None):
        with pytest.raises(ValueError, match=r"^Editor: scale must be an int in \[1, 16\]"):
            check_scale(bad, "Editor")


def test_getters_return_copies_and_latencies_are_bounded(m):
    m.load_sample(15)
    s0, img0 = m.source_styles.clone(), m.source_image
    m.set("shape", 0, 1.0)
    m.styles.add_(1.0)                                        # a caller's in-place change ...
    m.source_styles.mul_(0.0)
    m.reset()
    assert torch.equal(m.source_styles, s0) and torch.equal(m.styles, s0)   # ... changes nothing in the model
    assert np.array_equal(m.image, img0)
    lat = m.latencies_ms
    lat.append(-1.0)
    assert m.latencies_ms[-1] != -1.0
    for _ in range(LATENCY_HISTORY + 5):
        m.reset()                                             # nothing edited: cheap, still recorded
    assert LATENCY_HISTORY == 1000 and len(m.latencies_ms) == LATENCY_HISTORY
    assert m.last_latency_ms == m.latencies_ms[-1] >= 0


def test_light_controls_read_back_a_raw_light_coefficient(m):
    m.load_sample(6)
    p_s = [m.source_value("light", k) for k in range(4)]
    m.set("light", 1, p_s[1] + 20.0)
    m.set_coefficient("light", 1, 0.3)                        # band-1 y of the red channel, raw SH units
    gamma = m.coeffs[227:254]
    assert gamma[1] == np.float32(0.3)
    read = light_params(torch.from_numpy(gamma))              # the controls show the rendered light
    assert [m.value("light", k) for k in range(4)] == list(read)
    assert abs(read[2] - p_s[2]) > 5                          # band-1 y: the elevation moved (46 deg here)
    # a light slider now moves the directional part of that gamma; its own value reads back as set
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # the current value is accepted even out of range
        for k in range(4):
            m.set("light", k, m.value("light", k))
    assert np.array_equal(m.coeffs[227:254], gamma)
    m.set("light", 3, 0.2)
    base = torch.from_numpy(gamma).double()
    p = (read[0], read[1], read[2], 0.2)
    expected = base + directional_light(p[2], p[1], p[3], p[0]) - directional_light(read[2], read[1], read[3], read[0])
    assert np.array_equal(m.coeffs[227:254], expected.float().numpy()) and m.value("light", 3) == 0.2
    m.reset("light")
    assert np.array_equal(m.coeffs[227:254], m.source_coeffs[227:254])
    assert [m.value("light", k) for k in range(4)] == p_s
    assert m.edits == {}


def test_light_azimuth_covers_every_source_and_strength_zero_has_no_direction(m):
    c = m.control("light", 1)
    azimuths = []
    for seed in range(16):
        m.load_sample(seed)
        azimuths.append(m.source_value("light", 1))
        assert c.minimum <= azimuths[-1] <= c.maximum, (seed, azimuths[-1])
    assert max(abs(a) for a in azimuths) > 90                 # such sources exist (seed 8: about -138 deg)
    m.load_sample(3)
    m.set("light", 3, 0.0)
    flat = m.coeffs[227:254].copy()
    m.set("light", 1, 120.0)
    m.set("light", 2, -40.0)                                  # documented: no effect at strength 0
    assert np.array_equal(m.coeffs[227:254], flat)
    with pytest.warns(UserWarning, match=r"Light ambient \(light 0\) = 0.9 is outside its range \[-0.5, 0.5\]; using"):
        m.set("light", 0, 0.9)                                # a unitless control: no stray space


def test_importing_the_package_does_not_need_ipywidgets():
    code = ("import sys, cddfm3d.ui as ui; assert 'ipywidgets' not in sys.modules, 'ipywidgets imported'; "
            "assert {'EditorModel', 'Control', 'Editor'} <= set(ui.__all__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
