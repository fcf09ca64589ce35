"""Tracker: each NHS App message's deadline, and the sweep that emits its fallback.

The deadline is the tracker's part of the message's row in ``message-rows`` (``"t"``,
``streams/messages.py``): every event of a message (dispatch, its acceptance, receipts, its
own fallback) is keyed by message_id and co-partitioned, so the per-message agent sees them
in partition order, and the tracker takes from each what moves or cancels the deadline.
The sweep runs on every worker over the partitions it owns and emits what is due; the
fallback comes back through ``fallbacks`` to mark the row, so the record on the topic is
the single source of truth that a fallback happened.

The agent works a batch at a time and writes its rows at the batch's end, once what the
batch sent is durable. What the sweep knows of the inputs' progress (offsets read, event
times seen) moves only then: a sweep between a read receipt's arrival and its row's write
must see that receipt's input as not yet read, or it could send the fallback the receipt
cancels.

Live mode sweeps on a timer against the wall clock. Replay mode (``APPFIRST_CLOCK=replay``)
sweeps after every batch against event time, so a recorded day replays in seconds and
gives the same fallbacks, byte for byte, wherever its batches fall.
"""

from __future__ import annotations

import functools
import json
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
from appfirst.streams.disk_index import DiskDeadlineIndex
from appfirst.streams.io import log
from appfirst.topics.catalogue import SEND_OUTCOMES
from appfirst.topics.models import Fallback, FallbackReason

if TYPE_CHECKING:
    from appfirst.streams.app import JsonRows
    from appfirst.streams.context import Context
    from appfirst.streams.messages import Seen

# What can postpone or cancel a due fallback. Not send-outcomes: an acceptance only brings
# the deadline forward from the backstop of a send never heard of.
INPUTS = ("dispatches", "delivery-receipts", "read-receipts")  # what can move or cancel
REEMIT_AFTER_SECONDS = 30.0
PART = "t"  # the tracker's part of a message's row


def _due_ts(state: rules.TrackState) -> float | None:
    owed = rules.owed(state)
    return owed[1].timestamp() if owed else None


def _concerns(seen: Seen) -> bool:
    """Whether ``seen`` can move or settle an NHS App message's deadline: not responses,
    nor another channel's dispatch, acceptance or receipt, nor a fallback SMS's receipt."""
    value = seen.value
    if seen.topic in ("dispatches", SEND_OUTCOMES):
        return bool(value.channel == "nhs_app")
    if seen.topic == "delivery-receipts":
        return bool(value.channel == "nhs_app" and value.leg == "primary")
    return seen.topic in ("read-receipts", "fallbacks")


def _state(message_id: str, partition: int, part: dict[str, Any] | None) -> rules.TrackState:
    if not part:
        return rules.TrackState(message_id, partition)
    return rules.TrackState.from_part(message_id, partition, part)


