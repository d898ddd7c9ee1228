"""The detector: an immutable snapshot of everything needed to score.

model + scaler + feature names + site index + per-site thresholds + version.
The daemon holds one `Detector` and swaps it by assigning a new one; nothing
in a detector is mutated after construction. Pure core: no I/O.

CONTRACT (used by pipeline, retrainer, CLI, bench):

    detector.version: str
    detector.features: tuple[str, ...]
    detector.sites: Mapping[str, int]         known (active) sites -> embedding slot
                                              (all 0 when model_spec.conditional is false)
    detector.thresholds: Mapping[str, float]  per-site calibrated thresholds
    detector.fallback_threshold: float        for sites with too little held-out data
    detector.created_at: float                epoch seconds
    detector.report: TrainingReport           (`.to_dict()` is JSON-able)
    detector.score(values (B, D) float32 ndarray, sites: Sequence[str]) -> ScoredBatch
        runs torch under inference_mode on the detector's device; call it from a
        worker thread, never on the event loop. Unknown sites are scored through
        the pooled slot (index 0) and come back with known[i] = False.
    detector.loglik(values, sites) -> (B,) float64: held-out log-likelihood
        (−score computed with K = model_spec.loglik_samples)
    train_detector(values, sites, *, features, model_spec, train_spec, threshold_spec,
                   device, version, init=None) -> Detector

Scores are −log p(x|s) in nats of the standardized data (see
streamvae/model/scoring.py for the estimator and the contribution definition).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from streamvae.errors import TrainingError
from streamvae.model.device import HostStaging, resolve_device, score_chunk
from streamvae.model.prior import Discriminator
from streamvae.model.report import TrainingReport
from streamvae.model.scaler import RobustScaler
from streamvae.model.scoring import PackedScorer, packed_scorer, scoring_noise
from streamvae.model.sites import assign_slots
from streamvae.model.specs import ModelSpec, ThresholdSpec, TrainSpec
from streamvae.model.thresholds import calibrate
from streamvae.model.training import fit
from streamvae.model.vae import VAE

__all__ = [
    "Detector",
    "ModelSpec",
    "ScoredBatch",
    "ThresholdSpec",
    "TrainSpec",
    "TrainingReport",
    "train_detector",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScoredBatch:
    """Scores of one batch. All arrays have B rows, in input order."""

    scores: npt.NDArray[np.float64]  # (B,)  -log p(x|s)
    contributions: npt.NDArray[np.float32]  # (B, D) per-sensor share of the score
    thresholds: npt.NDArray[np.float64]  # (B,)  the threshold that applies to each row
    known: npt.NDArray[np.bool_]  # (B,)  site is active in this model
    latent: npt.NDArray[np.float64] | None = None  # (B,) score − Σ contributions


@dataclass(frozen=True, slots=True, eq=False)
class Detector:
    """Immutable scoring snapshot. Build with `train_detector` or `ModelStore.load`."""

    version: str
    features: tuple[str, ...]
    sites: Mapping[str, int]
    thresholds: Mapping[str, float]
    fallback_threshold: float
    created_at: float
    report: TrainingReport
    model_spec: ModelSpec
    train_spec: TrainSpec
    threshold_spec: ThresholdSpec
    scaler: RobustScaler
    vae: VAE
    disc: Discriminator | None
    device: torch.device
    data_summary: Mapping[str, Any] = field(default_factory=dict)
    _eps: torch.Tensor = field(init=False, repr=False)
    _eps_loglik: torch.Tensor = field(init=False, repr=False)
    _staging: HostStaging = field(init=False, repr=False)
    # traced scoring graphs by K (`packed_scorer`), built on first use under the lock
    _scorers: dict[int, PackedScorer] = field(init=False, repr=False)
    _scorers_lock: threading.Lock = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "sites", MappingProxyType(dict(self.sites)))
        object.__setattr__(self, "thresholds", MappingProxyType(dict(self.thresholds)))
        object.__setattr__(self, "data_summary", MappingProxyType(dict(self.data_summary)))
        self.vae.eval()
        if self.disc is not None:
            self.disc.eval()
        eps = scoring_noise(
            self.model_spec.importance_samples, self.model_spec.latent_dim, self.device
        )
        object.__setattr__(self, "_eps", eps)
        eps_ll = scoring_noise(
            self.model_spec.loglik_samples, self.model_spec.latent_dim, self.device
        )
        object.__setattr__(self, "_eps_loglik", eps_ll)
        object.__setattr__(self, "_staging", HostStaging(self.device))
        object.__setattr__(self, "_scorers", {})
        object.__setattr__(self, "_scorers_lock", threading.Lock())

    def slots_of(self, sites: Sequence[str]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """(B,) embedding slots (0 for unknown sites) and (B,) known flags."""
        get = self.sites.get
        slot_list = [get(s, -1) for s in sites]
        slots = np.fromiter(slot_list, dtype=np.int64, count=len(sites))
        known = slots >= 0
        return np.maximum(slots, 0), known

    def score(self, values: npt.NDArray[np.floating[Any]], sites: Sequence[str]) -> ScoredBatch:
        """values: (B, D) raw sensor values in `features` order; sites: B names.

        Uses K = `model_spec.importance_samples`.
        """
        return self._score(values, sites, self._eps)

    def _score(
        self, values: npt.NDArray[np.floating[Any]], sites: Sequence[str], eps: torch.Tensor
    ) -> ScoredBatch:
        values = np.asarray(values)
        if values.ndim != 2 or values.shape[1] != len(self.features):
            raise ValueError(f"values must be (B, {len(self.features)}), got {values.shape}")
        if len(sites) != values.shape[0]:
            raise ValueError("values and sites differ in length")
        slots, known = self.slots_of(sites)
        x = self.scaler.transform(values, sites)  # sites without statistics: pooled
        scores = np.empty(len(x), dtype=np.float64)
        latent = np.empty(len(x), dtype=np.float64)
        contrib = np.empty(x.shape, dtype=np.float32)
        chunk = score_chunk(self.device)  # records per forward pass (bounds K·chunk·D)
        scorer = self._scorer(eps)
        with torch.inference_mode():
            for a in range(0, len(x), chunk):
                b = min(a + chunk, len(x))
                xt = self._staging.to_device(x[a:b])
                st = self._staging.to_device(slots[a:b])
                host = scorer(xt, st).cpu().numpy()  # [score, latent, contributions]
                scores[a:b] = host[:, 0]
                latent[a:b] = host[:, 1]
                contrib[a:b] = host[:, 2:]
        thr = np.fromiter(
            (
                self.thresholds.get(s, self.fallback_threshold) if k else self.fallback_threshold
                for s, k in zip(sites, known, strict=True)
            ),
            dtype=np.float64,
            count=len(sites),
        )
        return ScoredBatch(scores, contrib, thr, known, latent)

    def _scorer(self, eps: torch.Tensor) -> PackedScorer:
        k = int(eps.shape[0])
        with self._scorers_lock:
            scorer = self._scorers.get(k)
            if scorer is None:
                scorer = packed_scorer(self.vae, self.disc, eps, len(self.features))
                self._scorers[k] = scorer
        return scorer

    def loglik(
        self, values: npt.NDArray[np.floating[Any]], sites: Sequence[str]
    ) -> npt.NDArray[np.float64]:
        """(B,) held-out log-likelihood estimates log p(x|s) in standardized units.

        −score with K = `model_spec.loglik_samples` (more samples than streaming
        scores use: for the retraining gate, not for the hot path).
        """
        return -self._score(values, sites, self._eps_loglik).scores

    def state_dicts(self) -> dict[str, torch.Tensor]:
        """All weights, flat: "vae.*" and "disc.*" (CPU, contiguous)."""
        out = {f"vae.{k}": v.detach().cpu().contiguous() for k, v in self.vae.state_dict().items()}
        if self.disc is not None:
            out.update(
                {
                    f"disc.{k}": v.detach().cpu().contiguous()
                    for k, v in self.disc.state_dict().items()
                }
            )
        return out


def train_detector(
    values: npt.NDArray[np.floating[Any]],
    sites: Sequence[str],
    *,
    features: Sequence[str],
    model_spec: ModelSpec,
    train_spec: TrainSpec,
    threshold_spec: ThresholdSpec,
    device: str,
    version: str,
    init: Detector | None = None,
    created_at: float | None = None,
) -> Detector:
    """Fit scaler, site slots, VAE (+ T) and thresholds on (N, D) normal data.

    Rows with NaN/inf are dropped (counted in `data_summary`). A random
    `validation_fraction` of rows is held out for early stopping and threshold
    calibration. Warm start from `init` when its features and architecture
    match (its scaler and site slots are kept, new sites get their own scaler
    statistics if the old scaler has per-site ones; new sites' embeddings start
    from the pooled slot 0). Deterministic given `train_spec.seed`.
    Raises `TrainingError` for unusable data.
    """
    features = tuple(features)
    x = np.asarray(values, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != len(features):
        raise TrainingError(f"values must be (N, {len(features)}), got {x.shape}")
    site_arr = np.asarray(list(sites), dtype=object)
    if len(site_arr) != len(x):
        raise TrainingError("values and sites differ in length")
    finite = np.isfinite(x).all(axis=1)
    dropped = int((~finite).sum())
    x, site_arr = x[finite], site_arr[finite]
    if len(x) < 2:
        raise TrainingError(f"need at least 2 finite records, got {len(x)}")
    dev = resolve_device(device)
    counts = Counter(site_arr.tolist())
    warm = init is not None and _compatible(init, features, model_spec)
    if init is not None and not warm:
        log.info("warm start skipped: features or architecture differ from %s", init.version)
    slots_map = assign_slots(
        counts, model_spec.site_capacity, init.sites if warm and init else None
    )
    if not model_spec.conditional:  # pooled model: every training site is known, slot 0
        slots_map = {site: 0 for site in sorted(counts)}
    slots = np.fromiter((slots_map.get(s, 0) for s in site_arr), dtype=np.int64, count=len(x))

    rng = np.random.default_rng(train_spec.seed)
    perm = rng.permutation(len(x))
    n_val = min(len(x) - 1, max(1, round(train_spec.validation_fraction * len(x))))
    val_idx, tr_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])

    fit_sites = site_arr[tr_idx].tolist() if model_spec.site_scaling else None
    scaler = RobustScaler.fit(x[tr_idx], model_spec.scale_floor, fit_sites)
    if warm and init:  # keep the weights' meaning: old sites keep their statistics
        scaler = init.scaler.with_sites(scaler) if init.scaler.sites else init.scaler
    xs = scaler.transform(x, site_arr.tolist())
    init_states = _warm_states(init, slots_map) if warm and init else None
    result = fit(
        xs[tr_idx],
        slots[tr_idx],
        xs[val_idx],
        slots[val_idx],
        model_spec=model_spec,
        train_spec=train_spec,
        device=dev,
        init=init_states,
    )
    det = Detector(
        version=version,
        features=features,
        sites=slots_map,
        thresholds={},
        fallback_threshold=float("inf"),
        created_at=time.time() if created_at is None else created_at,
        report=result.report,
        model_spec=model_spec,
        train_spec=train_spec,
        threshold_spec=threshold_spec,
        scaler=scaler,
        vae=result.vae,
        disc=result.disc,
        device=dev,
        data_summary={
            "n_records": len(x) + dropped,
            "n_dropped_nonfinite": dropped,
            "n_train": len(tr_idx),
            "n_val": len(val_idx),
            "site_counts": dict(sorted(counts.items())),
        },
    )
    val_sites = site_arr[val_idx].tolist()
    held = det.score(x[val_idx], val_sites).scores
    per_site, fallback = calibrate(held, val_sites, threshold_spec)
    thresholds = {s: t for s, t in per_site.items() if s in slots_map}
    return _replace_thresholds(det, thresholds, fallback)


def _replace_thresholds(
    det: Detector, thresholds: Mapping[str, float], fallback: float
) -> Detector:
    return Detector(
        version=det.version,
        features=det.features,
        sites=det.sites,
        thresholds=thresholds,
        fallback_threshold=fallback,
        created_at=det.created_at,
        report=det.report,
        model_spec=det.model_spec,
        train_spec=det.train_spec,
        threshold_spec=det.threshold_spec,
        scaler=det.scaler,
        vae=det.vae,
        disc=det.disc,
        device=det.device,
        data_summary=det.data_summary,
    )


def _compatible(init: Detector, features: tuple[str, ...], spec: ModelSpec) -> bool:
    return init.features == features and init.model_spec.shape_key() == spec.shape_key()


def _warm_states(
    init: Detector, slots_map: Mapping[str, int]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    vae_state = {k: v.detach().cpu().clone() for k, v in init.vae.state_dict().items()}
    new_slots = [slot for site, slot in slots_map.items() if site not in init.sites]
    if new_slots and "embedding.weight" in vae_state:
        emb = vae_state["embedding.weight"]
        emb[new_slots] = emb[0].clone()
    disc_state = (
        {k: v.detach().cpu().clone() for k, v in init.disc.state_dict().items()}
        if init.disc is not None
        else None
    )
    return vae_state, disc_state
