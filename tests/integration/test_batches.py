"""Batch messaging through real workers, the broker and the simulator over HTTP: a CSV in
through ``POST /batches``, its review list, schedule and stagger, cancel, link revocation,
statuses and counters, and a SIGKILL during a stagger."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from appfirst.rules.contact import normalise_uk_mobile, number_fingerprint
from appfirst.topics.models import BatchStatus, MessageStatus
from tests import loopback

from .factories import nhs_number, practice

pytestmark = pytest.mark.integration

TOKEN = {"Authorization": "Bearer appfirst-dev-batch-token"}
FAILING = "07911 123499"  # failed in the last 90 days, at a practice with the check on
BODY = "Your flu vaccination is due. Reply to book."


def patient_list(
    n: int, *, bad: bool = True, failing: bool = False, numbers: str = "07911"
) -> tuple[str, set[int], Counter[str]]:
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
        elif kind == 6 and failing:
            writer.writerow([nhs, FAILING, "", "Failing", ""])
            reasons["Mobile number is likely to fail"] += 1
        else:
            # Numbers of their own per list: an SMS that fails marks its number likely to
            # fail for every later batch of the practice.
            writer.writerow([first if i == 0 else nhs, f"{numbers} {100000 + i:06d}", "", "Ok", ""])
            good.add(line)
    return "\ufeff" + out.getvalue(), good, reasons


async def upload(port: int, text: str, **fields: str) -> dict[str, Any]:
    async with loopback.client(timeout=60) as client:
        r = await client.post(
            f"http://127.0.0.1:{port}/batches",
            headers=TOKEN,
            data={"ods": "B81001", "type": "sms", "body": BODY, **fields},
            files={"file": ("patients.csv", text.encode(), "text/csv")},
        )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def get(port: int, path: str) -> httpx.Response:
    async with loopback.client(timeout=30) as client:
        return await client.get(f"http://127.0.0.1:{port}{path}", headers=TOKEN)


async def answered(port: int, path: str, done: Any, timeout: float = 30) -> Any:
    """The endpoint's JSON answer once ``done`` holds for it (or the last one)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    answer: Any = None
    while True:
        try:
            answer = (await get(port, path)).json()
        except (httpx.TransportError, ValueError):
            pass  # the worker is still coming back
        else:
            if done(answer):
                return answer
        if loop.time() > give_up:
            return answer
        await asyncio.sleep(0.2)


async def post(port: int, path: str) -> httpx.Response:
    async with loopback.client(timeout=30) as client:
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


async def _uncounted(stack: Any, batch_id: str) -> str:
    """Where each of the batch's messages with no outcome on ``batch-progress`` stopped: for
    a failure message, so that a stuck count names its messages."""
    counted = {
        json.loads(r.value)["message_id"] for r in await stack.read_records("batch-progress")
    }
    stages: dict[str, list[str]] = {}
    for topic in ("dispatches", "send-outcomes", "delivery-receipts", "message-status"):
        for r in await stack.read_records(topic):
            key = (r.key or b"").decode()
            if key.startswith(batch_id) and key not in counted:
                stages.setdefault(key, []).append(f"{topic}@{r.partition}:{r.offset}")
    refs = await sent_to(stack, batch_id)
    return "uncounted: " + "; ".join(
        f"{mid} {where} sent={refs.get(mid, {}).get('calls', 0)}"
        for mid, where in sorted(stages.items())[:10]
    )


async def sent_to(stack: Any, prefix: str) -> dict[str, Any]:
    refs: dict[str, Any] = (await stack.sends(references=True))["references"]
    return {r: v for r, v in refs.items() if r.startswith(prefix)}


