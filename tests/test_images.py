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
