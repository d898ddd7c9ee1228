"""Persistence of the retrainer's state under `retraining.state_dir`. Edge (files).

Layout of the state directory::

    buffer.json                 manifest, the commit point (see below)
    buffer-<sha16>.npz          the records, numpy .npz, no pickle
    sites.json                  site lifecycle (last seen, status), plain JSON
    *.discarded                 a corrupt or mismatched file moved aside for inspection

`buffer-<sha16>.npz` holds the arrays of `streamvae.buffer.BufferState`:
`values` float32 (N, D), `ts` float64 (N,), `keys` float64 (N,), `priority`
float64 (N,), `site_index` int64 (N,), `seen` int64 (S,), `sites` fixed-width
unicode (S,). It is written
with `numpy.savez` and read with `allow_pickle=False`.

`buffer.json` (UTF-8 JSON)::

    {"format": "streamvae-buffer", "format_version": 1, "file": "buffer-<sha16>.npz",
     "sha256": "<hex of the .npz bytes>", "features": [...], "dim": D,
     "records": N, "sites": S, "written_at": <epoch s>}

Writes are atomic: the .npz goes to a temporary file, is fsynced and renamed,
then the manifest is replaced the same way (os.replace) and the directory is
fsynced; older .npz files are removed afterwards. A crash at any point leaves
either the old or the new buffer. On load, a missing manifest means "no buffer";
a manifest or .npz that does not parse, fails its checksum, has the wrong
shapes, or was written for other features is logged, moved aside
(`*.discarded`) and ignored: the daemon starts with an empty buffer, never crashes.
A reader that does not own the directory (`streamvae retrain`) moves nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamvae.buffer import BufferState

log = logging.getLogger(__name__)

FORMAT = "streamvae-buffer"
FORMAT_VERSION = 1
MANIFEST = "buffer.json"
SITES = "sites.json"
_ARRAYS = ("values", "ts", "keys", "priority", "site_index", "seen", "sites")


class CorruptStateError(ValueError):
    """A persisted state file is unreadable or inconsistent (internal to this module)."""


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically: temp file in the same dir, fsync, rename, fsync dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_buffer(
    state_dir: Path, state: BufferState, features: Sequence[str], *, now: float | None = None
) -> Path:
    """Persist `state` atomically; returns the path of the manifest."""
    bio = io.BytesIO()
    np.savez(
        bio,
        values=state.values.astype(np.float32, copy=False),
        ts=state.ts.astype(np.float64, copy=False),
        keys=state.keys.astype(np.float64, copy=False),
        priority=state.priority.astype(np.float64, copy=False),
        site_index=state.site_index.astype(np.int64, copy=False),
        seen=state.seen.astype(np.int64, copy=False),
        sites=np.array(state.sites, dtype=np.str_) if state.sites else np.array([], "U1"),
    )
    payload = bio.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    name = f"buffer-{digest[:16]}.npz"
    atomic_write(state_dir / name, payload)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "file": name,
        "sha256": digest,
        "features": list(features),
        "dim": state.dim,
        "records": len(state.ts),
        "sites": len(state.sites),
        "written_at": time.time() if now is None else now,
    }
    manifest_path = state_dir / MANIFEST
    atomic_write(manifest_path, json.dumps(manifest, indent=1).encode())
    for old in state_dir.glob("buffer-*.npz"):
        if old.name != name:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
    return manifest_path


def load_buffer(
    state_dir: Path, features: Sequence[str], *, owner: bool = True
) -> BufferState | None:
    """The persisted buffer, or None when there is none or it is unusable (logged).

    `owner=True` (the daemon that writes this state dir) moves unusable files aside;
    a reader (`streamvae retrain`, owner=False) leaves them to the owner. A manifest
    replaced by the owner while it was being read is read again (once).
    """
    manifest_path = state_dir / MANIFEST
    for attempt in (1, 2):
        if not manifest_path.exists():
            return None
        data_path: Path | None = None
        raw: bytes | None = None
        try:
            raw = manifest_path.read_bytes()
            manifest = _read_manifest(raw)
            data_path = state_dir / manifest["file"]
            state = _read_arrays(data_path, manifest, features)
        except (CorruptStateError, OSError, TypeError, KeyError) as exc:
            if attempt == 1 and _changed(manifest_path, raw):
                continue  # the owner wrote a new buffer meanwhile: read that one
            log.warning("discarding persisted training buffer in %s: %s", state_dir, exc)
            if owner:
                _discard(manifest_path)
                if data_path is not None:
                    _discard(data_path)
            return None
        log.info(
            "loaded training buffer: %d records of %d sites from %s",
            len(state.ts),
            len(state.sites),
            state_dir,
        )
        return state
    return None  # pragma: no cover  (the loop always returns)


def _changed(path: Path, before: bytes | None) -> bool:
    try:
        return before is not None and path.read_bytes() != before
    except OSError:
        return False


def _read_manifest(raw: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptStateError(f"manifest is not JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise CorruptStateError("manifest is not an object")
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise CorruptStateError(
            f"unknown format {manifest.get('format')!r} v{manifest.get('format_version')!r}"
        )
    name = manifest.get("file")
    if not isinstance(name, str) or "/" in name or not name.startswith("buffer-"):
        raise CorruptStateError(f"bad data file name {name!r}")
    return manifest


def _read_arrays(path: Path, manifest: Mapping[str, Any], features: Sequence[str]) -> BufferState:
    if list(manifest.get("features", [])) != list(features):
        raise CorruptStateError("written for other features (the feature list changed)")
    payload = path.read_bytes()
    if hashlib.sha256(payload).hexdigest() != manifest.get("sha256"):
        raise CorruptStateError(f"checksum mismatch for {path.name}")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in _ARRAYS}
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CorruptStateError(f"unreadable arrays: {exc}") from exc
    dim = len(features)
    values, ts, keys, prio = arrays["values"], arrays["ts"], arrays["keys"], arrays["priority"]
    index, seen, sites = arrays["site_index"], arrays["seen"], arrays["sites"]
    n = len(ts)
    ok = (
        values.dtype == np.float32
        and values.shape == (n, dim)
        and keys.shape == (n,)
        and prio.shape == (n,)
        and bool(np.isfinite(prio).all())
        and index.shape == (n,)
        and seen.shape == sites.shape
        and sites.dtype.kind == "U"
        and np.issubdtype(index.dtype, np.integer)
        and (n == 0 or (index.min() >= 0 and index.max() < len(sites)))
        and bool(np.isfinite(values).all())
        and bool(((keys >= 0) & (keys < 1)).all())
        and len(set(sites.tolist())) == len(sites)
    )
    if not ok:
        raise CorruptStateError("arrays have inconsistent shapes, types or values")
    return BufferState(
        dim=dim,
        sites=tuple(str(s) for s in sites.tolist()),
        seen=seen.astype(np.int64),
        site_index=index.astype(np.int64),
        values=values,
        ts=ts.astype(np.float64),
        keys=keys.astype(np.float64),
        priority=prio.astype(np.float64),
    )


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.replace(path, path.with_name(path.name + ".discarded"))


def save_json(path: Path, data: Mapping[str, Any]) -> None:
    """Atomically write a JSON document."""
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode())


def load_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`; None if missing or corrupt (corrupt: logged, moved aside)."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("discarding unreadable state file %s: %s", path, exc)
        _discard(path)
        return None
    if not isinstance(data, dict):
        log.warning("discarding state file %s: not a JSON object", path)
        _discard(path)
        return None
    return data
