"""Validation gate: may a candidate model replace the current one? Pure core.

Inputs are per-site summaries of each model on the buffer's held-out slice
(records neither model trained on): record count, mean log-likelihood, and the
number of records above the model's own threshold for that site. `evaluate`
computes them from a detector (torch: call it from a worker thread); `decide`
is plain arithmetic.

Checks, in order (the first failure is the reason):

1. `non_finite_weights`  the candidate has NaN/inf parameters.
2. `unhealthy_training`  the training report shows non-finite losses or
                         unresolved loss spikes.
3. `no_data`             the held-out slice is empty.
4. `non_finite_scores`   the candidate's held-out log-likelihood is not finite.
5. `data_anomalous`      the current model flags more than
                         `contamination_factor × target_fpr` of a known site's
                         held-out records: the buffer holds records the serving
                         model calls anomalous (poisoning), so nothing trained on
                         it is promoted.
6. `loglik_regressed`    for a site known to both models with at least
                         `min_site_records` held-out records, the candidate's mean
                         held-out log-likelihood is lower than the current
                         model's by more than `loglik_tolerance` nats/record.
7. `fpr_too_high`        the candidate's false-positive rate at its own calibrated
                         thresholds exceeds `target_fpr + fpr_tolerance`: pooled
                         (point estimate), or for one site with at least
                         `min_site_records` held-out records (Wilson lower bound,
                         so a handful of records cannot fail a site by chance).

Sites new to the candidate (absent from the current model) skip 5 and 6: they
are judged on the candidate's own false-positive rate.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt


class GateReason(enum.StrEnum):
    """Stable reason codes (metrics labels, `models list`, logs)."""

    OK = "ok"
    NON_FINITE_WEIGHTS = "non_finite_weights"
    UNHEALTHY_TRAINING = "unhealthy_training"
    NO_DATA = "no_data"
    NON_FINITE_SCORES = "non_finite_scores"
    DATA_ANOMALOUS = "data_anomalous"
    LOGLIK_REGRESSED = "loglik_regressed"
    FPR_TOO_HIGH = "fpr_too_high"


@dataclass(frozen=True, slots=True)
class SiteEval:
    """One model on one site's held-out records."""

    n: int
    loglik: float  # mean log-likelihood, nats per record
    false_positives: int  # records with score > the model's threshold for the site
    known: bool  # the site is in the model (not scored through the pooled slot)

    @property
    def fpr(self) -> float:
        return self.false_positives / self.n if self.n else 0.0


@dataclass(frozen=True, slots=True)
class GateSpec:
    target_fpr: float = 0.01
    fpr_tolerance: float = 0.02
    loglik_tolerance: float = 0.5
    min_site_records: int = 30
    contamination_factor: float = 5.0
    z: float = 2.33  # one-sided ~99% for the per-site Wilson bound


@dataclass(frozen=True, slots=True)
class GateDecision:
    accept: bool
    reason: GateReason
    detail: str
    summary: Mapping[str, Any] = field(default_factory=dict)


class Scorable(Protocol):
    """What the gate needs from a detector (streamvae.detector.Detector has it)."""

    @property
    def sites(self) -> Mapping[str, int]: ...

    def loglik(self, values: npt.NDArray[np.float32], sites: Sequence[str]) -> Any: ...

    def score(self, values: npt.NDArray[np.float32], sites: Sequence[str]) -> Any: ...


def evaluate(
    detector: Scorable, values: npt.NDArray[np.float32], sites: Sequence[str]
) -> dict[str, SiteEval]:
    """Per-site held-out summary of `detector`. values: (N, D); sites: (N,). Runs torch.

    The detector's log-likelihood is in standardized units; subtracting the
    scaler's Σ log scale puts models with different scalers on one (raw) scale.
    """
    if len(sites) == 0:
        return {}
    scaler = getattr(detector, "scaler", None)
    per_row = getattr(scaler, "log_scale_sums", None)  # per-site scaler statistics
    log_scale = (
        np.asarray(per_row(sites), dtype=np.float64)
        if per_row is not None
        else float(getattr(scaler, "log_scale_sum", 0.0))
    )
    loglik = np.asarray(detector.loglik(values, sites), dtype=np.float64) - log_scale
    scored = detector.score(values, sites)
    over = np.asarray(scored.scores, dtype=np.float64) > np.asarray(scored.thresholds)
    names = np.asarray(list(sites), dtype=object)
    out: dict[str, SiteEval] = {}
    for name in sorted(set(names.tolist())):
        m = names == name
        ll = loglik[m]
        out[str(name)] = SiteEval(
            n=int(m.sum()),
            loglik=float(ll.mean()) if np.isfinite(ll).all() else math.nan,
            false_positives=int(over[m].sum()),
            known=str(name) in detector.sites,
        )
    return out


