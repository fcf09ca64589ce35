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
from typing import TYPE_CHECKING, Any

from faust.types import TP

from appfirst import telemetry
from appfirst.providers.callbacks import fallback_reference
from appfirst.rules import fallback as rules
from appfirst.rules.contact import sms_fragments
from appfirst.rules.schedule import DeadlineIndex, InputProgress, safe_until
from appfirst.streams.app import each_row
from appfirst.streams.io import log
from appfirst.topics.catalogue import SEND_OUTCOMES
from appfirst.topics.models import DeliveryReceipt, Dispatch, Fallback, FallbackReason, ReadReceipt

if TYPE_CHECKING:
    from appfirst.streams.context import Context
    from appfirst.streams.retention import Retained

# What can postpone or cancel a due fallback. Not send-outcomes: an acceptance only brings
# the deadline forward from the backstop of a send never heard of.
INPUTS = ("dispatches", "delivery-receipts", "read-receipts")  # what can move or cancel
REEMIT_AFTER_SECONDS = 30.0


def _end_of(raw: bytes) -> tuple[int, float | None]:
    state = rules.TrackState.decode(raw)
    return state.partition, state.ends_at


def _due_ts(state: rules.TrackState) -> float | None:
    owed = rules.owed(state)
    return owed[1].timestamp() if owed else None


