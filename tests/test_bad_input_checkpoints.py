"""Checkpoint files as users meet them in the wild (public bug reports), made small: old rosinality generators without
noise buffers, DataParallel-prefixed and bare state dicts, files without an EMA generator, NVIDIA TensorFlow pickles,
whole pickled models, zip archives and other projects' checkpoints. Each is either loaded (with what was substituted
flagged) or refused with a message that says what the file is."""
import logging
import pickle
import sys
import zipfile

import pytest
import torch

from cddfm3d.stylegan2 import CheckpointError, Discriminator, load_discriminator, load_generator
from tests.stylegan2_writers import (rosinality_discriminator_state_dict, rosinality_state_dict, write_nvidia,
                                     write_tensorflow_pickle)
from tests.test_stylegan2_generator import small_generator


@pytest.fixture(scope="module")
def G():
    return small_generator(seed=11)


@pytest.fixture(scope="module")
def D():
    torch.manual_seed(12)
    D = Discriminator(32, channels={32: 16, 16: 32, 8: 32, 4: 32})
    with torch.no_grad():
        for p in D.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return D.eval()


def max_diff(G, G2, noise="random"):
    ws = torch.randn(2, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(0))
    noise = G.make_noise(noise, 2) if isinstance(noise, str) else noise
    with torch.no_grad():
        return (G.synthesis(ws, noise=noise) - G2.synthesis(ws, noise=noise)).abs().max().item()


# ----------------------------------------------------------------------------------------------- noise buffers
def test_rosinality_generator_without_noise_buffers_loads_with_seeded_noise(G, tmp_path):
    sd = {k: v for k, v in rosinality_state_dict(G).items() if not k.startswith("noises.")}
    p = tmp_path / "550000.pt"
    torch.save({"g_ema": sd, "latent_avg": G.w_avg.clone()}, p)
    G2 = load_generator(p)
    assert "filled" in G2.noise_const_source and "seed 0" in G2.noise_const_source
    assert G2.w_avg_source.startswith("read from the file")
    # reference: one torch.Generator seeded 0, randn per noise layer j = 0..6 at 4, 8, 8, 16, 16, 32, 32 px
    g = torch.Generator().manual_seed(0)
    ref = [torch.randn(r, r, generator=g) for r in (4, 8, 8, 16, 16, 32, 32)]
    got = [n[0, 0] for n in G2.make_noise("const")]
    assert len(got) == len(ref) and all(torch.equal(a, b) for a, b in zip(got, ref, strict=True))
    # every other tensor is the file's: identical images for the same explicit noise
    assert max_diff(G, G2) == 0.0
    assert max_diff(G, G2, noise=[r[None, None] for r in ref]) == 0.0
    # reproducible across loads
    G3 = load_generator(p)
    assert all(torch.equal(a, b) for a, b in zip(G3.make_noise("const"), G2.make_noise("const"), strict=True))
    # a file that has the buffers keeps them and says so
    q = tmp_path / "with_noise.pt"
    torch.save({"g_ema": rosinality_state_dict(G), "latent_avg": G.w_avg.clone()}, q)
    G4 = load_generator(q)
    assert G4.noise_const_source == "read from the file"
    assert all(torch.equal(a, b) for a, b in zip(G4.make_noise("const"), G.make_noise("const"), strict=True))


def test_partial_noise_buffers_are_still_an_error(G, tmp_path):
    sd = rosinality_state_dict(G)
    del sd["noises.noise_3"]
    p = tmp_path / "partial.pt"
    torch.save({"g_ema": sd, "latent_avg": G.w_avg}, p)
    with pytest.raises(CheckpointError, match=r"missing tensor.*noises\.noise_3"):
        load_generator(p)


# ----------------------------------------------------------------------------------------------- layouts
def _prefixed(sd):
    return {f"module.{k}": v for k, v in sd.items()}


@pytest.mark.parametrize("layout", ["dataparallel", "bare", "bare_dataparallel"])
def test_rosinality_generator_layouts(G, tmp_path, layout):
    sd = rosinality_state_dict(G)
    obj = {"dataparallel": {"g_ema": _prefixed(sd), "latent_avg": G.w_avg.clone()},
           "bare": sd, "bare_dataparallel": _prefixed(sd)}[layout]
    p = tmp_path / f"{layout}.pt"
    torch.save(obj, p)
    G2 = load_generator(p)
    assert G2.config == G.config and max_diff(G, G2) == 0.0
    if layout == "dataparallel":
        assert torch.equal(G2.w_avg, G.w_avg) and G2.weights_source == "'g_ema'"
    else:  # a bare state dict has no latent_avg: estimated and flagged
        assert "bare" in G2.weights_source and "estimated" in G2.w_avg_source
        torch.testing.assert_close(G2.w_avg, G.mean_w(10000, seed=0))


def test_rosinality_training_checkpoint_from_dataparallel_with_discriminator(G, D, tmp_path):
    sd = rosinality_state_dict(G)
    p = tmp_path / "train_dp.pt"
    torch.save({"g": _prefixed(sd), "g_ema": _prefixed(sd), "d": _prefixed(rosinality_discriminator_state_dict(D))},
               p)
    assert max_diff(G, load_generator(p)) == 0.0
    D2 = load_discriminator(p)
    img = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(D2(img), D(img))


