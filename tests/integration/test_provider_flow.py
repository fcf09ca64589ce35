"""Providers through a running worker: callbacks refused without their token, an outage
that loses nothing, receipts filled in from the daily report, and the eligibility sync."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from appfirst.jobs.eligibility_sync import nhs_app_practices, sync
from appfirst.jobs.reconcile import key_of, reconcile
from appfirst.providers.scenario import Scenario
from appfirst.settings import settings_from_env
from appfirst.topics.models import DeliveryReceipt, Dispatch, Eligibility, ReadReceipt
from tests import loopback

from .factories import app_user, practice, request

pytestmark = pytest.mark.integration

TASK = {
    "resourceType": "Task",
    "intent": "order",
    "identifier": [{"system": "https://fhir.nhs.uk/NHSApp/request-id", "value": "cb-1"}],
    "status": "completed",
    "code": {"coding": [{"code": "Read"}]},
    "lastModified": "2026-11-21T10:00:00Z",
}


async def test_forged_callbacks_are_refused_and_write_nothing(stack_factory: Any) -> None:
    stack = stack_factory(
        APPFIRST_NHS_APP_CALLBACK_TOKEN="nhs-app-secret",
        APPFIRST_NOTIFY_CALLBACK_TOKEN="notify-secret",
    )
    _, port = await stack.start_worker()
    url = f"http://127.0.0.1:{port}/callbacks/nhs-app"
    forged = {
        "none": {},
        "wrong": {"Authorization": "Bearer guess"},
        "other provider's": {"Authorization": "Bearer notify-secret"},
        "not bearer": {"Authorization": "nhs-app-secret"},
        "prefix": {"Authorization": "Bearer nhs-app-secre"},
    }
    async with loopback.client(timeout=5) as client:
        for name, headers in forged.items():
            answer = await client.post(url, json=TASK, headers=headers)
            assert answer.status_code == 401, name
        ok = await client.post(url, json=TASK, headers={"Authorization": "Bearer nhs-app-secret"})
        assert ok.status_code == 202
        again = await client.post(
            url, json=TASK, headers={"Authorization": "Bearer nhs-app-secret"}
        )
        assert again.status_code == 202  # a duplicate is accepted, and harmless downstream
    records = await stack.read(["read-receipts"], lambda rs: len(rs) >= 2, timeout=10)
    assert [e.message_id for _, e in records] == ["cb-1", "cb-1"]  # the two genuine ones


@pytest.mark.slow(45)
async def test_a_30s_outage_loses_nothing_and_sends_each_once(stack_factory: Any) -> None:
    stack = stack_factory(APPFIRST_PROVIDERS="simulator")
    sim_url = await stack.start_simulator(send_callbacks=False)
    await stack.publish("practice-settings", "APP01", practice("APP01"))
    await stack.start_worker()
    async with loopback.client(timeout=5) as client:
        await client.post(sim_url + "/_sim/outage", json={"seconds": 30, "status": 503})
    reqs = [request(f"o-{i:03d}", ods_code="APP01") for i in range(120)]
    records: list[tuple[str, str, Any]] = []
    for r in reqs[::2]:  # half by NHS App, half by SMS (no eligibility record: SMS)
        records.append(("eligibility", r.patient.nhs_number, app_user(r.patient.nhs_number)))
    records += [("send-requests", r.message_id, r) for r in reqs]
    await stack.publish_many(records)
    dispatched = await stack.read(
        ["dispatches"], lambda rs: len({e.message_id for _, e in rs}) >= 120, 60
    )
    channels = {e.message_id: e.channel for _, e in dispatched if isinstance(e, Dispatch)}
    assert set(channels.values()) == {"nhs_app", "sms"}
    deadline = asyncio.get_running_loop().time() + 90
    while True:
        sends = await stack.sends(references=True)
        if sends["total"] >= 120 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(1)
    assert sends["counts"].get("outage_refused", 0) > 0, "the outage was never seen"
    assert set(sends["references"]) == set(channels)  # every message, no other
    assert all(v["calls"] == 1 for v in sends["references"].values())
    assert sends["duplicates"] == 0
    first = min(v["received_at"] for v in sends["references"].values())
    assert first >= sends["outage_until"]  # nothing slipped through during the outage


@pytest.mark.slow(20)
async def test_reconciliation_fills_in_lost_callbacks_once(stack_factory: Any) -> None:
    stack = stack_factory(APPFIRST_PROVIDERS="simulator")
    await stack.start_simulator(
        callback_loss_share=0.3,
        delivery_seconds=0.05,
        read_median_seconds=0.2,
        read_share=0.8,
        respond_share_app=0.0,
    )
    await stack.publish("practice-settings", "APP01", practice("APP01"))
    await stack.start_worker()
    reqs = [request(f"r-{i:03d}", ods_code="APP01") for i in range(60)]
    records: list[tuple[str, str, Any]] = []
    for r in reqs:
        records.append(("eligibility", r.patient.nhs_number, app_user(r.patient.nhs_number)))
    records += [("send-requests", r.message_id, r) for r in reqs]
    await stack.publish_many(records)
    await stack.read(
        ["delivery-receipts"], lambda rs: len({e.message_id for _, e in rs}) >= 50, timeout=60
    )
    await asyncio.sleep(5)  # let the reads (median 0.2 s, long tail) come in
    settings = settings_from_env(stack.env)
    today = datetime.now(UTC).date()
    first = await reconcile(settings, today)
    assert first.in_report > 0
    assert sum(first.filled.values()) > 0, "30% of callbacks were lost; none filled in"
    second = await reconcile(settings, today)
    assert sum(second.filled.values()) == 0  # idempotent: nothing left to fill
    assert second.already_had == second.in_report
    # Every receipt of the report is now on the topics, each lost one exactly once more.
    got = await stack.read(["delivery-receipts", "read-receipts"], lambda rs: False, timeout=5)
    keys = [key_of(e) for _, e in got if isinstance(e, DeliveryReceipt | ReadReceipt)]
    assert len(keys) - len(set(keys)) == 0


async def test_the_eligibility_sync_publishes_each_practices_report(stack_factory: Any) -> None:
    stack = stack_factory(APPFIRST_PROVIDERS="simulator")
    await stack.start_simulator(send_callbacks=False, roster_size=300, report_page_size=50)
    await ensure(stack)
    await stack.publish("practice-settings", "APP01", practice("APP01"))
    await stack.publish("practice-settings", "APP02", practice("APP02"))
    await stack.publish("practice-settings", "SMS01", practice("SMS01", nhs_app_individual=False))
    settings = settings_from_env(stack.env)
    codes = await nhs_app_practices(settings)
    assert codes == ["APP01", "APP02"]  # the SMS-only practice's patients are never looked up
    result = await sync(settings, codes)
    scenario = Scenario(roster_size=300)
    expected = {
        n: on
        for ods in ("APP01", "APP02")
        for n in scenario.roster(ods)
        if (on := scenario.app_user(n)) is not None
    }
    assert result.patients == len(expected) and result.practices == 2
    got = await stack.read(["eligibility"], lambda rs: len(rs) >= len(expected), timeout=20)
    published = {e.nhs_number: e for _, e in got if isinstance(e, Eligibility)}
    assert {n: e.notifications_enabled for n, e in published.items()} == expected
    assert all(e.has_nhs_app for e in published.values())


async def ensure(stack: Any) -> None:
    from appfirst.admin import ensure_topics

    await ensure_topics(stack.settings)
