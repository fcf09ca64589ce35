"""``streams/batches.collect``: a batch's records build its row and hold its patients until
release; a cancel drops the patients not yet released; each message's outcome is counted
once. Release, staggering and the kill during it: ``tests/integration/test_batches.py``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from appfirst.streams import io
from appfirst.streams.batches import Batches
from appfirst.topics.models import BatchEvent
from tests.unit.streams.agents.conftest import Build
from tests.unit.streams.agents.driver import feed, until


@pytest.fixture
def batches(build: Build) -> Batches:
    part: Batches = build("batches").parts["batches"]
    return part


def _record(batch_id: str, kind: str, **fields: Any) -> bytes:
    return (
        BatchEvent.model_validate(
            {"batch_id": batch_id, "kind": kind, "occurred_at": datetime.now(UTC), **fields}
        )
        .model_dump_json()
        .encode()
    )


def _patient(batch_id: str, seq: int) -> bytes:
    return _record(
        batch_id, "patient", seq=seq, line=seq + 2, nhs_number="9434765919", mobile="+447700900123"
    )


def _plan(batch_id: str, contactable: int) -> bytes:
    return _record(
        batch_id,
        "plan",
        ods_code="B81001",
        message_type="sms_with_response",
        body="Your flu vaccination is due",
        patient_list=contactable,
        contactable=contactable,
        non_contactable=0,
        without_valid_mobile=0,
        send_at=datetime.now(UTC) + timedelta(days=1),
    )


async def test_a_batch_is_held_whole_until_released(outbox: io.Outbox, batches: Batches) -> None:
    async with batches.collect.test_context() as agent:
        for seq in range(2):
            await feed(agent, "batches", b"bq-1", _patient("bq-1", seq))
        await feed(agent, "batches", b"bq-1", _plan("bq-1", 2))
        row = await until(lambda: (batches.progress_table.get("bq-1") or {}).get("plan"))
    assert row["contactable"] == 2
    held = [batches.patients.get(f"bq-1|{seq}") for seq in range(2)]
    assert all(held)
    assert json.loads(held[0])["m"] == "+447700900123"


async def test_a_cancel_drops_the_patients_not_yet_released(
    outbox: io.Outbox, batches: Batches
) -> None:
    async with batches.collect.test_context() as agent:
        for seq in range(3):
            await feed(agent, "batches", b"bq-2", _patient("bq-2", seq))
        await feed(agent, "batches", b"bq-2", _plan("bq-2", 3))
        await feed(agent, "batches", b"bq-2", _record("bq-2", "cancel"))
        await until(lambda: (batches.progress_table.get("bq-2") or {}).get("cancelled_at"))
    assert [batches.patients.get(f"bq-2|{seq}") for seq in range(3)] == [None] * 3


async def test_an_outcome_is_counted_once(outbox: io.Outbox, batches: Batches) -> None:
    fact = json.dumps({"message_id": "bq-3.000000", "outcome": "delivered"}).encode()
    async with batches.collect.test_context() as agent:
        await feed(agent, "batch-progress", b"bq-3", fact)
        await feed(agent, "batch-progress", b"bq-3", fact)  # read again after a crash
        await feed(agent, "batch-progress", b"bq-3", b'{"outcome": "lost"}')
        await until(lambda: outbox.on("dead-letter"))
    assert batches.marks.get("settled|bq-3.000000") == {"settled": 1, "delivered": 1}
    assert json.loads(outbox.on("dead-letter")[0][1])["agent"] == "batches"
