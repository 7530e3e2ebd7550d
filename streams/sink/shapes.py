"""What a table mapping yields: a row, or a row refused into the rejected table."""

from __future__ import annotations

from typing import Any, NamedTuple

Row = tuple[Any, ...]


class Rejected(NamedTuple):
    """A row that goes to the map's ``rejected_table`` instead, with why."""

    row: Row
    code: str
    reason: str
