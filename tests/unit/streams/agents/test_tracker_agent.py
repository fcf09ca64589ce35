"""``streams/tracker``: the per-message agent keeps each NHS App message's deadline in its
row as its events come, and the sweep emits each due fallback once. Timing against the
broker (recovery, rebalances, replay) is in ``tests/integration/test_tracker_stream.py``."""

from __future__ import annotations

import json
import types
from datetime import UTC, datetime, timedelta

import pytest

from appfirst.rules import fallback as rules
from appfirst.settings import get_settings
from appfirst.streams import io
from appfirst.streams.messages import Messages, Seen
from appfirst.streams.tracker import Tracker
from appfirst.topics.models import DeliveryReceipt, Dispatch, ReadReceipt
from tests.unit.streams.agents.conftest import Build
from tests.unit.streams.agents.driver import feed, until

LIMIT = get_settings().deadlines().for_message("individual", "sms_with_response")


@pytest.fixture
def messages(build: Build) -> Messages:
    """The per-message agent whose rows hold the deadlines: this test's only."""
    part: Messages = build("messages").parts["messages"]
    return part


@pytest.fixture
def tracker(messages: Messages) -> Tracker:
    """Deadlines indexed, and fallbacks emitted, by this test only."""
    return messages.tracker


def _two_hours_ago() -> datetime:
    at = datetime.now(UTC) - timedelta(hours=2)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)  # events carry milliseconds


def _dispatch(mid: str, channel: str = "nhs_app") -> bytes:
    return (
        Dispatch.model_validate(
            {
                "message_id": mid,
                "channel": channel,
                "reason": "nhs_app_enabled" if channel == "nhs_app" else "no_nhs_app",
                "dispatched_at": datetime.now(UTC) - timedelta(hours=3),
                "ods_code": "A81001",
                "arm": "treatment",
                "origin": "individual",
                "message_type": "sms_with_response",
                "mobile": "+447700900123",
                "body": "Please book your review",
            }
        )
        .model_dump_json()
        .encode()
    )


def _accepted(at: datetime) -> bytes:
    return json.dumps({"outcome": "accepted", "at": at.isoformat(), "channel": "nhs_app"}).encode()


def _owed(tracker: Tracker, mid: str) -> tuple[str, datetime] | None:
    state = tracker.state(mid)
    return None if state is None else rules.owed(state)


async def test_the_deadline_counts_from_the_nhs_apps_acceptance(
    outbox: io.Outbox, messages: Messages, tracker: Tracker
) -> None:
    accepted = _two_hours_ago()
    async with messages.follow.test_context() as agent:
        await feed(agent, "dispatches", b"t-1", _dispatch("t-1"))
        await feed(agent, "send-outcomes", b"t-1", _accepted(accepted))
        await until(
            lambda: (
                (_owed(tracker, "t-1") or (None, None))[1] == accepted + timedelta(seconds=LIMIT)
            )
        )
    reason, _ = _owed(tracker, "t-1")  # type: ignore[misc]
    assert reason == "unread"


async def test_a_message_read_in_time_owes_nothing(
    outbox: io.Outbox, messages: Messages, tracker: Tracker
) -> None:
    accepted = _two_hours_ago()
    read = ReadReceipt(message_id="t-2", read_at=accepted + timedelta(seconds=LIMIT / 2))
    async with messages.follow.test_context() as agent:
        await feed(agent, "dispatches", b"t-2", _dispatch("t-2"))
        await feed(agent, "send-outcomes", b"t-2", _accepted(accepted))
        await feed(agent, "read-receipts", b"t-2", read.model_dump_json().encode())
        await until(lambda: tracker.state("t-2") and _owed(tracker, "t-2") is None)


async def test_an_sms_has_no_deadline(
    outbox: io.Outbox, messages: Messages, tracker: Tracker
) -> None:
    async with messages.follow.test_context() as agent:
        await feed(agent, "dispatches", b"t-3", _dispatch("t-3", channel="sms"))
        await feed(agent, "dispatches", b"t-4", _dispatch("t-4"))  # read after t-3
        await until(lambda: tracker.state("t-4"))
    assert tracker.state("t-3") is None


async def test_the_sweep_sends_a_due_fallback_once(
    outbox: io.Outbox, messages: Messages, tracker: Tracker
) -> None:
    accepted = _two_hours_ago()
    async with messages.follow.test_context() as agent:
        await feed(agent, "dispatches", b"t-5", _dispatch("t-5"))
        await feed(agent, "send-outcomes", b"t-5", _accepted(accepted))
        await until(lambda: _owed(tracker, "t-5"))
        now = datetime.now(UTC).timestamp()
        tracker._indexed.add(0)  # owned and indexed, as the timer's sweep finds it
        await tracker._sweep_partition(0, now, now)
        await tracker._sweep_partition(0, now, now)  # again: not sent twice
        sent = [json.loads(v) for k, v in outbox.on("fallbacks") if k == b"t-5"]
        assert len(sent) == 1
        fallback = sent[0]
        assert fallback["reason"] == "unread"
        assert fallback["mobile"] == "+447700900123"
        assert fallback["body"] == "Please book your review"
        assert datetime.fromisoformat(fallback["due_at"]) == accepted + timedelta(seconds=LIMIT)
        assert datetime.fromisoformat(fallback["emitted_at"]) >= datetime.fromisoformat(
            fallback["due_at"]
        )
        # The fallback read back from its topic settles the message.
        mine = [v for k, v in outbox.on("fallbacks") if k == b"t-5"]
        await feed(agent, "fallbacks", b"t-5", mine[0])
        await until(lambda: _owed(tracker, "t-5") is None)
    assert "t-5" not in tracker._emitted


