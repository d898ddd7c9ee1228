"""Batch-folded metric state: histograms and capped per-site totals. Pure numpy, no I/O.

`streamvae.metrics` (the only module that imports prometheus_client) exposes these as
Prometheus families. They exist so that per-record data (lags, severities, sites) costs a
few vectorised numpy calls per batch instead of one instrument call per record.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

OTHER_SITE = "__other__"


class BulkHistogram:
    """A cumulative histogram fed a whole array per call (`searchsorted` + `bincount`)."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds: tuple[float, ...] = (*sorted(float(b) for b in buckets), float("inf"))
        self._finite = np.asarray(self.bounds[:-1], dtype=np.float64)
        self._counts = np.zeros(len(self.bounds), dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: npt.NDArray[np.float64]) -> None:
        """values: (N,) finite floats. A value v lands in the first bucket with v <= bound."""
        if values.size == 0:
            return
        add = np.bincount(
            np.searchsorted(self._finite, values, side="left"), minlength=len(self.bounds)
        )
        total = float(values.sum())
        with self._lock:
            self._counts += add
            self._sum += total

    def snapshot(self) -> tuple[list[int], float]:
        """(cumulative counts per bound in `bounds`, sum of observed values)."""
        with self._lock:
            return np.cumsum(self._counts).tolist(), self._sum


@dataclass(frozen=True, slots=True)
class SiteRow:
    """Totals of one site label since the process started."""

    site: str
    records: int
    anomalies: int
    severity_sum: float
    severity_max: float  # largest severity of the label's latest batch


class SiteTotals:
    """Per-site records / anomalies / severity with at most `max_labels` label values.

    Slot 0 is `OTHER_SITE`; slots 1 … max_labels-1 go to the first sites seen and keep
    them for the life of the process (counters never go away); later sites share slot 0.
    """

    def __init__(self, max_labels: int) -> None:
        if max_labels < 1:
            raise ValueError("max_site_labels must be >= 1")
        self._slots: dict[str, int] = {}
        self._names: list[str] = [OTHER_SITE]
        self._cap = max_labels
        self._records = np.zeros(max_labels, dtype=np.int64)
        self._anomalies = np.zeros(max_labels, dtype=np.int64)
        self._severity_sum = np.zeros(max_labels, dtype=np.float64)
        self._severity_max = np.zeros(max_labels, dtype=np.float64)
        self._lock = threading.Lock()

    def _slot(self, site: str) -> int:
        slot = self._slots.get(site)
        if slot is None:
            slot = len(self._names) if len(self._names) < self._cap else 0
            self._slots[site] = slot
            if slot:
                self._names.append(site)
        return slot

    def labels_in_use(self) -> int:
        """Distinct label values exported so far (`OTHER_SITE` counts once used)."""
        return len(self._names) - (0 if self._records[0] else 1)

    def add(
        self,
        sites: Sequence[str],
        anomalies: npt.NDArray[np.float64],
        severities: npt.NDArray[np.float64],
    ) -> None:
        """sites: (B,), anomalies: (B,) 0/1, severities: (B,) finite."""
        try:  # fast path: every site already has a slot (dict.get is None otherwise)
            slots = np.fromiter(map(self._slots.get, sites), dtype=np.intp, count=len(sites))
        except TypeError:
            slots = np.fromiter(map(self._slot, sites), dtype=np.intp, count=len(sites))
        n = self._cap
        records = np.bincount(slots, minlength=n)
        anomalous = np.bincount(slots, weights=anomalies, minlength=n).astype(np.int64)
        severity = np.bincount(slots, weights=severities, minlength=n)
        batch_max = np.full(n, -np.inf)
        np.maximum.at(batch_max, slots, severities)
        touched = records > 0
        with self._lock:
            self._records += records
            self._anomalies += anomalous
            self._severity_sum += severity
            self._severity_max[touched] = batch_max[touched]

    def rows(self) -> list[SiteRow]:
        """One row per label value that has seen records, in first-seen order."""
        with self._lock:
            return [
                SiteRow(
                    name,
                    int(self._records[i]),
                    int(self._anomalies[i]),
                    float(self._severity_sum[i]),
                    float(self._severity_max[i]),
                )
                for i, name in enumerate(self._names)
                if self._records[i]
            ]
