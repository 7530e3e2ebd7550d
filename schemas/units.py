"""The vocabulary of time and of exact integer splits, shared by every room.

Energy and mass are integers (mJ, mg) wherever they are summed, so that a whole always
equals the sum of its parts; :func:`largest_remainder` is the one way a whole is split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


def largest_remainder(total: int, weights: Sequence[float]) -> list[int]:
    """Split the non-negative integer ``total`` in proportion to the non-negative
    ``weights`` (their sum positive); the parts sum to ``total`` exactly.

    Each part is the floor of its exact share; the units left go one each to the largest
    fractional remainders, ties to the earlier weight.
    """
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    parts = [math.floor(x) for x in exact]
    order = sorted(range(len(parts)), key=lambda i: exact[i] - parts[i], reverse=True)
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def split_by_key(total: int, weights: Mapping[str, int]) -> dict[str, int]:
    """:func:`largest_remainder` over the positive weights of a mapping, ties to the
    smaller key; zero parts are left out (nothing to split: empty)."""
    keys = sorted(k for k, w in weights.items() if w > 0)
    if total <= 0 or not keys:
        return {}
    parts = largest_remainder(total, [weights[k] for k in keys])
    return {k: part for k, part in zip(keys, parts, strict=True) if part}
