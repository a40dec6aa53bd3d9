"""Latent-consistent fine-tuning (cddfm3d.adapt.finetuning), ADA-style augmentation and the generator-delta files."""
import json

import pytest
import torch

from cddfm3d.adapt.delta import load_generator_delta, save_generator_delta
from cddfm3d.adapt.finetuning import FinetuneConfig, finetune, frozen_parameter_names, latent_inconsistency
from cddfm3d.stylegan2 import load_generator
from cddfm3d.stylegan2.checkpoints import CheckpointError
from cddfm3d.stylegan2.generator import Generator
from cddfm3d.stylegan2.training import TrainConfig, ada_augment, train_gan

from .test_stylegan2_training import CFG, squares

BLOCKS = (4, 8, 16)


@pytest.fixture(scope="module")
def base_file(tmp_path_factory):
    """A small trained generator (the 'human' one) and its file."""
    d = tmp_path_factory.mktemp("base")
    train_gan(squares(seed=1), TrainConfig(**CFG), d, progress=False, max_steps=2)
    return d / "generator.safetensors"


def inverted(n=32):
    """Another 'domain': the squares with inverted colours."""
    (imgs,) = squares(n).tensors
    return torch.utils.data.TensorDataset(-imgs)


def ft_config(base_file, **kw):
    return FinetuneConfig(**dict(CFG, init_generator=str(base_file), d_warmup_steps=1, **kw))


# ----------------------------------------------------------------------------------------------- which weights
def test_frozen_names_match_brute_force_selection():
    G = Generator(16, z_dim=16, w_dim=16, mapping_layers=2, channel_max=16)
    names = [n for n, _ in G.named_parameters()]
    w_to_s = {n for n in names if n.split(".")[0] == "mapping_network" or "affine" in n.split(".")}
    assert set(frozen_parameter_names(G, "affine")) == w_to_s
    # every affine of the StyleSpace (convolutions and tRGB) is in it: one per style layer
    assert len({n.rsplit(".affine.", 1)[0] for n in w_to_s if ".affine." in n}) == len(G.style_layers)
    assert frozen_parameter_names(G, "none") == []
    two = set(frozen_parameter_names(G, "freeze-g", 2))
    assert two == w_to_s | {n for n in names if n.startswith(("synthesis_network.b4.", "synthesis_network.b8."))} \
        | {"synthesis_network.const"}
    assert not any(n.startswith("synthesis_network.b16.") and ".affine." not in n for n in two)


@pytest.mark.parametrize("mode,k", [("freeze", 0), ("freeze-g", 0), ("freeze-g", 4), ("freeze-g", True),
                                    ("affine", 2), ("none", 1)])
def test_frozen_names_reject_bad_modes(mode, k):
    G = Generator(16, z_dim=16, w_dim=16, mapping_layers=2, channel_max=16)
    with pytest.raises(ValueError, match="freeze"):
        frozen_parameter_names(G, mode, k)


# ----------------------------------------------------------------------------------------------- fine-tuning
def test_affine_finetune_keeps_w_to_s_bitwise_and_trains_the_rest(base_file, tmp_path):
    base = load_generator(base_file)
    tr = finetune(inverted(), ft_config(base_file), tmp_path, progress=False, max_steps=3)
    exported = load_generator(tmp_path / "generator.safetensors")
    for G in (tr.G, tr.G_ema, exported):
        assert latent_inconsistency(base, G) == []
    frozen = set(frozen_parameter_names(base, "affine"))
    changed = {k for k, v in base.state_dict().items() if not torch.equal(v, tr.G.state_dict()[k])}
    trainable = {n for n, _ in base.named_parameters()} - frozen
    assert changed and changed <= trainable
    assert len(changed) >= 0.8 * len(trainable)  # nearly every synthesis tensor moved
    # frozen parameters carry no optimizer state
    n_opt = sum(len(g["params"]) for g in tr.opt_G.param_groups)
    assert n_opt == len(trainable)
    # the same z gives the same flat StyleSpace vector s through both generators, yet another image
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    s_base, s_ft = (base.flatten_styles(G.w_to_styles(G.mapping(z))) for G in (base, exported))
    assert torch.equal(s_base, s_ft)
    assert not torch.allclose(base(z, noise="const"), exported(z, noise="const"))


