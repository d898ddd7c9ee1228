"""The model's densities and divergences against references (scipy, closed forms)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch.distributions import Normal, kl_divergence

from streamvae.model.objective import elbo_terms, standard_normal_like
from streamvae.model.specs import ModelSpec
from streamvae.model.vae import VAE, Decoder


def _params(rng: np.random.Generator, n: int = 200) -> tuple[np.ndarray, ...]:
    x = rng.standard_t(3, size=n) * 2
    loc = rng.normal(size=n)
    log_prec = rng.uniform(-3, 3, size=n)
    nu = 2.1 + rng.exponential(5, size=n)
    return x, loc, log_prec, nu


def test_student_t_log_density_matches_scipy(rng: np.random.Generator) -> None:
    x, loc, log_prec, nu = _params(rng)
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    dist = Decoder.distribution(t(loc)[None], t(log_prec)[None], t(nu)[None])
    got = dist.base_dist.log_prob(t(x)[None]).numpy()[0]
    want = stats.t.logpdf(x, df=nu, loc=loc, scale=np.exp(-0.5 * log_prec))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(dist.log_prob(t(x)[None]).numpy(), [want.sum()], rtol=1e-9)


def test_gaussian_log_density_matches_scipy(rng: np.random.Generator) -> None:
    x, loc, log_prec, _ = _params(rng)
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    dist = Decoder.distribution(t(loc)[None], t(log_prec)[None])
    got = dist.base_dist.log_prob(t(x)[None]).numpy()[0]
    want = stats.norm.logpdf(x, loc=loc, scale=np.exp(-0.5 * log_prec))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_kl_to_standard_normal_closed_form(rng: np.random.Generator) -> None:
    mu = torch.as_tensor(rng.normal(size=(50, 4)))
    sd = torch.as_tensor(np.exp(rng.uniform(-2, 1, size=(50, 4))))
    q = Normal(mu, sd)
    got = kl_divergence(q, standard_normal_like(q)).sum(-1)
    want = 0.5 * (mu**2 + sd**2 - 1 - torch.log(sd**2)).sum(-1)
    torch.testing.assert_close(got, want)


def test_elbo_terms_use_closed_form_kl() -> None:
    torch.manual_seed(0)
    vae = VAE(5, ModelSpec(hidden=(8,), latent_dim=3, site_capacity=4)).eval()
    x, s = torch.randn(7, 5), torch.tensor([0, 1, 2, 3, 1, 0, 2])
    terms = elbo_terms(vae, None, x, s)
    q = vae.encode(x, s)
    want = 0.5 * (q.loc**2 + q.scale**2 - 1 - torch.log(q.scale**2)).sum(-1)
    torch.testing.assert_close(terms.kl, want)
    torch.testing.assert_close(terms.expected_t, torch.zeros(7))
    # β weights only the latent part: loss(0) is the negative reconstruction
    torch.testing.assert_close(terms.loss(0.0), -terms.reconstruction.mean())


@pytest.mark.parametrize("k", [1.0, -1.0])
def test_student_t_tail_heavier_than_gaussian(k: float) -> None:
    loc, lp, nu = torch.zeros(1), torch.zeros(1), torch.full((1,), 3.0)
    far = torch.full((1,), 8.0 * k)
    st = Decoder.distribution(loc, lp, nu).base_dist.log_prob(far)
    ga = Decoder.distribution(loc, lp).base_dist.log_prob(far)
    assert float(st) > float(ga) + 20
