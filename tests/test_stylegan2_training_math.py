"""GAN training updates checked against their formulas (StyleGAN2, Karras et al. 2020, Appendix B and the
official training loop): the EMA generator, the lazy R1 penalty and the lazy-regularisation optimizer settings.

Each check is a function of the trainer class, so that a deliberately broken subclass can be run through the
same check (that is how each was shown to fail: a subclass with the EMA lerp swapped, the R1 term without its
``r1_every`` factor, and a discriminator optimizer with the plain learning rate and betas).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from cddfm3d.stylegan2.training import GANTrainer, TrainConfig

SMALL = dict(resolution=16, generator=dict(z_dim=16, w_dim=16, mapping_layers=2, channel_max=16),
             discriminator=dict(channel_max=16), batch_size=4, augment="none", seed=3)


def _trainer(tmp_path, cls=GANTrainer, **overrides) -> GANTrainer:
    return cls(TrainConfig(**{**SMALL, **overrides}), tmp_path, "cpu")


# ------------------------------------------------------------------------------------------------ EMA
def ema_beta(cfg: TrainConfig, images_seen: int, batch: int) -> float:
    """beta = 0.5 ** (batch / half_life) in float64; half_life = ema_kimg * 1000 images, capped at
    ema_rampup * images_seen while the run is young (NVIDIA's ramp-up)."""
    half_life = cfg.ema_kimg * 1000.0
    if cfg.ema_rampup is not None:
        half_life = min(half_life, images_seen * cfg.ema_rampup)
    return 0.5 ** (batch / half_life)


def check_ema_update(tmp_path, cls=GANTrainer):
    cases = [  # (config overrides, images seen): ramp-up active, ramp-up off, ramp-up saturated
        (dict(ema_kimg=10.0, ema_rampup=0.05), 1_000),
        (dict(ema_kimg=0.1, ema_rampup=None), 64),
        (dict(ema_kimg=10.0, ema_rampup=0.05), 1_000_000),
    ]
    for i, (overrides, seen) in enumerate(cases):
        tr = _trainer(tmp_path / str(i), cls, **overrides)
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():  # G has trained away from G_ema: they differ everywhere
            for p in tr.G.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            for b in tr.G.buffers():
                if b.is_floating_point():
                    b.add_(torch.randn(b.shape, generator=g))
        ema_old = [p.detach().double().clone() for p in tr.G_ema.parameters()]
        now = [p.detach().double().clone() for p in tr.G.parameters()]
        tr.images_seen = seen
        batch = 16
        tr.update_ema(batch)
        beta = ema_beta(tr.cfg, seen, batch)
        assert 0.15 < beta < 0.9999, beta  # far enough from 0.5 that a swapped lerp is visible
        for (name, p), old, cur in zip(tr.G_ema.named_parameters(), ema_old, now, strict=True):
            expected = beta * old + (1 - beta) * cur
            torch.testing.assert_close(p.double(), expected, rtol=1e-6, atol=1e-7, msg=f"{name} (case {i})")
        for (name, b_ema), b in zip(tr.G_ema.named_buffers(), tr.G.buffers(), strict=True):
            assert torch.equal(b_ema, b), f"buffer {name} is copied, not averaged (case {i})"


def test_ema_update_matches_the_half_life_formula(tmp_path):
    check_ema_update(tmp_path)


# ------------------------------------------------------------------------------------------------ R1
def _record_d_inputs(D: torch.nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    D.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach().clone()))
    return seen


def _grads_at_step(opt: torch.optim.Optimizer, params) -> list:
    """Make ``opt.step`` record the gradients it applies (what the update used, whatever happens after)."""
    taken: list = []
    step = opt.step

    def recording_step(*args, **kwargs):
        taken[:] = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]
        return step(*args, **kwargs)

    opt.step = recording_step
    return taken


def reference_d_gradients(D: torch.nn.Module, fake, real, gamma: float, r1_every: int, regularise: bool):
    """Gradient of the discriminator loss, written from the formula on a copy of D:
    mean softplus(D(fake)) + mean softplus(-D(real)) [+ gamma / 2 * r1_every * mean_i ||d D(x_i) / d x_i||^2]."""
    D = copy.deepcopy(D)
    D.zero_grad(set_to_none=True)
    loss = F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean()
    if regularise:
        x = real.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
        loss = loss + gamma / 2 * r1_every * g.square().sum(dim=[1, 2, 3]).mean()
    loss.backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad for p in D.parameters()]


def _max_rel_diff(a, b) -> float:
    num = max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))
    return num / max(float(y.abs().max()) for y in b)


def check_r1_gradient(tmp_path, cls=GANTrainer):
    gamma, k = 5.0, 4
    tr = _trainer(tmp_path, cls, r1_gamma=gamma, r1_every=k)
    real = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for step, regularise in ((0, True), (1, False), (k, True)):
        tr.step = step
        D_before = copy.deepcopy(tr.D)
        inputs = _record_d_inputs(tr.D)
        taken = _grads_at_step(tr.opt_D, list(tr.D.parameters()))
        tr.d_step(real)
        tr.D._forward_pre_hooks.clear()
        # D saw the fakes, then the reals (and the reals again for R1 on a regularisation step only)
        assert len(inputs) == (3 if regularise else 2), (step, len(inputs))
        fake = inputs[0]
        torch.testing.assert_close(inputs[1], real, rtol=0, atol=0)
        ref = reference_d_gradients(D_before, fake, real, gamma, k, regularise)
        assert taken, "d_step did not call opt_D.step()"
        assert _max_rel_diff(taken, ref) < 1e-4, f"step {step}: D gradient differs from the formula"
        if regularise:  # the check has power: without the x r1_every factor the gradient is far off
            plain = reference_d_gradients(D_before, fake, real, gamma, 1, regularise)
            assert _max_rel_diff(plain, ref) > 1e-2


def test_d_gradient_has_the_lazy_r1_term_with_its_interval_factor(tmp_path):
    check_r1_gradient(tmp_path)


# ------------------------------------------------------------------------------------------------ optimizers
def check_lazy_regularisation_optimizers(tmp_path, cls=GANTrainer):
    lr, betas, k = 0.003, (0.5, 0.99), 4
    tr = _trainer(tmp_path, cls, lr=lr, betas=betas, r1_every=k)
    ratio = k / (k + 1)  # StyleGAN2 App. B: lazy regularisation every k steps rescales Adam's lr and betas
    (d_group,) = tr.opt_D.param_groups
    assert d_group["lr"] == pytest.approx(lr * ratio, rel=1e-12), f"opt_D lr {d_group['lr']} != lr * k / (k + 1)"
    expected_betas = (betas[0] ** ratio, betas[1] ** ratio)
    assert tuple(d_group["betas"]) == pytest.approx(expected_betas, rel=1e-12), \
        f"opt_D betas {d_group['betas']} != beta ** (k / (k + 1)) = {expected_betas}"
    (g_group,) = tr.opt_G.param_groups  # the generator has no lazy regulariser here: plain settings
    assert g_group["lr"] == pytest.approx(lr, rel=1e-12)
    assert tuple(g_group["betas"]) == pytest.approx(betas, rel=1e-12)
    assert {id(p) for p in d_group["params"]} == {id(p) for p in tr.D.parameters()}
    assert {id(p) for p in g_group["params"]} == {id(p) for p in tr.G.parameters()}


def test_discriminator_optimizer_uses_the_lazy_regularisation_ratio(tmp_path):
    check_lazy_regularisation_optimizers(tmp_path)
