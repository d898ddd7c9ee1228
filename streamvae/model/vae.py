"""Site-conditioned VAE networks: q(z|x,s) and p(x|z,s).

Site conditioning: one learned embedding table with `site_capacity` rows shared
by encoder and decoder. Slot 0 is the pooled / unknown site (trained through
site dropout); slots 1… are assigned to sites by the detector. Adding a site
only claims a free row, so tensor shapes never change. With
`conditional=False` there is no embedding and the site argument is ignored.

Bounds (see the module constants, tested in tests/unit/model/test_bounds.py):
- Student-t degrees of freedom ν = NU_MIN + softplus(raw), clamped at NU_MAX,
  so ν > 2 always (finite variance);
- decoder log-precision log λ (Gaussian: log σ²) clamped to ±LOG_PRECISION_MAX;
- encoder log-variance clamped to [LOGVAR_MIN, LOGVAR_MAX].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Independent, Normal, StudentT

from streamvae.model.nn import MLP
from streamvae.model.specs import ModelSpec

NU_MIN = 2.1
NU_MAX = 1000.0
LOG_PRECISION_MAX = 10.0
LOGVAR_MIN = -8.0
LOGVAR_MAX = 4.0


class Encoder(nn.Module):
    """q(z | x, s) = Normal(loc, scale); x: (B, D), e: (B, E) site features."""

    def __init__(
        self, n_features: int, site_dim: int, latent_dim: int, hidden: Sequence[int], dropout: float
    ) -> None:
        super().__init__()
        self.net = MLP(n_features + site_dim, hidden, 2 * latent_dim, dropout=dropout)
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> Normal:
        """Returns a Normal with batch shape (B, L)."""
        h = self.net(torch.cat((x, e), dim=-1) if e.shape[-1] else x)
        loc, logvar = h.split(self.latent_dim, dim=-1)
        logvar = logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)
        return Normal(loc, torch.exp(0.5 * logvar), validate_args=False)


class Decoder(nn.Module):
    """p(x | z, s): Independent(StudentT(ν, μ, λ^-1/2)) or Independent(Normal(μ, σ)).

    z: (..., B, L), e: (B, E); returns a distribution with batch shape (..., B)
    and event shape (D,). Every parameter (μ, λ, ν) is a function of (z, s).
    """

    def __init__(
        self,
        n_features: int,
        site_dim: int,
        latent_dim: int,
        hidden: Sequence[int],
        *,
        dropout: float,
        kind: str,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.n_features = n_features
        n_out = 3 if kind == "student_t" else 2
        self.net = MLP(latent_dim + site_dim, hidden, n_out * n_features, dropout=dropout)

    def params(self, z: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(μ, log λ[, ν]) each (..., B, D); log λ is log-precision (Gaussian: -log σ²)."""
        if e.shape[-1]:
            h = self.net(torch.cat((z, e.expand(*z.shape[:-1], e.shape[-1])), dim=-1))
        else:
            h = self.net(z)
        parts = h.split(self.n_features, dim=-1)
        loc = parts[0]
        log_prec = parts[1].clamp(-LOG_PRECISION_MAX, LOG_PRECISION_MAX)
        if self.kind == "student_t":
            nu = (NU_MIN + F.softplus(parts[2])).clamp(max=NU_MAX)
            return loc, log_prec, nu
        return loc, log_prec

    def forward(self, z: torch.Tensor, e: torch.Tensor) -> Independent[Any]:
        p = self.params(z, e)
        return self.distribution(*p)

    @staticmethod
    def distribution(
        loc: torch.Tensor, log_prec: torch.Tensor, nu: torch.Tensor | None = None
    ) -> Independent[Any]:
        scale = torch.exp(-0.5 * log_prec)
        if nu is not None:
            base: torch.distributions.Distribution = StudentT(nu, loc, scale, validate_args=False)
        else:
            base = Normal(loc, scale, validate_args=False)
        return Independent(base, 1, validate_args=False)


class VAE(nn.Module):
    """Encoder + decoder + site embedding, built from plain numbers."""

    def __init__(self, n_features: int, spec: ModelSpec) -> None:
        super().__init__()
        self.n_features = n_features
        self.spec = spec
        site_dim = spec.site_embedding_dim if spec.conditional else 0
        self.site_dim = site_dim
        self.embedding: nn.Embedding | None = (
            nn.Embedding(spec.site_capacity, site_dim) if spec.conditional else None
        )
        if self.embedding is not None:
            nn.init.normal_(self.embedding.weight, std=0.1)
        self.encoder = Encoder(
            n_features, site_dim, spec.latent_dim, spec.hidden, spec.encoder_dropout
        )
        self.decoder = Decoder(
            n_features,
            site_dim,
            spec.latent_dim,
            tuple(reversed(spec.hidden)),
            dropout=spec.encoder_dropout,
            kind=spec.decoder,
        )

    def site_features(self, site: torch.Tensor) -> torch.Tensor:
        """site: (B,) int64 slots -> (B, E) embedding rows ((B, 0) if unconditional)."""
        if self.embedding is None:
            return torch.zeros((site.shape[0], 0), device=site.device)
        out: torch.Tensor = self.embedding(site)
        return out

    def encode(self, x: torch.Tensor, site: torch.Tensor) -> Normal:
        """x: (B, D), site: (B,) -> q(z|x,s) with batch shape (B, L)."""
        q: Normal = self.encoder(x, self.site_features(site))
        return q

    def decode(self, z: torch.Tensor, site: torch.Tensor) -> Independent[Any]:
        """z: (..., B, L), site: (B,) -> p(x|z,s) with batch shape (..., B), event (D,)."""
        p: Independent[Any] = self.decoder(z, self.site_features(site))
        return p
