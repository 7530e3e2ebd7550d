"""The hash-chained ledger: append-only entries in one total order (pure, no I/O).

Each entry's ``hash`` is the SHA-256 of its canonical content *including* the previous
entry's hash, so editing, removing or reordering any entry breaks every later link.
Every entry carries its chain's ``chain_id`` (random, fixed at genesis), so two ledgers
written into one store never pass for one, and two different entries at one
(chain, seq) are a fork. :func:`verify` recomputes the chain and names the first entry
that does not fit.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.records import LedgerEntry, LedgerKind

GENESIS = "0" * 64
_HASHED = tuple(name for name in LedgerEntry.__annotations__ if name != "hash")


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 of the entry's hashed fields as canonical JSON (sorted keys, no spaces).

    ``chain_id`` is hashed when set; entries of v1 chains (no chain id) keep their hash."""
    content = {name: entry.get(name) for name in _HASHED}
    if not content.get("chain_id"):
        content.pop("chain_id", None)
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def new_chain_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Chain:
    """The head of the chain: its id, the next sequence number and the last hash.

    A chain gets its id when its genesis entry is appended; following existing entries
    takes theirs."""

    next_seq: int = 0
    head: str = GENESIS
    chain_id: str = ""
    new_id: Callable[[], str] = field(default=new_chain_id, repr=False, compare=False)

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
        if self.next_seq == 0 and not self.chain_id:
            self.chain_id = self.new_id()
        entry: LedgerEntry = {
            "seq": self.next_seq,
            "chain_id": self.chain_id,
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
        self.chain_id = str(entry.get("chain_id") or "")


@dataclass(frozen=True)
class Break:
    """The first entry that does not fit the chain, and why."""

    seq: int
    entry_id: str
    reason: str


def verify(entries: Iterable[Mapping[str, Any]]) -> tuple[int, Break | None]:
    """Check entries in (chain_id, seq) order: (entries checked, the first break or None).

    An entry repeated exactly (a redelivery, a row not yet merged) is skipped; a different
    entry at a seq already seen is a fork, and entries of a second chain are a break."""
    expected_seq, head, count = 0, GENESIS, 0
    chain: str | None = None
    for entry in entries:
        seq, entry_id = int(entry["seq"]), str(entry["entry_id"])
        entry_chain = str(entry.get("chain_id") or "")
        if chain is None:
            chain = entry_chain
        elif entry_chain != chain:
            return count, Break(
                seq,
                entry_id,
                f"a second chain ({entry_chain or 'without id'}) beside "
                f"{chain or 'the chain without id'}: two ledgers were written into one store",
            )
        if seq == expected_seq - 1 and entry["hash"] == head:
            continue  # the same entry again
        if seq < expected_seq:
            return count, Break(seq, entry_id, f"a different entry at seq {seq}: a fork")
        if seq != expected_seq:
            return count, Break(seq, entry_id, f"expected seq {expected_seq}: entry missing")
        if entry["prev_hash"] != head:
            return count, Break(seq, entry_id, "prev_hash does not match the previous entry")
        if entry_hash(entry) != entry["hash"]:
            return count, Break(seq, entry_id, "content does not match its hash (edited)")
        head, expected_seq, count = str(entry["hash"]), seq + 1, count + 1
    return count, None
