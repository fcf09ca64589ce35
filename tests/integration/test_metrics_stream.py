"""Pilot metrics through a running worker: sent and responded per arm after maturity, and
the comparison with practices as the unit."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from appfirst.topics.models import Dispatch, PilotMetric, ReadReceipt, Response

from .factories import now, practice, request

pytestmark = pytest.mark.integration


async def test_arm_rates(stack_factory: Any) -> None:
    stack = stack_factory(APPFIRST_METRIC_HORIZONS="2,600")
    # Settings before the worker: a request routed before its practice's settings reach
    # the broadcast table has no arm, and is never counted (seen once in a loaded CI run).
    await stack.publish("practice-settings", "T1", practice("T1"))
    await stack.publish(
        "practice-settings", "C1", practice("C1", nhs_app_individual=False, arm="control")
    )
    await stack.publish("practice-settings", "N1", practice("N1", arm=None))
    await stack.start_worker()
    plan = {"T1": 4, "C1": 5, "N1": 2}
    for ods, count in plan.items():
        for i in range(count):
            mid = f"{ods}-{i}"
            await stack.publish("send-requests", mid, request(mid, ods_code=ods))
    await stack.read(["dispatches"], lambda rs: len(rs) >= sum(plan.values()))
    for mid in ("T1-0", "C1-0", "C1-1", "N1-0"):
        await stack.publish("responses", mid, Response(message_id=mid, responded_at=now()))

    def settled(rs: list[tuple[str, Any]]) -> bool:
        latest = {e.key: e for _, e in rs}
        t = latest.get("arm_rate|treatment|all|2")
        c = latest.get("arm_rate|control|all|2")
        return bool(
            t and c and t.sent == 4 and c.sent == 5 and t.responded == 1 and c.responded == 2
        )

    records = await stack.read(["pilot-metrics"], settled, timeout=30)
    latest: dict[str, PilotMetric] = {e.key: e for _, e in records}
    assert settled(records), sorted(latest)
    treatment = latest["arm_rate|treatment|all|2"]
    assert treatment.response_rate == pytest.approx(0.25)
    assert latest["arm_rate|treatment|sms_with_response|2"].sent == 4
    rates = {k: m for k, m in latest.items() if m.kind == "arm_rate"}
    assert not any(m.arm is None for m in rates.values()), "practices outside the pilot"
    # The 10-minute horizon has not elapsed: nothing may count there yet.
    assert all(m.sent == 0 for k, m in rates.items() if k.endswith("|600"))


async def test_answers_count_from_when_the_message_could_first_be_seen(
    stack_factory: Any,
) -> None:
    """Two messages routed together; the provider accepted one of them 20 s later (a send
    backlog). Both answered 25 s after routing: within 10 s of being seen for the first,
    not for the second, which has no acceptance and counts from routing."""
    import json

    stack = stack_factory(APPFIRST_METRIC_HORIZONS="10,600")
    await stack.publish("practice-settings", "C1", practice("C1", arm="control"))
    await stack.start_worker()
    for mid in ("queued", "unheard"):
        await stack.publish("send-requests", mid, request(mid, ods_code="C1"))
    records = await stack.read(["dispatches"], lambda rs: len(rs) >= 2)
    routed = {e.message_id: e.dispatched_at for _, e in records}
    accepted = routed["queued"] + timedelta(seconds=20)
    outcome = {"outcome": "accepted", "at": accepted.isoformat(), "channel": "sms"}
    await stack.publish("send-outcomes", "queued", json.dumps(outcome).encode())

    async def seen() -> bool:  # the acceptance is in the message's row
        rows = await stack.read_records("worker-message-rows-changelog")
        return any(r.value and b'"v"' in r.value for r in rows)

    deadline = asyncio.get_running_loop().time() + 30
    while not await seen():
        assert asyncio.get_running_loop().time() < deadline, "the outcome never reached its row"
        await asyncio.sleep(0.2)
    for mid in ("queued", "unheard"):
        answered = routed[mid] + timedelta(seconds=25)
        await stack.publish("responses", mid, Response(message_id=mid, responded_at=answered))

    def settled(rs: list[tuple[str, Any]]) -> bool:
        latest = {e.key: e for _, e in rs}
        c = latest.get("arm_rate|control|all|10")
        return bool(c and c.sent == 2 and c.responded == 1)

    records = await stack.read(["pilot-metrics"], settled, timeout=40)
    assert settled(records), sorted({e.key: e for _, e in records})


async def test_the_comparison_treats_practices_as_the_unit(stack_factory: Any) -> None:
    stack = stack_factory(APPFIRST_METRIC_HORIZONS="2,600")
    plan = {  # practice: (arm, messages, responses)
        "T1": ("treatment", 4, 1),
        "T2": ("treatment", 4, 2),
        "C1": ("control", 5, 2),
        "C2": ("control", 5, 3),
    }
    for ods, (arm, _, _) in plan.items():
        await stack.publish(
            "practice-settings",
            ods,
            practice(ods, arm=arm, nhs_app_individual=arm == "treatment"),
        )
    await stack.start_worker()
    for ods, (_, count, _) in plan.items():
        for i in range(count):
            mid = f"{ods}-{i}"
            await stack.publish("send-requests", mid, request(mid, ods_code=ods))
    await stack.read(["dispatches"], lambda rs: len(rs) >= 18)
    for ods, (_, _, responded) in plan.items():
        for i in range(responded):
            mid = f"{ods}-{i}"
            await stack.publish("responses", mid, Response(message_id=mid, responded_at=now()))

    def settled(rs: list[tuple[str, Any]]) -> bool:
        latest = {e.key: e for _, e in rs}
        c = latest.get("comparison|all|2")
        return bool(c and c.treatment_sent == 8 and c.control_sent == 10 and c.difference)

    records = await stack.read(["pilot-metrics"], settled, timeout=40)
    latest: dict[str, PilotMetric] = {e.key: e for _, e in records}
    assert settled(records), sorted(latest)
    c = latest["comparison|all|2"]
    assert c.method == "practice_level_welch_t"
    assert c.treatment_rate == pytest.approx((1 / 4 + 2 / 4) / 2)
    assert c.control_rate == pytest.approx((2 / 5 + 3 / 5) / 2)
    assert c.difference == pytest.approx(0.375 - 0.5)
    assert c.ci_low is not None and c.ci_high is not None
    assert c.ci_low < c.difference < c.ci_high
    assert c.naive_ci_low is not None and c.p_value is not None
    assert (c.treatment_practices, c.control_practices) == (2, 2)
    # Nothing has matured at ten minutes: no practice can be compared yet.
    assert latest["comparison|all|600"].method == "insufficient_practices"


async def test_an_analyst_reads_avro_metrics_with_the_schemas_alone(stack_factory: Any) -> None:
    """``examples/consume_pilot_metrics.py`` against Avro output: no appfirst code needed."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "consume_pilot_metrics.py"
    spec = importlib.util.spec_from_file_location("consume_pilot_metrics", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    stack = stack_factory(APPFIRST_METRIC_HORIZONS="2,600", APPFIRST_CODEC="avro")
    await stack.publish("practice-settings", "T1", practice("T1"))
    await stack.start_worker()
    await stack.publish("send-requests", "T1-0", request("T1-0", ods_code="T1"))
    await stack.read(
        ["pilot-metrics"],
        lambda rs: any(e.key == "arm_rate|treatment|all|2" and e.sent == 1 for _, e in rs),
        timeout=30,
    )
    raw = await stack.read_raw("pilot-metrics")
    assert raw and all(v[:2] == b"\xc3\x01" for v in raw)  # Avro single-object, not JSON
    metrics = await example.latest_metrics(
        stack.settings.bootstrap, stack.settings.topic("pilot-metrics")
    )
    assert metrics["arm_rate|treatment|all|2"]["sent"] == 1
    assert metrics["arm_rate|treatment|all|2"]["kind"] == "arm_rate"


async def test_trend_counts_each_london_day_of_dispatch(stack_factory: Any) -> None:
    stack = stack_factory()
    await stack.start_worker()
    today = now()
    earlier = today - timedelta(days=2)
    plan = [  # (message, arm, dispatched, read, responded)
        ("t-old-1", "treatment", earlier, True, True),
        ("t-old-2", "treatment", earlier, False, False),
        ("t-new-1", "treatment", today, True, False),
        ("c-new-1", "control", today, False, True),
    ]
    for mid, arm, dispatched_at, _, _ in plan:
        await stack.publish("dispatches", mid, dispatch(mid, arm, dispatched_at))
    for mid, _, dispatched_at, read, responded in plan:
        later = dispatched_at + timedelta(minutes=5)
        if read:
            await stack.publish("read-receipts", mid, ReadReceipt(message_id=mid, read_at=later))
        if responded:
            await stack.publish("responses", mid, Response(message_id=mid, responded_at=later))
    old_day = london_date(earlier)
    new_day = london_date(today)

    expected = {
        f"trend|treatment|all|{old_day}": (2, 1, 0, 1),
        f"trend|treatment|all|{new_day}": (1, 1, 0, 0),
        f"trend|control|all|{new_day}": (1, 0, 0, 1),
        f"trend|treatment|sms_with_response|{old_day}": (2, 1, 0, 1),
    }

    def counts(rs: list[tuple[str, Any]]) -> dict[str, tuple[int, int, int, int]]:
        latest = {e.key: e for _, e in rs}
        return {
            key: (m.sent, m.read, m.fallbacks, m.responded)
            for key, m in latest.items()
            if m.kind == "trend"
        }

    # Wait for every count the test checks: each arrives on its own record, so waiting
    # for two of them let the others still be in flight on a loaded machine.
    def settled(rs: list[tuple[str, Any]]) -> bool:
        found = counts(rs)
        return all(found.get(key) == want for key, want in expected.items())

    records = await stack.read(["pilot-metrics"], settled, timeout=60)
    latest: dict[str, PilotMetric] = {e.key: e for _, e in records}
    found = counts(records)
    assert {key: found.get(key) for key in expected} == expected, sorted(latest)
    assert latest[f"trend|treatment|all|{old_day}"].day == date.fromisoformat(old_day)


def london_date(at: datetime) -> str:
    return at.astimezone(ZoneInfo("Europe/London")).date().isoformat()


def dispatch(message_id: str, arm: str, dispatched_at: datetime) -> Dispatch:
    return Dispatch.model_validate(
        {
            "message_id": message_id,
            "channel": "sms",
            "reason": "sms_only_type",
            "dispatched_at": dispatched_at,
            "ods_code": "T1" if arm == "treatment" else "C1",
            "arm": arm,
            "origin": "individual",
            "message_type": "sms_with_response",
        }
    )


async def test_late_and_repeated_responses_are_dead_letters_never_counted(
    stack_factory: Any,
) -> None:
    stack = stack_factory()
    await stack.start_worker()
    sent_at = now() - timedelta(days=9)
    for mid in ("r-ok", "r-late"):
        await stack.publish("dispatches", mid, dispatch(mid, "treatment", sent_at))
    day = london_date(sent_at)
    # The dispatches counted first, so that each response is judged against its dispatch.
    await stack.read(
        ["pilot-metrics"],
        lambda rs: any(e.key == f"trend|treatment|all|{day}" and e.sent == 2 for _, e in rs),
        timeout=60,
    )
    responses = [
        ("r-ok", sent_at + timedelta(days=1)),
        ("r-ok", sent_at + timedelta(days=2)),  # the link is single use
        ("r-late", sent_at + timedelta(days=8)),  # past the 7 days
    ]
    for mid, at in responses:
        await stack.publish("responses", mid, Response(message_id=mid, responded_at=at))

    def settled(rs: list[tuple[str, Any]]) -> bool:
        letters = [e for t, e in rs if t == "dead-letter"]
        trend = [e for t, e in rs if t == "pilot-metrics" and e.key == f"trend|treatment|all|{day}"]
        return len(letters) >= 2 and bool(trend) and trend[-1].sent == 2

    records = await stack.read(["pilot-metrics", "dead-letter"], settled, timeout=60)
    assert settled(records)
    letters = sorted(e.reason for t, e in records if t == "dead-letter")
    assert [r.split(":")[0] for r in letters] == ["late", "repeated"], letters
    records = await stack.read(["pilot-metrics"], lambda rs: False, timeout=3)
    trend = [e for _, e in records if e.key == f"trend|treatment|all|{day}"][-1]
    assert (trend.sent, trend.responded) == (2, 1)
