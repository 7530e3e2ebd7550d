"""Work done: token counters scraped from an inference server's Prometheus endpoint.

vLLM exposes ``vllm:prompt_tokens_total`` and ``vllm:generation_tokens_total``; TGI
``tgi_request_input_length_sum`` and ``tgi_request_generated_tokens_sum`` (names are
configurable). Each scrape returns the tokens since the previous good one, summed over
the series (e.g. one per served model). A counter that goes down restarted from zero, so
its new value is the delta; a failed scrape returns nothing and the next good one covers
the gap, so tokens are neither lost nor counted twice.
"""

from __future__ import annotations

import logging

import httpx
from prometheus_client.parser import text_string_to_metric_families

from agents.gpu.model import Tokens

logger = logging.getLogger(__name__)


Series = tuple[str, tuple[tuple[str, str], ...]]


def counter_values(text: str, names: tuple[str, ...]) -> dict[Series, float]:
    """The samples named ``names`` in an exposition text, by (name, labels)."""
    values: dict[Series, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def deltas(previous: dict[Series, float], current: dict[Series, float]) -> dict[Series, float]:
    """Per-series increase; a decrease is a counter reset (the new value is the delta)."""
    out = {}
    for series, value in current.items():
        before = previous.get(series, 0.0)
        out[series] = value - before if value >= before else value
    return out


class TokenScraper:
    def __init__(
        self,
        url: str,
        prompt_metric: str,
        generation_metric: str,
        client: httpx.Client | None = None,
        timeout_s: float = 0.5,
    ) -> None:
        self._url = url
        self._names = (prompt_metric, generation_metric)
        self._client = client or httpx.Client(timeout=timeout_s)
        self._last: dict[Series, float] | None = None
        self.errors = 0

    def take(self) -> Tokens:
        """Tokens since the last good scrape (nothing on the first, or on a failure)."""
        try:
            response = self._client.get(self._url)
            response.raise_for_status()
            current = counter_values(response.text, self._names)
        except (httpx.HTTPError, ValueError) as exc:
            self.errors += 1
            logger.warning("token scrape of %s failed: %s", self._url, exc)
            return Tokens()
        previous, self._last = self._last, current
        if previous is None:
            return Tokens()
        change = deltas(previous, current)
        prompt_name, generation_name = self._names
        return Tokens(
            round(sum(v for (name, _), v in change.items() if name == prompt_name)),
            round(sum(v for (name, _), v in change.items() if name == generation_name)),
        )

    def close(self) -> None:
        self._client.close()
