"""One HTTP client per provider: explicit timeouts, bounded retries, Retry-After.

httpx does the HTTP; tenacity does the retrying (exponential backoff with jitter), within
an attempt count and a time budget per call. Outcomes:

* 200 with JSON: the parsed body.
* 401/403: :class:`AuthError`, at once. The credentials are wrong, and retrying does not
  help. The chain stops using that provider and says so.
* 429 or 5xx: retried. A ``Retry-After`` longer than the budget left is not waited out
  here: the call fails with ``retry_after`` set, and the chain skips the provider until
  then.
* Timeouts and connection errors: retried.
* Any other 4xx, and bodies that are not JSON (HTML error pages, garbage): a
  :class:`ProviderError` with ``code='bad_response'``, not retried, never a crash.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from schemas.errors import LlcrError


class ProviderError(LlcrError):
    """A provider call that failed; ``code`` is auth | transient | rate_limited | bad_response."""

    def __init__(
        self, provider: str, code: str, message: str, retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.code = code
        self.retry_after_s = retry_after_s


class AuthError(ProviderError):
    def __init__(self, provider: str, message: str) -> None:
        super().__init__(provider, "auth", message)


class _RetryableError(LlcrError):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class ApiClient:
    def __init__(
        self,
        provider: str,
        client: httpx.Client,
        *,
        attempts: int = 3,
        budget_s: float = 10.0,
        max_backoff_s: float = 4.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.provider = provider
        self._client = client
        self._attempts = attempts
        self._budget_s = budget_s
        self._max_backoff_s = max_backoff_s
        self._sleep = sleep
        self.requests = 0

    def get_json(self, url: str, **kwargs: Any) -> Any:
        started = time.monotonic()
        backoff = wait_exponential_jitter(initial=0.25, max=self._max_backoff_s)

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            after = getattr(error, "retry_after_s", None)
            left = self._budget_s - (time.monotonic() - started)
            if after is not None and after > left:
                raise ProviderError(
                    self.provider,
                    "rate_limited",
                    f"asked to wait {after:.0f}s (Retry-After)",
                    after,
                )
            return after if after is not None else min(backoff(state), max(left, 0.0))

        retrying = Retrying(
            stop=stop_after_attempt(self._attempts) | stop_after_delay(self._budget_s),
            wait=wait,
            retry=retry_if_exception_type(_RetryableError),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._once(url, **kwargs)
        except _RetryableError as exc:
            raise ProviderError(
                self.provider, "transient", f"{exc} (gave up after retries)", exc.retry_after_s
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, url: str, **kwargs: Any) -> Any:
        self.requests += 1
        try:
            response = self._client.get(url, **kwargs)
        except httpx.TimeoutException as exc:
            raise _RetryableError(f"timeout calling {url}") from exc
        except httpx.TransportError as exc:
            raise _RetryableError(f"cannot reach {url}: {exc}") from exc
        status = response.status_code
        if status in (401, 403):
            raise AuthError(self.provider, f"HTTP {status} from {url}: check the credentials")
        if status == 429 or status >= 500:
            raise _RetryableError(
                f"HTTP {status} from {url}",
                retry_after_seconds(response.headers.get("Retry-After")),
            )
        if status != 200:
            raise ProviderError(
                self.provider, "bad_response", f"HTTP {status} from {url}: {_snippet(response)}"
            )
        try:
            return response.json()
        except ValueError as exc:
            raise ProviderError(
                self.provider, "bad_response", f"not JSON from {url}: {_snippet(response)}"
            ) from exc


def _snippet(response: httpx.Response) -> str:
    text = " ".join(response.text.split())
    return repr(text[:80] + ("..." if len(text) > 80 else ""))
