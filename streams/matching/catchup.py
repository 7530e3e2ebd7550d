"""The start-up hold of the matching worker: its timer closes no hour until the intensity
the group had not read at start is read (or ``price_catchup_s`` has passed), so no hour
closes unpriced for want of reading its price.

The backlog is each intensity partition's end at start, where the group's committed
offset is short of it. Partitions assigned to other workers reach this worker through the
prices changelog, so only this worker's own count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from schemas.topics import spec
from streams.settings import WorkerSettings
from streams.topic_reader import committed_offsets, end_offsets

logger = logging.getLogger("streams.matching.worker")  # its lines read as the worker's


class PriceCatchUp:
    """Tracks what the worker has read of the intensity topic against the backlog."""

    def __init__(
        self,
        settings: WorkerSettings,
        topic: str,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.monotonic = monotonic
        self.seen: dict[int, int] = {}  # intensity partition -> next offset taken
        self.backlog: dict[int, int] | None = None  # partition -> end to reach
        self.deadline: float | None = None
        self.ready = settings.price_catchup_s == 0

    def saw(self, partition: int, offset: int) -> None:
        self.seen[partition] = max(self.seen.get(partition, 0), offset + 1)

    async def caught_up(self, mine: set[int] | None) -> bool:
        """Whether the backlog is read, or waited for long enough. ``mine``: the intensity
        partitions assigned to this worker (None: nothing assigned yet)."""
        now = self.monotonic()
        if self.deadline is None:
            self.deadline = now + self.settings.price_catchup_s
        if self.backlog is None:
            try:
                self.backlog = await asyncio.to_thread(self.measure)
            except Exception as exc:  # the broker unreachable: try again next tick
                logger.warning("could not measure the intensity backlog: %s", exc)
                self.ready = now >= self.deadline
                return self.ready
        if mine is None:
            return now >= self.deadline  # not assigned anything yet
        behind = sorted(
            p for p, end in self.backlog.items() if p in mine and self.seen.get(p, 0) < end
        )
        if not behind:
            logger.info("intensity backlog read: hours close from now on")
            self.ready = True
        elif now >= self.deadline:
            logger.warning(
                "intensity partitions %s still unread after %.0f s: closing hours anyway",
                behind,
                self.settings.price_catchup_s,
            )
            self.ready = True
        return self.ready

    def measure(self) -> dict[int, int]:
        """Each intensity partition's end, where the group's committed offset is short of it."""
        partitions = [(self.topic, p) for p in range(spec("intensity").partitions)]
        conf = self.settings.kafka.librdkafka()
        ends = end_offsets(conf, partitions)
        done = committed_offsets(conf, self.settings.app_id, partitions)
        return {p: end for (_, p), end in ends.items() if done.get((self.topic, p), 0) < end}
