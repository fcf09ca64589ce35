"""Whatever upstream writes, the worker carries on: every input topic of the contract fed
records no agent can use (empty, not JSON, JSON of every wrong shape, nested past
Python's recursion limit, near the broker's size limit, broken Avro and Confluent
framing, keys that are not UTF-8). None may stop a worker: an agent that fails on a
record fails on it again after every restart, and its partition stands still. Each one
is dead-lettered with its source offset, and a good request still goes out after them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from appfirst.topics.models import DeadLetter

from .factories import request

pytestmark = pytest.mark.integration

INPUTS = (
    "send-requests",
    "practice-settings",
    "eligibility",
    "delivery-receipts",
    "read-receipts",
    "responses",
    # Written by the worker itself and read by its agents: a bug in the writer must not
    # stop the readers either.
    "dispatches",
    "fallbacks",
    "router-by-patient",
    "send-outcomes",
    "metric-facts",
    "practice-stats",
    "batches",
    "batch-progress",
)

POISON: list[tuple[bytes | None, bytes]] = [
    (b"k-empty", b""),
    (b"k-null", b"null"),
    (b"k-list", b"[]"),
    (b"k-object", b"{}"),
    (b"k-string", b'"a string"'),
    (b"k-number", b"1e999"),
    (b"k-nan", b'{"message_id": NaN}'),
    (b"k-nulls", b'{"message_id": null, "nhs_number": null, "ods_code": null}'),
    (b"k-types", b'{"message_id": 7, "nhs_number": [], "requested_at": {}}'),
    (b"k-not-utf8", b"\xff\xfe\xfd"),
    (b"k-nested", b"[" * 100_000),
    (b"k-nested-object", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    (b"k-avro", b"\xc3\x01" + b"\x00" * 8 + b"\xff" * 40),
    (b"k-avro-short", b"\xc3\x01\x01"),
    (b"k-confluent", b"\x00\x00\x00\x00\x07junk"),
    (b"\xff\xfe-key", b"\x07junk"),
    (None, b"\x07no key"),
    (b"k-huge", b"{" + b"x" * 900_000),
]


async def test_no_input_stops_a_worker(stack_factory: Any) -> None:
    stack = stack_factory()
    await stack.start_worker()
    producer = await stack.producer()
    sent: set[tuple[str, int, int]] = set()
    for topic in INPUTS:
        for key, value in POISON:
            meta = await producer.send_and_wait(stack.settings.topic(topic), value, key=key)
            sent.add((stack.settings.topic(topic), meta.partition, meta.offset))
        # A tombstone: on a compacted topic the deletion of a key, on the others nothing
        # to act on. Either way no worker may fail on it.
        await producer.send_and_wait(stack.settings.topic(topic), None, key=b"k-tombstone")
    await stack.publish("send-requests", "after-poison", request("after-poison"))

    def dead(records: list[Any]) -> set[tuple[str, int, int]]:
        return {
            (d.source_topic, d.partition, d.offset) for _, d in records if isinstance(d, DeadLetter)
        }

    began = time.monotonic()
    records = await stack.read(["dead-letter"], lambda rs: sent <= dead(rs), timeout=120)
    missing = sent - dead(records)
    assert not missing, (
        f"{len(missing)} of {len(sent)} not dead-lettered after "
        f"{time.monotonic() - began:.0f} s: {sorted(missing)[:6]}; "
        f"workers that exited: {stack.self_exits}"
    )
    # Read raw: the poison written to dispatches is on that topic too.
    deadline = time.monotonic() + 60
    while not any(r.key == b"after-poison" for r in await stack.read_records("dispatches")):
        assert time.monotonic() < deadline, "the good request after the poison never went out"
        await asyncio.sleep(0.5)
    assert stack.self_exits == 0
    reasons = {d.reason for _, d in records if isinstance(d, DeadLetter)}
    assert all(reasons), "every dead letter says why"
    assert not any("x" * 100 in r for r in reasons)  # reasons never carry the value