def wilson_lower(k: int, n: int, z: float) -> float:
    """Lower end of the Wilson score interval for a binomial proportion k/n."""
    if n == 0:
        return 0.0
    p = k / n
    denom = 1.0 + z * z / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / denom)


def training_problem(report: Mapping[str, Any] | None) -> str | None:
    """Why a training report is unhealthy, or None. Reads the keys the trainer writes."""
    if not report:
        return None
    for key in ("final_loss", "best_val_loss", "best_loss"):
        value = report.get(key)
        if isinstance(value, int | float) and not math.isfinite(value):
            return f"{key} is {value}"
    for key in ("unresolved_spikes", "nonfinite_epochs", "all_nan"):
        value = report.get(key)
        if value:
            return f"{key}={value}"
    if report.get("healthy") is False:
        return str(report.get("problem", "trainer marked the run unhealthy"))
    return None


def decide(
    candidate: Mapping[str, SiteEval],
    current: Mapping[str, SiteEval] | None,
    *,
    weights_finite: bool,
    report: Mapping[str, Any] | None,
    spec: GateSpec,
) -> GateDecision:
    """The gate's verdict. `current` is None when no model serves yet."""
    summary = _summary(candidate, current)
    if not weights_finite:
        return _reject(GateReason.NON_FINITE_WEIGHTS, "candidate has NaN/inf weights", summary)
    problem = training_problem(report)
    if problem is not None:
        return _reject(GateReason.UNHEALTHY_TRAINING, problem, summary)
    total = sum(e.n for e in candidate.values())
    if total == 0:
        return _reject(GateReason.NO_DATA, "no held-out records", summary)
    bad = [s for s, e in candidate.items() if e.n and not math.isfinite(e.loglik)]
    if bad:
        return _reject(GateReason.NON_FINITE_SCORES, f"sites {bad[:5]}", summary)
    both = {s: (candidate[s], current[s]) for s in candidate if current and s in current}
    limit = spec.contamination_factor * spec.target_fpr
    for site, (_, cur) in sorted(both.items()):
        if cur.known and cur.n >= spec.min_site_records and cur.fpr > limit:
            return _reject(
                GateReason.DATA_ANOMALOUS,
                f"{site}: current model flags {cur.fpr:.3f} of held-out records (> {limit:.3f})",
                summary,
            )
    for site, (cand, cur) in sorted(both.items()):
        if not cur.known or cur.n < spec.min_site_records or not math.isfinite(cur.loglik):
            continue
        if cand.loglik < cur.loglik - spec.loglik_tolerance:
            return _reject(
                GateReason.LOGLIK_REGRESSED,
                f"{site}: {cand.loglik:.3f} < {cur.loglik:.3f} - {spec.loglik_tolerance}",
                summary,
            )
    allowed = spec.target_fpr + spec.fpr_tolerance
    pooled = sum(e.false_positives for e in candidate.values()) / total
    if pooled > allowed:
        return _reject(GateReason.FPR_TOO_HIGH, f"pooled FPR {pooled:.4f} > {allowed:.4f}", summary)
    for site, cand in sorted(candidate.items()):
        if cand.n >= spec.min_site_records:
            low = wilson_lower(cand.false_positives, cand.n, spec.z)
            if low > allowed:
                return _reject(
                    GateReason.FPR_TOO_HIGH,
                    f"{site}: FPR {cand.fpr:.4f} (lower bound {low:.4f}) > {allowed:.4f}",
                    summary,
                )
    return GateDecision(True, GateReason.OK, f"pooled FPR {pooled:.4f}", summary)


def _reject(reason: GateReason, detail: str, summary: Mapping[str, Any]) -> GateDecision:
    return GateDecision(False, reason, detail, summary)


def _summary(
    candidate: Mapping[str, SiteEval], current: Mapping[str, SiteEval] | None
) -> dict[str, Any]:
    """JSON-able per-site numbers (kept with the decision for inspection)."""
    out: dict[str, Any] = {}
    for site, e in sorted(candidate.items()):
        item: dict[str, Any] = {"n": e.n, "loglik": e.loglik, "fpr": e.fpr, "new": True}
        if current and site in current:
            cur = current[site]
            item.update(new=not cur.known, current_loglik=cur.loglik, current_fpr=cur.fpr)
        out[site] = item
    return out


def finite_arrays(arrays: Sequence[npt.NDArray[Any]] | Mapping[str, Any]) -> bool:
    """True when every array (or tensor converted with numpy()) is all-finite."""
    items = arrays.values() if isinstance(arrays, Mapping) else arrays
    return all(bool(np.isfinite(np.asarray(a)).all()) for a in items)
