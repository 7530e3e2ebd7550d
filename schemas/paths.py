"""Where llcr keeps local state when no setting says otherwise: one absolute data home.

``LLCR_HOME`` if set, else ``$XDG_DATA_HOME/llcr``, else ``~/.local/share/llcr``. Every
default path (the chDB store, spools, the feeder's revision log, worker state) is under
it, so `llcr query` finds the same store from any directory.
"""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """The absolute data home (not created here)."""
    explicit = os.environ.get("LLCR_HOME")
    if explicit:
        return Path(explicit).expanduser().absolute()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return (base / "llcr").absolute()


def default_dsn() -> str:
    """``chdb:<data home>/chdb``: the store `llcr up` links to its newest run."""
    return f"chdb:{data_home() / 'chdb'}"
