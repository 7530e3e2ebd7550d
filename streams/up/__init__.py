"""`llcr up` and `llcr restart`: the whole pipeline on one machine (see ``command``).

``plan`` decides the run, ``spawn`` starts its processes, ``watch`` shows it.
"""

from streams.up.command import restart, up

__all__ = ["restart", "up"]
