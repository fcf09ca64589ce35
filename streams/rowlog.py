"""The per-message tables' changelogs, a batch of rows a record.

``message-rows``, ``routed`` and ``sends`` (``RowsTable``) wrote a changelog record per
row written: with the message row written once per event, that was one record per event
for ``message-rows`` alone, and as many again for the two ledgers. Here the rows a step of
the worker changed in a partition go out together as one record (``codecs/rowbatch.py``):
``BATCH_WAIT_SECONDS`` later, and always at the start of every flush of the producer
(``streams/producer.py``), which Faust makes before it commits offsets and ``durable()``
before anything is acted on. So a row is on its way to the broker before any offset past
its event can be committed, as when each row was its own record; a crash before the flush
loses the rows and the offsets together, and the events are read again.

Recovery reads a partition's records in order and keeps each row's last value (a deleted
row has a deletion in its batch), as it kept each key's last record before. Records of an
earlier release, a row each under the message id, are read the same way.

**Bounded by pending work.** A batch stays needed while it holds any row's last value, and
Kafka compacts by key, so nothing would leave the changelog on its own. Once a partition's
batches hold more than ``2 x rows + APPFIRST_CHANGELOG_SLACK_ROWS`` rows (``RowLog.due``),
the worker writes every row of the partition again, as it is now, into new batches, then
tombstones every batch written before it began; compaction removes them. The copies go
through the same pending rows as every write, so a row written meanwhile is never
overtaken by an older copy, and each chunk of them is acknowledged by the broker before the
next is read and before any tombstone goes. The tombstones go in one step, in log order
(batches are numbered under a writer name that changes at every rebalance and every copy,
so a writer's batches are one stretch of the log), so that a crash part-way, or a cleaner
that has read only part of them, never leaves a row's older value standing with its later
one gone; a row an earlier release wrote as a record of its own, deleted since, has that
record tombstoned first. A rebalance, a recovery or a stop stops the copy before its
tombstones (the partition's owner copies again when it is due).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from appfirst.codecs import rowbatch

log = logging.getLogger("appfirst.streams")

# How long a row written outside any flush waits for others to share its record (an agent
# that writes a row an event, as the dispatcher with providers off, would otherwise send a
# record each turn of the loop). Any flush sends it at once.
BATCH_WAIT_SECONDS = 0.01
EXIT_CRASH_ONLY = 70  # as an agent that fails (streams/app.crash_only)
# Given to these changelogs when they are created: Kafka's cleaner works on closed segments
# only, and by default a segment stays open a week (or to 1 GiB), so the batches a copy
# tombstones would stay, and be read by every recovery, for days.
CHANGELOG_CONFIGS = {"segment.ms": str(3600 * 1000)}


@dataclass
class Run:
    """One writer's batches in a partition not yet tombstoned: numbers ``lo`` to ``hi``,
    and the rows in them. A writer is one table of one process between two rebalances or
    copies (``BatchedChangelog.new_writer``), so its batches are one stretch of the log."""

    lo: int
    hi: int
    rows: int


@dataclass
class PartitionLog:
    """What one partition's changelog holds, as recovery would read it: each writer's run
    of batches, in the order the writers first appear, which is log order (a writer's
    batches are one stretch of it); the rows in them; and the keys of rows an earlier
    release wrote a record each."""

    runs: dict[str, Run] = field(default_factory=dict)
    rows: int = 0
    singles: set[str] = field(default_factory=set)


class RowLog:
    """Every partition's ``PartitionLog``, and when one is due to be written again. Pure:
    the table tells it what it wrote and what recovery read. Its memory is a run per
    writer since the partition's last copy, not an entry per batch: the send ledger, whose
    rows are flushed one or two at a time, would otherwise hold an entry per row."""

    def __init__(self, slack: int) -> None:
        self.slack = slack
        self.partitions: dict[int, PartitionLog] = {}

    def _of(self, partition: int) -> PartitionLog:
        found = self.partitions.get(partition)
        if found is None:
            found = self.partitions[partition] = PartitionLog()
        return found

    def wrote(self, partition: int, writer: str, seq: int, rows: int) -> None:
        """A batch written, or read by recovery. A batch at or below its writer's last is
        one read again (a partition kept through a rebalance is read from where its last
        recovery stopped): not counted twice."""
        plog = self._of(partition)
        run = plog.runs.get(writer)
        if run is None:
            run = plog.runs[writer] = Run(seq, seq, 0)
        elif seq > run.hi:
            run.hi = seq
        else:
            return
        run.rows += rows
        plog.rows += rows

    def dropped(self, partition: int, writer: str, seq: int) -> None:
        """A batch tombstoned, read by recovery: its writer's batches up to it went with it
        (tombstones go oldest first, a writer's run whole)."""
        plog = self._of(partition)
        run = plog.runs.get(writer)
        if run is None:
            return
        run.lo = max(run.lo, seq + 1)
        if run.lo > run.hi:
            plog.rows -= run.rows
            del plog.runs[writer]

    def wrote_single(self, partition: int, key: str, deleted: bool) -> None:
        """A record of an earlier release: a row under its own key."""
        singles = self._of(partition).singles
        if deleted:
            singles.discard(key)
        else:
            singles.add(key)

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions no longer owned: their next owner reads them afresh."""
        for partition in partitions:
            self.partitions.pop(partition, None)

    def due(self, partition: int, live: int) -> bool:
        """Whether the partition's batches hold enough dead rows to be written again."""
        plog = self.partitions.get(partition)
        return plog is not None and plog.rows > 2 * live + self.slack

    def mark(self, partition: int) -> list[str]:
        """The partition's writers so far: a copy begun now, by a new writer, makes every
        batch of theirs unneeded once it is complete."""
        return list(self._of(partition).runs)

    def cut(self, partition: int, mark: list[str]) -> list[tuple[str, int]]:
        """Every batch of the writers in ``mark``, oldest first, forgotten as tombstoned."""
        plog = self._of(partition)
        gone: list[tuple[str, int]] = []
        for writer in mark:
            run = plog.runs.pop(writer, None)
            if run is None:
                continue
            gone += [(writer, seq) for seq in range(run.lo, run.hi + 1)]
            plog.rows -= run.rows
        return gone


class BatchedChangelog:
    """What ``RowsTable`` (``streams/app.py``) does with its changelog: a mixin over Faust's
    ``Table``, whose store keeps its rows by partition (``streams/disk.DiskStore``, its
    ``data`` a ``DiskRows``)."""

    # Given by Faust's Table.
    app: Any
    data: Any
    changelog_topic: Any
    partition_for_key: Callable[[Any], int | None]
    _sensor_on_set: Callable[..., None]
    _sensor_on_del: Callable[..., None]
    _to_key: Callable[[Any], Any]
    _on_changelog_sent: Callable[[Any], None]

    def _init_batches(self) -> None:
        self.pending: dict[int, dict[str, bytes | None]] = {}
        self.row_log = RowLog(self.app.settings.changelog_slack_rows)
        self.new_writer()
        self._scheduled: asyncio.TimerHandle | None = None
        self.rebalances = 0
        self.app.before_flush.append(self.send_pending)

    def new_writer(self) -> None:
        """Number the batches from here on under a new name: at every rebalance and every
        copy, so that a writer's batches are one stretch of each partition's log, and the
        order writers first appear in is the order to tombstone them in."""
        self.writer = rowbatch.new_writer()
        self.next_seq: dict[int, int] = {}  # this writer's next batch number, by partition

    # --- writing ---------------------------------------------------------------------------

    def on_key_set(self, key: Any, value: Any) -> None:
        self._pend(key, value)
        self._sensor_on_set(self, key, value)

    def on_key_del(self, key: Any) -> None:
        self._pend(key, None)
        self._sensor_on_del(self, key)

    def _pend(self, key: str, value: bytes | None) -> None:
        partition = self.partition_for_key(key)
        if partition is None:  # never: these tables take the partition of the event
            raise RuntimeError("a row's changelog partition is unknown")
        self.pending.setdefault(partition, {})[key] = value
        if self._scheduled is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.send_pending()
                return
            self._scheduled = loop.call_later(BATCH_WAIT_SECONDS, self.send_pending)

    def send_pending(self) -> None:
        """Every row written since the last call, handed to the producer's buffer: a record
        per partition (per ``rowbatch.RECORD_BYTES``). Synchronous, so a flush that calls it
        first waits for them. A row that cannot be handed on is state the changelog would
        lack while its event's offset is committed: the worker exits crash-only instead."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        pending, self.pending = self.pending, {}
        try:
            for partition, rows in pending.items():
                for value, count in rowbatch.encode(rows.items()):
                    seq = self.next_seq.get(partition, 0)
                    self.next_seq[partition] = seq + 1
                    self._send(partition, rowbatch.batch_key(partition, self.writer, seq), value)
                    self.row_log.wrote(partition, self.writer, seq, count)
        except Exception:
            log.critical("rows not handed to the producer: exiting", exc_info=True)
            os._exit(EXIT_CRASH_ONLY)

    def _send(self, partition: int, key: str, value: bytes | None) -> None:
        self.changelog_topic.send_soon(
            key=key,
            value=value,
            partition=partition,
            key_serializer="json",
            value_serializer="raw",
            callback=self._on_changelog_sent,
            eager_partitioning=True,
        )

    # --- recovery --------------------------------------------------------------------------

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        rows = self.data.data
        for event in batch:
            key = self._to_key(event.key)
            partition = event.message.partition
            value: bytes | None = event.message.value
            if not rowbatch.is_batch_key(key):
                rows.apply_row(partition, key, value)  # a row of an earlier release
                self.row_log.wrote_single(partition, key, value is None)
                continue
            try:
                writer, seq = rowbatch.parse_batch_key(key)
                decoded = None if value is None else rowbatch.decode(value)
            except ValueError as exc:
                # Only this table's workers write here: nothing else can be done with it.
                log.critical(
                    "changelog %s partition %s offset %s: %s: skipped",
                    event.message.topic,
                    partition,
                    event.message.offset,
                    exc,
                )
                continue
            if decoded is None:
                self.row_log.dropped(partition, writer, seq)
                continue
            for row_key, row in decoded:
                rows.apply_row(partition, row_key, row)
            self.row_log.wrote(partition, writer, seq, len(decoded))

    async def on_rebalance(
        self,
        assigned: set[Any],
        revoked: set[Any],
        newly_assigned: set[Any],
        generation_id: int = 0,
    ) -> None:
        self.rebalances += 1  # a copy under way stops before its tombstones
        self.new_writer()
        # The assignment is the new one by now: what is no longer owned is read afresh by
        # its next owner, and by this worker if it comes back.
        self.row_log.forget(set(self.row_log.partitions) - self.owned())
        await super().on_rebalance(  # type: ignore[misc]
            assigned, revoked, newly_assigned, generation_id
        )

    # --- keeping the changelog to what is pending --------------------------------------------

    def owned(self) -> set[int]:
        name = self.changelog_topic.get_topic_name()
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == name}

    async def compact(self, ready: Callable[[], bool]) -> int:
        """Write the rows of every owned partition whose batches are due again, make them
        durable, then tombstone the batches before; how many batches went. ``ready()``: no
        rebalance or recovery under way. It is checked, with ownership, in the step of each
        chunk of copies and in the step that sends the tombstones; a copy stopped by it
        tombstones nothing (its copies, current values, are written like any row)."""
        began = self.rebalances
        due = {p for p in self.owned() if self.row_log.due(p, self.data.data.live(p))}

        def still() -> bool:
            return (
                self.rebalances == began
                and ready()
                and not self.app.should_stop
                and due <= self.owned()
            )

        if not due or not still():
            return 0
        marks = {p: self.row_log.mark(p) for p in due}
        self.new_writer()  # in the same step: every batch from here on is after the marks
        producer = self.app.producer

        async def chunk_done() -> None:
            # The copies through to the broker before the next chunk: a partition of
            # hundreds of thousands of rows never sits in the producer's buffer whole, and
            # every copy is acknowledged before any tombstone is sent.
            self.send_pending()
            await producer.flush()

        copied = await self.data.data.copy_rows(due, self._copy, chunk_done, still)
        if copied is None:
            return 0
        await chunk_done()  # also what was held back when there was nothing to copy
        if not still():
            return 0
        gone = 0
        for partition in sorted(due):  # one step, no await: nothing can come between
            # Oldest first, so that a crash part-way leaves no later value tombstoned with
            # an earlier one standing. A row an earlier release wrote as a record of its
            # own, deleted since: that record is older than any batch, and goes first (its
            # deletion is in a batch tombstoned below; without this it would come back).
            singles = self.row_log.partitions[partition].singles
            for key in [k for k in singles if k not in self.data.data]:
                self._send(partition, key, None)
                singles.discard(key)
            for writer, seq in self.row_log.cut(partition, marks[partition]):
                self._send(partition, rowbatch.batch_key(partition, writer, seq), None)
                gone += 1
        log.info(
            "changelog %s partitions %s: %s rows written again, %s batches tombstoned",
            self.changelog_topic.get_topic_name(),
            sorted(due),
            copied,
            gone,
        )
        return gone

    def _copy(self, partition: int, key: str, value: bytes) -> None:
        rows = self.pending.setdefault(partition, {})
        if key not in rows:  # one pending is the row's latest already
            rows[key] = value
