"""The demo's terminal view: a live block of lines, or plain log lines.

`render(snapshot)` is pure (tested without a terminal). `LiveConsole` redraws
that block in place with plain ANSI escapes (cursor up, clear line); no curses.
`LogConsole` is what a pipe, a CI log or `--no-ui` gets: one status line every
few seconds plus a line per alert and per event. `make_console` picks one.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import Protocol, TextIO

from streamvae.scoreboard import Alert, RetrainEvent, Snapshot

_RESET, _BOLD, _DIM = "\x1b[0m", "\x1b[1m", "\x1b[2m"
_RED, _GREEN, _YELLOW, _CYAN = "\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[36m"
_STATUS_COLOR = {"active": _GREEN, "warming": _YELLOW}


class Console(Protocol):
    def note(self, text: str) -> None:
        """A line that stays (phase changes, events)."""

    def show(self, snapshot: Snapshot) -> None:
        """The current state (redrawn live, or summarised now and then)."""

    def close(self) -> None:
        """Leave the terminal tidy."""


def _paint(text: str, code: str, color: bool) -> str:
    return f"{code}{text}{_RESET}" if color else text


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts))


def describe_alert(alert: Alert) -> str:
    truth = alert.truth
    verdict = (
        f"true {truth.kind}: {','.join(truth.sensors[:3])}" if truth.anomaly else "false alarm"
    )
    return (
        f"{_clock(alert.ts)} {alert.site:<10} severity {alert.severity:5.2f}  "
        f"top {', '.join(alert.top):<34} [{verdict}]"
    )


def describe_retrain(event: RetrainEvent) -> str:
    sites = f" sites: {', '.join(event.sites)}" if event.sites else ""
    detail = f" ({event.detail})" if event.detail else ""
    return f"+{event.at_s:6.1f}s {event.outcome:<9} {event.version}{detail}{sites}"


def render(
    snapshot: Snapshot, *, header: str = "", color: bool = False, width: int = 0
) -> list[str]:
    """The live block, one string per line; each line cut to `width` characters (0: no cut),
    so the block never wraps and redrawing in place stays exact."""
    s = snapshot
    rows: list[tuple[str, str]] = [  # (text, colour)
        (
            f"streamvae demo  t={s.elapsed_s:6.1f}s  model {s.model_version}  "
            f"throughput {s.throughput:7.1f} rec/s  scored {s.records:,}",
            _BOLD,
        )
    ]
    if header:
        rows.append((header, ""))
    rows.append((f"{'site':<12}{'status':<10}{'rate/s':>8}  {'alerts/true':>11}", _DIM))
    for site, status in s.site_status.items():
        flagged, truth = s.site_counts.get(site, (0, 0))
        counts = f"{flagged}/{truth}" if status == "active" else "-"
        text = f"{site:<12}{status:<10}{s.site_rates.get(site, 0.0):8.1f}  {counts:>11}"
        rows.append((text, _STATUS_COLOR.get(status, _DIM)))
    rows.append(("recent alerts (top sensors)", _DIM))
    rows.extend(("  " + describe_alert(a), _RED if a.truth.anomaly else _YELLOW) for a in s.alerts)
    if not s.alerts:
        rows.append(("  none yet", ""))
    rows.append(("models", _DIM))
    rows.extend(("  " + describe_retrain(e), _CYAN) for e in s.retrains)
    out = []
    for text, code in rows:
        cut = text[: width - 1] if width > 1 else text
        out.append(_paint(cut, code, color) if code else cut)
    return out


class LiveConsole:
    """Redraws the block in place. Notes scroll above it."""

    def __init__(self, stream: TextIO, *, header: str = "", color: bool = True) -> None:
        self._stream, self._header, self._color = stream, header, color
        self._drawn = 0
        self._last: Snapshot | None = None

    def set_header(self, header: str) -> None:
        self._header = header

    def _clear(self) -> None:
        if self._drawn:
            self._stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def note(self, text: str) -> None:
        self._clear()
        self._stream.write(text + "\n")
        if self._last is not None:
            self._draw(self._last)
        self._stream.flush()

    def show(self, snapshot: Snapshot) -> None:
        self._last = snapshot
        self._clear()
        self._draw(snapshot)
        self._stream.flush()

    def _draw(self, snapshot: Snapshot) -> None:
        width = shutil.get_terminal_size((100, 24)).columns
        lines = render(snapshot, header=self._header, color=self._color, width=width)
        self._stream.write("".join(f"\x1b[2K{line}\n" for line in lines))
        self._drawn = len(lines)

    def close(self) -> None:
        self._stream.flush()


class LogConsole:
    """One line per event, alerts (at most one per site per `alert_every_s`), and a status
    line every `every_s` seconds."""

    def __init__(
        self,
        stream: TextIO,
        *,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        alert_every_s: float = 3.0,
    ) -> None:
        self._stream, self._every, self._clock = stream, every_s, clock
        self._next = 0.0
        self._seen: set[tuple[str, float]] = set()
        self._events: set[RetrainEvent] = set()
        self._alert_every = alert_every_s
        self._last_alert: dict[str, float] = {}
        self._header = ""

    def set_header(self, header: str) -> None:
        self._header = header

    def note(self, text: str) -> None:
        self._write(text)

    def _write(self, text: str) -> None:
        self._stream.write(f"[demo] {text}\n")
        self._stream.flush()

    def show(self, snapshot: Snapshot) -> None:
        for event in snapshot.retrains:
            if event not in self._events:
                self._events.add(event)
                self._write("model " + describe_retrain(event))
        fresh = [a for a in snapshot.alerts if (a.site, a.ts) not in self._seen]
        for alert in reversed(fresh):
            # one line per site every `alert_every_s`: an episode is one line, not fifty
            if self._clock() - self._last_alert.get(alert.site, -1e9) >= self._alert_every:
                self._last_alert[alert.site] = self._clock()
                self._write("alert " + describe_alert(alert))
        self._seen = {(a.site, a.ts) for a in snapshot.alerts}
        if self._clock() < self._next:
            return
        self._next = self._clock() + self._every
        sites = " ".join(
            f"{site}={status}:{snapshot.site_rates.get(site, 0.0):.0f}/s"
            for site, status in snapshot.site_status.items()
        )
        self._write(
            f"t={snapshot.elapsed_s:.0f}s model={snapshot.model_version} "
            f"scored={snapshot.records} rate={snapshot.throughput:.0f}/s {sites}"
        )

    def close(self) -> None:
        self._stream.flush()


def make_console(stream: TextIO, *, no_ui: bool) -> LiveConsole | LogConsole:
    """Live view on a real terminal, log lines otherwise (pipe, CI, `--no-ui`, TERM=dumb)."""
    tty = hasattr(stream, "isatty") and stream.isatty()
    if no_ui or not tty or os.environ.get("TERM", "") in ("", "dumb"):
        return LogConsole(stream)
    return LiveConsole(stream, color="NO_COLOR" not in os.environ)
