"""Retry policy and the circuit breaker: pure functions of their inputs."""

from __future__ import annotations

import httpx
import pytest

from appfirst.errors import ProviderRejected, ProviderUnavailable
from appfirst.providers.http import (
    CircuitBreaker,
    backoff,
    is_retriable,
    raise_for_status,
    retry_after,
)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_retriable_statuses(status: int) -> None:
    assert is_retriable(status)


@pytest.mark.parametrize("status", [200, 201, 400, 401, 403, 404, 409, 422])
def test_other_statuses_are_not_retried(status: int) -> None:
    assert not is_retriable(status)


def test_backoff_is_jittered_under_an_exponential_cap() -> None:
    for attempt in range(1, 12):
        samples = [backoff(attempt, base=0.2, cap=30) for _ in range(200)]
        assert all(0 <= s <= min(30, 0.2 * 2 ** (attempt - 1)) for s in samples)
        assert len(set(samples)) > 1


def test_retry_after_is_read_in_seconds() -> None:
    assert retry_after(httpx.Response(429, headers={"Retry-After": "2.5"})) == 2.5
    assert retry_after(httpx.Response(429, headers={"Retry-After": "soon"})) is None
    assert retry_after(httpx.Response(429)) is None


def test_status_mapping() -> None:
    raise_for_status("p", httpx.Response(201))
    with pytest.raises(ProviderUnavailable) as unavailable:
        raise_for_status("p", httpx.Response(429, headers={"Retry-After": "3"}))
    assert unavailable.value.retry_after == 3 and unavailable.value.status == 429
    with pytest.raises(ProviderRejected) as rejected:
        raise_for_status("p", httpx.Response(400))
    assert rejected.value.status == 400


def test_the_circuit_opens_after_repeated_failures_and_probes_after_cooldown() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=10)
    for t in range(3):
        assert breaker.allow(t)
        breaker.failure(t)
    assert not breaker.allow(5)
    assert breaker.allow(12.5)  # one probe
    assert not breaker.allow(13)  # the others wait while it is out
    breaker.success()
    assert breaker.allow(13) and breaker.failures == 0
