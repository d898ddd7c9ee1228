from __future__ import annotations

import gzip
import io
import sys
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from streamvae.errors import ConfigError
from streamvae.files import JsonlWriter, infer_features, read_payloads, read_records, write_jsonl
from streamvae.records import DecoderSpec, Reason, Rejection, SensorRecord, SourcePosition

SPEC = DecoderSpec(("temp", "rpm"))

CSV = (
    b"\xef\xbb\xbfsite,ts,rpm,temp\r\n"
    b"a,1732200000,1500,21.5\r\n"
    b"\r\n"
    b"b,2024-11-21T14:40:00Z,fast,20\n"
    b"c,5,1,nan\n"
    b"\xff\xfe,1,2,3\n"
    b"d,1,2\n"
    b'"e,f",7,1,2\n'
)
JSONL = (
    b'{"site": "a", "ts": 1732200000, "values": {"temp": 21.5, "rpm": 1500}}\n'
    b"\n"
    b"   \n"
    b"not json\n"
    b'{"site": "b", "ts": 1, "values": [1, 2]}'  # no final newline
)


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return str(path)


def _summary(results: list[SensorRecord | Rejection]) -> list[tuple[int, str]]:
    out = []
    for r in results:
        assert r.position is not None
        out.append((r.position.offset, r.reason.value if isinstance(r, Rejection) else r.site))
    return out


@pytest.mark.parametrize("name", ["data.csv", "data.csv.gz", "data.txt"])
def test_read_records_csv(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path, name, CSV)
    results = list(read_records(path, SPEC))
    assert _summary(results) == [
        (1, "a"),
        (3, "bad_type"),
        (4, "non_finite"),
        (5, "invalid_json"),
        (6, "wrong_length"),
        (7, "e,f"),
    ]
    first = results[0]
    assert isinstance(first, SensorRecord)
    assert tuple(first.values) == (21.5, 1500.0)  # spec order
    assert first.position == SourcePosition(path, 0, 1)
    bad = results[1]
    assert isinstance(bad, Rejection)
    assert bad.payload == b"b,2024-11-21T14:40:00Z,fast,20"


@pytest.mark.parametrize("name", ["data.jsonl", "data.jsonl.gz", "data"])
def test_read_records_jsonl(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path, name, JSONL)
    results = list(read_records(path, SPEC))
    assert _summary(results) == [(0, "a"), (3, "invalid_json"), (4, "b")]


def test_read_payloads_jsonl_unchanged(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.jsonl", JSONL)
    payloads = list(read_payloads(path))
    assert [pos.offset for _, pos in payloads] == [0, 3, 4]
    assert payloads[1][0] == b"not json"


def test_read_payloads_csv_becomes_json(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", CSV)
    payloads = list(read_payloads(path))
    assert [pos.offset for _, pos in payloads] == [1, 3, 4, 5, 6, 7]
    assert orjson.loads(payloads[0][0]) == {
        "site": "a",
        "ts": 1732200000.0,
        "values": {"rpm": 1500.0, "temp": 21.5},
    }
    # decoding the converted payloads gives the same records as read_records
    from streamvae.records import decode_record

    via_json = [decode_record(p, SPEC, pos) for p, pos in payloads]
    direct = list(read_records(path, SPEC))
    assert [type(r) for r in via_json] == [type(r) for r in direct]
    assert via_json[0] == direct[0]
    assert isinstance(via_json[1], Rejection)
    assert via_json[1].reason is Reason.BAD_TYPE


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(CSV)))
    results = list(read_records("-", SPEC))
    assert _summary(results)[0] == (1, "a")
    assert results[0].position == SourcePosition("-", 0, 1)


def test_empty_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "empty.jsonl", b"")
    assert list(read_records(path, SPEC)) == []
    assert list(read_payloads(path)) == []


def test_header_only_csv(tmp_path: Path) -> None:
    path = _write(tmp_path, "h.csv", b"site,ts,temp,rpm\n")
    assert list(read_records(path, SPEC)) == []
    assert infer_features(path) == ("temp", "rpm")


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="nope"):
        list(read_records(str(tmp_path / "nope.jsonl"), SPEC))


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("a.csv", b" site , ts , b , a \n", ("b", "a")),
        ("a.csv", CSV, ("rpm", "temp")),
        ("a.jsonl", JSONL, ("temp", "rpm")),
        ("a.jsonl", b"garbage\n" + b'{"values": [1]}\n' + JSONL, ("temp", "rpm")),
    ],
)
def test_infer_features(tmp_path: Path, name: str, data: bytes, expected: tuple[str, ...]) -> None:
    assert infer_features(_write(tmp_path, name, data)) == expected


@pytest.mark.parametrize(
    ("name", "data"),
    [("a.csv", b""), ("a.csv", b"site,ts\n"), ("a.jsonl", b'{"values": [1, 2]}\n')],
)
def test_infer_features_fails_clearly(tmp_path: Path, name: str, data: bytes) -> None:
    with pytest.raises(ConfigError, match=r"a\.(csv|jsonl)"):
        infer_features(_write(tmp_path, name, data))


def test_infer_features_stdin() -> None:
    with pytest.raises(ConfigError, match="stdin"):
        infer_features("-")


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_writer_round_trip(tmp_path: Path, name: str) -> None:
    path = str(tmp_path / name)
    with JsonlWriter(path) as writer:
        writer.write(b'{"a": 1}')
        assert writer.write_all([b"[1]", b"[2]"]) == 2
        writer.flush()
        assert writer.lines == 3
    assert [p for p, _ in read_payloads(path)] == [b'{"a": 1}', b"[1]", b"[2]"]
    assert write_jsonl(path, []) == 0
    assert list(read_payloads(path)) == []


def test_writer_stdout(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert write_jsonl("-", [b"{}", b"[]"]) == 2
    assert capsysbinary.readouterr().out == b"{}\n[]\n"
    assert not sys.stdout.closed
