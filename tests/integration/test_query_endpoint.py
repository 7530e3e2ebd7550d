"""The sink's local query endpoint under attack: a real sink owning a real chDB directory,
its real HTTP endpoint on 127.0.0.1, and every attack found against the old prefix check.

Each attack must be refused, and afterwards every table holds exactly what it held before.
"""

from __future__ import annotations

import json
import socket
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas.settings import KafkaSettings
from schemas.topics import Topics
from streams.settings import ClickHouseSettings
from streams.sink.query import QueryError, endpoint_file, run_query
from tests.integration.test_sink import counts, every_topic, produce, sink_settings
from tests.sink_run import running_sink, wait_for


@pytest.fixture
def endpoint(
    topics: Topics, kafka: KafkaSettings, clickhouse_settings: ClickHouseSettings, unique: str
) -> Iterator[dict[str, Any]]:
    """A running sink with one record of every topic stored; yields the endpoint file."""
    produce(kafka, every_topic(range(2)))
    settings = sink_settings(kafka, clickhouse_settings, f"sink-{unique}")
    with running_sink(settings):
        path = endpoint_file(clickhouse_settings)
        wait_for(path.exists, what="the sink to own chDB")
        # every table, not one: the sink inserts a batch table by table, and a query in
        # between sees the tables written so far (a CI run read "before" too early)
        wait_for(lambda: set(counts(clickhouse_settings).values()) == {2}, what="the rows")
        yield {"path": path, **json.loads(path.read_text())}


def post(ep: dict[str, Any], sql: str | bytes, token: str | None = "ok", **kw: Any) -> Any:
    headers = kw.pop("headers", {})
    if token is not None:
        headers["Authorization"] = f"Bearer {ep['token'] if token == 'ok' else token}"
    body = sql.encode() if isinstance(sql, str) else sql
    return httpx.post(f"{ep['url']}/query", content=body, headers=headers, timeout=60, **kw)


def test_the_endpoint_file_is_private_and_the_token_is_required(
    endpoint: dict[str, Any],
) -> None:
    mode = stat.S_IMODE(Path(endpoint["path"]).stat().st_mode)
    assert mode == 0o600, oct(mode)
    assert len(endpoint["token"]) >= 32
    assert post(endpoint, "SELECT 1", token=None).status_code == 401
    assert post(endpoint, "SELECT 1", token="guess").status_code == 401
    assert post(endpoint, "SELECT 1", token=endpoint["token"][:-1]).status_code == 401
    ok = post(endpoint, "SELECT 1 AS one")
    assert ok.status_code == 200 and ok.json()["rows"] == [[1]]


class _Recorder(BaseHTTPRequestHandler):
    hits: list[str] = []  # noqa: RUF012  (one server per test)

    def do_GET(self) -> None:
        _Recorder.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"secret\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_every_known_attack_is_refused_and_nothing_changes(
    endpoint: dict[str, Any], clickhouse_settings: ClickHouseSettings, tmp_path: Path
) -> None:
    before = counts(clickhouse_settings)
    ledger_before = run_query(
        clickhouse_settings, "SELECT seq, quantity_g, hash FROM llcr.ledger ORDER BY seq"
    ).rows
    web = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    target = f"http://127.0.0.1:{web.server_address[1]}/x"
    outfile = tmp_path / "written.txt"
    attacks = {
        "file": "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "url (SSRF)": f"SELECT * FROM url('{target}', 'LineAsString')",
        "into outfile": f"SELECT 1 INTO OUTFILE '{outfile}'",
        "into outfile after union": f"SELECT 1 UNION ALL SELECT 2 INTO OUTFILE '{outfile}'",
        "nested comment insert": "/* /* */ SELECT 1 */ INSERT INTO llcr.dead_letters "
        "(dead_letter_id) VALUES ('x')",
        "nested comment alter": "/* /* */ SELECT 1 */ ALTER TABLE llcr.ledger "
        "UPDATE quantity_g = quantity_g + 1000 WHERE 1",
        "nested comment drop": "/* /* */ SELECT 1 */ DROP TABLE llcr.signals",
        "multi-statement": "SELECT 1; DROP TABLE llcr.signals",
        "settings readonly=0": "SELECT 1 SETTINGS readonly = 0",
        "settings limit": "SELECT count() FROM system.numbers SETTINGS max_execution_time = 0",
        "executable": "SELECT * FROM executable('id', 'TSV', 'x String')",
        "remote": "SELECT * FROM remote('127.0.0.1:9000', system.one)",
        "create": "CREATE TABLE llcr.evil (x UInt8) ENGINE = Memory",
        "truncate": "TRUNCATE TABLE llcr.ledger",
        "set": "SET readonly = 0",
        "system": "SYSTEM SHUTDOWN",
    }
    for name, sql in attacks.items():
        response = post(endpoint, sql)
        assert response.status_code in (400, 403), (name, response.status_code, response.text)
        assert "rows" not in response.json(), name
    web.shutdown()
    web.server_close()
    assert _Recorder.hits == [], "the endpoint fetched a URL"
    assert not outfile.exists(), "the endpoint wrote a file"
    assert post(endpoint, "SELECT getSetting('readonly')").json()["rows"] == [[1]]

    # the client path refuses them with the engine's reason too
    with pytest.raises(QueryError, match="readonly"):
        run_query(clickhouse_settings, "DROP TABLE llcr.ledger")

    assert counts(clickhouse_settings) == before
    ledger_after = run_query(
        clickhouse_settings, "SELECT seq, quantity_g, hash FROM llcr.ledger ORDER BY seq"
    ).rows
    assert ledger_after == ledger_before


def test_one_bad_request_cannot_stall_the_next(endpoint: dict[str, Any]) -> None:
    # a 900 KB query is refused before it is read or parsed
    huge = "SELECT '" + "x" * 900_000 + "'"
    started = time.monotonic()
    assert post(endpoint, huge).status_code == 413
    assert post(endpoint, "SELECT 2").json()["rows"] == [[2]]
    assert time.monotonic() - started < 10

    # a lying Content-Length cannot make the server read past the limit (a raw socket:
    # HTTP clients refuse to send such a header)
    for declared in ("-1", "1e9", "12abc"):
        assert _raw_status(endpoint, declared, b"SELECT 3" * 1000) == 400, declared

    # a query that would run forever is stopped by the engine's own limit (10 s default)
    started = time.monotonic()
    endless = post(endpoint, "SELECT count() FROM system.numbers")
    took = time.monotonic() - started
    assert endless.status_code == 400 and "TIMEOUT_EXCEEDED" in endless.json()["error"]
    assert took < 30, took
    started = time.monotonic()
    assert post(endpoint, "SELECT 4").json()["rows"] == [[4]]
    assert time.monotonic() - started < 5

    # analysts' statements still work
    tables = post(endpoint, "SHOW TABLES FROM llcr").json()["rows"]
    assert ["ledger"] in tables
    described = post(endpoint, "DESCRIBE TABLE llcr.ledger").json()["rows"]
    assert described[0][0] == "seq"
    literal = post(endpoint, "SELECT 'it''s INTO OUTFILE \\\\ ok' AS s").json()["rows"]
    assert literal == [["it's INTO OUTFILE \\ ok"]]


def _raw_status(ep: dict[str, Any], content_length: str, body: bytes) -> int:
    host, port = ep["url"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            f"POST /query HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {ep['token']}\r\n"
            f"Content-Length: {content_length}\r\n\r\n".encode()
            + body
        )
        head = conn.recv(4096).decode("latin-1")
    return int(head.split(" ", 2)[1])
