"""On-demand eligibility: does this patient have the NHS App with notifications on?

The NHS App API answers this only per practice (the patients report, refreshed by a daily
batch), never per patient. So a cache miss in the router fetches the practice's whole
report once, keeps it for the day, and answers every later miss of that practice from
memory. The router waits at most ``timeout`` for it; a slow or absent API makes the
decision ``sms/eligibility_unknown`` rather than holding up the stream, and the fetch goes
on in the background so the next miss of that practice is answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from appfirst.errors import ProviderError
from appfirst.providers.http import CircuitBreaker
from appfirst.providers.reports import ReportsClient
from appfirst.topics.models import Eligibility

log = logging.getLogger("appfirst.providers")


class EligibilityLookup(Protocol):
    async def lookup(self, nhs_number: str, ods_code: str) -> Eligibility | None:
        """The patient's eligibility now, or None if it cannot be known in time."""
        ...


@dataclass
class Roster:
    """One practice's NHS App users: NHS number -> notifications enabled."""

    users: dict[str, bool]
    fetched_at: float
    checked_at: datetime


class PracticeReportLookup:
    name = "nhs_app_eligibility"

    def __init__(
        self,
        reports: ReportsClient,
        *,
        timeout: float,
        max_age: float = 86_400.0,
        max_practices: int = 500,
    ) -> None:
        self._reports = reports
        self._timeout = timeout
        self._max_age = max_age
        self._max_practices = max_practices
        self._rosters: OrderedDict[str, Roster] = OrderedDict()
        self._fetching: dict[str, asyncio.Task[Roster]] = {}
        self.breaker = CircuitBreaker()
        self.fetches = 0

    async def lookup(self, nhs_number: str, ods_code: str) -> Eligibility | None:
        roster = self._fresh(ods_code)
        if roster is None:
            task = self._fetch(ods_code)
            if task is None:
                return None
            try:
                roster = await asyncio.wait_for(asyncio.shield(task), self._timeout)
            except (TimeoutError, ProviderError):
                return None
            except Exception:
                log.exception("eligibility lookup failed")
                return None
        notifications = roster.users.get(nhs_number)
        # Absent from the report: no NHS App account we can message.
        return Eligibility(
            nhs_number=nhs_number,
            has_nhs_app=notifications is not None,
            notifications_enabled=bool(notifications),
            checked_at=roster.checked_at,
        )

    def _fresh(self, ods_code: str) -> Roster | None:
        roster = self._rosters.get(ods_code)
        if roster is None or time.monotonic() - roster.fetched_at > self._max_age:
            return None
        self._rosters.move_to_end(ods_code)
        return roster

    def _fetch(self, ods_code: str) -> asyncio.Task[Roster] | None:
        task = self._fetching.get(ods_code)
        if task is not None:
            return task
        if not self.breaker.allow(time.monotonic()):
            return None
        task = asyncio.get_running_loop().create_task(self._load(ods_code))
        self._fetching[ods_code] = task
        task.add_done_callback(lambda t: self._done(ods_code, t))
        return task

    def _done(self, ods_code: str, task: asyncio.Task[Roster]) -> None:
        self._fetching.pop(ods_code, None)
        if task.cancelled() or task.exception() is not None:
            self.breaker.failure(time.monotonic())
            return
        self.breaker.success()
        self._rosters[ods_code] = task.result()
        while len(self._rosters) > self._max_practices:
            self._rosters.popitem(last=False)

    async def _load(self, ods_code: str) -> Roster:
        self.fetches += 1
        users = {nhs: enabled async for nhs, enabled in self._reports.patients(ods_code)}
        return Roster(users, time.monotonic(), datetime.now(UTC))

    async def aclose(self) -> None:
        for task in list(self._fetching.values()):
            task.cancel()
        await self._reports.aclose()
