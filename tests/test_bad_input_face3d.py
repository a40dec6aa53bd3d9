"""Face inputs as users meet them (public bug reports), made small: placeholder and NaN landmarks from video
pipelines, images of other dtypes, layouts, modes and ranges. Each is refused up front with a message naming the
input and what to do, or accepted with a documented conversion."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

from cddfm3d.face3d.align import (TEMPLATE_5P, align_image, align_tensor, crop_geometry, landmark_problem,
                                  value_range_kind)
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
    with pytest.raises(ValueError, match=r"found uint8 \(3, 120, 100\) \(channels first\? pass "
                                         r"image\.transpose\(1, 2, 0\)\)"):
        align_image(img.transpose(2, 0, 1), lm5)
    with pytest.raises(ValueError, match=r"PIL image mode 'I;16' \(16-bit or float\) is not supported"):
        align_image(Image.fromarray(img[..., 0].astype(np.uint16) * 256), lm5)
    with pytest.raises(ValueError, match=r"found the path 'face\.jpg' \(a file\? pass PIL\.Image\.open\(path\)\)"):
        align_image("face.jpg", lm5)
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


def _hinted_fix(message: str) -> str:
    """The expression after the last 'pass ' of an error message, up to the parenthesis that closes the hint."""
    text, depth = message.rsplit("pass ", 1)[1], 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return text[:i]
    return text


# (name, image made from the uint8 reference img, hint text expected) for every dtype/range kind of array.
ARRAY_KINDS = {
    "float_0_1": (lambda u: u.astype(np.float32) / 255, "a [0, 1] image: pass (np.clip(image, 0, 1) * 255)"),
    "float_0_255": (lambda u: u.astype(np.float32), "a 0..255 image: pass np.clip(image, 0, 255).round()"),
    "float_-1_1": (lambda u: u / 127.5 - 1, "a [-1, 1] image: pass ((np.clip(image, -1, 1) + 1) * 127.5)"),
    "uint16_0_255": (lambda u: u.astype(np.uint16), "uint16 values in [28, 227], already 0..255: pass "
                                                     "image.astype(np.uint8)"),
    "uint16_16bit": (lambda u: u.astype(np.uint16) * 257, "uint16 values in [7196, 58339], 16-bit: pass "
                                                          "(image / 257).round().astype(np.uint8)"),
    "int64_0_255": (lambda u: u.astype(np.int64), "already 0..255: pass image.astype(np.uint8)"),
}


@pytest.mark.parametrize("name", sorted(ARRAY_KINDS))
def test_align_image_hint_follows_the_range_and_works(name):
    """Each array kind gets the conversion its range calls for, and doing what the message says gives exactly the
    uint8 result (the old hint for every float array, (image * 255).round().astype(np.uint8), wraps 0..255 data)."""
    ref = _smooth_image(H, W)
    lm5 = _landmarks_for(40.0, H, t=(50.0, 60.0))
    make, expected = ARRAY_KINDS[name]
    image = make(ref)
    with pytest.raises(ValueError) as err:
        align_image(image, lm5)
    message = str(err.value)
    assert expected in message, message
    fixed = eval(_hinted_fix(message), {"np": np, "image": image})
    np.testing.assert_array_equal(fixed, ref)
    np.testing.assert_array_equal(np.asarray(align_image(fixed, lm5).image), np.asarray(align_image(ref, lm5).image))


def test_align_image_masks_pil_high_bit_depth_and_nan_hints():
    ref = _smooth_image(H, W)
    lm5 = _landmarks_for(40.0, H, t=(50.0, 60.0))
    gray = ref[..., 0]
    for image, expected in ((gray > 128, "boolean mask: pass image.astype(np.uint8) * 255"),
                            ((gray > 128).astype(np.int32), "int32 values in [0, 1], a 0/1 mask: pass "
                                                            "image.astype(np.uint8) * 255")):
        with pytest.raises(ValueError) as err:
            align_image(image, lm5)
        assert expected in str(err.value)
        fixed = eval(_hinted_fix(str(err.value)), {"np": np, "image": image})
        np.testing.assert_array_equal(fixed, (gray > 128) * 255)
    # 16-bit and float PIL modes: the conversion is written for np.asarray(image)
    for pil, expected in ((Image.fromarray(gray.astype(np.uint16) * 257), "16-bit: pass (np.asarray(image) / 257)"),
                          (Image.fromarray(gray.astype(np.float32) / 255), "a [0, 1] image: pass "
                                                                           "(np.clip(np.asarray(image), 0, 1)")):
        with pytest.raises(ValueError) as err:
            align_image(pil, lm5)
        assert expected in str(err.value), str(err.value)
        expr = re.search(r"pass (.*); then Image\.fromarray", str(err.value)).group(1)
        np.testing.assert_array_equal(eval(expr, {"np": np, "image": pil}), gray)
    bad = ref.astype(np.float32)
    bad[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match=r"float32 \(120, 100, 3\) \(it contains 1 NaN/Inf value\(s\); repair"):
        align_image(bad, lm5)
    with pytest.raises(ValueError, match=r"values in \[-2\.5, 4\]: rescale them to 0\.\.255 yourself \(undo any "
                                         r"mean/std normalisation"):
        align_image(np.linspace(-2.5, 4, H * W * 3).reshape(H, W, 3), lm5)


def test_align_image_torch_tensor_hints_are_torch():
    """A CHW float tensor is told the torch forms (permute, clamp, .to(torch.uint8)), never numpy's transpose."""
    ref = _smooth_image(H, W)
    lm5 = _landmarks_for(40.0, H, t=(50.0, 60.0))
    chw = torch.from_numpy(ref).permute(2, 0, 1).float() / 255
    with pytest.raises(ValueError) as err:
        align_image(chw.requires_grad_(True), lm5)
    message = str(err.value)
    assert "transpose" not in message and "np." not in message, message
    assert ("found torch.float32 tensor (3, 120, 100) (values in [0.1098, 0.8902], a [0, 1] image: pass "
            "(image.clamp(0, 1) * 255).round().to(torch.uint8)) (channels first? pass image.permute(1, 2, 0)) "
            "(or give float [B, C, H, W] tensors to align_tensor directly)") in message
    image = chw.detach()
    fixed = eval("(image.clamp(0, 1) * 255).round().to(torch.uint8)", {"torch": torch, "image": image})
    fixed = fixed.permute(1, 2, 0)
    np.testing.assert_array_equal(fixed.numpy(), ref)
    np.testing.assert_array_equal(np.asarray(align_image(fixed, lm5).image), np.asarray(align_image(ref, lm5).image))
    with pytest.raises(ValueError, match=r"found torch\.uint8 tensor \(3, 120, 100\) \(channels first\? pass "
                                         r"image\.permute\(1, 2, 0\)\)$"):
        align_image(torch.from_numpy(ref).permute(2, 0, 1), lm5)


