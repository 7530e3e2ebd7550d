"""A bounded, crash-safe, append-only spool of (key, value) records on disk.

Every batch is written here first and produced from here, so a broker outage, a full
producer queue or an agent crash all take the same path: records stay on disk until
the broker acknowledged them, and drain in order. Records are framed
``[u32 length][u32 crc32][u16 key length][key][value]`` in segment files named by the
index of their first record; a torn tail (crash mid-write) fails its CRC and is cut off
on open. ``cursor`` holds the index of the first record not yet acknowledged.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

from schemas.errors import LlcrError

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
_KEY_LEN = struct.Struct(">H")


class SpoolFullError(LlcrError):
    """The spool reached its byte bound; the record was not stored."""


class Spool:
    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = 4 * 2**20) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._records: list[tuple[Path, int, int]] = []  # (segment, offset, framed length)
        self._first = 0  # index of self._records[0]
        self._bytes = 0
        self.cursor = self._read_cursor()
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
        payload = _KEY_LEN.pack(len(key)) + key + value
        framed = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        if self.size_bytes + len(framed) > self._max_bytes:
            raise SpoolFullError(f"spool at {self.size_bytes} bytes (bound {self._max_bytes})")
        segment = self._writable_segment()
        offset = segment.stat().st_size if segment.exists() else 0
        with open(segment, "ab") as handle:
            handle.write(framed)
            handle.flush()
            os.fsync(handle.fileno())
        self._records.append((segment, offset, len(framed)))
        self._bytes += len(framed)
        return self.end - 1

    def read(self, index: int) -> tuple[bytes, bytes]:
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
        self.cursor = cursor
        tmp = self._dir / "cursor.tmp"
        tmp.write_text(str(cursor))
        os.replace(tmp, self._dir / "cursor")
        while self._records and self._first < cursor:
            segment = self._records[0][0]
            count = sum(1 for s, _, _ in self._records if s == segment)
            if self._first + count > cursor or segment == self._records[-1][0]:
                break
            self._bytes -= sum(length for _, _, length in self._records[:count])
            del self._records[:count]
            self._first += count
            segment.unlink(missing_ok=True)

    def _writable_segment(self) -> Path:
        if self._records:
            last = self._records[-1][0]
            if last.stat().st_size < self._segment_bytes:
                return last
        return self._dir / f"{self.end:020d}.seg"

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
