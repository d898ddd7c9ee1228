"""The training report: per-epoch stability signals and a summary. JSON-able.

Loss spikes: after KL warm-up, epoch t is a spike when its training-loss jump
d_t = loss_t − loss_{t−1} exceeds `spike_sd` robust standard deviations of the
earlier jumps (1.4826 · MAD around their median),
measured from their median; the sd is floored at the median absolute jump and at
1e-3·(1 + |loss_{t−1}|) so a smooth, slowly flattening curve has no spikes; at
least 3 earlier jumps are needed and the loss must actually rise. A spike is
unresolved when no later epoch's loss gets back to loss_{t−1}.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class EpochStats:
    """One VAE epoch (followed by its discriminator epochs). None = not applicable."""

    epoch: int
    beta: float  # KL warm-up weight
    loss: float  # mean training loss (negative β-ELBO)
    reconstruction: float  # mean E_q[log p(x|z,s)]
    kl: float  # mean KL(q ‖ N(0,I))
    expected_t: float  # mean E_q[T(z)]
    val_loss: float  # validation negative ELBO (β = 1)
    grad_norm: float  # mean pre-clipping gradient norm
    grad_norm_max: float
    nan_batches: int  # batches skipped for non-finite inputs, loss or gradients
    spike: bool
    precision_min: float  # decoded precision λ on the validation set
    precision_q01: float
    precision_q50: float
    precision_q99: float
    precision_max: float  # 1 / (smallest decoded variance)
    nu_min: float | None  # Student-t degrees of freedom (None: Gaussian decoder)
    nu_q01: float | None
    nu_q50: float | None
    disc_loss: float | None  # last discriminator epoch (None: standard prior)
    disc_accuracy: float | None
    active_units: int  # latent dims with Var_x[E_q z] > 0.01
    wall_s: float


@dataclass(frozen=True, slots=True)
class TrainingReport:
    epochs: int
    best_epoch: int
    best_val_loss: float
    nan_batches: int
    spikes: int
    unresolved_spikes: int
    stopped_early: bool
    warm_started: bool
    n_train: int
    n_val: int
    device: str
    wall_s: float
    history: tuple[EpochStats, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; non-finite floats become None."""
        d = asdict(self)
        d["history"] = [asdict(h) for h in self.history]
        out: dict[str, Any] = _jsonable(d)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainingReport:
        names = {f.name for f in fields(cls)}
        hist = tuple(EpochStats(**h) for h in d["history"])
        return cls(**{k: v for k, v in d.items() if k in names and k != "history"}, history=hist)


def spike_flags(losses: Sequence[float], k: float, start: int = 0) -> list[bool]:
    """Flag loss spikes (see module doc). losses: per-epoch training losses."""
    flags = [False] * len(losses)
    for t in range(start + 4, len(losses)):
        diffs = np.diff(np.asarray(losses[start:t], dtype=np.float64))
        med = float(np.median(diffs))
        sd = 1.4826 * float(np.median(np.abs(diffs - med)))
        sd = max(sd, float(np.median(np.abs(diffs))), 1e-3 * (1.0 + abs(losses[t - 1])))
        jump = losses[t] - losses[t - 1]
        flags[t] = jump > 0 and jump - med > k * sd
    return flags


def unresolved(losses: Sequence[float], flags: Sequence[bool]) -> int:
    """Spikes after which the loss never returned to its pre-spike level."""
    n = 0
    for t, f in enumerate(flags):
        if f and not any(v <= losses[t - 1] for v in losses[t + 1 :]):
            n += 1
    return n


def quantiles(a: np.ndarray[Any, Any], qs: Sequence[float]) -> list[float]:
    if a.size == 0:
        return [float("nan")] * len(qs)
    return [float(v) for v in np.quantile(a, qs)]


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v
