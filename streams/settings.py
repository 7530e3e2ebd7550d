"""Settings of the stream-side deployables: processors (worker) and the ClickHouse sink."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from schemas.settings import LlcrSettings


class ClickHouseSettings(BaseModel):
    """Where analytics live: ``chdb:///abs/dir`` or ``chdb:rel/dir`` (embedded), or
    ``http(s)://host:port`` (a ClickHouse server)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dsn: str = "chdb:.llcr-data/chdb"
    database: str = "llcr"
    username: str = "default"
    password: SecretStr = SecretStr("")
    connect_timeout_s: float = 10.0
    raw_sample_ttl_days: int = Field(default=30, ge=1)


class WorkerSettings(LlcrSettings):
    """`llcr worker`: the faust matching processors."""

    app_id: str = "llcr-worker"
    store: str = "memory://"
    data_dir: Path = Path(".llcr-data/worker")
    processing_guarantee: Literal["at_least_once"] = "at_least_once"
    # Tansu holds a group join for session_timeout / 2; these keep a worker ready in seconds
    # (see docs/operations.md). Production Kafka works with them too.
    session_timeout_s: float = 6.0
    heartbeat_interval_s: float = 1.0
    rebalance_timeout_s: float = 6.0
    topic_partitions: int = 8


class SinkSettings(LlcrSettings):
    """`llcr sink`: every topic into ClickHouse."""

    group_id: str = "llcr-sink"
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    batch_max_rows: int = Field(default=50_000, ge=1)
    batch_max_wait_s: float = Field(default=1.0, gt=0)
