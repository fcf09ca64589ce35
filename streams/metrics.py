"""Metrics: pilot statistics per arm and message type onto ``pilot-metrics``.

``join_facts`` sees every event of a message (keyed by message_id) and turns it into facts
(sent, read, fallback, responded, each once); facts are re-keyed by arm and message type
onto an internal topic where ``aggregate`` keeps ``ArmStats``. A timer publishes the
matured counts of the keys this worker owns, when they change.
"""

from __future__ import annotations

import json
from typing import Any

from appfirst.rules.pilot import ArmStats, Fact, epoch
from appfirst.streams.app import app, clock, settings, table
from appfirst.streams.io import decode, encode, short_topic
from appfirst.streams.topics import metric_facts, metrics_source, pilot_metrics
from appfirst.topics.models import Dispatch, Fallback, PilotMetric, ReadReceipt, Response

# message_id -> {"d": [arm, type, dispatched_at] or None, "read"/"fallback"/"responded": t}
message_table = table("metric-messages")
stats_table = table("arm-stats")
_published: dict[str, tuple[int, int, int, int]] = {}


async def _emit(fact: Fact) -> None:
    payload = json.dumps(vars(fact)).encode()
    for key in fact.keys():
        await metric_facts.send(key=key.encode(), value=payload)


@app.agent(metrics_source)
async def join_facts(stream: Any) -> None:
    async for event in stream.events():
        topic = short_topic(event.message.topic)
        if topic == "dispatches":
            d = await decode(event, Dispatch, "metrics")
            # The pilot counts messages that were sent, by practices in an arm.
            if d is None or d.arm is None or d.channel == "none":
                continue
            mid, kind, at = d.message_id, "sent", epoch(d.dispatched_at)
        elif topic == "read-receipts":
            r = await decode(event, ReadReceipt, "metrics")
            if r is None:
                continue
            mid, kind, at = r.message_id, "read", epoch(r.read_at)
        elif topic == "fallbacks":
            f = await decode(event, Fallback, "metrics")
            if f is None:
                continue
            mid, kind, at = f.message_id, "fallback", epoch(f.emitted_at)
        else:
            resp = await decode(event, Response, "metrics")
            if resp is None:
                continue
            mid, kind, at = resp.message_id, "responded", epoch(resp.responded_at)
        state = dict(message_table.get(mid) or {})
        if kind == "sent":
            if state.get("d") is not None:
                continue  # a re-sent dispatch: counted once
            state["d"] = [d.arm, d.message_type, at]
            await _emit(Fact("sent", d.arm or "", d.message_type, at))
            # Facts that arrived before their dispatch count now.
            for early in ("read", "fallback", "responded"):
                if early in state:
                    await _emit(Fact(early, d.arm or "", d.message_type, at,  # type: ignore[arg-type]
                                     state[early] - at))
        else:
            if kind in state:
                continue  # the first read, fallback or response is the one that counts
            state[kind] = at
            if state.get("d") is not None:
                arm, message_type, sent_at = state["d"]
                await _emit(Fact(kind, arm, message_type, sent_at, at - sent_at))  # type: ignore[arg-type]
        message_table[mid] = state


@app.agent(metric_facts)
async def aggregate(stream: Any) -> None:
    async for event in stream.events():
        key = event.message.key.decode()
        fact = Fact(**json.loads(event.message.value))
        raw = stats_table.get(key)
        stats = (ArmStats.from_json(raw["stats"], settings.metric_horizons) if raw
                 else ArmStats.new(settings.metric_horizons))
        stats.add(fact)
        stats.fold(clock.now().timestamp())
        stats_table[key] = {"partition": event.message.partition, "stats": stats.to_json()}


@app.timer(interval=settings.metrics_publish_seconds)
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
                arm=arm,  # type: ignore[arg-type]
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
