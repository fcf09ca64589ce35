"""Replay mode: a recorded day of events gives the same fallbacks, byte for byte."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from appfirst.rules import fallback as rules
from appfirst.topics.models import DeliveryReceipt, Dispatch, Event, ReadReceipt

pytestmark = pytest.mark.integration

DAY = datetime(2026, 11, 20, tzinfo=UTC)
MESSAGES = 600


def recorded_day(seed: int) -> list[tuple[str, str, Event]]:
    """A day of NHS App dispatches and their receipts, each topic in time order."""
    rng = random.Random(seed)
    dispatches: list[Dispatch] = []
    receipts: list[tuple[datetime, str, Event]] = []
    for i in range(MESSAGES):
        at = DAY + timedelta(seconds=rng.uniform(0, 86_400))
        mid = f"day-{i:05d}"
        origin = "individual" if rng.random() < 0.7 else "batch"
        dispatches.append(
            Dispatch(
                message_id=mid,
                channel="nhs_app",
                reason="nhs_app_enabled",
                dispatched_at=at,
                ods_code="A1",
                arm="treatment",
                origin=origin,
                message_type="questionnaire",
                fallback_due_at=at,
                mobile="+447911123456",
                body=f"message {i}",
            )
        )
        delivered = at + timedelta(seconds=rng.uniform(1, 120))
        roll = rng.random()
        if roll < 0.05:
            receipts.append(
                (
                    delivered,
                    "delivery-receipts",
                    DeliveryReceipt(
                        message_id=mid,
                        channel="nhs_app",
                        status="unnotified",
                        occurred_at=delivered,
                    ),
                )
            )
            continue
        receipts.append(
            (
                delivered,
                "delivery-receipts",
                DeliveryReceipt(
                    message_id=mid, channel="nhs_app", status="delivered", occurred_at=delivered
                ),
            )
        )
        if roll < 0.7:
            read = delivered + timedelta(seconds=rng.expovariate(1 / 3000))
            receipts.append((read, "read-receipts", ReadReceipt(message_id=mid, read_at=read)))
    records: list[tuple[str, str, Event]] = [
        ("dispatches", d.message_id, d) for d in sorted(dispatches, key=lambda d: d.dispatched_at)
    ]
    records += [
        (topic, ev.message_id, ev)  # type: ignore[attr-defined]
        for _, topic, ev in sorted(receipts, key=lambda r: r[0])
    ]
    return records


def expected_fallbacks(records: list[tuple[str, str, Event]]) -> dict[str, str]:
    """What the pure rules owe once every event is in, whatever the order."""
    states: dict[str, rules.TrackState] = {}
    for _, mid, ev in records:
        state = states.get(mid, rules.TrackState(mid, 0))
        if isinstance(ev, Dispatch):
            limit = 3600 if ev.origin == "individual" else 86400
            state = rules.on_dispatch(state, ev, limit)
        elif isinstance(ev, DeliveryReceipt):
            state = rules.on_delivery(state, ev)
        elif isinstance(ev, ReadReceipt):
            state = rules.on_read(state, ev.read_at)
        states[mid] = state
    owed = {mid: rules.owed(s) for mid, s in states.items()}
    return {mid: o[0] for mid, o in owed.items() if o is not None}


async def _replay(stack_factory: Any, records: list[tuple[str, str, Event]]) -> list[bytes]:
    stack = stack_factory(APPFIRST_CLOCK="replay")
    await stack.publish_many(records)  # recorded first, as a replay would find it
    await stack.start_worker()
    want = len(expected_fallbacks(records))
    seen = await stack.read(
        ["fallbacks"], lambda rs: len({e.message_id for _, e in rs}) >= want, timeout=90
    )
    assert len({e.message_id for _, e in seen}) == want
    raw = await stack.read_raw("fallbacks")
    return sorted(set(raw))


@pytest.mark.slow(30)
async def test_the_same_day_replays_to_the_same_bytes(stack_factory: Any) -> None:
    records = recorded_day(seed=5)
    expected = expected_fallbacks(records)
    assert 100 < len(expected) < MESSAGES  # a day with both outcomes
    first = await _replay(stack_factory, records)
    second = await _replay(stack_factory, records)
    assert first == second
    assert len(first) == len(expected)
