"""CLI shape: fast, lazy, and the agent extra stays free of stream-side dependencies."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

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


# distributions whose import name is not their name with "_" for "-"
_MODULE_OF = {"faust-streaming": "faust", "nvidia-ml-py": "pynvml"}


def test_every_extras_package_names_its_extra_when_missing() -> None:
    """A command that reaches a package of an extra not installed says which extra to
    install (schemas.cli.EXTRA_OF_MODULE): every package the extras list is mapped, to an
    extra that lists it."""
    from schemas.cli import EXTRA_OF_MODULE

    listed: dict[str, set[str]] = {}
    for line in requires("llcr") or []:
        requirement = Requirement(line)
        marker = str(requirement.marker or "")
        extra = re.search(r'extra == "([a-z]+)"', marker)
        if extra and extra.group(1) in {"agent", "streams", "embedded", "report"}:
            listed.setdefault(requirement.name, set()).add(extra.group(1))
    assert listed  # the check can fail
    for dist, extras in listed.items():
        module = _MODULE_OF.get(dist, dist.replace("-", "_"))
        assert EXTRA_OF_MODULE.get(module) in extras, (dist, module, extras)


LLCR = str(Path(sys.executable).parent / "llcr")  # the installed console script


def _llcr(*argv: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LLCR, *argv], capture_output=True, text=True, cwd=cwd, check=False)


def test_replay_once_prints_a_batch_from_a_real_nvidia_smi_trace(tmp_path: Path) -> None:
    trace = Path(__file__).parent.parent / "fixtures" / "traces" / "h100_nvidia_smi_matmul.csv"
    out = _llcr(
        "agent",
        "gpu",
        "--source",
        "replay",
        "--trace",
        str(trace),
        "--speed",
        "0",
        "--zone",
        "DE",
        "--site",
        "fra-1",
        "--once",
        cwd=str(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    batch = json.loads(out.stdout)
    assert batch["source"] == "replay" and len(batch["samples"]) == 51
    assert batch["samples"][0]["gpu_uuid"] == "GPU-c70307dd-a79a-76c5-ca2a-8d46d2295d83"


def test_replay_without_a_trace_is_a_clear_error(tmp_path: Path) -> None:
    out = _llcr(
        "agent",
        "gpu",
        "--source",
        "replay",
        "--zone",
        "DE",
        "--site",
        "s",
        "--once",
        cwd=str(tmp_path),
    )
    assert out.returncode == 2
    assert "llcr: error: source = replay needs replay_file (--trace FILE)" in out.stderr
