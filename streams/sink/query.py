"""`llcr query`: SQL against the configured store, also while the pipeline runs.

chDB lets one process own a directory. While `llcr sink` (alone or inside `llcr up`) owns
it, the sink serves read-only queries on 127.0.0.1 and writes the address and a random
token next to the directory (``<dir>.endpoint``, owner-only permissions); `llcr query`
uses that endpoint when it answers and opens the directory itself otherwise. With a
ClickHouse server every process connects directly.

The endpoint is guarded by the engine, not by reading the SQL: queries run on a chDB
connection opened with ``readonly=1`` (which also forbids a query to change any setting,
and refuses every table function that reaches files, URLs, processes or other servers),
with ``max_execution_time``, ``max_query_size`` and ``max_result_rows`` fixed on it. The
SQL is first normalised by ClickHouse's own parser (``formatQuerySingleLine``), which
refuses multi-statements, and ``INTO OUTFILE`` (written by chDB's client side, so not
covered by ``readonly``) is refused from the parsed AST. The HTTP body is bounded.
"""

from __future__ import annotations

import csv
import hmac
import io
import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Protocol

from schemas.errors import InfrastructureError, LlcrError
from streams.jsonhttp import JsonServer, Reply, error
from streams.settings import ClickHouseSettings
from streams.sink.store import Store
from streams.store.client import connect, embedded_dir, is_embedded

logger = logging.getLogger(__name__)

Format = Literal["table", "csv", "json"]


class QueryError(LlcrError):
    """The query was refused or failed; the message says why."""


@dataclass(frozen=True)
class Result:
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]


def plain(value: Any) -> Any:
    """A JSON-ready value, the same whichever path the query took."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return _scalar(value)


def _scalar(value: object) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="milliseconds").removesuffix("+00:00")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def endpoint_file(settings: ClickHouseSettings) -> Path:
    directory = embedded_dir(settings.dsn).resolve()
    return directory.with_name(directory.name + ".endpoint")


class RawQuery(Protocol):
    """chDB's connection API: ``query(sql, format)`` returns the formatted result."""

    def query(self, sql: str, fmt: str = ...) -> Any: ...


def _literal(text: str) -> str:
    """``text`` as a ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def guarded_query(conn: RawQuery, sql: str) -> tuple[list[str], list[str], list[list[Any]]]:
    """Run one analyst statement on a ``readonly=1`` connection: parse, check, run.

    Raises :class:`QueryError` for a refused statement; ClickHouse's own errors (readonly
    refusals, syntax, limits) propagate with its message."""
    parsed = json.loads(
        str(conn.query(f"SELECT formatQuerySingleLine({_literal(sql)}) AS q", "JSONCompact"))
    )
    statement = str(parsed["data"][0][0])
    ast = str(conn.query(f"EXPLAIN AST {statement}", "TSVRaw"))
    # The one string literal a query's root node can hold as a direct child is its
    # INTO OUTFILE target (ASTQueryWithOutput::out_file).
    if any(line.startswith(" Literal '") for line in ast.splitlines()):
        raise QueryError("the query endpoint refuses INTO OUTFILE: it writes no files")
    result = json.loads(str(conn.query(statement, "JSONCompact")))
    meta = result.get("meta", [])
    types = [str(m["type"]) for m in meta]
    rows: list[list[Any]] = result.get("data", [])
    # JSON writes 20.0 as 20: give floats back as floats, as the direct path does
    floats = [i for i, t in enumerate(types) if "Float" in t or "Decimal" in t]
    for row in rows if floats else ():
        for i in floats:
            if isinstance(row[i], int) and not isinstance(row[i], bool):
                row[i] = float(row[i])
    return [str(m["name"]) for m in meta], types, rows


def read_only_dsn(directory: Path, settings: ClickHouseSettings) -> str:
    """The chDB connection string of the endpoint's read-only session."""
    fixed = {
        "readonly": 1,
        "max_execution_time": settings.query_max_execution_s,
        "max_query_size": 4 * settings.query_max_body_bytes + 1024,
        "max_result_rows": settings.query_max_result_rows,
        "result_overflow_mode": "throw",
        "output_format_json_quote_64bit_integers": 0,
        "output_format_json_quote_decimals": 0,
        "output_format_json_quote_denormals": 0,
    }
    return f"{directory}?" + "&".join(f"{k}={v}" for k, v in fixed.items())


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600 from creation)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


