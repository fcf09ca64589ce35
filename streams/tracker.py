"""Tracker: the durable table of NHS App deadlines, and the sweep that emits fallbacks.

Every event of a message (dispatch, receipts, its own fallback) is keyed by message_id and
co-partitioned, so one agent sees them in partition order and keeps one state per message.
The sweep runs on every worker over the partitions it owns and emits what is due; the
fallback comes back through ``fallbacks`` to mark the state, so the record on the topic is
the single source of truth that a fallback happened.

Live mode sweeps on a timer against the wall clock. Replay mode (``APPFIRST_CLOCK=replay``)
sweeps after every event against event time, so a recorded day replays in seconds and
gives the same fallbacks, byte for byte.
"""

from __future__ import annotations

import math
import sys
import time
from datetime import UTC, datetime
from typing import Any

from faust.types import TP

from appfirst import telemetry
from appfirst.providers.callbacks import fallback_reference
from appfirst.rules import fallback as rules
from appfirst.rules.contact import sms_fragments
from appfirst.rules.schedule import DeadlineIndex, InputProgress, safe_until
from appfirst.streams.app import (
    agent,
    app,
    clock,
    deadlines,
    each_row,
    fault_point,
    owned_partitions,
    settings,
    table,
    tables_ready,
)
from appfirst.streams.io import (
    decode,
    decode_outcome,
    encode,
    log,
    send,
    short_topic,
)
from appfirst.streams.retention import retain
from appfirst.streams.topics import fallbacks, tracker_source
from appfirst.topics.catalogue import SEND_OUTCOMES
from appfirst.topics.models import DeliveryReceipt, Dispatch, Fallback, FallbackReason, ReadReceipt

# Values are TrackState.encode() bytes (compact JSON). A row owed a fallback is pending
# work; one owed nothing ends APPFIRST_KEEP_SETTLED_SECONDS later (streams/retention.py).
deadline_table = table("deadlines", raw_values=True)


def _end_of(raw: bytes) -> tuple[int, float | None]:
    state = rules.TrackState.decode(raw)
    return state.partition, state.ends_at


deadline_rows = retain("deadlines", deadline_table, "dispatches", _end_of)
REPLAY = settings.clock == "replay"
# With live sends the deadline starts when the NHS App accepts the message (send-outcomes),
# or at the latest this long after dispatch.
SEND_WAIT = settings.nhs_app_outcome_wait_seconds if settings.providers != "off" else None
# What can postpone or cancel a due fallback. Not send-outcomes: an acceptance only brings
# the deadline forward from the backstop of a send never heard of.
INPUTS = ("dispatches", "delivery-receipts", "read-receipts")  # what can move or cancel

index = DeadlineIndex()
# Progress per input topic-partition: last offset processed and latest event time seen.
_offsets: dict[tuple[str, int], int] = {}
_watermarks: dict[tuple[str, int], float] = {}
# Fallbacks this process has emitted and not yet seen come back: re-emitted after a while
# in case the send was lost (the dispatcher's ledger absorbs any duplicate).
_emitted: dict[str, tuple[int, float]] = {}
# Partitions whose deadlines have been indexed from the recovered table, and those revoked
# since the last indexing began.
_indexed: set[int] = set()
_revoked: set[int] = set()
REEMIT_AFTER_SECONDS = 30.0


def _state(message_id: str, partition: int) -> rules.TrackState:
    raw = deadline_table.get(message_id)
    return rules.TrackState.decode(raw) if raw else rules.TrackState(message_id, partition)


def _due_ts(state: rules.TrackState) -> float | None:
    owed = rules.owed(state)
    return owed[1].timestamp() if owed else None


