"""The supervisor `llcr up` runs its children under, on real child processes."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from streams.supervisor import Supervisor, request_restart

SLEEPER = (
    sys.executable,
    "-c",
    "import sys, time; print('up', sys.argv[1:], flush=True); time.sleep(60)",
)
CRASHER = (sys.executable, "-c", "import sys; print('broken', flush=True); sys.exit(3)")
FINISHER = (sys.executable, "-c", "print('all done')")


def supervised(stack: ExitStack, tmp_path: Path, lines: list[str], **kw: Any) -> Supervisor:
    """A supervisor logging to ``tmp_path`` that reports into ``lines``."""
    return Supervisor(
        stack, tmp_path, dict(os.environ), tmp_path / "control", report=lines.append, **kw
    )


def wait_until(check, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_dead_child_is_reported_and_restarted_and_one_restarts_on_request(tmp_path: Path) -> None:
    lines: list[str] = []
    with ExitStack() as stack:
        supervisor = supervised(stack, tmp_path, lines, command=SLEEPER)
        worker = supervisor("worker", ["w"])
        sink = supervisor("sink", ["s"])
        stop = threading.Event()
        thread = threading.Thread(target=supervisor.run, args=(stop, 0.05))
        thread.start()
        try:
            assert worker.process is not None
            first = worker.process.pid
            os.kill(first, signal.SIGKILL)
            wait_until(lambda: worker.restarts == 1 and worker.alive())
            assert worker.process.pid != first and worker.last_exit == -signal.SIGKILL
            assert any("worker exited with -9" in line for line in lines)

            before = sink.process.pid if sink.process else None
            answer = request_restart(supervisor.control, "sink", timeout_s=10)
            assert answer == "sink restarted on request"
            assert sink.process is not None and sink.process.pid != before and sink.alive()
            assert request_restart(supervisor.control, "nobody", timeout_s=10) == (
                "no child named 'nobody' to restart"
            )
            assert supervisor.line() == ("children  worker up, 1 restart(s); sink up, 1 restart(s)")
        finally:
            stop.set()
            thread.join(5)
    assert not worker.alive() and not sink.alive()  # stopped with the stack
    assert supervisor.check() == []  # and never restarted while stopping


def test_a_crash_loop_backs_off(tmp_path: Path) -> None:
    now = [0.0]
    lines: list[str] = []
    with ExitStack() as stack:
        supervisor = supervised(
            stack,
            tmp_path,
            lines,
            clock=lambda: now[0],
            command=CRASHER,
            max_backoff_s=4.0,
        )
        child = supervisor("grid", [])
        delays = []
        for _ in range(5):
            assert child.process is not None
            child.process.wait(10)
            supervisor.check()  # noticed: a restart is scheduled
            assert child.restart_at is not None
            delays.append(child.restart_at - now[0])
            now[0] = child.restart_at
            supervisor.check()  # due: restarted
        assert delays == [1.0, 2.0, 4.0, 4.0, 4.0]
        assert child.restarts == 5 and child.last_exit == 3
        assert "broken" in lines[0]  # the report carries the end of its log


def test_a_child_that_exits_0_has_finished_and_is_not_restarted(tmp_path: Path) -> None:
    lines: list[str] = []
    with ExitStack() as stack:
        supervisor = supervised(stack, tmp_path, lines, command=FINISHER)
        child = supervisor("grid", [])
        assert child.process is not None
        child.process.wait(10)
        assert supervisor.check() == ["child     grid finished"]
        assert supervisor.check() == [] and child.restarts == 0
        assert supervisor.line() == "children  grid finished"
