"""The ``Sender`` the dispatcher uses: picks the client by channel and retries what can be
retried, honouring ``Retry-After``. It never gives up on a retriable failure: a message held
back is late, a message dropped is lost."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from appfirst import telemetry
from appfirst.errors import ProviderUnavailable
from appfirst.providers.base import Outbound
from appfirst.providers.http import backoff
from appfirst.providers.nhsapp import NhsAppClient
from appfirst.providers.notify import NotifyClient

log = logging.getLogger("appfirst.providers")


class Gateway:
    def __init__(
        self,
        *,
        nhs_app_url: str,
        notify_url: str,
        timeout: float,
        campaign_id: str = "appfirst",
        template_id: str = "appfirst-body",
    ) -> None:
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout))
        self.nhs_app = NhsAppClient(self._client, nhs_app_url, campaign_id)
        self.notify = NotifyClient(self._client, notify_url, template_id)

    async def send(self, message: Outbound) -> str:
        client: NhsAppClient | NotifyClient = (
            self.nhs_app if message.channel == "nhs_app" else self.notify
        )
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                provider_id = await client.send(message)
            except ProviderUnavailable as exc:
                telemetry.provider_requests.labels(client.name, "retry").inc()
                delay = exc.retry_after if exc.retry_after is not None else backoff(attempt)
                log.warning(
                    "provider=%s unavailable (%s), retry %d in %.2fs reference=%s",
                    client.name,
                    exc,
                    attempt,
                    delay,
                    message.reference,
                )
                await asyncio.sleep(delay)
                continue
            telemetry.provider_requests.labels(client.name, "ok").inc()
            telemetry.provider_latency.labels(client.name).observe(time.perf_counter() - started)
            return provider_id

    async def aclose(self) -> None:
        await self._client.aclose()
