"""The sink's handle on ClickHouse: one client, one lock, reconnect on failure.

The same object serves the sink's inserts and the local query endpoint (chDB allows one
process per directory, so other processes' queries come through the owner).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from streams.settings import ClickHouseSettings
from streams.store.client import connect
from streams.store.migrations import apply_migrations

logger = logging.getLogger(__name__)


class RowStore(Protocol):
    """What the sink's loop needs of the store (``Store`` is the ClickHouse one)."""

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None: ...

    def insert_arrow(self, table: str, data: Any) -> None:
        """Insert a pyarrow Table (its column names are the table's)."""
        ...

    def query(self, sql: str) -> tuple[list[str], list[str], list[tuple[Any, ...]]]: ...


class Store:
    """A lazily (re)connected clickhouse-connect client guarded by a lock."""

    def __init__(
        self,
        settings: ClickHouseSettings,
        *,
        connector: Callable[[ClickHouseSettings], Any] = connect,
    ) -> None:
        self.settings = settings
        self._connector = connector
        self._client: Any = None
        self._read_only: Any = None  # the query endpoint's readonly=1 chDB session
        self._lock = threading.RLock()

    def _ready(self) -> Any:
        if self._client is None:
            client = self._connector(self.settings)
            try:
                apply_migrations(client, self.settings.database)
                self._apply_sample_ttl(client)
            except Exception:
                client.close()
                raise
            self._client = client
        return self._client

    def _apply_sample_ttl(self, client: Any) -> None:
        days = int(self.settings.raw_sample_ttl_days)
        client.command(
            f"ALTER TABLE {self.settings.database}.gpu_samples "
            f"MODIFY TTL toDateTime(ingested_at) + INTERVAL {days} DAY"
        )

    def open(self) -> None:
        """Connect (and migrate) now; raises what the connector raises."""
        with self._lock:
            self._ready()

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        """Insert rows, as columns: clickhouse-connect encodes a column-oriented insert
        about 2.8x faster (bench/sink.py), more than the transpose costs."""
        data = list(zip(*rows, strict=True))
        with self._lock:
            try:
                self._ready().insert(
                    f"{self.settings.database}.{table}",
                    data,
                    column_names=list(columns),
                    column_oriented=True,
                )
            except Exception:
                self._drop()
                raise

    def insert_arrow(self, table: str, data: Any) -> None:
        """Insert a pyarrow Table: ClickHouse decodes Arrow itself, so no Python object
        per value (bench/sink.py)."""
        with self._lock:
            try:
                self._ready().insert_arrow(f"{self.settings.database}.{table}", data)
            except Exception:
                self._drop()
                raise

    def query(self, sql: str) -> tuple[list[str], list[str], list[tuple[Any, ...]]]:
        """Column names, type names and rows of one query."""
        with self._lock:
            result = self._ready().query(sql)
            types = [t.name for t in result.column_types]
            return list(result.column_names), types, [tuple(r) for r in result.result_rows]

    def read_only_query(self, sql: str) -> tuple[list[str], list[str], list[list[Any]]]:
        """One analyst statement on the embedded store's read-only session (see
        :func:`streams.sink.query.guarded_query`): the engine enforces read-only, the
        limits are fixed on the session, and the statement cannot change them."""
        from streams.sink.query import QueryError, guarded_query, read_only_dsn
        from streams.store.client import embedded_dir

        with self._lock:
            self._ready()
            if self._read_only is None:
                import chdb

                directory = embedded_dir(self.settings.dsn).resolve()
                self._read_only = chdb.connect(  # type: ignore[no-untyped-call]
                    read_only_dsn(directory, self.settings)
                )
            try:
                return guarded_query(self._read_only, sql)
            except QueryError:
                raise
            except Exception:
                # a cancelled query (a limit hit) leaves output behind on chDB's session
                # that the next query would read: start every query after an error afresh
                self._close_read_only()
                raise

    def _close_read_only(self) -> None:
        read_only, self._read_only = self._read_only, None
        if read_only is not None:
            try:
                read_only.close()
            except Exception:
                logger.debug("closing the read-only session", exc_info=True)

    def _drop(self) -> None:
        self._close_read_only()
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # already failing; the reconnect will tell
                logger.debug("closing a failed client", exc_info=True)

    def close(self) -> None:
        with self._lock:
            self._drop()
