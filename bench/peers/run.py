"""The bench's job in the two stream processors a user would pick instead of llcr, each in
its own virtualenv under ``venvs`` (made on first use: pip install of the pinned peer,
fastavro and numpy), on the topic bench/matching.py loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SCHEMAS = HERE.parent.parent / "schemas" / "avro"
PEERS = {
    "bytewax": ("bytewax[kafka]==0.21.1", "bytewax_job.py"),
    "quix": ("quixstreams==3.28.1", "quix_job.py"),
}


def python_of(venvs: Path, name: str) -> Path:
    """The peer's interpreter, its virtualenv made and filled if missing."""
    home = venvs / name
    python = home / "bin" / "python"
    if not (home / ".ready").exists():
        subprocess.run([sys.executable, "-m", "venv", str(home)], check=True)
        package = PEERS[name][0]
        pip = [str(python), "-m", "pip", "install", "-q", package, "fastavro", "numpy"]
        subprocess.run(pip, check=True)
        (home / ".ready").write_text(package + "\n", encoding="utf-8")
    return python


def run_peer(
    venvs: Path, name: str, where: tuple[str, str], expected: int, extra: tuple[str, ...] = ()
) -> dict[str, object]:
    """Run one peer job to its end; its JSON result line."""
    python = python_of(venvs, name)
    bootstrap, topic = where
    schema = SCHEMAS / "gpu_sample_block.avsc"
    script = PEERS[name][1]
    command = [str(python), script, bootstrap, topic, str(schema), str(expected), *extra]
    done = subprocess.run(
        command, cwd=HERE, capture_output=True, text=True, timeout=900, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, object] = json.loads(lines[-1])
    return result
