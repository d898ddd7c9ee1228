"""`streamvae produce`: publish JSONL or CSV files to a topic, keyed by site.

JSONL lines are sent as they are (a line that is not JSON is sent too, unkeyed: the
daemon turns it into a dead letter). A CSV file (header `site,ts,<feature…>`) is sent as
one JSON record per row, `values` keyed by the header's feature names. "-" reads stdin.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson

from streamvae.errors import ConfigError, TransientError

log = logging.getLogger(__name__)

Output = tuple[bytes | None, bytes]
CHUNK = 5000


class TopicSink(Protocol):
    async def start(self, stop: asyncio.Event) -> bool: ...
    async def stop(self) -> None: ...
    async def send_to(self, topic: str, outputs: Sequence[Output]) -> Sequence[Any]: ...


def _site_key(line: bytes) -> bytes | None:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    site = obj.get("site") if isinstance(obj, dict) else None
    return site.encode() if isinstance(site, str) else None


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _csv_outputs(lines: Iterator[bytes]) -> Iterator[Output]:
    reader = csv.reader(line.decode("utf-8", errors="replace") for line in lines)
    header = next(reader, None)
    if header is None:
        return
    features = header[2:]
    for row in reader:
        if not row:
            continue
        site = row[0]
        record: dict[str, Any] = {"site": site, "ts": _number(row[1]) if len(row) > 1 else None}
        record["values"] = dict(zip(features, (_number(v) for v in row[2:]), strict=False))
        yield site.encode(), orjson.dumps(record)


def read_outputs(path: Path) -> Iterator[Output]:
    """(key, payload) pairs for every record of a JSONL or CSV file (by sniffing)."""
    stream = sys.stdin.buffer if str(path) == "-" else open(path, "rb")  # noqa: SIM115
    try:
        lines = iter(stream)
        first = next(lines, b"")
        if not first:
            return
        rest = _chain(first, lines)
        if first.lstrip()[:1] in (b"{", b"["):
            for raw in rest:
                line = raw.rstrip(b"\r\n")
                if line.strip():
                    yield _site_key(line), line
        else:
            yield from _csv_outputs(rest)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _chunks(paths: Sequence[Path]) -> Iterator[list[Output]]:
    chunk: list[Output] = []
    for path in paths:
        for item in read_outputs(path):
            chunk.append(item)
            if len(chunk) >= CHUNK:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


async def produce_files(spec: Any, sink: TopicSink, paths: Sequence[Path], topic: str) -> int:
    """Send every record of `paths` to `topic`; wait for all acks. Returns an exit code."""
    if spec.bootstrap_servers == "embedded":
        raise ConfigError("kafka.bootstrap_servers: produce needs a running broker, not 'embedded'")
    if not await sink.start(asyncio.Event()):
        return 1
    sent = 0
    try:
        pending: list[Any] = []
        for chunk in _chunks(paths):
            pending.extend(await sink.send_to(topic, chunk))
            sent += len(chunk)
            if len(pending) > 256:
                await _wait(pending)
                pending = []
        await _wait(pending)
    finally:
        await sink.stop()
    log.info("produced %d records to %s", sent, topic)
    return 0


async def _wait(futures: Sequence[Any]) -> None:
    results = await asyncio.gather(*futures, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise TransientError(f"{len(errors)} batches were not acknowledged: {errors[0]!r}")
