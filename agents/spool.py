"""A bounded, crash-safe, append-only spool of (key, value) records on disk.

Every batch is written here first and produced from here, so a broker outage, a full
producer queue or an agent crash all take the same path: records stay on disk until
the broker acknowledged them, and drain in order. Records are framed
``[u32 length][u32 crc32][u16 key length][key][value]`` in segment files named by the
index of their first record; a torn tail (crash mid-write) fails its CRC and is cut off
on open. ``cursor`` holds the index of the first record not yet acknowledged; it is
written to disk at most every ``cursor_sync_s`` (and on :meth:`close`), so after a crash
up to that many seconds of acknowledged records are sent again: harmless, because every
sample carries its per-GPU sequence number. Appends are fsynced one by one.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from pathlib import Path
from typing import IO

from schemas.errors import LlcrError

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
_KEY_LEN = struct.Struct(">H")


class SpoolFullError(LlcrError):
    """The spool reached its byte bound; the record was not stored."""


_RECENT = 256  # records kept in memory after append, so publishing them reads no file


class Spool:
    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        segment_bytes: int = 4 * 2**20,
        cursor_sync_s: float = 5.0,
    ) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._cursor_sync_s = cursor_sync_s
        self._records: list[tuple[Path, int, int]] = []  # (segment, offset, framed length)
        self._first = 0  # index of self._records[0]
        self._bytes = 0
        self._recent: dict[int, tuple[bytes, bytes]] = {}
        self._tail: IO[bytes] | None = None  # open handle of the segment being appended to
        self._tail_path: Path | None = None
        self._synced_cursor = self._read_cursor()
        self._synced_at = time.monotonic()
        self.cursor = self._synced_cursor
        self._load()

    @property
    def end(self) -> int:
        """Index one past the newest record."""
        return self._first + len(self._records)

    @property
    def pending(self) -> int:
        return self.end - self.cursor

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def append(self, key: bytes, value: bytes) -> int:
        return self.extend([(key, value)])

    def extend(self, records: list[tuple[bytes, bytes]]) -> int:
        """Append records with one write and one fsync; return the index of the last.

        All or none: when they do not fit in the bound, nothing is stored.
        """
        frames = []
        for key, value in records:
            payload = _KEY_LEN.pack(len(key)) + key + value
            frames.append(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
        size = sum(map(len, frames))
        if self.size_bytes + size > self._max_bytes:
            bound = self._max_bytes
            raise SpoolFullError(f"spool at {self.size_bytes} bytes + {size} > bound {bound}")
        segment, handle = self._writable_segment()
        offset = handle.tell()
        handle.write(b"".join(frames))
        handle.flush()
        os.fsync(handle.fileno())
        for (key, value), frame in zip(records, frames, strict=True):
            self._records.append((segment, offset, len(frame)))
            offset += len(frame)
            self._bytes += len(frame)
            self._recent[self.end - 1] = (key, value)
        while len(self._recent) > _RECENT:
            del self._recent[next(iter(self._recent))]
        return self.end - 1

    def read(self, index: int) -> tuple[bytes, bytes]:
        if index in self._recent:
            return self._recent[index]
        segment, offset, length = self._records[index - self._first]
        with open(segment, "rb") as handle:
            handle.seek(offset + _HEADER.size)
            payload = handle.read(length - _HEADER.size)
        (key_len,) = _KEY_LEN.unpack_from(payload)
        return payload[2 : 2 + key_len], payload[2 + key_len :]

    def commit(self, cursor: int) -> None:
        """Everything before ``cursor`` is acknowledged: persist, drop finished segments."""
        if cursor == self.cursor:
            return
        for index in range(self.cursor, cursor):
            self._recent.pop(index, None)
        self.cursor = cursor
        if time.monotonic() - self._synced_at >= self._cursor_sync_s:
            self.sync()
        while self._records and self._first < cursor:
            segment = self._records[0][0]
            count = sum(1 for s, _, _ in self._records if s == segment)
            if self._first + count > cursor or segment == self._records[-1][0]:
                break
            self._bytes -= sum(length for _, _, length in self._records[:count])
            del self._records[:count]
            self._first += count
            self.sync()  # the cursor on disk must not point into a deleted segment
            segment.unlink(missing_ok=True)

    def sync(self) -> None:
        """Write the cursor to disk (atomically)."""
        self._synced_at = time.monotonic()
        if self.cursor == self._synced_cursor:
            return
        tmp = self._dir / "cursor.tmp"
        tmp.write_text(str(self.cursor))
        os.replace(tmp, self._dir / "cursor")
        self._synced_cursor = self.cursor

    def close(self) -> None:
        self.sync()
        if self._tail is not None:
            self._tail.close()
            self._tail = self._tail_path = None

    def _writable_segment(self) -> tuple[Path, IO[bytes]]:
        if self._tail is not None and self._tail_path is not None:
            if self._tail.tell() < self._segment_bytes:
                return self._tail_path, self._tail
            self._tail.close()
        if self._records and self._tail is None:
            last = self._records[-1][0]  # reopened spool: keep filling its last segment
            if last.stat().st_size < self._segment_bytes:
                self._tail_path, self._tail = last, open(last, "ab")  # noqa: SIM115
                return last, self._tail
        path = self._dir / f"{self.end:020d}.seg"
        self._tail_path, self._tail = path, open(path, "ab")  # noqa: SIM115
        return path, self._tail

    def _read_cursor(self) -> int:
        path = self._dir / "cursor"
        return int(path.read_text()) if path.exists() else 0

    def _load(self) -> None:
        segments = sorted(self._dir.glob("*.seg"))
        if segments:
            self._first = int(segments[0].stem)
        for segment in segments:
            self._scan(segment)
        self.cursor = max(self.cursor, self._first)

    def _scan(self, segment: Path) -> None:
        data = segment.read_bytes()
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, offset)
            payload = data[offset + _HEADER.size : offset + _HEADER.size + length]
            if len(payload) != length or zlib.crc32(payload) != crc:
                break
            self._records.append((segment, offset, _HEADER.size + length))
            self._bytes += _HEADER.size + length
            offset += _HEADER.size + length
        if offset != len(data):
            logger.warning("spool %s: cut %d bytes of torn tail", segment.name, len(data) - offset)
            with open(segment, "r+b") as handle:
                handle.truncate(offset)
