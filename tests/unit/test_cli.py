"""CLI shape: fast, lazy, and the agent extra stays free of stream-side dependencies."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import requires

from packaging.requirements import Requirement

HEAVY = ("faust", "chdb", "clickhouse_connect", "aiokafka", "mode", "pyarrow")


def _modules_after(argv: list[str]) -> set[str]:
    code = (
        "import sys, json\n"
        "from schemas.cli import root\n"
        f"try:\n    root.main({argv!r}, standalone_mode=False)\n"
        "except SystemExit:\n    pass\n"
        "print('\\n' + json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_agent_help_imports_no_stream_side_package() -> None:
    loaded = _modules_after(["agent", "--help"])
    assert "agents.cli" in loaded
    assert not [m for m in loaded if m.split(".")[0] in HEAVY or m.startswith("streams")]


def test_root_help_lists_lazy_commands_without_importing_them() -> None:
    loaded = _modules_after(["--help"])
    assert not [
        m for m in loaded if m.startswith(("agents", "streams")) or m.split(".")[0] in HEAVY
    ]


def _closure(name: str, extras: frozenset[str], seen: set[tuple[str, frozenset[str]]]) -> set[str]:
    """Names of the distributions ``name[extras]`` pulls in (from installed metadata)."""
    key = (re.sub(r"[-_.]+", "-", name).lower(), extras)
    if key not in seen:
        seen.add(key)
        for raw in requires(name) or []:
            req = Requirement(raw)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras or {""}):
                _closure(req.name, frozenset(req.extras), seen)
    return {dist for dist, _ in seen}


def test_agent_extra_does_not_pull_faust_chdb_or_clickhouse() -> None:
    pulled = _closure("llcr", frozenset({"agent"}), set())
    assert {"confluent-kafka", "fastavro", "nvidia-ml-py", "httpx"} <= pulled
    assert not pulled & {"faust-streaming", "chdb", "chdb-core", "clickhouse-connect", "aiokafka"}
    assert {"faust-streaming", "chdb"} <= _closure(
        "llcr", frozenset({"dev"}), set()
    )  # the check can fail
