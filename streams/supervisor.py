"""Crash-only children under a supervisor: what `llcr up` runs its processes with.

Every child is an `llcr` subcommand in a session of its own, logging to a file. A child
that fails (a non-zero exit, a signal) while the supervisor is not stopping is reported
(its exit code and the last lines of its log) and started again after a backoff that
doubles from 1 s up to 30 s and starts over once a child has stayed up for a minute; one
that exits 0 has finished its job (a replay at its end) and is left alone. A request file
``<control>/<name>.restart`` (what `llcr restart NAME` writes) restarts one child now;
``<control>/<name>.pid`` holds each child's current pid.
Children stop in the reverse order of their start (the ExitStack the caller passes), so
the sink, started first, stores what the others emit while they stop.

systemd (``Restart=on-failure``, ``RestartSec``) and Kubernetes (``restartPolicy``) do the
same job in a deployment; infra/ holds those units.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)
CLI = "import sys; sys.argv[0] = 'llcr'; from schemas.cli import main; main()"


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    command: tuple[str, ...] = (sys.executable, "-c", CLI)  # the argv is appended
    pid_dir: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    last_exit: int | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    backoff_s: float = 1.0
    finished: bool = False  # exited 0 by itself: not restarted (systemd's on-failure)
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self, now: float) -> None:
        if self._log is None:
            self._log = self.log_path.open("ab")
        # A session of its own: Ctrl-C in the terminal reaches the supervisor only, which
        # then stops the children in order instead of all at once.
        self.process = subprocess.Popen(
            [*self.command, *self.argv],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started_at = now
        self.restart_at = None
        self.finished = False
        if self.pid_dir is not None:  # for operators (and tests) who look for a child
            (self.pid_dir / f"{self.name}.pid").write_text(str(self.process.pid))

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 15.0) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in %.0f s; killing it", self.name, timeout_s)
                process.kill()
                process.wait(5)

    def close(self) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_bytes()[-4000:].decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Supervisor:
    """Starts children, restarts the ones that die, and restarts one on request."""

    def __init__(
        self,
        stack: ExitStack,
        logs: Path,
        env: dict[str, str],
        control: Path,
        *,
        report: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
        max_backoff_s: float = 30.0,
        healthy_after_s: float = 60.0,
        command: tuple[str, ...] = (sys.executable, "-c", CLI),
    ) -> None:
        self._command = command
        self._stack = stack
        self._logs = logs
        self._env = env
        self.control = control
        control.mkdir(parents=True, exist_ok=True)
        self._report = report
        self._clock = clock
        self._max_backoff_s = max_backoff_s
        self._healthy_after_s = healthy_after_s
        self.children: dict[str, Child] = {}
        self._lock = threading.Lock()
        self.stopping = threading.Event()

    def __call__(self, name: str, argv: list[str], **env: str) -> Child:
        child = Child(
            name,
            argv,
            {**self._env, **env},
            self._logs / f"{name}.log",
            self._command,
            pid_dir=self.control,
        )
        with self._lock:
            child.start(self._clock())
            self.children[name] = child
        self._stack.callback(self._close, child)
        return child

    def _close(self, child: Child) -> None:
        self.stopping.set()  # from the first child stopped on, nothing is restarted
        with self._lock:
            child.close()

    def check(self) -> list[str]:
        """One round: note dead children, restart those due, serve restart requests.
        Returns what happened, one line each (also reported)."""
        events: list[str] = []
        if self.stopping.is_set():
            return events
        with self._lock:
            now = self._clock()
            for child in self.children.values():
                events += self._look_after(child, now)
            events += self._serve_requests(now)
        for line in events:
            self._report(line)
        return events

    def _look_after(self, child: Child, now: float) -> list[str]:
        if child.alive() or child.finished:
            return []
        if child.restart_at is None:  # it just ended
            assert child.process is not None
            child.last_exit = child.process.returncode
            if child.last_exit == 0:  # it did its job (a replay that ran to its end)
                child.finished = True
                return [f"child     {child.name} finished"]
            if now - child.started_at >= self._healthy_after_s:
                child.backoff_s = 1.0
            child.restart_at = now + child.backoff_s
            tail = child.log_tail().replace("\n", "\n          ")
            line = (
                f"child     {child.name} exited with {child.last_exit}; restarting in "
                f"{child.backoff_s:.0f} s. Its log ends:\n          {tail}"
            )
            child.backoff_s = min(self._max_backoff_s, child.backoff_s * 2)
            logger.warning("%s", line)
            return [line]
        if now >= child.restart_at:
            child.start(now)
            child.restarts += 1
            return [f"child     {child.name} restarted ({child.restarts} restart(s) so far)"]
        return []

    def _serve_requests(self, now: float) -> list[str]:
        events = []
        for request in sorted(self.control.glob("*.restart")):
            name = request.name.removesuffix(".restart")
            child = self.children.get(name)
            if child is None:
                events.append(f"child     no child named {name!r} to restart")
            else:
                child.stop()
                child.start(now)
                child.restarts += 1
                events.append(f"child     {name} restarted on request")
            request.with_suffix(".answer").write_text(events[-1].removeprefix("child     "))
            request.unlink(missing_ok=True)
        return events

    def run(self, stop: threading.Event, interval_s: float = 0.5) -> None:
        """Check every ``interval_s`` until ``stop`` (a thread's loop)."""
        while not stop.wait(interval_s):
            try:
                self.check()
            except Exception:  # the supervisor must outlive anything it watches
                logger.exception("supervisor check failed")

    def line(self) -> str:
        """Every child's state in one line, for the live view and the stop summary."""
        with self._lock:
            parts = []
            for child in self.children.values():
                if child.alive():
                    state = "up"
                elif child.finished:
                    state = "finished"
                else:
                    state = f"down (exit {child.last_exit})"
                if child.restarts:
                    state += f", {child.restarts} restart(s)"
                parts.append(f"{child.name} {state}")
        return "children  " + "; ".join(parts)


def request_restart(control: Path, name: str, timeout_s: float = 30.0) -> str | None:
    """Ask the supervisor watching ``control`` to restart ``name``: its answer, or None
    when none came in ``timeout_s`` (no supervisor watches there)."""
    request = control / f"{name}.restart"
    answer = request.with_suffix(".answer")
    answer.unlink(missing_ok=True)
    request.write_text(str(time.time()))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if answer.exists():
            text = answer.read_text()
            answer.unlink(missing_ok=True)
            return text
        time.sleep(0.2)
    request.unlink(missing_ok=True)
    return None
