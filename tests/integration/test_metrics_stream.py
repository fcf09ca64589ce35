"""Pilot metrics through a running worker: sent and responded per arm after maturity, and
the comparison with practices as the unit."""

from __future__ import annotations

from typing import Any

import pytest

from appfirst.topics.models import PilotMetric, Response

from .factories import now, practice, request

pytestmark = pytest.mark.integration


async def test_arm_rates(stack_factory: Any) -> None:
    stack = stack_factory(APPFIRST_METRIC_HORIZONS="2,600")
    await stack.start_worker()
    await stack.publish("practice-settings", "T1", practice("T1"))
    await stack.publish(
        "practice-settings", "C1", practice("C1", nhs_app_individual=False, arm="control")
    )
    await stack.publish("practice-settings", "N1", practice("N1", arm=None))
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


async def test_the_comparison_treats_practices_as_the_unit(stack_factory: Any) -> None:
    stack = stack_factory(APPFIRST_METRIC_HORIZONS="2,600")
    await stack.start_worker()
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