class Tracker:
    """The durable table of NHS App deadlines (agent ``track``), and the sweep that emits
    the fallbacks due in the partitions this worker owns (timer ``sweep``)."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.settings = settings = context.settings
        self.clock = context.clock
        self.io = context.io
        self.topics = topics = context.topics
        # Values are TrackState.encode() bytes (compact JSON). A row owed a fallback is
        # pending work; one owed nothing ends APPFIRST_KEEP_SETTLED_SECONDS later
        # (streams/retention.py).
        self.deadline_table: Any = context.table("deadlines", raw_values=True)
        self.deadline_rows: Retained = context.retention.retain(
            "deadlines", self.deadline_table, "dispatches", _end_of
        )
        self.replay = settings.clock == "replay"
        # With live sends the deadline starts when the NHS App accepts the message
        # (send-outcomes), or at the latest this long after dispatch.
        self.send_wait = (
            settings.nhs_app_outcome_wait_seconds if settings.providers != "off" else None
        )

        self.index = DeadlineIndex()
        # Progress per input topic-partition: last offset processed and latest event time
        # seen.
        self._offsets: dict[tuple[str, int], int] = {}
        self._watermarks: dict[tuple[str, int], float] = {}
        # Fallbacks this process has emitted and not yet seen come back: re-emitted after a
        # while in case the send was lost (the dispatcher's ledger absorbs any duplicate).
        self._emitted: dict[str, tuple[int, float]] = {}
        # Partitions whose deadlines have been indexed from the recovered table, and those
        # revoked since the last indexing began.
        self._indexed: set[int] = set()
        self._revoked: set[int] = set()

        self.track: Any = context.agent(topics.tracker_source)(self._track)
        context.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        context.app.timer(interval=settings.sweep_interval_seconds)(self.sweep)

    def _state(self, message_id: str, partition: int) -> rules.TrackState:
        raw = self.deadline_table.get(message_id)
        return rules.TrackState.decode(raw) if raw else rules.TrackState(message_id, partition)

    async def _apply(self, event: Any) -> tuple[rules.TrackState, rules.TrackState, float] | None:
        """The message's state before and after this event, and the event's time."""
        io = self.io
        topic = io.short_topic(event.message.topic)
        partition = event.message.partition
        if topic == "dispatches":
            dispatch = await io.decode(event, Dispatch, "tracker")
            if dispatch is None or dispatch.channel != "nhs_app":
                return None
            state = self._state(dispatch.message_id, partition)
            limit = self.context.deadlines.for_message(dispatch.origin, dispatch.message_type)
            new = rules.on_dispatch(state, dispatch, limit, send_wait_seconds=self.send_wait)
            return state, new, dispatch.dispatched_at.timestamp()
        if topic == SEND_OUTCOMES:
            accepted_at = await self._accepted_at(event)
            if accepted_at is None:
                return None  # not an NHS App send, or malformed (dead-lettered)
            message_id = event.message.key.decode()
            state = self._state(message_id, partition)
            return state, rules.on_accepted(state, accepted_at), accepted_at.timestamp()
        if topic == "delivery-receipts":
            receipt = await io.decode(event, DeliveryReceipt, "tracker")
            if receipt is None or receipt.channel != "nhs_app" or receipt.leg != "primary":
                return None
            state = self._state(receipt.message_id, partition)
            return state, rules.on_delivery(state, receipt), receipt.occurred_at.timestamp()
        if topic == "read-receipts":
            read = await io.decode(event, ReadReceipt, "tracker")
            if read is None:
                return None
            state = self._state(read.message_id, partition)
            return state, rules.on_read(state, read.read_at), read.read_at.timestamp()
        fb = await io.decode(event, Fallback, "tracker")
        if fb is None:
            return None
        self._emitted.pop(fb.message_id, None)
        state = self._state(fb.message_id, partition)
        return state, rules.on_fallback_emitted(state, fb.reason), fb.emitted_at.timestamp()

    async def _track(self, stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            topic = self.io.short_topic(message.topic)
            key = (topic, message.partition)
            self._offsets[key] = message.offset
            applied = await self._apply(event)
            self.context.fault_point("track")  # tests: an unexpected error mid-event (crash-only)
            if applied is not None:
                old, new, at = applied
                new = rules.with_end(
                    new, self.clock.now().timestamp(), self.settings.keep_settled_seconds
                )
                if topic in INPUTS:
                    self._watermarks[key] = max(self._watermarks.get(key, -math.inf), at)
                mid = sys.intern(new.message_id)  # the one copy the tables and indexes share
                if new != old or self.deadline_table.get(mid) is None:
                    self.deadline_table[mid] = new.encode()
                    self.deadline_rows.mark(mid, new.partition, new.ends_at)
                self.index.update(new.partition, mid, _due_ts(new))
            if self.replay and self._owns(message.partition):
                # Event time, and only as far as every input has been read: the same
                # fallbacks whatever order the topics happen to be interleaved in.
                limit = safe_until(
                    self._progress(message.partition), now=0, lateness=0, replay=True
                )
                await self._sweep_partition(message.partition, limit)

    async def _accepted_at(self, event: Any) -> datetime | None:
        """When the NHS App accepted the message, or None (another channel, or malformed)."""
        outcome = await self.io.decode_outcome(event, "tracker")
        return outcome.at if outcome is not None and outcome.channel == "nhs_app" else None

    def _owned_partitions(self) -> set[int]:
        return self.context.owned_partitions("dispatches")

    def _owns(self, partition: int) -> bool:
        return partition in self._indexed

    def _progress(self, partition: int) -> list[InputProgress]:
        app = self.context.app
        result = []
        for topic in INPUTS:
            tp = TP(self.settings.topic(topic), partition)
            highwater = app.consumer.highwater(tp)
            # Where reading resumes: past what this process handled, or the group's
            # committed offset for an input that has had nothing new since this worker took
            # it over.
            committed = getattr(app.consumer, "_committed_offset", {}).get(tp) or 0
            position = max(self._offsets.get((topic, partition), -1) + 1, committed)
            caught_up = highwater is not None and position >= highwater
            result.append(InputProgress(caught_up, self._watermarks.get((topic, partition))))
        return result

    async def _rebuild(self, partitions: set[int]) -> None:
        """Index the owed deadlines of newly owned partitions from the recovered table, a
        row at a time and yielding now and then (``each_row``): the table holds every
        settled row of its keep window too, millions on a national worker. Rows the agent
        writes meanwhile index themselves; a row read here is read as it is now, so the two
        agree."""
        async for message_id, raw in each_row(self.deadline_table):
            state = rules.TrackState.decode(raw)
            if state.partition in partitions:
                # The table's copy of a recovered key, shared with the index from here on.
                self.index.update(state.partition, sys.intern(message_id), _due_ts(state))

    def _forget(self, partitions: set[int]) -> None:
        """Drop what this process knew of partitions it no longer owns: if they come back,
        the table is recovered again and read positions restart from the committed
        offsets."""
        for partition in partitions:
            self.index.drop(partition)
            self._indexed.discard(partition)
            for topic in INPUTS:
                self._offsets.pop((topic, partition), None)
                self._watermarks.pop((topic, partition), None)
        for message_id, (partition, _) in list(self._emitted.items()):
            if partition in partitions:
                del self._emitted[message_id]

    async def _on_revoked(self, app: Any, revoked: set[TP], **kwargs: Any) -> None:
        name = self.settings.topic("dispatches")
        partitions = {tp.partition for tp in revoked if tp.topic == name}
        self._forget(partitions)
        self._revoked.update(partitions)

    async def _sync_ownership(self) -> set[int]:
        """Index newly owned partitions; the partitions owned and indexed now."""
        owned = self._owned_partitions()
        self._forget(self._indexed - owned)
        new = owned - self._indexed
        if new:
            self._revoked.clear()
            await self._rebuild(new)
            # One revoked while it was indexed (and perhaps assigned again since, its table
            # recovered afresh) is indexed again next time, from nothing.
            done = (new - self._revoked) & self._owned_partitions()
            for partition in new - done:
                self.index.drop(partition)
            for partition in done:
                self.index.own(partition)
            self._indexed.update(done)
        return self._indexed & self._owned_partitions()

    async def sweep(self) -> None:
        if not self.context.tables_ready():
            return  # the table may be half-recovered: sweeping now could fire early or twice
        owned = await self._sync_ownership()
        if not self.context.tables_ready():
            return  # a rebalance began while partitions were indexed: next time
        now = self.clock.now().timestamp()
        for message_id, (partition, sent_at) in list(self._emitted.items()):
            if time.monotonic() - sent_at > REEMIT_AFTER_SECONDS and partition in owned:
                del self._emitted[message_id]  # never came back: let the sweep look at it again
                raw = self.deadline_table.get(message_id)
                if raw:
                    self.index.update(partition, message_id, _due_ts(rules.TrackState.decode(raw)))
        if not self.replay:
            for partition in owned:
                progress = self._progress(partition)
                limit = safe_until(
                    progress,
                    now=now,
                    lateness=self.settings.allowed_lateness_seconds,
                    replay=False,
                )
                await self._sweep_partition(partition, limit, now)
        else:
            for partition in owned:
                limit = safe_until(self._progress(partition), now=0, lateness=0, replay=True)
                await self._sweep_partition(partition, limit)
        telemetry.pending_deadlines.set(self.index.pending())

    async def _sweep_partition(
        self, partition: int, until: float, now: float | None = None
    ) -> None:
        """Emit every fallback of ``partition`` due at or before ``until``."""
        for message_id, _ in self.index.pop_due(partition, until):
            if message_id in self._emitted:
                continue
            raw = self.deadline_table.get(message_id)
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
            await self.io.send(self.topics.fallbacks, message_id.encode(), self.io.encode(fallback))
            self._emitted[message_id] = (partition, time.monotonic())
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
