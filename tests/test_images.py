"""cddfm3d.images: the one conversion between uint8, [-1, 1] and [0, 1] images, against float64 brute force."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cddfm3d import images
from cddfm3d.images import from_uint8, to_range, to_uint8

LEVELS = torch.arange(256, dtype=torch.uint8).reshape(4, 1, 8, 8)   # every uint8 value once, as [B, 1, H, W]


def test_from_uint8_every_level():
    got = from_uint8(LEVELS)
    assert got.dtype == torch.float32 and got.shape == LEVELS.shape
    ref = np.arange(256, dtype=np.float64).reshape(4, 1, 8, 8) / 127.5 - 1
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-7)
    assert float(got.min()) == -1.0 and float(got.max()) == 1.0


def test_to_uint8_is_the_nearest_level_and_inverts_from_uint8():
    assert torch.equal(to_uint8(from_uint8(LEVELS)), LEVELS)          # the round trip keeps every level
    x = torch.rand(2000, generator=torch.Generator().manual_seed(0)) * 2.6 - 1.3   # overshoots on both sides
    got = to_uint8(x)
    assert got.dtype == torch.uint8
    level_values = np.arange(256, dtype=np.float64) / 127.5 - 1           # brute force: the closest level
    nearest = np.abs(x.double().numpy()[:, None] - level_values[None, :]).argmin(1)
    assert np.array_equal(got.numpy(), nearest)
    assert got[x < -1].eq(0).all() and got[x > 1].eq(255).all()


def test_to_range_every_level_and_floats():
    ref = np.arange(256, dtype=np.float64).reshape(4, 1, 8, 8)
    np.testing.assert_allclose(to_range(LEVELS, "0_1").numpy(), ref / 255, rtol=0, atol=1e-7)
    assert torch.equal(to_range(LEVELS, "-1_1"), from_uint8(LEVELS))
    x = torch.linspace(-1, 1, 11, dtype=torch.float64)
    assert to_range(x, "-1_1").dtype == torch.float32 and torch.equal(to_range(x, "-1_1"), x.float())
    np.testing.assert_allclose(to_range(x, "0_1").numpy(), (x.numpy() + 1) / 2, rtol=0, atol=1e-7)


def test_bad_input_names_the_function_and_the_dtype():
    with pytest.raises(ValueError, match=r"from_uint8: images must be a uint8 tensor .*torch.float32"):
        from_uint8(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"to_range: images must be a uint8 \(0..255\) or float .*torch.int64"):
        to_range(torch.zeros(2, 3, 4, 4, dtype=torch.int64), "0_1")
    with pytest.raises(ValueError, match=r"to_range: value_range must be one of \('0_1', '-1_1'\), found '0_255'"):
        to_range(LEVELS, "0_255")


def test_old_public_names_are_the_same_functions():
    from cddfm3d.editing import labels, pairs

    assert pairs.to_uint8 is images.to_uint8 and "to_uint8" in pairs.__all__
    assert labels.to_range is images.to_range and "to_range" in labels.__all__


# ---------------------------------------------------------------------------------------------- files
# EXIF 2.3 tag 0x0112 (Orientation), from its definition: how the stored rows and columns relate to the picture as
# meant to be seen, A. Each entry gives the stored pixels for the upright picture A.
STORED_FOR_ORIENTATION = {
    2: lambda a: a[:, ::-1],                       # 0th row top, 0th column right: mirrored left-right
    3: lambda a: a[::-1, ::-1],                    # 0th row bottom, 0th column right: turned 180 degrees
    4: lambda a: a[::-1],                          # 0th row bottom, 0th column left: mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),             # 0th row left side, 0th column top
    6: lambda a: np.rot90(a, 1),                   # 0th row right side, 0th column top (camera turned clockwise)
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # 0th row right side, 0th column bottom
    8: lambda a: np.rot90(a, -1),                  # 0th row left side, 0th column bottom
}


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_read_image_turns_exif_oriented_files_upright(tmp_path, fmt):
    from PIL import Image

    rng = np.random.default_rng(3)
    # JPEG: 8 x 8 blocks of one colour each, no chroma subsampling: lossy coding keeps every pixel within a few levels
    upright = np.repeat(np.repeat(rng.integers(0, 256, (5, 3, 3), dtype=np.uint8), 8, 0), 8, 1)   # 40 x 24
    for tag, stored_of in STORED_FOR_ORIENTATION.items():
        stored = np.ascontiguousarray(stored_of(upright))
        exif = Image.Exif()
        exif[0x0112] = tag
        path = tmp_path / f"o{tag}.{fmt}"
        Image.fromarray(stored).save(path, exif=exif, **({"quality": 100, "subsampling": 0} if fmt == "jpg" else {}))
        got = images.read_image(path)
        assert got.shape == upright.shape, (tag, got.shape)
        err = np.abs(got.astype(int) - upright).max()
        assert err == 0 if fmt == "png" else err <= 4, (tag, err)
        assert np.array_equal(images.decode_image(path.read_bytes(), path.name), got)


def test_read_image_16_bit_and_errors(tmp_path):
    from PIL import Image

    deep = np.arange(0, 65536, 97, dtype=np.uint16)[:600].reshape(20, 30)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    want = np.floor(deep.astype(np.float64) / 257 + 0.5)                  # round half up; no ties occur here
    assert not np.any(np.isclose(deep / 257 % 1, 0.5))
    assert np.array_equal(images.read_image(tmp_path / "deep.png"), want.astype(np.uint8))
    with pytest.raises(FileNotFoundError, match=r"read_image: image file '.*nope\.png' not found"):
        images.read_image(tmp_path / "nope.png")
    with pytest.raises(ValueError, match=r"read_image: '.*' is a folder, not an image file"):
        images.read_image(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"who: cannot read '.*bad\.png' as an image"):
        images.read_image(tmp_path / "bad.png", who="who")


def test_rgb_uint8_grayscale_rgba_and_errors():
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    assert np.array_equal(images.rgb_uint8(rgb), rgb)
    gray = rng.integers(0, 256, (6, 7), dtype=np.uint8)
    for g in (gray, gray[:, :, None]):
        assert np.array_equal(images.rgb_uint8(g), np.repeat(gray[:, :, None], 3, 2))
    rgba = rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    alpha = rgba[:, :, 3:].astype(np.float64) / 255
    want = rgba[:, :, :3] * alpha + 255 * (1 - alpha)                     # over white, in float64
    got = images.rgb_uint8(rgba)
    assert got.dtype == np.uint8 and got.shape == (6, 7, 3) and np.abs(got - want).max() <= 0.5 + 1e-4
    ro = rgba.copy()
    ro.flags.writeable = False                                           # a read-only array (as PIL gives) works
    assert np.array_equal(images.rgb_uint8(ro), got)
    with pytest.raises(ValueError, match=r"who: expected a uint8 image .* found float64 \(6, 7, 3\) \(0\.\.255 floats"):
        images.rgb_uint8(rgb.astype(np.float64), who="who")
    with pytest.raises(ValueError, match=r"expected a uint8 image .* found shape \(6, 7, 2\)"):
        images.rgb_uint8(rgb[:, :, :2])
    with pytest.raises(ValueError, match=r"the image is empty, shape \(0, 7, 3\)"):
        images.rgb_uint8(rgb[:0])
    with pytest.raises(ValueError, match=r"to_rgb: expected images \[\.\.\., C, H, W\] with C in \[1, 3, 4\], found "
                                         r"\(1, 2, 5, 5\)"):
        images.to_rgb(torch.zeros(1, 2, 5, 5))
