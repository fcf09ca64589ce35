"""``Dispatcher.dispatch`` with providers off (``APPFIRST_PROVIDERS=off``, as in
replay and the bench): each reference gets one ledger row, and a record read again is
absorbed. Sending through the lanes to real HTTP providers, with outages, crashes and
limits: ``tests/integration/test_send_lanes.py``, ``test_provider_flow.py``,
``test_fallback_crash.py``."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from appfirst import telemetry
from appfirst.streams import io
from appfirst.streams.dispatcher import Dispatcher
from appfirst.topics.models import Dispatch, Fallback
from tests.unit.streams.agents.conftest import Build
from tests.unit.streams.agents.driver import feed, until


@pytest.fixture
def dispatcher(build: Build) -> Dispatcher:
    part: Dispatcher = build("dispatcher", providers="off").parts["dispatcher"]
    return part


def _dispatch(mid: str, channel: str = "sms", body: str | None = "Hello") -> bytes:
    return (
        Dispatch.model_validate(
            {
                "message_id": mid,
                "channel": channel,
                "reason": "sms_only_type" if channel == "sms" else "deceased",
                "dispatched_at": datetime.now(UTC),
                "ods_code": "D81001",
                "arm": None,
                "origin": "individual",
                "message_type": "sms_with_response",
                "mobile": "+447700900123",
                "body": body,
            }
        )
        .model_dump_json()
        .encode()
    )


def _fallback(mid: str, mobile: str | None) -> bytes:
    now = datetime.now(UTC)
    return (
        Fallback(
            message_id=mid,
            reason="unread",
            due_at=now,
            emitted_at=now,
            fallback_id=f"{mid}/fallback",
            ods_code="D81001",
            origin="individual",
            message_type="sms_with_response",
            mobile=mobile,
            body="Hello",
        )
        .model_dump_json()
        .encode()
    )


async def test_each_reference_gets_one_ledger_row(
    outbox: io.Outbox, dispatcher: Dispatcher
) -> None:
    def absorbed() -> float:
        return telemetry.sends_absorbed.labels("dispatch")._value.get()  # type: ignore[no-any-return]

    before = absorbed()
    async with dispatcher.dispatch.test_context() as agent:
        await feed(agent, "dispatches", b"d-1", _dispatch("d-1"))
        await feed(agent, "dispatches", b"d-1", _dispatch("d-1"))  # read again
        await feed(agent, "fallbacks", b"d-2", _fallback("d-2", "+447700900123"))
        await feed(agent, "dispatches", b"d-3", _dispatch("d-3", channel="none", body=None))
        await feed(agent, "fallbacks", b"d-4", _fallback("d-4", None))  # nowhere to send
        await feed(agent, "dispatches", b"d-5", _dispatch("d-5"))  # read after the rest
        await until(lambda: dispatcher.ledger.get("d-5"))
    assert dispatcher.ledger.get("d-1") is not None
    assert dispatcher.ledger.get("d-2/fallback") is not None
    assert dispatcher.ledger.get("d-3") is None  # not sent: nothing to record
    assert dispatcher.ledger.get("d-4/fallback") is None
    assert absorbed() - before == 1  # d-1 read again


async def test_a_record_that_is_not_an_event_is_dead_lettered(
    outbox: io.Outbox, dispatcher: Dispatcher
) -> None:
    async with dispatcher.dispatch.test_context() as agent:
        await feed(agent, "fallbacks", b"d-6", b'{"message_id": "d-6"}')
        dead = await until(lambda: outbox.on("dead-letter"))
    assert json.loads(dead[0][1])["agent"] == "dispatcher"
