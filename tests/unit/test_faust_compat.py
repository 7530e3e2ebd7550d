"""Contract tests for every faust hook in streams/faust_compat.py.

Each checks that the faust member we rely on exists with the signature we call it with,
and that our override is the one faust uses. A faust upgrade that moves one fails here,
not silently in a crash-recovery run.
"""

from __future__ import annotations

import asyncio
import inspect
import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiokafka
import faust
import pytest
from faust.serializers import codecs
from faust.tables.base import Collection
from faust.tables.recovery import Recovery
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

from schemas.settings import KafkaSettings
from streams import faust_compat
from streams.app import create_app
from streams.matching.worker import STATE_CODEC, Matching
from streams.settings import WorkerSettings


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


@pytest.fixture
def app(tmp_path: Path) -> Any:
    settings = WorkerSettings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"), data_dir=tmp_path / "worker"
    )
    return create_app(settings)


def test_recovery_reads_to_highwaters_and_the_app_consumer_is_ours(app: Any) -> None:
    assert "highwaters(" in inspect.getsource(Recovery)  # recovery still ends there
    assert parameters(driver.Consumer.highwaters) == ["self", "partitions"]
    consumer = app.transport.Consumer
    assert issubclass(consumer, driver.Consumer)
    assert consumer.highwaters is not driver.Consumer.highwaters
    assert consumer.__name__ == "FetchHighwatersConsumer"
    # faust's consumer sets in_transaction from the app; our override reads it
    assert "self.in_transaction = self.app.in_transaction" in inspect.getsource(
        faust.transport.consumer.Consumer.__init__
    )


def test_the_consumers_fetch_wait_is_the_setting_not_fausts_fixed_wait(tmp_path: Path) -> None:
    # faust still fixes the wait, and aiokafka still makes its fetcher from the attribute
    assert "fetch_max_wait_ms=1500" in inspect.getsource(
        driver.AIOKafkaConsumerThread._create_worker_consumer
    )
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(
        aiokafka.AIOKafkaConsumer.start
    )
    settings = WorkerSettings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        data_dir=tmp_path / "worker",
        fetch_max_wait_s=0.25,
    )

    async def made() -> Any:
        app = create_app(settings)
        thread = app.consumer._thread
        try:
            consumer = thread._create_worker_consumer(app.transport)
            try:
                return consumer._fetch_max_wait_ms
            finally:
                await consumer.stop()
        finally:
            thread.thread_loop.close()

    assert asyncio.run(made()) == 250


def test_the_highwaters_override_answers_the_fetch_end() -> None:
    asked: list[list[tuple[str, int]]] = []

    def ends(partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        asked.append(partitions)
        return {tp: 7 + tp[1] for tp in partitions}

    fake_app = SimpleNamespace(conf=SimpleNamespace(broker_consumer=[]))
    transport_class = type(faust_compat.transport_with_fetch_highwaters(fake_app, ends))
    consumer = transport_class.Consumer
    me = SimpleNamespace(in_transaction=False)
    got = asyncio.run(consumer.highwaters(me, TP("t", 0), TP("t", 2)))
    assert got == {TP("t", 0): 7, TP("t", 2): 9}
    assert asked == [[("t", 0), ("t", 2)]]


def test_the_offset_guard_sees_each_seek_start_and_holds_commits() -> None:
    """The consumer's seek to committed offsets reports where each guarded partition
    starts (the log start when nothing is committed), and a commit never passes the
    guard's hold."""
    base = faust.transport.consumer.Consumer
    assert "await self.seek_to_committed()" in inspect.getsource(base.perform_seek)
    assert parameters(driver.Consumer.seek_to_committed) == ["self"]
    assert parameters(driver.Consumer.earliest_offsets) == ["self", "partitions"]
    assert parameters(base._commit_offsets) == ["self", "offsets", "start_new_transaction"]
    assert "self._commit_offsets(" in inspect.getsource(base._commit_tps)

    fake_app = SimpleNamespace(conf=SimpleNamespace(broker_consumer=[]))
    transport = faust_compat.transport_with_fetch_highwaters(fake_app, lambda tps: {})
    faust_app = SimpleNamespace(transport=transport)
    started: list[tuple[int, int]] = []
    faust_compat.guard_offsets(
        faust_app, "s", lambda p, o: started.append((p, o)), lambda p: 5 if p == 0 else None
    )
    consumer = type(transport).Consumer
    assert consumer.guards.keys() == {"s"}
    committed_at = {TP("s", 0): 9, TP("s", 1): None, TP("other", 0): 3}
    committed: list[dict[TP, int]] = []

    async def seek_to_committed(self: Any) -> dict[TP, int | None]:
        return committed_at

    async def earliest_offsets(*partitions: TP) -> dict[TP, int]:
        return {tp: 2 for tp in partitions}

    async def commit_offsets(self: Any, offsets: Any, start_new_transaction: bool) -> bool:
        committed.append(dict(offsets))
        return True

    me = object.__new__(consumer)  # no broker: only the members the overrides use
    me.earliest_offsets = earliest_offsets  # type: ignore[method-assign]
    me._committed_offset = {}
    parent = consumer.__mro__[1]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parent, "seek_to_committed", seek_to_committed)
        patch.setattr(base, "_commit_offsets", commit_offsets)
        assert asyncio.run(consumer.seek_to_committed(me)) == committed_at
        offsets = {TP("s", 0): 8, TP("s", 1): 8, TP("other", 0): 8}
        assert asyncio.run(consumer._commit_offsets(me, offsets)) is True
    assert sorted(started) == [(0, 9), (1, 2)]  # partition 1: nothing committed, log start
    assert committed == [{TP("s", 0): 5, TP("s", 1): 8, TP("other", 0): 8}]
    # faust's bookkeeping keeps its own offset (it dropped the acks below it)
    assert me._committed_offset == {TP("s", 0): 8}
    assert "self._committed_offset.update(committable_offsets)" in inspect.getsource(
        base._commit_offsets
    )
    assert "offset >= committed" in inspect.getsource(base.ack)
    # a faust upgrade that gives the driver its own _commit_offsets bypasses ours
    assert "_commit_offsets" not in vars(driver.Consumer)


