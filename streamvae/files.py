"""The file edge: JSONL and CSV in, JSONL out. `"-"` is stdin / stdout.

A file is JSONL (one JSON record per line) or CSV with a header `site,ts,<feature…>`:
the extension decides (`.jsonl`, `.ndjson`, `.json` / `.csv`, each optionally
`.gz`), else the first non-blank line does (`{` or `[` means JSONL). Every record
carries `SourcePosition(topic=<path>, partition=0, offset=<0-based line index>)`,
so `sed -n "$((offset + 1))p" FILE` shows the line. Blank lines are skipped (but
counted). Bad lines become `Rejection`s, never exceptions; only a file that
cannot be opened raises (`OSError`).

    read_payloads(path)        -> (bytes, position) per record: JSONL lines as they
                                  are, CSV rows converted to the JSON input format
    read_records(path, spec)   -> SensorRecord | Rejection per record
    infer_features(path)       -> feature names (CSV header / first JSON `values` keys)
    JsonlWriter(path)          -> writes one payload per line; `write_jsonl` for a batch
"""

from __future__ import annotations

import csv
import gzip
import itertools
import logging
import math
import sys
from collections.abc import Generator, Iterable, Iterator
from types import TracebackType
from typing import BinaryIO, Literal

import orjson

from streamvae.errors import ConfigError
from streamvae.records import (
    DecoderSpec,
    Rejection,
    SensorRecord,
    SourcePosition,
    decode_csv_row,
    decode_record,
)

log = logging.getLogger(__name__)

Format = Literal["jsonl", "csv"]
STDIO = "-"
_BOM = b"\xef\xbb\xbf"
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
#: infer_features looks at most this many lines for a JSON object with `values`.
_INFER_MAX_LINES = 1000


def _open_in(path: str) -> BinaryIO:
    if path == STDIO:
        return sys.stdin.buffer
    if path.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(0-based line index, line without its end) for every non-blank line."""
    fh = _open_in(path)
    try:
        for index, line in enumerate(fh):
            if index == 0 and line.startswith(_BOM):
                line = line[len(_BOM) :]  # noqa: PLW2901
            line = line.rstrip(b"\r\n")  # noqa: PLW2901
            if line.strip():
                yield index, line
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()


def _format_of(path: str, first: bytes | None) -> Format:
    name = path.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(_JSONL_SUFFIXES):
        return "jsonl"
    return "jsonl" if first is not None and first.lstrip()[:1] in (b"{", b"[") else "csv"


def _peek(path: str) -> tuple[Format, Iterator[tuple[int, bytes]]]:
    """The file's format and all its lines (the first one peeked, not lost)."""
    lines = _lines(path)
    first = next(lines, None)
    fmt = _format_of(path, None if first is None else first[1])
    rest: Iterator[tuple[int, bytes]] = lines if first is None else itertools.chain([first], lines)
    return fmt, rest


