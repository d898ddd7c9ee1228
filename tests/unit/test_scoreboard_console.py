from __future__ import annotations

import io

import pytest

from streamvae.console import LiveConsole, LogConsole, make_console, render
from streamvae.scoreboard import Outcome, RetrainEvent, Scoreboard, Tally, top_sensors
from streamvae.simulator import NORMAL, Label

BAD = Label(anomaly=True, kind="spike", sensors=("temp_1",), episode=1)


def _outcome(site: str, ts: float, *, score: float, status: str = "active") -> Outcome:
    return Outcome(
        site,
        ts,
        score,
        10.0,
        status == "active" and score > 10.0,
        status,
        "v1",
        ("temp_1", "rpm_1", "flow_1"),
    )


@pytest.mark.parametrize(
    ("flags", "truths", "precision", "recall"),
    [
        ([True, False], [True, False], 1.0, 1.0),
        ([True, True], [True, False], 0.5, 1.0),
        ([False, False], [True, False], None, 0.0),
        ([False], [False], None, None),
    ],
)
def test_tally(
    flags: list[bool], truths: list[bool], precision: float | None, recall: float | None
) -> None:
    t = Tally()
    for f, y in zip(flags, truths, strict=True):
        t.add(f, y)
    d = t.as_dict()
    assert (d["precision"], d["recall"]) == (precision, recall)


def test_top_sensors_are_the_largest_contributions() -> None:
    assert top_sensors({"a": 1.0, "b": 5.0, "c": 3.0, "d": -2.0}) == ("b", "c", "a")


def test_scoreboard_phases_episodes_and_blame() -> None:
    board = Scoreboard(sites=("p-1", "p-2"), new_site="p-2")
    board.add(_outcome("p-1", 1.0, score=20.0), BAD, now=0.0)
    board.add(_outcome("p-1", 2.0, score=1.0), NORMAL, now=0.5)
    board.add(_outcome("p-2", 1.5, score=20.0, status="warming"), BAD, now=1.0)
    board.add(_outcome("p-2", 2.5, score=20.0), NORMAL, now=3.0)
    board.retrained(RetrainEvent(2.0, "promoted", "v2", ("p-2",)))
    s = board.summary(wall_s=2.0)
    assert s["sites"]["p-1"]["active"]["recall"] == 1.0
    # warming records are never alerted, but the pooled score is compared
    assert s["sites"]["p-2"]["warming"]["recall"] == 1.0
    assert s["sites"]["p-2"]["active"]["precision"] == 0.0
    assert s["sites"]["p-2"]["active_at_s"] == 3.0
    assert s["episodes"] == {"total": 1, "found": 1}
    assert s["blame_top3"] == 1.0
    assert s["throughput_rps"] == 2.0
    assert s["retrains"][0]["sites"] == ["p-2"]
    snap = board.snapshot(now=3.0)
    assert snap.site_status == {"p-1": "active", "p-2": "active"}
    assert len(snap.alerts) == 2
    assert snap.alerts[0].site == "p-2"


def test_render_and_consoles() -> None:
    board = Scoreboard(sites=("p-1",))
    board.add(_outcome("p-1", 1.0, score=20.0), BAD, now=0.0)
    board.retrained(RetrainEvent(0.0, "initial", "v1", ("p-1",)))
    snap = board.snapshot(now=1.0)
    lines = render(snap, header="metrics http://x")
    text = "\n".join(lines)
    assert "p-1" in text
    assert "temp_1" in text
    assert "initial" in text
    assert "metrics" in text
    assert "\x1b[" not in text
    assert "\x1b[" in "\n".join(render(snap, color=True))
    assert max(len(line) for line in render(snap, width=30)) == 29
    live = io.StringIO()
    console = LiveConsole(live)
    console.show(snap)
    console.show(snap)
    console.note("hello")
    assert f"\x1b[{len(lines) - 1}F" in live.getvalue()
    logs = io.StringIO()
    log_console = LogConsole(logs, clock=lambda: 0.0)
    log_console.show(snap)
    log_console.show(snap)
    out = logs.getvalue()
    assert out.count("alert ") == 1
    assert out.count("model ") == 1
    assert out.count("t=") == 1
    assert isinstance(make_console(io.StringIO(), no_ui=False), LogConsole)
