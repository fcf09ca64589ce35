"""Every fallback of a burst is owed and sent once, when the newest worker is SIGKILLed three
times while the burst's deadlines are pending.

Two workers; 400 individual NHS App messages published in about a second, a quarter of them
read at once; then three times: the newest worker is killed with SIGKILL and another one
started. The messages that lose their owner are the burst's last (the last records of the
table's changelog), which a new owner must recover like any other.

``APPFIRST_SIGKILL_SEED`` replays a run; without it each run draws its own seed (printed,
and in every failure message).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from appfirst.admin import ensure_topics
from appfirst.topics.models import Dispatch, Fallback, ReadReceipt

from .factories import app_user, now, practice, request

pytestmark = pytest.mark.integration

DEADLINE = 8.0
MESSAGES = 400
KILLS = 3


async def _wait_committed(stack: Any, ends: dict[tuple[str, int], int], timeout: float) -> None:
    """Until the workers' group has committed past every record written (``ends``: topic,
    partition -> the end the producer was given, not the broker's listed end)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.settings.bootstrap,
        group_id=f"{stack.prefix}worker",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        behind = dict(ends)
        while behind:
            for (topic, partition), end in list(behind.items()):
                committed = await consumer.committed(TopicPartition(topic, partition))
                if committed is not None and committed >= end:
                    del behind[(topic, partition)]
            if time.monotonic() > deadline:
                raise TimeoutError(f"not consumed in {timeout:.0f} s: {behind}")
            await asyncio.sleep(0.25)
    finally:
        await consumer.stop()


async def _send_all(stack: Any, records: list[tuple[str, str, Any]]) -> dict[tuple[str, int], int]:
    """Publish (topic, key, event) as JSON; returns the end of each partition written."""
    from appfirst.codecs.json_codec import JsonCodec

    producer = await stack.producer()
    futures = [
        await producer.send(
            stack.settings.topic(topic), JsonCodec(type(event)).encode(event), key=key.encode()
        )
        for topic, key, event in records
    ]
    ends: dict[tuple[str, int], int] = {}
    for meta in await asyncio.gather(*futures):
        tp = (meta.topic, meta.partition)
        ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
    return ends


async def _burst(stack: Any) -> set[str]:
    """The requests, paced over about a second, each fourth with its read receipt."""
    requests = [request(f"k-{i:04d}", ods_code="APP01") for i in range(MESSAGES)]
    people = [
        ("eligibility", r.patient.nhs_number, app_user(r.patient.nhs_number)) for r in requests
    ]
    ends = await _send_all(stack, [("practice-settings", "APP01", practice("APP01"))])
    ends.update(await _send_all(stack, people))
    # Eligibility first: a request routed before its patient's record goes by SMS.
    await _wait_committed(stack, ends, timeout=90)
    read: set[str] = set()
    chunk = 20
    for start in range(0, MESSAGES, chunk):
        records: list[tuple[str, str, Any]] = []
        for i, r in enumerate(requests[start : start + chunk], start):
            r = r.model_copy(update={"requested_at": now()})
            records.append(("send-requests", r.message_id, r))
            if i % 4 == 0:
                read.add(r.message_id)
                at = r.requested_at + timedelta(seconds=1)
                records.append(
                    (
                        "read-receipts",
                        r.message_id,
                        ReadReceipt(message_id=r.message_id, read_at=at),
                    )
                )
        await _send_all(stack, records)
        await asyncio.sleep(1.0 / (MESSAGES / chunk))
    return read


async def _chaos(stack: Any, rng: random.Random, log: list[str]) -> None:
    for _ in range(KILLS):
        await asyncio.sleep(rng.uniform(1.5, 3.5))
        newest = len(stack.workers) - 1
        stack.kill_worker(newest)
        log.append(f"{time.time():.2f} killed worker{newest}")
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        await stack.start_worker()
        log.append(f"{time.time():.2f} worker{len(stack.workers) - 1} ready")


