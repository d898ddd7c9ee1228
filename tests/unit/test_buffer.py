from __future__ import annotations

import numpy as np
import pytest

from streamvae.buffer import BufferSpec, TrainingBuffer, water_level


def _batch(site: str, n: int, start: float = 0.0, dim: int = 3):
    values = np.arange(n * dim, dtype=np.float32).reshape(n, dim) + start
    ts = start + np.arange(n, dtype=np.float64)
    return [site] * n, values, ts, np.ones(n, dtype=bool)


def _buffer(rng: np.random.Generator, **kw: float) -> TrainingBuffer:
    spec = BufferSpec(dim=3, **kw)  # type: ignore[arg-type]
    return TrainingBuffer(spec, rng)


@pytest.mark.parametrize(
    ("sizes", "cap", "level"),
    [
        ([10, 10], 30, 10),
        ([10, 30], 30, 20),
        ([5, 100, 100], 105, 50),
        ([1, 2, 300], 100, 97),
        ([], 10, 0),
    ],
)
def test_water_level(sizes: list[int], cap: int, level: int) -> None:
    assert water_level(sizes, cap) == level
    assert sum(min(s, level) for s in sizes) <= cap


def test_anomalous_and_non_finite_rows_are_excluded(rng: np.random.Generator) -> None:
    buf = _buffer(rng)
    sites = ["a", "b", "a", "b"]
    values = np.ones((4, 3), dtype=np.float32)
    values[3, 1] = np.nan
    buf.offer(sites, values, np.arange(4.0), np.array([True, False, True, True]))
    assert buf.counts() == {"a": 2}
    assert len(buf) == 2


def test_per_site_cap_keeps_a_recent_uniform_sample(rng: np.random.Generator) -> None:
    buf = _buffer(rng, per_site_cap=100, recency_factor=4.0)
    for i in range(50):
        buf.offer(*_batch("a", 100, start=i * 100.0))
    assert buf.counts() == {"a": 100}
    ts = buf.snapshot("all").ts
    assert len(np.unique(ts)) == 100  # no slot written twice in the same position
    # The sample follows the recent past: nothing from the first half of the stream.
    assert ts.min() > 2500
    assert ts.max() > 4800


def test_total_cap_shrinks_the_largest_sites_first(rng: np.random.Generator) -> None:
    buf = _buffer(rng, per_site_cap=1000, total_cap=1000)
    buf.offer(*_batch("big", 1000))
    assert buf.counts() == {"big": 1000}
    buf.offer(*_batch("new", 50))
    counts = buf.counts()
    assert counts == {"big": 950, "new": 50}
    buf.offer(*_batch("other", 400))
    buf.offer(*_batch("new", 400))
    counts = buf.counts()
    assert sum(counts.values()) <= 1000
    assert max(counts.values()) - min(counts.values()) <= 1  # fair shares
    # A site at the level only takes the spare slot; its records still rotate.
    buf.offer(*_batch("big", 500, start=10_000.0))
    after = buf.counts()
    assert after["big"] - counts["big"] <= 1000 - sum(counts.values())
    assert sum(after.values()) == 1000
    assert buf.snapshot("all", sites=["big"]).ts.max() >= 10_000.0


def test_holdout_split_is_per_site_deterministic_and_disjoint() -> None:
    def build() -> TrainingBuffer:
        buf = _buffer(np.random.default_rng(7), holdout_fraction=0.25)
        buf.offer(*_batch("a", 400))
        buf.offer(*_batch("b", 200, start=5000.0))
        return buf

    one, two = build(), build()
    hold, train = one.holdout(), one.snapshot("train")
    assert np.array_equal(hold.ts, two.holdout().ts)
    assert len(hold.ts) + len(train.ts) == 600
    assert not set(hold.ts.tolist()) & set(train.ts.tolist())
    for site, n in (("a", 400), ("b", 200)):
        share = hold.sites.count(site) / n
        assert 0.15 < share < 0.35
    assert one.holdout_counts() == {s: hold.sites.count(s) for s in ("a", "b")}


def test_snapshot_rows_match_their_sites(rng: np.random.Generator) -> None:
    buf = _buffer(rng)
    sites = ["x", "y"] * 50
    values = np.repeat(np.array([[1.0], [2.0]] * 50, dtype=np.float32), 3, axis=1)
    buf.offer(sites, values, np.arange(100.0), np.ones(100, dtype=bool))
    sample = buf.snapshot("all")
    assert sample.values.shape == (100, 3)
    for site, row in zip(sample.sites, sample.values, strict=True):
        assert row[0] == (1.0 if site == "x" else 2.0)


def test_export_round_trip_and_smaller_caps(rng: np.random.Generator) -> None:
    buf = _buffer(rng)
    buf.offer(*_batch("a", 300))
    buf.offer(*_batch("b", 100))
    state = buf.export()
    same = TrainingBuffer.from_state(state, buf.spec, np.random.default_rng(1))
    assert same.counts() == buf.counts()
    assert np.array_equal(same.holdout().ts, buf.holdout().ts)
    smaller = TrainingBuffer.from_state(
        state, BufferSpec(dim=3, per_site_cap=200, total_cap=250), np.random.default_rng(1)
    )
    assert smaller.counts() == {"a": 150, "b": 100}
    with pytest.raises(ValueError, match="features"):
        TrainingBuffer.from_state(state, BufferSpec(dim=4), rng)


def test_offer_rejects_wrong_shapes(rng: np.random.Generator) -> None:
    buf = _buffer(rng)
    with pytest.raises(ValueError, match="values must be"):
        buf.offer(["a"], np.ones((1, 4), np.float32), np.zeros(1), np.ones(1, bool))
    buf.offer([], np.empty((0, 3), np.float32), np.zeros(0), np.zeros(0, bool))
    assert len(buf) == 0


def test_offer_leaves_the_callers_arrays_alone(rng: np.random.Generator) -> None:
    buf = _buffer(rng)
    values = np.ones((3, 3), dtype=np.float32)
    values[0, 0] = np.inf
    normal = np.array([True, True, False])
    buf.offer(["a", "b", "c"], values, np.zeros(3), normal)
    assert normal.tolist() == [True, True, False]
    assert buf.counts() == {"b": 1}


def test_many_small_batches_prune_to_the_bounds(rng: np.random.Generator) -> None:
    buf = _buffer(rng, per_site_cap=300, total_cap=2000)
    names = [f"s{i}" for i in range(10)]
    for i in range(100):
        sites = [names[j % 10] for j in range(i, i + 64)]
        values = np.full((64, 3), i, dtype=np.float32)
        buf.offer(sites, values, np.full(64, float(i)), np.ones(64, bool))
    counts = buf.counts()
    assert sum(counts.values()) <= 2000
    assert max(counts.values()) - min(counts.values()) <= 1
    assert buf.seen("s0") == 640
    assert np.median(buf.snapshot("all").ts) > 50  # recent records are favoured