async def owner_of(stack: Any, batch_id: str) -> int:
    """The worker that releases the batch (its partition's owner), from the workers' logs."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for n, (_, _, log) in enumerate(stack.workers):
            if f"batch released batch_id={batch_id}" in log.read_text(errors="replace"):
                return n
        await asyncio.sleep(0.2)
    raise AssertionError(f"no worker released {batch_id}")


@pytest.mark.slow(85)
async def test_the_batch_scenario_of_the_issue(stack_factory: Any) -> None:
    """2,000 rows with every reason a row cannot be contacted, scheduled 20 s ahead and
    staggered, with the releasing worker SIGKILLed during the stagger; a second batch
    cancelled half way; a third whose links are revoked."""
    stack = stack_factory(APPFIRST_PROVIDERS="simulator")
    # Delivery receipts spread less than by default (log-normal sigma 1, median 3 s): the
    # batch's 801 SMS would put one receipt past 120 s in about one run in ten (one at
    # 145 s failed a run), and this test is about the counts, not the tail.
    await stack.start_simulator(
        send_callbacks=True, app_share=0.0, notifications_share=0.0, spread=0.5
    )
    _, port = await stack.start_worker()
    await stack.start_worker()
    await stack.publish(
        "practice-settings", "B81001", practice("B81001", likely_to_fail_check=True)
    )
    key = stack.settings.number_hash_key.get_secret_value().encode()
    failing = number_fingerprint(normalise_uk_mobile(FAILING) or "", key)
    producer = await stack.producer()
    await producer.send_and_wait(
        stack.settings.topic("failed-numbers"),
        json.dumps({"failed_at": datetime.now(UTC).isoformat()}).encode(),
        key=failing.encode(),
    )
    await asyncio.sleep(1)  # the failure reaches every worker's broadcast table

    text, good, reasons = patient_list(2000, failing=True)
    assert len(reasons) == 6, "every per-row reason is in the list"
    start = datetime.now(UTC) + timedelta(seconds=20)
    count, every = 200, 4.0
    made = await upload(port, text, at=start.isoformat(), stagger=str(count), every="4s")
    batch_id = made["batch_id"]
    assert (made["patient_list"], made["contactable"]) == (2000, len(good))
    assert made["reasons"] == dict(sorted(reasons.items()))
    # The review list, before anything is sent.
    listed = await get(port, f"/batches/{batch_id}/non-contactable.csv")
    assert listed.status_code == 200
    rows = list(csv.DictReader(io.StringIO(listed.text)))
    assert Counter(r["Reason"] for r in rows) == reasons
    assert {int(r["Row"]) for r in rows}.isdisjoint(good)
    scheduled = await latest_status(stack, batch_id, lambda e: True, timeout=20)
    assert scheduled.status == "scheduled" and scheduled.released == 0

    # The second batch, cancelled half way; the third, its links revoked.
    second = patient_list(200, bad=False, numbers="07912")[0]
    cancelled = (await upload(port, second, stagger="20", every="2s"))["batch_id"]
    revoked = (await upload(port, patient_list(10, bad=False, numbers="07811")[0]))["batch_id"]
    await latest_status(stack, cancelled, lambda e: e.released >= 80, timeout=60)
    assert (await post(port, f"/batches/{cancelled}/cancel")).status_code == 202
    at_cancel = await latest_status(stack, cancelled, lambda e: e.status == "cancelled", 30)
    await latest_status(stack, revoked, lambda e: e.released == 10, timeout=30)
    assert (await post(port, f"/batches/{revoked}/revoke-links")).status_code == 202

    # SIGKILL the worker releasing the big batch, during its stagger.
    await latest_status(stack, batch_id, lambda e: e.released >= 2 * count, timeout=60)
    victim = await owner_of(stack, batch_id)
    stack.kill_worker(victim)
    stack.workers[victim][0].wait()
    await stack.restart_worker(victim)

    # Upstream says three messages are saved to the record, one of them twice.
    async with loopback.client(timeout=30, headers=TOKEN) as client:
        for seq in (0, 1, 2, 2):
            saved = await client.post(
                f"http://127.0.0.1:{port}/batches/{batch_id}/saved",
                json={"message_id": f"{batch_id}.{seq:06d}"},
            )
            assert saved.status_code == 202
    try:
        final = await latest_status(
            stack, batch_id, lambda e: e.status == "done" and e.saved == 3, timeout=120
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {await _uncounted(stack, batch_id)}") from exc
    sent = await sent_to(stack, batch_id)
    if len(sent) != len(good):
        wanted = {f"{batch_id}.{seq:06d}" for seq in range(len(good))}
        missing = sorted(wanted - set(sent))
        records = await stack.read(["dispatches"], lambda rs: False, timeout=3)
        seen = {e.message_id: (e.channel, e.reason) for _, e in records if e.message_id in missing}
        raise AssertionError(f"{len(missing)} never sent: {missing[:5]}, dispatched as {seen}")
    twice = {r: v["calls"] for r, v in sent.items() if v["calls"] != 1}
    assert not twice, f"sent more than once: {sorted(twice.items())[:5]}"
    for ref, v in sent.items():
        seq = int(ref.rsplit(".", 1)[1])
        due = start.timestamp() + (seq // count) * every
        assert v["received_at"] >= due - 0.05, f"{ref} sent {due - v['received_at']:.2f}s early"
    first = min(v["received_at"] for v in sent.values())
    assert first - start.timestamp() < 5, "the first patients went at the scheduled time"
    assert (final.patient_list, final.contactable, final.released) == (
        2000,
        len(good),
        len(good),
    )
    assert final.non_contactable == sum(reasons.values())
    assert final.without_valid_mobile == (
        reasons["Contact details not provided"] + reasons["Not a UK phone number"]
    )
    assert final.delivered + final.failed_to_deliver == len(good)
    # The endpoint answers from the worker's own copy of ``batch-status``, which follows
    # the topic a moment behind (the worker may just have been restarted): wait for it.
    answer = await answered(port, f"/batches/{batch_id}", lambda a: a.get("status") == "done")
    assert answer["status"] == "done" and answer["released"] == len(good)

    def final_shown(rs: list[tuple[str, Any]]) -> bool:
        latest = {e.message_id: e.status for _, e in rs if e.batch_id == batch_id}
        return len(latest) >= len(good) and set(latest.values()) <= {"delivered", "failed"}

    statuses = await stack.read(["message-status"], final_shown, timeout=30)
    latest: dict[str, MessageStatus] = {e.message_id: e for _, e in statuses}
    assert {latest[r].status for r in sent} <= {"delivered", "failed"}

    # The cancelled batch: nothing it had not released went out.
    gone = await sent_to(stack, cancelled)
    assert {int(r.rsplit(".", 1)[1]) for r in gone} == set(range(at_cancel.released))
    assert at_cancel.released < 200
    # The revoked batch: final, and the link service hears it.
    await latest_status(stack, revoked, lambda e: e.links_revoked, timeout=30)
    deadline = time.monotonic() + 20
    while (await get(port, f"/links/{revoked}")).json()["revoked"] is not True:
        assert time.monotonic() < deadline, "revocation never reached the link endpoint"
        await asyncio.sleep(0.2)


async def test_the_review_endpoint_sends_nothing(stack_factory: Any) -> None:
    stack = stack_factory()
    _, port = await stack.start_worker()
    text, _, reasons = patient_list(50)
    async with loopback.client(timeout=30) as client:
        r = await client.post(
            f"http://127.0.0.1:{port}/batches/review",
            headers=TOKEN,
            files={"file": ("p.csv", text.encode(), "text/csv")},
        )
        no_contacts = await client.post(
            f"http://127.0.0.1:{port}/batches/review",
            headers=TOKEN,
            files={"file": ("p.csv", f"NHS Number,Surname\n{nhs_number()},Smith\n".encode())},
        )
        refused = await client.post(f"http://127.0.0.1:{port}/batches/review")
    assert r.status_code == 200
    assert Counter(row["Reason"] for row in csv.DictReader(io.StringIO(r.text))) == reasons
    (row,) = list(csv.DictReader(io.StringIO(no_contacts.text)))
    assert row["Reason"] == "Unable to retrieve contact details"
    assert refused.status_code == 401
    assert not await stack.read(["send-requests", "batches"], lambda rs: False, timeout=2)
