"""float64 tests of the StyleGAN2 ops against naive loops written from the formulas."""
import math

import numpy as np
import pytest
import torch

from cddfm3d.stylegan2.ops import (bias_act, fir_filter, minibatch_stddev, modulated_conv2d, normalize_2nd_moment,
                                   upfirdn2d, upsample2d)



@pytest.fixture(autouse=True)
def float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def naive_upfirdn(x: np.ndarray, f: np.ndarray, up: int, down: int, pad: tuple) -> np.ndarray:
    """Zero insertion, explicit padding/cropping, true convolution (kernel flipped), decimation, by loops."""
    B, C, H, W = x.shape
    px0, px1, py0, py1 = pad
    z = np.zeros((B, C, H * up, W * up))
    z[:, :, ::up, ::up] = x
    # pad with zeros (negative pads crop)
    zp = np.zeros((B, C, H * up + max(py0, 0) + max(py1, 0), W * up + max(px0, 0) + max(px1, 0)))
    zp[:, :, max(py0, 0): max(py0, 0) + H * up, max(px0, 0): max(px0, 0) + W * up] = z
    zp = zp[:, :, max(-py0, 0): zp.shape[2] - max(-py1, 0), max(-px0, 0): zp.shape[3] - max(-px1, 0)]
    fh, fw = f.shape
    oh, ow = zp.shape[2] - fh + 1, zp.shape[3] - fw + 1
    out = np.zeros((B, C, oh, ow))
    for i in range(oh):
        for j in range(ow):
            acc = 0.0
            for a in range(fh):
                for b in range(fw):
                    acc = acc + zp[:, :, i + a, j + b] * f[fh - 1 - a, fw - 1 - b]
            out[:, :, i, j] = acc
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize("up,down,pad", [(1, 1, (1, 2, 0, 1)), (2, 1, (2, 1, 2, 1)), (1, 2, (2, 2, 2, 2)),
                                         (2, 2, (1, 1, 1, 1)), (1, 1, (-1, 2, 1, -2)), (2, 1, (0, -1, 3, 0))])
def test_upfirdn2d_matches_naive_loop(up, down, pad):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 6, generator=g)
    f = torch.randn(4, 3, generator=g)  # asymmetric, so a flip error shows
    got = upfirdn2d(x, f, up=up, down=down, padding=pad, gain=1.0).numpy()
    want = naive_upfirdn(x.numpy(), f.numpy(), up, down, pad)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_upfirdn2d_flip_filter_is_correlation():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 5, 5, generator=g)
    f = torch.randn(3, 3, generator=g)
    got = upfirdn2d(x, f, padding=1, flip_filter=True)
    want = naive_upfirdn(x.numpy(), f.flip([0, 1]).numpy(), 1, 1, (1, 1, 1, 1))
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)


def test_fir_filter_is_normalised_outer_product():
    f = fir_filter(dtype=torch.float64)
    k = np.array([1, 3, 3, 1.0])
    np.testing.assert_allclose(f.numpy(), np.outer(k, k) / 64, atol=0)


def test_upsample2d_equals_upfirdn_reference():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 5, 4, generator=g)
    f = fir_filter(dtype=torch.float64)
    want = naive_upfirdn(x.numpy(), f.numpy() * 4, 2, 1, (2, 1, 2, 1))
    got = upsample2d(x, f)
    assert got.shape == (2, 3, 10, 8)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)
    # constant image stays constant away from the border (gain 4 keeps the mean)
    ones = upsample2d(torch.ones(1, 1, 6, 6), f)
    np.testing.assert_allclose(ones[0, 0, 2:-2, 2:-2].numpy(), 1.0, atol=1e-12)


