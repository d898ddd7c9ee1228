"""Configuration: a TOML file overridden by `STREAMVAE_…` environment variables.

Precedence (highest first): environment (`STREAMVAE_KAFKA__GROUP_ID=…`, nested
with `__`; a whole section as JSON in `STREAMVAE_KAFKA='{…}'`), the TOML file,
the defaults below. Unknown keys are rejected in both the file and the
environment: every `STREAMVAE_…` variable must name a setting. Secrets are
`SecretStr` and print masked; a secret may also be read from a file
(`sasl_password_file`), which is what Kubernetes Secrets and systemd
credentials provide.

This is the only module that imports pydantic. The settings object stops at the
composition root (`app`, `cli`); everything below takes plain arguments.
The key names are a public contract: `config.example.toml` documents each one.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from streamvae.errors import ConfigError

ENV_PREFIX = "STREAMVAE_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    bootstrap_servers: str = Field(
        default="localhost:9092",
        description='Comma-separated host:port list, or "embedded" to start the bundled broker.',
    )
    group_id: str = Field(default="streamvae", min_length=1)
    input_topic: str = Field(default="sensors", min_length=1)
    output_topic: str = Field(default="sensor-scores", min_length=1)
    dead_letter_topic: str = Field(default="sensor-dead-letters", min_length=1)
    client_id: str = "streamvae"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = ""
    sasl_username: str = ""
    sasl_password: SecretStr = SecretStr("")
    sasl_password_file: str = ""
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    request_timeout_ms: int = Field(default=30_000, gt=0)
    session_timeout_ms: int = Field(default=30_000, gt=0)
    max_poll_interval_ms: int = Field(default=300_000, gt=0)
    fetch_max_bytes: int = Field(default=52_428_800, gt=0)
    max_partition_fetch_bytes: int = Field(default=1_048_576, gt=0)
    fetch_max_wait_ms: int = Field(
        default=50,
        gt=0,
        description="Longest a fetch waits at the broker for data (latency when the input "
        "is quiet; brokers that do not answer early, like Tansu, hold every fetch this long).",
    )
    producer_linger_ms: int = Field(
        # 5, not 0: 0 cost the broker 22 % more CPU per record for ~5 ms of p50 (Kafka 4.0
        # moved its own default to 5 too); docs/performance.md, "Tried and dropped"
        default=5,
        ge=0,
        description="Longest an output batch waits to fill before it is sent.",
    )
    producer_max_batch_bytes: int = Field(default=1_048_576, gt=0)
    producer_compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = "none"
    commit_interval_ms: int = Field(
        default=100,
        ge=0,
        description="Least time between two offset commits (each still only after the "
        "outputs of every record up to it were acknowledged); 0 = after every batch.",
    )
    reconnect_backoff_initial_s: float = Field(default=0.5, gt=0)
    reconnect_backoff_max_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise ValueError("sasl_mechanism is required when security_protocol is SASL_*")
        return self

    def password(self) -> str:
        """The SASL password: from `sasl_password_file` if set, else `sasl_password`."""
        if self.sasl_password_file:
            return Path(self.sasl_password_file).read_text(encoding="utf-8").strip()
        return self.sasl_password.get_secret_value()


class InputSettings(_Section):
    unknown_feature: Literal["reject", "ignore"] = "reject"
    max_message_bytes: int = Field(default=1_048_576, gt=0)
    max_site_length: int = Field(default=128, gt=0)


class OutputSettings(_Section):
    top_contributions: int = Field(
        default=0, ge=0, description="Per-sensor contributions per score record; 0 = all sensors."
    )


class BatchingSettings(_Section):
    max_records: int = Field(default=1024, gt=0)
    max_wait_ms: int = Field(default=20, ge=0)
    eager: bool = Field(
        default=True,
        description="An idle scorer takes the open batch at once instead of waiting for "
        "max_wait_ms (batches still grow while it is busy).",
    )
    scorers: int = Field(
        default=2,
        ge=1,
        le=8,
        description="Batches scored at once (one worker thread each); outputs and commits "
        "stay in batch order.",
    )
    max_in_flight_records: int = Field(
        default=20_000,
        gt=0,
        description="Fetching pauses when this many records are fetched and their "
        "outputs not yet acknowledged (it resumes at half). Bounds memory (about 0.9 KB "
        "per record at 38 sensors); acknowledged records wait for their commit outside it.",
    )


class ModelSettings(_Section):
    features: list[str] = Field(
        default_factory=list,
        description="Sensor names in order; empty = taken from the training data.",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(
        default=1,
        ge=0,
        description="Torch intra-op threads of the daemon (0 = torch's default: one per core).",
    )
    decoder: Literal["student_t", "gaussian"] = "student_t"
    prior: Literal["optimal", "standard"] = "optimal"
    conditional: bool = True
    latent_dim: int = Field(default=8, gt=0)
    hidden: list[int] = Field(default_factory=lambda: [128, 128])
    discriminator_hidden: list[int] = Field(default_factory=lambda: [64, 64])
    site_embedding_dim: int = Field(default=8, gt=0)
    site_capacity: int = Field(
        default=256, gt=1, description="Reserved site slots; new sites need no shape change."
    )
    importance_samples: int = Field(default=1, gt=0, description="K for scoring.")
    loglik_samples: int = Field(
        default=32, gt=0, description="K for held-out log-likelihood (retraining gate)."
    )
    scale_floor: float = Field(default=0.01, gt=0)
    site_scaling: bool = Field(
        default=False,
        description="Robust scaler statistics per site (pooled for sites with few records).",
    )

    @model_validator(mode="after")
    def _hidden_positive(self) -> ModelSettings:
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise ValueError("hidden must be a non-empty list of positive layer sizes")
        if not self.discriminator_hidden or any(h <= 0 for h in self.discriminator_hidden):
            raise ValueError("discriminator_hidden must be a non-empty list of positive sizes")
        return self


class TrainingSettings(_Section):
    seed: int = 0
    max_epochs: int = Field(default=60, gt=0)
    batch_size: int = Field(default=256, gt=0)
    learning_rate: float = Field(default=1e-3, gt=0)
    discriminator_learning_rate: float = Field(default=1e-3, gt=0)
    vae_epochs_per_cycle: int = Field(default=1, gt=0)
    discriminator_epochs_per_cycle: int = Field(default=10, gt=0)
    kl_warmup_epochs: int = Field(default=5, ge=0)
    patience: int = Field(default=8, gt=0)
    validation_fraction: float = Field(default=0.1, gt=0, lt=1)
    grad_clip: float = Field(default=10.0, gt=0)
    site_dropout: float = Field(
        default=0.1, ge=0, lt=1, description="Share of records trained on the pooled slot."
    )
    spike_sd: float = Field(default=5.0, gt=0)


class RetrainingSettings(_Section):
    enabled: bool = True
    interval_s: float = Field(default=3600.0, gt=0)
    mode: Literal["thread", "process"] = "thread"
    new_site_min_records: int = Field(default=300, gt=0)
    per_site_cap: int = Field(default=5000, gt=0)
    total_cap: int = Field(default=200_000, gt=0)
    min_total_records: int = Field(default=1000, gt=0)
    drift_anomaly_rate_factor: float = Field(default=5.0, gt=1)
    gate_loglik_tolerance: float = Field(default=0.5, ge=0)
    gate_fpr_tolerance: float = Field(default=0.02, ge=0)
    site_retire_after_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    state_dir: str = Field(default="/var/lib/streamvae/state", min_length=1)
    trigger_cooldown_s: float = Field(
        default=300.0, ge=0, description="Least time between two triggered retrainings."
    )
    check_interval_s: float = Field(
        default=5.0, gt=0, description="How often triggers are checked."
    )
    persist_interval_s: float = Field(
        default=300.0, gt=0, description="How often the buffer is written to state_dir."
    )
    holdout_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Share of buffered records held out for the gate."
    )
    recency_factor: float = Field(
        default=4.0, ge=1, description="Per-site sample spans about factor × per_site_cap records."
    )
    drift_window_records: int = Field(
        default=1000, gt=0, description="Records per site per drift (anomaly-rate) window."
    )


class ThresholdSettings(_Section):
    false_positive_rate: float = Field(default=0.01, gt=0, lt=0.5)
    min_site_records: int = Field(default=200, gt=0)
    pot: bool = True


class MetricsSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)
    max_site_labels: int = Field(default=500, gt=0)


class StoreSettings(_Section):
    path: str = Field(default="/var/lib/streamvae/models", min_length=1)
    poll_interval_s: float = Field(default=5.0, gt=0)


class ServiceSettings(_Section):
    shutdown_timeout_s: float = Field(default=20.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    wait_for_model: bool = Field(
        default=True,
        description="With no model: true = do not consume until one exists; "
        "false = buffer records for the first training.",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Processes that consume and score (Kafka in and out only): this one and "
        "workers - 1 more in the same consumer group. The Python event loop bounds one "
        "process (~40k records/s on one core): set it to the cores to use, at most the "
        "input topic's partitions.",
    )


class Settings(BaseSettings):
    """The whole configuration. Build it with `load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    kafka: KafkaSettings = KafkaSettings()
    input: InputSettings = InputSettings()
    output: OutputSettings = OutputSettings()
    batching: BatchingSettings = BatchingSettings()
    model: ModelSettings = ModelSettings()
    training: TrainingSettings = TrainingSettings()
    retraining: RetrainingSettings = RetrainingSettings()
    threshold: ThresholdSettings = ThresholdSettings()
    metrics: MetricsSettings = MetricsSettings()
    store: StoreSettings = StoreSettings()
    service: ServiceSettings = ServiceSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first, so it overrides the TOML data passed as init kwargs.
        return (env_settings, init_settings)


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def format_validation_error(error: ValidationError) -> str:
    """One line per problem, each naming the field as `section.key`."""
    lines = []
    for item in error.errors():
        lines.append(f"{_field_path(item['loc'])}: {item['msg']}")
    return "; ".join(lines)


def _check_environment(environ: Mapping[str, str]) -> None:
    """pydantic-settings ignores `STREAMVAE_…` variables that match no field; a typo
    there would silently not apply, so refuse them (naming the variable)."""
    sections = Settings.model_fields
    for variable in environ:
        if not variable.upper().startswith(ENV_PREFIX):
            continue
        section, nested, key = variable[len(ENV_PREFIX) :].lower().partition("__")
        field = sections.get(section)
        if field is None:
            raise ConfigError(f"{variable}: unknown section {section!r} in environment")
        section_type = field.annotation
        if nested and not (
            isinstance(section_type, type)
            and issubclass(section_type, BaseModel)
            and key in section_type.model_fields
        ):
            raise ConfigError(f"{variable}: unknown key {section}.{key} in environment")


def load_settings(path: str | Path | None = None, **overrides: Mapping[str, Any]) -> Settings:
    """Read the TOML file (if any), apply `STREAMVAE_…` env overrides, validate.

    `overrides` are whole sections given as mappings (used by tests and the demo);
    they sit at the TOML file's level of precedence.
    Raises `ConfigError` whose message names the offending field.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    for section, values in overrides.items():
        merged = dict(data.get(section, {}))
        merged.update(values)
        data[section] = merged
    _check_environment(os.environ)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from exc


def masked_dict(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, secrets masked (for printing/logging)."""
    out: dict[str, Any] = settings.model_dump(mode="json")
    kafka = out["kafka"]
    kafka["sasl_password"] = "**********" if settings.kafka.sasl_password.get_secret_value() else ""
    return out


def settings_json(settings: Settings) -> bytes:
    """The effective configuration as JSON, secrets included: what a serving worker
    process (streamvae.workers) reads from its stdin, so that it runs with exactly the
    parent's settings (a file, the environment and overrides already merged) without
    secrets on a command line or in the environment. Never log it."""
    out = settings.model_dump(mode="json")
    out["kafka"]["sasl_password"] = settings.kafka.sasl_password.get_secret_value()
    return json.dumps(out).encode()


def settings_from_json(data: bytes) -> Settings:
    """`settings_json`'s inverse; ConfigError naming the field if it does not validate."""
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise ConfigError(f"worker settings: invalid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError("worker settings: expected a JSON object")
    try:
        return Settings(**raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from exc
