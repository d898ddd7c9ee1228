from __future__ import annotations

import collections

import numpy as np
import orjson
import pytest

from streamvae.simulator import (
    KINDS,
    SimRecord,
    SimSpec,
    Simulator,
    encode_record,
    sensor_names,
)

SPEC = SimSpec(sites=3, sensors=12, rate=60.0, seed=3, anomaly_every_s=5.0, new_site_at_s=20.0)


def _run(spec: SimSpec, until: float, step: float) -> list[SimRecord]:
    sim = Simulator(spec)
    out: list[SimRecord] = []
    t = 0.0
    while t < until:
        t = min(until, t + step)
        out.extend(sim.advance(t))
    return out


def test_same_seed_same_records_whatever_the_chunking() -> None:
    whole = Simulator(SPEC).advance(40.0)
    chunked = _run(SPEC, 40.0, 0.37)
    assert [(r.site, r.ts) for r in chunked] == [(r.site, r.ts) for r in whole]
    assert chunked == whole


def test_another_seed_other_values() -> None:
    a = Simulator(SPEC).advance(5.0)
    b = Simulator(SimSpec(**{**_fields(SPEC), "seed": 4})).advance(5.0)
    assert [r.values for r in a] != [r.values for r in b]


def _fields(spec: SimSpec) -> dict[str, object]:
    return {name: getattr(spec, name) for name in spec.__dataclass_fields__}


def test_shapes_rates_and_order() -> None:
    sim = Simulator(SPEC)
    records = sim.advance(10.0)
    assert len(sim.features) == 12
    assert all(len(r.values) == 12 for r in records)
    assert [r.ts for r in records] == sorted(r.ts for r in records)
    per_site = collections.Counter(r.site for r in records)
    # 60 records/s over 3 sites for 10 s; the new site has not joined yet.
    assert per_site == {"plant-1": 200, "plant-2": 200, "plant-3": 200}
    assert sim.advance(10.0) == []  # time does not run backwards


def test_new_site_joins_on_time_with_no_history() -> None:
    sim = Simulator(SPEC)
    assert sim.new_site == "plant-4"
    records = sim.advance(30.0)
    first = min(r.ts for r in records if r.site == "plant-4") - SPEC.start_ts
    assert 20.0 <= first < 20.0 + SPEC.interval_s
    assert sum(r.site == "plant-4" for r in records) == pytest.approx(200, abs=1)
    assert Simulator(SimSpec(sites=2)).new_site is None


def test_payload_is_the_record_format_without_labels() -> None:
    sim = Simulator(SPEC)
    record = sim.advance(1.0)[0]
    payload = orjson.loads(encode_record(record, sim.features))
    assert set(payload) == {"site", "ts", "values"}
    assert list(payload["values"]) == list(sim.features)
    assert payload["ts"] == record.ts


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_injected_with_blamed_sensors(kind: str) -> None:
    spec = SimSpec(sites=2, sensors=16, rate=40.0, seed=1, anomaly_every_s=4.0, kinds=(kind,))
    sim = Simulator(spec)
    records = sim.advance(200.0)
    bad = [r for r in records if r.label.anomaly]
    assert bad
    assert {r.label.kind for r in bad} == {kind}
    assert all(r.label.sensors and set(r.label.sensors) <= set(sim.features) for r in bad)
    episodes = {(r.site, r.label.episode) for r in bad}
    # about one episode per 4 s per site (minus the time spent inside episodes)
    assert 20 <= len(episodes) <= 110
    if kind == "correlated":
        groups = {sim.group_of(s) for r in bad for s in r.label.sensors}
        per_episode = collections.defaultdict(set)
        for r in bad:
            per_episode[(r.site, r.label.episode)] |= {sim.group_of(s) for s in r.label.sensors}
        assert all(len(g) == 1 for g in per_episode.values())
        assert len(groups) > 1


def test_stuck_sensors_hold_their_value() -> None:
    spec = SimSpec(sites=1, sensors=10, rate=20.0, seed=2, anomaly_every_s=3.0, kinds=("stuck",))
    sim = Simulator(spec)
    records = sim.advance(120.0)
    by_episode: dict[int, list[SimRecord]] = collections.defaultdict(list)
    for r in records:
        if r.label.anomaly:
            by_episode[r.label.episode].append(r)
    assert by_episode
    for rows in by_episode.values():
        idx = [sim.features.index(s) for s in rows[0].label.sensors]
        held = np.array([[r.values[i] for i in idx] for r in rows])
        assert (held == held[0]).all()


def test_anomalies_are_rare_and_large() -> None:
    spec = SimSpec(sites=2, sensors=20, rate=40.0, seed=5, anomalies_after_s=30.0)
    records = Simulator(spec).advance(600.0)
    share = np.mean([r.label.anomaly for r in records])
    assert 0.01 < share < 0.15
    assert not any(r.label.anomaly for r in records if r.ts - spec.start_ts < 30.0)


def test_spikes_stand_out_from_their_site() -> None:
    spec = SimSpec(sites=2, sensors=20, rate=40.0, seed=5, anomaly_every_s=5.0, kinds=("spike",))
    records = Simulator(spec).advance(300.0)
    feats = sensor_names(20)
    spikes = [r for r in records if r.label.kind == "spike"]
    assert spikes
    largest = []
    for site in ("plant-1", "plant-2"):
        normal = np.array([r.values for r in records if r.site == site and not r.label.anomaly])
        mean, sd = normal.mean(axis=0), normal.std(axis=0)
        for r in (r for r in spikes if r.site == site):
            idx = [feats.index(s) for s in r.label.sensors]
            largest.append(np.abs((np.array(r.values)[idx] - mean[idx]) / sd[idx]).max())
    assert np.median(largest) > 4.0
    assert np.min(largest) > 1.5


def test_sensors_share_structure() -> None:
    spec = SimSpec(sites=1, sensors=12, factors=3, rate=20.0, seed=8, anomaly_every_s=1e9)
    sim = Simulator(spec)
    x = np.array([r.values for r in sim.advance(300.0)])
    moving = x.std(axis=0) > 0
    corr = np.corrcoef(x[:, moving].T)
    off_diagonal = np.abs(corr[~np.eye(len(corr), dtype=bool)])
    assert off_diagonal.max() > 0.6  # sensors in one group move together


def test_constant_sensors_sit_still_then_move() -> None:
    spec = SimSpec(sites=1, sensors=10, rate=20.0, seed=9, hold_s=30.0, anomaly_every_s=1e9)
    sim = Simulator(spec)
    x = np.array([r.values for r in sim.advance(600.0)])
    first = x[:100]
    still = (first == first[0]).all(axis=0)
    assert 1 <= still.sum() <= spec.constant_sensors
    assert (x[:, still].std(axis=0) > 0).any()


@pytest.mark.parametrize(
    "bad",
    [{"sites": 0}, {"rate": 0.0}, {"kinds": ("meteor",)}, {"constant_sensors": 12}],
)
def test_bad_specs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"."):
        SimSpec(**{**_fields(SimSpec(sensors=12)), **bad})  # type: ignore[arg-type]
