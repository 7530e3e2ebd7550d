"""`llcr query`: SQL against the configured store, also while the pipeline runs.

chDB lets one process own a directory. While `llcr sink` (alone or inside `llcr up`) owns
it, the sink serves read-only queries on 127.0.0.1 and writes the address next to the
directory (``<dir>.endpoint``); `llcr query` uses that endpoint when it answers and opens
the directory itself otherwise. With a ClickHouse server every process connects directly.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from schemas.errors import InfrastructureError, LlcrError
from streams.jsonhttp import JsonServer, Reply, error
from streams.settings import ClickHouseSettings
from streams.sink.store import Store
from streams.store.client import connect, embedded_dir, is_embedded

logger = logging.getLogger(__name__)

Format = Literal["table", "csv", "json"]
_READ_ONLY = re.compile(r"^\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXPLAIN|EXISTS)\b", re.I)
_COMMENTS = re.compile(r"(--[^\n]*\n)|(/\*.*?\*/)", re.S)


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


def check_read_only(sql: str) -> None:
    if not _READ_ONLY.match(_COMMENTS.sub(" ", sql)):
        raise QueryError(
            "the query endpoint runs read-only statements (SELECT, WITH, SHOW, DESCRIBE, "
            "EXPLAIN, EXISTS); stop the pipeline to change the store"
        )


class QueryServer:
    """Serves ``POST /query`` (body: SQL) from the owning process, on 127.0.0.1 only."""

    def __init__(self, store: Store, settings: ClickHouseSettings, port: int = 0) -> None:
        self._store = store
        self._file = endpoint_file(settings)
        self._server = JsonServer(self._handle, port=port)

    @property
    def url(self) -> str:
        return self._server.url

    def _handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        if (method, path) != ("POST", "/query"):
            return error(404, "POST /query")
        sql = body.decode("utf-8", "replace")
        try:
            check_read_only(sql)
            columns, types, rows = self._store.query(sql)
        except QueryError as exc:
            return error(403, str(exc))
        except Exception as exc:  # the analyst sees ClickHouse's message
            return error(400, str(exc).split("\n")[0][:2000])
        return Reply(200, {"columns": columns, "types": types, "rows": plain(rows)})

    def __enter__(self) -> QueryServer:
        self._server.start()
        self._file.write_text(json.dumps({"url": self.url, "pid": os.getpid()}))
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
        client = connect(settings)
    except InfrastructureError as exc:
        raise QueryError(
            f"{exc}\nNo running llcr process serves queries for this store "
            f"(no live {endpoint_file(settings).name} beside it)."
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
        url = json.loads(path.read_text())["url"]
    except (OSError, ValueError, KeyError):
        return None
    try:
        response = httpx.post(f"{url}/query", content=sql.encode(), timeout=timeout_s)
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
