"""Exactly one fallback SMS per due message, across crashes, restarts and scale-out.

Two worker processes share the partitions; thousands of NHS App messages wait on short
deadlines; workers are killed with SIGKILL at random moments and restarted. The test then
checks, at the provider simulator, that every message that fell due got exactly one SMS,
none read in time got any, and none was sent before its due time.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from appfirst.topics.models import DeliveryReceipt, Dispatch, Event, Fallback, ReadReceipt

from .factories import app_user, practice, request

pytestmark = pytest.mark.integration

DEADLINE = 10.0
MESSAGES = 2000
DISPATCH_LIMIT = 240.0  # seconds for every request to be dispatched, however slowly
DISPATCH_STALL = 60.0  # seconds with no dispatch at all: stuck, whatever the limit


async def _traffic(
    stack: Any, rng: random.Random, before_requests: Any = None
) -> tuple[dict[str, Dispatch], set[str], dict[str, float], dict[str, float]]:
    """Requests with their receipts in one burst: a third are read in time, a third are
    delivered (which moves the due time), a third hear nothing. Receipts go out with the
    requests, so each is in Kafka long before its message's due time."""
    await stack.publish("practice-settings", "APP01", practice("APP01"))
    requests = [request(f"x-{i:05d}", ods_code="APP01") for i in range(MESSAGES)]
    # Eligibility first: a request routed before its patient's record goes by SMS.
    await stack.publish_eligibility([app_user(r.patient.nhs_number) for r in requests])
    if before_requests is not None:
        before_requests()
    read_in_time: set[str] = set()
    delivered: dict[str, float] = {}
    burst: list[tuple[str, str, Event]] = []
    for r in requests:
        roll = rng.random()
        burst.append(("send-requests", r.message_id, r))
        if roll < 1 / 3:
            read_in_time.add(r.message_id)
            burst.append(
                (
                    "read-receipts",
                    r.message_id,
                    ReadReceipt(
                        message_id=r.message_id, read_at=r.requested_at + timedelta(seconds=1)
                    ),
                )
            )
        elif roll < 2 / 3:
            at = r.requested_at + timedelta(seconds=2)
            delivered[r.message_id] = at.timestamp()
            burst.append(
                (
                    "delivery-receipts",
                    r.message_id,
                    DeliveryReceipt(
                        message_id=r.message_id,
                        channel="nhs_app",
                        status="delivered",
                        occurred_at=at,
                    ),
                )
            )
    await stack.publish_many(burst)
    # Bounded by progress, not only by time: on a starved machine (the crash scenarios of
    # four test processes at once on two cores) the SIGKILLs' rebalances can take most of
    # two minutes while dispatches still come. A stall is no dispatch for a minute.
    seen = await stack.read(
        ["dispatches"],
        lambda rs: len({e.message_id for _, e in rs}) >= MESSAGES,
        timeout=DISPATCH_LIMIT,
        stall=DISPATCH_STALL,
    )
    dispatches = {e.message_id: e for _, e in seen}
    if len(dispatches) < MESSAGES:
        raise AssertionError(
            await _where_stuck(stack, set(requests_ids(requests)) - set(dispatches))
        )
    # A crash can still let a request overtake its patient's eligibility record (two topics,
    # no order between them); those go by SMS and are outside this test.
    app_first = {mid: d for mid, d in dispatches.items() if d.channel == "nhs_app"}
    assert len(app_first) >= 0.9 * MESSAGES, Counter(d.reason for d in dispatches.values())
    due = {
        mid: delivered.get(mid, d.dispatched_at.timestamp()) + DEADLINE
        for mid, d in app_first.items()
        if mid not in read_in_time
    }
    return app_first, read_in_time & set(app_first), due, delivered


