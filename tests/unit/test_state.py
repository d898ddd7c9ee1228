from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from streamvae.buffer import BufferSpec, TrainingBuffer
from streamvae.state import MANIFEST, load_buffer, load_json, save_buffer, save_json

FEATURES = ("a", "b", "c")


def _filled(rng: np.random.Generator) -> TrainingBuffer:
    buf = TrainingBuffer(BufferSpec(dim=3), rng)
    values = rng.normal(size=(500, 3)).astype(np.float32)
    sites = [f"site-{i % 4}" for i in range(500)]
    buf.offer(sites, values, np.arange(500.0), np.ones(500, dtype=bool))
    return buf


def test_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    buf = _filled(rng)
    save_buffer(tmp_path, buf.export(), FEATURES)
    state = load_buffer(tmp_path, FEATURES)
    assert state is not None
    back = TrainingBuffer.from_state(state, buf.spec, rng)
    assert back.counts() == buf.counts()
    assert np.array_equal(back.snapshot("all").values, buf.snapshot("all").values)
    assert np.array_equal(back.holdout().ts, buf.holdout().ts)
    # A second save replaces the data file; only one remains.
    buf.offer(["site-9"], np.ones((1, 3), np.float32), np.zeros(1), np.ones(1, bool))
    save_buffer(tmp_path, buf.export(), FEATURES)
    assert len(list(tmp_path.glob("buffer-*.npz"))) == 1
    assert load_buffer(tmp_path, FEATURES) is not None


def test_missing_buffer_is_none(tmp_path: Path) -> None:
    assert load_buffer(tmp_path / "nothing", FEATURES) is None


def _corrupt_data(d: Path) -> None:
    data = next(d.glob("buffer-*.npz"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))


def _corrupt_manifest(d: Path) -> None:
    (d / MANIFEST).write_text("{not json")


def _truncate_data(d: Path) -> None:
    data = next(d.glob("buffer-*.npz"))
    data.write_bytes(data.read_bytes()[:100])


def _delete_data(d: Path) -> None:
    next(d.glob("buffer-*.npz")).unlink()


def _wrong_format(d: Path) -> None:
    m = json.loads((d / MANIFEST).read_text())
    m["format_version"] = 99
    (d / MANIFEST).write_text(json.dumps(m))


@pytest.mark.parametrize(
    "damage", [_corrupt_data, _corrupt_manifest, _truncate_data, _delete_data, _wrong_format]
)
def test_corrupt_state_is_discarded_with_a_log_line(
    tmp_path: Path,
    rng: np.random.Generator,
    caplog: pytest.LogCaptureFixture,
    damage: object,
) -> None:
    save_buffer(tmp_path, _filled(rng).export(), FEATURES)
    damage(tmp_path)  # type: ignore[operator]
    with caplog.at_level(logging.WARNING, logger="streamvae.state"):
        assert load_buffer(tmp_path, FEATURES) is None
    assert "discarding persisted training buffer" in caplog.text
    assert not (tmp_path / MANIFEST).exists()  # moved aside, not read again
    assert list(tmp_path.glob("*.discarded"))
    assert load_buffer(tmp_path, FEATURES) is None


def test_other_features_are_discarded(tmp_path: Path, rng: np.random.Generator) -> None:
    save_buffer(tmp_path, _filled(rng).export(), FEATURES)
    assert load_buffer(tmp_path, ("a", "b", "x")) is None


def test_json_state(tmp_path: Path) -> None:
    save_json(tmp_path / "s.json", {"sites": {"a": 1}})
    assert load_json(tmp_path / "s.json") == {"sites": {"a": 1}}
    (tmp_path / "s.json").write_text("[1, 2")
    assert load_json(tmp_path / "s.json") is None
    assert load_json(tmp_path / "missing.json") is None


def test_a_reader_never_moves_the_owners_files(tmp_path: Path, rng: np.random.Generator) -> None:
    save_buffer(tmp_path, _filled(rng).export(), FEATURES)
    _corrupt_data(tmp_path)
    assert load_buffer(tmp_path, FEATURES, owner=False) is None
    assert (tmp_path / MANIFEST).exists()
    assert not list(tmp_path.glob("*.discarded"))