def naive_modconv(x, weight, styles, demod, up):
    """Per-sample loop: scale the weight by the style, demodulate, then conv / explicit transposed conv + blur."""
    B = x.shape[0]
    outs = []
    for b in range(B):
        w = weight * styles[b].reshape(1, -1, 1, 1)
        if demod:
            w = w / torch.sqrt((w ** 2).sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        xb = x[b:b + 1]
        k = w.shape[-1]
        if up == 1:
            outs.append(torch.nn.functional.conv2d(xb, w, padding=k // 2))
        else:
            # transposed conv (stride 2, no padding) == zero insertion + full padding + conv with flipped kernel
            H, W_ = xb.shape[2:]
            z = torch.zeros(1, xb.shape[1], 2 * H - 1, 2 * W_ - 1)
            z[:, :, ::2, ::2] = xb
            z = torch.nn.functional.pad(z, [k - 1] * 4)
            y = torch.nn.functional.conv2d(z, w.flip([2, 3]))
            f = fir_filter(dtype=torch.float64).numpy() * 4
            y = torch.from_numpy(naive_upfirdn(y.numpy(), f, 1, 1, (1, 1, 1, 1)))
            outs.append(y)
    return torch.cat(outs)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demod", [True, False])
def test_modulated_conv_fused_unfused_and_loop_agree(up, demod):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, 6, 6, generator=g)
    weight = torch.randn(4, 5, 3, 3, generator=g)
    styles = torch.randn(3, 5, generator=g) + 1.0
    want = naive_modconv(x, weight, styles, demod, up)
    fused = modulated_conv2d(x, weight, styles, demodulate=demod, up=up, padding=1, fused=True)
    unfused = modulated_conv2d(x, weight, styles, demodulate=demod, up=up, padding=1, fused=False)
    assert fused.shape == want.shape == (3, 4, 6 * up, 6 * up)
    torch.testing.assert_close(fused, want, rtol=0, atol=1e-10)
    torch.testing.assert_close(unfused, want, rtol=0, atol=1e-10)


def test_modulated_conv_rejects_mismatched_styles():
    with pytest.raises(ValueError, match="styles"):
        modulated_conv2d(torch.randn(2, 3, 4, 4), torch.randn(4, 3, 3, 3), torch.randn(2, 4))


def test_bias_act_formula_and_clamp():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 4, 4, generator=g) * 5
    b = torch.randn(3, generator=g)
    pre = x + b.reshape(1, 3, 1, 1)
    want = np.where(pre.numpy() > 0, pre.numpy(), 0.2 * pre.numpy()) * math.sqrt(2)
    np.testing.assert_allclose(bias_act(x, b).numpy(), want, atol=1e-12)
    np.testing.assert_allclose(bias_act(x, b, clamp=1.5).numpy(), np.clip(want, -1.5, 1.5), atol=1e-12)
    np.testing.assert_allclose(bias_act(x, b, act="linear").numpy(), pre.numpy(), atol=1e-12)
    with pytest.raises(ValueError, match="activation"):
        bias_act(x, b, act="tanh")


def test_normalize_2nd_moment():
    z = torch.randn(4, 16)
    zn = normalize_2nd_moment(z).numpy()
    ref = z.numpy() / np.sqrt((z.numpy() ** 2).mean(1, keepdims=True) + 1e-8)
    np.testing.assert_allclose(zn, ref, atol=1e-12)


def test_minibatch_stddev_formula():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, 6, 4, 4, generator=g)
    y = minibatch_stddev(x, group_size=4).numpy()
    xn = x.numpy()
    assert y.shape == (8, 7, 4, 4)
    np.testing.assert_array_equal(y[:, :6], xn)  # the input channels pass through unchanged
    for n in range(8):
        members = [m for m in range(8) if m % 2 == n % 2]  # groups interleave: sample n is in group n % (N/G)
        std = np.sqrt(xn[members].var(axis=0) + 1e-8).mean()
        np.testing.assert_allclose(y[n, 6], std, atol=1e-12)
    with pytest.raises(ValueError, match="divisible"):
        minibatch_stddev(torch.randn(6, 4, 4, 4), group_size=4)
