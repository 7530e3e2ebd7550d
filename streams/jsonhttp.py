"""A small JSON-over-HTTP server (stdlib ``http.server``) for llcr's local endpoints: the
query endpoint, the signals API and the simulated credit provider.

A handler maps (method, path, lower-cased headers, body bytes) to a :class:`Reply`; the server
serialises it as JSON, on its own daemon threads. Loopback by default.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)

MAX_BODY = 1_000_000


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    delay_s: float = 0.0  # answer this late (the provider simulator's injected timeouts)


Handle = Callable[[str, str, Mapping[str, str], bytes], Reply]


def error(status: int, message: str) -> Reply:
    return Reply(status, {"error": message})


class JsonServer:
    """Serve ``handle`` on ``host:port`` (0: a free port) until closed."""

    def __init__(
        self,
        handle: Handle,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body: int = MAX_BODY,
        read_timeout_s: float = 10.0,
    ) -> None:
        self._server = ThreadingHTTPServer(
            (host, port), _handler_class(handle, max_body, read_timeout_s)
        )
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> JsonServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> JsonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def body_length(headers: Any, max_body: int) -> tuple[int, Reply | None]:
    """The body's length from its headers, or the reply that refuses it: a chunked body
    (411), a Content-Length that is not a plain non-negative integer (400), one over
    ``max_body`` (413). Whatever the headers say, no more than ``max_body`` is read."""
    declared = headers.get("Content-Length")
    if headers.get("Transfer-Encoding"):
        return 0, error(411, "send a Content-Length (no chunked bodies)")
    try:
        length = int(declared or 0)
        if length < 0 or (declared is not None and not declared.strip().isdigit()):
            raise ValueError(declared)
    except ValueError:
        return 0, error(400, f"bad Content-Length {declared!r}")
    if length > max_body:
        return 0, error(413, f"request too large (at most {max_body} bytes)")
    return length, None


def _handler_class(
    handle: Handle, max_body: int, read_timeout_s: float
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the routing API is on request paths
        # one segment per reply and no Nagle: headers and body written separately would
        # meet the client's delayed ACK (~40 ms a request on keep-alive connections)
        disable_nagle_algorithm = True
        wbufsize = 1 << 16
        timeout = read_timeout_s  # a client that stops sending cannot hold a thread

        def _serve(self, method: str) -> None:
            length, refusal = body_length(self.headers, max_body)
            if refusal is not None:
                # the unread body must not be parsed as the next request
                self.close_connection = True
                self._send(refusal)
                return
            try:
                body = self.rfile.read(length) if length else b""
            except OSError:  # timed out mid-body
                self.close_connection = True
                return
            if len(body) < length:
                self.close_connection = True
                self._send(error(400, "body shorter than its Content-Length"))
                return
            try:
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = handle(method, self.path, headers, body)
            except Exception as exc:  # a bug must not kill the server thread silently
                logger.exception("%s %s failed", method, self.path)
                reply = error(500, f"internal error: {type(exc).__name__}")
            self._send(reply)

        def _send(self, reply: Reply) -> None:
            if reply.delay_s:
                time.sleep(reply.delay_s)
            data = json.dumps(reply.body).encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up waiting
                self.close_connection = True

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("http: " + format, *args)

    return Handler


def json_body(body: bytes) -> Any:
    """The parsed JSON body; ValueError with a readable message when it is not JSON."""
    try:
        return json.loads(body) if body else None
    except ValueError as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    except RecursionError:  # 100,000 nested '[': refused, not a 500
        raise ValueError("body is not JSON this service reads: nested too deeply") from None
