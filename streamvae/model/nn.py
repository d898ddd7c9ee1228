"""Small building blocks: a tanh MLP with dropout on its last hidden layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Sequential):
    """`in_dim -> hidden[0] -> … -> hidden[-1] -> out_dim`, tanh between layers.

    Dropout (probability `dropout`) is applied to the last hidden layer only, as
    in the Student-t VAE / implicit-prior papers. Input `(..., in_dim)`, output
    `(..., out_dim)`.
    """

    def __init__(
        self, in_dim: int, hidden: Sequence[int], out_dim: int, *, dropout: float = 0.0
    ) -> None:
        layers: list[nn.Module] = []
        width = in_dim
        for i, h in enumerate(hidden):
            layers.append(nn.Linear(width, h))
            layers.append(nn.Tanh())
            if dropout > 0 and i == len(hidden) - 1:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, out_dim))
        super().__init__(*layers)

    @property
    def output_layer(self) -> nn.Linear:
        last = self[-1]
        assert isinstance(last, nn.Linear)
        return last


def zero_output(mlp: MLP) -> None:
    """Zero the output layer so the network starts as the constant 0."""
    with torch.no_grad():
        mlp.output_layer.weight.zero_()
        mlp.output_layer.bias.zero_()
