"""ModelStore: round trip, atomic promotion, rollback, reject, lock, tamper detection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamvae.artifacts import ModelStore
from streamvae.detector import Detector
from streamvae.errors import ArtifactError, StoreError, StoreLockedError
from tests.unit.model.conftest import SiteData, tiny_detector


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store")


def test_round_trip_scores_identically(
    store: ModelStore, detector: Detector, site_data: SiteData
) -> None:
    v = store.save(detector)
    assert store.versions() == [v]
    assert store.current() is None
    store.promote(v)
    loaded = store.load()
    x, s = site_data.values[:50], site_data.sites[:50]
    a, b = detector.score(x, s), loaded.score(x, s)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.contributions, b.contributions)
    assert loaded.features == detector.features
    assert dict(loaded.sites) == dict(detector.sites)
    assert dict(loaded.thresholds) == dict(detector.thresholds)
    assert loaded.fallback_threshold == detector.fallback_threshold
    assert loaded.report.to_dict() == detector.report.to_dict()
    assert loaded.scaler == detector.scaler
    meta = json.loads((store.versions_dir / v / "meta.json").read_text())
    assert {"torch", "numpy", "python", "streamvae"} <= set(meta["libraries"])
    assert meta["data_summary"]["n_records"] == len(site_data.sites)


def _copy_as(store: ModelStore, det: Detector, version: str) -> str:
    from dataclasses import replace

    return store.save(replace(det, version=version))


def test_promote_rollback_reject(store: ModelStore, detector: Detector) -> None:
    v1 = _copy_as(store, detector, store.new_version(100.0))
    v2 = _copy_as(store, detector, store.new_version(100.0))
    assert v1 < v2
    assert store.versions() == [v1, v2]
    store.promote(v1)
    store.promote(v2)
    assert store.current() == v2
    assert store.rollback() == v1
    assert store.current() == v1
    with pytest.raises(StoreError):
        store.rollback()
    with pytest.raises(StoreError):
        store.reject(v1, "current")
    store.reject(v2, "gate: loglik worse by 3.0")
    assert store.versions() == [v1]
    assert store.rejected() == {v2: "gate: loglik worse by 3.0"}
    with pytest.raises(StoreError):
        _copy_as(store, detector, v2)


def test_load_without_current(store: ModelStore) -> None:
    with pytest.raises(ArtifactError, match="no current model"):
        store.load()


def test_lock_is_exclusive(store: ModelStore) -> None:
    with store.lock(), pytest.raises(StoreLockedError), ModelStore(store.root).lock():
        pass
    with store.lock():
        pass


def _saved(store: ModelStore, det: Detector) -> Path:
    return store.versions_dir / store.save(det)


def test_tampered_weights_rejected(store: ModelStore, detector: Detector) -> None:
    path = _saved(store, detector) / "weights.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="sha256"):
        store.load(detector.version)


def test_tampered_metadata_rejected(store: ModelStore, detector: Detector) -> None:
    path = _saved(store, detector) / "meta.json"
    meta = json.loads(path.read_text())
    meta["fallback_threshold"] = 1e9
    path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="checksum"):
        store.load(detector.version)


def test_garbage_metadata_rejected(store: ModelStore, detector: Detector) -> None:
    path = _saved(store, detector) / "meta.json"
    path.write_text("{not json")
    with pytest.raises(ArtifactError, match="JSON"):
        store.load(detector.version)


def test_mismatched_shapes_rejected(
    store: ModelStore, detector: Detector, site_data: SiteData
) -> None:
    """Weights of a wider network under metadata of the narrow one (hashes made consistent)."""
    import hashlib

    from streamvae import artifact_format as fmt

    wide = tiny_detector(site_data, version="wide", hidden=(48, 48))
    d_path = _saved(store, detector)
    w_path = _saved(store, wide)
    blob = (w_path / "weights.safetensors").read_bytes()
    (d_path / "weights.safetensors").write_bytes(blob)
    meta = json.loads((d_path / "meta.json").read_text())
    meta["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    meta["meta_sha256"] = hashlib.sha256(fmt._canonical(meta)).hexdigest()
    (d_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="shape"):
        store.load(detector.version)


def test_missing_files_rejected(store: ModelStore, detector: Detector) -> None:
    path = _saved(store, detector)
    (path / "weights.safetensors").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        store.load(detector.version)


def test_round_trip_unconditional_gaussian(store: ModelStore, site_data: SiteData) -> None:
    det = tiny_detector(site_data, version="pooled", conditional=False, decoder="gaussian")
    loaded = store.load(store.save(det))
    assert dict(loaded.sites) == dict(det.sites)
    x, s = site_data.values[:20], site_data.sites[:20]
    np.testing.assert_array_equal(loaded.score(x, s).scores, det.score(x, s).scores)


def _rehash(meta_path: Path, meta: dict[str, object]) -> None:
    import hashlib

    from streamvae.artifact_format import _canonical

    meta.pop("meta_sha256", None)
    meta["meta_sha256"] = hashlib.sha256(_canonical(meta)).hexdigest()
    meta_path.write_text(json.dumps(meta))


def test_format_1_artifact_loads_with_pooled_scaler(store: ModelStore, detector: Detector) -> None:
    """Format 1 (pooled scaler only) stays readable; per-site statistics need format 2."""
    v = store.save(detector)
    path = store.versions_dir / v / "meta.json"
    meta = json.loads(path.read_text())
    assert meta["format"] == "streamvae-detector/2"
    assert meta["scaler"]["sites"]
    meta["format"] = "streamvae-detector/1"
    _rehash(path, meta)
    with pytest.raises(ArtifactError, match="per-site"):
        store.load(v)
    del meta["scaler"]["sites"]
    _rehash(path, meta)
    loaded = store.load(v)
    assert not loaded.scaler.sites
    assert loaded.scaler.center == detector.scaler.center
