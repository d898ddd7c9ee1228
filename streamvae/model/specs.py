"""Frozen, plain-number specifications for the model, its training and its thresholds.

Built at the composition root (`streamvae.offline.specs_from_settings`) or directly
in code and tests. `ModelSpec` is the architecture: two detectors whose `ModelSpec`
(apart from `importance_samples`) and features agree have identical tensor shapes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

DecoderKind = Literal["student_t", "gaussian"]
PriorKind = Literal["optimal", "standard"]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Architecture and scoring parameters.

    `importance_samples` is K for streaming scores (`Detector.score`);
    `loglik_samples` is K for `Detector.loglik` (held-out log-likelihood for the
    retraining gate), where accuracy matters more than speed.
    """

    decoder: DecoderKind = "student_t"
    prior: PriorKind = "optimal"
    conditional: bool = True
    latent_dim: int = 8
    hidden: tuple[int, ...] = (128, 128)
    discriminator_hidden: tuple[int, ...] = (64, 64)
    site_embedding_dim: int = 8
    site_capacity: int = 256
    importance_samples: int = 1
    loglik_samples: int = 32
    scale_floor: float = 0.01
    site_scaling: bool = False
    encoder_dropout: float = 0.1
    discriminator_dropout: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(
            self, "discriminator_hidden", tuple(int(h) for h in self.discriminator_hidden)
        )
        if self.decoder not in ("student_t", "gaussian"):
            raise ValueError(f"unknown decoder {self.decoder!r}")
        if self.prior not in ("optimal", "standard"):
            raise ValueError(f"unknown prior {self.prior!r}")
        if min(self.latent_dim, self.importance_samples, self.loglik_samples) <= 0:
            raise ValueError("latent_dim, importance_samples and loglik_samples must be > 0")
        if self.site_capacity < 2:
            raise ValueError("site_capacity >= 2 required")
        if not self.hidden or min(self.hidden) <= 0:
            raise ValueError("hidden must be non-empty positive sizes")

    def shape_key(self) -> dict[str, Any]:
        """The fields that determine tensor shapes (everything but scoring K)."""
        d = self.to_dict()
        d.pop("importance_samples")
        d.pop("loglik_samples")
        d.pop("scale_floor")
        d.pop("site_scaling")
        d.pop("encoder_dropout")
        d.pop("discriminator_dropout")
        return d

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        d["discriminator_hidden"] = list(self.discriminator_hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(**_known(cls, d))


@dataclass(frozen=True, slots=True)
class TrainSpec:
    """Optimisation parameters for `streamvae.model.training.fit`."""

    seed: int = 0
    max_epochs: int = 60
    batch_size: int = 256
    learning_rate: float = 1e-3
    discriminator_learning_rate: float = 1e-3
    vae_epochs_per_cycle: int = 1
    discriminator_epochs_per_cycle: int = 10
    kl_warmup_epochs: int = 5
    patience: int = 8
    validation_fraction: float = 0.1
    grad_clip: float = 10.0
    site_dropout: float = 0.1
    spike_sd: float = 5.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainSpec:
        return cls(**_known(cls, d))


@dataclass(frozen=True, slots=True)
class ThresholdSpec:
    """Threshold calibration: target false-positive rate per site, fallback, POT."""

    false_positive_rate: float = 0.01
    min_site_records: int = 200
    pot: bool = True
    pot_min_exceedances: int = field(default=30)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ThresholdSpec:
        return cls(**_known(cls, d))


def _known(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return dict(d)
