"""File replay through the real pipeline and the real record codec (no broker, no torch)."""

from __future__ import annotations

import asyncio
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
