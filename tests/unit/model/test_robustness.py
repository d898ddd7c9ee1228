"""The "biased data" case: near-constant sensors with rare jumps (as in SMD).

After robust scaling with a floor, the constant sensors sit at 0 with rare
excursions of ~10 standardized units. A Gaussian decoder shrinks its variance on
the constant sensors and then pays quadratically for every excursion; the
Student-t decoder explains excursions with its tails.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamvae.detector import Detector, ModelSpec, ThresholdSpec, TrainSpec, train_detector


def _biased(rng: np.random.Generator, n: int = 1200) -> np.ndarray:
    z = rng.normal(size=(n, 2))
    normal = z @ rng.normal(size=(2, 3)) + 0.1 * rng.normal(size=(n, 3))
    const = 0.5 + 1e-4 * rng.normal(size=(n, 3))
    const[rng.random((n, 3)) < 0.01] += 0.1  # rare jumps: 10 units after the 0.01 floor
    return np.concatenate([normal, const], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def fitted() -> dict[str, Detector]:
    x = _biased(np.random.default_rng(4))
    out = {}
    for decoder in ("student_t", "gaussian"):
        out[decoder] = train_detector(
            x, ["a"] * len(x), features=[f"f{i}" for i in range(6)],
            model_spec=ModelSpec(decoder=decoder, hidden=(32, 32), discriminator_hidden=(16,),  # type: ignore[arg-type]
                                 latent_dim=4, scale_floor=0.01),
            train_spec=TrainSpec(max_epochs=12, batch_size=64, learning_rate=3e-3,
                                 kl_warmup_epochs=2, discriminator_epochs_per_cycle=2),
            threshold_spec=ThresholdSpec(), device="cpu", version=decoder,
        )  # fmt: skip
    return out


def test_student_t_trains_without_blow_up(fitted: dict[str, Detector]) -> None:
    r = fitted["student_t"].report
    assert r.nan_batches == 0
    assert r.unresolved_spikes == 0
    assert all(math.isfinite(h.loss) and math.isfinite(h.val_loss) for h in r.history)
    assert r.best_val_loss < r.history[0].val_loss - 3.0
    assert min(h.nu_min or 0.0 for h in r.history) > 2.0


def test_gaussian_minimum_variance_collapses(fitted: dict[str, Detector]) -> None:
    last = fitted["gaussian"].report.history[-1]
    assert 1.0 / last.precision_max < 1e-2  # smallest decoded variance, standardized units


def test_student_t_fits_held_out_data_better(fitted: dict[str, Detector]) -> None:
    st, ga = fitted["student_t"].report, fitted["gaussian"].report
    assert st.best_val_loss < ga.best_val_loss - 0.25
