"""Read the stability signals out of a training report. Pure: no I/O, no metrics library.

The report is `TrainingReport.to_dict()` (streamvae/model/report.py): run-level totals
(`spikes`, `unresolved_spikes`, `nan_batches`, `best_epoch`, `n_train`, ...) and a
per-epoch `history` list (`loss`, `reconstruction`, `kl`, `expected_t`, `val_loss`,
`grad_norm`, `grad_norm_max`, `precision_min/q01/q50/q99`, `nu_min/q01/q50`,
`disc_accuracy`, `disc_loss`, `active_units`). The per-epoch signals are taken from the
best epoch (the weights the model keeps), else the last; run-level keys and an optional
`summary` mapping override them. Reading is defensive: every signal is optional, several
spellings are accepted, and missing, non-numeric or non-finite values are left out.
The metrics edge (`streamvae.metrics`) turns the result into gauges.

    signals = training_signals(report)
    signals.loss_terms        {"total": 1.2, "reconstruction": 0.9, "kl": 0.3, ...}
    signals.scalars           {"loss_spikes": 0.0, "grad_norm": 3.1, ...}
    signals.nu_quantiles      {"0": 2.4, "0.05": 3.0, "0.5": 8.1, ...}   ("0" = minimum)
    signals.precision_quantiles  same shape, for the decoded precision λ
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# signal name -> accepted report keys, first match wins
SCALAR_KEYS: dict[str, tuple[str, ...]] = {
    "loss_spikes": ("spikes", "loss_spikes", "loss_spike_count", "spike_count"),
    "unresolved_loss_spikes": ("unresolved_spikes", "unresolved_loss_spikes"),
    "nonfinite_batches": (
        "nonfinite_batches",
        "non_finite_batches",
        "nan_batches",
        "rejected_batches",
        "skipped_batches",
    ),
    "grad_norm": ("grad_norm", "gradient_norm"),
    "grad_norm_max": ("grad_norm_max", "max_grad_norm"),
    "discriminator_accuracy": ("discriminator_accuracy", "disc_accuracy", "disc_acc"),
    "discriminator_loss": ("discriminator_loss", "disc_loss"),
    "active_latent_units": ("active_units", "active_latent_units", "active_latent"),
    "epochs": ("epochs", "epochs_run"),
    "train_records": ("n_train", "train_records"),
}
LOSS_TERM_KEYS: dict[str, tuple[str, ...]] = {
    "total": ("loss", "total_loss", "loss_total", "train_loss"),
    "validation": ("val_loss", "best_val_loss", "validation_loss", "loss_val"),
    "reconstruction": ("reconstruction", "recon", "loss_reconstruction", "nll", "rec"),
    "kl": ("kl", "kl_standard", "kl_normal", "loss_kl"),
    "expected_t": ("expected_t", "mean_t", "e_t", "t_mean"),
}
_NU_PREFIXES = ("nu", "df")
_PRECISION_PREFIXES = ("precision", "lambda", "lam")


@dataclass(frozen=True, slots=True)
class TrainingSignals:
    """What a retrain's report says about training stability (all optional)."""

    loss_terms: dict[str, float] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)
    nu_quantiles: dict[str, float] = field(default_factory=dict)
    precision_quantiles: dict[str, float] = field(default_factory=dict)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _flat(report: Mapping[str, Any]) -> dict[str, Any]:
    """The best (else last) history entry, overridden by run-level keys and `summary`."""
    merged: dict[str, Any] = {}
    history = report.get("history")
    if isinstance(history, Sequence) and not isinstance(history, str) and history:
        best = report.get("best_epoch")
        index = best if isinstance(best, int) and 0 <= best < len(history) else -1
        if isinstance(history[index], Mapping):
            merged.update(history[index])
    merged.update({k: v for k, v in report.items() if k not in ("history", "summary")})
    summary = report.get("summary")
    if isinstance(summary, Mapping):
        merged.update(summary)
    return merged


def _first(flat: Mapping[str, Any], keys: Sequence[str]) -> float | None:
    for key in keys:
        value = _number(flat.get(key))
        if value is not None:
            return value
    return None


def _quantile_label(raw: str) -> str | None:
    """`"min"`→`"0"`, `"q05"`/`"p05"`→`"0.05"`, `"q5"`→`"0.5"`, `"0.5"`→`"0.5"`, `"max"`→`"1"`."""
    text = raw.strip().lower()
    if text == "min":
        return "0"
    if text == "max":
        return "1"
    if text[:1] in ("q", "p") and text[1:].isdigit():
        text = f"0.{text[1:]}"
    try:
        q = float(text)
    except ValueError:
        return None
    return f"{q:g}" if 0 <= q <= 1 else None


def _quantiles(flat: Mapping[str, Any], prefixes: Sequence[str]) -> dict[str, float]:
    """`nu_min`, `nu_q05`, `nu_quantiles={"0.05": …}`, `nu={"min": …}` all become labels."""
    out: dict[str, float] = {}
    for prefix in prefixes:
        for key in (prefix, f"{prefix}_quantiles", f"{prefix}_stats"):
            nested = flat.get(key)
            if isinstance(nested, Mapping):
                for raw, value in nested.items():
                    label, number = _quantile_label(str(raw)), _number(value)
                    if label is not None and number is not None:
                        out.setdefault(label, number)
        for key, value in flat.items():
            if key.startswith(f"{prefix}_") and (number := _number(value)) is not None:
                label = _quantile_label(key[len(prefix) + 1 :])
                if label is not None:
                    out.setdefault(label, number)
    return out


def training_signals(report: Mapping[str, Any] | None) -> TrainingSignals:
    """Extract the stability signals; an empty `TrainingSignals` when `report` is None."""
    if not report:
        return TrainingSignals()
    flat = _flat(report)
    losses: dict[str, float] = {}
    nested = flat.get("losses") or flat.get("loss_terms")
    if isinstance(nested, Mapping):
        for term, value in nested.items():
            if (number := _number(value)) is not None:
                losses[str(term)] = number
    for term, keys in LOSS_TERM_KEYS.items():
        if term not in losses and (value := _first(flat, keys)) is not None:
            losses[term] = value
    scalars = {
        name: value
        for name, keys in SCALAR_KEYS.items()
        if (value := _first(flat, keys)) is not None
    }
    return TrainingSignals(
        loss_terms=losses,
        scalars=scalars,
        nu_quantiles=_quantiles(flat, _NU_PREFIXES),
        precision_quantiles=_quantiles(flat, _PRECISION_PREFIXES),
    )
