"""`streamvae produce`: publish JSONL or CSV files to a topic, keyed by site.

Files are read by `streamvae.files.read_payloads`: JSONL lines are sent as they are (a
line that is not JSON is sent too, unkeyed: the daemon turns it into a dead letter); a
CSV row (header `site,ts,<feature…>`) becomes one JSON input record. "-" reads stdin.
Messages are keyed by site, so a site's records stay in order on one partition.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson

from streamvae.errors import ConfigError, TransientError
from streamvae.files import read_payloads

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


def _chunks(paths: Sequence[Path]) -> Iterator[list[Output]]:
    chunk: list[Output] = []
    for path in paths:
        for payload, _ in read_payloads(str(path)):
            chunk.append((_site_key(payload), payload))
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
