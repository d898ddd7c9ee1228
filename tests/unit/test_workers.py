"""Serving workers without processes: the report wire format, the combined gauges, a
worker's report, the settings hand-off (the processes: tests/integration)."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from streamvae.config import load_settings, settings_from_json, settings_json
from streamvae.errors import ConfigError
from streamvae.worker_link import (
    LENGTH_BYTES,
    BatchFigures,
    Offer,
    Update,
    decode_update,
    encode_update,
    read_length,
)
from streamvae.workers import CombinedGauges, WorkerReport


def _figures(n: int, seed: int) -> BatchFigures:
    rng = np.random.default_rng(seed)
    return BatchFigures(
        consumed=n + 1,
        scored=n,
        dead_letters={"invalid_json": 1},
        scoring_seconds=0.0125,
        lags_s=rng.random(n),
        sites=[f"site-{i % 3}" for i in range(n)],
        anomalies=rng.random(n) > 0.5,
        severities=rng.normal(size=n),
        statuses=["active" if i % 2 else "warming" for i in range(n)],
    )


def _offer(n: int, seed: int) -> Offer:
    rng = np.random.default_rng(seed)
    return Offer(
        sites=[f"s{i}" for i in range(n)],
        values=rng.normal(size=(n, 5)).astype(np.float32),
        ts=1.7e9 + np.arange(n, dtype=np.float64),
        normal=rng.random(n) > 0.1,
    )


def _update() -> Update:
    return Update(
        ready=True,
        started=True,
        in_flight=17,
        paused=False,
        lags={("in", 0): 5, ("in", 3): 0},
        batches=[_figures(7, 0), _figures(0, 1), _figures(3, 2)],
        offers=[_offer(4, 3), _offer(1, 4)],
    )


def _same(a: Any, b: Any) -> None:
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    else:
        assert list(a) == list(b) if isinstance(a, list | tuple) else a == b


def test_an_update_survives_the_wire() -> None:
    update = _update()
    frame = encode_update(update)
    assert read_length(frame[:LENGTH_BYTES]) == len(frame) - LENGTH_BYTES
    back = decode_update(frame[LENGTH_BYTES:])
    assert (back.ready, back.started, back.in_flight, back.paused) == (True, True, 17, False)
    assert back.lags == {("in", 0): 5, ("in", 3): 0}
    assert len(back.batches) == 3
    assert len(back.offers) == 2
    for got, sent in zip(back.batches, update.batches, strict=True):
        for key, value in sent.as_kwargs().items():
            _same(value, got.as_kwargs()[key])
    for got_o, sent_o in zip(back.offers, update.offers, strict=True):
        for field in ("sites", "values", "ts", "normal"):
            _same(getattr(sent_o, field), getattr(got_o, field))
    assert back.offers[0].values.flags.writeable  # own memory, not a view of the frame


def test_an_empty_update_is_a_small_frame() -> None:
    frame = encode_update(Update())
    assert len(frame) < 200
    assert decode_update(frame[LENGTH_BYTES:]) == Update(batches=[], offers=[])


@pytest.mark.parametrize(
    "mangle",
    [
        lambda body: body[:-1],  # truncated data
        lambda body: body + b"\0",  # trailing bytes
        lambda body: body.replace(b'"f8"', b'"O8"', 1),  # a dtype not on the list
        lambda body: body.replace(b"[7]", b"[-7]", 1),  # a negative shape
        lambda body: struct.pack(">I", 10**6) + body[4:],  # header longer than the body
        lambda body: body[:4] + b"!" + body[5:],  # broken JSON
    ],
)
def test_malformed_frames_are_refused(mangle: Any) -> None:
    body = encode_update(_update())[LENGTH_BYTES:]
    with pytest.raises((ValueError, KeyError, TypeError)):
        decode_update(mangle(body))


@pytest.mark.parametrize("n", [0, 1, 2**30 + 1])
def test_absurd_frame_lengths_are_refused(n: int) -> None:
    with pytest.raises(ValueError, match="worker frame"):
        read_length(struct.pack(">I", n))


class _Recorder:
    def __init__(self) -> None:
        self.in_flight: list[int] = []
        self.paused: list[bool] = []
        self.lags: list[dict[tuple[str, int], int]] = []
        self.batches: list[dict[str, Any]] = []

    def batch(self, **kwargs: Any) -> None:
        self.batches.append(kwargs)

    def set_consumer_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        self.lags.append(dict(lags))

    def set_in_flight(self, records: int) -> None:
        self.in_flight.append(records)

    def set_paused(self, paused: bool) -> None:
        self.paused.append(paused)

    def set_model(self, version: str, created_at: float) -> None: ...
    def model_rejected(self, reason: str) -> None: ...
    def set_ready(self, ready: bool) -> None: ...
    def set_site_statuses(self, counts: Mapping[str, int]) -> None: ...


def test_gauges_are_combined_over_workers_and_batches_pass_through() -> None:
    target = _Recorder()
    combined = CombinedGauges(target)
    me, other = combined.view(0), combined.view(1)
    me.set_in_flight(10)
    other.set_in_flight(5)
    assert target.in_flight[-1] == 15
    me.set_consumer_lag({("in", 0): 3})
    other.set_consumer_lag({("in", 1): 4, ("in", 2): 0})
    assert target.lags[-1] == {("in", 0): 3, ("in", 1): 4, ("in", 2): 0}
    other.set_consumer_lag({("in", 2): 9})  # partition 1 was revoked from worker 1
    assert target.lags[-1] == {("in", 0): 3, ("in", 2): 9}
    me.set_paused(False)
    other.set_paused(True)
    assert target.paused[-1] is True
    other.batch(consumed=1)
    assert target.batches == [{"consumed": 1}]
    combined.forget(1)  # worker 1 ended: its gauges no longer count
    assert (target.in_flight[-1], target.paused[-1]) == (10, False)
    assert target.lags[-1] == {("in", 0): 3}


def test_a_worker_report_collects_until_taken() -> None:
    report = WorkerReport()
    assert report.pending(ready=False)  # nothing told yet
    first = report.take(ready=False)
    assert not first.started
    assert not report.pending(ready=False)
    report.set_in_flight(3)
    report.set_consumer_lag({("in", 1): 2})
    report.batch(
        consumed=2,
        scored=2,
        dead_letters={},
        scoring_seconds=0.5,
        lags_s=[0.1, 0.2],
        sites=["a", "b"],
        anomalies=[True, False],
        severities=[2.0, 0.5],
        statuses=["active", "active"],
    )
    report.offer(["a"], np.ones((1, 2), np.float32), np.zeros(1), np.ones(1, bool))
    assert report.pending(ready=False)
    update = report.take(ready=False)
    assert (update.in_flight, dict(update.lags)) == (3, {("in", 1): 2})
    assert len(update.batches) == 1
    assert len(update.offers) == 1
    assert update.batches[0].anomalies.dtype == np.bool_
    assert not report.pending(ready=False)
    assert report.pending(ready=True)  # a changed flag is news


async def test_start_is_told_in_the_next_update() -> None:
    import asyncio

    report = WorkerReport()
    report.take(ready=False)
    await report.start(asyncio.Event())
    assert report.pending(ready=False)
    assert report.take(ready=False).started


def test_settings_reach_a_worker_whole_secrets_included() -> None:
    settings = load_settings(
        None, kafka={"sasl_password": "s3cret", "group_id": "g"}, service={"workers": 3}
    )
    back = settings_from_json(settings_json(settings))
    assert back == settings
    assert back.kafka.sasl_password.get_secret_value() == "s3cret"


@pytest.mark.parametrize("data", [b"not json", b"[1]", b'{"service": {"workers": 0}}'])
def test_bad_worker_settings_fail_with_a_config_error(data: bytes) -> None:
    with pytest.raises(ConfigError):
        settings_from_json(data)


@pytest.mark.parametrize("workers", [0, 65])
def test_workers_out_of_range_names_the_field(workers: int) -> None:
    with pytest.raises(ConfigError, match=r"service\.workers"):
        load_settings(None, service={"workers": workers})
