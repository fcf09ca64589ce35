"""Fallbacks through a running worker: deadlines as data, any order of receipts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from appfirst.topics.models import DeliveryReceipt, Fallback, ReadReceipt

from .factories import app_user, now, practice, request

pytestmark = pytest.mark.integration

DEADLINE = 3.0


async def test_fallback_rules(stack_factory: Any) -> None:
    stack = stack_factory(APPFIRST_FALLBACK_INDIVIDUAL_SECONDS=str(DEADLINE))
    await stack.publish("practice-settings", "A00001", practice("A00001"))
    await stack.start_worker()
    reqs = {
        name: request(name) for name in ("unread", "read", "unnotified", "early-read", "late-read")
    }
    await stack.publish_eligibility([app_user(r.patient.nhs_number) for r in reqs.values()])
    # An early read: the receipt is there before the request is even routed.
    await stack.publish(
        "read-receipts", "early-read", ReadReceipt(message_id="early-read", read_at=now())
    )
    for req in reqs.values():
        await stack.publish("send-requests", req.message_id, req)
    routed = await stack.read(["dispatches"], lambda rs: len(rs) >= len(reqs))
    assert {e.message_id: e.channel for _, e in routed} == dict.fromkeys(reqs, "nhs_app")
    await stack.publish("read-receipts", "read", ReadReceipt(message_id="read", read_at=now()))
    await stack.publish(
        "delivery-receipts",
        "unnotified",
        DeliveryReceipt(
            message_id="unnotified", channel="nhs_app", status="unnotified", occurred_at=now()
        ),
    )
    # Read, but after its deadline: the fallback still goes.
    await stack.publish(
        "read-receipts",
        "late-read",
        ReadReceipt(message_id="late-read", read_at=now() + timedelta(seconds=DEADLINE * 3)),
    )

    records = await stack.read(
        ["fallbacks", "dispatches"],
        lambda rs: sum(t == "fallbacks" for t, _ in rs) >= 3,
        timeout=30,
    )
    # Give a wrong fallback time to show itself before concluding.
    records = await stack.read(["fallbacks", "dispatches"], lambda rs: False, timeout=DEADLINE)
    fallbacks: list[Fallback] = [e for t, e in records if t == "fallbacks"]
    dispatched = {e.message_id: e for t, e in records if t == "dispatches"}
    reasons = {f.message_id: f.reason for f in fallbacks}
    assert reasons == {"unread": "unread", "unnotified": "unnotified", "late-read": "unread"}
    assert len(fallbacks) == 3, "each message gets at most one fallback"
    for f in fallbacks:
        assert f.emitted_at >= f.due_at, "never early"
        assert f.mobile == "+447911123456"
        assert f.body == reqs[f.message_id].body
        if f.reason == "unread":
            expected = dispatched[f.message_id].dispatched_at + timedelta(seconds=DEADLINE)
            assert f.due_at == expected