def test_train_everything_breaks_latent_consistency(base_file, tmp_path):
    tr = finetune(inverted(), ft_config(base_file, freeze="none"), tmp_path, progress=False, max_steps=3)
    broken = latent_inconsistency(load_generator(base_file), tr.G_ema)
    assert any(k.startswith("mapping_network.") for k in broken) and any(".affine." in k for k in broken)


def test_freeze_g_keeps_lowest_blocks(base_file, tmp_path):
    base = load_generator(base_file)
    tr = finetune(inverted(), ft_config(base_file, freeze="freeze-g", freeze_g_blocks=2), tmp_path, progress=False,
                  max_steps=3)
    for k, v in base.state_dict().items():
        low = k.startswith(("synthesis_network.b4.", "synthesis_network.b8.", "synthesis_network.const"))
        if low and "noise_const" not in k and "resample_filter" not in k:
            assert torch.equal(v, tr.G_ema.state_dict()[k]), k
    assert any(not torch.equal(v, tr.G_ema.state_dict()[k]) for k, v in base.state_dict().items()
               if k.startswith("synthesis_network.b16.") and ".affine." not in k)


def test_freeze_g_train_rgb_moves_only_the_frozen_blocks_trgb(base_file, tmp_path):
    """train_rgb: in the frozen blocks exactly the tRGB weights and biases train; their convolutions, the constant
    and every affine (tRGB's included) stay bitwise; the flag is refused without freeze-g."""
    base = load_generator(base_file)
    names = [n for n, _ in base.named_parameters()]
    plain = set(frozen_parameter_names(base, "freeze-g", 2))
    rgb = set(frozen_parameter_names(base, "freeze-g", 2, train_rgb=True))
    low_rgb = {n for n in names if n.startswith(("synthesis_network.b4.torgb.", "synthesis_network.b8.torgb."))
               and ".affine." not in n}
    assert low_rgb and rgb == plain - low_rgb
    tr = finetune(inverted(), ft_config(base_file, freeze="freeze-g", freeze_g_blocks=2, train_rgb=True), tmp_path,
                  progress=False, max_steps=3)
    changed = {k for k, v in base.state_dict().items() if not torch.equal(v, tr.G.state_dict()[k])}
    assert low_rgb <= changed
    assert not changed & rgb and latent_inconsistency(base, tr.G_ema) == []
    with pytest.raises(ValueError, match="train_rgb"):
        frozen_parameter_names(base, "affine", train_rgb=True)


def test_n_images_draws_only_the_first_images(base_file, tmp_path):
    class Recording(torch.utils.data.Dataset):
        def __init__(self):
            self.data, self.seen = inverted(), set()

        def __len__(self):
            return len(self.data)

        def __getitem__(self, i):
            self.seen.add(int(i))
            return self.data[i]

    ds = Recording()
    finetune(ds, ft_config(base_file, n_images=5), tmp_path, progress=False, max_steps=4)
    assert ds.seen and max(ds.seen) < 5
    with pytest.raises(ValueError, match="n_images is 99"):
        finetune(ds, ft_config(base_file, n_images=99), tmp_path / "b", progress=False, max_steps=1)


def test_finetune_requires_a_start_generator_and_resumes_exactly(base_file, tmp_path):
    with pytest.raises(ValueError, match="init_generator"):
        finetune(inverted(), FinetuneConfig(**CFG), tmp_path / "x", progress=False, max_steps=1)
    straight = finetune(inverted(), ft_config(base_file), tmp_path / "a", progress=False, max_steps=4)
    finetune(inverted(), ft_config(base_file), tmp_path / "b", progress=False, max_steps=2)
    resumed = finetune(inverted(), ft_config(base_file), tmp_path / "b", progress=False, max_steps=2)
    assert resumed.step == 4 and resumed.ada_p == straight.ada_p
    for k, v in straight.G_ema.state_dict().items():
        assert torch.equal(v, resumed.G_ema.state_dict()[k]), k
    # a resumed run must keep the freeze mode (it fixes what the checkpoint's optimizer holds)
    with pytest.raises(ValueError, match="freeze"):
        finetune(inverted(), ft_config(base_file, freeze="none"), tmp_path / "b", progress=False, max_steps=1)


