"""Checkpoint loaders: rosinality .pt, NVIDIA .pkl (read without executing code), native safetensors; bad input."""
import io
import pickle
import sys

import numpy as np
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


# ----------------------------------------------------------------------------------------------- whitelist
# Exactly what the safe unpickler resolves; adding an entry must be a deliberate change of this table.
EXPECTED_WHITELIST = {
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("torch.storage", "_load_from_bytes"),
    ("torch", "Size"), ("torch", "device"), ("dnnlib.util", "EasyDict"), ("dnnlib", "EasyDict"),
    ("torch_utils.persistence", "_reconstruct_persistent_obj"),
    *[("torch", dt) for dt in ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8",
                               "uint8", "bool")],
    *[(m, n) for m in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                       "numpy._core.numeric") for n in ("_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer")],
}

# Globals a malicious or foreign pickle may carry (code execution, file/process access, attribute walking).
DANGEROUS = [("builtins", n) for n in ("eval", "exec", "getattr", "setattr", "__import__", "compile", "open",
                                       "globals", "vars", "breakpoint", "input", "type", "object", "print")] + [
    ("__builtin__", "eval"), ("os", "system"), ("os", "popen"), ("os", "execv"), ("os", "remove"),
    ("posix", "system"), ("nt", "system"), ("subprocess", "Popen"), ("subprocess", "call"), ("subprocess", "run"),
    ("subprocess", "check_output"), ("runpy", "run_path"), ("runpy", "_run_code"), ("importlib", "import_module"),
    ("pickle", "loads"), ("_pickle", "loads"), ("marshal", "loads"), ("torch", "load"), ("torch.serialization", "load"),
    ("numpy", "load"), ("numpy.testing._private.utils", "runstring"), ("shutil", "rmtree"), ("socket", "socket"),
    ("webbrowser", "open"), ("code", "InteractiveInterpreter"), ("ctypes", "CDLL"), ("operator", "attrgetter"),
    ("functools", "partial"), ("copyreg", "_reconstructor"), ("_codecs", "encode"),
    ("torch._utils", "_rebuild_qtensor"), ("torch_utils.persistence", "_src_to_module"),
    ("torch.nn.modules.linear", "Linear"), ("dnnlib.util", "call_func_by_name"),
]


def test_whitelist_is_exactly_the_expected_table():
    from cddfm3d.stylegan2.safe_pickle import ALLOWED_GLOBALS

    assert set(ALLOWED_GLOBALS) == EXPECTED_WHITELIST
    assert not set(DANGEROUS) & set(ALLOWED_GLOBALS)


def _global_pickle(module, name, protocol):
    """A pickle that loads the global and calls it with one string argument (GLOBAL for protocol 0-3, STACK_GLOBAL
    for 4): nothing else in it, so a refusal can only come from the global itself."""
    if protocol < 4:
        return b"c" + module.encode() + b"\n" + name.encode() + b"\n" + b"(X\x05\x00\x00\x00touchtR."
    s = lambda t: b"\x8c" + bytes([len(t)]) + t.encode()  # noqa: E731 - SHORT_BINUNICODE
    return b"\x80\x04" + s(module) + s(name) + b"\x93" + s("touch") + b"\x85R."


@pytest.mark.parametrize("module,name", DANGEROUS)
def test_dangerous_globals_are_refused_before_import(module, name, tmp_path):
    from cddfm3d.stylegan2.safe_pickle import UnsafePickleError, safe_load_pickle

    mods = set(sys.modules)
    for protocol in (2, 4):
        with pytest.raises(UnsafePickleError, match=rf"refusing to load global '{module}\.{name}'"):
            safe_load_pickle(io.BytesIO(_global_pickle(module, name, protocol)))
    assert set(sys.modules) - mods == set()  # the refused module was not even imported
    p = tmp_path / "g.pkl"
    p.write_bytes(_global_pickle(module, name, 4))
    with pytest.raises(CheckpointError, match=rf"g\.pkl: refusing to load global '{module}\.{name}'"):
        load_generator(p)


