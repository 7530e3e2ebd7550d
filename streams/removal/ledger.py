"""The hash-chained ledger: append-only entries in one total order (pure, no I/O).

Each entry's ``hash`` is the SHA-256 of its canonical content *including* the previous
entry's hash, so editing, removing or reordering any entry breaks every later link.
:func:`verify` recomputes the chain and names the first entry that does not fit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from schemas.records import LedgerEntry, LedgerKind

GENESIS = "0" * 64
_HASHED = tuple(name for name in LedgerEntry.__annotations__ if name != "hash")


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 of the entry's hashed fields as canonical JSON (sorted keys, no spaces)."""
    content = {name: entry.get(name) for name in _HASHED}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Chain:
    """The head of the chain: the next sequence number and the last hash."""

    next_seq: int = 0
    head: str = GENESIS

    def append(
        self,
        kind: LedgerKind,
        scope: str,
        quantity_g: float,
        ref_id: str,
        *,
        hour_start_ms: int | None,
        payload: Mapping[str, Any],
        recorded_at_ms: int,
    ) -> LedgerEntry:
        entry: LedgerEntry = {
            "seq": self.next_seq,
            "entry_id": f"{kind}:{ref_id}:{self.next_seq}",
            "kind": kind,
            "scope": scope,
            "hour_start_ms": hour_start_ms,
            "quantity_g": quantity_g,
            "ref_id": ref_id,
            "payload_json": json.dumps(payload, sort_keys=True, separators=(",", ":")),
            "recorded_at_ms": recorded_at_ms,
            "prev_hash": self.head,
            "hash": "",
        }
        entry["hash"] = entry_hash(entry)
        self.follow(entry)
        return entry

    def follow(self, entry: Mapping[str, Any]) -> None:
        """Advance past an entry already in the ledger (when replaying it at start)."""
        self.next_seq = int(entry["seq"]) + 1
        self.head = str(entry["hash"])


@dataclass(frozen=True)
class Break:
    """The first entry that does not fit the chain, and why."""

    seq: int
    entry_id: str
    reason: str


def verify(entries: Iterable[Mapping[str, Any]]) -> tuple[int, Break | None]:
    """Check entries in ``seq`` order: (entries checked, the first break or None)."""
    expected_seq, head, count = 0, GENESIS, 0
    for entry in entries:
        seq, entry_id = int(entry["seq"]), str(entry["entry_id"])
        if seq != expected_seq:
            what = "missing" if seq > expected_seq else "duplicated or reordered"
            return count, Break(seq, entry_id, f"expected seq {expected_seq}: entry {what}")
        if entry["prev_hash"] != head:
            return count, Break(seq, entry_id, "prev_hash does not match the previous entry")
        if entry_hash(entry) != entry["hash"]:
            return count, Break(seq, entry_id, "content does not match its hash (edited)")
        head, expected_seq, count = str(entry["hash"]), seq + 1, count + 1
    return count, None
