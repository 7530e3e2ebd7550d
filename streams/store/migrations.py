"""Versioned ClickHouse DDL migrations, applied idempotently at start.

Files ``migrations/NNNN_name.sql`` hold statements separated by lines ending in ``;``.
``$database`` is replaced with the configured database name. Applied versions and a
checksum are recorded in ``<database>.schema_migrations``; an applied migration whose
file changed afterwards is an error (add a new migration instead).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any

from schemas.errors import LlcrError

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_DATABASE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class MigrationError(LlcrError):
    """A migration is malformed, failed, or was edited after it was applied."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self, database: str) -> list[str]:
        text = Template(self.sql).substitute(database=database)
        return [part.strip() for part in re.split(r";\s*$", text, flags=re.M) if part.strip()]


def bundled_migrations() -> list[Migration]:
    folder = resources.files("streams.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if len({m.version for m in found}) != len(found):
        raise MigrationError("two migrations share a version number")
    return found


def apply_migrations(
    client: Any, database: str, migrations: list[Migration] | None = None
) -> list[int]:
    """Apply every migration not yet recorded; return the versions applied now."""
    if not _DATABASE.match(database):
        raise MigrationError(f"invalid database name {database!r}")
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC')) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    rows = client.query(
        f"SELECT version, checksum FROM {database}.schema_migrations FINAL"
    ).result_rows
    applied = {int(version): checksum for version, checksum in rows}
    done = []
    for migration in migrations if migrations is not None else bundled_migrations():
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} changed after it was "
                    "applied; add a new migration instead"
                )
            continue
        _apply(client, database, migration)
        done.append(migration.version)
    return done


def _apply(client: Any, database: str, migration: Migration) -> None:
    for statement in migration.statements(database):
        try:
            client.command(statement)
        except Exception as exc:
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name} failed: {exc}"
            ) from exc
    client.command(
        f"INSERT INTO {database}.schema_migrations (version, name, checksum, applied_at) "
        "VALUES ({version:UInt32}, {name:String}, {checksum:String}, now64(3))",
        parameters={
            "version": migration.version,
            "name": migration.name,
            "checksum": migration.checksum,
        },
    )
    logger.info("applied migration %04d_%s", migration.version, migration.name)
