"""Map a GPU process to job labels: Slurm job id, Kubernetes pod, or configured labels."""

from __future__ import annotations

import re
from pathlib import Path

from agents.gpu.model import JobLabels

_POD = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")


class ProcJobResolver:
    """Reads ``/proc/<pid>/environ`` (SLURM_JOB_ID, LLCR_JOB, LLCR_TENANT, LLCR_MODEL) and
    ``/proc/<pid>/cgroup`` (kubepods pod UID). ``proc`` is injectable for tests."""

    def __init__(self, proc: Path = Path("/proc"), default_tenant: str = "unattributed") -> None:
        self._proc = proc
        self._default_tenant = default_tenant

    def __call__(self, pid: int) -> JobLabels:
        env = self._environ(pid)
        tenant = env.get("LLCR_TENANT", self._default_tenant)
        model = env.get("LLCR_MODEL")
        if "LLCR_JOB" in env:
            return JobLabels(env["LLCR_JOB"], tenant, model)
        if "SLURM_JOB_ID" in env:
            return JobLabels(
                f"slurm:{env['SLURM_JOB_ID']}", env.get("SLURM_JOB_ACCOUNT", tenant), model
            )
        pod = self._pod(pid)
        if pod:
            return JobLabels(f"k8s-pod:{pod}", tenant, model)
        return JobLabels(f"pid:{pid}", tenant, model)

    def _environ(self, pid: int) -> dict[str, str]:
        try:
            raw = (self._proc / str(pid) / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            return {}
        pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}

    def _pod(self, pid: int) -> str | None:
        try:
            text = (self._proc / str(pid) / "cgroup").read_text()
        except OSError:
            return None
        match = _POD.search(text)
        return match[1].replace("_", "-") if match else None
