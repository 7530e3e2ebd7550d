"""Split one interval's GPU energy between jobs, exactly (pure).

Shares follow per-process SM utilisation, grouped by job. Integer millijoules are
allocated by largest remainder, so the jobs' energy sums exactly to the GPU's. No
process -> one explicit 'idle' (or 'unattributed' when the GPU was busy) share; never
silently dropped. A configured job label (LLCR_JOB) takes the whole GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agents.gpu.model import JobLabels, ProcessUse
from schemas.records import JobShare, SampleFlag, SharingMode
from schemas.units import largest_remainder

IDLE = JobLabels("idle", "unattributed")
UNATTRIBUTED = JobLabels("unattributed", "unattributed")
BUSY_UTILISATION_PCT = 1.0


def allocate(total: int, weights: Sequence[float]) -> list[int]:
    """Largest-remainder split of ``total`` by ``weights``; sums exactly to ``total``."""
    if sum(weights) <= 0:  # nothing tells them apart: equal parts
        weights = [1.0] * len(weights)
    return largest_remainder(total, weights)


def attribute(
    energy_mj: int,
    utilization_pct: float,
    processes: Sequence[ProcessUse],
    labels_of: Callable[[int], JobLabels],
    *,
    mig: bool = False,
    fixed: JobLabels | None = None,
) -> tuple[list[JobShare], tuple[SampleFlag, ...]]:
    """Job shares of one interval and the quality flags they imply."""
    if fixed is not None:
        return [_share(fixed, 1.0, energy_mj, "mig" if mig else "exclusive")], ()
    if not processes:
        owner = UNATTRIBUTED if utilization_pct >= BUSY_UTILISATION_PCT else IDLE
        return [_share(owner, 1.0, energy_mj, "none")], ()
    weights: dict[JobLabels, float] = {}
    for process in processes:
        labels = labels_of(process.pid)
        weights[labels] = weights.get(labels, 0.0) + max(process.sm_util_pct, 0.0)
    jobs = list(weights)
    flags: tuple[SampleFlag, ...] = ()
    if sum(weights.values()) <= 0:
        flags = ("estimated_share",)  # processes present but no per-process utilisation
    parts = allocate(energy_mj, [weights[j] for j in jobs])
    sharing: SharingMode = "mig" if mig else ("exclusive" if len(jobs) == 1 else "time_sliced")
    if len(jobs) > 1:
        flags += ("shared_gpu",)
    shares = [
        _share(job, part / energy_mj if energy_mj else 1 / len(jobs), part, sharing)
        for job, part in zip(jobs, parts, strict=True)
    ]
    return shares, flags


def _share(labels: JobLabels, share: float, energy_mj: int, sharing: SharingMode) -> JobShare:
    return {
        "job_id": labels.job_id,
        "tenant": labels.tenant,
        "model": labels.model,
        "share": share,
        "energy_mj": energy_mj,
        "sharing": sharing,
        "prompt_tokens": 0,
        "generation_tokens": 0,
    }
