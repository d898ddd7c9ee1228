"""Site lifecycle and drift tracking. Pure core, driven by an injected clock.

    unknown ──first record──► warming ──in a promoted model──► active
                                 ▲                               │ no record for
                                 └──── (not in the model) ───────┤ site_retire_after_s
                                                                 ▼
                               records again ◄────────────── retired

- warming: the current model does not know the site. Its records are scored
  through the pooled slot, marked `status="warming"`, never flagged, and
  buffered for training. Once the buffer holds `new_site_min_records` of them a
  `new_site` trigger is raised.
- active: the site is in the promoted model (it has an embedding slot and a
  threshold: its own, or the detector's fallback when it had little held-out data).
- retired: no record for `retire_after_s`. Dropped from thresholds/metrics
  (`counts()`, `active_sites()`), kept by the model and in the buffer. A record
  from a retired site makes it active again (or warming if no model knows it).

Drift: for each active site the anomaly flags are counted in tumbling windows of
`drift_window` records; a window whose anomaly rate exceeds
`drift_factor × target_fpr` raises a `drift` trigger for that site.

The clock must be wall time (epoch seconds) when the tracker is persisted
(`export` / `restore`), since `last_seen` outlives the process.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Status = Literal["warming", "active", "retired"]
TriggerKind = Literal["initial", "new_site", "drift"]


@dataclass(frozen=True, slots=True)
class LifecycleSpec:
    new_site_min_records: int = 300
    retire_after_s: float = 7 * 24 * 3600.0
    target_fpr: float = 0.01
    drift_factor: float = 5.0
    drift_window: int = 1000
    min_total_records: int = 1000


@dataclass(frozen=True, slots=True)
class Trigger:
    """Why a retraining should run now."""

    kind: TriggerKind
    site: str | None
    detail: str


@dataclass(slots=True)
class _Site:
    status: Status
    first_seen: float
    last_seen: float
    records: int = 0
    window_n: int = 0
    window_k: int = 0
    drift_rate: float | None = None  # set when the last full window breached


class SiteTracker:
    """Status of every site seen, plus retraining triggers. Not thread-safe: event loop only."""

    def __init__(self, spec: LifecycleSpec, clock: Callable[[], float]) -> None:
        self.spec = spec
        self._clock = clock
        self._sites: dict[str, _Site] = {}
        self._model_sites: frozenset[str] = frozenset()
        self._has_model = False

    # -- model changes -------------------------------------------------------------
    def set_model_sites(self, sites: Collection[str]) -> list[str]:
        """A model knowing `sites` now serves. Returns the sites that became active."""
        self._model_sites = frozenset(sites)
        self._has_model = True
        activated = []
        for name, site in self._sites.items():
            if site.status == "warming" and name in self._model_sites:
                site.status = "active"
                activated.append(name)
            elif site.status == "active" and name not in self._model_sites:
                site.status = "warming"  # a rollback to a model without it
            site.window_n = site.window_k = 0
            site.drift_rate = None
        return sorted(activated)

    # -- per batch -----------------------------------------------------------------
    def observe(self, sites: Sequence[str], anomalies: npt.ArrayLike) -> None:
        """Account one scored batch: sites (B,), anomalies (B,) bool."""
        if len(sites) == 0:
            return
        now = self._clock()
        flags = np.asarray(anomalies, dtype=bool)
        uniq, inverse = np.unique(np.asarray(sites, dtype=object), return_inverse=True)
        n = np.bincount(inverse, minlength=len(uniq))
        k = np.bincount(inverse, weights=flags.astype(np.float64), minlength=len(uniq))
        window = self.spec.drift_window
        limit = self.spec.drift_factor * self.spec.target_fpr
        for j, raw in enumerate(uniq):
            name = str(raw)
            site = self._sites.get(name)
            known = name in self._model_sites
            if site is None:
                site = self._sites[name] = _Site("active" if known else "warming", now, now)
            elif site.status == "retired":
                site.status = "active" if known else "warming"
            site.last_seen = now
            site.records += int(n[j])
            if site.status != "active":
                continue
            site.window_n += int(n[j])
            site.window_k += int(k[j])
            if site.window_n >= window:
                rate = site.window_k / site.window_n
                if rate > limit:
                    site.drift_rate = rate
                site.window_n = site.window_k = 0

    # -- queries -------------------------------------------------------------------
    def status(self, site: str) -> Status | None:
        s = self._sites.get(site)
        return s.status if s else None

    def output_status(self, site: str) -> Literal["active", "warming"]:
        """The status printed on a score record (the model decides: known = active)."""
        return "active" if site in self._model_sites else "warming"

    def counts(self) -> dict[str, int]:
        """Number of sites per status (for the site-status gauge)."""
        out = {"warming": 0, "active": 0, "retired": 0}
        for s in self._sites.values():
            out[s.status] += 1
        return out

    def sites_with(self, status: Status) -> list[str]:
        return sorted(n for n, s in self._sites.items() if s.status == status)

    def retire_idle(self) -> list[str]:
        """Retire sites silent for `retire_after_s`; returns the newly retired ones."""
        horizon = self._clock() - self.spec.retire_after_s
        retired = []
        for name, site in self._sites.items():
            if site.status != "retired" and site.last_seen <= horizon:
                site.status = "retired"
                site.window_n = site.window_k = 0
                site.drift_rate = None
                retired.append(name)
        return sorted(retired)

    def triggers(self, buffered: Mapping[str, int]) -> list[Trigger]:
        """Conditions that call for a retraining now, given records buffered per site."""
        total = sum(buffered.values())
        if not self._has_model:
            if total >= self.spec.min_total_records:
                return [Trigger("initial", None, f"no model yet and {total} records buffered")]
            return []
        out = []
        for name, site in sorted(self._sites.items()):
            have = buffered.get(name, 0)
            if site.status == "warming" and have >= self.spec.new_site_min_records:
                out.append(Trigger("new_site", name, f"{have} records buffered"))
            elif site.status == "active" and site.drift_rate is not None:
                target = self.spec.target_fpr
                out.append(
                    Trigger("drift", name, f"anomaly rate {site.drift_rate:.4f} vs target {target}")
                )
        return out

    def clear_drift(self) -> None:
        """Forget raised drift triggers (after a retraining pass, whatever its outcome)."""
        for site in self._sites.values():
            site.drift_rate = None

    # -- persistence (plain JSON-able data) ------------------------------------------
    def export(self) -> dict[str, Any]:
        return {
            "sites": {
                n: {"status": s.status, "first_seen": s.first_seen, "last_seen": s.last_seen}
                for n, s in self._sites.items()
            }
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        """Load last-seen times and retired flags; statuses are re-derived from the model."""
        sites = data.get("sites", {})
        if not isinstance(sites, Mapping):
            return
        for name, item in sites.items():
            try:
                first, last = float(item["first_seen"]), float(item["last_seen"])
                retired = item.get("status") == "retired"
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            known = name in self._model_sites
            status: Status = "retired" if retired else ("active" if known else "warming")
            self._sites[str(name)] = _Site(status, first, last)


def shifted_fallback_thresholds(
    scores: npt.ArrayLike,
    sites: Sequence[str],
    *,
    thresholds: Mapping[str, float],
    fallback: float,
    known: Collection[str],
    min_records: int = 20,
) -> dict[str, float]:
    """Thresholds for known sites that have too little data for their own calibration.

    scores: (N,) one model's scores of normal records; sites: (N,) their sites.
    A known site without its own threshold but with >= `min_records` scores gets
    `fallback + median(site scores) − median(all scores)`: the pooled threshold
    moved by the site's location shift, so a site whose scores sit higher (a new
    site the model fits less tightly) is not flooded with false positives, and
    one whose scores sit lower keeps its sensitivity. Returns `thresholds`
    extended by those sites; sites below `min_records` keep the plain fallback.
    """
    s = np.asarray(scores, dtype=np.float64)
    out = dict(thresholds)
    names = np.asarray(list(sites), dtype=object)
    finite = np.isfinite(s)
    if not finite.any() or not np.isfinite(fallback):
        return out
    pooled = float(np.median(s[finite]))
    for name in sorted(set(known) - set(thresholds)):
        mine = s[(names == name) & finite]
        if len(mine) >= min_records:
            out[name] = float(fallback + np.median(mine) - pooled)
    return out
