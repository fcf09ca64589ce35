"""Tracker: the durable table of NHS App deadlines, and the sweep that emits fallbacks.

Every event of a message (dispatch, receipts, its own fallback) is keyed by message_id and
co-partitioned, so one agent sees them in partition order and keeps one state per message.
The sweep runs on every worker over the partitions it owns and emits what is due; the
fallback comes back through ``fallbacks`` to mark the state, so the record on the topic is
the single source of truth that a fallback happened.
"""

from __future__ import annotations

import time
from typing import Any

from appfirst import telemetry
from appfirst.providers.callbacks import fallback_reference
from appfirst.rules import fallback as rules
from appfirst.rules.contact import sms_fragments
from appfirst.streams.app import app, clock, deadlines, settings, table
from appfirst.streams.io import decode, encode, log, short_topic
from appfirst.streams.topics import fallbacks, tracker_source
from appfirst.topics.models import DeliveryReceipt, Dispatch, Fallback, ReadReceipt

deadline_table = table("deadlines")

# Fallbacks this process has emitted and not yet seen come back; re-emitted after a while
# in case the send was lost (the dispatcher's ledger absorbs any duplicate).
_emitted: dict[str, float] = {}
REEMIT_AFTER_SECONDS = 30.0


def _state(message_id: str, partition: int) -> rules.TrackState:
    raw = deadline_table.get(message_id)
    return rules.TrackState.from_json(raw) if raw else rules.TrackState(message_id, partition)


@app.agent(tracker_source)
async def track(stream: Any) -> None:
    async for event in stream.events():
        topic = short_topic(event.message.topic)
        partition = event.message.partition
        if topic == "dispatches":
            dispatch = await decode(event, Dispatch, "tracker")
            if dispatch is None or dispatch.channel != "nhs_app":
                continue
            state = _state(dispatch.message_id, partition)
            limit = deadlines.for_message(dispatch.origin, dispatch.message_type)
            new = rules.on_dispatch(state, dispatch, limit)
        elif topic == "delivery-receipts":
            receipt = await decode(event, DeliveryReceipt, "tracker")
            if receipt is None or receipt.channel != "nhs_app" or receipt.leg != "primary":
                continue
            state = _state(receipt.message_id, partition)
            new = rules.on_delivery(state, receipt)
        elif topic == "read-receipts":
            read = await decode(event, ReadReceipt, "tracker")
            if read is None:
                continue
            state = _state(read.message_id, partition)
            new = rules.on_read(state, read.read_at)
        else:
            fb = await decode(event, Fallback, "tracker")
            if fb is None:
                continue
            _emitted.pop(fb.message_id, None)
            state = _state(fb.message_id, partition)
            new = rules.on_fallback_emitted(state, fb.reason)
        if new != state or deadline_table.get(new.message_id) is None:
            deadline_table[new.message_id] = new.to_json()


def _owned_partitions() -> set[int]:
    name = settings.topic("dispatches")
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == name}


@app.timer(interval=settings.sweep_interval_seconds)  # type: ignore[untyped-decorator]
async def sweep() -> None:
    if app.rebalancing or getattr(app, "in_recovery", False):
        return  # the table may be half-recovered: sweeping now could fire early or twice
    owned = _owned_partitions()
    now = clock.now()
    pending = 0
    for message_id, raw in list(deadline_table.items()):
        state = rules.TrackState.from_json(raw)
        if state.partition not in owned:
            continue
        if rules.pending(state):
            pending += 1
        due = rules.due(state, now)
        if due is None:
            continue
        sent_at = _emitted.get(message_id)
        if sent_at is not None and time.monotonic() - sent_at < REEMIT_AFTER_SECONDS:
            continue
        reason, due_at = due
        await fallbacks.send(
            key=message_id.encode(), value=encode(_fallback(state, reason, due_at, now))
        )
        _emitted[message_id] = time.monotonic()
        telemetry.fallbacks.labels(reason).inc()
        telemetry.fallback_lateness.observe(max(0.0, (now - due_at).total_seconds()))
        log.info("fallback message_id=%s reason=%s", message_id, reason)
    telemetry.pending_deadlines.set(pending)


def _fallback(state: rules.TrackState, reason: Any, due_at: Any, now: Any) -> Fallback:
    d = Dispatch.model_validate(state.dispatch)
    return Fallback(
        message_id=state.message_id,
        reason=reason,
        due_at=due_at,
        emitted_at=now,
        fallback_id=fallback_reference(state.message_id),
        ods_code=d.ods_code,
        arm=d.arm,
        origin=d.origin,
        message_type=d.message_type,
        mobile=d.mobile,
        body=d.body,
        sms_fragments=sms_fragments(d.body) if d.body else None,
    )
