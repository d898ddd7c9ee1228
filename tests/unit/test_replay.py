"""File replay through the real pipeline and the real record codec (no broker, no torch)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson
import pytest

from streamvae.batching import BatchPolicy
from streamvae.pipeline import Codec, Pipeline, PipelineSpec
from streamvae.records import (
    DecoderSpec,
    decode_record,
    encode_dead_letter,
    encode_score,
)
from streamvae.replay import FileSink, FileSource
from tests.unit.daemon_fakes import FEATURES, FakeDetector, Holder

SPEC = DecoderSpec(features=FEATURES)
CODEC = Codec(
    decode=lambda payload, pos: decode_record(payload, SPEC, pos),
    encode_score=encode_score,
    encode_dead_letter=encode_dead_letter,
)


async def replay(src: Path, out: Path) -> None:
    source, sink = FileSource(str(src)), FileSink(str(out))
    pipe = Pipeline(source, sink, Holder(FakeDetector()), CODEC, PipelineSpec(BatchPolicy(4, 0.01)))
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        for coro in pipe.loops(asyncio.Event()):
            tg.create_task(coro)
    sink.close()


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
async def test_replay_scores_and_dead_letters(tmp_path: Path, kind: str) -> None:
    src = tmp_path / f"in.{kind}"
    if kind == "jsonl":
        lines = [
            orjson.dumps({"site": f"s{i % 2}", "ts": 1_700_000_000 + i, "values": [i, 1, 2]})
            for i in range(10)
        ]
        lines.insert(3, b"{broken")
        src.write_bytes(b"\n".join(lines) + b"\n")
    else:
        rows = [f"s{i % 2},{1_700_000_000 + i},{i},1,2" for i in range(10)]
        rows.insert(3, "s0,1700000000,oops,1,2")
        src.write_text("site,ts,a,b,c\n" + "\n".join(rows) + "\n")
    out = tmp_path / "scores.jsonl"
    await replay(src, out)
    scores = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    dead = [
        orjson.loads(x)
        for x in (tmp_path / "scores.jsonl.dead-letters.jsonl").read_bytes().splitlines()
    ]
    assert len(scores) == 10
    assert len(dead) == 1
    assert dead[0]["position"]["offset"] == 3 + (kind == "csv")
    assert {s["model_version"] for s in scores} == {"v1"}
    assert all(s["position"]["topic"] == str(src) for s in scores)


async def test_stdout_sink_writes_scores_to_stdout_and_dead_letters_to_stderr(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    sink = FileSink("-")
    acked = await sink.send([(b"k", b'{"score": 1}')], [(None, b'{"reason": "x"}')])
    await acked
    out, err = capsysbinary.readouterr()
    assert out == b'{"score": 1}\n'
    assert err == b'{"reason": "x"}\n'


def _line(i: int) -> bytes:
    return orjson.dumps({"site": "s0", "ts": 1_700_000_000 + i, "values": [i, 1, 2]}) + b"\n"


async def test_file_source_hands_over_lines_as_they_arrive_on_a_live_pipe(
    tmp_path: Path,
) -> None:
    """A batch never waits for more lines than have arrived (a pipe fed slowly)."""
    fifo = tmp_path / "live.jsonl"
    os.mkfifo(fifo)
    source = FileSource(str(fifo))
    fetching = asyncio.create_task(source.fetch(1024, 5.0))  # starts the reader thread
    writer = await asyncio.to_thread(open, fifo, "wb", buffering=0)  # once the reader opens
    writer.write(_line(0) + _line(1))
    got = await asyncio.wait_for(fetching, 2.0)  # not the 1024 asked, nor the 5 s timeout
    while len(got) < 2:
        got += await source.fetch(1024, 2.0)
    assert [pos.offset for _, pos in got] == [0, 1]
    assert await source.fetch(1024, 0.05) == []  # nothing more yet: empty after the timeout
    assert not source.exhausted
    writer.write(_line(2))
    writer.close()
    rest = await source.fetch(1024, 2.0)
    assert [pos.offset for _, pos in rest] == [2]
    while not source.exhausted:
        assert await source.fetch(1024, 2.0) == []
    source.close()


async def test_file_source_reads_ahead_at_most_its_bound(tmp_path: Path) -> None:
    src = tmp_path / "big.jsonl"
    src.write_bytes(b"".join(_line(i) for i in range(500)))
    source = FileSource(str(src), read_ahead=50)
    first = await source.fetch(10, 1.0)
    await asyncio.sleep(0.1)  # the reader fills the read-ahead, then waits
    assert len(source._ready) == 50  # full, and no more
    offsets = [pos.offset for _, pos in first]
    while not source.exhausted:
        offsets += [pos.offset for _, pos in await source.fetch(64, 1.0)]
    assert offsets == list(range(500))  # every line once, in order


async def test_file_source_raises_the_reader_error(tmp_path: Path) -> None:
    source = FileSource(str(tmp_path / "missing.jsonl"))
    with pytest.raises(FileNotFoundError):
        await source.fetch(10, 1.0)
    assert not source.exhausted
