"""Run the sink on a thread for a test, wait for conditions (bounded), stop processes."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from streams.settings import SinkSettings
from streams.sink.run import run_sink
from streams.sink.sink import SinkStats


@contextmanager
def running_sink(settings: SinkSettings, **kwargs: Any) -> Iterator[SinkStats]:
    stop = threading.Event()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["stats"] = run_sink(settings, stop=stop, **kwargs)
        except BaseException as exc:
            box["error"] = exc

    stats = SinkStats()
    thread = threading.Thread(target=target)
    kwargs["stats"] = stats
    thread.start()
    try:
        yield stats
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive(), "sink did not stop"
        if "error" in box:
            raise box["error"]
        assert box["stats"] is stats


def wait_for(check: Callable[[], bool], timeout_s: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def stop_process(process: subprocess.Popen[Any], timeout_s: float = 20) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
