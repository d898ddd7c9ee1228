from __future__ import annotations

import numpy as np

from streamvae.sites import LifecycleSpec, SiteTracker, Trigger
from tests.conftest import FakeClock

SPEC = LifecycleSpec(
    new_site_min_records=100,
    retire_after_s=3600.0,
    target_fpr=0.01,
    drift_factor=5.0,
    drift_window=200,
    min_total_records=50,
)


def _flags(n: int, k: int = 0) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[:k] = True
    return out


def test_unknown_warming_active_retired_and_back(clock: FakeClock) -> None:
    t = SiteTracker(SPEC, clock)
    assert t.status("new") is None
    assert t.triggers({"old": 10}) == []
    assert t.triggers({"old": 60}) == [
        Trigger("initial", None, "no model yet and 60 records buffered")
    ]
    t.set_model_sites(["old"])
    t.observe(["old", "new", "new"], _flags(3))
    assert (t.status("old"), t.status("new")) == ("active", "warming")
    assert t.output_status("new") == "warming"
    assert t.triggers({"old": 500, "new": 99}) == []
    assert [x.kind for x in t.triggers({"new": 100})] == ["new_site"]
    assert t.set_model_sites(["old", "new"]) == ["new"]
    assert t.status("new") == "active"
    assert t.triggers({"new": 100}) == []
    clock.advance(1800)
    t.observe(["old"], _flags(1))
    clock.advance(1800)
    assert t.retire_idle() == ["new"]
    assert t.counts() == {"warming": 0, "active": 1, "retired": 1}
    assert t.retire_idle() == []
    t.observe(["new"], _flags(1))
    assert t.status("new") == "active"


def test_rollback_to_a_model_without_the_site_makes_it_warming(clock: FakeClock) -> None:
    t = SiteTracker(SPEC, clock)
    t.set_model_sites(["a", "b"])
    t.observe(["a", "b"], _flags(2))
    t.set_model_sites(["a"])
    assert t.status("b") == "warming"


def test_drift_trigger_on_anomaly_rate(clock: FakeClock) -> None:
    t = SiteTracker(SPEC, clock)
    t.set_model_sites(["a", "b"])
    # 200-record windows; the limit is 5 × 1% = 5%.
    for _ in range(4):
        t.observe(["a"] * 50, _flags(50, 2))  # 4%: fine
        t.observe(["b"] * 50, _flags(50, 5))  # 10%: drift
    kinds = [(x.kind, x.site) for x in t.triggers({})]
    assert kinds == [("drift", "b")]
    t.clear_drift()
    assert t.triggers({}) == []


def test_warming_sites_never_count_for_drift(clock: FakeClock) -> None:
    t = SiteTracker(SPEC, clock)
    t.set_model_sites(["a"])
    t.observe(["w"] * 400, _flags(400, 400))
    assert t.triggers({}) == []


def test_export_restore(clock: FakeClock) -> None:
    t = SiteTracker(SPEC, clock)
    t.set_model_sites(["a"])
    t.observe(["a", "w"], _flags(2))
    clock.advance(4000)
    t.retire_idle()
    t2 = SiteTracker(SPEC, clock)
    t2.set_model_sites(["a", "w"])
    t2.restore(t.export())
    assert t2.counts() == {"warming": 0, "active": 0, "retired": 2}
    t2.restore({"sites": {"bad": {"first_seen": "x"}}})
    assert t2.status("bad") is None
