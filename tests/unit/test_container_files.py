"""Dockerfile and compose file: not built or run here; their wiring is checked as data."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamvae.config import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yml"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", text)
    assert match, text
    return float(match.group(1)) * (60 if match.group(2) == "m" else 1)


def test_dockerfile() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in text
    assert "ARG TORCH_VERSION=2.13.0" in text
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert '"torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"' in text
    users = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
    assert users
    assert not users[-1].startswith(("0", "root"))
    assert 'ENTRYPOINT ["streamvae"]' in text
    assert "nvidia/cuda" in text  # the GPU base is documented
    # everything copied from the build context exists and passes .dockerignore
    ignore = (REPO / ".dockerignore").read_text().split()
    for line in re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.MULTILINE):
        for source in line.split():
            assert (REPO / source).exists(), source
            assert f"!{source}" in ignore or f"!{source}/" in ignore, source


def test_compose_references_resolve() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"kafka", "streamvae", "prometheus"} <= set(services)
    volumes = set(compose.get("volumes", {}))
    for name, service in services.items():
        for dep in service.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown {dep}"
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in volumes, f"{name}: undeclared volume {source}"
        build = service.get("build")
        if build:
            context = DEPLOY / build["context"]
            assert (context / build["dockerfile"]).exists()


def test_compose_streamvae_settings_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    service = _compose()["services"]["streamvae"]
    env = {k: str(v) for k, v in service["environment"].items()}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # unknown keys or bad values raise
    assert _seconds(service["stop_grace_period"]) > settings.service.shutdown_timeout_s
    assert service["read_only"] is True
    assert service["user"].split(":")[0] != "0"
    assert f"{settings.metrics.port}:{settings.metrics.port}" in service["ports"]
    # the broker address is the kafka service's internal advertised listener
    kafka_env = _compose()["services"]["kafka"]["environment"]
    assert (
        f"INTERNAL://{settings.kafka.bootstrap_servers}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    )
    # the init job creates the topics streamvae uses
    init = "\n".join(_compose()["services"]["kafka-init"]["command"])
    for topic in (settings.kafka.input_topic, settings.kafka.output_topic):
        assert topic in init
    # Prometheus scrapes that service and port, under the job name the rules expect
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-compose.yml").read_text())
    (job,) = prom["scrape_configs"]
    assert job["job_name"] == "streamvae"
    assert job["static_configs"][0]["targets"] == [f"streamvae:{settings.metrics.port}"]
    for rule_file in prom["rule_files"]:
        assert (DEPLOY / "prometheus" / rule_file).exists()
