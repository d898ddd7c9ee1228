"""Site dependence of z: synthetic sites sharing structure with different offsets.

Measured as the held-out accuracy of a small classifier predicting the site from
z ~ q(z|x,s) (samples, i.e. what the decoder actually receives).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from streamvae.detector import Detector, ModelSpec, ThresholdSpec, TrainSpec, train_detector
from tests.unit.model.conftest import SiteData, make_sites

N_SITES = 3
# site_scaling off: per-site standardization would remove the offsets before the
# networks see them; this test measures what the networks do with site information
SPEC = ModelSpec(
    hidden=(32, 32), discriminator_hidden=(16, 16), latent_dim=4, site_capacity=8,
    site_scaling=False,
)  # fmt: skip
TRAIN = TrainSpec(
    max_epochs=12, batch_size=64, learning_rate=3e-3, kl_warmup_epochs=2,
    discriminator_epochs_per_cycle=3, site_dropout=0.0,
)  # fmt: skip


def site_accuracy(det: Detector, data: SiteData, seed: int = 0) -> float:
    slots, _ = det.slots_of(data.sites)
    x = torch.from_numpy(det.scaler.transform(data.values, data.sites))
    g = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        q = det.vae.encode(x, torch.from_numpy(slots))
        z = q.loc + q.scale * torch.randn(q.loc.shape, generator=g)
    y = torch.as_tensor([int(s.rsplit("-", 1)[1]) for s in data.sites])
    perm = torch.randperm(len(y), generator=g)
    tr, te = perm[: len(y) // 2], perm[len(y) // 2 :]
    torch.manual_seed(seed)
    clf = torch.nn.Sequential(
        torch.nn.Linear(z.shape[1], 32), torch.nn.Tanh(), torch.nn.Linear(32, N_SITES)
    )
    opt = torch.optim.Adam(clf.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(clf(z[tr]), y[tr]).backward()  # type: ignore[no-untyped-call]
        opt.step()
    with torch.no_grad():
        return float((clf(z[te]).argmax(1) == y[te]).float().mean())


def _train(data: SiteData, **spec: object) -> Detector:
    return train_detector(
        data.values, data.sites, features=data.features,
        model_spec=replace(SPEC, **spec),  # type: ignore[arg-type]
        train_spec=TRAIN, threshold_spec=ThresholdSpec(), device="cpu", version="s",
    )  # fmt: skip


@pytest.fixture(scope="module")
def accuracies() -> dict[str, float]:
    data = make_sites(np.random.default_rng(21), n_per_site=300, n_sites=N_SITES, offset=3.0)
    return {
        "pooled": site_accuracy(_train(data, conditional=False, prior="standard"), data),
        "standard": site_accuracy(_train(data, prior="standard"), data),
        "optimal": site_accuracy(_train(data, prior="optimal"), data),
    }


def test_pooled_vae_encodes_the_site(accuracies: dict[str, float]) -> None:
    """The measurement is sensitive: without conditioning z must carry the offset."""
    assert accuracies["pooled"] > 0.8


def test_conditioning_removes_site_information(accuracies: dict[str, float]) -> None:
    chance = 1 / N_SITES
    assert accuracies["standard"] < chance + 0.15
    assert accuracies["optimal"] < chance + 0.15


def test_optimal_prior_not_more_site_dependent(accuracies: dict[str, float]) -> None:
    """The KDD 2022 claim is a reduction; at this scale both are at chance, so we check
    non-inferiority (see docs/model.md, "Site dependence")."""
    assert accuracies["optimal"] <= accuracies["standard"] + 0.05
