"""cddfm3d.ui.EditorModel on the shipped mini world (G, T, the five F^i; the reconstruction network as the reader).

References, independent of the model's code: the edit read back from the image by ``mini/recon`` with the
evaluation's measures (:func:`attribute_distance`, normalised by the mean distance between random faces), a fresh
:class:`FaceEditor` doing ``edit`` + ``synthesize`` from scratch, T and the prior's std for the slider units, the
morphable model for the landmarks, ``directional_light`` in float64 for the light mapping, and the files read back
with imageio.
"""
from __future__ import annotations

import math
import subprocess
import sys

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
from cddfm3d.ui.model import _block_multiple
from cddfm3d.world.domains import mini_model
from cddfm3d.world.priors import POSE_DEG

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
# (attribute, index, step in the control's unit): the controls whose F^i the shipped world trains well enough
# to read back (measured: albedo 1-3 and roll move too little to dominate in the recon's reading).
MOVES = [("shape", 0, 2.0), ("shape", 1, 2.0), ("expression", 0, 2.0), ("expression", 1, 2.0), ("albedo", 0, 2.0),
         ("pose", 0, 15.0), ("pose", 1, 26.0), ("light", 0, 0.2), ("light", 1, 50.0), ("light", 2, 40.0),
         ("light", 3, 0.3)]


def read_control(P: torch.Tensor, attribute: str, index: int) -> float:
    """The control's value of recon-read coefficients P [1, 257], computed here from its definition."""
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


@pytest.mark.parametrize("attribute,index,step", MOVES)
def test_each_control_moves_its_attribute_more_than_the_others(m, reader, random_distance, attribute, index, step):
    read, fm = reader
    moved, completion = [], []
    for seed in (1, 2, 3):
        m.load_sample(seed)
        c = m.control(attribute, index)
        src = m.source_value(attribute, index)
        target = c.clamp(src - step if src > (c.minimum + c.maximum) / 2 else src + step)
        m.set(attribute, index, target)
        Ps, Pe = read(m.source_image), read(m.image)
        moved.append([float(attribute_distance(fm, Pe, Ps, a)) / random_distance[a] for a in ATTRIBUTES])
        change = read_control(Pe, attribute, index) - read_control(Ps, attribute, index)
        if (attribute, index) == ("light", 1):
            change = (change + 180.0) % 360.0 - 180.0
        completion.append(change / (target - src))
    moved = np.mean(moved, 0)
    mine = moved[ATTRIBUTES.index(attribute)]
    others = {a: round(float(x), 3) for a, x in zip(ATTRIBUTES, moved, strict=True) if a != attribute}
    assert mine > max(others.values()), (mine, others)
    assert mine > 0.3, mine                                 # a visible change: 0.3 of the random-face distance
    assert min(completion) > 0.1, completion                # read back in the requested direction, every seed


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
    with pytest.raises(ValueError, match=r"styles must be floats \[1, \d+\] or \[\d+\], found torch.float32 \(2, "):
        m.load_styles(torch.zeros(2, m.editor.G.style_dim))
    with pytest.raises(ValueError, match="styles have NaN or Inf"):
        m.load_styles(torch.full((m.editor.G.style_dim,), math.nan))
    with pytest.raises(ValueError, match="seed must be an int, found '3'"):
        m.load_sample("3")
    with pytest.raises(ValueError, match="threads must be an int >= 1 or None, found 0"):
        EditorModel.from_assets("mini", threads=0)


def test_importing_the_package_does_not_need_ipywidgets():
    code = ("import sys, cddfm3d.ui as ui; assert 'ipywidgets' not in sys.modules, 'ipywidgets imported'; "
            "assert {'EditorModel', 'Control', 'Editor'} <= set(ui.__all__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
