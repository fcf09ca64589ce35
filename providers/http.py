"""Shared HTTP behaviour of provider clients: status mapping and the retry policy."""

from __future__ import annotations

import random

import httpx

from appfirst.errors import ProviderRejected, ProviderUnavailable

RETRIABLE = frozenset({408, 425, 429, 500, 502, 503, 504})


def is_retriable(status: int) -> bool:
    return status in RETRIABLE


def backoff(attempt: int, *, base: float = 0.2, cap: float = 30.0) -> float:
    """Full-jitter exponential backoff (seconds) before retry ``attempt`` (1-based)."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def raise_for_status(provider: str, response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    if is_retriable(response.status_code):
        raise ProviderUnavailable(
            provider,
            f"HTTP {response.status_code}",
            status=response.status_code,
            retry_after=retry_after(response),
        )
    raise ProviderRejected(provider, f"HTTP {response.status_code}", status=response.status_code)


class CircuitBreaker:
    """Stops calling a provider that keeps failing: after ``threshold`` failures in a row
    the circuit opens for ``cooldown`` seconds, then one call is let through to probe."""

    def __init__(self, threshold: int = 5, cooldown: float = 30.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None

    def allow(self, now: float) -> bool:
        if self.opened_at is None:
            return True
        if now - self.opened_at >= self.cooldown:
            self.opened_at = now  # half-open: this caller probes, others wait another cooldown
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = now


# Errors raised before the request could have reached the provider: safe to resend.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
AMBIGUOUS_STATUSES = frozenset({502, 504})


def unavailable(provider: str, exc: httpx.HTTPError) -> ProviderUnavailable:
    """A failed call as a retriable error, saying whether the provider may have acted."""
    return ProviderUnavailable(
        provider, type(exc).__name__, ambiguous=not isinstance(exc, NOT_SENT)
    )


def json_or_empty(response: httpx.Response) -> dict[str, object]:
    """The body of a success. An unreadable body does not undo the send it confirms."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
