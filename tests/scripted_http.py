"""A real HTTP server on 127.0.0.1 that answers each path from a script, for provider tests.

``server.script(path, *responses)``: each request to ``path`` takes the next response;
the last one repeats. A response is ``(status, body)`` or ``(status, body, headers)``;
a dict or list body is sent as JSON. Every request is recorded (path, query, headers).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Response = tuple[int, Any] | tuple[int, Any, dict[str, str]]


@dataclass
class Request:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class ScriptedServer:
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    _scripts: dict[str, list[Response]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, path: str, *responses: Response) -> None:
        with self._lock:
            self._scripts[path] = list(responses)

    def calls(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def _next(self, path: str) -> Response:
        with self._lock:
            script = self._scripts.get(path)
            if not script:
                return (404, {"error": f"no script for {path}"})
            return script.pop(0) if len(script) > 1 else script[0]


@contextmanager
def scripted_server() -> Iterator[ScriptedServer]:
    state = ScriptedServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            state.requests.append(Request(parts.path, query, dict(self.headers.items())))
            status, body, *rest = state._next(parts.path)
            headers = rest[0] if rest else {}
            if isinstance(body, dict | list):
                payload, kind = json.dumps(body).encode(), "application/json"
            else:
                payload, kind = str(body).encode(), "text/html; charset=utf-8"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None: ...

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{http.server_address[1]}"
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        http.shutdown()
        http.server_close()
        thread.join(5)
