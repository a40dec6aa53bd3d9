"""Checkpoint loaders: rosinality .pt, NVIDIA .pkl (read without executing code), native safetensors; bad input."""
import io
import pickle
import sys

import pytest
import torch

from cddfm3d.stylegan2 import CheckpointError, load_generator, save_generator
from tests.stylegan2_writers import rosinality_state_dict, write_nvidia, write_rosinality
from tests.test_stylegan2_generator import small_generator


@pytest.fixture(scope="module")
def G():
    return small_generator(seed=3)


def same_images(G, G2):
    ws = torch.randn(3, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(0))
    noise = G.make_noise("random", 3)
    return (G.synthesis(ws, noise=noise) - G2.synthesis(ws, noise=noise)).abs().max().item()


def test_rosinality_checkpoint(G, tmp_path):
    p = tmp_path / "g.pt"
    write_rosinality(G, p)
    G2 = load_generator(p)
    assert G2.config == G.config
    assert same_images(G, G2) == 0.0
    assert torch.equal(G2.w_avg, G.w_avg)
    assert not any(t.requires_grad for t in G2.parameters())


def test_rosinality_training_checkpoint_with_args_and_optimizers(G, tmp_path):
    p = tmp_path / "train.pt"
    write_rosinality(G, p, training=True)
    G2 = load_generator(p)
    assert same_images(G, G2) == 0.0
    # no latent_avg in training checkpoints: a reproducible estimate is used
    torch.testing.assert_close(G2.w_avg, G.mean_w(10000, seed=0))
    assert "estimated" in G2.w_avg_source


def test_nvidia_pickle_read_without_nvidia_modules(G, tmp_path):
    p = tmp_path / "net.pkl"
    write_nvidia(G, p)
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    G2 = load_generator(p)
    assert G2.config == G.config
    assert same_images(G, G2) == 0.0
    assert torch.equal(G2.w_avg, G.w_avg)
    assert "torch_utils" not in sys.modules  # nothing was imported or executed


def test_nvidia_conv_clamp_is_honoured(G, tmp_path):
    p = tmp_path / "clamp.pkl"
    write_nvidia(G, p, conv_clamp=0.05)
    G2 = load_generator(p)
    assert G2.config["conv_clamp"] == 0.05
    img = G2.synthesis(torch.randn(1, G.w_dim), noise="const")
    assert img.abs().max() <= 0.05 * 6 + 1e-6  # one clamp per tRGB summed over 4 resolutions (+ upsampling gain)
    assert same_images(G, G2) > 1e-3


@pytest.mark.parametrize("kwargs,match", [(dict(architecture="resnet"), "architecture 'resnet'"),
                                          (dict(c_dim=10), "conditional")])
def test_nvidia_unsupported_settings_fail_clearly(G, tmp_path, kwargs, match):
    p = tmp_path / "bad.pkl"
    write_nvidia(G, p, **kwargs)
    with pytest.raises(CheckpointError, match=match):
        load_generator(p)


def test_native_format(G, tmp_path):
    p = tmp_path / "g.safetensors"
    save_generator(G, p)
    assert same_images(G, load_generator(p)) == 0.0


def test_device_argument(G, tmp_path):
    p = tmp_path / "g.safetensors"
    save_generator(G, p)
    assert load_generator(p, device="cpu").w_avg.device.type == "cpu"


# ----------------------------------------------------------------------------------------------- bad input
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_generator(tmp_path / "nope.pt")


def test_truncated_files(G, tmp_path):
    for name, writer in [("g.pt", write_rosinality), ("g.pkl", write_nvidia)]:
        p = tmp_path / name
        writer(G, p)
        data = p.read_bytes()
        cut = tmp_path / ("cut_" + name)
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match="cut_" + name):
            load_generator(cut)
    p = tmp_path / "g.safetensors"
    save_generator(G, p)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        load_generator(cut)


def test_wrong_file_type(tmp_path):
    p = tmp_path / "image.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(CheckpointError, match="unrecognised file type"):
        load_generator(p)
    t = tmp_path / "tiny"
    t.write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="too short"):
        load_generator(t)
    q = tmp_path / "other.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, q)
    with pytest.raises(CheckpointError, match="'g_ema'"):
        load_generator(q)


def test_missing_and_misshaped_tensors(G, tmp_path):
    sd = rosinality_state_dict(G)
    del sd["convs.2.conv.modulation.bias"]
    p = tmp_path / "missing.pt"
    torch.save({"g_ema": sd, "latent_avg": G.w_avg}, p)
    with pytest.raises(CheckpointError, match=r"missing tensor.*convs\.2\.conv\.modulation\.bias"):
        load_generator(p)
    sd = rosinality_state_dict(G)
    sd["to_rgbs.1.conv.modulation.weight"] = torch.zeros(5, 64)
    p = tmp_path / "shape.pt"
    torch.save({"g_ema": sd, "latent_avg": G.w_avg}, p)
    with pytest.raises(CheckpointError, match=r"to_rgbs\.1\.conv\.modulation\.weight.*\(5, 64\).*expected \(32, 64\)"):
        load_generator(p)
    sd = rosinality_state_dict(G)
    sd["style.1.bias"] = torch.full_like(sd["style.1.bias"], float("nan"))
    p = tmp_path / "nan.pt"
    torch.save({"g_ema": sd, "latent_avg": G.w_avg}, p)
    with pytest.raises(CheckpointError, match="NaN"):
        load_generator(p)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import builtins

        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_pickle_with_non_whitelisted_global_executes_nothing(tmp_path):
    marker = tmp_path / "marker"
    p = tmp_path / "evil.pkl"
    with open(p, "wb") as f:
        pickle.dump({"G_ema": _Evil(marker)}, f)
    with pytest.raises(CheckpointError, match="builtins.exec"):
        load_generator(p)
    assert not marker.exists()
    # a pickled class of some other project is refused by name too
    buf = io.BytesIO()
    pickle.dump({"G_ema": torch.nn.Linear(2, 2)}, buf)
    q = tmp_path / "module.pkl"
    q.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="torch.nn.modules.linear.Linear"):
        load_generator(q)