def test_a_registered_codec_round_trips_through_faust() -> None:
    assert {"_dumps", "_loads"} <= set(vars(codecs.Codec))
    faust_compat.register_codec("llcr-test", pickle.dumps, pickle.loads)
    value = {"a": [1, 2.5, None]}
    assert codecs.loads("llcr-test", codecs.dumps("llcr-test", value)) == value


def test_the_tables_changelogs_use_the_state_codec(app: Any, tmp_path: Path) -> None:
    assert parameters(Collection._new_changelog_topic) == [
        "self",
        "retention",
        "compacting",
        "deleting",
    ]
    settings = WorkerSettings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"), data_dir=tmp_path / "m"
    )
    matching = Matching(app, settings)
    for table in (matching.hosts, matching.prices):
        assert table.changelog_topic.value_serializer == STATE_CODEC
        assert table.changelog_topic.key_serializer == "raw"
        assert isinstance(faust_compat.table_data(table), type(table.data))
        assert "data" in vars(Collection) and isinstance(vars(Collection)["data"], property)


def test_changelog_sends_keep_the_signatures_we_call() -> None:
    send = inspect.signature(faust.topics.Topic.send).parameters
    assert {"key", "value", "partition", "callback", "force"} <= set(send)
    assert parameters(Collection._on_changelog_sent) == ["self", "fut"]
    # send_tombstone calls the producer positionally: (topic, key, value, partition,
    # timestamp, headers)
    assert parameters(driver.Producer.send)[:7] == [
        "self",
        "topic",
        "key",
        "value",
        "partition",
        "timestamp",
        "headers",
    ]


def test_seek_and_rebalance_signals_exist(app: Any) -> None:
    assert parameters(driver.Consumer.seek) == ["self", "partition", "offset"]
    assert hasattr(app.on_partitions_revoked, "connect")
    assert hasattr(app.on_rebalance_complete, "connect")
    called: list[str] = []

    async def callback(what: str) -> None:
        called.append(what)

    faust_compat.on_rebalance(app, callback)
    asyncio.run(_fire(app.on_rebalance_complete))
    asyncio.run(_fire(app.on_partitions_revoked))
    assert called == [faust_compat.RECOVERED, faust_compat.REVOKED]


async def _fire(signal: Any) -> None:
    await signal.send()


def test_what_the_timer_reads_of_the_app_exists(app: Any) -> None:
    """The lifecycle timer asks which partitions this worker owns and whether the app is
    rebalancing or recovering; those names must stay what faust calls them."""
    assert hasattr(app.assignor, "assigned_actives")
    assert faust_compat.assigned_actives(app) == set()  # nothing assigned before a start
    assert isinstance(type(app).rebalancing, property) or hasattr(app, "rebalancing")
    assert hasattr(app, "in_recovery")
    assert faust_compat.settling(app) is False
