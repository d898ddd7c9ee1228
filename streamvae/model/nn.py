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


def sigmoid_form(mlp: MLP) -> nn.Sequential:
    """The same function as `mlp` (in eval mode: no dropout) with sigmoid activations.

    tanh(a) = 2·sigmoid(2a) − 1, and the constants fold into the linear layers: a
    layer feeding a tanh gets 2·W, 2·b; a layer reading one computes W(2s − 1) + b =
    (2·W)s + (b − W·1). Scaling by 2 is exact in floating point; only the folded bias
    (summed in float64) and sigmoid's own rounding differ: outputs agree to float32
    rounding (tests/unit/model). Why: torch's float32 tanh is slow on the CPU (357 µs
    for a (1024, 128) tensor where sigmoid takes 47), and it was 35 % of the scoring
    graph's time.
    """
    others = {type(m) for m in mlp if not isinstance(m, nn.Linear)}
    if not others <= {nn.Tanh, nn.Dropout}:  # the folding is tanh's identity, nothing else
        raise ValueError(f"sigmoid_form needs a tanh MLP, got layers {sorted(map(str, others))}")
    linears = [m for m in mlp if isinstance(m, nn.Linear)]
    layers: list[nn.Module] = []
    for i, lin in enumerate(linears):
        w = lin.weight.detach().double()
        b = lin.bias.detach().double()
        if i > 0:  # reads 2s − 1
            b = b - w.sum(1)
            w = w * 2.0
        if i < len(linears) - 1:  # feeds tanh(a) = 2·sigmoid(2a) − 1
            w = w * 2.0
            b = b * 2.0
        folded = nn.Linear(lin.in_features, lin.out_features, device=lin.weight.device)
        with torch.no_grad():
            folded.weight.copy_(w.to(lin.weight.dtype))
            folded.bias.copy_(b.to(lin.bias.dtype))
        layers.append(folded)
        if i < len(linears) - 1:
            layers.append(nn.Sigmoid())
    return nn.Sequential(*layers).eval()
