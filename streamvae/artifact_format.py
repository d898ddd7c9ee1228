"""On-disk format of one detector artifact (a version directory). Used by `artifacts`.

    <dir>/weights.safetensors   all tensors ("vae.*", "disc.*"); never pickle
    <dir>/meta.json             everything else

meta.json holds: format, version, created_at, features, sites (site -> slot),
thresholds, fallback_threshold, scaler, model_spec, train_spec, threshold_spec,
report, data_summary, libraries (versions), weights_sha256 (sha256 of the weights
file) and meta_sha256 (sha256 of the canonical JSON of all other keys). Loading
recomputes both hashes, checks every key and type, rebuilds the networks from
model_spec and loads the tensors strictly (names and shapes must match): any
failure raises `ArtifactError` with the reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch

from streamvae import __version__
from streamvae.detector import Detector
from streamvae.errors import ArtifactError
from streamvae.model.device import resolve_device
from streamvae.model.report import TrainingReport
from streamvae.model.scaler import RobustScaler
from streamvae.model.specs import ModelSpec, ThresholdSpec, TrainSpec
from streamvae.model.training import build

log = logging.getLogger(__name__)

FORMAT = "streamvae-detector/2"  # 2: per-site scaler statistics ("scaler.sites")
READABLE = frozenset({"streamvae-detector/1", FORMAT})  # 1 = pooled scaler only
WEIGHTS = "weights.safetensors"
META = "meta.json"


def new_version(now: float | None = None) -> str:
    """A version string that sorts in creation order: v<UTC yyyymmddThhmmss>-<µs>."""
    t = time.time() if now is None else now
    secs = int(t)
    micros = round((t - secs) * 1e6)
    if micros >= 1_000_000:
        secs, micros = secs + 1, micros - 1_000_000
    return "v" + time.strftime("%Y%m%dT%H%M%S", time.gmtime(secs)) + f"-{micros:06d}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _canonical(meta: dict[str, Any]) -> bytes:
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _json_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def detector_meta(det: Detector) -> dict[str, Any]:
    """The metadata of a detector (without the hashes)."""
    meta: dict[str, Any] = _json_safe(
        {
            "format": FORMAT,
            "version": det.version,
            "created_at": det.created_at,
            "features": list(det.features),
            "sites": dict(det.sites),
            "thresholds": dict(det.thresholds),
            "fallback_threshold": det.fallback_threshold,
            "scaler": det.scaler.to_dict(),
            "model_spec": det.model_spec.to_dict(),
            "train_spec": det.train_spec.to_dict(),
            "threshold_spec": det.threshold_spec.to_dict(),
            "report": det.report.to_dict(),
            "data_summary": dict(det.data_summary),
            "libraries": {
                "streamvae": __version__,
                "torch": torch.__version__,
                "numpy": np.__version__,
                "safetensors": getattr(safetensors, "__version__", "unknown"),
                "python": platform.python_version(),
            },
        }
    )
    return meta


def write_artifact(det: Detector, directory: Path) -> None:
    """Write weights + meta into an existing empty directory (fsynced)."""
    weights = directory / WEIGHTS
    blob = safetensors.torch.save(det.state_dicts(), metadata={"format": FORMAT})
    _write_file(weights, blob)
    meta = detector_meta(det)
    meta["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    meta["meta_sha256"] = hashlib.sha256(_canonical(meta)).hexdigest()
    _write_file(directory / META, json.dumps(meta, indent=1, allow_nan=False).encode())
    _fsync_dir(directory)


def read_artifact(directory: Path, device: str = "cpu") -> Detector:
    """Load and validate one artifact directory. Raises ArtifactError."""
    meta_path, weights = directory / META, directory / WEIGHTS
    if not meta_path.is_file() or not weights.is_file():
        raise ArtifactError(f"{directory}: missing {META} or {WEIGHTS}")
    try:
        meta = json.loads(meta_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{meta_path}: not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") not in READABLE:
        raise ArtifactError(f"{meta_path}: unknown format {meta.get('format')!r}")
    if meta.get("meta_sha256") != hashlib.sha256(_canonical(meta)).hexdigest():
        raise ArtifactError(f"{meta_path}: metadata checksum mismatch (edited or corrupt)")
    if meta.get("weights_sha256") != _sha256(weights):
        raise ArtifactError(f"{weights}: sha256 mismatch (tampered or corrupt weights)")
    try:
        return _build(meta, weights, device)
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, safetensors.SafetensorError) as exc:
        raise ArtifactError(f"{directory}: incompatible artifact: {exc}") from exc


def _build(meta: dict[str, Any], weights: Path, device: str) -> Detector:
    features = tuple(str(f) for f in meta["features"])
    mspec = ModelSpec.from_dict(meta["model_spec"])
    if meta["format"] != FORMAT and "sites" in meta["scaler"]:
        raise ArtifactError(f"format {meta['format']} has no per-site scaler statistics")
    scaler = RobustScaler.from_dict(meta["scaler"])
    if len(scaler.center) != len(features):
        raise ArtifactError(f"scaler has {len(scaler.center)} sensors, features {len(features)}")
    sites = {str(k): int(v) for k, v in meta["sites"].items()}
    lowest = 1 if mspec.conditional else 0
    if any(
        not lowest <= v < (mspec.site_capacity if mspec.conditional else 1) for v in sites.values()
    ):
        raise ArtifactError("site slot outside the embedding table")
    dev = resolve_device(device)
    vae, disc = build(len(features), mspec, torch.device("cpu"))
    tensors = safetensors.torch.load_file(str(weights))
    vae_state = {k[4:]: v for k, v in tensors.items() if k.startswith("vae.")}
    disc_state = {k[5:]: v for k, v in tensors.items() if k.startswith("disc.")}
    if len(vae_state) + len(disc_state) != len(tensors):
        raise ArtifactError("weights contain tensors of unknown modules")
    _load_strict(vae, vae_state, "vae")
    if disc is not None:
        _load_strict(disc, disc_state, "disc")
    elif disc_state:
        raise ArtifactError("weights contain a discriminator but the prior is standard")
    if not all(bool(torch.isfinite(v).all()) for v in tensors.values()):
        raise ArtifactError("weights contain NaN/inf")
    fb = meta["fallback_threshold"]
    return Detector(
        version=str(meta["version"]),
        features=features,
        sites=sites,
        thresholds={str(k): float(v) for k, v in meta["thresholds"].items()},
        fallback_threshold=float("inf") if fb is None else float(fb),
        created_at=float(meta["created_at"]),
        report=TrainingReport.from_dict(meta["report"]),
        model_spec=mspec,
        train_spec=TrainSpec.from_dict(meta["train_spec"]),
        threshold_spec=ThresholdSpec.from_dict(meta["threshold_spec"]),
        scaler=scaler,
        vae=vae.to(dev),
        disc=disc.to(dev) if disc is not None else None,
        device=dev,
        data_summary=meta.get("data_summary", {}),
    )


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    expected = module.state_dict()
    if set(expected) != set(state):
        missing, extra = set(expected) - set(state), set(state) - set(expected)
        raise ArtifactError(
            f"{name}: tensor names differ (missing {sorted(missing)}, extra {sorted(extra)})"
        )
    for k, v in expected.items():
        if tuple(v.shape) != tuple(state[k].shape):
            raise ArtifactError(
                f"{name}.{k}: shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
            )
    module.load_state_dict(state, strict=True)
