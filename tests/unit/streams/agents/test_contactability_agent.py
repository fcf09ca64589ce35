"""``streams/messages.follow``, its contactability part (``streams/contactability.py``): an
SMS failure meets the number its message went to, in either order, and the number's
fingerprint goes on ``failed-numbers``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from appfirst.streams import io
from appfirst.streams.messages import Messages
from appfirst.topics.models import DeliveryReceipt, Dispatch
from tests.unit.streams.agents.conftest import Build
from tests.unit.streams.agents.driver import AgentFailed, crashes, feed, until

MOBILE = "+447700900123"


def _dispatch(mid: str, channel: str = "sms", mobile: str | None = MOBILE) -> bytes:
    return (
        Dispatch.model_validate(
            {
                "message_id": mid,
                "channel": channel,
                "reason": "sms_only_type",
                "dispatched_at": datetime.now(UTC),
                "ods_code": "A81001",
                "arm": "control",
                "origin": "individual",
                "message_type": "sms_with_response",
                "mobile": mobile,
            }
        )
        .model_dump_json()
        .encode()
    )


def _receipt(mid: str, status: str = "permanent_failure", channel: str = "sms") -> bytes:
    return (
        DeliveryReceipt(
            message_id=mid, channel=channel, status=status, occurred_at=datetime.now(UTC)
        )
        .model_dump_json()
        .encode()
    )  # type: ignore[arg-type]


def _contactability(build: Build) -> Messages:
    part: Messages = build("messages").parts["messages"]
    return part


def _failed(outbox: io.Outbox) -> list[tuple[bytes | None, Any]]:
    return [(k, json.loads(v)) for k, v in outbox.on("failed-numbers")]


async def test_a_failure_after_its_dispatch_names_the_number(
    outbox: io.Outbox, build: Build
) -> None:
    contactability = _contactability(build)
    async with contactability.follow.test_context() as agent:
        await feed(agent, "dispatches", b"c-1", _dispatch("c-1"))
        await feed(agent, "delivery-receipts", b"c-1", _receipt("c-1"))
        failed = await until(lambda: _failed(outbox))
    assert [key for key, _ in failed] == [
        contactability.numbers.failed.fingerprint(MOBILE).encode()
    ]
    for _, key, value in outbox.records:  # a keyed hash, never the number
        assert MOBILE.encode() not in (key or b"") + value
    assert "failed_at" in failed[0][1]


async def test_a_failure_before_its_dispatch_waits_for_it(outbox: io.Outbox, build: Build) -> None:
    contactability = _contactability(build)
    async with contactability.follow.test_context() as agent:
        await feed(agent, "delivery-receipts", b"c-2", _receipt("c-2", "temporary_failure"))
        await until(lambda: contactability.rows.get("c-2"))
        assert not _failed(outbox)  # no number yet
        await feed(agent, "dispatches", b"c-2", _dispatch("c-2"))
        failed = await until(lambda: _failed(outbox))
    assert [key for key, _ in failed] == [
        contactability.numbers.failed.fingerprint(MOBILE).encode()
    ]


async def test_what_says_nothing_of_a_number_is_passed_over(
    outbox: io.Outbox, build: Build
) -> None:
    contactability = _contactability(build)
    last = "+447700900305"
    async with contactability.follow.test_context() as agent:
        await feed(agent, "dispatches", b"c-3", _dispatch("c-3", mobile="+447700900303"))
        await feed(agent, "delivery-receipts", b"c-3", _receipt("c-3", "delivered"))
        await feed(agent, "delivery-receipts", b"c-3", _receipt("c-3", channel="nhs_app"))
        await feed(agent, "dispatches", b"c-4", _dispatch("c-4", mobile=None))
        await feed(agent, "delivery-receipts", b"c-4", _receipt("c-4"))
        # Read in order: once this last one is joined, the ones before it were seen.
        await feed(agent, "dispatches", b"c-5", _dispatch("c-5", mobile=last))
        await feed(agent, "delivery-receipts", b"c-5", _receipt("c-5"))
        mine = contactability.numbers.failed.fingerprint(last).encode()
        await until(lambda: any(key == mine for key, _ in _failed(outbox)))
    assert [key for key, _ in _failed(outbox)] == [mine]


async def test_a_record_that_is_not_an_event_is_dead_lettered(
    outbox: io.Outbox, build: Build
) -> None:
    contactability = _contactability(build)
    async with contactability.follow.test_context() as agent:
        await feed(agent, "delivery-receipts", b"c-6", b"\x07junk")
        dead = await until(lambda: outbox.on("dead-letter"))
    assert json.loads(dead[0][1])["agent"] == "messages"


async def test_an_agent_that_fails_fails_its_test(
    outbox: io.Outbox, build: Build, monkeypatch: Any
) -> None:
    contactability = _contactability(build)

    # The harness itself: where a worker would exit crash-only, the test's wait raises.
    async def broken(seen: Any, entry: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(contactability.numbers, "take", broken)
    async with contactability.follow.test_context() as agent:
        await feed(agent, "dispatches", b"c-7", _dispatch("c-7"))
        with pytest.raises(AgentFailed, match="a bug"):
            await until(lambda: False)
    crashes.clear()  # seen: not a failure of this test
