"""One retraining pass, synchronous: lock the store, train, gate, promote or reject.

Runs off the event loop: in a worker thread (`mode="thread"`) or with the
training itself in a child process started with multiprocessing *spawn*
(`mode="process"`, see `streamvae.train_process`: the job goes through .npz/JSON
files, the child writes the candidate to the store itself and returns plain
data; no model crosses the boundary).

Order of a pass (`run_pass`):

1. take the store's writer lock (`ModelStore.lock()`); if another retrainer
   holds it, skip with a log line (outcome `skipped`, reason `locked`);
2. load the current model (warm start when features and architecture match);
3. `train_detector` on the buffer's training part;
4. `ModelStore.save` (atomic) -> candidate version;
5. gate (`streamvae.gate`) on the buffer's held-out part, candidate vs current;
6. `promote` (atomic pointer swap) or `reject(version, reason)` (kept for inspection).

A crash anywhere leaves the store consistent: until step 6 the current pointer
is untouched, and a candidate that was saved but never judged is just an
unpromoted version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from streamvae.errors import ArtifactError, StoreError, StoreLockedError, TrainingError
from streamvae.gate import GateSpec, decide, evaluate
from streamvae.sites import shifted_fallback_thresholds

log = logging.getLogger(__name__)

Outcome = Literal["promoted", "rejected", "failed", "skipped"]


@dataclass(frozen=True, slots=True)
class TrainingJob:
    """Everything a pass needs, as plain data (crosses a process boundary)."""

    store_root: str
    features: tuple[str, ...]
    train_values: npt.NDArray[np.float32]  # (N, D)
    train_sites: npt.NDArray[np.str_]  # (N,)
    holdout_values: npt.NDArray[np.float32]  # (M, D)
    holdout_sites: npt.NDArray[np.str_]  # (M,)
    model_spec: Any  # streamvae.detector.ModelSpec
    train_spec: Any  # streamvae.detector.TrainSpec
    threshold_spec: Any  # streamvae.detector.ThresholdSpec
    gate_spec: GateSpec
    device: str = "cpu"
    trigger: str = "manual"
    threads: int = 0  # torch intra-op threads in a training process; 0 = torch's default


@dataclass(frozen=True, slots=True)
class CandidateResult:
    """What the training worker reports back."""

    version: str | None
    accept: bool
    reason: str
    detail: str
    sites: tuple[str, ...] = ()
    report: Mapping[str, Any] | None = None
    gate: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PassResult:
    outcome: Outcome
    reason: str
    detail: str
    version: str | None
    duration_s: float
    sites: tuple[str, ...] = ()
    report: Mapping[str, Any] | None = None


def _store(root: str) -> Any:
    from streamvae.artifacts import ModelStore

    return ModelStore(Path(root))


def train_candidate(job: TrainingJob, store: Any = None) -> CandidateResult:
    """Train, save and judge a candidate (no promotion). Runs torch: worker only."""
    from streamvae.detector import train_detector

    store = _store(job.store_root) if store is None else store
    current = None
    if store.current() is not None:
        try:
            current = store.load(device=job.device)
        except ArtifactError as exc:
            log.warning("current model unusable, training from scratch: %s", exc)
    log.info(
        "training candidate on %d records of %d sites (trigger: %s, warm start from %s)",
        len(job.train_values),
        len(set(job.train_sites.tolist())),
        job.trigger,
        current.version if current else None,
    )
    try:
        candidate = train_detector(
            job.train_values,
            job.train_sites.tolist(),
            features=job.features,
            model_spec=job.model_spec,
            train_spec=job.train_spec,
            threshold_spec=job.threshold_spec,
            device=job.device,
            version=store.new_version(),
            init=current,
        )
    except TrainingError as exc:
        return CandidateResult(None, False, "training_failed", str(exc))
    candidate = _with_shifted_fallbacks(candidate, job)
    report = candidate.report.to_dict()
    version = store.save(candidate)
    weights_finite = all(
        bool(np.isfinite(t.float().numpy()).all()) for t in candidate.state_dicts().values()
    )
    hold_sites = job.holdout_sites.tolist()
    cand_eval = evaluate(candidate, job.holdout_values, hold_sites) if weights_finite else {}
    cur_eval = evaluate(current, job.holdout_values, hold_sites) if current else None
    decision = decide(
        cand_eval, cur_eval, weights_finite=weights_finite, report=report, spec=job.gate_spec
    )
    return CandidateResult(
        version,
        decision.accept,
        str(decision.reason),
        decision.detail,
        tuple(sorted(candidate.sites)),
        report,
        dict(decision.summary),
    )


def _with_shifted_fallbacks(candidate: Any, job: TrainingJob) -> Any:
    """Give known sites without their own threshold a location-shifted fallback.

    Uses the candidate's scores of the training part (the held-out part stays
    untouched for the gate). See `streamvae.sites.shifted_fallback_thresholds`.
    """
    fallback = float(candidate.fallback_threshold)
    if not np.isfinite(fallback) or set(candidate.thresholds) >= set(candidate.sites):
        return candidate
    train_sites = job.train_sites.tolist()
    scores = candidate.score(job.train_values, train_sites).scores
    thresholds = shifted_fallback_thresholds(
        scores,
        train_sites,
        thresholds=candidate.thresholds,
        fallback=fallback,
        known=candidate.sites,
    )
    added = sorted(set(thresholds) - set(candidate.thresholds))
    if not added:
        return candidate
    log.info("location-shifted fallback thresholds for %s", ", ".join(added))
    return dataclasses.replace(candidate, thresholds=thresholds)


@contextlib.contextmanager
def _locked(store: Any) -> Iterator[bool]:
    """Yields True holding the store lock, False when another process holds it."""
    try:
        cm = store.lock()
        cm.__enter__()
    except StoreLockedError:
        yield False
        return
    try:
        yield True
    finally:
        cm.__exit__(None, None, None)


def run_pass(
    job: TrainingJob,
    *,
    mode: Literal["thread", "process"] = "thread",
    handle: Any = None,
    clock: Callable[[], float] = time.monotonic,
    store: Any = None,
) -> PassResult:
    """Lock, train, gate, promote/reject. Blocking: call from a worker thread.

    `store` defaults to `ModelStore(job.store_root)` (a test may pass its own).
    """
    start = clock()
    store = _store(job.store_root) if store is None else store
    with _locked(store) as held:
        if not held:
            log.info("another retrainer holds the model store lock; skipping this pass")
            return PassResult("skipped", "locked", "store lock held elsewhere", None, 0.0)
        try:
            if mode == "process":
                from streamvae.train_process import train_in_process

                result = train_in_process(job, handle)
            else:
                result = train_candidate(job, store)
        except TrainingError as exc:
            log.error("retraining failed: %s", exc)
            return PassResult("failed", "training_failed", str(exc), None, clock() - start)
        except Exception as exc:  # a bug or an I/O error must not stop the daemon
            log.exception("retraining failed unexpectedly")
            detail = f"{type(exc).__name__}: {exc}"
            return PassResult("failed", "error", detail, None, clock() - start)
        if result.version is None:
            log.error("retraining failed: %s", result.detail)
            return PassResult("failed", result.reason, result.detail, None, clock() - start)
        try:
            if result.accept:
                store.promote(result.version)
                outcome: Outcome = "promoted"
                log.info("promoted %s (%s)", result.version, result.detail)
            else:
                store.reject(result.version, f"{result.reason}: {result.detail}")
                outcome = "rejected"
                log.warning("rejected %s: %s (%s)", result.version, result.reason, result.detail)
        except StoreError as exc:
            log.error("could not record the verdict on %s: %s", result.version, exc)
            return PassResult("failed", "store_error", str(exc), result.version, clock() - start)
    return PassResult(
        outcome,
        result.reason,
        result.detail,
        result.version,
        clock() - start,
        result.sites,
        result.report,
    )
