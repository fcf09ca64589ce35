"""``streams/messages.follow``, its status part (``streams/status.py``): what a practice's
conversation thread shows for each message (``message-status``), and each batch message's
outcome, counted once (``batch-progress``). The rules:
``tests/unit/rules/test_status.py``."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from appfirst.streams import io
from appfirst.streams.messages import Messages
from appfirst.topics.models import DeliveryReceipt, Dispatch
from tests.unit.streams.agents.conftest import Build
from tests.unit.streams.agents.driver import feed, until


@pytest.fixture
def status(build: Build) -> Messages:
    part: Messages = build("messages").parts["messages"]
    return part


def _dispatch(mid: str, channel: str = "sms", batch_id: str | None = None) -> bytes:
    reason = {"sms": "sms_only_type", "none": "deceased"}[channel]
    return (
        Dispatch.model_validate(
            {
                "message_id": mid,
                "channel": channel,
                "reason": reason,
                "dispatched_at": datetime.now(UTC),
                "ods_code": "S81001",
                "arm": None,
                "origin": "batch" if batch_id else "individual",
                "message_type": "sms_with_response",
                "batch_id": batch_id,
            }
        )
        .model_dump_json()
        .encode()
    )


def _sent(mid: str) -> bytes:
    at = datetime.now(UTC).isoformat()
    return json.dumps({"outcome": "accepted", "at": at, "channel": "sms"}).encode()


def _receipt(mid: str, state: str) -> bytes:
    return (
        DeliveryReceipt(message_id=mid, channel="sms", status=state, occurred_at=datetime.now(UTC))  # type: ignore[arg-type]
        .model_dump_json()
        .encode()
    )


def _shown(outbox: io.Outbox, mid: str) -> list[str]:
    return [json.loads(v)["status"] for k, v in outbox.on("message-status") if k == mid.encode()]


async def test_an_sms_shows_sent_then_delivered(outbox: io.Outbox, status: Messages) -> None:
    async with status.follow.test_context() as agent:
        await feed(agent, "dispatches", b"s-1", _dispatch("s-1"))
        await feed(agent, "send-outcomes", b"s-1", _sent("s-1"))
        await until(lambda: _shown(outbox, "s-1") == ["sent"])
        await feed(agent, "delivery-receipts", b"s-1", _receipt("s-1", "delivered"))
        await until(lambda: _shown(outbox, "s-1") == ["sent", "delivered"])
        # A receipt read again (after a crash) shows nothing new.
        await feed(agent, "delivery-receipts", b"s-1", _receipt("s-1", "delivered"))
        await feed(agent, "dispatches", b"s-2", _dispatch("s-2", channel="none"))
        await until(lambda: _shown(outbox, "s-2"))
    assert _shown(outbox, "s-1") == ["sent", "delivered"]


async def test_a_batch_message_is_counted_once(outbox: io.Outbox, status: Messages) -> None:
    async with status.follow.test_context() as agent:
        await feed(agent, "dispatches", b"b1.000001", _dispatch("b1.000001", batch_id="b1"))
        await feed(agent, "send-outcomes", b"b1.000001", _sent("b1.000001"))
        await feed(
            agent, "delivery-receipts", b"b1.000001", _receipt("b1.000001", "permanent_failure")
        )
        await feed(agent, "delivery-receipts", b"b1.000001", _receipt("b1.000001", "delivered"))
        await until(lambda: outbox.on("batch-progress"))
        await feed(agent, "dispatches", b"s-3", _dispatch("s-3", channel="none"))
        await until(lambda: _shown(outbox, "s-3"))
    counted = [(k, json.loads(v)["outcome"]) for k, v in outbox.on("batch-progress")]
    assert counted == [(b"b1", "failed")]
    assert _shown(outbox, "b1.000001")[-1] == "failed"  # a late "delivered" is noise
