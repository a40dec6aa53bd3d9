"""GAN training loop: losses, lazy R1, EMA, checkpoints and exact resume."""
import json

import pytest
import torch

from cddfm3d.stylegan2 import load_generator
from cddfm3d.stylegan2.training import TrainConfig, augment, sample_ws, train_gan

CFG = dict(resolution=16, generator=dict(z_dim=16, w_dim=16, mapping_layers=2, channel_max=16),
           discriminator=dict(channel_max=16), batch_size=4, r1_every=2, snapshot_kimg=0.008, total_kimg=1.0)


def squares(n=32, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = -torch.ones(n, 3, size, size)
    for i in range(n):
        x, y = torch.randint(0, size - 6, (2,), generator=g).tolist()
        imgs[i, :, y:y + 6, x:x + 6] = torch.rand(3, 1, 1, generator=g) * 2 - 1
    return torch.utils.data.TensorDataset(imgs)


def test_training_runs_and_writes_checkpoints(tmp_path):
    tr = train_gan(squares(), TrainConfig(**CFG), tmp_path, progress=False, max_steps=4)
    assert tr.step == 4 and tr.images_seen == 16
    assert (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "checkpoint.pt.tmp").exists()
    G = load_generator(tmp_path / "generator.safetensors")
    assert G.resolution == 16 and torch.isfinite(G(torch.randn(2, 16))).all()
    # the exported file is the EMA generator (its update is pinned to the formula in test_stylegan2_training_math)
    for k, v in tr.G_ema.state_dict().items():
        assert torch.equal(G.state_dict()[k], v), k


def test_resume_is_exact(tmp_path):
    straight = train_gan(squares(), TrainConfig(**CFG), tmp_path / "a", progress=False, max_steps=4)
    train_gan(squares(), TrainConfig(**CFG), tmp_path / "b", progress=False, max_steps=2)
    resumed = train_gan(squares(), TrainConfig(**CFG), tmp_path / "b", progress=False, max_steps=2)
    assert resumed.step == 4
    for k, a in straight.G_ema.state_dict().items():
        assert torch.equal(a, resumed.G_ema.state_dict()[k]), k
    logs = [json.loads((tmp_path / d / "log.json").read_text()) for d in ("a", "b")]
    assert logs[0] == logs[1]


def test_resume_refuses_other_architecture(tmp_path):
    train_gan(squares(), TrainConfig(**CFG), tmp_path, progress=False, max_steps=1)
    other = dict(CFG, generator=dict(CFG["generator"], w_dim=32))
    with pytest.raises(ValueError, match="architecture"):
        train_gan(squares(), TrainConfig(**other), tmp_path, progress=False, max_steps=1)


def test_fine_tune_starts_from_given_weights_and_warms_up_d(tmp_path):
    first = train_gan(squares(), TrainConfig(**CFG), tmp_path / "a", progress=False, max_steps=3)
    assert (tmp_path / "a" / "discriminator.safetensors").is_file()
    cfg = dict(CFG, seed=5, init_generator=str(tmp_path / "a" / "generator.safetensors"),
               init_discriminator=str(tmp_path / "a" / "discriminator.safetensors"), d_warmup_steps=2)
    tuned = train_gan(squares(), TrainConfig(**cfg), tmp_path / "b", progress=False, max_steps=2)
    # During the warm-up only D moves: G and its EMA are still exactly the start generator (the first run's EMA).
    for k, v in first.G_ema.state_dict().items():
        assert torch.equal(tuned.G.state_dict()[k], v), k
        assert torch.equal(tuned.G_ema.state_dict()[k], v), k
    d_start = first.D.state_dict()
    assert any(not torch.equal(tuned.D.state_dict()[k], d_start[k]) for k in d_start)
    assert tuned.images_seen == 2 * CFG["batch_size"]
    # After the warm-up G trains; a resumed run takes its weights from the checkpoint, not from the init files.
    resumed = train_gan(squares(), TrainConfig(**cfg), tmp_path / "b", progress=False, max_steps=1)
    assert resumed.step == 3
    assert any(not torch.equal(resumed.G.state_dict()[k], v) for k, v in first.G_ema.state_dict().items())
    straight = train_gan(squares(), TrainConfig(**cfg), tmp_path / "c", progress=False, max_steps=3)
    for k, v in straight.G_ema.state_dict().items():
        assert torch.equal(resumed.G_ema.state_dict()[k], v), k


def test_fine_tune_refuses_other_architecture(tmp_path):
    train_gan(squares(), TrainConfig(**CFG), tmp_path / "a", progress=False, max_steps=1)
    other = dict(CFG, generator=dict(CFG["generator"], w_dim=32),
                 init_generator=str(tmp_path / "a" / "generator.safetensors"))
    with pytest.raises(ValueError, match="init_generator.*architecture"):
        train_gan(squares(), TrainConfig(**other), tmp_path / "b", progress=False, max_steps=1)


def test_style_mixing_and_augment():
    from cddfm3d.stylegan2 import Generator

    G = Generator(16, z_dim=8, w_dim=8, mapping_layers=1, channel_max=8)
    g = torch.Generator().manual_seed(0)
    ws = sample_ws(G, 64, 1.0, "cpu", g)
    # every sample switches to a second w at some layer >= 1 and keeps it
    changes = (ws[:, 1:] != ws[:, :-1]).any(-1).sum(1)
    assert (changes == 1).all()
    no_mix = sample_ws(G, 8, 0.0, "cpu", g)
    assert torch.equal(no_mix, no_mix[:, :1].expand_as(no_mix))
    x = torch.randn(4, 3, 16, 16)
    y = augment(x, "translate_flip", torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    assert torch.equal(augment(x, "none"), x)
    with pytest.raises(ValueError, match="augmentation"):
        augment(x, "rotate")


def test_train_gan_cli_on_image_folder(tmp_path):
    from PIL import Image

    from cddfm3d.cli import main

    data = tmp_path / "imgs"
    data.mkdir()
    for i, img in enumerate(squares(8, 24).tensors[0]):
        Image.fromarray(((img.permute(1, 2, 0) + 1) * 127.5).byte().numpy()).save(data / f"{i}.png")
    out = tmp_path / "run"
    assert main(["train-gan", "--data", str(data), "--out", str(out), "--resolution", "16", "--batch", "4",
                 "--kimg", "0.008", "--device", "cpu"]) == 0
    assert load_generator(out / "generator.safetensors").resolution == 16
    assert main(["train-gan", "--data", str(tmp_path / "none"), "--out", str(out)]) == 2
