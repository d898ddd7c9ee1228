"""The alert rules only use metrics that the code exports, and every alert is tested."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from streamvae.metrics import ServingMetrics, TrainingMetrics

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "streamvae-rules.yml"
RULE_TESTS = sorted((REPO / "deploy" / "prometheus" / "tests").glob("*.test.yml"))
NAME = re.compile(r"\bstreamvae_[a-zA-Z0-9_]+")

FULL_REPORT = {
    "summary": {
        "loss": 1.0,
        "reconstruction": 0.8,
        "kl": 0.2,
        "expected_t": 0.05,
        "spikes": 0,
        "unresolved_spikes": 0,
        "nonfinite_batches": 0,
        "grad_norm": 1.0,
        "discriminator_accuracy": 0.7,
        "discriminator_loss": 0.6,
        "active_units": 5,
        "nu_min": 2.5,
        "precision_min": 0.1,
    }
}


def _rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def _exported_sample_names() -> set[str]:
    registry = CollectorRegistry()
    serving = ServingMetrics(registry)
    serving.batch(
        consumed=2,
        scored=2,
        dead_letters={"bad_type": 1},
        scoring_seconds=0.01,
        lags_s=[0.1, 0.2],
        sites=["a", "b"],
        anomalies=[True, False],
        severities=[1.5, 0.2],
        statuses=["active", "warming"],
    )
    serving.set_consumer_lag({("sensors", 0): 1})
    serving.set_model("v1", 1.0)
    serving.model_rejected("artifact_invalid")
    serving.set_site_statuses({"active": 1})
    training = TrainingMetrics(registry)
    training.retrain(outcome="promoted", reason="", duration_s=1.0, report=FULL_REPORT)
    training.retrain(outcome="failed", reason="TrainingError", duration_s=1.0, report=None)
    return {s.name for family in registry.collect() for s in family.samples}


def test_every_metric_in_the_rules_is_exported() -> None:
    exported = _exported_sample_names()
    used = {name for rule in _rules() for name in NAME.findall(rule["expr"])}
    assert used, "no streamvae_ metric found in the rules"
    assert used - exported == set()


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_alert_has_a_promtool_test_and_a_runbook() -> None:
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    tested: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            tested |= {t["alertname"] for t in case.get("alert_rule_test", []) if t["exp_alerts"]}
    assert alerts - tested == set(), "alerts without a firing promtool test case"
    headings = [
        line.lstrip("#").strip()
        for line in (REPO / "docs" / "operations.md").read_text().splitlines()
        if line.startswith("#")
    ]
    anchors = {_slug(h) for h in headings}
    for rule in _rules():
        if "alert" in rule:
            assert any(rule["alert"] in h for h in headings), f"no runbook for {rule['alert']}"
            assert rule["annotations"]["runbook_url"].split("#", 1)[1] in anchors


def test_every_recording_rule_is_tested() -> None:
    """Directly in a promtool test, or through an alert that is."""
    tests = "\n".join(path.read_text() for path in RULE_TESTS)
    alert_exprs = "\n".join(rule["expr"] for rule in _rules() if "alert" in rule)
    untested = {
        rule["record"]
        for rule in _rules()
        if "record" in rule and rule["record"] not in tests and rule["record"] not in alert_exprs
    }
    assert untested == set()


def test_every_exported_metric_is_documented() -> None:
    docs = (REPO / "docs" / "operations.md").read_text()
    registry = CollectorRegistry()
    ServingMetrics(registry)
    TrainingMetrics(registry)
    names = {family.name for family in registry.collect()}
    names |= {
        family.name
        for collector in list(registry._collector_to_names)  # describe() of custom collectors
        for family in getattr(collector, "describe", lambda: [])()
    }
    missing = {name for name in names if f"`{name}" not in docs}
    assert missing == set()
