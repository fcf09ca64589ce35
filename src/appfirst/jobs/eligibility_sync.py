"""Eligibility sync: each practice's NHS App patients report into the ``eligibility`` topic.

The report is made by a daily batch at the NHS App, so once a day is enough (cron, or
``appfirst eligibility-sync`` by hand). It lists only patients who have the NHS App;
anyone else is found absent by the router's on-demand lookup, which reads the same report.
A patient who left the NHS App since the last sync keeps an old ``has_nhs_app`` record
until then: their message goes to the app, is rejected, and the fallback SMS goes at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from appfirst.jobs.kafka import publish, read_all
from appfirst.providers import factory
from appfirst.settings import Settings
from appfirst.topics.models import Eligibility, Event, PracticeSettings


@dataclass(frozen=True)
class SyncResult:
    practices: int
    patients: int
    notifications_enabled: int


async def nhs_app_practices(settings: Settings) -> list[str]:
    """Every practice whose latest settings turn the NHS App route on: only their patients'
    eligibility is ever consulted."""
    latest: dict[str, PracticeSettings] = {}
    for practice in await read_all(settings, "practice-settings", PracticeSettings, None):
        latest[practice.ods_code] = practice
    return sorted(ods for ods, p in latest.items() if p.nhs_app_individual)


async def sync(settings: Settings, ods_codes: list[str]) -> SyncResult:
    reports = factory.reports(settings)
    checked = datetime.now(UTC)
    events: list[tuple[str, Event]] = []
    enabled = 0
    try:
        for ods in ods_codes:
            async for nhs, notifications in reports.patients(ods):
                enabled += notifications
                events.append(
                    (
                        nhs,
                        Eligibility(
                            nhs_number=nhs,
                            has_nhs_app=True,
                            notifications_enabled=notifications,
                            checked_at=checked,
                        ),
                    )
                )
    finally:
        await reports.aclose()
    await publish(settings, "eligibility", events)
    return SyncResult(len(ods_codes), len(events), enabled)
