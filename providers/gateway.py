"""The ``Sender`` the dispatcher uses: picks the client by channel, keeps each provider under
its rate limit, and retries what can be retried.

- A token bucket per provider paces requests below the published limit, so 429s are rare.
  ``set_share`` scales it to this worker's part of the group (``rules/sending.share``).
- Retriable failures (429, 5xx, transport, 401 after renewing the token) wait with jittered
  exponential backoff, or exactly ``Retry-After`` when the provider says. Each message
  waits on its own: many sends are in flight at once and one backoff holds no other.
- A circuit per provider: after repeated failures callers stop calling and wait out a
  cooldown; one probe goes through, and its success closes the circuit for everyone.
- A send that may have arrived (read timeout, dropped connection, 502/504) is never simply
  resent: Notify is asked by reference first; the NHS App, which cannot be asked, is left
  to its receipts and the fallback deadline (``SentUnconfirmed``).
- SMS and email are never given up on a retriable failure: a message held back is late, a
  message dropped is lost, and there is no channel below SMS. The NHS App is bounded
  (``GiveUp``): a message it has not accepted in time, or any message while it refuses our
  credentials, raises ``GivenUp`` and the caller falls back to SMS at once.
- Only a stopping worker, or one that lost the message's partition, gives up between
  attempts (``SendAbandoned``): the message is then sent by whoever reads it next. A
  ``ProviderRejected`` (the request itself is wrong) goes back to the caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from appfirst import telemetry
from appfirst.errors import (
    GivenUp,
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
from appfirst.rules.sending import GiveUp

log = logging.getLogger("appfirst.providers")

Client = NhsAppClient | NotifyClient

# What a provider counts is when requests arrive, over a window (a second for the NHS App's
# spike arrest, a minute for Notify). Paced exactly at the limit, any delay on the way (the
# event loop, the network, the provider's front door) that holds one request and not the one
# a window after it puts one request too many in that window, answered 429: seen in 1 of 5
# runs of 10,000 sends at 250 a second. Pacing each window's worth of requests over the
# window and this much more absorbs delays up to it, for 2.5% of the NHS App's rate.
ARRIVAL_SLACK_SECONDS = 0.025


def _configuration_fault(exc: ProviderUnavailable) -> bool:
    """Retrying cannot fix it: the NHS App's token endpoint refuses our signed assertion
    (any 4xx but 429), or Notify refuses our key (401/403)."""
    status = exc.status
    if status is None or status == 429:
        return False
    if exc.provider.endswith("_auth"):
        return 400 <= status < 500
    return exc.provider == "notify" and status in (401, 403)


def _paced(limit_per_second: float, window: float) -> float:
    """The rate to send at under a limit counted over ``window`` seconds of arrivals."""
    return limit_per_second * window / (window + ARRIVAL_SLACK_SECONDS)


@dataclass
class Route:
    client: Client
    bucket: TokenBucket
    breaker: CircuitBreaker
    rate: float  # what the whole group may send (the limit, paced); the bucket: this worker's share
    failing_since: float | None = None  # wall clock: first failure with no success since
    misconfigured_since: float | None = None
    last_probe: float | None = None
    # The same pace again, just before a request leaves. The bucket paces the attempts, but
    # the dispatcher's ``on_attempt`` (a durable record, between the bucket and the request)
    # returns to every attempt waiting on one flush at once, and those would leave together.
    gate: TokenBucket = field(init=False)

    def __post_init__(self) -> None:
        self.gate = TokenBucket(self.bucket.rate, 1.0)

    def pace(self, rate: float) -> None:
        self.bucket.rate = rate
        self.gate.rate = rate

    def succeeded(self) -> None:
        self.breaker.success()
        self.failing_since = None
        if self.misconfigured_since is not None:
            self.misconfigured_since = None
            telemetry.provider_misconfigured.labels(self.client.name).set(0)

    def failed(self, now: float) -> None:
        if self.failing_since is None:
            self.failing_since = now


Hook = Callable[[], Awaitable[None]]


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
        give_up: GiveUp | None = None,
    ) -> None:
        self._http = http
        self.give_up = give_up
        # No burst: the providers count over a sliding window (a second for the NHS App's
        # spike arrest, a minute for Notify), and a full bucket on top of a second's rate
        # would put twice the limit in the first window, each excess answered 429.
        self._routes = {
            "nhs_app": Route(
                nhs_app,
                TokenBucket(nhs_app_rate := _paced(nhs_app_per_second, 1.0), 1.0),
                CircuitBreaker(breaker_threshold, breaker_cooldown),
                nhs_app_rate,
            ),
            "notify": Route(
                notify,
                TokenBucket(notify_rate := _paced(notify_per_second, 60.0), 1.0),
                CircuitBreaker(breaker_threshold, breaker_cooldown),
                notify_rate,
            ),
        }
        self._notify = notify
        self.attempts = 0
        self.stopping = False

    def stop_new_attempts(self) -> None:
        """From now on, a send raises ``SendAbandoned`` instead of starting an attempt: a
        stopping worker finishes the requests in flight and starts no other."""
        self.stopping = True

    def set_share(self, fraction: float) -> None:
        """Pace every provider at ``fraction`` of its limit: this worker's part of the
        group's partitions, so that N workers together stay under the limit."""
        fraction = min(1.0, max(fraction, 0.01))  # a bucket needs a positive rate
        for route in self._routes.values():
            route.pace(route.rate * fraction)

    def rate(self, lane: str) -> float:
        """Requests a second this worker may make to the provider of ``lane`` now."""
        return self._routes[lane].bucket.rate

    def failing_since(self, lane: str) -> float | None:
        return self._routes[lane].failing_since

    async def send(
        self,
        message: Outbound,
        *,
        first_attempt: float | None = None,
        on_attempt: Hook | None = None,
        on_refused: Hook | None = None,
        abandoned: Callable[[], bool] | None = None,
    ) -> str:
        """Send ``message``; return the provider's id for it.

        ``on_attempt`` runs before each request (the dispatcher makes a durable record
        that a request may be in flight); ``on_refused`` after a request the provider
        refused before acting on it. ``first_attempt`` (wall clock) is when an earlier
        owner first tried it: the NHS App's give-up counts from there. ``abandoned`` is
        asked between attempts: true once the message's partition is lost.
        """
        route = self._routes["nhs_app" if message.channel == "nhs_app" else "notify"]
        name = route.client.name
        attempt = 0

        def check() -> None:
            if self.stopping or (abandoned is not None and abandoned()):
                raise SendAbandoned(f"{name}: not sending attempt {attempt + 1}")
            self._check_give_up(route, first_attempt)

        while True:
            check()
            await self._closed_circuit(route, check)
            await route.bucket.acquire()
            check()
            if on_attempt is not None:
                await on_attempt()
            now = time.time()
            if first_attempt is None:
                first_attempt = now
            if route.misconfigured_since is not None:
                route.last_probe = now
            attempt += 1
            self.attempts += 1
            await route.gate.acquire()
            started = time.perf_counter()
            try:
                provider_id = await route.client.send(message)
            except ProviderRejected as exc:
                route.breaker.success()  # the provider answered: it is up
                route.failing_since = None
                telemetry.provider_requests.labels(name, "rejected").inc()
                if exc.status == 403:
                    self._misconfigured(route, time.time())
                raise exc
            except ProviderUnavailable as exc:
                outcome = f"throttled_{exc.kind}" if isinstance(exc, Throttled) else "unavailable"
                telemetry.provider_requests.labels(name, outcome).inc()
                now = time.time()
                if not isinstance(exc, Throttled):
                    route.breaker.failure(time.monotonic())
                    route.failed(now)
                if exc.ambiguous and name == "nhs_app":
                    # No way to ask the NHS App what it has (no lookup by request-id):
                    # resending could show the message twice. Receipts or the fallback
                    # deadline settle it, and the fallback SMS is the safety net.
                    telemetry.provider_requests.labels(name, "unconfirmed").inc()
                    raise SentUnconfirmed(name, str(exc)) from exc
                if not exc.ambiguous and on_refused is not None:
                    await on_refused()
                if _configuration_fault(exc):
                    self._misconfigured(route, now)
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
                await self._sleep(delay, check)
                continue
            route.succeeded()
            telemetry.provider_requests.labels(name, "ok").inc()
            telemetry.provider_latency.labels(name).observe(time.perf_counter() - started)
            return provider_id

    def _misconfigured(self, route: Route, now: float) -> None:
        if route.misconfigured_since is None:
            route.misconfigured_since = now
            log.critical(
                "provider=%s refuses our credentials or permissions: %s",
                route.client.name,
                "NHS App messages fall back to SMS until it is fixed"
                if route.client.name == "nhs_app"
                else "SMS and email are held until it is fixed",
                extra={"provider": route.client.name},
            )
        route.last_probe = now
        telemetry.provider_misconfigured.labels(route.client.name).set(1)

    def _check_give_up(self, route: Route, first_attempt: float | None) -> None:
        """Raise ``GivenUp`` if the NHS App is to be given up for this message now."""
        if self.give_up is None or route.client.name != "nhs_app":
            return
        reason = self.give_up.due(
            now=time.time(),
            first_attempt=first_attempt,
            failing_since=route.failing_since,
            misconfigured_since=route.misconfigured_since,
            last_probe=route.last_probe,
        )
        if reason is not None:
            telemetry.nhs_app_given_up.labels(reason).inc()
            raise GivenUp(route.client.name, reason)

    @staticmethod
    async def _sleep(delay: float, check: Callable[[], None]) -> None:
        """A backoff that ends early, by ``check`` raising, once the message is to be
        given up or abandoned."""
        end = time.monotonic() + delay
        check()
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 1.0))
            check()

    async def find(
        self, message: Outbound, abandoned: Callable[[], bool] | None = None
    ) -> str | None:
        """Notify's id for what was sent under ``message.reference``, if anything: asked
        before resending an attempt that an earlier owner may have made. Retried like a
        send; never given up."""
        route = self._routes["notify"]
        attempt = 0

        def check() -> None:
            if self.stopping or (abandoned is not None and abandoned()):
                raise SendAbandoned("notify: not looking up")

        while True:
            check()
            await self._closed_circuit(route, check)
            await route.bucket.acquire()
            check()
            await route.gate.acquire()
            try:
                found = await self._notify.find(message.reference)
            except ProviderUnavailable as exc:
                attempt += 1
                telemetry.provider_requests.labels("notify", "unavailable").inc()
                route.breaker.failure(time.monotonic())
                route.failed(time.time())
                await self._sleep(exc.retry_after or backoff(attempt), check)
                continue
            route.succeeded()
            telemetry.provider_requests.labels("notify", "lookup").inc()
            return found

    @staticmethod
    async def _closed_circuit(route: Route, check: Callable[[], None]) -> None:
        while not route.breaker.allow(time.monotonic()):
            telemetry.provider_requests.labels(route.client.name, "circuit_open").inc()
            check()
            await asyncio.sleep(min(1.0, route.breaker.cooldown))

    async def aclose(self) -> None:
        await self._http.aclose()
