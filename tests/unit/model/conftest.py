"""Small synthetic multi-site data and fast specs for the model tests."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import pytest

from streamvae.detector import Detector, ModelSpec, ThresholdSpec, TrainSpec, train_detector


@dataclass(frozen=True)
class SiteData:
    values: npt.NDArray[np.float32]  # (N, D)
    sites: list[str]
    features: tuple[str, ...]


def make_sites(
    rng: np.random.Generator,
    *,
    n_per_site: int = 300,
    n_sites: int = 3,
    d: int = 6,
    offset: float = 2.0,
    sample_rng: np.random.Generator | None = None,
) -> SiteData:
    """Sites share a 2-D linear structure and differ by a per-site offset.

    The structure comes from `rng`; the samples from `sample_rng` (default: `rng`),
    so the same `rng` seed with another `sample_rng` gives fresh data of the same law.
    """
    w = rng.normal(size=(2, d))
    rng = sample_rng or rng
    xs, ss = [], []
    for i in range(n_sites):
        z = rng.normal(size=(n_per_site, 2))
        xs.append(z @ w + 0.1 * rng.normal(size=(n_per_site, d)) + offset * i)
        ss += [f"site-{i}"] * n_per_site
    return SiteData(np.concatenate(xs).astype(np.float32), ss, tuple(f"f{j}" for j in range(d)))


TINY_MODEL = ModelSpec(
    hidden=(32, 32), discriminator_hidden=(16, 16), latent_dim=4, site_capacity=16,
    site_scaling=True,  # exercise the per-site scaler path (off by default)
)  # fmt: skip
TINY_TRAIN = TrainSpec(
    max_epochs=4, discriminator_epochs_per_cycle=2, kl_warmup_epochs=1, batch_size=128
)
TINY_THRESH = ThresholdSpec(min_site_records=20)


def tiny_detector(
    data: SiteData,
    version: str = "v1",
    *,
    init: Detector | None = None,
    train_seed: int = 0,
    **model: object,
) -> Detector:
    spec = ModelSpec(**{**TINY_MODEL.to_dict(), **model})  # type: ignore[arg-type]
    return train_detector(
        data.values,
        data.sites,
        features=data.features,
        model_spec=spec,
        train_spec=replace(TINY_TRAIN, seed=train_seed),
        threshold_spec=TINY_THRESH,
        device="cpu",
        version=version,
        created_at=1000.0,
        init=init,
    )


@pytest.fixture(scope="module")
def site_data() -> SiteData:
    return make_sites(np.random.default_rng(7))


@pytest.fixture(scope="module")
def detector(site_data: SiteData) -> Detector:
    return tiny_detector(site_data)
