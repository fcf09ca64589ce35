"""Metrics: pilot statistics per arm and message type onto ``pilot-metrics``.

``join_facts`` sees every event of a message (keyed by message_id) and turns it into facts
(sent, read, fallback, responded, each once); facts are re-keyed by arm and message type
onto an internal topic where ``aggregate`` keeps ``ArmStats``. A timer publishes the
matured counts of the keys this worker owns, when they change.
"""

from __future__ import annotations

import json
from typing import Any, cast

from appfirst.rules.pilot import ArmStats, Fact, FactKind, epoch, message_facts
from appfirst.streams.app import app, clock, settings, table
from appfirst.streams.io import decode, encode, short_topic
from appfirst.streams.topics import metric_facts, metrics_source, pilot_metrics
from appfirst.topics.models import Arm, Dispatch, Fallback, PilotMetric, ReadReceipt, Response

# message_id -> {"d": [arm, type, dispatched_at] or None, "read"/"fallback"/"responded": t}
message_table = table("metric-messages")
stats_table = table("arm-stats")
_published: dict[str, tuple[int, int, int, int]] = {}


async def _emit(fact: Fact) -> None:
    payload = json.dumps(vars(fact)).encode()
    for key in fact.aggregate_keys():
        await metric_facts.send(key=key.encode(), value=payload)


async def _observe(event: Any) -> tuple[str, FactKind, float, tuple[str, str] | None] | None:
    """(message_id, kind, when, (arm, message_type) for a dispatch) or None to skip."""
    topic = short_topic(event.message.topic)
    if topic == "dispatches":
        d = await decode(event, Dispatch, "metrics")
        # The pilot counts messages that were sent, by practices in an arm.
        if d is None or d.arm is None or d.channel == "none":
            return None
        return d.message_id, "sent", epoch(d.dispatched_at), (d.arm, d.message_type)
    if topic == "read-receipts":
        r = await decode(event, ReadReceipt, "metrics")
        return None if r is None else (r.message_id, "read", epoch(r.read_at), None)
    if topic == "fallbacks":
        f = await decode(event, Fallback, "metrics")
        return None if f is None else (f.message_id, "fallback", epoch(f.emitted_at), None)
    resp = await decode(event, Response, "metrics")
    return None if resp is None else (resp.message_id, "responded", epoch(resp.responded_at), None)


@app.agent(metrics_source)
async def join_facts(stream: Any) -> None:
    async for event in stream.events():
        seen = await _observe(event)
        if seen is None:
            continue
        message_id, kind, at, sent_as = seen
        state = dict(message_table.get(message_id) or {})
        facts = message_facts(state, kind, at, sent_as)
        for fact in facts:
            await _emit(fact)
        if facts or kind != "sent":
            message_table[message_id] = state


@app.agent(metric_facts)
async def aggregate(stream: Any) -> None:
    async for event in stream.events():
        key = event.message.key.decode()
        fact = Fact(**json.loads(event.message.value))
        raw = stats_table.get(key)
        stats = (
            ArmStats.from_json(raw["stats"], settings.metric_horizons)
            if raw
            else ArmStats.new(settings.metric_horizons)
        )
        stats.add(fact)
        stats.fold(clock.now().timestamp())
        stats_table[key] = {"partition": event.message.partition, "stats": stats.to_json()}


@app.timer(interval=settings.metrics_publish_seconds)  # type: ignore[untyped-decorator]
async def publish() -> None:
    if app.rebalancing:
        return
    name = settings.topic("metric-facts")
    owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == name}
    now = clock.now()
    for key, raw in list(stats_table.items()):
        if raw["partition"] not in owned:
            continue
        arm, message_type = key.split("|", 1)
        stats = ArmStats.from_json(raw["stats"], settings.metric_horizons)
        for horizon, counts in stats.snapshot(now.timestamp()).items():
            metric_key = f"arm_rate|{arm}|{message_type}|{horizon}"
            current = (counts.sent, counts.responded, counts.read, counts.fallbacks)
            if _published.get(metric_key) == current:
                continue
            metric = PilotMetric(
                kind="arm_rate",
                key=metric_key,
                arm=cast(Arm, arm),
                message_type=message_type,
                horizon_seconds=horizon,
                sent=counts.sent,
                responded=counts.responded,
                response_rate=counts.response_rate,
                read=counts.read,
                fallbacks=counts.fallbacks,
                updated_at=now,
            )
            await pilot_metrics.send(key=metric_key.encode(), value=encode(metric))
            _published[metric_key] = current