class Tracker:
    """The tracker's part of the per-message agent, the index of owed deadlines, and the
    sweep that emits the fallbacks due in the partitions this worker owns (timer
    ``sweep``)."""

    def __init__(self, context: Context, rows: JsonRows) -> None:
        self.context = context
        self.settings = settings = context.settings
        self.clock = context.clock
        self.io = context.io
        self.topics = context.topics
        self.rows = rows  # message-rows: the deadline is the row's part "t"
        self.replay = settings.clock == "replay"
        # With live sends the deadline starts when the NHS App accepts the message
        # (send-outcomes), or at the latest this long after dispatch.
        self.send_wait = (
            settings.nhs_app_outcome_wait_seconds if settings.providers != "off" else None
        )

        # Progress per input topic-partition, as far as rows are written: last offset
        # processed and latest event time seen.
        self._offsets: dict[tuple[str, int], int] = {}
        self._watermarks: dict[tuple[str, int], float] = {}
        # The same for the batch under way, and the index entries and returned fallbacks
        # its rows will bring: taken in once the rows are written (``written``).
        self._batch_offsets: dict[tuple[str, int], int] = {}
        self._batch_marks: dict[tuple[str, int], float] = {}
        self._batch_due: dict[str, tuple[int, float | None]] = {}
        self._batch_returned: list[str] = []
        # Fallbacks this process has emitted and not yet seen come back: re-emitted after a
        # while in case the send was lost (the dispatcher's ledger absorbs any duplicate).
        self._emitted: dict[str, tuple[int, float]] = {}
        # Partitions whose deadlines have been indexed from the recovered table, and those
        # revoked since the last indexing began.
        self._indexed: set[int] = set()
        self._revoked: set[int] = set()

        context.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        context.app.timer(interval=settings.sweep_interval_seconds)(self.sweep)

    @functools.cached_property
    def index(self) -> DeadlineIndex | DiskDeadlineIndex:
        """Owed deadlines by partition: on disk with ``APPFIRST_ROW_STORE=disk``, opened as
        first used (a worker's app is built before it starts, and a test's may never
        start)."""
        if self.settings.row_store == "memory":
            return DeadlineIndex()
        return DiskDeadlineIndex(self.settings.data_dir, self.settings.row_memory_mb)

    def state(self, message_id: str) -> rules.TrackState | None:
        """The message's deadline as its row holds it, or None (no NHS App message)."""
        row = self.rows.get(message_id)
        part = row.get(PART) if row else None
        return _state(message_id, row["p"], part) if part else None

    # The per-message agent's side (streams/messages.py).

    def end(self, part: dict[str, Any]) -> float | None:
        """None while a fallback is owed (pending work), else ``APPFIRST_KEEP_SETTLED_SECONDS``
        from when it first owed nothing (``rules.fallback.with_end``)."""
        ends_at = part.get(rules.PART_NAMES["ends_at"])
        return None if ends_at is None else float(ends_at)

    def read(self, event: Any) -> None:
        """Every current event of the batch, whatever it holds or whether it decodes: the
        input has been read this far."""
        message = event.message
        self._batch_offsets[(self.io.short_topic(message.topic), message.partition)] = (
            message.offset
        )

    async def take(self, seen: Seen, part: dict[str, Any] | None) -> dict[str, Any] | None:
        """The message's new deadline part after ``seen``, or None if nothing changed (a
        message without one gets one from its first event that concerns it)."""
        self.context.fault_point("track")  # tests: an unexpected error mid-event (crash-only)
        if not _concerns(seen):
            return None  # most events of most messages: no state read or built
        partition = seen.event.message.partition
        old = _state(seen.message_id, partition, part)
        new, at = self._apply(seen, old)
        new = rules.with_end(new, self.clock.now().timestamp(), self.settings.keep_settled_seconds)
        if seen.topic in INPUTS:
            key = (seen.topic, partition)
            self._batch_marks[key] = max(self._batch_marks.get(key, -math.inf), at)
        if seen.topic == "fallbacks":
            self._batch_returned.append(seen.message_id)
        self._batch_due[seen.message_id] = (partition, _due_ts(new))
        return None if new == old and part else new.to_part()

    def _apply(self, seen: Seen, state: rules.TrackState) -> tuple[rules.TrackState, float]:
        """The message's state after ``seen`` (one that concerns it), and the event's time."""
        value = seen.value
        if seen.topic == "dispatches":
            limit = self.context.deadlines.for_message(value.origin, value.message_type)
            new = rules.on_dispatch(state, value, limit, send_wait_seconds=self.send_wait)
            return new, value.dispatched_at.timestamp()
        if seen.topic == SEND_OUTCOMES:
            return rules.on_accepted(state, value.at), value.at.timestamp()
        if seen.topic == "delivery-receipts":
            return rules.on_delivery(state, value), value.occurred_at.timestamp()
        if seen.topic == "read-receipts":
            return rules.on_read(state, value.read_at), value.read_at.timestamp()
        return rules.on_fallback_emitted(state, value.reason), value.emitted_at.timestamp()

    async def written(self) -> None:
        """The batch's rows are written: what it read, and the deadlines it moved, count
        from now on."""
        offsets, self._batch_offsets = self._batch_offsets, {}
        marks, self._batch_marks = self._batch_marks, {}
        due, self._batch_due = self._batch_due, {}
        returned, self._batch_returned = self._batch_returned, []
        self._offsets.update(offsets)
        for key, at in marks.items():
            self._watermarks[key] = max(self._watermarks.get(key, -math.inf), at)
        for message_id in returned:
            self._emitted.pop(message_id, None)
        for message_id, (partition, due_ts) in due.items():
            self.index.update(partition, sys.intern(message_id), due_ts)
        if self.replay:
            # Event time, and only as far as every input has been read: events read later
            # happened later, and nothing that happens after a fallback fell due changes it
            # (rules/fallback.owed), so batches falling anywhere give the same fallbacks.
            for partition in sorted({p for _, p in offsets}):
                if self._owns(partition):
                    limit = safe_until(self._progress(partition), now=0, lateness=0, replay=True)
                    await self._sweep_partition(partition, limit)

    def begin(self) -> None:
        """A batch begins: nothing is left of one that did not finish."""
        self._batch_offsets.clear()
        self._batch_marks.clear()
        self._batch_due.clear()
        self._batch_returned.clear()

    # The sweep's side.

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
        """Index the owed deadlines of newly owned partitions from the recovered rows, a
        row at a time and yielding now and then (``each_row``): the table holds every
        settled row of its keep window too, millions on a national worker. Rows the agent
        writes meanwhile index themselves; a row read here is read as it is now, so the two
        agree."""
        marker = f'"{PART}":{{'.encode()
        async for message_id, raw in each_row(self.rows.raw):
            if marker not in raw:
                continue  # no NHS App message: no deadline (a cheap test before decoding)
            row = json.loads(raw)
            part, partition = row.get(PART), row["p"]
            if part and partition in partitions:
                # The table's copy of a recovered key, shared with the index from here on.
                state = _state(message_id, partition, part)
                self.index.update(partition, sys.intern(message_id), _due_ts(state))

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
                state = self.state(message_id)
                if state is not None:
                    self.index.update(partition, message_id, _due_ts(state))
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
            if partition not in self._indexed:
                break  # revoked during a send below: its new owner sweeps it
            if message_id in self._emitted:
                continue
            state = self.state(message_id)
            owed = None if state is None else rules.owed(state)
            if state is None or owed is None:
                continue
            reason, due_at = owed
            if due_at.timestamp() > until:
                # Moved later by a batch written during a send below (a delivery receipt):
                # that batch indexed its new due time, and it is not due yet.
                continue
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
