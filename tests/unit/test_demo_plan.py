from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from streamvae.cli import build_parser
from streamvae.demo import DemoPlan
from streamvae.demo_live import live_settings
from streamvae.simulator import sensor_names


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["demo", *argv])


@pytest.mark.parametrize(
    "argv",
    [
        (),
        ("--duration", "20", "--rate", "60", "--sites", "2"),
        ("--duration", "600", "--sites", "9"),
    ],
)
def test_the_story_fits_in_the_duration(argv: tuple[str, ...]) -> None:
    plan = DemoPlan.from_args(_args(*argv))
    joins = plan.new_site_at * plan.duration_s
    per_site = plan.rate / plan.sites
    onboarded = joins + plan.onboard_records / per_site
    assert onboarded < 0.75 * plan.duration_s  # time left to show the site active
    spec = plan.sim_spec(start_ts=0.0)
    assert spec.anomalies_after_s == plan.history_s
    assert spec.new_site_at_s is not None
    assert spec.new_site_at_s > plan.history_s


def test_live_settings_are_a_valid_daemon_config(tmp_path: Path) -> None:
    plan = DemoPlan.from_args(_args("--duration", "20", "--rate", "60", "--sites", "2"))
    features = sensor_names(plan.sensors)
    settings = live_settings(plan, tmp_path, "127.0.0.1:9", features)
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9"
    assert tuple(settings.model.features) == features
    assert settings.retraining.new_site_min_records == plan.onboard_records
    assert settings.store.path == str(tmp_path / "models")
    assert settings.retraining.state_dir == str(tmp_path / "state")
    assert settings.metrics.port == 0
