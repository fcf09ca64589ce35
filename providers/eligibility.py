"""On-demand eligibility: does this patient have the NHS App with notifications on?

Used by the router on a cache miss only, bounded by a short timeout and a circuit breaker,
so that a slow or absent API makes the decision ``sms/eligibility_unknown`` rather than
holding up the stream. The per-patient query is the patients report of the NHS App API
filtered to one NHS number.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol

import httpx

from appfirst.errors import ProviderError, ProviderUnavailable
from appfirst.providers.http import CircuitBreaker, raise_for_status
from appfirst.topics.models import Eligibility

PATIENTS_REPORT = "/communication/report/patients"


class EligibilityLookup(Protocol):
    async def lookup(self, nhs_number: str, ods_code: str) -> Eligibility | None:
        """The patient's eligibility now, or None if it cannot be known in time."""
        ...


class HttpEligibilityLookup:
    name = "nhs_app_eligibility"

    def __init__(self, client: httpx.AsyncClient, base_url: str, *, timeout: float) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + PATIENTS_REPORT
        self._timeout = timeout
        self.breaker = CircuitBreaker()

    async def lookup(self, nhs_number: str, ods_code: str) -> Eligibility | None:
        now = time.monotonic()
        if not self.breaker.allow(now):
            return None
        try:
            result = await asyncio.wait_for(self._fetch(nhs_number, ods_code), self._timeout)
        except (TimeoutError, ProviderError):
            self.breaker.failure(time.monotonic())
            return None
        self.breaker.success()
        return result

    async def _fetch(self, nhs_number: str, ods_code: str) -> Eligibility:
        try:
            response = await self._client.get(
                self._url,
                params={"ods-organisation-code": ods_code, "nhs-number": nhs_number},
            )
        except httpx.TransportError as exc:
            raise ProviderUnavailable(self.name, type(exc).__name__) from exc
        raise_for_status(self.name, response)
        patients = response.json().get("patients", [])
        found = next((p for p in patients if p.get("nhsNumber") == nhs_number), None)
        # Absent from the report: the patient has no NHS App account we can message.
        return Eligibility(
            nhs_number=nhs_number,
            has_nhs_app=found is not None,
            notifications_enabled=bool(found and found.get("notificationsEnabled")),
            checked_at=datetime.now(UTC),
        )