async def _apply(event: Any) -> tuple[rules.TrackState, rules.TrackState, float] | None:
    """The message's state before and after this event, and the event's time."""
    topic = short_topic(event.message.topic)
    partition = event.message.partition
    if topic == "dispatches":
        dispatch = await decode(event, Dispatch, "tracker")
        if dispatch is None or dispatch.channel != "nhs_app":
            return None
        state = _state(dispatch.message_id, partition)
        limit = deadlines.for_message(dispatch.origin, dispatch.message_type)
        new = rules.on_dispatch(state, dispatch, limit, send_wait_seconds=SEND_WAIT)
        return state, new, dispatch.dispatched_at.timestamp()
    if topic == SEND_OUTCOMES:
        accepted_at = await _accepted_at(event)
        if accepted_at is None:
            return None  # not an NHS App send, or malformed (dead-lettered)
        message_id = event.message.key.decode()
        state = _state(message_id, partition)
        return state, rules.on_accepted(state, accepted_at), accepted_at.timestamp()
    if topic == "delivery-receipts":
        receipt = await decode(event, DeliveryReceipt, "tracker")
        if receipt is None or receipt.channel != "nhs_app" or receipt.leg != "primary":
            return None
        state = _state(receipt.message_id, partition)
        return state, rules.on_delivery(state, receipt), receipt.occurred_at.timestamp()
    if topic == "read-receipts":
        read = await decode(event, ReadReceipt, "tracker")
        if read is None:
            return None
        state = _state(read.message_id, partition)
        return state, rules.on_read(state, read.read_at), read.read_at.timestamp()
    fb = await decode(event, Fallback, "tracker")
    if fb is None:
        return None
    _emitted.pop(fb.message_id, None)
    state = _state(fb.message_id, partition)
    return state, rules.on_fallback_emitted(state, fb.reason), fb.emitted_at.timestamp()


@agent(tracker_source)
async def track(stream: Any) -> None:
    async for event in stream.events():
        message = event.message
        topic = short_topic(message.topic)
        key = (topic, message.partition)
        _offsets[key] = message.offset
        applied = await _apply(event)
        fault_point("track")  # tests: an unexpected error mid-event (crash-only)
        if applied is not None:
            old, new, at = applied
            new = rules.with_end(new, clock.now().timestamp(), settings.keep_settled_seconds)
            if topic in INPUTS:
                _watermarks[key] = max(_watermarks.get(key, -math.inf), at)
            mid = sys.intern(new.message_id)  # the one copy the tables and indexes share
            if new != old or deadline_table.get(mid) is None:
                deadline_table[mid] = new.encode()
                deadline_rows.mark(mid, new.partition, new.ends_at)
            index.update(new.partition, mid, _due_ts(new))
        if REPLAY and _owns(message.partition):
            # Event time, and only as far as every input has been read: the same fallbacks
            # whatever order the topics happen to be interleaved in.
            limit = safe_until(_progress(message.partition), now=0, lateness=0, replay=True)
            await _sweep_partition(message.partition, limit)


async def _accepted_at(event: Any) -> datetime | None:
    """When the NHS App accepted the message, or None (another channel, or malformed)."""
    outcome = await decode_outcome(event, "tracker")
    return outcome.at if outcome is not None and outcome.channel == "nhs_app" else None


def _owned_partitions() -> set[int]:
    return owned_partitions("dispatches")


def _owns(partition: int) -> bool:
    return partition in _indexed


def _progress(partition: int) -> list[InputProgress]:
    result = []
    for topic in INPUTS:
        tp = TP(settings.topic(topic), partition)
        highwater = app.consumer.highwater(tp)
        # Where reading resumes: past what this process handled, or the group's committed
        # offset for an input that has had nothing new since this worker took it over.
        committed = getattr(app.consumer, "_committed_offset", {}).get(tp) or 0
        position = max(_offsets.get((topic, partition), -1) + 1, committed)
        caught_up = highwater is not None and position >= highwater
        result.append(InputProgress(caught_up, _watermarks.get((topic, partition))))
    return result


async def _rebuild(partitions: set[int]) -> None:
    """Index the owed deadlines of newly owned partitions from the recovered table, a row
    at a time and yielding now and then (``each_row``): the table holds every settled row
    of its keep window too, millions on a national worker. Rows the agent writes meanwhile
    index themselves; a row read here is read as it is now, so the two agree."""
    async for message_id, raw in each_row(deadline_table):
        state = rules.TrackState.decode(raw)
        if state.partition in partitions:
            # The table's copy of a recovered key, shared with the index from here on.
            index.update(state.partition, sys.intern(message_id), _due_ts(state))