# ----------------------------------------------------------------------------------------------- ADA
def test_ada_augment_probability_and_gradients():
    x = torch.rand(64, 3, 16, 16) * 2 - 1
    assert torch.equal(ada_augment(x, 0.0, torch.Generator().manual_seed(0)), x)
    x.requires_grad_(True)
    y = ada_augment(x, 1.0, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and not torch.allclose(y, x)
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # with p = 0.5 about half the images are touched by each operation: some come through unchanged
    # (probability 0.5^5 = 1/32 per image; 256 images: P(none unchanged) < 1e-3)
    z = torch.rand(256, 3, 16, 16) * 2 - 1
    out = ada_augment(z, 0.5, torch.Generator().manual_seed(1))
    same = ((out - z).abs() < 1e-5).flatten(1).all(1).float().mean()  # untouched up to float rounding
    assert 0.005 < float(same) < 0.15
    with pytest.raises(ValueError, match="p must be"):
        ada_augment(x, 1.5)


def test_ada_translation_is_an_exact_shift():
    """With only translation possible (p = 1, the colour operations' strengths zeroed) an image is its reflected
    shift: compared with a brute-force roll on the reflect-padded image."""
    import cddfm3d.stylegan2.training as tr

    x = torch.rand(8, 3, 16, 16)
    saved = tr.ADA_BRIGHTNESS, tr.ADA_CONTRAST, tr.ADA_SATURATION
    try:
        tr.ADA_BRIGHTNESS = tr.ADA_CONTRAST = tr.ADA_SATURATION = 0.0
        y = ada_augment(x, 1.0, torch.Generator().manual_seed(3))
    finally:
        tr.ADA_BRIGHTNESS, tr.ADA_CONTRAST, tr.ADA_SATURATION = saved
    s = 2  # round(16 * 0.125)
    for i in range(8):
        xi = x[i].flip(2)  # p = 1: every image flipped
        padded = torch.nn.functional.pad(xi[None], [s] * 4, mode="reflect")[0]
        hits = [(dx, dy) for dx in range(-s, s + 1) for dy in range(-s, s + 1)
                if torch.allclose(padded[:, s + dy:s + dy + 16, s + dx:s + dx + 16], y[i], atol=1e-6)]
        assert hits, i


def test_ada_probability_follows_its_formula(base_file, tmp_path):
    """p moves by interval * batch / (ada_kimg * 1000) toward more augmentation when r_t = E[sign(D(real))]
    exceeds the target, toward less below it, stays in [0, 1], and is saved with the run."""
    cfg = ft_config(base_file, augment="ada", ada_interval=2, ada_kimg=0.1, ada_target=0.6)
    tr = finetune(inverted(), cfg, tmp_path, progress=False, max_steps=2)
    assert all("ada_p" in row for row in json.loads((tmp_path / "log.json").read_text()))
    step = 2 * CFG["batch_size"] / 100
    tr.ada_p, tr._ada_signs = 0.0, []
    pos, mixed = torch.ones(4, 1), torch.tensor([[1.0], [1.0], [-1.0], [-1.0]])  # r_t = 1 and r_t = 0
    tr._adjust_ada(pos)
    assert tr.ada_p == 0.0  # not yet: one step of the interval
    tr._adjust_ada(pos)
    assert tr.ada_p == pytest.approx(step)
    for _ in range(40):
        tr._adjust_ada(pos)
    assert tr.ada_p == 1.0  # clamped
    tr._adjust_ada(mixed)
    tr._adjust_ada(mixed)
    assert tr.ada_p == pytest.approx(1.0 - step)
    state = tr.extra_state()
    tr.ada_p = 0.0
    tr.load_extra_state(state)
    assert tr.ada_p == pytest.approx(1.0 - step)


# ----------------------------------------------------------------------------------------------- delta files
def test_generator_delta_round_trip(base_file, tmp_path):
    base = load_generator(base_file)
    tr = finetune(inverted(), ft_config(base_file), tmp_path / "run", progress=False, max_steps=3)
    info = save_generator_delta(tr.G_ema, base, "mini/generator", "0" * 64, tmp_path / "d.safetensors")
    G = load_generator_delta(tmp_path / "d.safetensors", base=base)
    assert info["changed"] + info["unchanged"] == len(base.state_dict())
    worst = 0.0
    for k, v in tr.G_ema.state_dict().items():
        if torch.equal(v, base.state_dict()[k]):
            assert torch.equal(G.state_dict()[k], v), k  # unchanged tensors are exactly the base's
            continue
        err = float((G.state_dict()[k] - v).abs().max())
        change = float((v - base.state_dict()[k]).abs().max())
        # float16 rounding of the change: relative 2^-11 (plus the float32 rounding of the sum)
        assert err <= change * 2 ** -11 + float(v.abs().max()) * 2 ** -23 + 1e-12, k
        worst = max(worst, err)
    assert worst == pytest.approx(info["max_abs_error"], rel=0, abs=1e-12)
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(G(z, noise="const"), tr.G_ema(z, noise="const"), atol=1e-3)
    assert latent_inconsistency(base, G) == []


def test_generator_delta_refuses_other_base(base_file, tmp_path, monkeypatch):
    base = load_generator(base_file)
    save_generator_delta(base, base, "mini/generator", "0" * 64, tmp_path / "d.safetensors")
    # the shipped mini/generator has another sha256 than the one recorded
    with pytest.raises(CheckpointError, match="base_sha256"):
        load_generator_delta(tmp_path / "d.safetensors")
    other = Generator(16, z_dim=16, w_dim=32, mapping_layers=2, channel_max=16)
    with pytest.raises(CheckpointError, match="config"):
        load_generator_delta(tmp_path / "d.safetensors", base=other)
    with pytest.raises(ValueError, match="architectures differ"):
        save_generator_delta(other, base, "x", "0", tmp_path / "e.safetensors")
    with pytest.raises(FileNotFoundError):
        load_generator_delta(tmp_path / "missing.safetensors", base=base)


def test_generator_delta_int8_rows_within_their_bound(base_file, tmp_path):
    """int8 storage: each weight's error is at most half its row's quantisation step (max |change| of the row /
    254, plus float32 rounding of the sum), 1-D and 0-D changes stay float16, and the file is smaller."""
    from cddfm3d.serialization import read_safetensors

    base = load_generator(base_file)
    tr = finetune(inverted(), ft_config(base_file), tmp_path / "run", progress=False, max_steps=3)
    f16 = save_generator_delta(tr.G_ema, base, "mini/generator", "0" * 64, tmp_path / "h.safetensors")
    info = save_generator_delta(tr.G_ema, base, "mini/generator", "0" * 64, tmp_path / "q.safetensors",
                                precision="int8")
    assert info["precision"] == "int8" and info["changed"] == f16["changed"]
    assert (tmp_path / "q.safetensors").stat().st_size < 0.6 * (tmp_path / "h.safetensors").stat().st_size
    tensors, meta = read_safetensors(tmp_path / "q.safetensors")
    assert meta["precision"] == "int8"
    G = load_generator_delta(tmp_path / "q.safetensors", base=base)
    worst = 0.0
    for k, v in tr.G_ema.state_dict().items():
        b, got = base.state_dict()[k], G.state_dict()[k]
        if torch.equal(v, b):
            assert torch.equal(got, v) and "delta." + k not in tensors, k
            continue
        change = (v - b).double()
        err = (got.double() - v.double()).abs()
        if change.ndim >= 2:
            assert tensors["delta." + k].dtype == torch.int8 and tensors["scale." + k].shape == (change.shape[0],)
            row_max = change.reshape(change.shape[0], -1).abs().amax(1)
            bound = row_max / 254 * (1 + 1e-6) + v.double().abs().reshape(v.shape[0], -1).amax(1) * 2 ** -23
            assert (err.reshape(err.shape[0], -1) <= bound[:, None] + 1e-12).all(), k
        else:
            assert tensors["delta." + k].dtype == torch.float16, k
            assert (err <= change.abs() * 2 ** -11 + v.double().abs() * 2 ** -23 + 1e-12).all(), k
        worst = max(worst, float(err.max()))
    assert worst == pytest.approx(info["max_abs_error"], rel=1e-6, abs=1e-12)
    assert latent_inconsistency(base, G) == []
    with pytest.raises(ValueError, match="precision must be one of"):
        save_generator_delta(tr.G_ema, base, "x", "0", tmp_path / "e.safetensors", precision="int4")


def test_generator_delta_int8_refuses_missing_or_stray_scales(base_file, tmp_path):
    from cddfm3d.serialization import read_safetensors, save_safetensors

    base = load_generator(base_file)
    tr = finetune(inverted(), ft_config(base_file), tmp_path / "run", progress=False, max_steps=2)
    save_generator_delta(tr.G_ema, base, "mini/generator", "0" * 64, tmp_path / "q.safetensors", precision="int8")
    tensors, meta = read_safetensors(tmp_path / "q.safetensors")
    key = next(k for k, v in tensors.items() if v.dtype == torch.int8)
    no_scale = {k: v for k, v in tensors.items() if k != "scale." + key[len("delta."):]}
    save_safetensors(no_scale, tmp_path / "a.safetensors", meta)
    with pytest.raises(CheckpointError, match="needs a finite float32 scale .* found missing"):
        load_generator_delta(tmp_path / "a.safetensors", base=base)
    stray = {k: v for k, v in tensors.items() if k != key}
    save_safetensors(stray, tmp_path / "b.safetensors", meta)
    with pytest.raises(CheckpointError, match="scale of no stored int8 difference"):
        load_generator_delta(tmp_path / "b.safetensors", base=base)
    k = key[len("delta."):]
    half = next(n for n, v in tensors.items() if v.dtype == torch.float16)
    cases = {   # name: (tensors, metadata, message)
        "scale beside a float16 difference": ({**tensors, "scale." + half[len("delta."):]: torch.ones(1)}, meta,
                                              "scale of no stored int8 difference"),
        "int8 of one dimension": ({**tensors, half: torch.zeros(tensors[half].shape, dtype=torch.int8)}, meta,
                                  "int8 is stored only for tensors of 2 or more dimensions"),
        "integer scale": ({**tensors, "scale." + k: tensors["scale." + k].to(torch.int32)}, meta,
                          "finite float32 scale"),
        "NaN scale": ({**tensors, "scale." + k: torch.full_like(tensors["scale." + k], float("nan"))}, meta,
                      "finite float32 scale"),
        "int32 difference": ({**tensors, half: tensors[half].to(torch.int32)}, meta, "torch.int32"),
        "NaN difference": ({**tensors, half: torch.full_like(tensors[half], float("nan"))}, meta, "NaN or inf"),
        "int8 in a float16 file": (tensors, {**meta, "precision": "float16"}, "a float16 delta stores float16"),
        "unknown precision": (tensors, {**meta, "precision": "int4"}, "metadata field 'precision' is 'int4'"),
    }
    for ts, md, message in cases.values():
        save_safetensors(ts, tmp_path / "c.safetensors", md)
        with pytest.raises(CheckpointError, match=message):
            load_generator_delta(tmp_path / "c.safetensors", base=base)


def test_generator_delta_refuses_non_finite_changes(base_file, tmp_path):
    base = load_generator(base_file)
    G = load_generator(base_file)
    with torch.no_grad():
        G.synthesis_network.b8.conv0.weight[0, 0, 0, 0] = float("nan")
    for precision in ("float16", "int8"):
        with pytest.raises(ValueError, match="b8.conv0.weight' is not finite"):
            save_generator_delta(G, base, "x", "0", tmp_path / "d.safetensors", precision=precision)
