"""The ``Sender`` the dispatcher uses: picks the client by channel, keeps each provider under
its rate limit, and retries what can be retried.

- A token bucket per provider paces requests below the published limit, so 429s are rare.
- Retriable failures (429, 5xx, transport, 401 after renewing the token) wait with jittered
  exponential backoff, or exactly ``Retry-After`` when the provider says.
- A circuit per provider: after repeated failures callers stop calling and wait out a
  cooldown; one probe goes through, and its success closes the circuit for everyone.
- A send that may have arrived (read timeout, dropped connection, 502/504) is never simply
  resent: Notify is asked by reference first; the NHS App, which cannot be asked, is left
  to its receipts and the fallback deadline (``SentUnconfirmed``).
- It never gives up on a retriable failure: a message held back is late, a message dropped
  is lost. Only a stopping worker gives up, between attempts (``stop_new_attempts``): the
  message is then sent by whoever reads it next. A ``ProviderRejected`` (the request
  itself is wrong) goes back to the caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import httpx

from appfirst import telemetry
from appfirst.errors import (
    ProviderRejected,
    ProviderUnavailable,
    SendAbandoned,
    SentUnconfirmed,
    Throttled,
)
from appfirst.providers.base import Outbound
from appfirst.providers.http import CircuitBreaker, backoff
from appfirst.providers.nhsapp import NhsAppClient
from appfirst.providers.notify import NotifyClient
from appfirst.providers.ratelimit import TokenBucket

log = logging.getLogger("appfirst.providers")

Client = NhsAppClient | NotifyClient


@dataclass
class Route:
    client: Client
    bucket: TokenBucket
    breaker: CircuitBreaker


class Gateway:
    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        nhs_app: NhsAppClient,
        notify: NotifyClient,
        nhs_app_per_second: float,
        notify_per_second: float,
        breaker_threshold: int = 5,
        breaker_cooldown: float = 5.0,
    ) -> None:
        self._http = http
        # Burst of one second's worth: the providers count per second (spike arrest).
        self._routes = {
            "nhs_app": Route(
                nhs_app,
                TokenBucket(nhs_app_per_second, max(1.0, nhs_app_per_second)),
                CircuitBreaker(breaker_threshold, breaker_cooldown),
            ),
            "notify": Route(
                notify,
                TokenBucket(notify_per_second, max(1.0, notify_per_second)),
                CircuitBreaker(breaker_threshold, breaker_cooldown),
            ),
        }
        self.attempts = 0
        self.stopping = False

    def stop_new_attempts(self) -> None:
        """From now on, a send raises ``SendAbandoned`` instead of starting an attempt: a
        stopping worker finishes the request in flight and starts no other."""
        self.stopping = True

    async def send(self, message: Outbound) -> str:
        route = self._routes["nhs_app" if message.channel == "nhs_app" else "notify"]
        name = route.client.name
        attempt = 0
        while True:
            await self._closed_circuit(route)
            await route.bucket.acquire()
            if self.stopping:
                raise SendAbandoned(f"{name}: worker stopping before attempt {attempt + 1}")
            attempt += 1
            self.attempts += 1
            started = time.perf_counter()
            try:
                provider_id = await route.client.send(message)
            except ProviderRejected as exc:
                route.breaker.success()  # the provider answered: it is up
                telemetry.provider_requests.labels(name, "rejected").inc()
                raise exc
            except ProviderUnavailable as exc:
                outcome = f"throttled_{exc.kind}" if isinstance(exc, Throttled) else "unavailable"
                telemetry.provider_requests.labels(name, outcome).inc()
                if not isinstance(exc, Throttled):
                    route.breaker.failure(time.monotonic())
                if exc.ambiguous and name == "nhs_app":
                    # No way to ask the NHS App what it has (no lookup by request-id):
                    # resending could show the message twice. Receipts or the fallback
                    # deadline settle it, and the fallback SMS is the safety net.
                    telemetry.provider_requests.labels(name, "unconfirmed").inc()
                    raise SentUnconfirmed(name, str(exc)) from exc
                delay = exc.retry_after if exc.retry_after is not None else backoff(attempt)
                log.warning(
                    "provider=%s %s (%s), retry %d in %.2fs reference=%s",
                    name,
                    outcome,
                    exc,
                    attempt,
                    delay,
                    message.reference,
                    extra={
                        "message_id": message.message_id,
                        "reference": message.reference,
                        "provider": name,
                        "outcome": outcome,
                    },
                )
                await asyncio.sleep(delay)
                continue
            route.breaker.success()
            telemetry.provider_requests.labels(name, "ok").inc()
            telemetry.provider_latency.labels(name).observe(time.perf_counter() - started)
            return provider_id

    @staticmethod
    async def _closed_circuit(route: Route) -> None:
        while not route.breaker.allow(time.monotonic()):
            telemetry.provider_requests.labels(route.client.name, "circuit_open").inc()
            await asyncio.sleep(min(1.0, route.breaker.cooldown))

    async def aclose(self) -> None:
        await self._http.aclose()