def test_exec_payload_runs_nothing_under_every_protocol(tmp_path):
    marker = tmp_path / "marker"
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):  # protocols 0-1 are not sniffed as pickles at all
        p = tmp_path / f"evil{protocol}.pkl"
        with open(p, "wb") as f:
            pickle.dump({"G_ema": _Evil(marker)}, f, protocol=protocol)
        with pytest.raises(CheckpointError, match=r"'(__builtin__|builtins)\.exec'"):  # protocol 2 maps the name
            load_generator(p)
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------- mbstd
def _mbstd_reference(x, group, n_channels):
    """Minibatch-std feature maps in float64 numpy, written from the definition: with N samples in groups of G (one
    group of N when G is None; min(G, N) otherwise), sample n belongs to group {m : m = n mod N/G}; the appended map
    f of sample n is the mean over channels f*C/F .. (f+1)*C/F - 1 and pixels of the population std over its group
    (with 1e-8 added to the variance)."""
    N, C, H, W = x.shape
    G = N if group is None else min(group, N)
    n_groups, c = N // G, C // n_channels
    out = np.zeros((N, n_channels, H, W))
    for n in range(N):
        members = [m for m in range(N) if m % n_groups == n % n_groups]
        assert len(members) == G
        for f in range(n_channels):
            v = x[members][:, f * c:(f + 1) * c]
            out[n, f] = np.sqrt(v.var(axis=0) + 1e-8).mean()
    return np.concatenate([x, out], 1)


def _d_reference(D, img, group, n_channels):
    """D's logits in float64 with the minibatch-std step replaced by `_mbstd_reference`."""
    import copy

    D64 = copy.deepcopy(D).double()
    with torch.no_grad():
        x = D64.fromrgb(img.double())
        for res in D64.block_resolutions:
            x = getattr(D64, f"b{res}")(x)
        x = torch.from_numpy(_mbstd_reference(x.numpy(), group, n_channels))
        return D64.out(D64.fc(D64.conv(x).flatten(1)))


@pytest.mark.parametrize("group,n_channels,batch", [(2, 1, 8), (8, 1, 8), (2, 2, 8), (None, 1, 6), (4, 1, 8)])
def test_nvidia_discriminator_minibatch_std_settings_are_honoured(G, tmp_path, group, n_channels, batch):
    from cddfm3d.stylegan2 import Discriminator, load_discriminator

    torch.manual_seed(7)
    D = Discriminator(32, channels={32: 16, 16: 32, 8: 32, 4: 32}, mbstd_num_channels=n_channels)
    with torch.no_grad():
        for p in D.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        D.conv.weight[:, -n_channels:] *= 30  # make the std feature matter to the logits
    p = tmp_path / "gd.pkl"
    write_nvidia(G, p, D=D, d_kwargs=dict(mbstd_group_size=group, mbstd_num_channels=n_channels))
    D2 = load_discriminator(p)
    assert (D2.mbstd_group_size, D2.mbstd_num_channels) == (group, n_channels)
    # samples of very different contrast, so that which samples share a group changes their std
    scale = torch.linspace(0.2, 3.0, batch)[torch.randperm(batch, generator=torch.Generator().manual_seed(2))]
    img = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * scale[:, None, None, None]
    with torch.no_grad():
        out = D2(img).double()
    ref = _d_reference(D, img, group, n_channels)
    tol = 1e-5 * (1 + ref.abs().max().item())  # float32 against float64
    err = (out - ref).abs().max().item()
    assert err < tol, err
    # the test can tell group sizes apart: what a loader that always used 4 would produce is far off
    if group not in (4, None):
        wrong = _d_reference(D, img, 4, n_channels)
        assert (wrong - ref).abs().max().item() > 100 * tol


def test_nvidia_discriminator_group_size_from_the_layer_when_kwargs_omit_it(G, tmp_path):
    from cddfm3d.stylegan2 import Discriminator, load_discriminator

    D = Discriminator(32, channels={32: 16, 16: 32, 8: 32, 4: 32})
    p = tmp_path / "gd.pkl"
    write_nvidia(G, p, D=D, d_kwargs=dict(mbstd_group_size=2, write_group_size=False))
    assert load_discriminator(p).mbstd_group_size == 2


def test_native_discriminator_keeps_group_size(tmp_path):
    from cddfm3d.stylegan2 import Discriminator, load_discriminator, save_discriminator

    for group in (2, None):
        D = Discriminator(32, channels={32: 16, 16: 32, 8: 32, 4: 32}, mbstd_group_size=group)
        p = tmp_path / f"d{group}.safetensors"
        save_discriminator(D, p)
        D2 = load_discriminator(p)
        assert D2.mbstd_group_size == group
        img = torch.randn(6 if group is None else 8, 3, 32, 32)
        with torch.no_grad():
            assert torch.equal(D(img), D2(img))
