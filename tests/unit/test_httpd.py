"""The HTTP endpoints over real loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from streamvae.httpd import serve_http


@dataclass
class Server:
    port: int
    state: dict[str, bool] = field(default_factory=lambda: {"live": True, "ready": False})


async def _request(port: int, raw: bytes, *, read_timeout: float = 5.0) -> tuple[int, bytes, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(read_timeout):
            data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, head, body


def _get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n".encode()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = {"live": True, "ready": False}
    stop = asyncio.Event()
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def boom() -> bytes:
        if state.get("boom"):
            raise RuntimeError("render failed")
        return b"streamvae_ready 0.0\n"

    task = asyncio.create_task(
        serve_http(
            "127.0.0.1",
            0,
            metrics=boom,
            live=lambda: state["live"],
            ready=lambda: state["ready"],
            stop=stop,
            bound=bound,
            timeout_s=0.3,
            max_request_bytes=1024,
        )
    )
    port = await asyncio.wait_for(bound, 5)
    yield Server(port, state)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_metrics_endpoint(server: Server) -> None:
    status, head, body = await _request(server.port, _get("/metrics"))
    assert status == 200
    assert b"Content-Type: text/plain; version=0.0.4" in head
    assert body == b"streamvae_ready 0.0\n"
    status, head, body = await _request(server.port, _get("/metrics?x=1", "HEAD"))
    assert (status, body) == (200, b"")
    assert b"Content-Length: 20" in head


@pytest.mark.parametrize(
    ("path", "flag", "value", "expected"),
    [
        ("/healthz", "live", True, 200),
        ("/healthz", "live", False, 503),
        ("/readyz", "ready", True, 200),
        ("/readyz", "ready", False, 503),
    ],
)
async def test_probes_follow_the_callables(
    server: Server, path: str, flag: str, value: bool, expected: int
) -> None:
    server.state[flag] = value
    status, _, _ = await _request(server.port, _get(path))
    assert status == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (_get("/nope"), 404),
        (_get("/metrics", "POST"), 405),
        (b"garbage\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 4096 + b"\r\n\r\n", 431),
    ],
)
async def test_bad_requests(server: Server, raw: bytes, expected: int) -> None:
    status, _, _ = await _request(server.port, raw)
    assert status == expected


async def test_slow_client_times_out(server: Server) -> None:
    status, _, _ = await _request(server.port, b"GET /metr", read_timeout=3)
    assert status == 408


async def test_handler_error_is_500_and_server_survives(server: Server) -> None:
    server.state["boom"] = True
    status, _, _ = await _request(server.port, _get("/metrics"))
    assert status == 500
    server.state["boom"] = False
    status, _, _ = await _request(server.port, _get("/metrics"))
    assert status == 200


async def test_stop_closes_listener_and_idle_connections() -> None:
    stop = asyncio.Event()
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    ok: Callable[[], bool] = lambda: True  # noqa: E731
    task = asyncio.create_task(
        serve_http("127.0.0.1", 0, metrics=bytes, live=ok, ready=ok, stop=stop, bound=bound)
    )
    port = await asyncio.wait_for(bound, 5)
    _, idle = await asyncio.open_connection("127.0.0.1", port)  # never sends anything
    stop.set()
    await asyncio.wait_for(task, 5)
    idle.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_port_in_use_raises() -> None:
    holder = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = holder.sockets[0].getsockname()[1]
    ok: Callable[[], bool] = lambda: True  # noqa: E731
    try:
        with pytest.raises(OSError, match=r"(?i)in use"):
            await serve_http(
                "127.0.0.1", port, metrics=bytes, live=ok, ready=ok, stop=asyncio.Event()
            )
    finally:
        holder.close()
        await holder.wait_closed()