async def _started(
    stack: Any, app_first: dict[str, Any], delivered: dict[str, float], due: dict[str, float]
) -> dict[str, float]:
    """Each due message's due time, once the chaos is over: ``DEADLINE`` after its
    delivered receipt, else after the NHS App accepted it (``send-outcomes``)."""
    # 2,000 NHS App messages at the NHS App's 20 a second take 100 s to be accepted.
    wait_until = time.monotonic() + 240
    while True:
        accepted = await stack.accepted()
        unheard = sorted(m for m in due if m not in delivered and m not in accepted)
        if not unheard or time.monotonic() > wait_until:
            break
        await asyncio.sleep(1)
    assert not unheard, f"{len(unheard)} NHS App sends with no outcome: {unheard[:5]}"
    starts = {m: delivered.get(m, accepted.get(m, 0.0)) for m in due}
    assert all(starts[m] + DEADLINE >= due[m] for m in due), "a deadline before dispatch"
    return {m: start + DEADLINE for m, start in starts.items()}


def requests_ids(requests: list[Any]) -> list[str]:
    return [r.message_id for r in requests]


async def _where_stuck(stack: Any, missing: set[str]) -> str:
    """Which hop the undispatched messages stopped at, for the failure message."""
    import json as _json

    where: dict[str, tuple[int, int]] = {}
    for r in await stack.read_records("router-by-patient"):
        where[_json.loads(r.value)["message_id"]] = (r.partition, r.offset)
    repartitioned = set(where)
    stuck_at = sorted(where[m] for m in missing if m in where)
    progress = await stack.group_progress("router-by-patient")
    ready = await stack.readiness()
    dumps = await stack.task_dumps()
    routed = set()
    for v in await stack.read_raw_changelog("routed"):
        routed.add(v)
    late = await stack.read(["dispatches"], lambda rs: False, timeout=30)
    arrived_late = missing & {e.message_id for _, e in late}
    return (
        f"{len(missing)} undispatched (no dispatch for {DISPATCH_STALL:.0f} s, or "
        f"{DISPATCH_LIMIT:.0f} s in all); re-keyed: "
        f"{len(missing & repartitioned)}; routed (changelog keys): {len(missing & routed)}; "
        f"dispatched within 30 s more: {len(arrived_late)}; "
        f"workers that exited crash-only: {stack.self_exits}; e.g. {sorted(missing)[:3]}\n"
        f"router-by-patient (partition, offset) of the missing: {stuck_at[:5]}...{stuck_at[-3:]}\n"
        f"committed/end per partition: {progress}\n"
        f"readiness: {ready}\n"
        "tasks waiting in our code:\n" + "\n".join(dumps)
    )


async def _settle(stack: Any, due: dict[str, float], timeout: float = 150) -> dict[str, Any]:
    """Wait until every due fallback has reached the simulator, then a little longer."""
    deadline = time.monotonic() + timeout
    expected = {f"{mid}/fallback" for mid in due}
    while time.monotonic() < deadline:
        refs = (await stack.sends(references=True))["references"]
        if expected <= set(refs) and time.time() > max(due.values()) + 3:
            await asyncio.sleep(3)  # room for a wrong extra send to show itself
            return dict((await stack.sends(references=True))["references"])
        await asyncio.sleep(1)
    return dict((await stack.sends(references=True))["references"])