async def test_a_record_that_is_not_an_event_is_dead_lettered(
    outbox: io.Outbox, messages: Messages, tracker: Tracker
) -> None:
    async with messages.follow.test_context() as agent:
        await feed(agent, "read-receipts", b"t-6", b"{}")
        dead = await until(lambda: outbox.on("dead-letter"))
    assert json.loads(dead[0][1])["agent"] == "messages"


async def test_what_a_batch_read_counts_only_once_its_rows_are_written(
    outbox: io.Outbox, tracker: Tracker
) -> None:
    # The sweep decides how far it may act from how far the inputs were read. A read
    # receipt taken in but not yet in its row must not count as read: a sweep in between
    # could send the fallback the receipt cancels.
    event = types.SimpleNamespace(
        message=types.SimpleNamespace(
            topic=get_settings().topic("dispatches"), partition=0, offset=41
        )
    )
    dispatch = Dispatch.model_validate_json(_dispatch("t-7"))
    seen = Seen("t-7", "dispatches", dispatch, event)
    tracker.begin()
    tracker.read(event)
    part = await tracker.take(seen, None)
    assert part is not None and "+447700900123" in part["d"]
    assert tracker._offsets == {} and tracker._watermarks == {}
    assert tracker.index.pending() == 0
    await tracker.written()
    assert tracker._offsets == {("dispatches", 0): 41}
    assert tracker._watermarks == {("dispatches", 0): dispatch.dispatched_at.timestamp()}
    assert tracker.index.pending() == 1


async def test_a_due_time_moved_later_is_not_swept_early(
    outbox: io.Outbox, messages: Messages, tracker: Tracker
) -> None:
    # The sweep sends one fallback after another; a batch written while one is sent can
    # move a later message's due time (a delivery receipt) after the sweep took it as due.
    accepted = _two_hours_ago()
    # Delivered a minute after acceptance: its deadline restarts from delivery, a minute on.
    delivered = accepted + timedelta(seconds=60)
    async with messages.follow.test_context() as agent:
        await feed(agent, "dispatches", b"t-8", _dispatch("t-8"))
        await feed(agent, "send-outcomes", b"t-8", _accepted(accepted))
        await until(lambda: _owed(tracker, "t-8"))
        was_due = _owed(tracker, "t-8")[1]  # type: ignore[index]
        receipt = DeliveryReceipt(
            message_id="t-8", channel="nhs_app", status="delivered", occurred_at=delivered
        )
        await feed(agent, "delivery-receipts", b"t-8", receipt.model_dump_json().encode())
        await until(lambda: (_owed(tracker, "t-8") or (None, was_due))[1] > was_due)
        # As the sweep had it before the receipt's batch was written.
        tracker.index.update(0, "t-8", was_due.timestamp())
        tracker._indexed.add(0)
        until_ = was_due.timestamp() + 1  # how far the sweep may act: not to the new due
        await tracker._sweep_partition(0, until_, datetime.now(UTC).timestamp())
    assert not outbox.on("fallbacks")


async def test_a_batch_overtaken_by_a_rebalance_writes_nothing(
    outbox: io.Outbox, messages: Messages, tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its partitions may be another worker's by the time its flush is done: a row written
    # late could overwrite the new owner's. Its events are read again instead.
    durable = messages.io.durable
    flushed: list[bool] = []

    async def rebalance_meanwhile() -> None:
        await durable()
        monkeypatch.setattr(messages.context, "current", lambda event: False)
        flushed.append(True)

    monkeypatch.setattr(messages.io, "durable", rebalance_meanwhile)
    async with messages.follow.test_context() as agent:
        await feed(agent, "dispatches", b"t-9", _dispatch("t-9"))
        await until(lambda: flushed and not tracker._batch_offsets)
    assert messages.rows.get("t-9") is None
    assert tracker._offsets == {} and tracker.index.pending() == 0


@pytest.mark.parametrize("rebalanced", [False, True], ids=["stop", "stop-after-a-rebalance"])
async def test_a_batch_finished_at_a_stop_is_written_unless_a_rebalance_completed(
    outbox: io.Outbox,
    messages: Messages,
    tracker: Tracker,
    monkeypatch: pytest.MonkeyPatch,
    rebalanced: bool,
) -> None:
    # A stop pauses the flow and the worker stays in the group until its agents finish:
    # its rows are recovered by the next owner. A rebalance completed before the stop may
    # have given the partition to another worker already.
    app = messages.context.app
    durable = messages.io.durable
    flushed: list[bool] = []

    async def stop_meanwhile() -> None:
        await durable()
        monkeypatch.setattr(type(app), "should_stop", property(lambda self: True))
        monkeypatch.setattr(app.flow_control, "is_active", lambda: False)
        if rebalanced:
            monkeypatch.setattr(app, "consumer_generation_id", app.consumer_generation_id + 1)
        flushed.append(True)

    monkeypatch.setattr(messages.io, "durable", stop_meanwhile)
    async with messages.follow.test_context() as agent:
        await feed(agent, "dispatches", b"t-10", _dispatch("t-10"))
        await until(lambda: flushed and not tracker._batch_offsets)
    assert (messages.rows.get("t-10") is None) == rebalanced
