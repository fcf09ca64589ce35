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
tombstones every batch written before it began, oldest first; compaction removes them. The
copies go through the same pending rows as every write, so a row written meanwhile is never
overtaken by an older copy. A batch is tombstoned only after every batch before it, so
recovery never reads a row's older value with its later one gone. The rows are read again
a chunk at a time, yielding to the loop; a rebalance stops the copy before its tombstones
(the partition's next owner copies again when it is due).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from appfirst.codecs import rowbatch

log = logging.getLogger("appfirst.streams")

# How long a row written outside any flush waits for others to share its record (an agent
# that writes a row an event, as the dispatcher with providers off, would otherwise send a
# record each turn of the loop). Any flush sends it at once.
BATCH_WAIT_SECONDS = 0.01


@dataclass
class PartitionLog:
    """What one partition's changelog holds, as recovery would read it."""

    batches: dict[str, int] = field(default_factory=dict)  # key -> rows, oldest first
    rows: int = 0  # in batches not tombstoned
    singles: int = 0  # records of an earlier release, a row each (left to compaction)


class RowLog:
    """Every partition's ``PartitionLog``, and when one is due to be written again. Pure:
    the table tells it what it wrote and what recovery read."""

    def __init__(self, slack: int) -> None:
        self.slack = slack
        self.partitions: dict[int, PartitionLog] = {}

    def _of(self, partition: int) -> PartitionLog:
        found = self.partitions.get(partition)
        if found is None:
            found = self.partitions[partition] = PartitionLog()
        return found

    def wrote(self, partition: int, batch: str, rows: int) -> None:
        """A batch written or read (read again by a second recovery: counted once)."""
        plog = self._of(partition)
        plog.rows += rows - plog.batches.get(batch, 0)
        plog.batches[batch] = rows

    def dropped(self, partition: int, batch: str) -> None:
        """A batch tombstoned."""
        plog = self._of(partition)
        plog.rows -= plog.batches.pop(batch, 0)

    def wrote_single(self, partition: int) -> None:
        self._of(partition).singles += 1

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions no longer owned: their next owner reads them afresh."""
        for partition in partitions:
            self.partitions.pop(partition, None)

    def due(self, partition: int, live: int) -> bool:
        """Whether the partition's batches hold enough dead rows to be written again."""
        plog = self.partitions.get(partition)
        return plog is not None and plog.rows > 2 * live + self.slack

    def batches(self, partition: int) -> list[str]:
        """The partition's batches now, oldest first."""
        plog = self.partitions.get(partition)
        return [] if plog is None else list(plog.batches)


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
        self._scheduled: asyncio.TimerHandle | None = None
        self.rebalances = 0
        self.app.before_flush.append(self.send_pending)

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
        first waits for them."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        pending, self.pending = self.pending, {}
        for partition, rows in pending.items():
            for value, count in rowbatch.encode(rows.items()):
                key = rowbatch.new_batch_key(partition)
                self._send(partition, key, value)
                self.row_log.wrote(partition, key, count)

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
        store = self.data.data
        for event in batch:
            key = self._to_key(event.key)
            partition = event.message.partition
            value: bytes | None = event.message.value
            if not rowbatch.is_batch_key(key):
                store.apply_row(partition, key, value)  # a row of an earlier release
                self.row_log.wrote_single(partition)
                continue
            if value is None:
                self.row_log.dropped(partition, key)
                continue
            try:
                rows = rowbatch.decode(value)
            except ValueError as exc:
                # Only this table's workers write here; nothing else can be done with it.
                log.error(
                    "changelog %s partition %s offset %s: %s: skipped",
                    event.message.topic,
                    partition,
                    event.message.offset,
                    exc,
                )
                continue
            for row_key, row in rows:
                store.apply_row(partition, row_key, row)
            self.row_log.wrote(partition, key, len(rows))

    async def on_rebalance(
        self,
        assigned: set[Any],
        revoked: set[Any],
        newly_assigned: set[Any],
        generation_id: int = 0,
    ) -> None:
        self.rebalances += 1  # a copy under way stops before its tombstones
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
        """Write again every owned partition whose batches are due, then tombstone the
        batches before; how many batches went. ``ready()``: no rebalance or recovery under
        way (checked in the same step as every copy and every tombstone)."""
        began = self.rebalances

        def still(partition: int) -> bool:
            return self.rebalances == began and ready() and partition in self.owned()

        gone = 0
        for partition in sorted(self.owned()):
            if not still(partition):
                break
            if not self.row_log.due(partition, self.data.data.live(partition)):
                continue
            older = self.row_log.batches(partition)
            copied = await self.data.data.copy_rows(
                partition, self._copy, self.send_pending, partial(still, partition)
            )
            if copied is None or not still(partition):
                break  # stopped by a rebalance: nothing tombstoned
            self.send_pending()  # the last copies first, then the tombstones, in one step
            for key in older:
                self._send(partition, key, None)
                self.row_log.dropped(partition, key)
            gone += len(older)
            log.info(
                "changelog %s partition %s: %s rows written again, %s batches tombstoned",
                self.changelog_topic.get_topic_name(),
                partition,
                copied,
                len(older),
            )
        return gone

    def _copy(self, partition: int, key: str, value: bytes) -> None:
        rows = self.pending.setdefault(partition, {})
        if key not in rows:  # one pending is the row's latest already
            rows[key] = value