def _csv_cells(line: bytes) -> list[str] | None:
    """One CSV line's cells, or None when it is not UTF-8 (quoted newlines unsupported)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        return next(csv.reader((text,)), [])
    except csv.Error:
        return None


def _header(line: bytes, path: str) -> list[str]:
    cells = _csv_cells(line)
    if cells is None:
        log.warning("%s: CSV header is not UTF-8 CSV", path)
        return []
    return [c.strip() for c in cells]


def _json_number(cell: str) -> float | str | None:
    """A CSV cell for the JSON format: a finite number, else the text (the decoder
    then rejects it with the right reason), None when empty (left out)."""
    if not cell.strip():
        return None
    try:
        value = float(cell)
    except ValueError:
        return cell
    return value if math.isfinite(value) else cell


def _csv_payload(header: list[str], cells: list[str]) -> bytes:
    obj: dict[str, object] = {}
    values: dict[str, float | str] = {}
    for name, cell in zip(header, cells, strict=True):
        if name == "site":
            obj["site"] = cell
        elif name == "ts":
            ts = _json_number(cell)
            if ts is not None:
                obj["ts"] = ts
        else:
            value = _json_number(cell)
            if value is not None:
                values[name] = value
    obj["values"] = values
    return orjson.dumps(obj)


def read_payloads(path: str) -> Generator[tuple[bytes, SourcePosition]]:
    """Each record of a JSONL/CSV file as a JSON input payload with its position.

    JSONL lines are passed on unchanged. CSV rows become `{"site", "ts", "values"}`
    objects; a row that cannot be converted (not UTF-8, wrong column count) is passed
    on as its raw bytes, which the decoder then rejects as `invalid_json`.
    """
    fmt, lines = _peek(path)
    if fmt == "jsonl":
        for index, line in lines:
            yield line, SourcePosition(path, 0, index)
        return
    header: list[str] | None = None
    for index, line in lines:
        if header is None:
            header = _header(line, path)
            continue
        cells = _csv_cells(line)
        if cells is None or len(cells) != len(header):
            yield line, SourcePosition(path, 0, index)
        else:
            yield _csv_payload(header, cells), SourcePosition(path, 0, index)


def read_records(path: str, spec: DecoderSpec) -> Iterator[SensorRecord | Rejection]:
    """Each record of a JSONL/CSV file, decoded and validated against `spec`."""
    fmt, lines = _peek(path)
    if fmt == "jsonl":
        for index, line in lines:
            yield decode_record(line, spec, SourcePosition(path, 0, index))
        return
    header: tuple[str, ...] | None = None
    for index, line in lines:
        if header is None:
            header = tuple(_header(line, path))
            continue
        position = SourcePosition(path, 0, index)
        cells = _csv_cells(line)
        if cells is None:
            yield decode_record(line, spec, position)  # -> invalid_json, never raises
        else:
            yield decode_csv_row(cells, header, spec, position, raw=line)


def infer_features(path: str) -> tuple[str, ...]:
    """Feature names in file order: the CSV header without `site` and `ts`, or the keys
    of the first JSON object whose `values` is an object. Raises ConfigError when the
    file has none (or is stdin, which cannot be read twice)."""
    if path == STDIO:
        raise ConfigError("cannot infer features from stdin; set [model] features")
    fmt, lines = _peek(path)
    if fmt == "csv":
        first = next(lines, None)
        if first is not None:
            names = tuple(n for n in _header(first[1], path) if n not in ("site", "ts"))
            if names:
                return names
        raise ConfigError(f"{path}: no CSV header with feature columns")
    for _, line in itertools.islice(lines, _INFER_MAX_LINES):
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("values"), dict) and obj["values"]:
            return tuple(str(k) for k in obj["values"])
    raise ConfigError(
        f"{path}: no JSON record with a `values` object in the first {_INFER_MAX_LINES} "
        "lines; set [model] features"
    )


class JsonlWriter:
    """Writes one payload per line to a file (created or truncated) or `"-"` (stdout).

    Use as a context manager. `flush()` after each batch makes the lines visible to
    readers; closing flushes (stdout is flushed, never closed).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines = 0
        self._stdio = path == STDIO
        if self._stdio:
            self._fh: BinaryIO = sys.stdout.buffer
        elif path.endswith(".gz"):
            self._fh = gzip.open(path, "wb")  # type: ignore[assignment]  # noqa: SIM115
        else:
            self._fh = open(path, "wb")  # noqa: SIM115 - closed by close()

    def write(self, payload: bytes) -> None:
        self._fh.write(payload + b"\n")
        self.lines += 1

    def write_all(self, payloads: Iterable[bytes]) -> int:
        """Write many payloads (one `write` call); returns how many."""
        chunk = [p + b"\n" for p in payloads]
        self._fh.write(b"".join(chunk))
        self.lines += len(chunk)
        return len(chunk)

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        if self._stdio:
            self._fh.flush()
        elif not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def write_jsonl(path: str, payloads: Iterable[bytes]) -> int:
    """Write payloads, one per line, to `path` (or `"-"`); returns how many."""
    with JsonlWriter(path) as writer:
        return writer.write_all(payloads)
