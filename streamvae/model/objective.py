"""The VAE objective with the implicit optimal prior.

For a record x of site s (slot index), with q = q(z|x,s) and T frozen:

    ELBO(x) = E_q[log p(x|z,s)] − KL(q ‖ N(0,I)) + E_q[T(z)]

because KL(q ‖ q(z)) = KL(q ‖ N(0,I)) − E_q[log q(z)/N(z;0,I)] and T estimates
that log-ratio. T's parameters get no gradient from this loss; the pathwise
gradient through z = μ + σ·ε to the encoder is kept (the dependence of q(z) on
the encoder is ignored, as in Takahashi et al., AAAI 2019). With the standard
prior T ≡ 0. KL warm-up multiplies the whole latent term (KL − E[T]) by β ∈ (0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributions import Normal, kl_divergence

from streamvae.model.prior import Discriminator
from streamvae.model.vae import VAE


@dataclass(frozen=True, slots=True)
class Terms:
    """Per-record terms, each (B,)."""

    reconstruction: torch.Tensor  # E_q[log p(x|z,s)]  (one-sample estimate)
    kl: torch.Tensor  # KL(q(z|x,s) ‖ N(0,I)), closed form
    expected_t: torch.Tensor  # E_q[T(z)] (one sample); zeros for the standard prior

    def loss(self, beta: float = 1.0) -> torch.Tensor:
        """Negative (β-weighted) ELBO, mean over the batch: 0-d tensor."""
        return (-self.reconstruction + beta * (self.kl - self.expected_t)).mean()


def standard_normal_like(q: Normal) -> Normal:
    zero = torch.zeros_like(q.loc)
    return Normal(zero, torch.ones_like(zero), validate_args=False)


def elbo_terms(
    vae: VAE,
    disc: Discriminator | None,
    x: torch.Tensor,
    site: torch.Tensor,
    eps: torch.Tensor | None = None,
) -> Terms:
    """x: (B, D), site: (B,) int64; eps: optional (B, L) noise (default: fresh randn).

    The caller freezes `disc` (requires_grad False / eval) during VAE steps.
    """
    q = vae.encode(x, site)
    noise = torch.randn_like(q.loc) if eps is None else eps
    z = q.loc + q.scale * noise
    rec = vae.decode(z, site).log_prob(x)  # type: ignore[no-untyped-call]
    kl = kl_divergence(q, standard_normal_like(q)).sum(-1)
    et = disc(z) if disc is not None else torch.zeros_like(kl)
    return Terms(rec, kl, et)
