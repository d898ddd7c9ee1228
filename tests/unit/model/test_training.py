"""fit / train_detector: gradients, determinism, non-finite batches, early stopping, warm start."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from streamvae.detector import Detector, ModelSpec, TrainSpec
from streamvae.model.objective import elbo_terms
from streamvae.model.prior import Discriminator, discriminator_loss
from streamvae.model.report import spike_flags, unresolved
from streamvae.model.training import fit
from streamvae.model.vae import VAE
from tests.unit.model.conftest import TINY_MODEL, TINY_TRAIN, SiteData, make_sites, tiny_detector


@pytest.mark.parametrize("decoder", ["student_t", "gaussian"])
def test_gradient_reaches_every_parameter(decoder: str) -> None:
    torch.manual_seed(0)
    spec = ModelSpec(
        hidden=(8, 8), discriminator_hidden=(8,), latent_dim=2, site_capacity=4, decoder=decoder
    )  # type: ignore[arg-type]
    vae = VAE(3, spec)
    disc = Discriminator(2, (8,))
    torch.nn.init.normal_(disc.net.output_layer.weight)
    disc.requires_grad_(False)
    x, s = torch.randn(32, 3), torch.arange(32) % 4
    elbo_terms(vae, disc.eval(), x, s).loss(0.5).backward()  # type: ignore[no-untyped-call]
    for name, p in vae.named_parameters():
        assert p.grad is not None, name
        assert float(p.grad.abs().sum()) > 0, name
    assert all(p.grad is None for p in disc.parameters())  # T is frozen in VAE steps
    disc.requires_grad_(True).train()
    loss, _ = discriminator_loss(disc, torch.randn(16, 2), torch.randn(16, 2))
    loss.backward()  # type: ignore[no-untyped-call]
    for name, p in disc.named_parameters():
        assert p.grad is not None, name
        assert float(p.grad.abs().sum()) > 0, name


def test_deterministic_given_seed(site_data: SiteData, detector: Detector) -> None:
    again = tiny_detector(site_data)
    x, s = site_data.values[:40], site_data.sites[:40]
    np.testing.assert_array_equal(detector.score(x, s).scores, again.score(x, s).scores)
    assert detector.thresholds == again.thresholds
    other = tiny_detector(site_data, train_seed=1)
    assert not np.array_equal(detector.score(x, s).scores, other.score(x, s).scores)


def test_report_contents(detector: Detector) -> None:
    r = detector.report
    assert r.epochs == len(r.history) <= TINY_TRAIN.max_epochs
    assert 0 <= r.best_epoch < r.epochs
    assert r.best_val_loss == min(h.val_loss for h in r.history[TINY_TRAIN.kl_warmup_epochs :])
    assert r.nan_batches == 0
    assert r.n_train + r.n_val == detector.data_summary["n_records"]
    for h in r.history:
        assert h.precision_min <= h.precision_q01 <= h.precision_q50 <= h.precision_q99
        assert h.precision_q99 <= h.precision_max
        assert h.nu_min is not None
        assert h.nu_min > 2.0
        assert h.disc_accuracy is not None
        assert 0.0 <= h.disc_accuracy <= 1.0
        assert 0 <= h.active_units <= TINY_MODEL.latent_dim
        assert h.grad_norm > 0
        assert h.wall_s >= 0
    assert [h.beta for h in r.history[:2]] == [0.5, 1.0]
    json.dumps(r.to_dict(), allow_nan=False)


def test_nonfinite_batches_are_skipped_and_counted(site_data: SiteData) -> None:
    x = site_data.values[:800].copy()
    x[[5, 300, 700], 1] = np.nan  # poisons at most 3 of 13 batches per epoch
    s = np.zeros(len(x), dtype=np.int64)
    spec = TrainSpec(
        max_epochs=2, batch_size=64, kl_warmup_epochs=0, discriminator_epochs_per_cycle=1
    )
    xv = site_data.values[800:850]
    res = fit(x, s, xv, s[:50], model_spec=TINY_MODEL, train_spec=spec, device=torch.device("cpu"))
    assert res.report.nan_batches == 2 * 3
    assert np.isfinite(res.report.best_val_loss)


def test_early_stopping_when_nothing_improves(site_data: SiteData) -> None:
    """With zero learning rates the validation loss is flat: stop after `patience`."""
    xs = site_data.values[:400]
    s = np.zeros(len(xs), dtype=np.int64)
    spec = TrainSpec(
        max_epochs=30, patience=2, kl_warmup_epochs=1, learning_rate=0.0,
        discriminator_learning_rate=0.0, discriminator_epochs_per_cycle=1,
    )  # fmt: skip
    res = fit(
        xs[:300],
        s[:300],
        xs[300:],
        s[300:],
        model_spec=TINY_MODEL,
        train_spec=spec,
        device=torch.device("cpu"),
    )
    assert res.report.stopped_early
    assert res.report.epochs == 1 + 1 + 2  # warm-up, first eligible epoch, patience
    assert res.report.best_epoch == 1


def test_warm_start_keeps_slots_and_adds_sites(site_data: SiteData, detector: Detector) -> None:
    more = make_sites(np.random.default_rng(8), n_per_site=150, n_sites=4)
    warm = tiny_detector(more, version="v2", init=detector)
    assert warm.report.warm_started
    for site, slot in detector.sites.items():
        assert warm.sites[site] == slot
    assert warm.sites["site-3"] not in detector.sites.values()
    # the old sites keep their scaler statistics (the weights keep their meaning);
    # the new site gets its own
    assert (warm.scaler.center, warm.scaler.scale) == (
        detector.scaler.center,
        detector.scaler.scale,
    )
    for site, stats in detector.scaler.sites.items():
        assert warm.scaler.sites[site] == stats
    assert "site-3" in warm.scaler.sites
    assert "site-3" not in detector.scaler.sites
    cold = tiny_detector(more, version="v3", init=detector, hidden=(16, 16))
    assert not cold.report.warm_started


@pytest.mark.parametrize(
    ("losses", "expected"),
    [
        ([10, 9, 8, 7, 6, 5, 4], [False] * 7),
        ([10, 9, 8, 7, 6, 50, 4], [False] * 5 + [True, False]),
        ([10, 9, 8.5, 8, 7.6, 7.6, 7.5], [False] * 7),
        ([10, 9, 8, 7, 6, 5, 80], [False] * 6 + [True]),
    ],
)
def test_spike_flags(losses: list[float], expected: list[bool]) -> None:
    assert spike_flags(losses, k=5.0) == expected


def test_unresolved_spikes() -> None:
    losses = [10.0, 9, 8, 7, 6, 50, 4, 3, 2, 90, 80]
    flags = spike_flags(losses, k=5.0)
    assert sum(flags) == 2
    assert unresolved(losses, flags) == 1