async def _check(
    stack: Any,
    dispatches: dict[str, Dispatch],
    read_in_time: set[str],
    due: dict[str, float],
    refs: dict[str, Any],
) -> None:
    fallback_refs = {
        r.removesuffix("/fallback"): v for r, v in refs.items() if r.endswith("/fallback")
    }
    missing = set(due) - set(fallback_refs)
    assert not missing, f"{len(missing)} due fallbacks were never sent: {sorted(missing)[:5]}"
    # The simulator, like Notify, delivers a repeated reference again: one call each.
    twice = {r: v["calls"] for r, v in refs.items() if v["calls"] != 1}
    assert not twice, f"sent more than once: {sorted(twice.items())[:5]}"
    wrong = set(fallback_refs) & read_in_time
    assert not wrong, f"{len(wrong)} messages read in time got an SMS: {sorted(wrong)[:5]}"
    early = {
        mid: v["received_at"] - due[mid]
        for mid, v in fallback_refs.items()
        if v["received_at"] < due[mid]
    }
    assert not early, f"fallbacks sent before due: {list(early.items())[:5]}"
    # The primary NHS App sends: one per message, too.
    # The primary NHS App sends: one per message, except where a worker was killed with the
    # request in flight. The NHS App cannot be asked what it holds, so such an attempt is
    # recorded unconfirmed and never resent (its fallback SMS, above, is the safety net):
    # every primary missing here must be one the dispatcher logged so.
    missing_primary = set(dispatches) - {r for r in refs if not r.endswith("/fallback")}
    assert missing_primary <= _unconfirmed(stack), sorted(missing_primary)[:5]
    records = await stack.read(["fallbacks"], lambda rs: False, timeout=3)
    for _, fb in records:
        assert isinstance(fb, Fallback)
        assert fb.emitted_at >= fb.due_at
        assert fb.due_at.timestamp() == pytest.approx(due[fb.message_id], abs=0.002)


def _unconfirmed(stack: Any) -> set[str]:
    """References the dispatchers found attempted by a killed worker and did not resend."""
    found = set()
    for line in stack.logs().splitlines():
        if "has no outcome; not resent" in line:
            found.add(line.rsplit("reference=", 1)[-1].split('"', 1)[0].strip())
    return found


async def _chaos(stack: Any, rng: random.Random, kills: int, until: float) -> int:
    done = 0
    while done < kills and time.monotonic() < until:
        await asyncio.sleep(rng.uniform(1.0, 5.0))
        victim = rng.randrange(len(stack.workers))
        stack.kill_worker(victim)
        done += 1
        await asyncio.sleep(rng.uniform(0.0, 3.0))
        await stack.restart_worker(victim)
    return done


@pytest.mark.slow(140)
@pytest.mark.timeout(600)  # the dispatch limit above, then deadlines and settling
async def test_sigkill_at_random_moments(stack_factory: Any) -> None:
    seed = int(os.environ.get("APPFIRST_CRASH_SEED", "1"))
    rng = random.Random(seed)
    stack = stack_factory(
        APPFIRST_PROVIDERS="simulator",
        APPFIRST_FALLBACK_INDIVIDUAL_SECONDS=str(DEADLINE),
        APPFIRST_SWEEP_INTERVAL_SECONDS="0.5",
    )
    await stack.start_simulator(send_callbacks=False, app_share=1.0, notifications_share=1.0)
    await stack.start_worker()
    await stack.start_worker()
    tasks: list[asyncio.Task[int]] = []

    def start_chaos() -> None:
        tasks.append(asyncio.create_task(_chaos(stack, rng, kills=5, until=time.monotonic() + 150)))

    dispatches, read_in_time, due, delivered = await _traffic(stack, rng, start_chaos)
    kills = await tasks[0]
    assert kills == 5
    due = await _started(stack, dispatches, delivered, due)
    refs = await _settle(stack, due)
    await _check(stack, dispatches, read_in_time, due, refs)


@pytest.mark.slow(95)
@pytest.mark.timeout(600)
async def test_scale_out_and_back(stack_factory: Any) -> None:
    rng = random.Random(7)
    stack = stack_factory(
        APPFIRST_PROVIDERS="simulator",
        APPFIRST_FALLBACK_INDIVIDUAL_SECONDS=str(DEADLINE),
        APPFIRST_SWEEP_INTERVAL_SECONDS="0.5",
    )
    await stack.start_simulator(send_callbacks=False, app_share=1.0, notifications_share=1.0)
    await stack.start_worker()
    dispatches, read_in_time, due, delivered = await _traffic(stack, rng)
    await stack.start_worker()  # scale out while deadlines are pending
    await asyncio.sleep(DEADLINE / 2)
    stack.stop_worker(1)  # and back in, cleanly
    due = await _started(stack, dispatches, delivered, due)
    refs = await _settle(stack, due)
    await _check(stack, dispatches, read_in_time, due, refs)