@pytest.mark.slow(60)
async def test_sigkill_newest_worker_during_burst(stack_factory: Any) -> None:
    seed = int(os.environ.get("APPFIRST_SIGKILL_SEED") or random.randrange(1 << 30))
    print(f"APPFIRST_SIGKILL_SEED={seed}")
    rng = random.Random(seed)
    stack = stack_factory(
        APPFIRST_PROVIDERS="simulator",
        APPFIRST_FALLBACK_INDIVIDUAL_SECONDS=str(DEADLINE),
        APPFIRST_SWEEP_INTERVAL_SECONDS="0.5",
    )
    await stack.start_simulator(send_callbacks=False, app_share=1.0, notifications_share=1.0)
    await stack.start_worker()
    await stack.start_worker()
    read = await _burst(stack)
    events: list[str] = []
    await _chaos(stack, rng, events)
    where = f"seed {seed}; {events}"

    seen = await stack.read(
        ["dispatches"], lambda rs: len({e.message_id for _, e in rs}) >= MESSAGES, timeout=120
    )
    dispatches: dict[str, Dispatch] = {}
    for _, e in seen:
        assert isinstance(e, Dispatch)
        dispatches.setdefault(e.message_id, e)
    assert len(dispatches) == MESSAGES, f"{MESSAGES - len(dispatches)} never dispatched; {where}"
    app_first = {mid: d for mid, d in dispatches.items() if d.channel == "nhs_app"}
    assert len(app_first) == MESSAGES, (Counter(d.reason for d in dispatches.values()), where)
    # The deadline starts when the NHS App accepted the message (send-outcomes), never
    # before routing: a message with no outcome would wait an hour, and show as missing.
    # The last sends can still be under way (the newest worker has just taken its partitions
    # over): wait for them, as long as a lost one would need to show.
    accepted = await stack.accepted()
    deadline = time.monotonic() + 120
    while set(app_first) - set(accepted) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        accepted = await stack.accepted()
    unheard = sorted(set(app_first) - set(accepted))
    assert not unheard, f"{len(unheard)} NHS App sends with no outcome: {unheard[:5]}; {where}"
    due = {
        mid: accepted[mid] + DEADLINE
        for mid, d in app_first.items()
        if mid not in read and accepted[mid] >= d.dispatched_at.timestamp()
    }
    assert len(due) == MESSAGES - len(read), "an acceptance before its own dispatch"

    # Every due fallback at the simulator, then a little longer for a wrong one to show.
    expected = {f"{mid}/fallback" for mid in due}
    refs: dict[str, Any] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        refs = (await stack.sends(references=True))["references"]
        if expected <= set(refs) and time.time() > max(due.values()) + 3:
            await asyncio.sleep(3)
            refs = (await stack.sends(references=True))["references"]
            break
        await asyncio.sleep(0.5)
    sent = {r.removesuffix("/fallback"): v for r, v in refs.items() if r.endswith("/fallback")}
    missing = sorted(set(due) - set(sent))
    assert not missing, (
        f"{len(missing)} due fallbacks never sent: {missing[:10]} "
        f"(partitions {Counter(_partition(stack, m) for m in missing)}); "
        f"{where}"
    )
    # The simulator, like Notify, delivers a repeated reference again: one call each.
    twice = {r: v["calls"] for r, v in refs.items() if v["calls"] != 1}
    assert not twice, f"sent more than once: {sorted(twice.items())[:5]}; {where}"
    wrong = sorted(set(sent) - set(due))
    assert not wrong, f"{len(wrong)} read messages got an SMS: {wrong[:5]}; {where}"
    early = {
        mid: v["received_at"] - due[mid] for mid, v in sent.items() if v["received_at"] < due[mid]
    }
    assert not early, f"fallbacks sent before due: {list(early.items())[:5]}; {where}"

    # On the topic: a fallback for every due message and for no other. A worker killed
    # between emitting a fallback and reading it back leaves it owed to the next owner, which
    # emits it again (at least once); both carry one reference, so the provider sends one SMS.
    on_topic = await stack.read(
        ["fallbacks"], lambda rs: {e.message_id for _, e in rs} >= set(due), timeout=30
    )
    assert {e.message_id for _, e in on_topic} == set(due), where
    references = {e.message_id: e.fallback_id for _, e in on_topic if isinstance(e, Fallback)}
    for _, fb in on_topic:
        assert isinstance(fb, Fallback)
        assert fb.fallback_id == references[fb.message_id] == f"{fb.message_id}/fallback"
        assert fb.emitted_at >= fb.due_at
        assert fb.due_at.timestamp() == pytest.approx(due[fb.message_id], abs=0.002)
    again = len(on_topic) - len(references)
    print(f"fallbacks: {len(due)} due, {again} emitted again; {where}")


def _partition(stack: Any, message_id: str) -> int:
    """The partition Kafka's default partitioner gives ``message_id`` (for failure messages)."""
    from aiokafka.partitioner import murmur2

    return (murmur2(message_id.encode()) & 0x7FFFFFFF) % stack.settings.partitions


async def test_recovery_reads_changelogs_to_their_true_end(stack_factory: Any) -> None:
    """What table recovery is given as each changelog's end: past the last record of a large
    batch (the embedded broker lists the batch's base offset plus one)."""
    from aiokafka import AIOKafkaProducer

    from appfirst.streams.rewind import true_ends

    stack = stack_factory()
    await ensure_topics(stack.settings)
    topic = stack.settings.topic("send-requests")
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.settings.bootstrap, linger_ms=50, max_batch_size=1024 * 1024
    )
    await producer.start()
    try:
        sent = [await producer.send(topic, b"x" * 100, key=str(i).encode()) for i in range(2000)]
        written = await asyncio.gather(*sent)
    finally:
        await producer.stop()
    tps = [TopicPartition(topic, p) for p in range(stack.settings.partitions)]
    want = {
        tp: 1 + max((m.offset for m in written if m.partition == tp.partition), default=-1)
        for tp in tps
    }
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.settings.bootstrap, group_id=None)
    await consumer.start()
    try:
        listed = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    probe = AIOKafkaConsumer(bootstrap_servers=stack.settings.bootstrap, group_id=None)
    assert await true_ends(probe, listed) == want, f"listed {listed}"