def _forget(partitions: set[int]) -> None:
    """Drop what this process knew of partitions it no longer owns: if they come back, the
    table is recovered again and read positions restart from the committed offsets."""
    for partition in partitions:
        index.drop(partition)
        _indexed.discard(partition)
        for topic in INPUTS:
            _offsets.pop((topic, partition), None)
            _watermarks.pop((topic, partition), None)
    for message_id, (partition, _) in list(_emitted.items()):
        if partition in partitions:
            del _emitted[message_id]


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _on_revoked(app: Any, revoked: set[TP], **kwargs: Any) -> None:
    name = settings.topic("dispatches")
    partitions = {tp.partition for tp in revoked if tp.topic == name}
    _forget(partitions)
    _revoked.update(partitions)


async def _sync_ownership() -> set[int]:
    """Index newly owned partitions; the partitions owned and indexed now."""
    owned = _owned_partitions()
    _forget(_indexed - owned)
    new = owned - _indexed
    if new:
        _revoked.clear()
        await _rebuild(new)
        # One revoked while it was indexed (and perhaps assigned again since, its table
        # recovered afresh) is indexed again next time, from nothing.
        done = (new - _revoked) & _owned_partitions()
        for partition in new - done:
            index.drop(partition)
        for partition in done:
            index.own(partition)
        _indexed.update(done)
    return _indexed & _owned_partitions()


@app.timer(interval=settings.sweep_interval_seconds)  # type: ignore[untyped-decorator]
async def sweep() -> None:
    if not tables_ready():
        return  # the table may be half-recovered: sweeping now could fire early or twice
    owned = await _sync_ownership()
    if not tables_ready():
        return  # a rebalance began while partitions were indexed: next time
    now = clock.now().timestamp()
    for message_id, (partition, sent_at) in list(_emitted.items()):
        if time.monotonic() - sent_at > REEMIT_AFTER_SECONDS and partition in owned:
            del _emitted[message_id]  # never came back: let the sweep look at it again
            raw = deadline_table.get(message_id)
            if raw:
                index.update(partition, message_id, _due_ts(rules.TrackState.decode(raw)))
    if not REPLAY:
        for partition in owned:
            progress = _progress(partition)
            limit = safe_until(
                progress, now=now, lateness=settings.allowed_lateness_seconds, replay=False
            )
            await _sweep_partition(partition, limit, now)
    else:
        for partition in owned:
            limit = safe_until(_progress(partition), now=0, lateness=0, replay=True)
            await _sweep_partition(partition, limit)
    telemetry.pending_deadlines.set(index.pending())


async def _sweep_partition(partition: int, until: float, now: float | None = None) -> None:
    """Emit every fallback of ``partition`` due at or before ``until``."""
    for message_id, _ in index.pop_due(partition, until):
        if message_id in _emitted:
            continue
        raw = deadline_table.get(message_id)
        if raw is None:
            continue
        state = rules.TrackState.decode(raw)
        owed = rules.owed(state)
        if owed is None:
            continue
        reason, due_at = owed
        # Replay stamps the ideal time, so that runs agree byte for byte.
        emitted_at = due_at if now is None else datetime.fromtimestamp(now, UTC)
        emitted_at = max(emitted_at, due_at)
        fallback = _fallback(state, reason, due_at, emitted_at)
        await send(fallbacks, message_id.encode(), encode(fallback))
        _emitted[message_id] = (partition, time.monotonic())
        telemetry.fallbacks.labels(reason).inc()
        telemetry.fallback_lateness.observe((emitted_at - due_at).total_seconds())
        log.info(
            "fallback message_id=%s reason=%s",
            message_id,
            reason,
            extra={"message_id": message_id, "reason": reason},
        )


def _fallback(
    state: rules.TrackState, reason: FallbackReason, due_at: datetime, emitted_at: datetime
) -> Fallback:
    d = state.dispatch or {}
    return Fallback(
        message_id=state.message_id,
        reason=reason,
        due_at=due_at,
        emitted_at=emitted_at,
        fallback_id=fallback_reference(state.message_id),
        ods_code=d.get("ods_code"),
        arm=d.get("arm"),
        origin=d.get("origin"),
        message_type=d.get("message_type"),
        mobile=d.get("mobile"),
        body=d.get("body"),
        sms_fragments=sms_fragments(d["body"]) if d.get("body") else None,
    )
