"""Retention: every per-message row has an end, and is deleted once it has passed.

A table registers with ``retain``, saying which topic's partitions its changelog follows
and how to read a row's partition and end (epoch seconds, or None while the row is still
pending work). Writers call ``Retained.note`` after each write; on taking over a
partition, its rows are indexed from the recovered table. A timer on every worker
deletes, in the partitions it owns, the rows whose end has passed (a tombstone on the
changelog, so recovery drops them too). Memory and recovery time then follow pending work
plus the stated window (``APPFIRST_KEEP_SETTLED_SECONDS``), not every message ever sent.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from appfirst import telemetry
from appfirst.rules.schedule import EndIndex
from appfirst.streams.app import each_row
from appfirst.streams.disk_index import DiskEndIndex

if TYPE_CHECKING:
    from appfirst.streams.context import Context

# A row -> (the changelog partition it was written to, its end or None: keep for now).
EndOf = Callable[[Any], tuple[int, float | None]]


@dataclass
class Retained:
    name: str
    table: Any
    topic: str  # contract name of the topic whose partition each row's changelog follows
    end_of: EndOf
    context: Context
    # Ends to within a prune interval: a row is never deleted before the prune after its
    # end anyway, and a bucket's key costs a list slot where an exact index cost ~150 B.
    indexed: set[int] = field(default_factory=set)
    revoked: set[int] = field(default_factory=set)  # since the last _sync began

    @functools.cached_property
    def index(self) -> EndIndex | DiskEndIndex:
        """Opened as first used (a worker's app is built before it starts)."""
        settings = self.context.settings
        grain = settings.retention_interval_seconds
        if settings.row_store == "memory":
            return EndIndex(grain=grain)
        # With the rows on disk, their index too: nothing in the heap per row.
        return DiskEndIndex(settings.data_dir, settings.row_memory_mb, self.name, grain)

    def note(self, key: str, row: Any) -> None:
        """After a write of ``row`` under ``key``: index when it ends."""
        self.mark(key, *self.end_of(row))

    def mark(self, key: str, partition: int, end: float | None) -> None:
        """``note`` for a writer that already knows the row's partition and end."""
        self.index.note(partition, sys.intern(key), end)  # the table's own copy of the key

    async def _sync(self) -> None:
        """Index the rows of newly owned partitions from the (recovered) table."""
        owned = self.context.owned_partitions(self.topic)
        for partition in self.indexed - owned:
            self.index.drop(partition)
        self.indexed &= owned
        new = owned - self.indexed
        if not new:
            return
        self.revoked.clear()
        async for key, row in each_row(self.table):
            partition, end = self.end_of(row)
            if partition in new:
                self.mark(key, partition, end)
        # One revoked meanwhile (and perhaps recovered again since the keys were taken) is
        # indexed afresh next time.
        self.indexed |= (new - self.revoked) & self.context.owned_partitions(self.topic)

    async def prune(self, now: float) -> int:
        """Delete the owned rows whose end has passed; how many went."""
        await self._sync()
        if not self.context.tables_ready():
            return 0  # a rebalance began while indexing: next time
        deleted = 0
        # Ownership as it is now, and no await below: a row of a partition another worker
        # has taken over is never deleted from here.
        for partition in self.indexed & self.context.owned_partitions(self.topic):
            for key in self.index.pop_due(partition, now):
                row = self.table.get(key)
                if row is None:
                    continue  # gone already, or listed twice
                _, end = self.end_of(row)
                if end is None or end > now:
                    continue  # rewritten since: its writer listed it under its new end
                with self.context.acting_for_partition(self.topic, partition):
                    self.table.pop(key, None)
                deleted += 1
        return deleted


class Retention:
    """The retained tables of one worker, and the timer that deletes their ended rows."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.retained: list[Retained] = []
        context.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        context.app.timer(interval=context.settings.retention_interval_seconds)(self.prune)

    def retain(self, name: str, table: Any, topic: str, end_of: EndOf) -> Retained:
        retained = Retained(name, table, topic, end_of, self.context)
        self.retained.append(retained)
        return retained

    def keep_until(self, now: float | None = None) -> float:
        """The end of a row settled now: ``APPFIRST_KEEP_SETTLED_SECONDS`` from now."""
        at = self.context.clock.now().timestamp() if now is None else now
        return at + self.context.settings.keep_settled_seconds

    async def _on_revoked(self, app: Any, revoked: set[Any], **kwargs: Any) -> None:
        # Indexed again from the recovered table if they come back.
        for retained in self.retained:
            name = self.context.settings.topic(retained.topic)
            for partition in {tp.partition for tp in revoked if tp.topic == name}:
                retained.index.drop(partition)
                retained.indexed.discard(partition)
                retained.revoked.add(partition)

    async def prune(self) -> None:
        if not self.context.tables_ready():
            return  # a half-recovered table: its rows would be indexed short
        now = self.context.clock.now().timestamp()
        for retained in self.retained:
            deleted = await retained.prune(now)
            if deleted:
                telemetry.rows_deleted.labels(retained.name).inc(deleted)
            telemetry.table_rows.labels(retained.name).set(len(retained.table))
