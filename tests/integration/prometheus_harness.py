"""A real Prometheus server for tests: started on a free loopback port with tmp storage,
scraping one target every second and evaluating the streamvae rules."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "streamvae-rules.yml"


def tool(name: str) -> str:
    """The path of a binary from Debian's prometheus package; skips the test without it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian package prometheus; make system-deps)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def api_get(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())["data"]


async def wait_for_samples(port: int, query: str, deadline_s: float = 25.0) -> list[dict[str, Any]]:
    """Poll an instant query until it returns samples."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            data = await asyncio.to_thread(api_get, port, "query", query=query)
            if data["result"]:
                result: list[dict[str, Any]] = data["result"]
                return result
        except OSError:
            pass  # Prometheus still starting
        if time.monotonic() > end:
            raise AssertionError(f"no samples for {query!r} within {deadline_s} s")
        await asyncio.sleep(0.25)


def write_prometheus_config(tmp: Path, target_port: int) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {RULES}\n"
        "scrape_configs:\n  - job_name: streamvae\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target_port}']\n"
    )
    return config


@contextlib.asynccontextmanager
async def running_prometheus(tmp: Path, target_port: int) -> AsyncIterator[int]:
    """A Prometheus server scraping 127.0.0.1:target_port every second; yields its API port."""
    port = _free_port()
    config = write_prometheus_config(tmp, target_port)
    with (tmp / "prometheus.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
        try:
            yield port
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
