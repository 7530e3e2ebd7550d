"""The ledger's head checkpoint on disk, beside the store and out of the sink's reach.

The removal service rewrites it (atomically: a temporary file, fsync, rename) after every
flush that published ledger entries and once at start; `llcr ledger verify` reads it to
prove the ledger complete (see :mod:`streams.removal.ledger`).
"""

from __future__ import annotations

import os
from pathlib import Path

from schemas.errors import LlcrError
from streams.removal.ledger import Head


class HeadFileError(LlcrError):
    """The head checkpoint file exists but cannot be read as one."""


def read_head(path: Path) -> Head | None:
    """The checkpoint at ``path``; None if there is no file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise HeadFileError(f"cannot read the ledger head checkpoint {path}: {exc}") from exc
    try:
        return Head.from_json(text)
    except ValueError as exc:
        raise HeadFileError(f"{path}: {exc}") from exc


def write_head(path: Path, head: Head) -> None:
    """Replace the checkpoint at ``path`` with ``head`` (all or nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as out:
        out.write(head.to_json() + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
