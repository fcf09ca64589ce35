"""``streams/messages.follow``, its pilot facts (``streams/metrics.MessageFacts``): each
message's events, in any order, become the pilot's facts (sent, read, fallback, responded)
once each, keyed by arm, type and practice. The counting and the published figures:
``tests/integration/test_metrics_stream.py``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from appfirst.rules.pilot import ArmStats
from appfirst.streams import io
from appfirst.streams.messages import Messages
from appfirst.streams.metrics import Metrics, by_size
from appfirst.topics.catalogue import partition_for
from appfirst.topics.models import Dispatch, Response
from tests.unit.streams.agents.conftest import Build
from tests.unit.streams.agents.driver import feed, until

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _dispatch(mid: str, arm: str | None = "treatment", ods: str = "M81001") -> bytes:
    return (
        Dispatch.model_validate(
            {
                "message_id": mid,
                "channel": "sms",
                "reason": "sms_only_type",
                "dispatched_at": T0,
                "ods_code": ods,
                "arm": arm,
                "origin": "individual",
                "message_type": "sms_with_response",
            }
        )
        .model_dump_json()
        .encode()
    )


def _response(mid: str, after: timedelta) -> bytes:
    return Response(message_id=mid, responded_at=T0 + after).model_dump_json().encode()


def _metrics(build: Build) -> Messages:
    part: Messages = build("messages").parts["messages"]
    return part


def _facts(outbox: io.Outbox) -> list[tuple[bytes, dict[str, Any]]]:
    """(the practice's key, the fact), in the order sent: a record carries a batch's facts
    for one partition of ``metric-facts``."""
    records = outbox.on("metric-facts")
    assert all(key is None for key, _ in records)  # placed by partition, not by a key
    return [
        (f"{f['arm']}|{f['message_type']}|{f['ods_code']}".encode(), f)
        for _, value in records
        for f in json.loads(value)["facts"]
    ]


async def test_a_dispatch_in_an_arm_is_a_sent_fact(outbox: io.Outbox, build: Build) -> None:
    metrics = _metrics(build)
    async with metrics.follow.test_context() as agent:
        await feed(agent, "dispatches", b"p-1", _dispatch("p-1"))
        facts = await until(lambda: _facts(outbox))
    key, fact = facts[0]
    assert key == b"treatment|sms_with_response|M81001"
    assert (fact["kind"], fact["ods_code"], fact["delay"]) == ("sent", "M81001", 0.0)


async def test_a_response_before_its_dispatch_counts_once_it_comes(
    outbox: io.Outbox, build: Build
) -> None:
    metrics = _metrics(build)
    async with metrics.follow.test_context() as agent:
        await feed(agent, "responses", b"p-2", _response("p-2", timedelta(hours=2)))
        await until(lambda: metrics.rows.get("p-2"))
        assert not _facts(outbox)  # no arm known yet
        await feed(agent, "dispatches", b"p-2", _dispatch("p-2"))
        facts = await until(lambda: len(_facts(outbox)) == 2 and _facts(outbox))
    assert [f["kind"] for _, f in facts] == ["sent", "responded"]
    assert facts[1][1]["delay"] == 7200.0


async def test_a_second_response_is_dead_lettered_never_counted(
    outbox: io.Outbox, build: Build
) -> None:
    metrics = _metrics(build)
    async with metrics.follow.test_context() as agent:
        await feed(agent, "dispatches", b"p-3", _dispatch("p-3"))
        await feed(agent, "responses", b"p-3", _response("p-3", timedelta(minutes=5)))
        await feed(agent, "responses", b"p-3", _response("p-3", timedelta(minutes=9)))
        dead = await until(lambda: outbox.on("dead-letter"))
    assert [f["kind"] for _, f in _facts(outbox)] == ["sent", "responded"]
    assert json.loads(dead[0][1])["agent"] == "metrics"


async def test_a_message_outside_the_pilot_is_not_counted(outbox: io.Outbox, build: Build) -> None:
    metrics = _metrics(build)
    async with metrics.follow.test_context() as agent:
        await feed(agent, "dispatches", b"p-4", _dispatch("p-4", arm=None))
        await feed(agent, "dispatches", b"p-5", _dispatch("p-5", ods="M81009"))  # read after
        await until(lambda: any(f["ods_code"] == "M81009" for _, f in _facts(outbox)))
    assert [f["ods_code"] for _, f in _facts(outbox)] == ["M81009"]


def _fact(kind: str, delay: float = 0.0, ods: str = "M81002") -> bytes:
    when = (T0 - timedelta(days=10)).timestamp()  # every horizon, up to 7 days, has passed
    return json.dumps(
        {
            "kind": kind,
            "arm": "control",
            "message_type": "sms_with_response",
            "dispatched_at": when,
            "delay": delay,
            "ods_code": ods,
        }
    ).encode()


async def test_facts_are_counted_per_practice_and_snapshot_to_the_collectors(
    outbox: io.Outbox, build: Build, monkeypatch: Any
) -> None:
    built = build("metrics")
    metrics: Metrics = built.parts["metrics"]
    key = b"control|sms_with_response|M81002"
    async with metrics.aggregate.test_context() as agent:
        for fact in (_fact("sent"), _fact("sent"), _fact("responded", delay=5400)):
            await feed(agent, "metric-facts", key, fact)

        def counted() -> Any:
            raw = metrics.stats_table.get(key.decode())
            if raw is None:
                return None
            stats = ArmStats.from_json(raw["stats"], metrics.settings.metric_horizons)
            by_horizon = stats.snapshot(datetime.now(UTC).timestamp())
            # In one batch or more (take_events): wait for all three.
            return by_horizon if by_horizon[10800].responded == 1 else None

        by_horizon = await until(counted)
    assert (by_horizon[3600].sent, by_horizon[3600].responded) == (2, 0)  # 1.5 h: too late
    assert (by_horizon[10800].sent, by_horizon[10800].responded) == (2, 1)

    # The practice's counts go to its type's collector and to the collector of all types.
    monkeypatch.setattr(built.context, "owned_partitions", lambda topic: {0})
    snapshot = metrics.snapshot_practices  # one tick of the timer
    await snapshot()
    snapshots = [(k, json.loads(v)["snapshots"]) for k, v in outbox.on("practice-stats")]
    assert sorted(k for k, _ in snapshots) == [b"all", b"sms_with_response"]
    assert [len(each) for _, each in snapshots] == [1, 1]
    assert snapshots[0][1][0]["counts"]["10800"][:2] == [2, 1]
    await snapshot()  # nothing changed: nothing sent again
    assert len(outbox.on("practice-stats")) == 2

    async with metrics.collect.test_context() as agent:
        for collector, value in outbox.on("practice-stats"):
            await feed(agent, "practice-stats", collector, value)
        await until(lambda: metrics.practice_table.get("all|control|M81002|sms_with_response"))
    row = metrics.practice_table.get("sms_with_response|control|M81002")
    assert row is not None and row["counts"]["10800"][:2] == [2, 1]


async def test_a_batch_of_events_sends_a_record_per_partition_not_per_fact(
    outbox: io.Outbox, build: Build
) -> None:
    metrics = _metrics(build)
    practices = [f"M8{n:04d}" for n in range(40)]
    async with metrics.follow.test_context() as agent:
        for n, ods in enumerate(practices):
            await feed(agent, "dispatches", f"b-{n}".encode(), _dispatch(f"b-{n}", ods=ods))
        facts = await until(lambda: len(_facts(outbox)) == len(practices) and _facts(outbox))
    assert sorted(f["ods_code"] for _, f in facts) == practices
    partitions = metrics.context.settings.partitions
    # Taken in one batch or a few (take_events): at most a record per partition each.
    placed = [
        (value, partition)
        for (topic, _, value), partition in zip(outbox.records, outbox.partitions, strict=True)
        if topic == "metric-facts"
    ]
    assert len(placed) <= partitions * 3 < len(practices)
    for value, partition in placed:
        keys = {
            f"{f['arm']}|{f['message_type']}|{f['ods_code']}".encode()
            for f in json.loads(value)["facts"]
        }
        # Where a record keyed by each fact's practice would have landed.
        assert {partition_for(k, partitions) for k in keys} == {partition}


def _record(*facts: bytes) -> bytes:
    return b'{"facts": [' + b", ".join(facts) + b"]}"


async def test_a_record_of_facts_is_counted_whole_in_its_practices_partition_only(
    outbox: io.Outbox, build: Build
) -> None:
    built = build("metrics")
    metrics: Metrics = built.parts["metrics"]
    partitions = built.context.settings.partitions
    key = "control|sms_with_response|M81002"
    right = partition_for(key.encode(), partitions)
    wrong = (right + 1) % partitions
    async with metrics.aggregate.test_context() as agent:
        # Elsewhere than its practice's partition: its counts would live on two partitions.
        await feed(agent, "metric-facts", None, _record(_fact("sent")), partition=wrong)
        # One fact of the record is not one: none of the record is counted.
        broken = _record(_fact("sent"), b'{"kind": "sent"}')
        await feed(agent, "metric-facts", None, broken, partition=right)
        await feed(
            agent, "metric-facts", None, _record(_fact("sent"), _fact("sent")), partition=right
        )

        def sent() -> int:
            raw = metrics.stats_table.get(key)
            if raw is None:
                return 0
            stats = ArmStats.from_json(raw["stats"], metrics.settings.metric_horizons)
            return stats.snapshot(datetime.now(UTC).timestamp())[3600].sent

        assert await until(lambda: sent() == 2)
        dead = await until(lambda: len(outbox.on("dead-letter")) == 2 and outbox.on("dead-letter"))
    reasons = [json.loads(v)["reason"] for _, v in dead]
    assert reasons == [
        "not metric facts: in another practice's partition",
        "not metric facts: TypeError",
    ]


async def test_practices_snapshots_go_a_record_per_collector_and_are_taken_whole(
    outbox: io.Outbox, build: Build, monkeypatch: Any
) -> None:
    built = build("metrics")
    metrics: Metrics = built.parts["metrics"]
    practices = [f"M8{n:04d}" for n in range(30)]
    async with metrics.aggregate.test_context() as agent:
        for ods in practices:
            key = f"control|sms_with_response|{ods}".encode()
            await feed(agent, "metric-facts", key, _fact("sent", ods=ods))
        await until(lambda: len(metrics.stats_table) == len(practices))
    monkeypatch.setattr(built.context, "owned_partitions", lambda topic: {0})
    await metrics.snapshot_practices()
    records = outbox.on("practice-stats")
    assert sorted(k for k, _ in records) == [b"all", b"sms_with_response"]  # 2, not 60
    assert all(len(json.loads(v)["snapshots"]) == len(practices) for _, v in records)

    good = json.loads(records[0][1])["snapshots"][0]
    broken = {"snapshots": [good, {**good, "days": []}]}
    async with metrics.collect.test_context() as agent:
        await feed(agent, "practice-stats", b"sms_with_response", json.dumps(broken).encode())
        dead = await until(lambda: outbox.on("dead-letter"))
        assert len(metrics.practice_table) == 0  # not even its good snapshot
        for collector, value in records:
            await feed(agent, "practice-stats", collector, value)
        await until(lambda: len(metrics.practice_table) == 2 * len(practices))
    assert json.loads(dead[0][1])["reason"] == "not practice snapshots: TypeError"


def test_snapshots_are_cut_into_records_by_size() -> None:
    values = [b"a" * 40, b"b" * 40, b"c" * 40, b"d" * 200, b"e" * 10]
    assert by_size(values, 100) == [values[:2], values[2:3], values[3:4], values[4:]]
    assert by_size([], 100) == []
