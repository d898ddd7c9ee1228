from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from streamvae.config import Settings, load_settings, masked_dict
from streamvae.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "config.example.toml"
SECRET = "hunter2-very-secret"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("STREAMVAE_"):
            monkeypatch.delenv(name)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --- the example file ------------------------------------------------------------------


def test_example_equals_defaults() -> None:
    assert load_settings(EXAMPLE) == Settings()


def test_example_documents_every_key() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert list(data) == list(Settings.model_fields)
    for section, field in Settings.model_fields.items():
        section_type = field.annotation
        assert isinstance(section_type, type)
        assert list(data[section]) == list(section_type.model_fields), section
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if " = " in line and not line.startswith("#"):
            assert lines[i - 1].startswith("# "), f"no comment above: {line}"


def test_public_key_names() -> None:
    """These names are a public contract (scripts and users depend on them)."""
    settings = Settings()
    for section, key in [
        ("kafka", "bootstrap_servers"),
        ("kafka", "group_id"),
        ("kafka", "input_topic"),
        ("kafka", "output_topic"),
        ("kafka", "dead_letter_topic"),
        ("batching", "max_records"),
        ("batching", "max_wait_ms"),
        ("model", "features"),
        ("model", "device"),
        ("model", "decoder"),
        ("model", "prior"),
        ("model", "conditional"),
        ("threshold", "false_positive_rate"),
        ("metrics", "host"),
        ("metrics", "port"),
        ("store", "path"),
    ]:
        assert hasattr(getattr(settings, section), key), f"{section}.{key}"


# --- precedence ----------------------------------------------------------------------


def test_file_then_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _toml(
        tmp_path,
        '[kafka]\ngroup_id = "from-file"\nclient_id = "file-client"\n'
        "[batching]\nmax_records = 10\n",
    )
    assert load_settings(path).kafka.group_id == "from-file"
    monkeypatch.setenv("STREAMVAE_KAFKA__GROUP_ID", "from-env")
    monkeypatch.setenv("streamvae_batching__max_wait_ms", "7")  # case-insensitive
    settings = load_settings(path)
    assert settings.kafka.group_id == "from-env"  # env beats the file
    assert settings.kafka.client_id == "file-client"  # the rest of the section stays
    assert settings.batching.max_records == 10
    assert settings.batching.max_wait_ms == 7
    assert settings.kafka.input_topic == "sensors"  # default


def test_env_lists_and_sections_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMVAE_MODEL__HIDDEN", "[32, 16]")
    monkeypatch.setenv("STREAMVAE_MODEL__FEATURES", '["temp", "rpm"]')
    monkeypatch.setenv("STREAMVAE_METRICS", '{"port": 0}')
    settings = load_settings()
    assert settings.model.hidden == [32, 16]
    assert settings.model.features == ["temp", "rpm"]
    assert settings.metrics.port == 0


def test_overrides_sit_at_file_level(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _toml(tmp_path, '[store]\npath = "/from/file"\n')
    settings = load_settings(path, store={"path": "/override"}, kafka={"group_id": "g"})
    assert settings.store.path == "/override"
    assert settings.kafka.group_id == "g"
    monkeypatch.setenv("STREAMVAE_STORE__PATH", "/from/env")
    assert load_settings(path, store={"path": "/override"}).store.path == "/from/env"


# --- errors name the field -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[kafka]\nbogus = 1\n", "kafka.bogus"),
        ("[bogus]\nx = 1\n", "bogus"),
        ("[kafka]\ngroupid = 'typo'\n", "kafka.groupid"),
        ('[batching]\nmax_records = "many"\n', "batching.max_records"),
        ("[batching]\nmax_records = 0\n", "batching.max_records"),
        ("[threshold]\nfalse_positive_rate = 0.7\n", "threshold.false_positive_rate"),
        ('[model]\ndevice = "tpu"\n', "model.device"),
        ("[model]\nhidden = []\n", "model"),
        ("[model]\nconditional = 3\n", "model.conditional"),
        ('[kafka]\nsecurity_protocol = "SASL_SSL"\n', "kafka"),
        ("[metrics]\nport = 70000\n", "metrics.port"),
        ("kafka = 5\n", "kafka"),
    ],
)
def test_bad_file_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_toml(tmp_path, text))
    assert str(info.value).startswith(field), str(info.value)


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("STREAMVAE_KAFKA__BOGUS", "1", "STREAMVAE_KAFKA__BOGUS"),
        ("STREAMVAE_BOGUS", "1", "STREAMVAE_BOGUS"),
        ("STREAMVAE_KAFKA_GROUP_ID", "g", "STREAMVAE_KAFKA_GROUP_ID"),  # single underscore
        ("STREAMVAE_MODEL__HIDDEN__0", "3", "STREAMVAE_MODEL__HIDDEN__0"),
        ("STREAMVAE_BATCHING__MAX_RECORDS", "many", "batching.max_records"),
        ("STREAMVAE_METRICS__PORT", "-1", "metrics.port"),
    ],
)
def test_bad_env_names_the_field(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, field: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=field):
        load_settings()


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(_toml(tmp_path, "[kafka\n"))


# --- secrets ---------------------------------------------------------------------------


def test_secret_is_masked(tmp_path: Path) -> None:
    settings = load_settings(_toml(tmp_path, f'[kafka]\nsasl_password = "{SECRET}"\n'))
    assert settings.kafka.password() == SECRET
    for text in (
        repr(settings),
        str(settings),
        repr(settings.kafka),
        json.dumps(masked_dict(settings)),
    ):
        assert SECRET not in text
    assert masked_dict(settings)["kafka"]["sasl_password"] == "**********"
    assert masked_dict(Settings())["kafka"]["sasl_password"] == ""


def test_secret_from_env_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMVAE_KAFKA__SASL_PASSWORD", SECRET)
    settings = load_settings()
    assert settings.kafka.password() == SECRET
    assert SECRET not in repr(settings)


def test_password_file_wins(tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(SECRET + "\n", encoding="utf-8")
    text = f'[kafka]\nsasl_password = "other"\nsasl_password_file = "{secret_file}"\n'
    settings = load_settings(_toml(tmp_path, text))
    assert settings.kafka.password() == SECRET
    assert SECRET not in json.dumps(masked_dict(settings))


# --- the command ----------------------------------------------------------------------


def _check_config(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("STREAMVAE_")}
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "streamvae", "check-config", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=child_env,
        timeout=60,
        check=False,
    )


def test_check_config_example_exits_0() -> None:
    out = _check_config(
        "--config", "config.example.toml", env={"STREAMVAE_KAFKA__SASL_PASSWORD": SECRET}
    )
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    assert printed["kafka"]["group_id"] == "streamvae"
    assert printed["kafka"]["sasl_password"] == "**********"
    assert SECRET not in out.stdout + out.stderr


def test_check_config_bad_file_exits_2(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[batching]\nmax_records = -5\n")
    out = _check_config("--config", str(path))
    assert out.returncode == 2
    assert "batching.max_records" in out.stderr
    assert out.stdout == ""