# ----------------------------------------------------------------------------------------------- resampling range
def _checkerboard(h, w, block, lo=0.0, hi=1.0):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.where((yy // block + xx // block) % 2 == 1, hi, lo)


def _source_coords(trans_params, size, h0, w0):
    """Where crop pixel centres sample the original image (PIL's resize-then-crop geometry, align.py ``_theta``):
    u = (c + left + 0.5) w0 / w - 0.5, v = (r + up + 0.5) h0 / h - 0.5, in float64 from trans_params."""
    w, h, left, up = crop_geometry(trans_params, size)
    c = np.arange(size)
    return (c + left + 0.5) * w0 / w - 0.5, (c + up + 0.5) * h0 / h - 0.5


# (px/dm of the face, checkerboard square in px, face centre): enlarged (s' = 1.46) with the crop reaching past the
# left border, and shrunk with antialiasing (s' = 0.36) inside the image.
RESAMPLE_CASES = [(10.0, 2, (2.0, 30.0)), (40.0, 6, (30.0, 30.0))]


@pytest.mark.parametrize("scale,block,centre", RESAMPLE_CASES)
def test_align_tensor_stays_in_the_input_range(scale, block, centre):
    """A checkerboard: unclamped bicubic overshoots by 0.18 to 0.43; the output stays in each channel's [min, max]
    (0 allowed only where the interpolation reaches the zero fill), pixels inside the image far from its border stay
    in the image's own range, pixels far outside are exactly 0, and unclamped values are passed through unchanged."""
    h = w = 60
    levels = [(0.0, 1.0), (0.25, 0.75), (-0.5, 0.5)]                     # per channel; the second excludes 0
    x = torch.from_numpy(np.stack([_checkerboard(h, w, block, *lv) for lv in levels]))[None]
    lm = torch.from_numpy(_landmarks_for(scale, h, t=centre))[None]
    raw, _, tp = align_tensor(x, lm, size=32, clamp=False)
    out, _, _ = align_tensor(x, lm, size=32)
    assert float(raw[0, 0].min()) < -0.15 and float(raw[0, 0].max()) > 1.15   # the overshoot is real
    for ch, (lo, hi) in enumerate(levels):
        o, r = out[0, ch].numpy(), raw[0, ch].numpy()
        assert o.min() >= min(lo, 0.0) and o.max() <= max(hi, 0.0)
        inside = (r >= lo) & (r <= hi)
        np.testing.assert_array_equal(o[inside], r[inside])               # untouched where not clamped
        if lo <= 0 <= hi:                                                 # the zero fill adds nothing to the range
            np.testing.assert_array_equal(o, np.clip(r, lo, hi))
    if tp[0, 2] > 1:  # no antialiasing pass: the bicubic taps are within 2 px of the sample point
        u, v = _source_coords(tp[0].double().numpy(), 32, h, w)
        far_in = ((u >= 2) & (u <= w - 3))[None, :] & ((v >= 2) & (v <= h - 3))[:, None]
        far_out = ((u < -2) | (u > w + 1))[None, :] | ((v < -2) | (v > h + 1))[:, None]
        assert far_in.sum() > 50 and far_out.sum() > 50
        o = out[0, 1].numpy()
        assert o[far_in].min() >= 0.25 and o[far_in].max() <= 0.75
        assert (o[far_out] == 0).all()
        assert float(raw[0, 1][torch.from_numpy(far_in)].min()) < 0.2  # and there it did overshoot unclamped


def test_align_tensor_clamp_gradient_is_the_unclamped_one_where_inside():
    """d/dx of a read-out of the clamped crop == that of the raw crop masked to its unclamped pixels."""
    h = w = 60
    x = torch.from_numpy(np.stack([_checkerboard(h, w, 2)] * 3))[None]
    lm = torch.from_numpy(_landmarks_for(10.0, h, t=(2.0, 30.0)))[None]
    weights = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    raw = align_tensor(x, lm, size=32, clamp=False)[0]
    keep = ((raw >= 0) & (raw <= 1)).double()
    assert 0.2 < float(keep.mean()) < 0.9
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (align_tensor(xa, lm, size=32)[0] * weights).sum().backward()
    (align_tensor(xb, lm, size=32, clamp=False)[0] * weights * keep).sum().backward()
    assert float(xa.grad.abs().sum()) > 1.0
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-12, atol=1e-12)


def test_fit_accepts_aligned_high_contrast_images(mini):
    """The reviewer's case: fit(align_tensor(checkerboard)) was refused (bicubic output in [-0.25, 1.25]), with a
    hint to undo a normalisation. Now both aligners' outputs are accepted; the raw resampling gets the clamp hint."""
    h = w = 60
    board = _checkerboard(h, w, 3)
    lm5 = _landmarks_for(10.0, h, t=(30.0, 30.0))
    x = torch.from_numpy(np.stack([board] * 3))[None].float()
    lm = torch.from_numpy(lm5)[None].float()
    raw = align_tensor(x, lm, size=32, clamp=False)[0]
    lo, hi = float(raw.min()), float(raw.max())
    assert lo < -0.2 and hi > 1.2
    with pytest.raises(ValueError, match=re.escape(f"found range [{lo:.4g}, {hi:.4g}]; slightly outside [0, 1] "
                                                   f"(bicubic resampling or unclamped generator output)? pass "
                                                   f"image.clamp(0, 1)")):
        fit(raw, mini, steps=1, progress=False)
    assert torch.isfinite(fit(align_tensor(x, lm, size=32)[0], mini, steps=1, progress=False).coeffs).all()
    # PIL path: 8-bit resampling clips the overshoot itself, so its tensor is in [0, 1] with both ends reached.
    aligned = align_image((board * 255).astype(np.uint8), lm5, size=32).tensor()
    assert float(aligned.min()) == 0.0 and float(aligned.max()) == 1.0
    assert torch.isfinite(fit(aligned.expand(-1, 3, -1, -1), mini, steps=1, progress=False).coeffs).all()


def test_align_tensor_nan_and_empty_images():
    lm = torch.from_numpy(_landmarks_for(40.0, H, t=(50.0, 60.0)))[None].float()
    x = torch.rand(2, 3, H, W)
    x[1, 2, 7, 9] = float("nan")
    with pytest.raises(ValueError, match=r"align_tensor: images contain 1 NaN/Inf value\(s\), first at index "
                                         r"\(1, 2, 7, 9\)"):
        align_tensor(x, lm.expand(2, -1, -1))
    with pytest.raises(ValueError, match=r"align_tensor: images are empty, found shape \(1, 3, 0, 100\)"):
        align_tensor(torch.rand(1, 3, 0, W), lm)


def test_value_range_kinds():
    kinds = {(0.0, 1.0): "0_1", (-0.04, 1.04): "0_1", (-0.25, 1.25): "0_1_overshoot", (-1.0, 0.9): "-1_1",
             (-1.3, 1.2): "-1_1_overshoot", (0.0, 255.0): "0_255", (3.0, 200.0): "0_255",
             (-64.0, 319.0): "0_255_overshoot", (-6.0, 10.0): None, (-2.1, 2.6): None, (0.0, 1000.0): None,
             (float("nan"), 1.0): None}
    for (lo, hi), kind in kinds.items():
        assert value_range_kind(lo, hi) == kind, (lo, hi)


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


def test_fit_range_hints_follow_the_range_and_work(mini, target):
    """Overshoot of each convention (bicubic resampling, unclamped generator output) gets the fix its range calls for,
    and doing what the message says makes the image acceptable (before: every one was told to undo a normalisation,
    or a [0, 1.2] image to divide by 255)."""
    img, _ = target

    def overshoot(image, low, high):  # two rows pushed to the given values, as resampling an edge would
        image = image.clone()
        image[..., 10, :], image[..., 11, :] = low, high
        return image

    cases = {"[0, 1] +-0.25": (overshoot(img, -0.25, 1.25), "slightly outside [0, 1] (bicubic resampling or "
                                                            "unclamped generator output)? pass image.clamp(0, 1)"),
             "[0, 1] -0.35": (overshoot(img, -0.35, 1.0), "image.clamp(0, 1); if it is a [-1, 1] image, pass "
                                                          "(image + 1) / 2"),
             "0..255 +-60": (overshoot(img * 255, -60, 315), "0..255 values with resampling overshoot? pass "
                                                             "(image / 255).clamp(0, 1)"),
             "[-1, 1] +-0.3": (overshoot(img * 2 - 1, -1.3, 1.3), "a [-1, 1] image with overshoot (unclamped "
                                                                  "generator output)? pass "
                                                                  "((image + 1) / 2).clamp(0, 1)")}
    for name, (image, hint) in cases.items():
        lo, hi = float(image.min()), float(image.max())
        with pytest.raises(ValueError) as err:
            fit(image, mini, steps=1, progress=False)
        message = str(err.value)
        assert f"found range [{lo:.4g}, {hi:.4g}]; " in message and hint in message, (name, message)
        fixed = eval(hint.rsplit("pass ", 1)[1], {"image": image})
        assert torch.isfinite(fit(fixed, mini, steps=1, progress=False).coeffs).all(), name


def test_fit_dtypes_and_layouts(mini, target):
    img, lm = target
    with pytest.raises(TypeError, match=r"found torch\.uint8 \(pass image\.float\(\) / 255\)"):
        fit((img * 255).round().to(torch.uint8), mini, steps=1, progress=False)
    with pytest.raises(TypeError, match=r"found ndarray .*torch\.from_numpy"):
        fit(img[0].permute(1, 2, 0).numpy(), mini, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"found \(1, 32, 32, 3\) \(channels last\? pass image\.permute"):
        fit(img.permute(0, 2, 3, 1).contiguous(), mini, steps=1, progress=False)
    # unbatched: the hint is for the tensor as given (3-D), and the shape reported is the one given
    with pytest.raises(ValueError, match=r"found \(32, 32, 3\) \(channels last\? pass image\.permute\(2, 0, 1\)\)"):
        fit(img[0].permute(1, 2, 0), mini, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"found \(1, 32, 32\) \(grayscale\? pass image\.expand\(3, -1, -1\)\)"):
        fit(img[0, :1], mini, steps=1, progress=False)
    # numpy arrays and PIL images: the conversion by dtype and layout
    with pytest.raises(TypeError, match=r"found ndarray float32 \(32, 32, 3\) \(pass torch\.from_numpy\(image\)"
                                        r"\.permute\(2, 0, 1\)\[None\]\.float\(\)\)$"):
        fit(img[0].permute(1, 2, 0).numpy(), mini, steps=1, progress=False)
    with pytest.raises(TypeError, match=r"found ndarray uint8 \(32, 32, 3\) \(pass torch\.from_numpy\(image\)"
                                        r"\.permute\(2, 0, 1\)\[None\]\.float\(\) / 255\)$"):
        fit((img[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy(), mini, steps=1, progress=False)
    with pytest.raises(TypeError, match=r"found Image \(a PIL image: pass align_image\(image, landmarks\)\.tensor"):
        fit(Image.new("RGB", (32, 32)), mini, steps=1, progress=False)
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
