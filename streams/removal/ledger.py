"""The hash-chained ledger: append-only entries in one total order (pure, no I/O).

Each entry's ``hash`` is the SHA-256 of its canonical content *including* the previous
entry's hash, so editing, removing or reordering any entry breaks every later link.
Every entry carries its chain's ``chain_id`` (random, fixed at genesis), so two ledgers
written into one store never pass for one, and two different entries at one
(chain, seq) are a fork. :func:`verify` recomputes the chain and names the first entry
that does not fit.

The chain proves order, not completeness: a store whose last entries were deleted, or
rewritten and re-chained, or extended by a forged entry with a recomputed hash, still
chains. The removal service therefore keeps a :class:`Head` checkpoint (the last entry's
chain, seq and hash) where the sink cannot write it, and :func:`verify` given that head
requires the entries to end exactly there.
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
class Head:
    """A checkpoint of the chain's head: the last entry's chain id, seq and hash
    (``seq`` -1 and the genesis hash before the first entry)."""

    chain_id: str
    seq: int
    hash: str

    def to_json(self) -> str:
        return json.dumps({"chain_id": self.chain_id, "seq": self.seq, "hash": self.hash})

    @classmethod
    def from_json(cls, text: str) -> Head:
        """The head a :meth:`to_json` text holds (ValueError if it holds none)."""
        try:
            data = json.loads(text)
            head = cls(str(data["chain_id"]), int(data["seq"]), str(data["hash"]))
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"not a ledger head checkpoint: {exc}") from exc
        if head.seq < -1 or len(head.hash) != len(GENESIS):
            raise ValueError(f"not a ledger head checkpoint: seq {head.seq}, hash {head.hash!r}")
        return head


def head_of(chain: Chain) -> Head:
    return Head(chain.chain_id, chain.next_seq - 1, chain.head)


@dataclass(frozen=True)
class Break:
    """The first entry that does not fit the chain, and why."""

    seq: int
    entry_id: str
    reason: str


def verify(
    entries: Iterable[Mapping[str, Any]], head: Head | None = None, *, beyond_head: bool = False
) -> tuple[int, Break | None]:
    """Check entries in (chain_id, seq) order: (entries checked, the first break or None).

    An entry repeated exactly (a redelivery, a row not yet merged) is skipped; a different
    entry at a seq already seen is a fork, and entries of a second chain are a break.
    With ``head``, the entries must reach it (same chain, seq and hash) and, unless
    ``beyond_head`` (the service recovering entries it published just before it stopped),
    end there."""
    expected_seq, last, count = 0, GENESIS, 0
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
        if seq == expected_seq - 1 and entry["hash"] == last:
            continue  # the same entry again
        broken = _link_problem(entry, seq, expected_seq, last) or _head_problem(
            entry, seq, head, beyond_head
        )
        if broken:
            return count, Break(seq, entry_id, broken)
        last, expected_seq, count = str(entry["hash"]), seq + 1, count + 1
    if head is not None and expected_seq - 1 < head.seq:
        return count, Break(
            expected_seq,
            "",
            f"the ledger ends at seq {expected_seq - 1}, its head checkpoint is at seq "
            f"{head.seq}: entries {expected_seq}..{head.seq} are missing (deleted, or not "
            "yet in this store)",
        )
    return count, None


def _link_problem(entry: Mapping[str, Any], seq: int, expected_seq: int, last: str) -> str:
    if seq < expected_seq:
        return f"a different entry at seq {seq}: a fork"
    if seq != expected_seq:
        return f"expected seq {expected_seq}: entry missing"
    if entry["prev_hash"] != last:
        return "prev_hash does not match the previous entry"
    if entry_hash(entry) != entry["hash"]:
        return "content does not match its hash (edited)"
    return ""


def _head_problem(entry: Mapping[str, Any], seq: int, head: Head | None, beyond: bool) -> str:
    if head is None or seq < head.seq:
        return ""
    if seq > head.seq:
        if beyond:
            return ""
        return (
            f"an entry after the head checkpoint at seq {head.seq}: appended outside the "
            "removal service (or it stopped between publishing and checkpointing; its next "
            "start checkpoints again)"
        )
    if str(entry.get("chain_id") or "") != head.chain_id or entry["hash"] != head.hash:
        return (
            f"the entry at seq {seq} is not the one its head checkpoint names "
            f"(hash {head.hash[:12]}…): the tail was rewritten"
        )
    return ""
