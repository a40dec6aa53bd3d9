"""Face inputs as users meet them (public bug reports), made small: placeholder and NaN landmarks from video
pipelines, images of other dtypes, layouts, modes and ranges. Each is refused up front with a message naming the
input and what to do, or accepted with a documented conversion."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

from cddfm3d.face3d.align import TEMPLATE_5P, align_image, align_tensor, landmark_problem
from cddfm3d.face3d.fitting import fit
from cddfm3d.face3d.morphable import MorphableModel
from tests.test_face3d_recon import _landmarks_for, _smooth_image

H, W = 120, 100


@pytest.fixture(scope="module")
def mini():
    return MorphableModel.mini()


@pytest.fixture(scope="module")
def target(mini):
    """A 32-px MiniFace render and its own 68 projected landmarks (valid input)."""
    from cddfm3d.face3d.render import render

    c = mini.compose(1, smile=1.0)
    with torch.no_grad():
        out = mini(c, image_size=32)
        img, _ = render(out, out.camera, 32, background=0.3)
    return img.clamp(0, 1), out.landmarks


def lm68_from_5(lm5, seed=0):
    """68 points whose 5 alignment points are lm5 (other points scattered around them)."""
    lm = lm5.mean(0) + np.random.default_rng(seed).normal(size=(68, 2)) * lm5.std(0)
    lm[[36, 39]], lm[[42, 45]] = lm5[0], lm5[1]
    lm[[30, 48, 54]] = lm5[2:]
    return lm


# ----------------------------------------------------------------------------------------------- landmarks
PLACEHOLDERS = {"zeros": np.zeros((68, 2)), "minus_one": np.full((68, 2), -1.0),
                "one_point": np.tile([[50.0, 60.0]], (68, 1))}


@pytest.mark.parametrize("name", sorted(PLACEHOLDERS))
def test_placeholder_landmark_rows_are_degenerate_in_both_aligners(name):
    img = _smooth_image(H, W)
    lm = PLACEHOLDERS[name]
    with pytest.raises(ValueError, match=r"^degenerate landmarks: .*align_image are collapsed to one point "
                                         r"\(spread 0 px, image 100x120; placeholder rows"):
        align_image(img, lm)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    good = torch.from_numpy(lm68_from_5(_landmarks_for(40.0, H, t=(50.0, 60.0))))
    batch = torch.stack([good, torch.from_numpy(lm)]).float()
    with pytest.raises(ValueError, match=r"^degenerate landmarks: the landmarks of sample 1 given to align_tensor "
                                         r"are collapsed"):
        align_tensor(x.expand(2, -1, -1, -1), batch)


def test_nan_inf_collinear_and_outside_landmarks():
    img = _smooth_image(H, W)
    lm = lm68_from_5(_landmarks_for(40.0, H, t=(50.0, 60.0)))
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    for bad_value in (np.nan, np.inf):
        bad = lm.copy()
        bad[17, 1] = bad_value  # a point not among the 5 alignment points: still refused (all K are mapped)
        with pytest.raises(ValueError, match=r"degenerate landmarks: .* contain NaN/Inf \(points \[17\]\)"):
            align_image(img, bad)
        with pytest.raises(ValueError, match=r"sample 0 .* contain NaN/Inf \(points \[17\]\)"):
            align_tensor(x, torch.from_numpy(bad)[None].float())
    line = np.stack([np.linspace(20, 80, 5), np.linspace(30, 90, 5)], -1)  # 5 points on one line
    with pytest.raises(ValueError, match=r"degenerate landmarks: .* collinear \(spread ratio"):
        align_image(img, line)
    with pytest.raises(ValueError, match=r"degenerate landmarks: the landmarks given to align_image all lie "
                                         r"outside the 100x120 image"):
        align_image(img, lm + 1000)


def test_degeneracy_is_scale_invariant():
    """Verdicts depend on shapes, not on pixels: the same configuration scaled by 1e-3 .. 1e3 (image too)."""
    valid = _landmarks_for(40.0, H, t=(50.0, 60.0), angles=(0.3, 1.2, 0.2))  # strong yaw: still valid
    squashed = valid.copy()
    squashed[:, 1] = squashed[:, 1].mean() + (squashed[:, 1] - squashed[:, 1].mean()) * 0.01  # nearly a line
    collapsed = valid.mean(0) + (valid - valid.mean(0)) * 1e-6
    for k in (1e-3, 1.0, 1e3):
        assert landmark_problem(valid * k, H * k, W * k) is None
        assert landmark_problem(squashed * k, H * k, W * k).startswith("are collinear")
        assert landmark_problem(collapsed * k, H * k, W * k).startswith("are collapsed")


def test_tiny_valid_face_in_a_small_image_aligns():
    h = w = 16
    img = _smooth_image(h, w)
    lm5 = _landmarks_for(6.0, h, t=(8.0, 8.0), angles=(0.0, 0.4, 0.0))  # a face ~4 px across
    a = align_image(img, lm5, size=32)
    assert a.image.size == (32, 32) and np.isfinite(a.landmarks).all()
    np.testing.assert_allclose(a.trans_params[2], (102.0 * 32 / 224) / 6.0, rtol=1e-6)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    out, lm, tp = align_tensor(x, torch.from_numpy(lm5)[None].float(), size=32)
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()


@pytest.mark.parametrize("shape,hint", [((68, 3), "3D landmarks"), ((2, 68), "transposed"), ((136, 1), "flat"),
                                        ((1, 68, 2), "a batch")])
def test_landmark_shapes_are_named(shape, hint):
    with pytest.raises(ValueError, match=rf"found \({shape[0]}, {shape[1]}.*{hint}"):
        align_image(_smooth_image(H, W), np.ones(shape))


# ----------------------------------------------------------------------------------------------- images (align)
def test_align_image_dtypes_layouts_and_modes():
    img = _smooth_image(H, W)
    lm5 = _landmarks_for(40.0, H, t=(50.0, 60.0))
    ref = align_image(img, lm5)
    with pytest.raises(ValueError, match=r"found float64 \(120, 100, 3\) \(float image in \[0, 1\]\? pass "
                                         r"\(image \* 255\)\.round\(\)\.astype\(np\.uint8\)\)"):
        align_image(img / 255.0, lm5)
    with pytest.raises(ValueError, match=r"found uint8 \(3, 120, 100\) \(channels first\? pass "
                                         r"image\.transpose\(1, 2, 0\)\)"):
        align_image(img.transpose(2, 0, 1), lm5)
    with pytest.raises(ValueError, match=r"uint16 .*convert uint16 to uint8"):
        align_image(img.astype(np.uint16) * 256, lm5)
    with pytest.raises(ValueError, match=r"PIL image mode 'I;16' \(16-bit or float\) is not supported"):
        align_image(Image.fromarray(img[..., 0].astype(np.uint16) * 256), lm5)
    # 8-bit modes are converted to RGB and give the RGB result; RGBA and gray arrays are kept
    pal = Image.fromarray(img).convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    a = align_image(pal, lm5)
    assert a.image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(a.image), np.asarray(align_image(pal.convert("RGB"), lm5).image))
    for mode in ("CMYK", "LA", "1"):
        assert align_image(Image.fromarray(img).convert(mode), lm5).image.size == (224, 224)
    rgba = np.concatenate([img, np.full((H, W, 1), 255, np.uint8)], -1)
    np.testing.assert_array_equal(align_image(rgba, lm5).tensor(), ref.tensor())
    assert align_image(img[..., 0], lm5).image.mode == "L"


def test_align_tensor_dtypes_and_layouts():
    img = _smooth_image(H, W)
    lm = torch.from_numpy(_landmarks_for(40.0, H, t=(50.0, 60.0)))[None].float()
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    with pytest.raises(ValueError, match=r"found torch\.uint8 .*pass images\.float\(\) / 255"):
        align_tensor(x, lm)
    with pytest.raises(ValueError, match=r"channels last\? pass images\.permute\(0, 3, 1, 2\)"):
        align_tensor(x.permute(0, 2, 3, 1).float(), lm)
    with pytest.raises(ValueError, match=r"one image\? pass images\[None\]"):
        align_tensor(x[0].float(), lm)
    with pytest.raises(ValueError, match=r"expected a landmark tensor \[B=1, 68\|5, 2\], found ndarray"):
        align_tensor(x.float(), lm.numpy())


# ----------------------------------------------------------------------------------------------- fit()
def test_fit_nan_and_inf_inputs_fail_up_front(mini, target):
    img, lm = target
    for v in (float("nan"), float("inf")):
        bad = lm.clone()
        bad[0, 30, 0] = v
        with pytest.raises(ValueError, match=r"fit: landmarks contain 1 NaN/Inf value\(s\), first at index "
                                             r"\(0, 30, 0\)"):
            fit(img, mini, landmarks=bad, steps=1, progress=False)
        bad_img = img.clone()
        bad_img[0, 1, 5, 7] = v
        with pytest.raises(ValueError, match=r"fit: image contains 1 NaN/Inf value\(s\), first at index "
                                             r"\(0, 1, 5, 7\)"):
            fit(bad_img, mini, landmarks=lm, steps=1, progress=False)
        init = mini.zeros(1)
        init[0, 230] = v
        with pytest.raises(ValueError, match=r"fit: init must be finite .*first at index \(0, 230\)"):
            fit(img, mini, init=init, steps=1, progress=False)
        mask = torch.ones(1, 1, 32, 32)
        mask[0, 0, 3, 4] = v
        with pytest.raises(ValueError, match=r"fit: mask contains 1 NaN/Inf"):
            fit(img, mini, mask=mask, steps=1, progress=False)


def test_fit_image_ranges(mini, target):
    img, lm = target
    img255 = img * 255
    found = f"[{float(img255.min()):.4g}, {float(img255.max()):.4g}]"
    assert float(img255.max()) > 100
    with pytest.raises(ValueError, match=re.escape(f"fit: image must be in [0, 1], found range {found}; 0..255 "
                                                   f"values? pass image / 255")):
        fit(img255, mini, landmarks=lm, steps=1, progress=False)
    pm1 = img * 2 - 1
    found = f"[{float(pm1.min()):.4g}, {float(pm1.max()):.4g}]"
    with pytest.raises(ValueError, match=re.escape(f"found range {found}; for [-1, 1] images pass (image + 1) / 2")):
        fit(pm1, mini, steps=1, progress=False)
    normalised = (img - 0.45) / 0.226  # ImageNet-style normalisation
    with pytest.raises(ValueError, match=r"undo any mean/std normalisation"):
        fit(normalised * 3, mini, steps=1, progress=False)


def test_fit_dtypes_and_layouts(mini, target):
    img, lm = target
    with pytest.raises(TypeError, match=r"found torch\.uint8 \(pass image\.float\(\) / 255\)"):
        fit((img * 255).round().to(torch.uint8), mini, steps=1, progress=False)
    with pytest.raises(TypeError, match=r"found ndarray .*torch\.from_numpy"):
        fit(img[0].permute(1, 2, 0).numpy(), mini, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"found \(1, 32, 32, 3\) \(channels last\? pass image\.permute"):
        fit(img.permute(0, 2, 3, 1).contiguous(), mini, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"found \(1, 1, 32, 32\) \(grayscale\? pass image\.expand"):
        fit(img[:, :1], mini, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"found \(1, 4, 32, 32\) \(RGBA\? drop alpha"):
        fit(torch.cat([img, torch.ones_like(img[:, :1])], 1), mini, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"mask weights must be in \[0, 1\], found range \[0, 255\]; 0\.\.255"):
        fit(img, mini, mask=torch.arange(32 * 32.0).reshape(1, 1, 32, 32) % 2 * 255, steps=1, progress=False)
    # float64 / float16 images and numpy landmarks are converted (documented), not refused
    res = fit(img.double(), mini, landmarks=lm[0].numpy(), steps=1, progress=False)
    assert torch.isfinite(res.coeffs).all() and np.isfinite(res.losses["lm"])
    assert torch.isfinite(fit(img.half(), mini, steps=1, progress=False).coeffs).all()


@pytest.mark.parametrize("name", sorted(PLACEHOLDERS))
def test_fit_placeholder_landmarks_are_degenerate(mini, target, name):
    img, lm = target
    batch = torch.cat([lm, torch.from_numpy(PLACEHOLDERS[name])[None].float()])
    with pytest.raises(ValueError, match=r"^degenerate landmarks: the landmarks of sample 1 given to fit are "
                                         r"collapsed"):
        fit(img.expand(2, -1, -1, -1), mini, landmarks=batch, steps=1, progress=False)


def test_template_5p_is_far_from_the_thresholds():
    """The thresholds leave margin for real faces: the template's own flatness ratio at any pose."""
    from scipy.spatial.transform import Rotation

    worst = 1.0
    for yaw in np.linspace(-90, 90, 19):
        for pitch in np.linspace(-60, 60, 13):
            p = (TEMPLATE_5P @ Rotation.from_euler("yx", [yaw, pitch], degrees=True).as_matrix().T)[:, :2]
            s = np.linalg.svd(p - p.mean(0), compute_uv=False)
            worst = min(worst, s[1] / s[0])
    assert worst > 5 * 0.05
