"""systemd units: `systemd-analyze verify` and the offline security score, on tmp copies."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
INSTALLED_BINARY = "/opt/streamvae/bin/streamvae"


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    """The units with ExecStart pointing at a stub binary (verify needs it to exist),
    and the example drop-ins enabled."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd; make system-deps)")
    stub = tmp_path / "bin" / "streamvae"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    out = tmp_path / "units"
    out.mkdir()
    for unit in UNITS.glob("streamvae*.*"):
        if unit.is_file() and unit.suffix in (".service", ".timer"):
            (out / unit.name).write_text(unit.read_text().replace(INSTALLED_BINARY, str(stub)))
    dropins = out / "streamvae.service.d"
    dropins.mkdir()
    for example in (UNITS / "streamvae.service.d").glob("*.conf.example"):
        shutil.copy(example, dropins / example.name.removesuffix(".example"))
    return out


def _analyze(unit_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SYSTEMD_UNIT_PATH=f"{unit_dir}:", SYSTEMD_LOG_COLOR="0")
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=60, env=env,
        check=False, cwd=unit_dir,
    )  # fmt: skip


def test_units_verify_without_warnings(unit_dir: Path) -> None:
    units = sorted(str(p) for p in unit_dir.iterdir() if p.is_file())
    assert len(units) == 3
    result = _analyze(unit_dir, "verify", "--man=no", *units)
    # verify exits 0 on unknown keys and bad values: any output is a finding.
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_verify_catches_a_bad_directive(unit_dir: Path) -> None:
    """Guards the test above: a typo must show up."""
    unit = unit_dir / "streamvae.service"
    unit.write_text(unit.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    result = _analyze(unit_dir, "verify", "--man=no", str(unit))
    assert "NoNewPrivilege" in result.stderr


@pytest.mark.parametrize("unit", ["streamvae.service", "streamvae-retrain.service"])
def test_security_exposure_is_low(unit_dir: Path, unit: str) -> None:
    result = _analyze(unit_dir, "security", "--offline=true", "--no-pager", str(unit_dir / unit))
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    if match is None:
        pytest.skip(f"this systemd-analyze has no offline security scoring: {result.stderr}")
    assert float(match.group(1)) <= 2.5, result.stdout
