"""Shared fixtures: a real Tansu broker per session, unique topics per test, a tmp chDB.

Integration tests never skip: the project installs its infrastructure (llcr[embedded]).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from schemas.admin import create_topics
from schemas.settings import KafkaSettings
from schemas.topics import Topics
from streams.embedded.broker import Broker
from streams.settings import ClickHouseSettings
from streams.store.client import connect

# Every default path of llcr (store, spools, revision log) lives under LLCR_HOME: the
# tests and the processes they start get a home of their own, never the user's.
os.environ["LLCR_HOME"] = tempfile.mkdtemp(prefix="llcr-test-home-")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ starts real infrastructure: marked, so that
    ``pytest -m "not integration"`` is the fast tier."""
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _no_llcr_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test starts with no LLCR_* settings of the shell it runs in (LLCR_HOME excepted,
    set above; LLCR_TEST_* tune the tests themselves)."""
    for name in list(os.environ):
        if name.startswith("LLCR_") and name != "LLCR_HOME" and not name.startswith("LLCR_TEST_"):
            monkeypatch.delenv(name)


# Group-join timings for Tansu (../docs/operations.md): a consumer is ready in ~1-3 s.
FAST_GROUP = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"}


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with Broker(log_path=log) as running:
        yield running


@pytest.fixture
def unique() -> str:
    """A short unique token for topic prefixes and group ids."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def kafka(broker: Broker, unique: str) -> Iterator[KafkaSettings]:
    """Settings pointing at the session broker with a per-test topic prefix. Afterwards
    every topic named with the test's token is deleted (faust's internal topics too), so
    the in-memory session broker does not carry every earlier test's partitions."""
    yield KafkaSettings(bootstrap_servers=broker.bootstrap, topic_prefix=f"t{unique}.")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    names = [t for t in admin.list_topics(timeout=10).topics if unique in t]
    if names:
        for future in admin.delete_topics(names, operation_timeout=10).values():
            future.exception(timeout=30)  # best effort: a leftover topic only costs time


@pytest.fixture
def topics(kafka: KafkaSettings) -> Topics:
    """Every catalogue topic, created under the per-test prefix."""
    create_topics(kafka.librdkafka(), kafka.topic_prefix)
    return kafka.topics


@pytest.fixture
def clickhouse_settings(tmp_path: Path) -> ClickHouseSettings:
    return ClickHouseSettings(dsn=f"chdb://{tmp_path / 'chdb'}")


@pytest.fixture
def clickhouse(clickhouse_settings: ClickHouseSettings) -> Iterator[Any]:
    """A chDB client on a fresh directory; closed after the test (one dir per process)."""
    client = connect(clickhouse_settings)
    try:
        yield client
    finally:
        client.close()
