"""The agent's durable spool: order, bounds, crash safety."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.spool import Spool, SpoolFullError


def test_records_come_back_in_order_across_segments_and_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10**6, segment_bytes=100)
    for i in range(20):
        spool.append(b"k", f"value-{i}".encode())
    spool.commit(5)
    spool.close()
    reopened = Spool(tmp_path, max_bytes=10**6, segment_bytes=100)
    assert (reopened.cursor, reopened.end, reopened.pending) == (5, 20, 15)
    assert [reopened.read(i) for i in (5, 19)] == [(b"k", b"value-5"), (b"k", b"value-19")]
    reopened.close()


def test_after_a_crash_the_cursor_lags_by_at_most_the_sync_interval(tmp_path: Path) -> None:
    lazy = Spool(tmp_path / "lazy", max_bytes=10**6, cursor_sync_s=3600)
    eager = Spool(tmp_path / "eager", max_bytes=10**6, cursor_sync_s=0)
    for spool in (lazy, eager):
        for i in range(4):
            spool.append(b"k", bytes([i]))
        spool.commit(3)  # then the process dies: no close()
    # Unsynced acknowledgements are sent again (harmless: samples carry sequence numbers);
    # nothing unacknowledged is ever skipped.
    assert Spool(tmp_path / "lazy", max_bytes=10**6).cursor == 0
    assert Spool(tmp_path / "eager", max_bytes=10**6).cursor == 3
    for spool in (lazy, eager):
        spool.close()


def test_fully_acknowledged_segments_are_deleted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10**6, segment_bytes=50)
    for i in range(10):
        spool.append(b"", bytes(30) + bytes([i]))
    segments = len(list(tmp_path.glob("*.seg")))
    spool.commit(8)
    assert len(list(tmp_path.glob("*.seg"))) < segments
    assert spool.read(9) == (b"", bytes(30) + bytes([9]))
    spool.close()
    assert Spool(tmp_path, max_bytes=10**6, segment_bytes=50).cursor == 8


def test_torn_tail_is_cut_and_earlier_records_survive(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10**6)
    spool.append(b"a", b"first")
    spool.append(b"b", b"second")
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    segment.write_bytes(segment.read_bytes()[:-3])  # crash in the middle of the write
    reopened = Spool(tmp_path, max_bytes=10**6)
    assert reopened.end == 1 and reopened.read(0) == (b"a", b"first")
    reopened.append(b"c", b"third")
    reopened.close()
    again = Spool(tmp_path, max_bytes=10**6)
    assert again.read(1) == (b"c", b"third")
    again.close()


def test_bound_refuses_new_records(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100)
    spool.append(b"", bytes(50))
    with pytest.raises(SpoolFullError):
        spool.append(b"", bytes(50))
    spool.close()
