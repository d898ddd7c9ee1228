"""Record-file reading for the offline commands.

Delegates to `streamvae.files` (foundation) when it is present; until then a
minimal private reader for JSONL and CSV (sniffed by the first character:
"{" = JSONL) with the same positions: SourcePosition(topic=<path>, partition=0,
offset=<0-based line>). Temporary: remove once `streamvae.files` has landed.
"""

from __future__ import annotations

import csv
import importlib
import io
import math
import sys
from collections.abc import Iterator
from datetime import datetime
from types import ModuleType
from typing import Any

import orjson

from streamvae.records import DecoderSpec, Reason, Rejection, SensorRecord, SourcePosition


def _foundation() -> ModuleType | None:
    try:
        mod = importlib.import_module("streamvae.files")
    except ImportError:
        return None
    return mod if hasattr(mod, "read_records") and hasattr(mod, "infer_features") else None


def read_records(path: str, spec: DecoderSpec) -> Iterator[SensorRecord | Rejection]:
    mod = _foundation()
    if mod is not None:
        try:
            it: Iterator[SensorRecord | Rejection] = mod.read_records(path, spec)
            yield from it
            return
        except NotImplementedError:
            pass
    yield from _read_private(path, spec)


def infer_features(path: str) -> tuple[str, ...]:
    mod = _foundation()
    if mod is not None:
        try:
            return tuple(mod.infer_features(path))
        except NotImplementedError:
            pass
    for kind, _, payload in _lines(path):
        if kind == "csv":
            return tuple(payload[2:])
        obj = orjson.loads(payload)
        return tuple(obj["values"])
    return ()


def _open(path: str) -> io.TextIOBase:
    if path == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8")
    return open(path, encoding="utf-8", newline="")


def _lines(path: str) -> Iterator[tuple[str, int, Any]]:
    """(kind, line number, payload): kind "json" -> bytes, "csv" -> header or row."""
    with _open(path) as fh:
        first = fh.readline()
        if first.lstrip().startswith("{") or not first.strip():
            n = 0
            line = first
            while line:
                if line.strip():
                    yield "json", n, line.encode()
                n += 1
                line = fh.readline()
            return
        header = next(csv.reader([first]))
        yield "csv", 0, header
        for n, row in enumerate(csv.reader(fh), start=1):
            yield "csvrow", n, (header, row)


def _read_private(path: str, spec: DecoderSpec) -> Iterator[SensorRecord | Rejection]:
    for kind, n, payload in _lines(path):
        pos = SourcePosition(topic=path, partition=0, offset=n)
        if kind == "json":
            yield _decode_json(payload, spec, pos)
        elif kind == "csvrow":
            header, row = payload
            yield _decode_csv(row, header, spec, pos)


def _reject(reason: Reason, detail: str, payload: bytes, pos: SourcePosition) -> Rejection:
    return Rejection(reason=reason, detail=detail, payload=payload, position=pos)


def _ts(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, str):
        try:
            d = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            try:
                return float(v)
            except ValueError:
                return None
        return d.timestamp() if d.tzinfo is not None else None
    return None


def _decode_json(
    payload: bytes, spec: DecoderSpec, pos: SourcePosition
) -> SensorRecord | Rejection:
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return _reject(Reason.INVALID_JSON, str(exc), payload, pos)
    if not isinstance(obj, dict):
        return _reject(Reason.NOT_OBJECT, "not a JSON object", payload, pos)
    for key in ("site", "ts", "values"):
        if key not in obj:
            return _reject(Reason.MISSING_FIELD, key, payload, pos)
    site, vals = obj["site"], obj["values"]
    if not isinstance(site, str) or not site or len(site) > spec.max_site_length:
        return _reject(Reason.BAD_SITE, repr(site)[:80], payload, pos)
    ts = _ts(obj["ts"])
    if ts is None:
        return _reject(Reason.BAD_TIMESTAMP, repr(obj["ts"])[:80], payload, pos)
    if isinstance(vals, dict):
        missing = [f for f in spec.features if f not in vals]
        if missing:
            return _reject(Reason.MISSING_FEATURE, missing[0], payload, pos)
        extra = [k for k in vals if k not in spec.feature_index]
        if extra and spec.unknown_feature == "reject":
            return _reject(Reason.UNKNOWN_FEATURE, extra[0], payload, pos)
        seq = [vals[f] for f in spec.features]
    elif isinstance(vals, list):
        if len(vals) != len(spec.features):
            return _reject(Reason.WRONG_LENGTH, f"{len(vals)} values", payload, pos)
        seq = vals
    else:
        return _reject(Reason.BAD_TYPE, "values", payload, pos)
    return _finish(site, ts, seq, payload, pos)


def _finish(
    site: str, ts: float, seq: list[Any], payload: bytes, pos: SourcePosition
) -> SensorRecord | Rejection:
    out = []
    for v in seq:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return _reject(Reason.BAD_TYPE, repr(v)[:40], payload, pos)
        f = float(v)
        if not math.isfinite(f):
            return _reject(Reason.NON_FINITE, repr(v)[:40], payload, pos)
        out.append(f)
    return SensorRecord(site=site, ts=ts, values=tuple(out), position=pos)


def _decode_csv(
    row: list[str], header: list[str], spec: DecoderSpec, pos: SourcePosition
) -> SensorRecord | Rejection:
    payload = ",".join(row).encode()
    if len(row) != len(header):
        return _reject(Reason.WRONG_LENGTH, f"{len(row)} columns", payload, pos)
    cols = dict(zip(header, row, strict=True))
    site = cols.get("site", "")
    if not site or len(site) > spec.max_site_length:
        return _reject(Reason.BAD_SITE, site[:80], payload, pos)
    ts = _ts(cols.get("ts", ""))
    if ts is None:
        return _reject(Reason.BAD_TIMESTAMP, cols.get("ts", "")[:80], payload, pos)
    vals: list[Any] = []
    for f in spec.features:
        if f not in cols:
            return _reject(Reason.MISSING_FEATURE, f, payload, pos)
        try:
            vals.append(float(cols[f]))
        except ValueError:
            return _reject(Reason.BAD_TYPE, cols[f][:40], payload, pos)
    return _finish(site, ts, vals, payload, pos)
