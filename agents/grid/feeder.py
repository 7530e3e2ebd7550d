"""The feeder's core: observations -> validation -> revisions -> events + dead letters.

No I/O: the run loop (``agents.grid.run``) fetches, publishes and persists.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from agents.grid.chain import ProviderChain
from agents.grid.model import Gap, Observation, Problem
from agents.grid.repair import FILL_RANK, RepairPolicy, is_fill, repair
from agents.grid.revisions import RevisionLog
from agents.grid.validate import check
from schemas.letters import input_letter
from schemas.records import DeadLetter, GridIntensityEvent
from schemas.units import HOUR_MS

logger = logging.getLogger(__name__)
COMPONENT = "agent.grid"


@dataclass
class Cycle:
    events: list[GridIntensityEvent] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    filled: int = 0  # events that are fills (estimates for missing or implausible periods)

    def extend(self, other: Cycle) -> None:
        self.events += other.events
        self.problems += other.problems
        self.gaps += other.gaps
        self.filled += other.filled


@dataclass
class FeederStats:
    events: int = 0
    problems: dict[str, int] = field(default_factory=dict)
    gaps: int = 0
    filled: int = 0
    provider_errors: dict[str, int] = field(default_factory=dict)

    def count(self, cycle: Cycle) -> None:
        self.events += len(cycle.events)
        self.gaps += len(cycle.gaps)
        self.filled += cycle.filled
        for problem in cycle.problems:
            self.problems[problem.code] = self.problems.get(problem.code, 0) + 1


class GridFeeder:
    def __init__(
        self,
        chains: Sequence[ProviderChain],
        log: RevisionLog,
        *,
        zones: Sequence[str],
        ceiling: float,
        known: Callable[[str], bool],
        repair_policy: RepairPolicy | None = None,
    ) -> None:
        self._chains = list(chains)
        self._repair = repair_policy or RepairPolicy()
        self.log = log
        self._zones = list(zones)
        self._ceiling = ceiling
        self._known = known
        self.stats = FeederStats()

    def poll(self, now_ms: int) -> Cycle:
        """Ask every chain for every zone; what changed becomes events."""
        cycle = Cycle()
        for chain in self._chains:
            for zone in self._zones:
                answer = chain.fetch(zone, now_ms, self._usable)
                for error in answer.errors:
                    errors = self.stats.provider_errors
                    errors[error.provider] = errors.get(error.provider, 0) + 1
                cycle.problems += answer.problems
                if answer.provider is not None:
                    cycle.extend(self.ingest(answer.observations, rank=answer.rank, now_ms=now_ms))
        return cycle

    def _usable(self, observation: Observation) -> bool:
        return bool(check([observation], ceiling=self._ceiling, known=self._known).good)

    def ingest(self, observations: Iterable[Observation], *, rank: int, now_ms: int) -> Cycle:
        """Validate one batch (a response, a file), take out its implausible values, fill
        its gaps (``agents.grid.repair``) and turn what is new into events."""
        checked = check(observations, ceiling=self._ceiling, known=self._known)
        repaired = repair(checked.good, self._repair)
        observed = [(obs, rank) for obs in repaired.good]
        observed += [(obs, FILL_RANK) for obs in repaired.fills]
        events = [
            event
            for obs, obs_rank in observed
            if (event := self.log.observe(obs, rank=obs_rank, published_at_ms=now_ms)) is not None
        ]
        cycle = Cycle(events, checked.problems + repaired.outliers, repaired.gaps)
        cycle.filled = sum(1 for e in events if is_fill(e["provider"]))
        self.stats.count(cycle)
        for problem in cycle.problems:
            logger.warning("rejected [%s]: %s", problem.code, problem.reason)
        for gap in cycle.gaps:
            logger.warning(
                "gap in %s %s/%s: no value for %d..%d (%.1f h)",
                gap.zone,
                gap.signal,
                gap.variant,
                gap.start_ms,
                gap.end_ms,
                (gap.end_ms - gap.start_ms) / HOUR_MS,
            )
        return cycle


def dead_letter(problem: Problem, now_ms: int) -> DeadLetter:
    """The dead-letter record of a rejected input (id: a hash of reason and input)."""
    return input_letter(
        COMPONENT,
        problem.code,
        problem.reason,
        value=(problem.raw or problem.reason).encode(),
        key=problem.zone.encode() if problem.zone else None,
        failed_at_ms=now_ms,
    )
