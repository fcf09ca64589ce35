"""The send path's lanes through a real worker, the real simulator over HTTP and the broker:
an NHS App outage or refused credentials hold no SMS, and the NHS App messages caught in
them fall back to SMS once given up, each exactly once at the simulator."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from appfirst.topics.models import DeliveryReceipt, Dispatch, Fallback
from tests import loopback

from .factories import app_user, practice, request

pytestmark = pytest.mark.integration

GIVE_UP = 8.0


async def _sim(stack: Any, path: str, body: dict[str, Any]) -> None:
    async with loopback.client(timeout=5.0) as client:
        answer = await client.post(stack.env["APPFIRST_SIMULATOR_URL"] + path, json=body)
        answer.raise_for_status()


async def _wait_sent(stack: Any, references: set[str], timeout: float) -> dict[str, Any]:
    """The simulator's record once every reference has reached it (or the time is up)."""
    deadline = time.monotonic() + timeout
    while True:
        refs: dict[str, Any] = (await stack.sends(references=True))["references"]
        if references <= set(refs) or time.monotonic() > deadline:
            return refs
        await asyncio.sleep(0.25)


async def _traffic(stack: Any, n: int) -> tuple[set[str], set[str]]:
    """``n`` NHS App messages and ``n`` SMS-only ones, interleaved on the same partitions."""
    await stack.publish("practice-settings", "APP01", practice("APP01"))
    app_requests = [request(f"app-{i:03d}", ods_code="APP01") for i in range(n)]
    await stack.publish_eligibility([app_user(r.patient.nhs_number) for r in app_requests])
    sms_requests = [
        request(f"sms-{i:03d}", ods_code="APP01", message_type="confirmation") for i in range(n)
    ]
    burst = []
    for a, s in zip(app_requests, sms_requests, strict=True):
        burst += [("send-requests", a.message_id, a), ("send-requests", s.message_id, s)]
    await stack.publish_many(burst)
    return {r.message_id for r in app_requests}, {r.message_id for r in sms_requests}


def _once_each(refs: dict[str, Any], wanted: set[str]) -> None:
    repeated = {r: v["calls"] for r, v in refs.items() if r in wanted and v["calls"] != 1}
    assert not repeated, f"sent more than once: {sorted(repeated.items())[:5]}"


async def _check_fell_back(stack: Any, app_ids: set[str], refs: dict[str, Any]) -> None:
    fallbacks = {f"{m}/fallback" for m in app_ids}
    missing = fallbacks - set(refs)
    assert not missing, f"{len(missing)} NHS App messages never got their SMS"
    _once_each(refs, fallbacks)
    records = await stack.read(["delivery-receipts", "dispatches"], lambda rs: False, timeout=2)
    failed = {
        e.message_id
        for _, e in records
        if isinstance(e, DeliveryReceipt) and e.channel == "nhs_app" and e.status == "failed"
    }
    assert failed == app_ids, "each given-up NHS App message is a failed receipt"
    channels = {e.message_id: e.channel for _, e in records if isinstance(e, Dispatch)}
    assert {channels[m] for m in app_ids} == {"nhs_app"}


@pytest.mark.slow(25)
async def test_an_nhs_app_outage_holds_no_sms(stack_factory: Any) -> None:
    stack = stack_factory(
        APPFIRST_PROVIDERS="simulator", APPFIRST_NHS_APP_GIVE_UP_SECONDS=str(GIVE_UP)
    )
    await stack.start_simulator(send_callbacks=False, app_share=1.0, notifications_share=1.0)
    await stack.start_worker()
    await _sim(stack, "/_sim/outage", {"seconds": 90, "status": 503, "provider": "nhs_app"})
    began = time.monotonic()
    app_ids, sms_ids = await _traffic(stack, 100)

    refs = await _wait_sent(stack, sms_ids, timeout=30)
    sms_late = sms_ids - set(refs)
    assert not sms_late, f"{len(sms_late)} of 100 SMS not sent within 30 s of the outage"
    _once_each(refs, sms_ids)

    # Given up after GIVE_UP seconds (then at once behind the outage): every NHS App
    # message falls back while the NHS App is still down.
    refs = await _wait_sent(stack, {f"{m}/fallback" for m in app_ids}, timeout=60)
    assert time.monotonic() - began < 90, "the fallbacks waited for the outage to end"
    await _check_fell_back(stack, app_ids, refs)
    assert not app_ids & set(refs), "no NHS App message got through the outage"


async def test_refused_credentials_hold_no_sms(stack_factory: Any) -> None:
    stack = stack_factory(APPFIRST_PROVIDERS="simulator")
    await stack.start_simulator(send_callbacks=False, app_share=1.0, notifications_share=1.0)
    _, port = await stack.start_worker()
    await _sim(stack, "/_sim/token", {"refuse": True, "status": 401})
    app_ids, sms_ids = await _traffic(stack, 30)

    refs = await _wait_sent(stack, sms_ids | {f"{m}/fallback" for m in app_ids}, timeout=60)
    assert sms_ids <= set(refs)
    _once_each(refs, sms_ids)
    await _check_fell_back(stack, app_ids, refs)
    async with loopback.client(timeout=5.0) as client:
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert 'appfirst_provider_misconfigured{provider="nhs_app"} 1.0' in metrics


@pytest.mark.slow(20)
async def test_a_backlog_in_front_of_the_nhs_app_never_sends_the_sms_first(
    stack_factory: Any,
) -> None:
    """The NHS App paced at 5 a second with 30 messages queued: the last is accepted about
    6 s after routing, well past a 2 s deadline counted from routing. Each fallback SMS
    still goes at least the deadline after its own app message reached the NHS App."""
    deadline = 2.0
    stack = stack_factory(
        APPFIRST_PROVIDERS="simulator",
        APPFIRST_NHS_APP_RATE_PER_SECOND="5",
        APPFIRST_FALLBACK_INDIVIDUAL_SECONDS=str(deadline),
    )
    await stack.start_simulator(send_callbacks=False, app_share=1.0, notifications_share=1.0)
    await stack.publish("practice-settings", "APP01", practice("APP01"))
    await stack.start_worker()
    requests = [request(f"lag-{i:03d}", ods_code="APP01") for i in range(30)]
    await stack.publish_eligibility([app_user(r.patient.nhs_number) for r in requests])
    await stack.publish_many([("send-requests", r.message_id, r) for r in requests])
    ids = {r.message_id for r in requests}

    refs = await _wait_sent(stack, ids | {f"{m}/fallback" for m in ids}, timeout=60)
    assert ids | {f"{m}/fallback" for m in ids} <= set(refs), "some sends never arrived"
    _once_each(refs, ids | {f"{m}/fallback" for m in ids})
    gaps = {m: refs[f"{m}/fallback"]["received_at"] - refs[m]["received_at"] for m in ids}
    early = {m: round(gap, 2) for m, gap in gaps.items() if gap < deadline}
    assert not early, f"fallback SMS less than the deadline after its app message: {early}"
    queued = max(refs[m]["received_at"] for m in ids) - min(refs[m]["received_at"] for m in ids)
    assert queued > 2 * deadline, "the lane never backed up: the test proves nothing"

    records = await stack.read(["dispatches", "fallbacks"], lambda rs: False, timeout=2)
    dispatched = {e.message_id: e for _, e in records if isinstance(e, Dispatch)}
    for _, fb in records:
        if isinstance(fb, Fallback):
            promised = dispatched[fb.message_id].fallback_due_at
            assert promised is not None and fb.due_at >= promised
