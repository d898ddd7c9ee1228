"""A seeded multi-site sensor simulator with labelled anomalies. Pure: no I/O, no clock.

The demo, the tests and the benchmarks drive it by elapsed simulated seconds:
`Simulator.advance(until_s)` returns every record whose time lies in
`(previous until_s, until_s]`, in timestamp order. Each site draws from its own
random stream, so the output does not depend on how time is chunked.

Generative model, per site s and record time t (D sensors, F latent factors)::

    z(t)   = AR(1) noise (time constant `tau_s`) + daily-ish sine (period `period_s`,
             a phase per site: sites sit in different "time zones")       (F,)
    x(t)   = base_s + unit * gain_s * (W z + 0.3 tanh(V z))                (D,)
             + unit * noise_s * eps + drift_s * t
    W: (D, F) shared mixing (each sensor loads mostly on one factor, so sensors
       form correlated groups); base_s, gain_s, noise_s, drift_s: per site.

A few sensors sit constant (the "biased" case), then click between nearby levels.
Anomaly episodes (after `anomalies_after_s`) are of four kinds:

    spike        1-3 records, 1-3 sensors, +/- 5-9 sd
    level_shift  2-6 s, 2-5 sensors, +/- 3-5 sd
    stuck        2-6 s, 1-3 sensors frozen at their last value, or dead (reading 0)
    correlated   2-5 s, one correlated group pushed 2.5-4 sd with random signs
                 (breaking the shared structure)

Labels (`Label`) travel beside records, never in the payload. One extra site
(`new_site`) joins at `new_site_at_s` with no history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

KINDS: Final = ("spike", "level_shift", "stuck", "correlated")

_SENSOR_KINDS: Final = (
    # name, typical level, typical variation ("unit")
    ("temp", 60.0, 4.0),
    ("pressure", 3.0, 0.25),
    ("flow", 120.0, 9.0),
    ("rpm", 1500.0, 60.0),
    ("vibration", 0.8, 0.1),
    ("current", 40.0, 3.0),
    ("voltage", 400.0, 6.0),
    ("humidity", 45.0, 3.0),
    ("level", 2.5, 0.2),
    ("power", 250.0, 15.0),
)


def sensor_names(count: int) -> tuple[str, ...]:
    """`temp_1, pressure_1, …, power_1, temp_2, …`: `count` readable names."""
    n = len(_SENSOR_KINDS)
    return tuple(f"{_SENSOR_KINDS[i % n][0]}_{i // n + 1}" for i in range(count))


@dataclass(frozen=True, slots=True)
class SimSpec:
    """What to simulate. Times are simulated seconds since `start_ts`."""

    sites: int = 5  # initial sites; the new site comes on top
    sensors: int = 38
    factors: int = 4
    rate: float = 200.0  # records/s over the initial sites (each site: rate / sites)
    seed: int = 7
    start_ts: float = 1_767_225_600.0  # epoch seconds of elapsed time 0
    period_s: float = 60.0  # the "day" of the periodic component
    tau_s: float = 2.0  # time constant of the latent AR(1) noise
    noise: float = 0.15  # sensor noise, relative to the unit variation
    drift_sd_per_min: float = 0.01  # slow drift on a quarter of the sensors
    constant_sensors: int = 3
    hold_s: float = 90.0  # mean time a constant sensor sits still (0.25-1.75 x this)
    anomaly_every_s: float = 60.0  # mean time between episode starts, per site
    anomalies_after_s: float = 0.0  # no anomalies before this elapsed time
    kinds: tuple[str, ...] = KINDS
    new_site_at_s: float | None = None  # None: no new site
    site_prefix: str = "plant"
    site_spread: float = 1.0  # how different sites are (offsets, gains); 0 = identical

    def __post_init__(self) -> None:
        if self.sites < 1 or self.sensors < 2 or self.factors < 1 or self.rate <= 0:
            raise ValueError("sites >= 1, sensors >= 2, factors >= 1 and rate > 0 are required")
        if unknown := set(self.kinds) - set(KINDS):
            raise ValueError(f"unknown anomaly kinds: {sorted(unknown)}")
        if self.constant_sensors >= self.sensors:
            raise ValueError("constant_sensors must be fewer than sensors")

    @property
    def interval_s(self) -> float:
        """Seconds between two records of one site."""
        return self.sites / self.rate


@dataclass(frozen=True, slots=True)
class Label:
    """Ground truth of one record: is it anomalous, which kind, which sensors to blame."""

    anomaly: bool = False
    kind: str | None = None
    sensors: tuple[str, ...] = ()
    episode: int = -1  # per-site episode number; -1 when normal


NORMAL: Final = Label()


@dataclass(frozen=True, slots=True)
class SimRecord:
    """One simulated record. `values` follow `Simulator.features`."""

    site: str
    ts: float
    values: tuple[float, ...]
    label: Label


def encode_record(record: SimRecord, features: tuple[str, ...]) -> bytes:
    """The input record format: `{"site", "ts", "values": {name: value}}` (no label)."""
    payload: dict[str, Any] = {
        "site": record.site,
        "ts": record.ts,
        "values": dict(zip(features, record.values, strict=True)),
    }
    return orjson.dumps(payload)


@dataclass(slots=True)
class _Episode:
    kind: str
    sensors: npt.NDArray[np.int_]
    remaining: int
    number: int
    delta: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    frozen: npt.NDArray[np.float64] | None = None


@dataclass(slots=True)
class _Site:
    name: str
    index: int
    joins_s: float
    rng: np.random.Generator
    base: npt.NDArray[np.float64]  # (D,)
    gain: npt.NDArray[np.float64]  # (D,)
    noise: float
    drift: npt.NDArray[np.float64]  # (D,) units per second
    phase: npt.NDArray[np.float64]  # (F,)
    hold_until: npt.NDArray[np.float64]  # (C,) elapsed s when each constant sensor moves
    levels: npt.NDArray[np.float64]  # (C,) resting level of the constant sensors
    notch: npt.NDArray[np.float64]  # (C,) current notch: -1, 0 or +1 half-unit off the rest
    z: npt.NDArray[np.float64]  # (F,) AR state
    offset: float  # sub-interval phase of this site's ticks, in [0, 1)
    k: int = 0  # next record index
    episodes: int = 0
    episode: _Episode | None = None


class Simulator:
    """Deterministic given `spec.seed`. Mutable only through `advance`."""

    def __init__(self, spec: SimSpec) -> None:
        self.spec = spec
        self.features = sensor_names(spec.sensors)
        rng = np.random.default_rng([spec.seed, 0])
        D, F = spec.sensors, spec.factors
        group = np.arange(D) % F
        rng.shuffle(group)
        self._group = group
        mix = rng.normal(0.0, 0.3, (D, F))
        mix[np.arange(D), group] += 0.9
        self._mix = mix
        self._mix2 = rng.normal(0.0, 0.5, (D, F))
        self._level = np.array([_SENSOR_KINDS[i % len(_SENSOR_KINDS)][1] for i in range(D)])
        self._unit = np.array([_SENSOR_KINDS[i % len(_SENSOR_KINDS)][2] for i in range(D)])
        self._constant = rng.choice(D, size=spec.constant_sensors, replace=False)
        self._amp = rng.uniform(0.5, 1.2, F)
        # typical variation of each sensor: AR (var 1) + sine (var amp^2/2) through W, + noise
        var_z = 1.0 + self._amp**2 / 2
        self._sd = self._unit * np.sqrt((mix**2 * var_z).sum(axis=1) + spec.noise**2)
        self._drifting = rng.random(D) < 0.25
        names = [f"{spec.site_prefix}-{i + 1}" for i in range(spec.sites)]
        joins = [0.0] * spec.sites
        if spec.new_site_at_s is not None:
            names.append(f"{spec.site_prefix}-{spec.sites + 1}")
            joins.append(spec.new_site_at_s)
        self.sites = tuple(names)
        self.new_site = names[-1] if spec.new_site_at_s is not None else None
        self._sites = [
            self._make_site(i, n, j) for i, (n, j) in enumerate(zip(names, joins, strict=True))
        ]
        self._until = -math.inf

    def _make_site(self, index: int, name: str, joins_s: float) -> _Site:
        spec, D, F = self.spec, self.spec.sensors, self.spec.factors
        rng = np.random.default_rng([self.spec.seed, 1, index])
        C, spread = len(self._constant), spec.site_spread
        return _Site(
            name=name,
            index=index,
            joins_s=joins_s,
            rng=rng,
            base=self._level * (1 + spread * rng.uniform(-0.15, 0.15, D))
            + self._unit * spread * rng.normal(0, 1.0, D),
            gain=1 + spread * rng.uniform(-0.3, 0.4, D),
            noise=spec.noise * rng.uniform(0.7, 1.5),
            drift=self._drifting * self._sd * rng.normal(0, spec.drift_sd_per_min, D) / 60.0,
            phase=rng.uniform(0, 2 * math.pi) + rng.normal(0, 0.3, F),
            hold_until=joins_s + spec.hold_s * rng.uniform(0.25, 1.75, C),
            levels=self._level[self._constant] * rng.uniform(0.9, 1.1, C),
            notch=np.zeros(C),
            z=rng.normal(0, 1, F),
            offset=float(rng.random()),
        )

    def group_of(self, sensor: str) -> int:
        """The latent factor a sensor mostly loads on (its correlated group)."""
        return int(self._group[self.features.index(sensor)])

    def advance(self, until_s: float) -> list[SimRecord]:
        """All records with elapsed time in `(last until_s, until_s]`, in time order."""
        if until_s <= self._until:
            return []
        self._until = until_s
        out: list[SimRecord] = []
        dt = self.spec.interval_s
        for site in self._sites:
            while (t := site.joins_s + (site.k + site.offset) * dt) <= until_s:
                out.append(self._next(site, t))
                site.k += 1
        out.sort(key=lambda r: r.ts)
        return out

    def _next(self, site: _Site, t: float) -> SimRecord:
        spec, rng, dt = self.spec, site.rng, self.spec.interval_s
        a = math.exp(-dt / spec.tau_s)
        site.z = a * site.z + math.sqrt(1 - a * a) * rng.normal(0, 1, spec.factors)
        season = self._amp * np.sin(2 * math.pi * t / spec.period_s + site.phase)
        z = site.z + season
        signal = self._mix @ z + 0.3 * np.tanh(self._mix2 @ z)
        eps = rng.normal(0, 1, spec.sensors)
        x = site.base + self._unit * (site.gain * signal + site.noise * eps) + site.drift * t
        # constant sensors, once moving, click between three notches (quantized, bounded)
        moving = t >= site.hold_until
        steps = moving & (rng.random(len(site.levels)) < dt / 2.0)
        site.notch = np.where(steps, rng.integers(-1, 2, len(site.notch)), site.notch)
        x[self._constant] = site.levels + 0.5 * site.notch * self._unit[self._constant]
        label = self._anomaly(site, t, x)
        values = tuple(round(float(v), 5) for v in x)
        return SimRecord(site.name, round(spec.start_ts + t, 6), values, label)

    def _anomaly(self, site: _Site, t: float, x: npt.NDArray[np.float64]) -> Label:
        """Start, apply (in place on `x`) and end anomaly episodes."""
        spec, rng, dt = self.spec, site.rng, self.spec.interval_s
        start = rng.random() < dt / spec.anomaly_every_s
        if site.episode is None and start and t >= spec.anomalies_after_s and spec.kinds:
            site.episode = self._start(site, spec.kinds[rng.integers(len(spec.kinds))], x)
        ep = site.episode
        if ep is None:
            return NORMAL
        if ep.kind == "stuck":
            assert ep.frozen is not None
            x[ep.sensors] = ep.frozen
        else:
            x[ep.sensors] += ep.delta
        ep.remaining -= 1
        if ep.remaining <= 0:
            site.episode = None
        names = tuple(self.features[i] for i in ep.sensors)
        return Label(anomaly=True, kind=ep.kind, sensors=names, episode=ep.number)

    def _start(self, site: _Site, kind: str, x: npt.NDArray[np.float64]) -> _Episode:
        rng, dt, D = site.rng, self.spec.interval_s, self.spec.sensors
        free = np.setdiff1d(np.arange(D), self._constant)
        site.episodes += 1

        def pick(lo: int, hi: int) -> npt.NDArray[np.int_]:
            return np.sort(rng.choice(free, size=min(len(free), int(rng.integers(lo, hi + 1)))))

        def records(lo_s: float, hi_s: float) -> int:
            return max(1, round(rng.uniform(lo_s, hi_s) / dt))

        def signs(n: int) -> npt.NDArray[np.float64]:
            return rng.choice(np.array([-1.0, 1.0]), n)

        if kind == "spike":
            s = pick(1, 3)
            delta = signs(len(s)) * rng.uniform(5, 9, len(s)) * self._sd[s] * site.gain[s]
            return _Episode(kind, s, int(rng.integers(1, 4)), site.episodes, delta)
        if kind == "level_shift":
            s = pick(2, 5)
            delta = signs(len(s)) * rng.uniform(3, 5, len(s)) * self._sd[s] * site.gain[s]
            return _Episode(kind, s, records(2, 6), site.episodes, delta)
        if kind == "stuck":  # frozen at the last value, or dead (reading zero)
            s = pick(1, 3)
            frozen = x[s].copy() if rng.random() < 0.5 else np.zeros(len(s))
            return _Episode(kind, s, records(2, 6), site.episodes, frozen=frozen)
        g = int(rng.integers(self.spec.factors))
        members = np.setdiff1d(np.flatnonzero(self._group == g), self._constant)
        s = members if len(members) else pick(2, 4)
        delta = signs(len(s)) * rng.uniform(2.5, 4, len(s)) * self._sd[s] * site.gain[s]
        return _Episode("correlated", s, records(2, 5), site.episodes, delta)
