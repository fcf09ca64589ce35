"""The NHS App's daily reports: receipts (FHIR ``Bundle`` of ``Task``) and patients (who has
the app, with notifications on or off). Both are paged with ``page=``; a ``next`` link, in
the ``Link`` header or the Bundle's ``link`` array, says another page exists."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx

from appfirst.errors import ProviderUnavailable
from appfirst.providers.auth import SignedJwtAuth
from appfirst.providers.nhsapp import raise_for_outcome

RECEIPTS_REPORT = "/communication/report/receipts/FHIR/R4/Task"
PATIENTS_REPORT = "/communication/report/patients"
MAX_PAGES = 100_000  # a guard against a server that always says "next"


def _has_next(response: httpx.Response, body: Any) -> bool:
    if "next" in response.links:
        return True
    if isinstance(body, dict):
        return any(link.get("relation") == "next" for link in body.get("link") or [])
    return False


class ReportsClient:
    name = "nhs_app_reports"

    def __init__(self, client: httpx.AsyncClient, base_url: str, auth: SignedJwtAuth) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._auth = auth

    async def _pages(self, path: str, params: dict[str, str]) -> AsyncIterator[Any]:
        for page in range(1, MAX_PAGES + 1):
            query = {**params, "page": str(page)}
            try:
                response = await self._client.get(
                    self._base + path, params=query, headers=await self._auth.headers()
                )
            except httpx.HTTPError as exc:
                raise ProviderUnavailable(self.name, type(exc).__name__) from exc
            if response.status_code == 401:
                self._auth.invalidate()
            raise_for_outcome(self.name, response)
            try:
                body = response.json()
            except ValueError as exc:
                raise ProviderUnavailable(self.name, "unreadable report page") from exc
            yield body
            if not _has_next(response, body):
                return

    async def receipts(self, day: date) -> AsyncIterator[dict[str, Any]]:
        """Every ``Task`` of the day's receipts report."""
        async for bundle in self._pages(RECEIPTS_REPORT, {"day": day.isoformat()}):
            for entry in bundle.get("entry") or []:
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(resource, dict):
                    yield resource

    async def patients(self, ods_code: str) -> AsyncIterator[tuple[str, bool]]:
        """(NHS number, notifications enabled) for every NHS App user of the practice."""
        async for page in self._pages(PATIENTS_REPORT, {"ods-organisation-code": ods_code}):
            for row in page if isinstance(page, list) else []:
                if isinstance(row, dict) and row.get("nhsNumber"):
                    yield str(row["nhsNumber"]), bool(row.get("notificationsEnabled"))

    async def aclose(self) -> None:
        await self._client.aclose()