def test_checkpoint_without_ema_generator_uses_g_and_says_so(G, tmp_path, caplog):
    p = tmp_path / "g_only.pt"
    torch.save({"g": rosinality_state_dict(G), "d": {}}, p)
    with caplog.at_level(logging.WARNING, logger="cddfm3d.stylegan2.checkpoints"):
        G2 = load_generator(p)
    assert "no 'g_ema'" in caplog.text and G2.weights_source.startswith("'g' (the training generator")
    assert max_diff(G, G2) == 0.0
    q = tmp_path / "G_only.pkl"
    write_nvidia(G, q, keys=("G",))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cddfm3d.stylegan2.checkpoints"):
        G3 = load_generator(q)
    assert "no 'G_ema'" in caplog.text and G3.weights_source.startswith("'G' (the training generator")
    assert max_diff(G, G3) == 0.0
    r = tmp_path / "D_only.pkl"
    write_nvidia(G, r, D=Discriminator(32, channels={32: 16, 16: 32, 8: 32, 4: 32}), keys=("D",))
    with pytest.raises(CheckpointError, match=r"D_only\.pkl: expected a network pickle with key 'G_ema'"):
        load_generator(r)


# ----------------------------------------------------------------------------------------------- foreign formats
TF_OPCODES = (b"\x80\x03cdnnlib.tflib.network\nNetwork\nq\x00)\x81q\x01}q\x02(X\x07\x00\x00\x00versionq\x03K\x04"
              b"X\x04\x00\x00\x00nameq\x04X\x02\x00\x00\x00Gsq\x05ub.")  # Network.__new__ + BUILD with a state dict


@pytest.mark.parametrize("how", ["protocol3", "protocol4", "opcodes"])
def test_tensorflow_pickle_is_named_and_conversion_explained(tmp_path, how):
    p = tmp_path / "stylegan2-ffhq-config-f.pkl"
    if how == "opcodes":
        p.write_bytes(TF_OPCODES)
    else:
        write_tensorflow_pickle(p, protocol=int(how[-1]))
    before = set(sys.modules)
    for loader in (load_generator, load_discriminator):
        with pytest.raises(CheckpointError) as e:
            loader(p)
        msg = str(e.value)
        assert msg.startswith(str(p))
        assert "TensorFlow StyleGAN/StyleGAN2 network pickle from NVIDIA's TF code" in msg
        assert "dnnlib.tflib.network.Network" in msg and "not supported" in msg
        assert "legacy.py --source=" in msg and "--dest=" in msg and "convert_weight.py" in msg
        assert "refusing" not in msg and "whitelist" not in msg
    assert not {m for m in set(sys.modules) - before if m.startswith(("dnnlib", "tensorflow"))}


def test_stylegan3_pickle_is_named(G, tmp_path):
    p = tmp_path / "sg3.pkl"
    write_nvidia(G, p, module_src="class SynthesisInput(torch.nn.Module):\n    pass\n")
    with pytest.raises(CheckpointError, match="G_ema is a StyleGAN3 generator; only StyleGAN2"):
        load_generator(p)


def test_whole_pickled_model_in_a_torch_file(tmp_path):
    p = tmp_path / "whole.pt"
    torch.save({"g_ema": torch.nn.Linear(2, 2)}, p)
    with pytest.raises(CheckpointError, match=r"whole\.pt: the checkpoint pickles a Python object of class "
                                              r"'torch\.nn\.modules\.linear\.Linear'.*state_dict\(\)"):
        load_generator(p)


def test_zip_that_is_not_a_torch_checkpoint(tmp_path):
    p = tmp_path / "images.pt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("faces/0001.png", b"\x89PNG" + b"\0" * 64)
    with pytest.raises(CheckpointError, match=r"images\.pt: is a zip archive but not a PyTorch checkpoint .*"
                                              r"faces/0001\.png"):
        load_generator(p)


def test_other_projects_checkpoints_are_named(tmp_path):
    p = tmp_path / "epoch_20.pth"
    torch.save({"net_recon": {"backbone.conv1.weight": torch.zeros(1)}, "epoch": 20}, p)
    with pytest.raises(CheckpointError, match=r"Deep3DFaceRecon_pytorch checkpoint: load it with "
                                              r"ReconNet\.from_deep3d"):
        load_generator(p)
    q = tmp_path / "recon_sd.pth"
    torch.save({"module.final_layers.0.weight": torch.zeros(1)}, q)
    with pytest.raises(CheckpointError, match=r"reconstruction network state dict"):
        load_generator(q)
    r = tmp_path / "ema_only.pt"
    torch.save({"g_ema": {}, "latent_avg": torch.zeros(4)}, r)
    with pytest.raises(CheckpointError, match=r"no discriminator \('d'\).*found \['g_ema', 'latent_avg'\]"):
        load_discriminator(r)


def test_plain_pickle_named_pt_with_a_payload_runs_nothing(tmp_path):
    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    p = tmp_path / "evil.pt"
    with open(p, "wb") as f:
        pickle.dump({"g_ema": Evil()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="exec"):
        load_generator(p)
    assert not marker.exists()
