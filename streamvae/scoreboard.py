"""The demo's scoreboard: scored records against the simulator's ground truth. Pure.

Feeds the terminal view (`snapshot`) and the end summary (`summary`). Time is
passed in (`now`, seconds on any monotonic clock); nothing here reads a clock.

How records count (point-wise, no "point adjustment"):

- an **active** record counts as flagged when the daemon says `anomaly`;
- a **warming** record (a site the model does not know yet) is never alerted on;
  it counts as flagged when its score through the pooled slot exceeds the
  threshold, so the summary can compare a new site before and after onboarding.

Episode recall (an anomaly episode counts as found when any of its active records
is flagged) and blame (a flagged anomalous record whose top-3 sensors include one
the simulator blamed) are reported beside the point-wise numbers, labelled as such.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamvae.simulator import Label

TOP_SENSORS = 3


@dataclass(frozen=True, slots=True)
class Outcome:
    """One scored record, as the demo reads it off the output topic (or the detector)."""

    site: str
    ts: float
    score: float
    threshold: float
    anomaly: bool
    status: str  # "active" | "warming"
    model_version: str
    top: tuple[str, ...]  # sensors with the largest contributions, largest first


def top_sensors(contributions: Mapping[str, float], k: int = TOP_SENSORS) -> tuple[str, ...]:
    """The `k` sensors that explain most of a score."""
    return tuple(sorted(contributions, key=lambda s: -contributions[s])[:k])


@dataclass(slots=True)
class Tally:
    """A confusion matrix."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, flagged: bool, truth: bool) -> None:
        if flagged and truth:
            self.tp += 1
        elif flagged:
            self.fp += 1
        elif truth:
            self.fn += 1
        else:
            self.tn += 1

    @property
    def records(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    def as_dict(self) -> dict[str, Any]:
        flagged, positives = self.tp + self.fp, self.tp + self.fn
        precision = self.tp / flagged if flagged else None
        recall = self.tp / positives if positives else None
        f1 = (
            2 * precision * recall / (precision + recall)
            if precision is not None and recall is not None and precision + recall > 0
            else None
        )
        return {
            "records": self.records,
            "anomalies": positives,
            "flagged": flagged,
            "precision": precision,
            "recall": recall,
            "f1": f1,
        }


@dataclass(frozen=True, slots=True)
class RetrainEvent:
    """One retraining outcome, for the view and the summary."""

    at_s: float  # seconds since the demo started
    outcome: str  # promoted | rejected | failed | initial
    version: str
    sites: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Alert:
    site: str
    ts: float
    severity: float
    top: tuple[str, ...]
    truth: Label


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the terminal view shows at one moment."""

    elapsed_s: float
    records: int
    throughput: float  # records/s over the last window
    site_rates: Mapping[str, float]
    site_status: Mapping[str, str]
    site_counts: Mapping[str, tuple[int, int]]  # site -> (flagged, true anomalies), active only
    model_version: str
    alerts: tuple[Alert, ...]
    retrains: tuple[RetrainEvent, ...]


@dataclass(slots=True)
class Scoreboard:
    """Accumulates outcomes; `window_s` is the span of the rate estimates."""

    sites: Sequence[str]
    new_site: str | None = None
    window_s: float = 5.0
    keep_alerts: int = 6
    started: float = 0.0  # `now` at the start of the run
    records: int = 0
    model_version: str = "-"
    tallies: dict[tuple[str, str], Tally] = field(default_factory=dict)
    kinds: dict[str, Tally] = field(default_factory=dict)
    episodes: dict[tuple[str, int], bool] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    active_at: dict[str, float] = field(default_factory=dict)
    blamed: Tally = field(default_factory=Tally)
    alerts: deque[Alert] = field(default_factory=deque)
    retrains: list[RetrainEvent] = field(default_factory=list)
    _recent: deque[tuple[float, str]] = field(default_factory=deque)

    def add(self, outcome: Outcome, label: Label, now: float) -> None:
        """Count one scored record whose ground truth is `label`."""
        self.records += 1
        self.model_version = outcome.model_version
        site, active = outcome.site, outcome.status == "active"
        if active and self.status.get(site) == "warming":
            self.active_at[site] = now - self.started
        self.status[site] = outcome.status
        flagged = outcome.anomaly if active else outcome.score > outcome.threshold
        self.tallies.setdefault((site, outcome.status), Tally()).add(flagged, label.anomaly)
        if active:
            self.kinds.setdefault(label.kind or "normal", Tally()).add(flagged, label.anomaly)
            if label.anomaly:
                key = (site, label.episode)
                self.episodes[key] = self.episodes.get(key, False) or flagged
            if flagged and label.anomaly:
                hit = bool(set(outcome.top) & set(label.sensors))
                self.blamed.add(hit, True)
        if outcome.anomaly:
            severity = outcome.score / outcome.threshold if outcome.threshold > 0 else 0.0
            self.alerts.appendleft(Alert(site, outcome.ts, severity, outcome.top, label))
            while len(self.alerts) > self.keep_alerts:
                self.alerts.pop()
        self._recent.append((now, site))
        while self._recent and self._recent[0][0] < now - self.window_s:
            self._recent.popleft()

    def retrained(self, event: RetrainEvent) -> None:
        self.retrains.append(event)

    def snapshot(self, now: float) -> Snapshot:
        elapsed = now - self.started
        span = min(self.window_s, max(elapsed, 1.0))
        rates = {s: 0.0 for s in self.sites}
        for _, site in self._recent:
            rates[site] = rates.get(site, 0.0) + 1.0 / span
        counts = {}
        for site in rates:
            tally = self.tallies.get((site, "active"), Tally())
            counts[site] = (tally.tp + tally.fp, tally.tp + tally.fn)
        return Snapshot(
            elapsed_s=elapsed,
            records=self.records,
            throughput=len(self._recent) / span,
            site_rates=rates,
            site_status={s: self.status.get(s, "waiting") for s in rates},
            site_counts=counts,
            model_version=self.model_version,
            alerts=tuple(self.alerts),
            retrains=tuple(self.retrains[-4:]),
        )

    def summary(self, *, wall_s: float, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Plain JSON-able summary of the whole run."""
        sites: dict[str, Any] = {}
        overall = Tally()
        for site in dict.fromkeys([*self.sites, *(s for s, _ in self.tallies)]):
            entry: dict[str, Any] = {"status": self.status.get(site, "waiting")}
            for phase in ("active", "warming"):
                tally = self.tallies.get((site, phase))
                if tally is not None:
                    entry[phase] = tally.as_dict()
            if site in self.active_at:
                entry["active_at_s"] = round(self.active_at[site], 1)
            sites[site] = entry
            active = self.tallies.get((site, "active"), Tally())
            for name in ("tp", "fp", "fn", "tn"):
                setattr(overall, name, getattr(overall, name) + getattr(active, name))
        found = sum(self.episodes.values())
        normal = self.kinds.get("normal", Tally())
        out: dict[str, Any] = {
            "records": self.records,
            "wall_s": round(wall_s, 2),
            "throughput_rps": round(self.records / wall_s, 1) if wall_s > 0 else None,
            "overall": overall.as_dict(),
            "sites": sites,
            "new_site": self.new_site,
            "kinds": {
                k: t.as_dict()["recall"] for k, t in sorted(self.kinds.items()) if k != "normal"
            },
            "false_positive_rate": (normal.fp / normal.records if normal.records else None),
            "episodes": {"total": len(self.episodes), "found": found},
            "blame_top3": self.blamed.as_dict()["precision"],
            "model_version": self.model_version,
            "retrains": [
                {"at_s": round(e.at_s, 1), "outcome": e.outcome, "version": e.version}
                | ({"sites": list(e.sites)} if e.sites else {})
                | ({"detail": e.detail} if e.detail else {})
                for e in self.retrains
            ],
        }
        if extra:
            out.update(extra)
        return out
