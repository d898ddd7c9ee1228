"""A minimal asyncio HTTP/1.1 server for /metrics, /healthz and /readyz.

No web framework: `asyncio.start_server`, one request per connection
(`Connection: close`), GET and HEAD only, a cap on the request head size and a
timeout on every read and write, so a slow or hostile client cannot hold the
daemon's event loop or memory.

    GET /metrics  200, Prometheus text format (the `metrics` callable's bytes)
    GET /healthz  200 "ok" while `live()`, else 503 (liveness: restart me)
    GET /readyz   200 "ready" while `ready()`, else 503 (readiness: do not route to me)
    anything else 404; other methods 405; head too large 431; too slow 408

The callables run on the event loop and must be cheap (render of the registry is
about a millisecond). `serve_http` returns once `stop` is set, after closing the
listening socket and open connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from http import HTTPStatus

log = logging.getLogger(__name__)

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"


def _response(status: HTTPStatus, body: bytes, content_type: str, *, head: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "Cache-Control: no-store",
    ]
    if status is HTTPStatus.METHOD_NOT_ALLOWED:
        lines.append("Allow: GET, HEAD")
    head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return head_bytes if head else head_bytes + body


def _text(status: HTTPStatus, text: str = "", *, head: bool = False) -> bytes:
    return _response(status, (text or status.phrase).encode() + b"\n", TEXT_CONTENT_TYPE, head=head)


class _Handler:
    """Routes one request per connection. Holds the open writers so `stop` can close them."""

    def __init__(
        self,
        metrics: Callable[[], bytes],
        live: Callable[[], bool],
        ready: Callable[[], bool],
        timeout_s: float,
    ) -> None:
        self._metrics, self._live, self._ready = metrics, live, ready
        self._timeout_s = timeout_s
        self.writers: set[asyncio.StreamWriter] = set()

    def route(self, method: str, target: str) -> bytes:
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return _text(HTTPStatus.METHOD_NOT_ALLOWED, head=head)
        path = target.split("?", 1)[0]
        if path == "/metrics":
            return _response(HTTPStatus.OK, self._metrics(), METRICS_CONTENT_TYPE, head=head)
        if path == "/healthz":
            ok = self._live()
            return _text(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE,
                         "ok" if ok else "not live", head=head)  # fmt: skip
        if path == "/readyz":
            ok = self._ready()
            return _text(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE,
                         "ready" if ok else "not ready", head=head)  # fmt: skip
        return _text(HTTPStatus.NOT_FOUND, head=head)

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes | None:
        """The request head, or a complete error response to send instead."""
        try:
            async with asyncio.timeout(self._timeout_s):
                return await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            raise _Reply(_text(HTTPStatus.REQUEST_TIMEOUT)) from None
        except asyncio.LimitOverrunError:
            raise _Reply(_text(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)) from None
        except asyncio.IncompleteReadError:
            return None  # client went away

    def respond(self, head: bytes) -> bytes:
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _text(HTTPStatus.BAD_REQUEST)
        method, target, _ = parts
        try:
            return self.route(method, target)
        except Exception:
            log.exception("HTTP handler for %s %s failed", method, target)
            return _text(HTTPStatus.INTERNAL_SERVER_ERROR)

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            try:
                head = await self._read_head(reader)
                if head is None:
                    return
                reply = self.respond(head)
            except _Reply as early:
                reply = early.payload
            writer.write(reply)
            async with asyncio.timeout(self._timeout_s):
                await writer.drain()
        except (TimeoutError, ConnectionError) as exc:
            log.debug("HTTP client dropped: %r", exc)
        finally:
            self.writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(self._timeout_s):
                    await writer.wait_closed()


class _Reply(Exception):  # noqa: N818 - control flow, never escapes this module
    """Carries an error response out of request reading."""

    def __init__(self, payload: bytes) -> None:
        super().__init__()
        self.payload = payload


async def serve_http(
    host: str,
    port: int,
    *,
    metrics: Callable[[], bytes],
    live: Callable[[], bool],
    ready: Callable[[], bool],
    stop: asyncio.Event,
    bound: asyncio.Future[int] | None = None,
    timeout_s: float = 5.0,
    max_request_bytes: int = 8192,
) -> None:
    """Serve until `stop` is set. Port 0 binds an ephemeral port, reported via `bound`.

    Raises OSError when the address cannot be bound (also set on `bound`).
    """
    handler = _Handler(metrics, live, ready, timeout_s)
    try:
        server = await asyncio.start_server(handler, host, port, limit=max_request_bytes)
    except OSError as exc:
        if bound is not None and not bound.done():
            bound.set_exception(exc)
        raise
    sockets = server.sockets
    actual = sockets[0].getsockname()[1] if sockets else port
    log.info("HTTP endpoints on http://%s:%d (/metrics /healthz /readyz)", host, actual)
    if bound is not None and not bound.done():
        bound.set_result(actual)
    try:
        await stop.wait()
    finally:
        server.close()
        for writer in list(handler.writers):
            writer.close()
        await server.wait_closed()
        log.debug("HTTP server on port %d closed", actual)
