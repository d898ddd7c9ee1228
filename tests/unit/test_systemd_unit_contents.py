"""What the systemd units promise, read as data (no systemd needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamvae.config import Settings

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"


def _directives(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def _seconds(value: str) -> float:
    units = {"h": 3600.0, "min": 60.0, "s": 1.0}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value.removesuffix(suffix)) * factor
    return float(value)


def test_stop_timeout_exceeds_the_shutdown_deadline() -> None:
    unit = _directives(UNITS / "streamvae.service")
    deadline = Settings().service.shutdown_timeout_s
    assert _seconds(unit["TimeoutStopSec"][0]) >= deadline + 10
    env_example = (UNITS / "streamvae.env.example").read_text()
    assert "STREAMVAE_SERVICE__SHUTDOWN_TIMEOUT_S=20" in env_example


@pytest.mark.parametrize("name", ["streamvae.service", "streamvae-retrain.service"])
def test_hardening(name: str) -> None:
    unit = _directives(UNITS / name)
    expected = {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "StateDirectory": "streamvae",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet": "",
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], key
    # both units run as the same dynamic user so they share /var/lib/streamvae
    assert unit["User"] == ["streamvae"]


def test_daemon_restarts_on_failure_but_not_on_bad_config() -> None:
    unit = _directives(UNITS / "streamvae.service")
    assert unit["Type"] in (["exec"], ["notify"])
    assert unit["Restart"] == ["on-failure"]
    assert unit["RestartPreventExitStatus"] == ["2"]


def test_env_example_has_no_secret_values() -> None:
    for raw in (UNITS / "streamvae.env.example").read_text().splitlines():
        assert not raw.lstrip("#").startswith("STREAMVAE_KAFKA__SASL_PASSWORD="), raw
    dropin = _directives(UNITS / "streamvae.service.d" / "credentials.conf.example")
    assert dropin["LoadCredential"][0].startswith("kafka-sasl-password:")
    assert dropin["Environment"] == ["STREAMVAE_KAFKA__SASL_PASSWORD_FILE=%d/kafka-sasl-password"]


def test_env_example_keys_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for raw in (UNITS / "streamvae.env.example").read_text().splitlines():
        line = raw.lstrip("#")
        if line.startswith("STREAMVAE_") and "=" in line:
            key, value = line.split("=", 1)
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("STREAMVAE_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    Settings()  # raises on an unknown key or a bad value
