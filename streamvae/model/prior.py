"""The implicit optimal prior: a density-ratio discriminator T(z) ≈ log q(z) / N(z; 0, I).

q(z) = (1/N) Σ_n q(z|x_n, s_n) is the aggregated posterior. T is trained by
logistic regression: z ~ q(z) (encode a random training record, sample from its
posterior) has label 1, z ~ N(0, I) label 0. At the optimum the logit equals
log q(z) − log N(z; 0, I), so the learned prior is p*(z) ∝ N(z; 0, I)·exp(T(z)).

The output layer starts at zero, so an untrained T is the standard prior.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from streamvae.model.nn import MLP, zero_output


class Discriminator(nn.Module):
    """T(z): (..., L) -> (...,) log density ratio estimate."""

    def __init__(self, latent_dim: int, hidden: Sequence[int], dropout: float = 0.5) -> None:
        super().__init__()
        self.net = MLP(latent_dim, hidden, 1, dropout=dropout)
        zero_output(self.net)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(z).squeeze(-1)
        return out


def discriminator_loss(
    disc: Discriminator, z_posterior: torch.Tensor, z_prior: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic loss and accuracy. z_posterior: (B, L) label 1; z_prior: (B', L) label 0.

    Returns (mean loss, accuracy) as 0-d tensors.
    """
    t_pos = disc(z_posterior)
    t_neg = disc(z_prior)
    loss = 0.5 * (F.softplus(-t_pos).mean() + F.softplus(t_neg).mean())
    acc = 0.5 * ((t_pos > 0).float().mean() + (t_neg <= 0).float().mean())
    return loss, acc
