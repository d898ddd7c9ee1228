"""File source and sink: replay JSONL (or CSV) from a file or stdin through the same pipeline.

`FileSource` yields each record with position (path, 0, line number from 0) and
reports `exhausted` at end of file, which ends the pipeline after the last batch.
`FileSink` writes score records as JSONL to a file or stdout; dead letters go to
`<output>.dead-letters.jsonl` (or to stderr when scores go to stdout). Blocking file I/O
runs in worker threads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sys
import threading
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import BinaryIO

from streamvae.files import read_payloads
from streamvae.ports import Fetched, Output

# Records read ahead of the pipeline, at most: four default batches keep the scorers fed
# while the reader parses the next lines; a backlog beyond that waits in the pipe or file
# (the reader pauses), not in memory (it was 16k records, 2026-12-03).
READ_AHEAD = 4096
FULL_WAIT_S = 0.001  # the reader's pause while the read-ahead is full


class FileSource:
    """Records of a JSONL or CSV file (`streamvae.files.read_payloads`; "-" = stdin).

    A reader thread parses lines into a bounded read-ahead (a deque: appends and pops are
    atomic), and `fetch` takes what is there: a batch never waits for more lines than have
    arrived (a live pipe, `tail -f … | streamvae run --input -`, is scored as lines come,
    within the batching deadline), and reading overlaps scoring. Back-pressure: the reader
    pauses while `read_ahead` records wait.
    """

    def __init__(self, path: str, *, read_ahead: int = READ_AHEAD) -> None:
        self.path = path
        self.committed: dict[tuple[str, int], int] = {}
        self._cap = max(1, read_ahead)
        self._ready: collections.deque[Fetched] = collections.deque()
        self._thread: threading.Thread | None = None
        self._done = False  # the reader thread has finished (end of file, error, close)
        self._error: BaseException | None = None
        self._closing = threading.Event()
        self._wakeup: asyncio.Event | None = None  # set (from the reader) for a waiting fetch
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def exhausted(self) -> bool:
        return self._done and not self._ready and self._error is None

    def _read(self) -> None:
        payloads = read_payloads(self.path)
        woken: asyncio.Event | None = None
        try:
            for item in payloads:
                while len(self._ready) >= self._cap and not self._closing.is_set():
                    time.sleep(FULL_WAIT_S)
                if self._closing.is_set():
                    return
                self._ready.append(item)
                woken = self._wake(woken)
        except BaseException as exc:  # re-raised by `fetch`, on the loop
            self._error = exc
        finally:
            payloads.close()  # closes the file (the generator's finally), in this thread
            self._done = True
            self._wake(woken)

    def _wake(self, woken: asyncio.Event | None) -> asyncio.Event | None:
        """Wake the waiting `fetch` once (each waits on a new Event); `woken` is the last
        one woken. Only `fetch` clears `_wakeup`, so a new waiter is never missed."""
        wakeup, loop = self._wakeup, self._loop
        if wakeup is not None and wakeup is not woken and loop is not None:
            loop.call_soon_threadsafe(wakeup.set)
            return wakeup
        return woken

    async def fetch(self, max_records: int, timeout_s: float) -> list[Fetched]:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._read, name="file-source", daemon=True)
            self._thread.start()
        if not self._ready and not self._done:
            wakeup = asyncio.Event()
            self._wakeup = wakeup  # before the re-check: the reader sees it or we see data
            if not self._ready and not self._done:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), timeout_s)
            self._wakeup = None
        if not self._ready and self._error is not None:
            raise self._error
        ready = self._ready
        return [ready.popleft() for _ in range(min(max(1, max_records), len(ready)))]

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
        """Stop reading: the reader ends at its next line (the file closes with it); a
        reader blocked on an idle stdin is a daemon thread and ends with the process."""
        self._closing.set()


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
