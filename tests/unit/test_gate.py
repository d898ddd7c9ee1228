from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pytest

from streamvae.gate import GateReason, GateSpec, SiteEval, decide, evaluate, wilson_lower

SPEC = GateSpec(target_fpr=0.01, fpr_tolerance=0.02, loglik_tolerance=0.5, min_site_records=30)
GOOD = SiteEval(n=200, loglik=-10.0, false_positives=2, known=True)


def ev(n: int = 200, ll: float = -10.0, fp: int = 2, known: bool = True) -> SiteEval:
    return SiteEval(n=n, loglik=ll, false_positives=fp, known=known)


CASES: list[tuple[str, dict[str, Any], GateReason]] = [
    ("accept", {}, GateReason.OK),
    ("first model", {"current": None}, GateReason.OK),
    ("nan weights", {"weights_finite": False}, GateReason.NON_FINITE_WEIGHTS),
    ("nan loss", {"report": {"final_loss": math.nan}}, GateReason.UNHEALTHY_TRAINING),
    ("spikes", {"report": {"unresolved_spikes": 3}}, GateReason.UNHEALTHY_TRAINING),
    ("no data", {"candidate": {}}, GateReason.NO_DATA),
    ("nan loglik", {"candidate": {"a": ev(ll=math.nan)}}, GateReason.NON_FINITE_SCORES),
    ("poisoned", {"current": {"a": ev(fp=40)}}, GateReason.DATA_ANOMALOUS),
    ("regressed", {"candidate": {"a": ev(ll=-11.0)}}, GateReason.LOGLIK_REGRESSED),
    ("within tol", {"candidate": {"a": ev(ll=-10.4)}}, GateReason.OK),
    (
        "too few to judge",
        {"candidate": {"a": ev(n=20, ll=-20.0, fp=0)}, "current": {"a": ev(n=20)}},
        GateReason.OK,
    ),
    ("pooled fpr", {"candidate": {"a": ev(fp=10)}}, GateReason.FPR_TOO_HIGH),
    (
        "site fpr",
        {
            "candidate": {"a": ev(n=2000, fp=0), "b": ev(n=200, fp=20, known=False)},
            "current": {"a": ev(n=2000, fp=0)},
        },
        GateReason.FPR_TOO_HIGH,
    ),
    (
        "new site judged on own fpr",
        {
            "candidate": {"a": GOOD, "new": ev(ll=-50.0, fp=1)},
            "current": {"a": GOOD, "new": ev(ll=-5.0, fp=50, known=False)},
        },
        GateReason.OK,
    ),
]


@pytest.mark.parametrize(("name", "override", "reason"), CASES, ids=[c[0] for c in CASES])
def test_gate_decisions(name: str, override: dict[str, Any], reason: GateReason) -> None:
    args: dict[str, Any] = {
        "candidate": {"a": GOOD},
        "current": {"a": GOOD},
        "weights_finite": True,
        "report": {"final_loss": 1.0, "unresolved_spikes": 0},
    }
    args.update(override)
    decision = decide(
        args["candidate"],
        args["current"],
        weights_finite=args["weights_finite"],
        report=args["report"],
        spec=SPEC,
    )
    assert decision.reason == reason, decision.detail
    assert decision.accept is (reason == GateReason.OK)


def test_wilson_lower_bound() -> None:
    assert wilson_lower(0, 0, 2.33) == 0.0
    assert wilson_lower(0, 100, 2.33) == 0.0
    assert 0.0 < wilson_lower(5, 100, 2.33) < 0.05
    assert wilson_lower(500, 1000, 2.33) == pytest.approx(0.463, abs=0.01)


class _Fake:
    sites: ClassVar[dict[str, int]] = {"a": 1}

    class _Scored:
        def __init__(self, n: int) -> None:
            self.scores = np.arange(n, dtype=np.float64)
            self.thresholds = np.full(n, n - 3.5)

    def loglik(self, values: np.ndarray, sites: object) -> np.ndarray:
        return -np.ones(len(values))

    def score(self, values: np.ndarray, sites: object) -> Any:
        return self._Scored(len(values))


def test_evaluate_summarises_per_site() -> None:
    values = np.zeros((10, 2), dtype=np.float32)
    out = evaluate(_Fake(), values, ["a"] * 6 + ["b"] * 4)
    assert out["a"] == SiteEval(n=6, loglik=-1.0, false_positives=0, known=True)
    assert out["b"] == SiteEval(n=4, loglik=-1.0, false_positives=3, known=False)
