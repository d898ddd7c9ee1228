"""What can blow up is bounded: ν > 2 (softplus floor), log-precision and encoder log-variance."""

from __future__ import annotations

import pytest
import torch

from streamvae.model.specs import ModelSpec
from streamvae.model.vae import LOG_PRECISION_MAX, LOGVAR_MAX, LOGVAR_MIN, NU_MAX, NU_MIN, VAE


def _extreme(vae: VAE, scale: float) -> VAE:
    with torch.no_grad():
        for p in vae.parameters():
            p.mul_(scale)
    return vae.eval()


@pytest.mark.parametrize("scale", [1.0, 1e3, -1e3])
def test_decoder_bounds(scale: float) -> None:
    torch.manual_seed(0)
    vae = _extreme(VAE(4, ModelSpec(hidden=(16,), latent_dim=3, site_capacity=4)), scale)
    z = torch.randn(2, 64, 3) * 100
    site = torch.randint(0, 4, (64,))
    loc, log_prec, nu = vae.decoder.params(z, vae.site_features(site))
    assert torch.isfinite(loc).all()
    assert (log_prec.abs() <= LOG_PRECISION_MAX).all()
    assert (nu > 2.0).all()
    assert (nu >= NU_MIN).all()
    assert (nu <= NU_MAX).all()
    assert torch.isfinite(vae.decode(z, site).log_prob(torch.zeros(64, 4))).all()


def test_nu_floor_is_above_two() -> None:
    assert NU_MIN > 2.0  # finite variance ν/(ν−2)
    assert NU_MAX > 100.0  # and the Gaussian limit stays reachable


@pytest.mark.parametrize("scale", [1.0, 1e3, -1e3])
def test_encoder_logvar_clamped(scale: float) -> None:
    torch.manual_seed(1)
    vae = _extreme(VAE(4, ModelSpec(hidden=(16,), latent_dim=3, site_capacity=4)), scale)
    q = vae.encode(torch.randn(64, 4) * 100, torch.randint(0, 4, (64,)))
    logvar = 2 * torch.log(q.scale)
    assert (logvar >= LOGVAR_MIN - 1e-4).all()
    assert (logvar <= LOGVAR_MAX + 1e-4).all()


def test_gaussian_decoder_precision_clamped() -> None:
    torch.manual_seed(2)
    spec = ModelSpec(hidden=(16,), latent_dim=3, site_capacity=4, decoder="gaussian")
    vae = _extreme(VAE(4, spec), 1e3)
    params = vae.decoder.params(torch.randn(64, 3) * 100, torch.randn(64, spec.site_embedding_dim))
    assert len(params) == 2
    assert (params[1].abs() <= LOG_PRECISION_MAX).all()
