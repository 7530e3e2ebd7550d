"""One code path to ClickHouse: chDB in-process (``chdb:///dir``) or a server over HTTP.

chDB allows one data directory per process at a time, and one process per directory:
close the client before opening another directory, and route other processes' queries
through the owner (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from schemas.errors import InfrastructureError
from streams.settings import ClickHouseSettings


def is_embedded(dsn: str) -> bool:
    return dsn.startswith("chdb:")


def embedded_dir(dsn: str) -> Path:
    """The chDB directory of a DSN: ``chdb:///abs/dir`` or ``chdb:rel/dir`` (relative)."""
    path = dsn.removeprefix("chdb:")
    return Path(path.removeprefix("//") if path.startswith("///") else path)


def connect(settings: ClickHouseSettings, *, create: bool = True) -> Any:
    """Return a ``clickhouse_connect`` Client for the configured store.

    ``create=False`` (every read: query, report, ledger verify): an embedded store that
    does not exist, or holds no llcr database, is an error naming its path; a read never
    creates an empty store."""
    try:
        import clickhouse_connect
    except ImportError as exc:
        raise InfrastructureError("ClickHouse access needs 'llcr[streams]'") from exc
    if is_embedded(settings.dsn):
        return _connect_embedded(clickhouse_connect, settings, create)
    parts = urlsplit(settings.dsn)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InfrastructureError(
            f"unsupported ClickHouse DSN {settings.dsn!r}: use chdb:/// or http(s)://"
        )
    try:
        return clickhouse_connect.get_client(
            host=parts.hostname,
            port=parts.port or (8443 if parts.scheme == "https" else 8123),
            secure=parts.scheme == "https",
            username=settings.username,
            password=settings.password.get_secret_value(),
            connect_timeout=settings.connect_timeout_s,
        )
    except Exception as exc:
        raise InfrastructureError(f"cannot reach ClickHouse at {parts.hostname}: {exc}") from exc


def _connect_embedded(clickhouse_connect: Any, settings: ClickHouseSettings, create: bool) -> Any:
    dsn = settings.dsn
    try:
        import chdb  # noqa: F401  (registers the chdb:// backend of clickhouse-connect)
    except ImportError as exc:
        raise InfrastructureError(
            "the embedded ClickHouse needs chdb: pip install 'llcr[embedded]'"
        ) from exc
    directory = embedded_dir(dsn).resolve()
    if not create and not (directory / "metadata" / f"{settings.database}.sql").is_file():
        raise InfrastructureError(
            f"no llcr store at {directory} (DSN {dsn}: no database {settings.database!r})",
            hint="run `llcr up` first, pass --dsn chdb:DIR, or set LLCR_CLICKHOUSE__DSN",
        )
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return clickhouse_connect.get_client(dsn=f"chdb:///{directory}")
    except Exception as exc:
        raise InfrastructureError(
            f"cannot open chDB at {directory}: {exc}. Only one process may own a chDB directory; "
            "if `llcr up` is running, query through it (`llcr query`)."
        ) from exc