class QueryServer:
    """Serves ``POST /query`` (body: SQL) from the owning process, on 127.0.0.1 only.

    Every request must carry ``Authorization: Bearer <token>``, the token being the one
    in the endpoint file (readable by the owner only)."""

    def __init__(self, store: Store, settings: ClickHouseSettings, port: int = 0) -> None:
        self._store = store
        self._file = endpoint_file(settings)
        self._token = secrets.token_urlsafe(32)
        self._server = JsonServer(self._handle, port=port, max_body=settings.query_max_body_bytes)

    @property
    def url(self) -> str:
        return self._server.url

    def _handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        given = headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode()):
            return error(401, "a valid bearer token is required (see the .endpoint file)")
        if (method, path) != ("POST", "/query"):
            return error(404, "POST /query")
        try:
            sql = body.decode("utf-8")
        except UnicodeDecodeError:
            return error(400, "the query is not UTF-8")
        try:
            columns, types, rows = self._store.read_only_query(sql)
        except QueryError as exc:
            return error(403, str(exc))
        except Exception as exc:  # the analyst sees ClickHouse's message
            message = str(exc).split("\n")[0][:2000]
            status = 403 if "(READONLY)" in message else 400
            return Reply(status, {"error": message})
        return Reply(200, {"columns": columns, "types": types, "rows": plain(rows)})

    def __enter__(self) -> QueryServer:
        self._server.start()
        write_private(
            self._file, json.dumps({"url": self.url, "pid": os.getpid(), "token": self._token})
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.unlink(missing_ok=True)
        self._server.close()


def run_query(
    settings: ClickHouseSettings, sql: str, timeout_s: float = 120.0, *, endpoint_only: bool = False
) -> Result:
    """Run ``sql`` through the running owner's endpoint, or directly.

    ``endpoint_only``: never open an embedded store directly (a process that runs beside the
    sink, and must not take chDB's lock from it while it starts)."""
    if is_embedded(settings.dsn):
        via_endpoint = _through_endpoint(settings, sql, timeout_s)
        if via_endpoint is not None:
            return via_endpoint
        if endpoint_only:
            raise QueryError(f"no running llcr process serves {settings.dsn} (yet)")
    try:
        client = connect(settings, create=False)
    except InfrastructureError as exc:
        if exc.hint:
            raise
        raise InfrastructureError(
            str(exc),
            hint=f"no running llcr process serves queries for this store (no live "
            f"{endpoint_file(settings).name} beside it)",
        ) from exc
    try:
        result = client.query(sql)
    except Exception as exc:
        raise QueryError(str(exc).split("\n")[0]) from exc
    finally:
        client.close()
    return Result(
        list(result.column_names),
        [t.name for t in result.column_types],
        [plain(list(row)) for row in result.result_rows],
    )


def _through_endpoint(settings: ClickHouseSettings, sql: str, timeout_s: float) -> Result | None:
    import httpx

    path = endpoint_file(settings)
    try:
        described = json.loads(path.read_text())
        url, token = described["url"], described["token"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        response = httpx.post(
            f"{url}/query",
            content=sql.encode(),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )
    except httpx.TransportError:
        logger.info("stale query endpoint %s (%s); opening the store directly", url, path)
        return None
    body = response.json()
    if response.status_code != 200:
        raise QueryError(body.get("error", f"HTTP {response.status_code}"))
    return Result(body["columns"], body["types"], body["rows"])


def render(result: Result, fmt: Format) -> str:
    """The result as an aligned text table, CSV (with header) or JSON (a list of objects)."""
    if fmt == "json":
        return json.dumps([dict(zip(result.columns, row, strict=True)) for row in result.rows])
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows(
            [json.dumps(v) if isinstance(v, (list, dict)) else v for v in row]
            for row in result.rows
        )
        return out.getvalue().rstrip("\n")
    cells = [[_cell(v) for v in row] for row in result.rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(result.columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(result.columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    lines.append(f"({len(result.rows)} row{'s' if len(result.rows) != 1 else ''})")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)
