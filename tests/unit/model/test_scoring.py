"""Importance-sampled −log p(x|s) against a linear-Gaussian model with a closed form."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.distributions import Independent, Normal

from streamvae.detector import Detector
from streamvae.model.nn import MLP, sigmoid_form
from streamvae.model.scoring import importance_score, inference_copy, packed_scorer, scoring_noise
from tests.unit.model.conftest import SiteData

D, L = 5, 2


class LinearGaussian:
    """p(z) = N(0, I), p(x|z) = N(Wz + b, σ²I) with orthogonal W columns (diagonal posterior).

    The encoder returns the exact posterior, optionally distorted (shifted / widened).
    """

    def __init__(self, seed: int = 0, shift: float = 0.0, widen: float = 1.0) -> None:
        g = np.random.default_rng(seed)
        q, _ = np.linalg.qr(g.normal(size=(D, L)))
        self.w = torch.as_tensor(q * np.array([2.0, 0.7]))
        self.b = torch.as_tensor(g.normal(size=D))
        self.sigma = 0.5
        self.shift, self.widen = shift, widen

    def site_features(self, site: torch.Tensor) -> torch.Tensor:
        return torch.zeros(site.shape[0], 0, dtype=torch.float64)

    def encoder(self, x: torch.Tensor, e: torch.Tensor) -> Normal:
        wtw = (self.w**2).sum(0)  # (L,) diagonal of WᵀW
        var = 1.0 / (1.0 + wtw / self.sigma**2)
        mean = var * ((x - self.b) @ self.w) / self.sigma**2
        return Normal(mean + self.shift, var.sqrt().expand_as(mean) * self.widen)

    def decoder(self, z: torch.Tensor, e: torch.Tensor) -> Independent[Any]:
        return Independent(Normal(z @ self.w.T + self.b, self.sigma), 1)

    def exact_logpx(self, x: np.ndarray) -> np.ndarray:
        w, b = self.w.numpy(), self.b.numpy()
        cov = w @ w.T + self.sigma**2 * np.eye(D)
        return stats.multivariate_normal(mean=b, cov=cov).logpdf(x)


class ConstantT:
    def __init__(self, c: float) -> None:
        self.c = c

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return torch.full(z.shape[:-1], self.c, dtype=z.dtype)


def _data(model: LinearGaussian, n: int = 400) -> torch.Tensor:
    torch.manual_seed(5)
    z = torch.randn(n, L, dtype=torch.float64)
    return z @ model.w.T + model.b + model.sigma * torch.randn(n, D, dtype=torch.float64)


def _score(model: LinearGaussian, x: torch.Tensor, k: int, disc: Any = None) -> Any:
    eps = scoring_noise(k, L, torch.device("cpu"), seed=3).double()
    site = torch.zeros(len(x), dtype=torch.int64)
    return importance_score(model, disc, x, site, eps)  # type: ignore[arg-type]


def test_exact_posterior_gives_exact_loglik_with_one_sample() -> None:
    model = LinearGaussian()
    x = _data(model)
    r = _score(model, x, k=1)
    np.testing.assert_allclose(-r.score.numpy(), model.exact_logpx(x.numpy()), atol=1e-8)


def test_importance_sampling_converges_with_k() -> None:
    model = LinearGaussian(shift=0.1, widen=1.5)
    x = _data(model)
    exact = model.exact_logpx(x.numpy())
    err = {k: np.abs(-_score(model, x, k=k).score.numpy() - exact) for k in (1, 16, 2048)}
    one = -_score(model, x, k=1).score.numpy()
    assert one.mean() < exact.mean() - 0.01  # one sample: a lower bound on average (ELBO)
    assert err[2048].mean() < err[16].mean() < err[1].mean()
    assert err[2048].max() < 0.05


def test_prior_ratio_enters_the_weights() -> None:
    model = LinearGaussian(shift=0.2)
    x = _data(model, 50)
    plain = _score(model, x, k=16).score
    shifted = _score(model, x, k=16, disc=ConstantT(0.7)).score
    torch.testing.assert_close(shifted, plain - 0.7)


@pytest.mark.parametrize("k", [1, 8, 64])
def test_contributions_plus_latent_sum_to_score(k: int) -> None:
    model = LinearGaussian(shift=0.3, widen=1.3)
    x = _data(model, 100)
    r = _score(model, x, k=k, disc=ConstantT(0.2))
    torch.testing.assert_close(r.contributions.sum(-1) + r.latent, r.score)
    # with the exact posterior the latent term is the closed-form KL-free remainder
    assert r.contributions.shape == (100, D)


def test_detector_contributions_sum_to_score(detector: Detector, site_data: SiteData) -> None:
    b = detector.score(site_data.values[:200], site_data.sites[:200])
    assert b.latent is not None
    np.testing.assert_allclose(b.contributions.sum(1) + b.latent, b.scores, rtol=1e-4, atol=1e-3)


def test_contribution_points_at_the_broken_sensor(detector: Detector, site_data: SiteData) -> None:
    x = site_data.values[:50].copy()
    x[:, 3] += 25.0 * np.asarray(detector.scaler.scale)[3]
    normal = detector.score(site_data.values[:50], site_data.sites[:50])
    broken = detector.score(x, site_data.sites[:50])
    assert (broken.scores > normal.scores).all()
    assert (broken.contributions.argmax(1) == 3).mean() > 0.9


@pytest.mark.parametrize("k", [1, 5])
def test_traced_scorer_equals_eager_maths(
    detector: Detector, site_data: SiteData, k: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The daemon scores through one traced graph (`packed_scorer`): the numbers of the
    eager `importance_score` up to float32 rounding (its MLPs are in sigmoid form), for
    any batch size (the trace was taken at 2 records). The trace itself must succeed
    (under the suite's warnings-as-errors too), else this compares eager with eager."""
    eps = scoring_noise(k, detector.model_spec.latent_dim, detector.device)
    with caplog.at_level(logging.ERROR, logger="streamvae.model.scoring"):
        scorer = packed_scorer(detector.vae, detector.disc, eps, len(detector.features))
    assert not caplog.records, caplog.text
    x = torch.from_numpy(detector.scaler.transform(site_data.values, site_data.sites))
    slots = torch.from_numpy(detector.slots_of(site_data.sites)[0])
    with torch.inference_mode():
        for n in (1, 7, 300):
            r = importance_score(detector.vae, detector.disc, x[:n], slots[:n], eps)
            eager = torch.cat([r.score[:, None], r.latent[:, None], r.contributions], 1)
            torch.testing.assert_close(scorer(x[:n], slots[:n]), eager, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("hidden", [(), (16,), (32, 16, 8)])
def test_sigmoid_form_is_the_same_function(hidden: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    mlp = MLP(6, hidden, 3, dropout=0.5).eval()
    with torch.no_grad():
        for p in mlp.parameters():
            p.normal_(0.0, 1.0)
    x = torch.cat([torch.randn(2000, 6) * 3.0, torch.zeros(1, 6), torch.full((1, 6), 1e30)])
    with torch.inference_mode():
        want, got = mlp(x), sigmoid_form(mlp)(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, nn.Tanh) for m in sigmoid_form(mlp).modules())


def test_scorer_falls_back_to_the_eager_maths(
    detector: Detector, site_data: SiteData, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(mlp: MLP) -> nn.Sequential:
        raise ValueError("not a tanh MLP")

    monkeypatch.setattr("streamvae.model.scoring.sigmoid_form", broken)
    eps = scoring_noise(1, detector.model_spec.latent_dim, detector.device)
    scorer = packed_scorer(detector.vae, detector.disc, eps, len(detector.features))
    x = torch.from_numpy(detector.scaler.transform(site_data.values, site_data.sites))[:20]
    slots = torch.from_numpy(detector.slots_of(site_data.sites)[0])[:20]
    with torch.inference_mode():
        r = importance_score(detector.vae, detector.disc, x, slots, eps)
        eager = torch.cat([r.score[:, None], r.latent[:, None], r.contributions], 1)
        torch.testing.assert_close(scorer(x, slots), eager, rtol=0, atol=0)


def test_sigmoid_form_refuses_other_activations() -> None:
    mlp = MLP(4, (8,), 2)
    mlp[1] = nn.ReLU()
    with pytest.raises(ValueError, match="tanh MLP"):
        sigmoid_form(mlp)


def test_inference_copy_leaves_the_model_alone(detector: Detector) -> None:
    before = {k: v.clone() for k, v in detector.vae.state_dict().items()}
    fast = inference_copy(detector.vae)
    assert not any(isinstance(m, MLP | nn.Tanh) for m in fast.modules())
    assert sum(isinstance(m, MLP) for m in detector.vae.modules()) == 2
    for k, v in detector.vae.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
