"""Batch messaging through real workers, the broker and the simulator over HTTP: a CSV in
through ``POST /batches``, its review list, schedule and stagger, cancel, link revocation,
statuses and counters, and a SIGKILL during a stagger."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from appfirst.topics.models import BatchStatus, MessageStatus

from .factories import nhs_number, practice

pytestmark = pytest.mark.integration

TOKEN = {"Authorization": "Bearer appfirst-dev-batch-token"}
BODY = "Your flu vaccination is due. Reply to book."


def patient_list(n: int, *, bad: bool = True) -> tuple[str, set[int], Counter[str]]:
    """A CSV of ``n`` rows: contactable ones, and (``bad``) one of every reason a row cannot
    be contacted. Returns the file, the lines that are contactable, and the reasons."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["NHS Number", "Mobile Telephone", "Email Address", "Surname", "Deceased"])
    good: set[int] = set()
    reasons: Counter[str] = Counter()
    first = nhs_number()
    for i in range(n):
        line = i + 2
        kind = i % 10 if bad else 0
        nhs = nhs_number()
        if kind == 1:
            writer.writerow(["1234567890", "07911 123456", "", "Bad", ""])
            reasons["Invalid NHS number"] += 1
        elif kind == 2 and i > 10:
            writer.writerow([first, "07911 123456", "", "Again", ""])
            reasons["Duplicate row"] += 1
        elif kind == 3:
            writer.writerow([nhs, "07911 123456", "", "Late", "Y"])
            reasons["Patient deceased"] += 1
        elif kind == 4:
            writer.writerow([nhs, "", "", "Nobody", ""])
            reasons["Contact details not provided"] += 1
        elif kind == 5:
            writer.writerow([nhs, "0161 496 0000", "", "Landline", ""])
            reasons["Not a UK phone number"] += 1
        else:
            writer.writerow([first if i == 0 else nhs, f"07911 {100000 + i:06d}", "", "Ok", ""])
            good.add(line)
    return "\ufeff" + out.getvalue(), good, reasons


