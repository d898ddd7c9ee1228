"""File source and sink: replay JSONL (or CSV) from a file or stdin through the same pipeline.

`FileSource` yields each record with position (path, 0, line number from 0) and
reports `exhausted` at end of file, which ends the pipeline after the last batch.
`FileSink` writes score records as JSONL to a file or stdout; dead letters go to
`<output>.dead-letters.jsonl` (or to stderr when scores go to stdout). Blocking file I/O
runs in worker threads.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from typing import BinaryIO

from streamvae.files import read_payloads
from streamvae.records import SourcePosition

Output = tuple[bytes | None, bytes]
READ_CHUNK = 4096


class FileSource:
    """Records of a JSONL or CSV file (`streamvae.files.read_payloads`; "-" = stdin)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._payloads: Iterator[tuple[bytes, SourcePosition]] | None = None
        self._eof = False
        self.committed: dict[tuple[str, int], int] = {}

    @property
    def exhausted(self) -> bool:
        return self._eof

    def _read(self, n: int) -> list[tuple[bytes, SourcePosition]]:
        if self._payloads is None:
            self._payloads = read_payloads(self.path)
        out = list(itertools.islice(self._payloads, n))
        if len(out) < n:
            self._eof = True
        return out

    async def fetch(self, max_records: int, timeout_s: float) -> list[tuple[bytes, SourcePosition]]:
        if self._eof:
            return []
        return await asyncio.to_thread(self._read, max(1, min(max_records, READ_CHUNK)))

    async def start(self, stop: asyncio.Event) -> bool:
        return True

    async def stop(self) -> None:
        self.close()

    def pause(self) -> None:
        return None

    def resume(self) -> None:
        return None

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        self.committed.update(offsets)

    def lags(self) -> dict[tuple[str, int], int]:
        return {}

    def close(self) -> None:
        if self._payloads is not None and hasattr(self._payloads, "close"):
            self._payloads.close()  # closes the file (a generator's finally)


class FileSink:
    """Scores to `path` ("-" = stdout) as JSONL; dead letters beside it (see module doc)."""

    def __init__(self, path: str) -> None:
        self.path = path
        if path == "-":
            self._scores: BinaryIO = sys.stdout.buffer
            self._dead: BinaryIO = sys.stderr.buffer
        else:
            self._scores = open(path, "wb")  # noqa: SIM115
            self._dead = open(f"{path}.dead-letters.jsonl", "wb")  # noqa: SIM115

    def _write(self, scores: Sequence[Output], dead_letters: Sequence[Output]) -> None:
        if scores:
            self._scores.write(b"".join(v + b"\n" for _, v in scores))
            self._scores.flush()
        if dead_letters:
            self._dead.write(b"".join(v + b"\n" for _, v in dead_letters))
            self._dead.flush()

    async def send(
        self, scores: Sequence[Output], dead_letters: Sequence[Output]
    ) -> Awaitable[None]:
        await asyncio.to_thread(self._write, scores, dead_letters)
        return _done()

    async def start(self, stop: asyncio.Event) -> bool:
        return True

    async def stop(self) -> None:
        self.close()

    def close(self) -> None:
        for stream in (self._scores, self._dead):
            if stream not in (sys.stdout.buffer, sys.stderr.buffer):
                stream.close()


async def _done() -> None:
    return None
