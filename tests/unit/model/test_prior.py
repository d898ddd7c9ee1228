"""The discriminator T recovers the known log-ratio of two Gaussians."""

from __future__ import annotations

import math

import torch
from torch.distributions import MultivariateNormal

from streamvae.model.prior import Discriminator, discriminator_loss


def test_discriminator_starts_as_standard_prior() -> None:
    disc = Discriminator(3, (8, 8))
    assert torch.equal(disc(torch.randn(10, 3)), torch.zeros(10))


def test_recovers_log_ratio_of_two_gaussians() -> None:
    torch.manual_seed(0)
    dim = 2
    q = MultivariateNormal(torch.tensor([0.8, -0.5]), torch.diag(torch.tensor([0.5, 0.3])))
    p = MultivariateNormal(torch.zeros(dim), torch.eye(dim))
    disc = Discriminator(dim, (32, 32), dropout=0.0)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 400)
    for _ in range(400):
        loss, _ = discriminator_loss(disc, q.sample((1024,)), p.sample((1024,)))
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()
    disc.eval()
    # evaluate where q has its mass (the ratio is only identifiable where both have data)
    z = q.sample((4000,))
    with torch.no_grad():
        err = disc(z) - (q.log_prob(z) - p.log_prob(z))
    assert float(err.abs().mean()) < 0.12
    assert float(err.abs().quantile(0.9)) < 0.2
    # the learned prior N·exp(T) is nearly normalised: E_N[exp T] ≈ 1
    with torch.no_grad():
        mass = float(torch.exp(disc(p.sample((20000,)))).mean())
    assert math.isclose(mass, 1.0, abs_tol=0.1)


def test_loss_and_accuracy_at_chance_for_identical_distributions() -> None:
    disc = Discriminator(2, (8,))
    with torch.no_grad():
        loss, acc = discriminator_loss(disc, torch.randn(100, 2), torch.randn(100, 2))
    assert math.isclose(float(loss), math.log(2), rel_tol=1e-6)
    assert 0.0 <= float(acc) <= 1.0
