"""A provider chain per signal: the first provider that answers wins (pure but for time).

Providers are tried in order of trust. One that fails, or answers with nothing usable (a
200 whose items are all refused), is skipped for that zone until
its back-off ends: its ``Retry-After`` if it sent one, else 30 s doubling up to 15 min.
One that rejects the credentials (401/403) is disabled until restart, with a clear
error. Observations carry the provider's ``rank`` (0 = most trusted), so a later
answer from a more trusted provider can supersede a fallback's value (see
``revisions``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agents.grid.http import AuthError, ProviderError
from agents.grid.model import Observation, Problem
from agents.grid.providers import Provider

logger = logging.getLogger(__name__)


@dataclass
class _State:
    failures: int = 0
    retry_at: float = 0.0


@dataclass
class Answer:
    observations: list[Observation] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    provider: str | None = None
    rank: int = 0
    errors: list[ProviderError] = field(default_factory=list)


class ProviderChain:
    def __init__(
        self,
        providers: Sequence[Provider],
        clock: Callable[[], float] = time.monotonic,
        base_backoff_s: float = 30.0,
        max_backoff_s: float = 900.0,
    ) -> None:
        self.providers = list(providers)
        self._clock = clock
        self._base = base_backoff_s
        self._max = max_backoff_s
        self._state: dict[tuple[str, str], _State] = {}
        self.disabled: dict[str, str] = {}  # provider -> why

    def fetch(
        self, zone: str, now_ms: int, is_usable: Callable[[Observation], bool] | None = None
    ) -> Answer:
        """The first answer with a usable observation (``is_usable``: the caller's
        validation; by default any observation is)."""
        answer = Answer()
        for rank, provider in enumerate(self.providers):
            if provider.name in self.disabled or not provider.serves(zone):
                continue
            state = self._state.setdefault((provider.name, zone), _State())
            if self._clock() < state.retry_at:
                continue
            try:
                fetched = provider.fetch(zone, now_ms)
                usable = [o for o in fetched.observations if is_usable is None or is_usable(o)]
                if not usable:  # a 200 with nothing usable is no answer: fall back
                    answer.problems += fetched.problems
                    raise ProviderError(
                        provider.name,
                        "bad_response",
                        f"no usable intensity for {zone} ({len(fetched.observations)} item(s), "
                        f"{len(fetched.problems)} unreadable, none valid)",
                    )
            except AuthError as exc:
                self.disabled[provider.name] = str(exc)
                logger.error("provider %s disabled until restart: %s", provider.name, exc)
                answer.errors.append(exc)
                continue
            except ProviderError as exc:
                state.failures += 1
                wait = exc.retry_after_s or min(self._base * 2 ** (state.failures - 1), self._max)
                state.retry_at = self._clock() + wait
                logger.warning(
                    "provider %s failed for %s (%s); skipping it for %.0fs",
                    provider.name,
                    zone,
                    exc,
                    wait,
                )
                answer.errors.append(exc)
                continue
            state.failures, state.retry_at = 0, 0.0
            answer.observations, answer.problems = fetched.observations, fetched.problems
            answer.provider, answer.rank = provider.name, rank
            return answer
        tried = ", ".join(str(e) for e in answer.errors) or "none serves it or all back off"
        answer.problems.append(
            Problem("provider_error", f"no provider answered for {zone}: {tried}", zone=zone)
        )
        return answer