async def upload(port: int, text: str, **fields: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.post(
            f"http://127.0.0.1:{port}/batches",
            headers=TOKEN,
            data={"ods": "B81001", "type": "sms", "body": BODY, **fields},
            files={"file": ("patients.csv", text.encode(), "text/csv")},
        )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(f"http://127.0.0.1:{port}{path}", headers=TOKEN)


async def post(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(f"http://127.0.0.1:{port}{path}", headers=TOKEN)


async def latest_status(stack: Any, batch_id: str, done: Any, timeout: float) -> BatchStatus:
    records = await stack.read(
        ["batch-status"],
        lambda rs: any(e.batch_id == batch_id and done(e) for _, e in rs),
        timeout=timeout,
    )
    mine = [e for _, e in records if e.batch_id == batch_id]
    assert mine, f"no status for {batch_id}"
    assert any(done(e) for e in mine), f"{batch_id} never got there: last {mine[-1]!r}"
    return next(e for e in reversed(mine) if done(e))  # type: ignore[no-any-return]


async def sent_to(stack: Any, prefix: str) -> dict[str, Any]:
    refs: dict[str, Any] = (await stack.sends(references=True))["references"]
    return {r: v for r, v in refs.items() if r.startswith(prefix)}


async def test_a_scheduled_staggered_batch_goes_once_at_its_pace(stack_factory: Any) -> None:
    stack = stack_factory(APPFIRST_PROVIDERS="simulator")
    await stack.start_simulator(send_callbacks=True, app_share=0.0, notifications_share=0.0)
    _, port = await stack.start_worker()
    await stack.publish("practice-settings", "B81001", practice("B81001"))
    text, good, reasons = patient_list(200)
    start = datetime.now(UTC) + timedelta(seconds=6)
    every = 3.0
    made = await upload(port, text, at=start.isoformat(), stagger="40", every="3s")
    batch_id = made["batch_id"]
    assert made["patient_list"] == 200
    assert made["contactable"] == len(good)
    assert made["reasons"] == dict(sorted(reasons.items()))

    # The review list, before anything is sent.
    listed = await get(port, f"/batches/{batch_id}/non-contactable.csv")
    assert listed.status_code == 200
    rows = list(csv.DictReader(io.StringIO(listed.text)))
    assert Counter(r["Reason"] for r in rows) == reasons
    assert not await sent_to(stack, batch_id)
    scheduled = await latest_status(stack, batch_id, lambda e: True, timeout=20)
    assert scheduled.status == "scheduled" and scheduled.released == 0

    final = await latest_status(stack, batch_id, lambda e: e.status == "done", timeout=90)
    sent = await sent_to(stack, batch_id)
    assert len(sent) == len(good), "exactly the contactable rows"
    assert all(v["calls"] == 1 for v in sent.values()), "each once"
    # On time, at the stagger's pace: patient k (in list order) not before its period.
    for ref, v in sent.items():
        seq = int(ref.rsplit(".", 1)[1])
        due = start.timestamp() + (seq // 40) * every
        assert v["received_at"] >= due - 0.05, f"{ref} sent {due - v['received_at']:.2f}s early"
    assert final.patient_list == 200 and final.contactable == len(good)
    assert final.released == len(good)
    assert final.non_contactable == sum(reasons.values())
    assert final.without_valid_mobile == (
        reasons["Contact details not provided"] + reasons["Not a UK phone number"]
    )
    assert final.delivered + final.failed_to_deliver == len(good)
    answer = (await get(port, f"/batches/{batch_id}")).json()
    assert answer["status"] == "done" and answer["released"] == len(good)

    statuses = await stack.read(
        ["message-status"],
        lambda rs: len({e.message_id for _, e in rs if e.batch_id == batch_id}) >= len(good),
        timeout=30,
    )
    latest: dict[str, MessageStatus] = {e.message_id: e for _, e in statuses}
    assert {latest[r].status for r in sent} <= {"delivered", "failed"}


async def test_cancel_stops_what_is_not_released_and_links_are_revoked(
    stack_factory: Any,
) -> None:
    stack = stack_factory(APPFIRST_PROVIDERS="simulator")
    await stack.start_simulator(send_callbacks=True, app_share=0.0, notifications_share=0.0)
    _, port = await stack.start_worker()
    text, good, _ = patient_list(60, bad=False)
    cancelled = await upload(port, text, stagger="10", every="2s")
    revoked = await upload(port, patient_list(5, bad=False)[0])
    one = cancelled["batch_id"]
    await latest_status(stack, one, lambda e: e.released >= 20, timeout=30)
    assert (await post(port, f"/batches/{one}/cancel")).status_code == 202
    status = await latest_status(stack, one, lambda e: e.status == "cancelled", timeout=30)
    released_then = status.released
    assert 20 <= released_then < len(good)
    await asyncio.sleep(5)  # two stagger periods: any further release would show by now
    sent = await sent_to(stack, one)
    assert len(sent) == released_then, "nothing not yet released goes out"
    assert {int(r.rsplit(".", 1)[1]) for r in sent} == set(range(released_then))

    two = revoked["batch_id"]
    await latest_status(stack, two, lambda e: e.released == 5, timeout=30)
    links = await get(port, f"/links/{two}")
    assert links.json()["revoked"] is False
    assert (await post(port, f"/batches/{two}/revoke-links")).status_code == 202
    await latest_status(stack, two, lambda e: e.links_revoked, timeout=30)
    deadline = time.monotonic() + 20
    while (await get(port, f"/links/{two}")).json()["revoked"] is not True:
        assert time.monotonic() < deadline, "revocation never reached the link endpoint"
        await asyncio.sleep(0.2)
    assert (await get(port, "/links/no-such-batch")).status_code == 404


async def test_a_sigkill_during_a_stagger_changes_nothing(stack_factory: Any) -> None:
    stack = stack_factory(APPFIRST_PROVIDERS="simulator")
    await stack.start_simulator(send_callbacks=False, app_share=0.0, notifications_share=0.0)
    _, port = await stack.start_worker()
    await stack.start_worker()
    text, good, _ = patient_list(300, bad=False)
    start = datetime.now(UTC) + timedelta(seconds=4)
    made = await upload(port, text, at=start.isoformat(), stagger="30", every="2s")
    batch_id = made["batch_id"]
    await latest_status(stack, batch_id, lambda e: e.released >= 60, timeout=40)
    # Kill whichever worker releases the batch: both, one after the other, restarting each.
    for n in (0, 1):
        stack.kill_worker(n)
        stack.workers[n][0].wait()
        await stack.restart_worker(n)
    await asyncio.sleep(1)
    deadline = time.monotonic() + 90
    while True:
        sent = await sent_to(stack, batch_id)
        if len(sent) >= len(good) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert len(sent) == len(good), f"{len(good) - len(sent)} patients never sent"
    twice = {r: v["calls"] for r, v in sent.items() if v["calls"] != 1}
    assert not twice, f"sent more than once: {sorted(twice.items())[:5]}"
    for ref, v in sent.items():
        seq = int(ref.rsplit(".", 1)[1])
        due = start.timestamp() + (seq // 30) * 2.0
        assert v["received_at"] >= due - 0.05, f"{ref} sent before its period"


async def test_the_review_endpoint_sends_nothing(stack_factory: Any) -> None:
    stack = stack_factory()
    _, port = await stack.start_worker()
    text, _, reasons = patient_list(50)
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(
            f"http://127.0.0.1:{port}/batches/review",
            headers=TOKEN,
            files={"file": ("p.csv", text.encode(), "text/csv")},
        )
        refused = await client.post(f"http://127.0.0.1:{port}/batches/review")
    assert r.status_code == 200
    assert Counter(row["Reason"] for row in csv.DictReader(io.StringIO(r.text))) == reasons
    assert refused.status_code == 401
    assert not await stack.read(["send-requests", "batches"], lambda rs: False, timeout=2)
