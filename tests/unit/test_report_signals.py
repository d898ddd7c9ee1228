"""Defensive reading of training reports."""

from __future__ import annotations

from typing import Any

import pytest

from streamvae.report_signals import TrainingSignals, training_signals


@pytest.mark.parametrize("report", [None, {}, {"history": []}, {"summary": "oops"}])
def test_empty_or_odd_reports_give_no_signals(report: Any) -> None:
    assert training_signals(report) == TrainingSignals()


def test_non_numeric_and_non_finite_values_are_skipped() -> None:
    s = training_signals(
        {"summary": {"loss": float("nan"), "grad_norm": "big", "loss_spikes": True, "kl": 1}}
    )
    assert s.loss_terms == {"kl": 1.0}
    assert s.scalars == {}


def test_nested_loss_terms_and_quantile_spellings() -> None:
    s = training_signals(
        {
            "summary": {
                "losses": {"total": 3.0, "reconstruction": 2.0},
                "nu": {"min": 2.2, "q50": 6.0, "max": 30.0},
                "nu_p05": 2.5,
                "precision_quantiles": {"5": 0.5, "0.99": 9.0},
            }
        }
    )
    assert s.loss_terms == {"total": 3.0, "reconstruction": 2.0}
    assert s.nu_quantiles == {"0": 2.2, "0.5": 6.0, "1": 30.0, "0.05": 2.5}
    assert s.precision_quantiles == {"0.99": 9.0}  # "5" is not a quantile
